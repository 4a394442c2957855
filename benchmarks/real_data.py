"""Train and test on Twitter-2015 / Twitter-2017 over seeds and variants; tabulate mean ± std.

Usage::

    python -m benchmarks.real_data --dataset twitter2017 [--seeds 1 2 3]
        [--variants default encoder.casing_dim=0 fusion.name=none ...] [--set KEY=VALUE ...]
        [--data-root DIR] [--runs FILE.jsonl] [--checkpoints DIR] [--out FILE.md] [--report-only]

Every run is the Sacred experiment itself (``experiments.train.ex.run`` with the ``twitter2015`` or
``twitter2017`` named config: MiniLM encoder, images absent, model chosen on the validation split,
tested once). A variant is ``default`` (the named config as it is) or ``+``-joined ``KEY=VALUE``
updates (of the ``model`` section unless the key names a section of the experiment:
``encoder.casing_dim=0``, ``fusion.name=none+image.use_image=False``, ``optim.epochs=7``) or
named configs of the experiment (``no_existence_loss``).

Each finished run is appended at once to ``--runs`` (JSON lines), so a long job stopped halfway
keeps what it finished, and a rerun skips the (variant, ``--set``, epochs, seed) runs already there
(the epochs as Sacred resolves them, since a named config's schedule may change between commits).
The table (``--out``, also printed) is built from that file: per variant, ``--set`` updates and
epochs (each a row of its own), test micro P/R/F1 and F1 per type
(conlleval counting), validation F1 of the chosen epoch, mean ± sample std over seeds, the
training time per run, and the published text-only BERT-base CRF for reference.

``--checkpoints DIR`` also makes a rerun continue an interrupted run from its last finished
epoch (the experiment's exact ``resume``). It keeps each run's chosen model (safetensors + JSON,
with the decoding thresholds chosen on validation) under
``DIR/DATASET/VARIANT-seedN/checkpoint`` and its test predictions under ``.../predictions``,
and names them in the run's record, for ``mnerqg predict``
(then ``evaluate``) or decoding studies without retraining. The resume state (optimizer, last
model) is removed once the run has finished and is recorded (a stop between the two leaves it
for the next call to remove). A resume state of another schedule (the named config's epochs
changed since the stop) is refused with a one-line error naming the folder to remove.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.compare_fusion import merge, parse_update  # noqa: E402
from benchmarks.runlog import append_run, load_runs, ran_on  # noqa: E402

__all__ = [
    "load_runs",
    "main",
    "markdown",
    "prune_run_dir",
    "row_label",
    "run_one",
    "variant_updates",
]

#: Published test micro F1 of the text-only BERT-base CRF (``../shared/data/README.md``).
PUBLISHED_BERT_CRF = {"twitter2015": 71.81, "twitter2017": 83.44}
TYPES = ("PER", "LOC", "ORG", "OTHER")
COLUMNS = ["precision", "recall", "f1", *(f"f1_{t}" for t in TYPES)]
#: Config sections a variant's ``KEY=VALUE`` may name; other keys are ``model`` keys.
SECTIONS = ("data", "model", "optim", "grounding")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_data", description=__doc__)
    p.add_argument("--dataset", choices=sorted(PUBLISHED_BERT_CRF), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--variants", nargs="+", default=["default"], metavar="VARIANT")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        dest="updates",
        metavar="KEY=VALUE",
        help="config updates applied to every run (e.g. optim.epochs=3)",
    )
    p.add_argument("--data-root", type=Path, default=None, help="default: the named config's")
    p.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="JSON lines of finished runs (default: runs/real_data_DATASET.jsonl)",
    )
    p.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each run's chosen model (and its working files) under "
        "DIR/DATASET/VARIANT-seedN/ (default: none kept)",
    )
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    p.add_argument("--report-only", action="store_true", help="only build the table from --runs")
    return p.parse_args(argv)


def variant_updates(variant: str, named: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``"encoder.casing_dim=0+optim.epochs=7+no_existence_loss"`` -> (named configs, updates).

    A key that does not start with a section of the experiment (``encoder.casing_dim``) is a
    ``model`` key; ``optim.epochs`` names its section.
    """
    if variant == "default":
        return [], {}
    configs: list[str] = []
    updates: dict[str, Any] = {}
    for token in variant.split("+"):
        if "=" in token:
            section = token.partition("=")[0].partition(".")[0]
            key = token if section in SECTIONS else "model." + token
            updates = merge(updates, parse_update(key))
        elif token in named:
            configs.append(token)
        else:
            raise SystemExit(
                f"real_data: error: {token!r} in {variant!r} is neither KEY=VALUE nor a named "
                f"config ({', '.join(named)})"
            )
    return configs, updates


def _run_updates(
    args: argparse.Namespace, variant: str, seed: int
) -> tuple[list[str], dict[str, Any]]:
    """Named configs and config updates of one (variant, seed) run."""
    from experiments.train import ex

    configs, updates = variant_updates(variant, sorted(ex.named_configs))
    updates = merge(updates, {"seed": seed, "save_artifacts": False, "visualize": 0})
    if args.data_root is not None:
        updates = merge(updates, {"data": {"root": str(args.data_root)}})
    for text in args.updates:
        updates = merge(updates, parse_update(text))
    if args.checkpoints is not None:  # an interrupted run continues from its last epoch
        updates = merge(updates, {"output_dir": str(run_dir(args, variant, seed)), "resume": True})
    return [args.dataset, *configs], updates


def run_dir(args: argparse.Namespace, variant: str, seed: int) -> Path:
    """Where ``--checkpoints DIR`` keeps a run: ``DIR/DATASET/VARIANT[+SET...]-seedN``.

    The folder name is the variant and the ``--set`` updates with every character outside
    ``[A-Za-z0-9._=+-]`` replaced by ``_``, so each (variant, updates, seed) gets its own folder.
    """
    name = "+".join([variant, *args.updates])
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "_", name)
    return Path(args.checkpoints) / args.dataset / f"{safe}-seed{seed}"


def planned_epochs(args: argparse.Namespace, variant: str) -> int:
    """The epochs a run of ``variant`` would train, resolved by Sacred without running it.

    A named config's schedule can change between commits (the real-data configs went from 5 to
    7 epochs), so the epochs are part of what identifies a run, not only the variant's name.
    """
    from experiments.train import ex

    named, updates = _run_updates(args, variant, 0)
    run = ex._create_run(named_configs=named, config_updates=updates)
    return int(run.config["optim"]["epochs"])


def run_one(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """One Sacred run; its flat result plus what identifies it."""
    from experiments.train import ex

    named, updates = _run_updates(args, variant, seed)
    t0 = time.perf_counter()
    run = ex.run(named_configs=named, config_updates=updates)
    history = run.info.get("history", [])
    record = {
        "dataset": args.dataset,
        "variant": variant,
        "seed": seed,
        "updates": args.updates,
        "epochs": int(run.config["optim"]["epochs"]),
        "result": dict(run.result or {}),
        # validation F1 per epoch (before the decoding thresholds are chosen on it)
        "valid_f1_by_epoch": [h["valid/f1"] for h in history if "valid/f1" in h],
        "environment": run.info.get("environment", {}),
        "wall_seconds": time.perf_counter() - t0,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.checkpoints is not None:  # the chosen model, for `mnerqg predict`
        try:
            kept = kept_paths(run_dir(args, variant, seed))
        except FileNotFoundError as err:  # the scores are still worth their record
            print(f"warning: {err}", file=sys.stderr)
        else:
            record.update({k: str(v) for k, v in kept.items()})
    return record


def kept_paths(out: Path) -> dict[str, Path]:
    """Where :func:`prune_run_dir` keeps a finished run's model and predictions.

    Args:
        out: the run's ``output_dir``.

    Returns:
        ``{"checkpoint": path}`` plus ``"predictions"`` when the run wrote them.

    Raises:
        FileNotFoundError: the run left no ``checkpoint``.
    """
    checkpoint = out / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: the run left no checkpoint; {out / 'work'} is kept")
    kept = {"checkpoint": checkpoint}
    if (out / "work" / "predictions").is_dir() or (out / "predictions").is_dir():
        kept["predictions"] = out / "predictions"
    return kept


def prune_run_dir(out: Path) -> dict[str, Path]:
    """Keep what a finished ``--checkpoints`` run is for; drop its resume state.

    The experiment's ``OUTPUT_DIR/work`` holds the optimizer state, the last and the best model
    (for ``resume``), about four times the size of the chosen model (650 MB against 150 MB on
    Twitter-2017). Once the run has finished, ``OUTPUT_DIR/checkpoint`` (the chosen model) is what
    is kept; the test predictions move to ``OUTPUT_DIR/predictions`` and the rest of ``work`` goes.

    Args:
        out: the run's ``output_dir``.

    Returns:
        ``{"checkpoint": path}`` plus ``"predictions"`` when the run wrote them.

    Raises:
        FileNotFoundError: the run left no ``checkpoint`` (nothing is removed then).
    """
    kept = kept_paths(out)
    work = out / "work"
    preds = work / "predictions"
    if preds.is_dir():
        target = out / "predictions"
        shutil.rmtree(target, ignore_errors=True)
        preds.rename(target)
    shutil.rmtree(work, ignore_errors=True)
    return kept


def run_epochs(run: dict[str, Any]) -> int | None:
    """A record's training epochs: stored since the field exists, else the length of its curve."""
    if "epochs" in run:
        return int(run["epochs"])
    return len(run["valid_f1_by_epoch"]) if run.get("valid_f1_by_epoch") else None


def row_label(run: dict[str, Any]) -> str:
    """The table row of a run: its variant, its ``--set`` updates and its epochs."""
    updates = run.get("updates") or []
    epochs = run_epochs(run)
    return (
        run["variant"]
        + (f" [{' '.join(updates)}]" if updates else "")
        + (f" ({epochs} ep)" if epochs is not None else "")
    )


def _stat(values: list[float]) -> str:
    """Mean ± sample std; one value alone has no spread to show, so it stands without one."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _chosen(result: dict[str, Any]) -> str:
    """What validation chose for a run (epoch, decoder, thresholds) and its test F1."""
    parts = [f"epoch {int(result['best_epoch'])}"]
    if result.get("tag_decoder"):  # decoded by the auxiliary tagger: no span threshold
        parts.append("decoder: the tagger")
    elif "span_threshold" in result:
        parts.append(f"span threshold {result['span_threshold']:.2f}")
    if "existence_threshold" in result:
        ex = result["existence_threshold"]
        parts.append(f"existence threshold {ex:.2f}" if ex > 0 else "existence threshold off")
    chosen = "chosen: " + ", ".join(parts)
    if "test/f1" in result:
        chosen += f"; test F1 {100 * result['test/f1']:.2f}"
    return chosen


def markdown(dataset: str, runs: list[dict[str, Any]]) -> str:
    """Mean ± std per variant (test %, conlleval counting) and the published reference row."""
    head = ["variant", "seeds", *(f"test {c}" for c in COLUMNS), "valid f1", "train min/run"]
    lines = [
        f"| {' | '.join(head)} |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for label in dict.fromkeys(row_label(r) for r in runs if r["dataset"] == dataset):
        rs = [r for r in runs if r["dataset"] == dataset and row_label(r) == label]
        cells = [f"`{label}`", ", ".join(str(r["seed"]) for r in rs)]
        for c in COLUMNS:
            cells.append(_stat([100 * r["result"][f"test/{c}"] for r in rs]))
        cells.append(_stat([100 * r["result"]["valid/f1"] for r in rs]))
        minutes = [r["result"]["train_seconds"] / 60 for r in rs if "train_seconds" in r["result"]]
        cells.append(f"{statistics.fmean(minutes):.1f}" if minutes else "n/a")
        lines.append(f"| {' | '.join(cells)} |")
    ref = PUBLISHED_BERT_CRF[dataset]
    lines.append(
        "| BERT-base CRF, text only (published) | | | | "
        f"{ref:.2f} |" + " |" * (len(COLUMNS) - 3 + 2)
    )
    curves = [
        f"- `{row_label(r)}` seed {r['seed']}: "
        + ", ".join(f"{100 * v:.2f}" for v in r["valid_f1_by_epoch"])
        + f" ({_chosen(r['result'])})"
        for r in runs
        if r["dataset"] == dataset and r.get("valid_f1_by_epoch") and "best_epoch" in r["result"]
    ]
    if curves:
        lines += ["", "Validation F1 by epoch (default decoding thresholds):", "", *curves]
    lines += ran_on([r for r in runs if r["dataset"] == dataset])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the missing (variant, seed) pairs, then print (and write) the table."""
    args = parse_args(argv)
    runs_path = args.runs or REPO / "runs" / f"real_data_{args.dataset}.jsonl"
    if not args.report_only:
        from sacred import SETTINGS

        from experiments.train import ex

        SETTINGS.CAPTURE_MODE = "sys"
        for variant in args.variants:  # fail on a bad variant before the first run
            variant_updates(variant, sorted(ex.named_configs))
        done = {
            (row_label(r), r["seed"]) for r in load_runs(runs_path) if r["dataset"] == args.dataset
        }
        for variant in args.variants:
            label = row_label(
                {
                    "variant": variant,
                    "updates": args.updates,
                    "epochs": planned_epochs(args, variant),
                }
            )
            for seed in args.seeds:
                if (label, seed) not in done:
                    print(f"=== {args.dataset} {label} seed {seed} ===", flush=True)
                    append_run(runs_path, run_one(args, variant, seed))
                # pruned only once recorded (a stop in between loses no finished run), and
                # again on a later call when a stop came between the two
                out = run_dir(args, variant, seed) if args.checkpoints is not None else None
                if out is not None and (out / "work").is_dir():
                    try:
                        prune_run_dir(out)
                    except FileNotFoundError:  # no chosen model (warned at the run): state kept
                        pass
    runs = [r for r in load_runs(runs_path) if r["dataset"] == args.dataset]
    runs = [r for r in runs if not any(math.isnan(v) for v in r["result"].values())]
    table = markdown(args.dataset, runs)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
