"""Start-up cost of ``mnerqg predict --text``: CPU, wall time and peak memory of one tweet.

Usage::

    python -m benchmarks.startup [--repeat 3] [--work DIR] [--tree NAME=DIR ...] [--json]

Two checkpoints are written first (``MnerqgModel.save_pretrained`` of seeded, untrained models):
``tiny`` (a 2-layer, 32-dim random BERT, 0.2 M parameters) and ``minilm`` (the offline
MiniLM-L6-H384 encoder with ``graph.hidden_dim`` 384, 37.5 M parameters). Each command then runs
``--repeat`` times in a child process, one torch thread, and is reported by the median of its CPU
time (user + sys, the child's own ``getrusage`` at exit: less sensitive to other load than wall
time), its wall time and its peak resident set size. Beside ``mnerqg predict`` the floor it stands
on is timed the same way: ``import torch``, ``import torch_geometric`` (whose package ``__init__``
imports ``torch._dynamo`` and transformers on its own), and both with transformers' BERT model
module. ``--tree before=DIR`` times ``mnerqg predict`` with another code tree's toolkit as well
(e.g. a clone of an earlier commit), its repetitions interleaved with this tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = "Kelvo visits Marn today"


def _log(msg: str) -> None:
    print(f"[startup] {msg}", file=sys.stderr, flush=True)


def write_checkpoints(work: Path) -> dict[str, Path]:
    """Save the ``tiny`` and ``minilm`` checkpoints under ``work`` (kept when they exist)."""
    import torch
    from transformers import AutoTokenizer

    from mnerqg_graph.config import EncoderConfig, ModelConfig
    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.encoders.text import minilm_path
    from mnerqg_graph.model import build_model
    from mnerqg_graph.processing import MnerqgProcessor
    from tests.helpers import tiny_config, tiny_encoder

    out = {"tiny": work / "tiny", "minilm": work / "minilm"}
    if all((p / "model.safetensors").is_file() for p in out.values()):
        return out
    queries = load_queries()
    types = list(queries)
    configs = {
        "tiny": tiny_config(tiny_encoder(work / "tiny_encoder")),
        "minilm": ModelConfig(types=types, encoder=EncoderConfig(name=minilm_path())).updated(
            {"graph.hidden_dim": 384}
        ),
    }
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        model.save_pretrained(out[name])
        tokenizer = AutoTokenizer.from_pretrained(cfg.encoder.name)
        MnerqgProcessor.from_model(model, tokenizer, queries).save_pretrained(out[name])
    return out


# Runs ``-m MODULE ARGS...`` or ``-c CODE`` as ``python`` would, and at exit writes the process's
# own CPU seconds and peak RSS (kB) to stderr: exact per-process figures.
LAUNCHER = """
import atexit, json, resource, runpy, sys
def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    sys.stderr.write("\\nSTARTUP " + json.dumps([r.ru_utime + r.ru_stime, r.ru_maxrss]) + "\\n")
atexit.register(_usage)
kind, target, *rest = sys.argv[1:]
sys.argv = [target, *rest]
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def run_once(args: list[str], pythonpath: str | None) -> tuple[float, float, float]:
    """CPU seconds, wall seconds and peak RSS (MB) of one ``python ARGS``.

    Args:
        args: ``["-m", module, *options]`` or ``["-c", code]``.
        pythonpath: the code tree to import the toolkit from (None: as installed).
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    marks = [ln for ln in proc.stderr.splitlines() if ln.startswith("STARTUP ")]
    if proc.returncode != 0 or not marks:
        raise SystemExit(f"python {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    seconds, peak_kb = json.loads(marks[-1].removeprefix("STARTUP "))
    return seconds, wall, peak_kb / 1024


def main(argv: list[str] | None = None) -> int:
    """Write the checkpoints, time each command and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (kept)")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="time mnerqg predict with the toolkit of this code tree too (repeatable; the "
        "repetitions of all commands are interleaved, so load hits them alike)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="mnerqg_startup_"))
    if args.write_only:
        write_checkpoints(work)
        return 0
    # in a child: a parent holding torch would hand its peak RSS to every child it starts (Linux
    # keeps the high-water mark across fork and exec)
    subprocess.run(
        [sys.executable, "-m", "benchmarks.startup", "--work", str(work), "--write-only"],
        check=True,
    )
    trees: dict[str, str | None] = {"": None}
    for spec in args.tree:
        name, sep, folder = spec.partition("=")
        if not sep or not Path(folder, "mnerqg_graph").is_dir():
            parser.error(f"--tree {spec!r}: expected NAME=DIR with DIR/mnerqg_graph")
        trees[f" [{name}]"] = str(Path(folder).resolve())
    bert = "import transformers.models.bert.modeling_bert"
    commands: dict[str, tuple[list[str], str | None]] = {
        "import torch": (["-c", "import torch"], None),
        "import torch_geometric": (["-c", "import torch_geometric"], None),
        "import torch_geometric + BERT model module": (
            ["-c", f"import torch_geometric; {bert}"],
            None,
        ),
    }
    for name in ("tiny", "minilm"):
        for tag, tree in trees.items():
            commands[f"mnerqg predict --text ({name}){tag}"] = (
                ["-m", "mnerqg_graph", "predict", "--checkpoint", str(work / name),
                 "--text", TEXT, "--device", "cpu"],
                tree,
            )  # fmt: skip
    runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in commands}
    for rep in range(args.repeat):
        for label, (cmd, tree) in commands.items():
            runs[label].append(run_once(cmd, tree))
            _log(f"{rep + 1}/{args.repeat} {label}: {runs[label][-1][0]:.2f} s CPU")
    rows = {
        label: {
            "cpu_s": round(statistics.median(r[0] for r in got), 2),
            "wall_s": round(statistics.median(r[1] for r in got), 2),
            "peak_rss_mb": round(statistics.median(r[2] for r in got)),
        }
        for label, got in runs.items()
    }
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| command | CPU s | wall s | peak RSS MB |\n|---|---:|---:|---:|")
        for label, r in rows.items():
            print(f"| `{label}` | {r['cpu_s']} | {r['wall_s']} | {r['peak_rss_mb']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
