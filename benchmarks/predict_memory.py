"""Peak memory and speed of ``mnerqg predict --input FILE`` on many tweets (10,000 by default).

Usage::

    python -m benchmarks.predict_memory [--checkpoint DIR] [--tweets 10000] [--chunk-size 2048]
        [--batch-size 32] [--threads 1] [--images] [--work DIR] [--json]

The input is a JSON-lines file of ``--tweets`` tweets made from SynthTweets text (a generated set
of 1,000 tweets, repeated under new ids; ``--images`` adds each tweet's image path). Without
``--checkpoint``, one is trained first with the ``fast`` named config (``python -m
experiments.train -u with fast output_dir=WORK/fast``, about half a minute).

``mnerqg predict`` runs in a child process, once per ``--chunk-size`` on the big input and once on
a 10-tweet input (the cost of starting: imports and the model). Each child reports its own peak
resident set size (``getrusage``'s ``ru_maxrss``), so the figures are exact peaks, not samples.
The output is checked: one record per input tweet, in input order. Reported: peak RSS of the big
and the small run (their difference is what streaming 10,000 tweets costs), wall time, tweets/s end
to end and tweets/s after start-up (``(N - 10) / (t_big - t_small)``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SMALL = 10


def _log(msg: str) -> None:
    print(f"[predict_memory] {msg}", file=sys.stderr, flush=True)


def make_input(path: Path, n: int, work: Path, images: bool) -> list[str]:
    """Write ``n`` SynthTweets tweets as JSON lines; returns their ids, in order."""
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.data.synth import generate

    data = work / "synth1000"
    if not (data / "train.txt").is_file():
        _log(f"generating 1,000 SynthTweets tweets in {data}")
        generate(data, seed=1, n_train=1000, n_valid=1, n_test=1)
    base = load_split(data, "train").samples
    ids = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            s = base[i % len(base)]
            rec: dict[str, Any] = {"id": f"t{i:06d}", "tokens": s.tweet.tokens}
            if images and s.image_path is not None:
                rec["image"] = str(s.image_path)
            fh.write(json.dumps(rec) + "\n")
            ids.append(rec["id"])
    return ids


def train_checkpoint(work: Path) -> Path:
    """A checkpoint from the ``fast`` named config (trained once, then reused)."""
    out = work / "fast"
    ckpt = out / "checkpoint"
    if not (ckpt / "model.safetensors").is_file():
        _log(f"training a checkpoint with the fast config into {out}")
        cmd = [
            sys.executable,
            "-m",
            "experiments.train",
            "-u",
            "with",
            "fast",
            f"output_dir={out}",
            f"data.root={work / 'fast_data'}",
            "optim.device=cpu",
        ]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return ckpt


def predict_argv(
    ckpt: Path, inp: Path, out: Path, chunk: int, batch: int, device: str
) -> list[str]:
    """The arguments of ``mnerqg predict`` from file to file in chunks, without a progress bar.

    Args:
        ckpt: the checkpoint folder.
        inp: the input file.
        out: the output file.
        chunk: ``--chunk-size``.
        batch: ``--batch-size``.
        device: ``--device``.

    Returns:
        The argument list (no program name).
    """
    return [
        "--checkpoint",
        str(ckpt),
        "--input",
        str(inp),
        "--output",
        str(out),
        "--chunk-size",
        str(chunk),
        "--batch-size",
        str(batch),
        "--device",
        device,
        "--no-progress",
    ]


def run_child(
    ckpt: Path, inp: Path, out: Path, chunk: int, batch: int, threads: int, device: str
) -> dict[str, float]:
    """Run ``mnerqg predict`` in a child process; its peak RSS (MiB) and wall time (s)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.predict_memory",
        "--child",
        str(threads),
        "--",
        *predict_argv(ckpt, inp, out, chunk, batch, device),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"predict_memory: mnerqg predict failed:\n{proc.stderr[-2000:]}")
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS_KB ")][-1]
    return {"peak_rss_mib": int(line.split()[1]) / 1024, "seconds": wall}


def check_output(out: Path, ids: list[str]) -> None:
    """One record per input tweet, in input order."""
    got = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    if got != ids:
        raise SystemExit(
            f"predict_memory: output order or count differs from the input "
            f"({len(got)} records for {len(ids)} tweets)"
        )


def child(threads: int, argv: list[str]) -> int:
    """Child mode: run ``mnerqg predict`` in this process, then report this process's peak RSS."""
    import torch

    from mnerqg_graph.cli import main as cli_main

    torch.set_num_threads(threads)
    code = cli_main(["predict", *argv])
    print(f"MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure; returns the result object."""
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "mnerqg-predict-mem"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else train_checkpoint(work)
    big, small = work / f"in{args.tweets}.jsonl", work / f"in{SMALL}.jsonl"
    ids = make_input(big, args.tweets, work, args.images)
    small_ids = make_input(small, SMALL, work, args.images)
    base = run_child(
        ckpt,
        small,
        work / "out_small.jsonl",
        args.chunk_size[0],
        args.batch_size,
        args.threads,
        args.device,
    )
    check_output(work / "out_small.jsonl", small_ids)
    runs = []
    for chunk in args.chunk_size:
        _log(f"predicting {args.tweets} tweets, chunk size {chunk}")
        out = work / f"out_{chunk}.jsonl"
        r = run_child(ckpt, big, out, chunk, args.batch_size, args.threads, args.device)
        check_output(out, ids)
        r.update(
            chunk_size=chunk,
            tweets_per_s=args.tweets / r["seconds"],
            tweets_per_s_after_startup=(args.tweets - SMALL)
            / max(r["seconds"] - base["seconds"], 1e-9),
            rss_over_startup_mib=r["peak_rss_mib"] - base["peak_rss_mib"],
        )
        runs.append(r)
    return {
        "tweets": args.tweets,
        "checkpoint": str(ckpt),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "device": args.device,
        "images": args.images,
        "startup": {"tweets": SMALL, **base},
        "runs": runs,
        "order_checked": True,
        "load_avg_1min": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.predict_memory``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child(int(argv[1]), argv[3:])
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.predict_memory", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--checkpoint", help="checkpoint directory (default: train one, fast config)")
    ap.add_argument("--tweets", type=int, default=10_000)
    ap.add_argument(
        "--chunk-size",
        type=int,
        action="append",
        help="mnerqg predict --chunk-size (repeatable; default: 2048)",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", action="store_true", help="give each tweet its image")
    ap.add_argument("--work", help="folder for inputs, outputs and the checkpoint")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    args.chunk_size = args.chunk_size or [2048]
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        s = result["startup"]
        print(
            f"mnerqg predict, {result['tweets']} tweets ({result['threads']} threads, batch "
            f"{result['batch_size']}, images {'on' if result['images'] else 'off'}); start-up "
            f"({SMALL} tweets): {s['peak_rss_mib']:.0f} MiB peak, {s['seconds']:.1f} s"
        )
        for r in result["runs"]:
            print(
                f"  chunk {r['chunk_size']:>6}: peak RSS {r['peak_rss_mib']:.0f} MiB "
                f"(+{r['rss_over_startup_mib']:.0f} over start-up), {r['seconds']:.1f} s, "
                f"{r['tweets_per_s']:.0f} tweets/s end to end, "
                f"{r['tweets_per_s_after_startup']:.0f} after start-up; order checked"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
