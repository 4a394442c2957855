"""The body of the Sacred experiment, as a plain function of its config sections.

Kept apart from :mod:`experiments.train` so it reads like a script: resolve data and encoder, build
the model, train with validation-based selection, evaluate the chosen model once on test, write
predictions, metrics and the checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mnerqg_graph.config import CONFIG_VERSION, ModelConfig
from mnerqg_graph.data.types import Sample
from mnerqg_graph.environment import describe, environment
from mnerqg_graph.errors import ConfigError, DataError
from mnerqg_graph.io import (
    abandon_dir,
    atomic_write_text,
    check_replaceable,
    replace_dir,
    temp_dir_beside,
)

SPLITS = ("train", "valid", "test")
SPAN_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(2, 15))  # 0.10, 0.15, ..., 0.70
EXISTENCE_THRESHOLDS = (0.0, 0.5)  # decode without / with the existence head's verdict
_NOT_MODEL_KEYS = {"tiny"}  # the experiment's own: sizes of the tiny encoder it builds


def _synth_stale(root: Path, want: dict[str, Any]) -> bool:
    """Whether SynthTweets must be (re)generated in ``root``.

    True when there is no data there yet, or a set that the generator made with another seed or
    other split sizes (its ``synth_meta.json``; the ``fast`` config's 24-tweet set has a folder
    of its own, so that it does not replace the demo's).
    A folder without that file is a user's and is kept as it is.
    """
    if not (root / "train.txt").exists():
        return True
    meta = root / "synth_meta.json"
    if not meta.is_file():
        return False
    try:
        params = json.loads(meta.read_text(encoding="utf-8")).get("params", {})
    except (OSError, ValueError, AttributeError):
        return False
    made = {k: params.get(k) for k in ("seed", "n_train", "n_valid", "n_test")}
    return made != {
        "seed": want["seed"],
        "n_train": want["train"],
        "n_valid": want["valid"],
        "n_test": want["test"],
    }


def load_data(data: dict[str, Any], seed: int) -> dict[str, list[Sample]]:
    """Load the three splits; SynthTweets is generated first where :func:`_synth_stale` says."""
    from mnerqg_graph.data.dataset import load_split

    root = Path(data["root"])
    if data["name"] == "synthetic" and _synth_stale(root, data["synth"]):
        from mnerqg_graph.data.synth import generate

        s = data["synth"]
        generate(root, seed=s["seed"], n_train=s["train"], n_valid=s["valid"], n_test=s["test"])
    if not root.is_dir():
        raise ConfigError(f"data.root does not exist: {root}")
    out: dict[str, list[Sample]] = {}
    for split in SPLITS:
        loaded = load_split(
            root, split, images_dir=data.get("images_dir"), boxes_dir=data.get("boxes_dir")
        )
        samples, r = loaded.samples, loaded.report  # fallbacks are counted and said, never silent
        print(
            f"[{split}] {r.path}: {r.tweets} tweets; images: {r.with_image} read, "
            f"{r.missing_images} missing, {r.unreadable_images} unreadable (text-only); "
            f"{len(r.problems)} warnings" + (f" (first: {r.problems[0]})" if r.problems else "")
        )
        if not data.get("use_images", True):
            samples = [Sample(s.tweet, None, None, {}) for s in samples]
        if data.get("limit"):
            samples = samples[: int(data["limit"])]
        out[split] = samples
    return out


def model_config(model: dict[str, Any], types: list[str], encoder: str) -> ModelConfig:
    """The library's model config from the experiment's ``model`` section.

    Args:
        model: the section (Sacred's ``model``: :class:`ModelConfig`'s sections and the
            experiment's own ``tiny``).
        types: the query file's entity types.
        encoder: the resolved text encoder directory (:func:`resolve_encoder`).

    Raises:
        ConfigError: an unknown key (a key of the flat layout before ``config_version`` 2 names
            its new place), a value of the wrong kind or out of range.
    """
    sections = {k: _clean(v) if isinstance(v, dict) else v for k, v in _clean(model).items()}
    data = {k: v for k, v in sections.items() if k not in _NOT_MODEL_KEYS}
    data["encoder"] = {**data.get("encoder", {}), "name": encoder}
    data["types"] = types
    return ModelConfig.from_dict({"config_version": CONFIG_VERSION, **data}, source="model")


def resolve_encoder(
    model: dict[str, Any], train: list[Sample], queries: dict[str, str], work: Path, seed: int
) -> str:
    """The text encoder directory: a tiny one built from the training text, MiniLM, or a path."""
    name = model["encoder"]["name"]
    if name == "tiny":
        from mnerqg_graph.encoders.tiny import build_tiny_encoder

        corpus = [s.tweet.tokens for s in train] + [q.split() for q in queries.values()]
        return str(build_tiny_encoder(work / "tiny_encoder", corpus, seed=seed, **model["tiny"]))
    if name == "minilm":
        from mnerqg_graph.encoders.text import minilm_path

        return minilm_path()
    if not Path(name).exists() and (Path(name).is_absolute() or name.startswith(".")):
        raise ConfigError(f"model.encoder.name path does not exist: {name}")
    return str(name)


def apply_grounding_supervision(
    train: list[Sample], grounding: dict[str, Any], seed: int
) -> tuple[list[Sample], dict[str, float]]:
    """Keep gold boxes on ``manual_fraction`` of the training tweets; weak boxes elsewhere."""
    frac = float(grounding.get("manual_fraction", 1.0))
    if frac >= 1.0:
        return train, {"manual_tweets": float(sum(bool(s.boxes) for s in train))}
    from detectors.manual import select_manual

    keep = select_manual(train, frac, seed)
    weak_dir = grounding.get("weak_dir")
    weak: dict[str, Any] = {}
    if weak_dir:
        from detectors.weak_labels import load_weak_boxes

        weak = load_weak_boxes(weak_dir, train, threshold=float(grounding["weak_threshold"]))
    out, n_weak = [], 0
    for i, s in enumerate(train):
        if i in keep:
            out.append(s)
        else:
            # a tweet with neither manual nor weak boxes gets no grounding loss at all (it must
            # not learn "not in the image" from a missing annotation)
            labelled = s.tweet.id in weak
            n_weak += labelled
            out.append(
                Sample(
                    s.tweet,
                    s.image_path,
                    s.image_size,
                    weak.get(s.tweet.id, {}),
                    grounding_labelled=labelled,
                )
            )
    return out, {"manual_tweets": float(len(keep)), "weak_tweets": float(n_weak)}


def decoding_grid(model: Any) -> list[Any]:
    """The decodings :func:`choose_decoding` scores for ``model``.

    Every ``(span_threshold, existence_threshold)`` of :data:`SPAN_THRESHOLDS` x
    :data:`EXISTENCE_THRESHOLDS` with the span heads, and, for a model with the auxiliary
    tagger, the tagger at each existence threshold (at the config's span threshold, which it
    does not read).
    """
    from mnerqg_graph.decoding import Decoding

    cfg = model.config
    grid = [Decoding("span", a, b) for b in EXISTENCE_THRESHOLDS for a in SPAN_THRESHOLDS]
    if model.tag_head is not None:
        grid += [
            Decoding("tags", float(cfg.decoding.span_threshold), b) for b in EXISTENCE_THRESHOLDS
        ]
    return grid


def choose_decoding(
    model: Any,
    inputs: Any,
    types: list[str],
    ambiguous: Any,
    metric: str,
    batch_size: int,
    device: torch.device | str,
    progress: bool = False,
) -> tuple[tuple[str, float, float], dict[str, float], dict[str, float]]:
    """The decoder and thresholds that score best on the validation split.

    The grid of :func:`decoding_grid`, decoded from one forward pass
    (:func:`mnerqg_graph.pipeline.predict_grid`). Ties go to the span heads and to the
    thresholds nearest the model's config.

    Args:
        model: the trained model (its config's decoder and thresholds are the reference).
        inputs: the validation tweets, prepared by the model's processor.
        types: entity types scored.
        ambiguous: the validation split's ambiguous-type annotations, or None.
        metric: the score compared (e.g. ``f1``).
        batch_size: tweets per forward pass.
        device: where the model runs.
        progress: show the forward pass's progress on stderr.

    Returns:
        ``((decoder, span_threshold, existence_threshold), its validation scores, the best
        validation score of each decoder tried)``.
    """
    from mnerqg_graph import pipeline
    from mnerqg_graph.evaluation import score_predictions
    from mnerqg_graph.progress import Progress

    cfg = model.config
    grid = decoding_grid(model)
    with Progress(len(inputs), "decoding", "tweet", enabled=progress) as bar:
        by_d = pipeline.predict_grid(
            model, inputs, grid, batch_size=batch_size, device=device, progress=bar
        )
    scored: dict[tuple[str, float, float], dict[str, float]] = {
        (d.decoder, d.span_threshold, d.existence_threshold): score_predictions(
            inputs.samples, p, types, ambiguous
        )
        for d, p in by_d.items()
    }
    decoders = list(dict.fromkeys(d.decoder for d in grid))
    trained = (float(cfg.decoding.span_threshold), float(cfg.decoding.existence_threshold))

    def rank(k: tuple[str, float, float]) -> tuple[float, bool, float]:
        distance = abs(k[1] - trained[0]) + abs(k[2] - trained[1])
        return scored[k][metric], k[0] == "span", -distance

    chosen = max(scored, key=rank)
    by_decoder = {d: max(v[metric] for k, v in scored.items() if k[0] == d) for d in decoders}
    return chosen, scored[chosen], by_decoder


def run_experiment(
    data: dict[str, Any],
    model: dict[str, Any],
    optim: dict[str, Any],
    grounding: dict[str, Any],
    seed: int,
    output_dir: str | None,
    resume: bool,
    visualize: int,
    log: Callable[[str, float, int], None],
    add_artifact: Callable[[Path, str], None] | None,
    info: dict[str, Any],
    tune_threshold: bool = True,
    report: bool = False,
) -> dict[str, float]:
    """Run one experiment; returns the flat result dict (fractions in [0, 1])."""
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.evaluation import score_predictions, write_predictions
    from mnerqg_graph.model import build_model
    from mnerqg_graph.pipeline import predict
    from mnerqg_graph.processing import MnerqgProcessor
    from mnerqg_graph.progress import Progress
    from mnerqg_graph.training import distributed as ddp
    from mnerqg_graph.training.checkpoint import load_checkpoint
    from mnerqg_graph.training.loop import TrainConfig, Trainer, resolve_device

    data, model, optim, grounding = (_clean(d) for d in (data, model, optim, grounding))
    model_config(model, [], "checked before any data is read")  # a bad key fails at once
    TrainConfig(seed=seed, **optim)  # and so does a bad optimisation setting
    if resume and not output_dir:  # a fresh temporary folder never holds a state to resume
        raise ConfigError("resume=True needs output_dir: the folder whose state/ it continues")
    if output_dir:  # its checkpoint/ is replaced at the end: refuse a foreign one before training
        check_replaceable(Path(output_dir) / "checkpoint", "model.safetensors")
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    random.seed(seed)
    tmp_work = None
    if output_dir:
        work = Path(output_dir) / "work"
    else:
        tmp_work = Path(tempfile.mkdtemp(prefix="mnerqg-"))
        work = tmp_work
    work.mkdir(parents=True, exist_ok=True)
    try:
        # DDP (torchrun sets WORLD_SIZE > 1): process group, this rank's device; no-op otherwise
        dist_env, optim["device"] = ddp.setup(str(optim.get("device", "auto")))
        with ddp.main_process_first(dist_env):  # rank 0 generates SynthTweets, then the others
            splits = load_data(data, seed)
        queries = load_queries(data.get("queries"))
        for s in splits["train"] + splits["valid"] + splits["test"]:  # name the data line
            for sp in s.tweet.entities:
                if sp.type not in queries:
                    where = f"{data.get('queries') or 'the default queries'} ({', '.join(queries)})"
                    line = s.tweet.line + 1 + sp.start if s.tweet.line else None
                    msg = f"entity type {sp.type} has no query in {where}"
                    raise DataError(s.tweet.source, msg, line=line)
        train_samples, sup = apply_grounding_supervision(splits["train"], grounding, seed)
        info["grounding_supervision"] = sup
        encoder = ddp.build_on_main(  # rank 0 builds (a tiny encoder), the others get a copy
            lambda w: resolve_encoder(model, splits["train"], queries, w, seed), dist_env, work
        )
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        cfg = model_config(model, list(queries), encoder)
        if data.get("region_cache") and not cfg.image.freeze_image:
            print("data.region_cache: the image side is frozen (model.image.freeze_image=True)")
            cfg.image.freeze_image = True
        torch.manual_seed(seed)
        net = build_model(cfg)
        cache = None
        processor = MnerqgProcessor.from_model(net, tokenizer, queries)
        if data.get("region_cache"):  # region nodes read from the cache: no image is decoded
            from detectors.region_cache import open_for_model

            cache = open_for_model(data["region_cache"], net, adopt_backbone=True)  # a new model
            processor = processor.replace(image_size=None)
        inputs = {}
        for split, samples in (
            ("train", train_samples),
            ("valid", splits["valid"]),
            ("test", splits["test"]),
        ):
            inputs[split] = processor(samples)
            info[f"prepare_{split}"] = inputs[split].report.summary()
            print(f"[{split}] {inputs[split].report.summary()}")
            if cache is not None:
                from detectors.region_cache import attach

                cached = attach(cache, net, inputs[split].items, samples)
                info[f"region_cache_{split}"] = {
                    "read": cached.read,
                    "missing": len(cached.missing),
                }
                print(f"[{split}] {cached.summary()}")
        items = {split: got.items for split, got in inputs.items()}
        ambiguous = _ambiguous(data)
        tcfg = TrainConfig(seed=seed, **optim)
        device = resolve_device(tcfg.device)
        pad_id = processor.pad_id
        info["environment"] = environment(device)  # what differs when two machines disagree
        if dist_env.is_main:
            print(f"environment: {describe(info['environment'])}")

        def evaluate(m: Any) -> dict[str, float]:
            with Progress(len(items["valid"]), "valid", "tweet", enabled=tcfg.progress) as bar:
                preds = predict(
                    m, inputs["valid"], batch_size=tcfg.eval_batch_size, device=device, progress=bar
                )
            return score_predictions(splits["valid"], preds, list(queries), ambiguous.get("valid"))

        trainer = Trainer(
            net,
            tokenizer,
            queries,
            items["train"],
            ddp.on_main(evaluate, dist_env),
            tcfg,
            work,
            log=log,
            progress=print,
            **ddp.trainer_kwargs(dist_env, device, items["train"], seed, pad_id),
        )
        result = trainer.fit(resume=resume)
        info["history"] = [dict(h) for h in result.history]  # per-epoch losses and valid scores
        ddp.barrier()  # rank 0 has written best/ before anyone goes on
        if not dist_env.is_main:  # rank 0 alone evaluates on test and writes the results
            return {f"valid/{k}": float(v) for k, v in result.best_metrics.items()}
        print(
            f"best epoch {result.best_epoch + 1}/{tcfg.epochs} ({tcfg.select_metric} "
            f"{result.best_metrics.get(tcfg.select_metric, float('nan')):.4f}), "
            f"{result.seconds:.1f} s"
        )
        best, best_processor = load_checkpoint(work / "best", device)
        valid_best = result.best_metrics
        if tune_threshold:  # decoder and thresholds are chosen on valid too, saved with the model
            chosen, scored, by_decoder = choose_decoding(
                best,
                inputs["valid"],
                list(queries),
                ambiguous.get("valid"),
                tcfg.select_metric,
                tcfg.eval_batch_size,
                device,
                progress=tcfg.progress,
            )
            if scored[tcfg.select_metric] > valid_best.get(tcfg.select_metric, -1.0):
                best.config.decoding.decoder = chosen[0]
                best.config.decoding.span_threshold, best.config.decoding.existence_threshold = (
                    chosen[1:]
                )
                best.save_pretrained(work / "best", best_processor)
                valid_best = scored
            info["decoder"] = best.config.decoding.decoder
            info["valid_best_by_decoder"] = by_decoder
            info["span_threshold"] = float(best.config.decoding.span_threshold)
            info["existence_threshold"] = float(best.config.decoding.existence_threshold)
            print(
                f"decoding: {best.config.decoding.decoder}, thresholds span "
                f"{best.config.decoding.span_threshold:.2f}, existence "
                f"{best.config.decoding.existence_threshold:.2f} (valid {tcfg.select_metric} "
                f"{valid_best.get(tcfg.select_metric, float('nan')):.4f}; best "
                + ", ".join(f"{d} {v:.4f}" for d, v in by_decoder.items())
                + ")"
            )
        with Progress(len(items["test"]), "test", "tweet", enabled=tcfg.progress) as bar:
            preds = predict(
                best, inputs["test"], batch_size=tcfg.eval_batch_size, device=device, progress=bar
            )
        test = score_predictions(splits["test"], preds, list(queries), ambiguous.get("test"))
        out = {f"test/{k}": float(v) for k, v in test.items()}
        out.update({f"valid/{k}": float(v) for k, v in valid_best.items()})
        out["best_epoch"] = float(result.best_epoch + 1)  # 1-based, as the progress lines count
        out["span_threshold"] = float(best.config.decoding.span_threshold)
        out["existence_threshold"] = float(best.config.decoding.existence_threshold)
        out["tag_decoder"] = float(best.config.decoding.decoder == "tags")
        out["train_seconds"] = float(result.seconds)
        # both count the epochs trained before a resume (train_seconds includes them)
        out["total_seconds"] = float(time.perf_counter() - t_start + result.seconds_before)
        pred_dir = work / "predictions"
        write_predictions(pred_dir, splits["test"], preds)
        atomic_write_text(work / "metrics.json", json.dumps(out, indent=2, sort_keys=True) + "\n")
        _print_table(test)
        if output_dir:
            ckpt = Path(output_dir) / "checkpoint"  # copied aside, then swapped in atomically
            tmp_ckpt = temp_dir_beside(ckpt)
            try:
                shutil.copytree(work / "best", tmp_ckpt, dirs_exist_ok=True)
                replace_dir(tmp_ckpt, ckpt, "model.safetensors")
            except BaseException as exc:  # a full disk: one line naming the checkpoint
                abandon_dir(tmp_ckpt, ckpt, exc)
                raise
        if add_artifact is not None:
            for f in sorted((work / "best").rglob("*")):
                if f.is_file():
                    add_artifact(f, "checkpoint-" + "-".join(f.relative_to(work / "best").parts))
            for f in sorted(pred_dir.iterdir()):
                add_artifact(f, f"test-{f.name}")
            # not "metrics.json": that name is the FileStorageObserver's own file
            add_artifact(work / "metrics.json", "final_metrics.json")
        if visualize and add_artifact is not None:
            from mnerqg_graph.viz.artifacts import visualize_samples

            vis_dir = work / "visualize"
            visualize_samples(best, best_processor, splits["valid"][:visualize], vis_dir)
            for f in sorted(vis_dir.rglob("*")):
                if f.is_file():
                    add_artifact(f, "visualize-" + "-".join(f.relative_to(vis_dir).parts))
        if report and add_artifact is not None:  # the HTML page of mnerqg report, valid split
            from mnerqg_graph.report import write_report

            page = work / "report-valid.html"
            meta = {"data": str(data["root"]), "split": "valid", "checkpoint": "this run's"}
            write_report(
                page,
                best,
                best_processor,
                splits["valid"],
                meta=meta,
                ambiguous=ambiguous.get("valid"),
                batch_size=tcfg.eval_batch_size,
                device=device,
            )
            add_artifact(page, "report-valid.html")
        return out
    finally:
        ddp.cleanup()
        if tmp_work is not None:
            shutil.rmtree(tmp_work, ignore_errors=True)


def _clean(section: dict[str, Any]) -> dict[str, Any]:
    """A config section without Sacred's bookkeeping entries (``__doc__``)."""
    return {k: v for k, v in section.items() if not k.startswith("__")}


def _ambiguous(data: dict[str, Any]) -> dict[str, set[tuple[str, int, int]]]:
    meta = Path(data["root"]) / "synth_meta.json"
    if data["name"] != "synthetic" or not meta.exists():
        return {}
    from mnerqg_graph.data.synth import load_ambiguous

    return load_ambiguous(meta)


def _print_table(scores: dict[str, float]) -> None:
    keys = ["precision", "recall", "f1"] + sorted(k for k in scores if k.startswith("f1_"))
    keys += [k for k in ("grounding_acc", "none_acc", "grounded_f1", "ambiguous_f1") if k in scores]
    print("test: " + "  ".join(f"{k}={100 * scores[k]:.2f}" for k in keys))
