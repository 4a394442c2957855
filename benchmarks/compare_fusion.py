"""Train every fusion module and the paper's ablations on one SynthTweets set and tabulate them.

Usage::

    python -m benchmarks.compare_fusion [--seeds 0 1 2] [--configs SPEC ...] [--epochs N]
        [--train N] [--valid N] [--test N] [--data-root DIR] [--named-configs NAMED ...]
        [--set KEY=VALUE ...] [--device DEVICE] [--threads N] [--out FILE.md] [--json FILE]
        [--runs FILE.jsonl] [--report-only]

A config ``SPEC`` is a registered fusion module name (``hgt``), a named config of the experiment
(``single_scale``), or several joined by ``+`` (``hgt+single_scale``). The default list is every
registered fusion module, then the ablations ``no_grounding_loss``, ``no_existence_loss``,
``single_scale``, ``no_existence_gating`` and ``text_only`` (with the experiment's default fusion
module). Every run is the Sacred experiment itself, called programmatically
(``experiments.train.ex.run``) on the same SynthTweets folder (generated once, with ``--data-seed``)
and the same seeds, without observers or artifacts. Seeds are the outer loop: every config runs
with the first seed before any runs with the second, so a stopped job leaves a complete table.

With ``--runs FILE.jsonl`` each finished run is appended to that file at once, together with the
settings that shape it (data sizes and seed, epochs, named configs, ``--set`` updates, device); a
rerun with the same settings skips the (config, seed) pairs already there, and the table is built
from every matching run in the file (``--report-only`` builds it without training). Two processes
may share one file (say, half of ``--configs`` each, on a machine with two cores).

Reported per config, mean ± std over seeds (sample std; 0 with one seed):

* entity F1, ambiguous-mention F1, grounding accuracy, grounded-NER F1 (test split, %, from the
  model selected on the validation split);
* training seconds per optimiser step: the run's ``train_seconds`` / steps. ``train_seconds`` spans
  the training epochs *and* their per-epoch validation passes and checkpoint writes, so it is an
  upper bound of the pure step time;
* inference tweets per second: :func:`mnerqg_graph.pipeline.predict` (collate, forward, decode)
  over the prepared test items, timed after one warm-up batch, with the chosen checkpoint reloaded
  on the run's device;
* parameter counts of the whole model and of its fusion module.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.runlog import ran_on  # noqa: E402
from mnerqg_graph.environment import environment  # noqa: E402

ABLATIONS = [
    "no_grounding_loss",
    "no_existence_loss",
    "single_scale",
    "no_existence_gating",
    "text_only",
]

#: (result key, column title, scale): the columns of the table, in order.
COLUMNS: list[tuple[str, str, float]] = [
    ("f1", "entity F1", 100.0),
    ("ambiguous_f1", "ambiguous F1", 100.0),
    ("grounding_acc", "grounding acc", 100.0),
    ("grounded_f1", "grounded F1", 100.0),
    ("train_step_s", "train s/step", 1.0),
    ("infer_tweets_s", "infer tweets/s", 1.0),
    ("params", "params", 1.0),
    ("fusion_params", "fusion params", 1.0),
]
_TEST_KEYS = ("f1", "ambiguous_f1", "grounding_acc", "grounded_f1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_fusion",
        description="Train fusion modules and ablations on SynthTweets; write a comparison table.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--configs",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="fusion names, named configs, or NAME+NAMED (default: all modules and the ablations)",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the experiment's")
    p.add_argument("--train", type=int, default=2000, help="SynthTweets training tweets")
    p.add_argument("--valid", type=int, default=400, help="SynthTweets validation tweets")
    p.add_argument("--test", type=int, default=400, help="SynthTweets test tweets")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the SynthTweets generator")
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="data-set folder (default: data/synth_compare_TRAIN_VALID_TEST_sSEED)",
    )
    p.add_argument(
        "--named-configs",
        nargs="*",
        default=[],
        metavar="NAMED",
        help="named configs applied to every run (e.g. minilm)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        dest="updates",
        help="config updates applied to every run, e.g. optim.batch_size=8",
    )
    p.add_argument("--device", default=None, help="optim.device (default: the experiment's)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    p.add_argument("--json", type=Path, default=None, help="write every run and the summary here")
    p.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="JSON lines of finished runs: appended as they finish, skipped on a rerun",
    )
    p.add_argument("--report-only", action="store_true", help="only build the table from --runs")
    args = p.parse_args(argv)
    if args.report_only and args.runs is None:
        p.error("--report-only needs --runs")
    return args


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs of one (config, seed) comparable: they share a table only if equal."""
    return {
        "train": args.train,
        "valid": args.valid,
        "test": args.test,
        "data_seed": args.data_seed,
        "epochs": args.epochs,
        "named_configs": list(args.named_configs),
        "updates": list(args.updates),
        "device": args.device,
    }


def parse_update(text: str) -> dict[str, Any]:
    """``"a.b=3"`` -> ``{"a": {"b": 3}}`` (the value read as a Python literal, else a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"compare_fusion: error: --set expects KEY=VALUE, got {text!r}")
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    for part in reversed(key.split(".")):
        value = {part: value}
    return value  # type: ignore[no-any-return]


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``extra`` wins); neither input is modified."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_spec(
    spec: str, fusion_names: list[str], named: list[str]
) -> tuple[str | None, list[str]]:
    """Split ``"hgt+single_scale"`` into the fusion module name (or None) and named configs."""
    fusion, configs = None, []
    for token in spec.split("+"):
        if token in fusion_names and fusion is None:
            fusion = token
        elif token in named:
            configs.append(token)
        else:
            raise SystemExit(
                f"compare_fusion: error: {token!r} in {spec!r} is neither a fusion module "
                f"({', '.join(fusion_names)}) nor a named config ({', '.join(named)})"
            )
    return fusion, configs


def count_params(module: Any) -> int:
    """Number of parameters of a module."""
    return int(sum(p.numel() for p in module.parameters()))


def time_inference(
    checkpoint: Path, data: dict[str, Any], seed: int, batch_size: int, device_name: str
) -> dict[str, float]:
    """Reload the chosen checkpoint, time ``predict`` over the test items, count parameters."""
    from experiments.runner import load_data
    from mnerqg_graph.environment import resolve_device
    from mnerqg_graph.pipeline import predict
    from mnerqg_graph.training.checkpoint import load_checkpoint

    device = resolve_device(device_name)
    model, processor = load_checkpoint(checkpoint, device)
    test = load_data(data, seed)["test"]
    warm = processor(test[:batch_size])
    predict(model, warm, batch_size=batch_size, device=device)  # warm-up
    inputs = processor(test)
    _sync(device)
    t0 = time.perf_counter()
    predict(model, inputs, batch_size=batch_size, device=device)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "infer_tweets_s": len(inputs) / max(seconds, 1e-9),
        "params": count_params(model),
        "fusion_params": count_params(model.fusion),
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(
    spec: str,
    seed: int,
    args: argparse.Namespace,
    root: Path,
    fusion_names: list[str],
    named: list[str],
    work: Path,
) -> dict[str, Any]:
    """One Sacred run of ``spec`` with ``seed``; returns its metrics (flat, floats)."""
    from experiments.train import ex

    fusion, configs = resolve_spec(spec, fusion_names, named)
    out_dir = work / f"{spec}-{seed}"
    updates: dict[str, Any] = {
        "seed": seed,
        "save_artifacts": False,
        "output_dir": str(out_dir),
        "visualize": 0,
        "data": {
            "name": "synthetic",
            "root": str(root),
            "synth": {
                "seed": args.data_seed,
                "train": args.train,
                "valid": args.valid,
                "test": args.test,
            },
        },
    }
    if fusion is not None:
        updates = merge(updates, {"model": {"fusion": {"name": fusion}}})
    if args.epochs is not None:
        updates = merge(updates, {"optim": {"epochs": args.epochs}})
    if args.device is not None:
        updates = merge(updates, {"optim": {"device": args.device}})
    for text in args.updates:
        updates = merge(updates, parse_update(text))
    run = ex.run(named_configs=[*args.named_configs, *configs], config_updates=updates)
    result: dict[str, float] = run.result or {}
    cfg = run.config
    data = {k: v for k, v in cfg["data"].items() if not k.startswith("__")}
    from experiments.runner import load_data

    n_train = len(load_data(data, seed)["train"])
    steps = math.ceil(n_train / cfg["optim"]["batch_size"]) * cfg["optim"]["epochs"]
    row: dict[str, Any] = {
        "config": spec,
        "seed": seed,
        "fusion": cfg["model"]["fusion"]["name"],
        "named_configs": configs,
    }
    for key in _TEST_KEYS:
        row[key] = float(result.get(f"test/{key}", float("nan")))
    row["train_seconds"] = float(result.get("train_seconds", float("nan")))
    row["steps"] = steps
    row["train_step_s"] = row["train_seconds"] / max(steps, 1)
    row["best_epoch"] = float(result.get("best_epoch", float("nan")))
    row.update(
        time_inference(
            out_dir / "checkpoint",
            data,
            seed,
            int(cfg["optim"]["eval_batch_size"]),
            str(cfg["optim"]["device"]),
        )
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per config and column: mean, std (sample; 0 with one seed) and n over the runs' seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for spec in dict.fromkeys(r["config"] for r in rows):
        runs = [r for r in rows if r["config"] == spec and "error" not in r]
        out[spec] = {}
        for key, _, _ in COLUMNS:
            vals = [float(r[key]) for r in runs if not math.isnan(float(r[key]))]
            out[spec][key] = {
                "mean": statistics.fmean(vals) if vals else float("nan"),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "n": float(len(vals)),
            }
    return out


def _cell(stat: dict[str, float], scale: float, key: str) -> str:
    if not stat["n"]:
        return "n/a"
    mean, std = stat["mean"] * scale, stat["std"] * scale
    if key in ("params", "fusion_params"):
        return f"{mean:,.0f}"
    if key == "train_step_s":
        return f"{mean:.3f} ± {std:.3f}"
    if key == "infer_tweets_s":
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.2f} ± {std:.2f}"


def markdown(
    summary: dict[str, dict[str, dict[str, float]]],
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
) -> str:
    """The comparison as a Markdown section."""
    lines = [
        "## Fusion modules and ablations on SynthTweets",
        "",
        f"{settings['train']}/{settings['valid']}/{settings['test']} train/valid/test tweets "
        f"(SynthTweets seed {settings['data_seed']}), seeds {settings['seeds']}, "
        f"epochs {settings['epochs']}, device {settings['device']}, torch "
        f"{settings['torch']}, {settings['date']}. Mean ± std over seeds; F1 and accuracy in % "
        "on the test split (model chosen on validation). train s/step = train_seconds / steps "
        "(includes the per-epoch validation); inference = `pipeline.predict` over the test "
        "tweets.",
        "",
        "| config | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for spec, stats in summary.items():
        cells = [_cell(stats[key], scale, key) for key, _, scale in COLUMNS]
        seeds = sorted(int(r["seed"]) for r in rows if r["config"] == spec and "error" not in r)
        lines.append(f"| `{spec}` | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    failed = [r for r in rows if "error" in r]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- `{r['config']}` seed {r['seed']}: {r['error']}" for r in failed]
    lines += [
        "",
        f"Total wall time of the runs: {settings['wall_seconds']:.0f} s "
        f"({', '.join(map(str, settings['threads']))} torch thread(s) per process).",
        *ran_on([r for r in rows if "error" not in r]),
        "",
    ]
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """``obj`` with NaN as None (strict JSON) and unknown objects as strings."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns 1 when a run failed, else 0."""
    args = parse_args(argv)
    import torch

    from benchmarks.runlog import append_run, load_runs

    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = run_settings(args)
    logged = [r for r in (load_runs(args.runs) if args.runs else []) if r.get("settings") == wanted]
    failed: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    root = args.data_root or (
        REPO / "data" / f"synth_compare_{args.train}_{args.valid}_{args.test}_s{args.data_seed}"
    )
    if not args.report_only:
        from sacred import SETTINGS

        from experiments.train import ex
        from mnerqg_graph.fusion import FUSION_REGISTRY

        SETTINGS.CAPTURE_MODE = "sys"
        fusion_names = FUSION_REGISTRY.names()
        named = sorted(ex.named_configs)
        specs = args.configs or [*fusion_names, *ABLATIONS]
        for spec in specs:
            resolve_spec(spec, fusion_names, named)  # fail before the first run
        done = {(r["config"], r["seed"]) for r in logged}
        work = Path(tempfile.mkdtemp(prefix="compare_fusion-"))
        try:
            for seed in args.seeds:
                for spec in specs:
                    if (spec, seed) in done:
                        continue
                    print(f"=== {spec} seed {seed} ===", flush=True)
                    t_run = time.perf_counter()
                    try:
                        row = run_one(spec, seed, args, root, fusion_names, named, work)
                    except (Exception, SystemExit) as exc:  # one failed run does not end the rest
                        error = f"{type(exc).__name__}: {exc}"
                        row = {"config": spec, "seed": seed, "error": error}
                        print(
                            f"compare_fusion: {spec} seed {seed} failed: {row['error']}",
                            file=sys.stderr,
                        )
                    row["run_seconds"] = time.perf_counter() - t_run
                    row["threads"] = torch.get_num_threads()
                    row["environment"] = environment()
                    row["date"] = time.strftime("%Y-%m-%d")
                    row["settings"] = wanted
                    if "error" in row:
                        failed.append(row)  # reported, not logged: a rerun tries it again
                        continue
                    logged.append(row)
                    if args.runs:
                        append_run(args.runs, row)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.runs:  # other processes may have appended to the same file meanwhile
        logged = [r for r in load_runs(args.runs) if r.get("settings") == wanted]
    rows = [*logged, *failed]
    seeds = sorted({int(r["seed"]) for r in logged}) or list(args.seeds)
    settings = {
        "train": args.train,
        "valid": args.valid,
        "test": args.test,
        "data_seed": args.data_seed,
        "data_root": str(root),
        "seeds": seeds,
        "epochs": args.epochs if args.epochs is not None else "experiment default",
        "device": args.device or "experiment default (auto)",
        "torch": torch.__version__,
        "threads": sorted({int(r.get("threads", torch.get_num_threads())) for r in logged})
        or [torch.get_num_threads()],
        "python": platform.python_version(),
        "named_configs": args.named_configs,
        "updates": args.updates,
        "date": max((str(r.get("date", "")) for r in logged), default="")
        or time.strftime("%Y-%m-%d"),
        "wall_seconds": sum(float(r.get("run_seconds", 0.0)) for r in rows)
        if args.runs
        else time.perf_counter() - t0,
    }
    summary = summarise(rows)
    table = markdown(summary, rows, settings)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = _jsonable({"settings": settings, "runs": rows, "summary": summary})
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
