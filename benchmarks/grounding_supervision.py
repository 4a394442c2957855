"""Where grounding supervision comes from: oracle boxes vs 20 % manual + weak labels vs less.

The comparison of MNER-QG's weak supervision on SynthTweets, in one command::

    python benchmarks/grounding_supervision.py --out runs/grounding_supervision

Steps (each timed):

1. write the *target* SynthTweets set (``--seed``) and a *source* set (``--source-seed``, another
   seed, so other names and images) unless ``--data`` / ``--source`` name existing folders;
2. the visual-grounding model (:mod:`detectors.grounder`): ``pretrain`` on every gold box of the
   source set's training split, ``finetune`` on the manual share of the target's training tweets
   (``select_manual``: the same tweets the experiment keeps gold boxes on), ``evaluate`` on the
   target's test split, then ``pseudo-label`` the target's training split
   (:mod:`detectors.weak_labels`);
3. the main MNER-QG model, trained through the Sacred experiment (``experiments.train.ex.run``)
   once per supervision:

   ``oracle``  every gold box of the training split (``grounding.manual_fraction=1``);
   ``weak``    gold boxes on the manual share, the grounder's weak boxes (confidence >=
               ``--weak-threshold``) on the other tweets;
   ``manual``  gold boxes on the manual share only;
   ``none``    no grounding supervision (``model.losses.weights.grounding=0``): the grounding head
               is never trained, and its accuracy is simply measured, as for the others.

The report is a Markdown table (entity F1, F1 on ambiguous mentions, grounding accuracy and "none"
accuracy at IoU >= 0.5, grounded-NER F1, all on the test split of the model chosen on validation)
plus the ratio of the ``weak`` to the ``oracle`` grounding accuracy, written to
``OUT/grounding_supervision.md`` and ``OUT/grounding_supervision.json`` and printed. ``--smoke``
runs everything at a tiny size (the experiment's ``fast`` named config, one epoch) to check that
the pipeline works end to end.

A stopped job resumes: each finished stage (the grounder with its weak labels, then each variant)
is appended to ``OUT/runs.jsonl`` with the settings that shape it, and a rerun with the same
settings and ``--out`` skips what is there (``--fresh`` ignores the file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS: dict[str, str] = {
    "oracle": "all gold boxes",
    "weak": "{pct} gold + weak labels",
    "manual": "{pct} gold only",
    "none": "none (grounding loss weight 0)",
}


def _grounding_updates(
    variant: str, manual_fraction: float, weak_dir: Path, weak_threshold: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``grounding`` and ``model`` config updates of one variant."""
    if variant == "oracle":
        return {"manual_fraction": 1.0, "weak_dir": None}, {}
    if variant == "weak":
        return {
            "manual_fraction": manual_fraction,
            "weak_dir": str(weak_dir),
            "weak_threshold": weak_threshold,
        }, {}
    if variant == "manual":
        return {"manual_fraction": manual_fraction, "weak_dir": None}, {}
    if variant == "none":
        return {"manual_fraction": 1.0, "weak_dir": None}, {
            "losses": {"weights": {"grounding": 0.0}}
        }
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


def run_variant(
    variant: str, args: argparse.Namespace, target: Path, weak_dir: Path
) -> dict[str, Any]:
    """Train and test the main model with one grounding supervision through the Sacred experiment.

    Returns:
        The experiment's result dict (``test/...``, ``valid/...``) plus ``supervision`` (its
        manual/weak tweet counts) and ``seconds``.
    """
    from sacred import SETTINGS

    from experiments.train import ex

    SETTINGS.CAPTURE_MODE = "sys"
    grounding, model = _grounding_updates(
        variant, args.manual_fraction, weak_dir, args.weak_threshold
    )
    updates: dict[str, Any] = {
        "seed": args.seed,
        "save_artifacts": False,
        "output_dir": None,
        "data": {"name": "synthetic", "root": str(target), "limit": args.limit},
        "optim": {"epochs": args.epochs, "device": args.device},
        "grounding": grounding,
    }
    if model:
        updates["model"] = model
    started = time.perf_counter()
    run = ex.run(named_configs=["fast"] if args.smoke else [], config_updates=updates)
    if run.result is None:
        raise RuntimeError(f"variant {variant}: the experiment returned no result")
    out = dict(run.result)
    out["supervision"] = dict(run.info.get("grounding_supervision", {}))
    out["seconds"] = time.perf_counter() - started
    return out


def _fmt(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, float) else "n/a"


def markdown(
    results: dict[str, dict[str, Any]], grounder: dict[str, Any], meta: dict[str, Any]
) -> str:
    """The report: one row per variant, the weak/oracle ratio and the grounder's own scores."""
    pct = f"{meta['manual_fraction']:.0%}"
    lines = [
        f"Grounding supervision on SynthTweets (target seed {meta['seed']}, "
        f"{meta['tweets']['train']}/{meta['tweets']['valid']}/{meta['tweets']['test']} tweets; "
        f"grounder pretrained on seed {meta['source_seed']}, fine-tuned on {pct} manual tweets; "
        f"{meta['epochs']} epochs; test split, model chosen on validation; percent).",
        "",
        "| supervision | manual tweets | weak tweets | entity F1 | F1 on ambiguous mentions "
        "| grounding acc | none acc | grounded-NER F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        sup = res.get("supervision", {})
        manual, weak = str(int(sup.get("manual_tweets", 0))), str(int(sup.get("weak_tweets", 0)))
        if name in ("oracle", "none"):
            manual, weak = ("all", "-") if name == "oracle" else ("-", "-")
        lines.append(
            f"| {VARIANTS[name].format(pct=pct)} | {manual} | {weak} | {_fmt(res.get('test/f1'))} "
            f"| {_fmt(res.get('test/ambiguous_f1'))} | {_fmt(res.get('test/grounding_acc'))} "
            f"| {_fmt(res.get('test/none_acc'))} "
            f"| {_fmt(res.get('test/grounded_f1'))} |"
        )
    lines.append("")
    ratio = meta.get("weak_over_oracle_grounding_acc")
    if ratio is not None:
        lines.append(f"Weak / oracle grounding accuracy: {ratio:.3f}.")
    lines.append(
        f"The grounder alone on the test split: accuracy@IoU0.5 "
        f"{_fmt(grounder.get('grounding_acc'))}, none-accuracy {_fmt(grounder.get('none_acc'))} "
        f"(types of the tweet's text: {_fmt(grounder.get('text_types_grounding_acc'))}); "
        f"weak labels: {meta['weak_labels']}."
    )
    lines.append(
        "'none': the grounding head gets no gradient; its accuracy is measured all the same."
    )
    return "\n".join(lines) + "\n"


def stage_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What shapes the grounder and every variant: a logged stage is reused only if equal."""
    skip = {"out", "variants", "fresh"}
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in skip
    }


def _grounder_stage(
    args: argparse.Namespace, target: Path, source: Path, weak_dir: Path, timings: dict[str, float]
) -> tuple[dict[str, Any], str]:
    """Write the data sets, pretrain and fine-tune the grounder, test it and pseudo-label.

    Returns:
        The grounder's test scores and the one-line summary of the weak labels.
    """
    from detectors.grounder import (
        FINETUNING,
        PRETRAINING,
        TweetSplit,
        evaluate_grounder,
        finetune,
        load_grounder,
        pretrain,
    )
    from detectors.weak_labels import pseudo_label
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.data.synth import generate

    out: Path = args.out
    t0 = time.perf_counter()
    if args.data is None:
        generate(
            target,
            seed=args.seed,
            n_train=args.train,
            n_valid=args.valid,
            n_test=args.test,
            image_size=args.image_size,
        )
    if args.source is None:
        generate(
            source,
            seed=args.source_seed,
            n_train=args.source_train,
            n_valid=0,
            n_test=0,
            image_size=args.image_size,
        )
    timings["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pretrain(
        TweetSplit(source),
        out / "grounder" / "pretrained",
        training=replace(
            PRETRAINING, epochs=args.grounder_epochs, seed=args.seed, device=args.device
        ),
    )
    timings["grounder_pretrain"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    finetune(
        out / "grounder" / "pretrained",
        TweetSplit(target, limit=args.limit),
        out / "grounder" / "finetuned",
        manual_fraction=args.manual_fraction,
        training=replace(
            FINETUNING, epochs=args.finetune_epochs, seed=args.seed, device=args.device
        ),
    )
    timings["grounder_finetune"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    grounder, _ = load_grounder(out / "grounder" / "finetuned", args.device)
    test = load_split(target, "test").samples
    scores = evaluate_grounder(grounder, test[: args.limit] if args.limit else test).to_dict()
    print(f"grounder on the target test split: {scores}")
    weak = pseudo_label(
        grounder, TweetSplit(target, limit=args.limit), weak_dir, device=args.device
    )
    timings["grounder_evaluate_and_pseudo_label"] = time.perf_counter() - t0
    return dict(scores), weak.summary()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; see the module docstring.

    Args:
        argv: arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit status (0; 2 on a user error).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="work folder: data sets, grounder checkpoints, weak labels, report",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="existing target data set (default: generate OUT/target)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="existing source data set (default: generate OUT/source)",
    )
    parser.add_argument("--seed", type=int, default=0, help="target seed and experiment seed")
    parser.add_argument("--source-seed", type=int, default=100)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--valid", type=int, default=400)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--source-train", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=128, help="generated image side")
    parser.add_argument("--manual-fraction", type=float, default=0.2)
    parser.add_argument("--weak-threshold", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=8, help="main-model epochs")
    parser.add_argument("--grounder-epochs", type=int, default=15, help="pretrain epochs")
    parser.add_argument("--finetune-epochs", type=int, default=15)
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="data.limit of the experiment (also used by finetune)",
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny end-to-end check: the experiment's 'fast' named config",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="ignore OUT/runs.jsonl (finished stages of an earlier run)",
    )
    args = parser.parse_args(argv)

    from benchmarks.runlog import append_run, load_runs
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.errors import MnerqgError

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    log = out / "runs.jsonl"
    settings = stage_settings(args)
    logged = [] if args.fresh else [r for r in load_runs(log) if r.get("settings") == settings]
    done = {r.get("stage"): r for r in logged}
    target = args.data or out / "target"
    source = args.source or out / "source"
    weak_dir = out / "weak"
    try:
        kept = (out / "grounder" / "finetuned", weak_dir, target)
        if "grounder" in done and all(p.is_dir() for p in kept):
            g_dict: dict[str, Any] = done["grounder"]["scores"]
            weak_summary: str = done["grounder"]["weak_labels"]
            timings.update(done["grounder"]["seconds"])
            print(f"grounder and weak labels: reused from {log}")
        else:
            g_dict, weak_summary = _grounder_stage(args, target, source, weak_dir, timings)
            append_run(
                log,
                {
                    "stage": "grounder",
                    "settings": settings,
                    "scores": g_dict,
                    "weak_labels": weak_summary,
                    "seconds": dict(timings),
                },
            )

        results: dict[str, dict[str, Any]] = {}
        for variant in variants:
            print(f"=== {variant}: {VARIANTS[variant].format(pct=f'{args.manual_fraction:.0%}')}")
            if variant in done:
                results[variant] = done[variant]["result"]
                print(f"reused from {log}")
            else:
                results[variant] = run_variant(variant, args, target, weak_dir)
                append_run(
                    log, {"stage": variant, "settings": settings, "result": results[variant]}
                )
            timings[f"train_{variant}"] = results[variant]["seconds"]
    except MnerqgError as exc:
        print(f"grounding_supervision: error: {exc}", file=sys.stderr)
        return 2
    timings["total"] = time.perf_counter() - t_all

    ratio = None
    if "weak" in results and "oracle" in results:
        oracle = results["oracle"].get("test/grounding_acc")
        weak_acc = results["weak"].get("test/grounding_acc")
        if isinstance(oracle, float) and isinstance(weak_acc, float) and oracle > 0:
            ratio = weak_acc / oracle
    meta: dict[str, Any] = {
        "seed": args.seed,
        "source_seed": args.source_seed,
        "tweets": {"train": args.train, "valid": args.valid, "test": args.test}
        if args.data is None
        else {s: len(load_split(target, s).samples) for s in ("train", "valid", "test")},
        "source_train": args.source_train,
        "manual_fraction": args.manual_fraction,
        "weak_threshold": args.weak_threshold,
        "epochs": args.epochs,
        "grounder_epochs": [args.grounder_epochs, args.finetune_epochs],
        "limit": args.limit,
        "smoke": args.smoke,
        "weak_labels": weak_summary,
        "weak_over_oracle_grounding_acc": ratio,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "command": " ".join(
            [
                "python",
                "benchmarks/grounding_supervision.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
    }
    report = markdown(results, g_dict, meta)
    (out / "grounding_supervision.md").write_text(report, encoding="utf-8")
    payload = {"meta": meta, "grounder": g_dict, "results": results}
    (out / "grounding_supervision.json").write_text(
        json.dumps(payload, indent=1, sort_keys=True, default=float) + "\n", encoding="utf-8"
    )
    print(report)
    print(f"times (s): {json.dumps(meta['seconds'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
