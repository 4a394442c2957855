"""Throughput benchmark: training and inference speed, stage shares, full vs text-only cost.

Usage::

    mnerqg bench [--encoder tiny|minilm|PATH] [--images | --no-images] [--device cpu|cuda|auto]
                 [--query-encoding packed|per_type|packed,per_type] [--data DIR] [--tweets N]
                 [--repeat R] [--train-steps S] [--threads T] [--json]
    python -m mnerqg_graph.bench.throughput ...  # the same (python -m benchmarks.throughput too)

One run measures, on the same tweets and the same text encoder:

* **inference tweets/s** of the full model (``hetero_gat`` fusion with the image branch), end to
  end as ``mnerqg predict`` runs it: tokenise (all ``T`` = 4 queries per tweet), collate, forward,
  decode, span resolution; tweets sorted by length, ``--batch-size`` tweets per forward pass; for
  each query encoding of ``--query-encoding`` (the first is the one the stage shares, the
  text-only comparison and the targets are about);
* the **reference tagger** (:mod:`mnerqg_graph.bench.tagger_reference`): the same text encoder
  as a plain BIO tagger (one pass per tweet, a linear layer, argmax, word-tag decoding), timed the
  same way on the same tweets, interleaved with the model's runs; the **model / tagger** inference
  and training ratios are its tweets/s over the tagger's;
* **training examples/s** (an example is one (tweet, type) pair, ``T`` per tweet; tweets/s is
  reported too): collate + :meth:`Trainer._step` (forward, losses, backward, clipping, AdamW);
* **stage shares** of the inference step and of the training step, from one pass under
  :mod:`torch.profiler` with the model's ``mnerqg::<stage>`` labels (tokenise, collate,
  text_encoder, graph_build, image_encoder, fusion, heads, decode; training adds losses, backward
  and optimizer). The profiler's per-op overhead inflates stages made of many small ops (graph
  build, fusion), so their shares are upper bounds;
* the **full / text-only step-time ratio**: the same measurements for the ``none`` fusion module
  without image branch (the ``text_only`` named config), interleaved with the full model's runs so
  that load on a shared machine hits both alike.

The models are freshly initialised (same seed), with the span heads' start/end biases set as a
trained model's are (:data:`SPAN_BIAS`), so that decoding sees a trained model's few candidates.
Every timing has a warm-up, then ``--repeat`` repetitions (fewer, but at least 2, when the run
would exceed ``--budget`` seconds); the table shows the median and the spread (min-max); ``--json``
prints one JSON object instead. ``--threads`` defaults to the CPUs that other processes leave idle
(:func:`default_threads`). Inputs are SynthTweets (generated once
into a cache folder, ``$MNERQG_BENCH_CACHE`` or the system temp dir) or ``--data DIR`` (any data-set
folder, ``--split``). ``--no-images`` (the default) drops the images, which is how the targets are
stated; ``--images`` keeps them.

Targets (a 2-core CPU, MiniLM, images absent): inference >= 40 tweets/s, graph build < 5 % of the
inference step, full model within 1.3x of the text-only training step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile, record_function

#: The stages of ``MnerqgModel.forward`` after collation, in order.
MODEL_STAGES: tuple[str, ...] = ("text_encoder", "graph_build", "image_encoder", "fusion", "heads")
#: Stage labels of the model and of this benchmark, in table order.
INFER_STAGES: tuple[str, ...] = ("tokenise", "collate", *MODEL_STAGES, "decode")
TRAIN_STAGES: tuple[str, ...] = ("collate", *MODEL_STAGES, "losses", "backward", "optimizer")
#: The targets of the project (2-core CPU, MiniLM, images absent).
TARGETS = {
    "inference_tweets_per_s": 40.0,
    "inference_vs_tagger": 0.5,
    "graph_build_share": 0.05,
    "full_vs_text_only_step_ratio": 1.3,
}
#: The query encoding benchmarked when ``--query-encoding`` is not given.
DEFAULT_MODE = "packed"
#: Targets that are floors (the others are ceilings).
FLOORS = ("inference_tweets_per_s", "inference_vs_tagger")
#: Start/end logit bias of the benchmarked span heads: sigmoid(-4) = 0.018, so that, as with a
#: trained model, few tokens are start/end candidates. Freshly initialised heads give p ~ 0.5 at
#: every position, and decoding would time a Python loop over a candidate at every other span.
SPAN_BIAS = -4.0
TINY_ENCODER = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}
#: What the ``twitter2017`` named config changes in the model (``experiments/train.py``), used
#: with ``--encoder minilm``, which benchmarks the real-data model (a test keeps the two equal).
REAL_DATA_MODEL: dict[str, Any] = {
    "heads.max_span_len": 10,
    "encoder.url_word": "url",
    "heads.tag_head": True,
}


@dataclass
class Timing:
    """Repeated measurements of one quantity (seconds, or a rate)."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median of the repetitions."""
        return float(statistics.median(self.values)) if self.values else float("nan")

    def spread(self) -> tuple[float, float]:
        """``(min, max)`` of the repetitions."""
        return (min(self.values), max(self.values)) if self.values else (float("nan"),) * 2


@dataclass
class ModelUnderTest:
    """A model with the tweet items prepared for it."""

    name: str
    model: Any
    train_items: list[Any]
    image_size: int | None
    query_encoding: str = "per_type"
    queries: dict[str, str] = field(default_factory=dict)


def pieces_per_tweet(items: Sequence[Any]) -> float:
    """Mean word pieces the text encoder reads per tweet (every distinct sequence, no padding).

    A packed tweet's examples share one ``input_ids`` list; per type, each example has its own.
    """
    total = 0
    for item in items:
        seqs = {id(ex.input_ids): len(ex.input_ids) for ex in item.examples}
        total += sum(seqs.values())
    return total / max(len(items), 1)


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """Torch threads: the CPUs this process may use, less those other processes keep busy.

    On a machine whose load exceeds its cores, OpenMP threads wait for each other at every
    parallel region (measured on a loaded 2-core machine: 2 threads ran the tiny model's step
    10x slower than 1), so the default leaves the busy cores alone.
    """
    cpus = available_cpus()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cpus, cpus - int(load)))


def cache_root() -> Path:
    """Where generated inputs (SynthTweets, the tiny encoder) are kept between runs."""
    env = os.environ.get("MNERQG_BENCH_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / "mnerqg-bench"


def load_samples(
    data: Path | None, split: str, n_tweets: int, images: bool, seed: int = 0
) -> tuple[list[Any], str]:
    """The benchmark's tweets: ``n_tweets`` from ``data`` (or a cached SynthTweets set).

    Returns:
        The samples (images dropped unless ``images``) and a description of where they came from.
    """
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.data.types import Sample

    if data is None:
        from mnerqg_graph.data.synth import generate

        data = cache_root() / f"synth-seed{seed}-n{n_tweets}"
        if not (data / "train.txt").is_file():
            _log(f"generating SynthTweets ({n_tweets} tweets) in {data}")
            generate(data, seed=seed, n_train=n_tweets, n_valid=1, n_test=1)
        split = "train"
    samples = load_split(data, split).samples[:n_tweets]
    if not images:
        samples = [Sample(s.tweet, None, None, {}) for s in samples]
    return samples, f"{data} ({split}, {len(samples)} tweets)"


def resolve_encoder(name: str, samples: Sequence[Any], queries: dict[str, str]) -> str:
    """``tiny`` (built once into the cache from the tweets), ``minilm``, or a model directory."""
    if name == "minilm":
        from mnerqg_graph.encoders.text import minilm_path

        return minilm_path()
    if name == "tiny":
        from mnerqg_graph.encoders.tiny import build_tiny_encoder

        corpus = [s.tweet.tokens for s in samples] + [q.split() for q in queries.values()]
        digest = hashlib.sha1(json.dumps([corpus, TINY_ENCODER]).encode()).hexdigest()[:12]
        out = cache_root() / f"tiny-encoder-{digest}"
        if not (out / "config.json").is_file():
            t = TINY_ENCODER
            build_tiny_encoder(
                out,
                corpus,
                hidden_size=t["hidden_size"],
                num_layers=t["num_layers"],
                num_heads=t["num_heads"],
                intermediate_size=t["intermediate_size"],
                seed=0,
            )
        return str(out)
    if not Path(name).is_dir():
        raise SystemExit(f"bench: --encoder must be tiny, minilm or a model folder: {name}")
    return name


def set_span_bias(model: Any, bias: float) -> None:
    """Set the output bias of the span head's start and end scorers (their last linear layer)."""
    with torch.no_grad():
        for scorer in (model.span_head.start, model.span_head.end):
            last = [m for m in scorer.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.bias.fill_(bias)


def build_models(
    encoder: str,
    hidden_dim: int | None,
    fusion: str,
    samples: Sequence[Any],
    queries: dict[str, str],
    device: torch.device,
    modes: Sequence[str] = ("per_type",),
    real_data: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    mode_queries: dict[str, dict[str, str]] | None = None,
) -> list[ModelUnderTest]:
    """The full models and the text-only model, with their prepared training items.

    One full model per query encoding of ``modes`` (named ``full`` for the first, else
    ``full/<mode>``), and the text-only (``none``) model in the first mode; ``real_data``: with
    the real-data model's settings (:data:`REAL_DATA_MODEL`); ``overrides``: per mode, the
    ``ModelConfig`` fields set after those (``--model [MODE:]KEY=VALUE``); ``mode_queries``: per
    mode, its queries instead of ``queries`` (``--queries MODE:FILE``).
    """
    from transformers import AutoConfig, AutoTokenizer

    from mnerqg_graph.config import EncoderConfig, ModelConfig
    from mnerqg_graph.model import build_model
    from mnerqg_graph.processing import MnerqgProcessor

    tok = AutoTokenizer.from_pretrained(encoder)
    if hidden_dim is None:  # the encoder's width: 64 for tiny, 384 for MiniLM (as the configs)
        hidden_dim = int(AutoConfig.from_pretrained(encoder).hidden_size)
    out = []
    variants: list[tuple[str, dict[str, Any]]] = [
        (
            "full" if k == 0 else f"full/{mode}",
            {"fusion.name": fusion, "image.use_image": True, "encoder.query_encoding": mode},
        )
        for k, mode in enumerate(modes)
    ]
    text_only = {
        "fusion.name": "none",
        "image.use_image": False,
        "encoder.query_encoding": modes[0],
    }
    variants.append(("text_only", text_only))
    for name, over in variants:
        mode = over["encoder.query_encoding"]
        own_queries = (mode_queries or {}).get(mode, queries)
        if list(own_queries) != list(queries):
            raise SystemExit(f"bench: the {mode} queries ask other types than the others")
        torch.manual_seed(0)
        base = ModelConfig(types=list(own_queries), encoder=EncoderConfig(name=encoder))
        net = build_model(
            base.updated(  # every other field: the defaults, the experiment's too
                {
                    "graph.hidden_dim": hidden_dim,
                    **(REAL_DATA_MODEL if real_data else {}),
                    **(overrides or {}).get(mode, {}),
                    **over,
                }
            )
        )
        set_span_bias(net, SPAN_BIAS)  # few span candidates, as after training (docstring)
        net.to(device)
        processor = MnerqgProcessor.from_model(net, tok, own_queries)
        items = processor(samples).items
        out.append(ModelUnderTest(name, net, items, processor.image_size, mode, dict(own_queries)))
    return out


@contextmanager
def _labelled_collate() -> Iterator[None]:
    """Label :func:`mnerqg_graph.data.collate.collate` calls ``mnerqg::collate`` (profiled pass)."""
    import mnerqg_graph.data.collate as collate_mod

    original = collate_mod.collate

    def labelled(*args: Any, **kwargs: Any) -> Any:
        with record_function("mnerqg::collate"):
            return original(*args, **kwargs)

    with mock.patch.object(collate_mod, "collate", labelled):
        yield


def run_inference(
    mut: ModelUnderTest,
    samples: Sequence[Any],
    tokenizer: Any,
    queries: dict[str, str],
    batch_size: int,
    device: torch.device,
) -> float:
    """One end-to-end inference pass over ``samples`` (as ``mnerqg predict``); seconds.

    The pipeline labels its decoding step ``mnerqg::decode`` itself (the collate label comes
    from :func:`_labelled_collate` when profiled).
    """
    from mnerqg_graph.pipeline import predict
    from mnerqg_graph.processing import MnerqgProcessor

    order = sorted(range(len(samples)), key=lambda i: len(samples[i].tweet.tokens))
    ordered = [samples[i] for i in order]
    processor = MnerqgProcessor.from_model(mut.model, tokenizer, mut.queries or queries)
    _sync(device)
    t0 = time.perf_counter()
    with record_function("mnerqg::tokenise"):
        inputs = processor(ordered)
    predict(mut.model, inputs, batch_size=batch_size, device=device)
    _sync(device)
    return time.perf_counter() - t0


def make_trainer(
    mut: ModelUnderTest,
    tokenizer: Any,
    queries: dict[str, str],
    batch_size: int,
    device: torch.device,
    out_dir: Path,
) -> Any:
    """A :class:`~mnerqg_graph.training.loop.Trainer` whose ``_step`` is the training step."""
    from mnerqg_graph.training.loop import TrainConfig, Trainer

    cfg = TrainConfig(
        epochs=1000,
        batch_size=batch_size,
        lr=1e-3,  # the learning rates the published step times were measured with
        encoder_lr=1e-3,
        device=str(device),
        warmup_ratio=0.0,
    )
    own = mut.queries or queries
    return Trainer(mut.model, tokenizer, own, mut.train_items, lambda m: {}, cfg, out_dir)


def train_batches(mut: ModelUnderTest, batch_size: int, n: int) -> list[list[Any]]:
    """``n`` fixed batches of tweets (cycling over the items), the same for every model."""
    items = mut.train_items
    return [[items[(k * batch_size + j) % len(items)] for j in range(batch_size)] for k in range(n)]


def run_train_steps(
    trainer: Any,
    mut: ModelUnderTest,
    batches: list[list[Any]],
    pad_id: int,
    device: torch.device,
    step0: int = 0,
    labelled: bool = False,
) -> list[float]:
    """Time each training step (collate + transfer + ``Trainer._step``); seconds per step."""
    from mnerqg_graph.data.collate import collate

    cfg = mut.model.config
    mut.model.train()
    times = []
    patches = _labelled_training(mut.model, trainer) if labelled else nullcontext()
    with patches:
        for k, tweets in enumerate(batches):
            _sync(device)
            t0 = time.perf_counter()
            with record_function("mnerqg::collate"):
                batch = collate(tweets, cfg.heads.max_span_len, cfg.image.image_size, pad_id)
                batch = batch.to(device, non_blocking=True)
            trainer._step(batch, step0 + k)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return times


def run_tagger_inference(
    tagger: Any, samples: Sequence[Any], tokenizer: Any, batch_size: int, device: torch.device
) -> float:
    """One end-to-end pass of the reference tagger (tokenise, forward, argmax, word tags); s."""
    tweets = [s.tweet for s in samples]
    _sync(device)
    t0 = time.perf_counter()
    tagger.predict(tokenizer, tweets, batch_size, device)
    _sync(device)
    return time.perf_counter() - t0


def run_tagger_steps(
    tagger: Any,
    optimizer: torch.optim.Optimizer,
    batches: list[list[Any]],
    tokenizer: Any,
    device: torch.device,
) -> list[float]:
    """Seconds per training step of the reference tagger (tokenise, forward, loss, AdamW)."""
    tagger.train()
    times = []
    for tweets in batches:
        _sync(device)
        t0 = time.perf_counter()
        batch = tagger.encode(tokenizer, tweets).to(device)
        loss = tagger.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tagger.parameters(), 1.0)
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


@contextmanager
def _labelled_training(model: Any, trainer: Any) -> Iterator[None]:
    """Label losses, backward and the optimizer step of ``Trainer._step`` (profiled pass only)."""
    losses, opt_step = model.losses, trainer.optimizer.step
    orig_backward = torch.Tensor.backward

    def labelled_losses(*a: Any, **k: Any) -> Any:
        with record_function("mnerqg::losses"):
            return losses(*a, **k)

    def labelled_step(*a: Any, **k: Any) -> Any:
        with record_function("mnerqg::optimizer"):
            return opt_step(*a, **k)

    def labelled_backward(self: torch.Tensor, *a: Any, **k: Any) -> Any:
        with record_function("mnerqg::backward"):
            return orig_backward(self, *a, **k)

    with (
        mock.patch.object(model, "losses", labelled_losses),
        mock.patch.object(trainer.optimizer, "step", labelled_step),
        mock.patch.object(torch.Tensor, "backward", labelled_backward),
    ):
        yield


def stage_shares(
    prof: Any, stages: Sequence[str], total_s: float, device: torch.device
) -> dict[str, float]:
    """Share of ``total_s`` spent under each ``mnerqg::<stage>`` label (``other``: the rest).

    On CPU a label's time is its wall time on the host; on CUDA, the device time of the kernels
    under it when the profiler saw any, else the host time.
    """
    spent = dict.fromkeys(stages, 0.0)
    for ev in prof.events():
        name = ev.name
        if not name.startswith("mnerqg::"):
            continue
        stage = name.split("::", 1)[1]
        if stage not in spent:
            continue
        us = ev.cpu_time_total
        if device.type == "cuda":
            us = max(us, getattr(ev, "device_time_total", 0.0))
        spent[stage] += us / 1e6
    shares = {k: v / total_s for k, v in spent.items()} if total_s > 0 else spent
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def _profile_activities(device: torch.device) -> list[ProfilerActivity]:
    acts = [ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    return acts


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the result object (what ``--json`` prints)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.environment import environment, resolve_device

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    device = resolve_device(args.device)
    modes = parse_modes(args.query_encoding)
    query_files = parse_queries(args.queries, modes)
    queries = load_queries(query_files[modes[0]])
    mode_queries = {m: load_queries(query_files[m]) for m in modes}
    samples, source = load_samples(args.data, args.split, args.tweets, args.images)
    if not samples:
        raise SystemExit("bench: no tweets to run on")
    all_texts = {f"{m}/{t}": q for m, qs in mode_queries.items() for t, q in qs.items()}
    encoder = resolve_encoder(
        args.encoder, samples, queries if len(set(query_files.values())) == 1 else all_texts
    )
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    pad_id = tokenizer.pad_token_id or 0
    _log(f"encoder {encoder}; {source}; device {device}; {threads} threads")
    overrides = parse_overrides(args.model, modes)
    models = build_models(
        encoder,
        args.hidden_dim,
        args.fusion,
        samples,
        queries,
        device,
        modes,
        real_data=args.encoder == "minilm",
        overrides=overrides,
        mode_queries=mode_queries,
    )
    n_types = len(queries)
    from mnerqg_graph.bench.tagger_reference import PlainTagger

    torch.manual_seed(0)
    cfg0 = models[0].model.config
    reading = cfg0.encoder
    tagger = PlainTagger(encoder, list(queries), reading.max_length, reading.url_word).to(device)
    from mnerqg_graph.training.loop import make_adamw

    tagger_opt = make_adamw([{"params": list(tagger.parameters()), "lr": 1e-4}], 0.01)
    tweets = [s.tweet for s in samples]
    tagger_batches = [
        [
            tweets[(k * args.train_batch_size + j) % len(tweets)]
            for j in range(args.train_batch_size)
        ]
        for k in range(args.train_steps)
    ]

    infer = {m.name: Timing() for m in models}
    step = {m.name: Timing() for m in models}
    infer["tagger"], step["tagger"] = Timing(), Timing()
    work = Path(tempfile.mkdtemp(prefix="mnerqg-bench-"))
    try:
        trainers = {
            m.name: make_trainer(
                m, tokenizer, queries, args.train_batch_size, device, work / m.name
            )
            for m in models
        }
        batches = {
            m.name: train_batches(m, args.train_batch_size, args.train_steps) for m in models
        }
        # warm-up: one training step and one inference batch per model
        for m in models:
            run_train_steps(trainers[m.name], m, batches[m.name][:1], pad_id, device)
            run_inference(
                m, samples[: args.batch_size], tokenizer, queries, args.batch_size, device
            )
        run_tagger_steps(tagger, tagger_opt, tagger_batches[:1], tokenizer, device)
        run_tagger_inference(tagger, samples[: args.batch_size], tokenizer, args.batch_size, device)
        n_steps = 1
        reps_done = 0
        for rep in range(args.repeat):  # interleaved: full, text-only, full, text-only, ...
            t_rep = time.perf_counter()
            for m in models:
                t = run_inference(m, samples, tokenizer, queries, args.batch_size, device)
                infer[m.name].values.append(len(samples) / t)
                times = run_train_steps(
                    trainers[m.name], m, batches[m.name], pad_id, device, step0=n_steps
                )
                step[m.name].values.append(statistics.median(times))
            t = run_tagger_inference(tagger, samples, tokenizer, args.batch_size, device)
            infer["tagger"].values.append(len(samples) / t)
            times = run_tagger_steps(tagger, tagger_opt, tagger_batches, tokenizer, device)
            step["tagger"].values.append(statistics.median(times))
            n_steps += len(batches[models[0].name])
            _log(
                f"rep {rep + 1}/{args.repeat}: "
                + ", ".join(
                    f"{name} {infer[name].values[-1]:.1f} tweets/s, "
                    f"step {1e3 * step[name].values[-1]:.0f} ms"
                    for name in infer
                )
            )
            reps_done += 1
            # the profiled passes still to come cost about one repetition of the full model
            rep_s = time.perf_counter() - t_rep
            if reps_done >= 2 and time.perf_counter() - started + 2 * rep_s > args.budget:
                _log(f"stopping after {reps_done} repetitions (--budget {args.budget:.0f} s)")
                break

        full = models[0]
        with profile(activities=_profile_activities(device)) as prof, _labelled_collate():
            t_inf = run_inference(full, samples, tokenizer, queries, args.batch_size, device)
        infer_shares = stage_shares(prof, INFER_STAGES, t_inf, device)
        if args.trace:
            prof.export_chrome_trace(str(args.trace))
        with profile(activities=_profile_activities(device)) as prof:
            t_tr = sum(
                run_train_steps(
                    trainers[full.name],
                    full,
                    batches[full.name],
                    pad_id,
                    device,
                    step0=n_steps,
                    labelled=True,
                )
            )
        train_shares = stage_shares(prof, TRAIN_STAGES, t_tr, device)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    step_full, step_text = step["full"], step["text_only"]
    ratios = [a / b for a, b in zip(step_full.values, step_text.values, strict=True)]
    infer_ratios = [
        b / a for a, b in zip(infer["full"].values, infer["text_only"].values, strict=True)
    ]

    def vs_tagger(name: str) -> tuple[float, float]:
        """Median per-repetition ratios of a model's inference and training rates to the tagger's.

        Each repetition ran both back to back, so load on a shared machine hits both alike.
        """
        inf = [a / b for a, b in zip(infer[name].values, infer["tagger"].values, strict=True)]
        tr = [b / a for a, b in zip(step[name].values, step["tagger"].values, strict=True)]
        return float(statistics.median(inf)), float(statistics.median(tr))

    by_mode = {}
    for m in models:
        if m.name == "text_only":
            continue
        inf_ratio, tr_ratio = vs_tagger(m.name)
        by_mode[m.query_encoding] = {
            "inference_tweets_per_s": infer[m.name].median,
            "inference_tweets_per_s_range": list(infer[m.name].spread()),
            "train_tweets_per_s": args.train_batch_size / step[m.name].median,
            "train_step_s": step[m.name].median,
            "inference_vs_tagger": inf_ratio,
            "train_vs_tagger": tr_ratio,
            "pieces_per_tweet": pieces_per_tweet(m.train_items),
        }
    result: dict[str, Any] = {
        "encoder": args.encoder,
        "encoder_path": encoder,
        "device": str(device),
        "threads": threads,
        "images": bool(args.images),
        "fusion": args.fusion,
        "query_encoding": modes[0],
        "queries": {m: query_files[m] or "default" for m in modes},
        "model_overrides": overrides,
        "hidden_dim": full.model.config.graph.hidden_dim,
        "tweets": len(samples),
        "types_per_tweet": n_types,
        "batch_size": args.batch_size,
        "train_batch_size": args.train_batch_size,
        "train_steps_per_rep": args.train_steps,
        "repeat": reps_done,
        "budget_s": args.budget,
        "inference_tweets_per_s": infer["full"].median,
        "inference_tweets_per_s_range": list(infer["full"].spread()),
        "text_only_inference_tweets_per_s": infer["text_only"].median,
        "train_step_s": step_full.median,
        "train_step_s_range": list(step_full.spread()),
        "text_only_train_step_s": step_text.median,
        "train_tweets_per_s": args.train_batch_size / step_full.median,
        "tagger_tweets_per_s": infer["tagger"].median,
        "tagger_train_tweets_per_s": args.train_batch_size / step["tagger"].median,
        "inference_vs_tagger": by_mode[modes[0]]["inference_vs_tagger"],
        "train_vs_tagger": by_mode[modes[0]]["train_vs_tagger"],
        "by_query_encoding": by_mode,
        "train_examples_per_s": args.train_batch_size * n_types / step_full.median,
        "full_vs_text_only_step_ratio": float(statistics.median(ratios)),
        "full_vs_text_only_step_ratio_range": [min(ratios), max(ratios)],
        "full_vs_text_only_inference_ratio": float(statistics.median(infer_ratios)),
        "graph_build_share": infer_shares["graph_build"],
        "train_graph_build_share": train_shares["graph_build"],
        "stage_shares": infer_shares,
        "train_stage_shares": train_shares,
        "source": source,
        "torch": torch.__version__,
        # library versions, CPU model and kernels, threads: what two machines' figures differ by
        "environment": environment(device),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "seconds": time.perf_counter() - started,
    }
    result["targets"] = check_targets(result)
    return result


def parse_modes(text: str) -> list[str]:
    """``--query-encoding``: one encoding or several, comma-separated, without repeats."""
    from mnerqg_graph.data.mrc import QUERY_ENCODINGS

    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in QUERY_ENCODINGS]
    if not modes or bad or len(set(modes)) != len(modes):
        raise SystemExit(
            f"bench: --query-encoding takes {' | '.join(QUERY_ENCODINGS)} (comma-separated, each "
            f"once), not {text!r}"
        )
    return modes


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured value and whether it is met (targets: MiniLM, no images)."""
    out: dict[str, Any] = {}
    for key, limit in TARGETS.items():
        value = float(result[key])
        ok = value >= limit if key in FLOORS else value < limit
        out[key] = {
            "target": (">= " if key in FLOORS else "< ") + str(limit),
            "value": value,
            "met": ok,
        }
    out["applies"] = (
        result["encoder"] == "minilm" and not result["images"] and result["device"] == "cpu"
    )
    return out


def format_table(r: dict[str, Any]) -> str:
    """The human-readable report."""
    lo, hi = r["inference_tweets_per_s_range"]
    slo, shi = r["train_step_s_range"]
    rlo, rhi = r["full_vs_text_only_step_ratio_range"]
    lines = [
        f"mnerqg bench: encoder {r['encoder']} (hidden {r['hidden_dim']}), fusion {r['fusion']}, "
        f"queries {r['query_encoding']}, "
        f"images {'on' if r['images'] else 'off'}, {r['device']}, {r['threads']} threads, "
        f"{r['tweets']} tweets x {r['types_per_tweet']} queries, {r['repeat']} reps "
        f"(median [min-max]), load avg {r['load_avg_1min']}",
        "",
        f"{'quantity':<40}{'full':>22}{'text-only':>14}",
        f"{'inference tweets/s':<40}{r['inference_tweets_per_s']:>10.1f} [{lo:.1f}-{hi:.1f}]".ljust(
            62
        )
        + f"{r['text_only_inference_tweets_per_s']:>14.1f}",
        f"{'train step (ms, ' + str(r['train_batch_size']) + ' tweets)':<40}"
        f"{1e3 * r['train_step_s']:>10.0f} [{1e3 * slo:.0f}-{1e3 * shi:.0f}]".ljust(62)
        + f"{1e3 * r['text_only_train_step_s']:>14.0f}",
        f"{'train examples/s (tweets/s)':<40}{r['train_examples_per_s']:>10.1f} "
        f"({r['train_tweets_per_s']:.1f})",
        f"{'full / text-only train step':<40}{r['full_vs_text_only_step_ratio']:>10.2f} "
        f"[{rlo:.2f}-{rhi:.2f}]",
        f"{'full / text-only inference time':<40}{r['full_vs_text_only_inference_ratio']:>10.2f}",
        "",
        f"{'model vs the reference tagger':<28}{'infer tweets/s':>16}{'train tweets/s':>16}"
        f"{'infer / tagger':>16}{'train / tagger':>16}",
        *(
            f"{'full, ' + mode:<28}{m['inference_tweets_per_s']:>16.1f}"
            f"{m['train_tweets_per_s']:>16.1f}{m['inference_vs_tagger']:>16.2f}"
            f"{m['train_vs_tagger']:>16.2f}"
            for mode, m in r["by_query_encoding"].items()
        ),
        *(
            f"  {mode}: queries {r['queries'][mode]}, {m['pieces_per_tweet']:.1f} pieces a tweet"
            + "".join(f", {k}={v}" for k, v in r["model_overrides"][mode].items())
            for mode, m in r["by_query_encoding"].items()
        ),
        f"{'plain BIO tagger':<28}{r['tagger_tweets_per_s']:>16.1f}"
        f"{r['tagger_train_tweets_per_s']:>16.1f}{1.0:>16.2f}{1.0:>16.2f}",
        "",
        f"{'stage share (full model)':<24}{'inference':>12}{'training':>12}",
    ]
    stages = list(dict.fromkeys([*INFER_STAGES, *TRAIN_STAGES, "other"]))
    for s in stages:
        a = r["stage_shares"].get(s)
        b = r["train_stage_shares"].get(s)
        fa = f"{100 * a:>11.1f}%" if a is not None else f"{'-':>12}"
        fb = f"{100 * b:>11.1f}%" if b is not None else f"{'-':>12}"
        lines.append(f"{s:<24}{fa}{fb}")
    t = r["targets"]
    lines += [
        "",
        "targets (2-core CPU, MiniLM, images absent)"
        + ("" if t["applies"] else ": not this configuration, shown for reference"),
    ]
    for key in TARGETS:
        lines.append(
            f"  {key:<38}{t[key]['value']:>10.3f}  {t[key]['target']:<8}"
            f"{'met' if t[key]['met'] else 'MISSED'}"
        )
    lines.append(f"({r['seconds']:.0f} s)")
    return "\n".join(lines)


#: The whole-number options of ``mnerqg bench`` that size the measurement: (flag, default, help).
_COUNT_OPTIONS: tuple[tuple[str, int, str], ...] = (
    ("--tweets", 32, "tweets measured (default: 32)"),
    ("--batch-size", 32, "tweets per inference pass (default: 32, as mnerqg predict)"),
    ("--train-batch-size", 8, "tweets per training step (default: 8, as the MiniLM configs)"),
    ("--train-steps", 2, "training steps per repetition"),
    ("--repeat", 3, "repetitions after warm-up"),
    ("--threads", 0, "torch threads (default: the CPUs not kept busy by other processes)"),
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    ap = argparse.ArgumentParser(prog="mnerqg bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default="tiny", help="tiny | minilm | PATH (default: tiny)")
    ap.add_argument(
        "--images",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep the tweets' images (default: off, as the targets are stated)",
    )
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data-set folder (default: SynthTweets, generated into the cache)",
    )
    ap.add_argument("--split", default="test", help="split of --data to read (default: test)")
    ap.add_argument(
        "--queries",
        action="append",
        default=None,
        metavar="[MODE:]FILE",
        help="query JSON file or packaged name (default: default), for every query encoding or, "
        "with a MODE: prefix, for that one (repeatable)",
    )
    for flag, default, help_text in _COUNT_OPTIONS:
        ap.add_argument(flag, type=int, default=default, help=help_text)
    ap.add_argument(
        "--budget",
        type=float,
        default=270.0,
        help="stop repeating (after at least 2 repetitions) when the run would "
        "take longer than this many seconds (default: 270)",
    )
    ap.add_argument("--fusion", default="hetero_gat", help="fusion module of the full model")
    ap.add_argument(
        "--query-encoding",
        default=DEFAULT_MODE,
        help="per_type | packed, or several comma-separated, each timed in the same run (the "
        f"first is the one profiled and compared with text-only; default: {DEFAULT_MODE})",
    )
    ap.add_argument(
        "--hidden-dim",
        type=int,
        default=None,
        help="fusion width (default: the encoder's width; 64 for tiny)",
    )
    ap.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="write the profiled inference pass as a Chrome trace",
    )
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[MODE:]KEY=VALUE",
        help="a ModelConfig setting (dotted path) for every model, or with a MODE: prefix for "
        "that query encoding's models (the text-only reference follows the first mode's), e.g. "
        "packed:heads.head_dim=256 (repeatable)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap


def _mode_prefix(item: str, modes: Sequence[str]) -> tuple[list[str], str]:
    """``"packed:x"`` -> ``(["packed"], "x")``; without a mode prefix, every mode."""
    from mnerqg_graph.data.mrc import QUERY_ENCODINGS

    head, sep, rest = item.partition(":")
    if sep and head in QUERY_ENCODINGS:
        if head not in modes:
            raise SystemExit(f"bench: {item!r} names {head}, which --query-encoding does not run")
        return [head], rest
    return list(modes), item


def parse_queries(items: Sequence[str] | None, modes: Sequence[str]) -> dict[str, str | None]:
    """``--queries [MODE:]FILE`` items -> the query file of each mode (None: the default).

    A file without a mode prefix is every mode's; a later item wins.
    """
    out: dict[str, str | None] = dict.fromkeys(modes)
    for item in items or []:
        targets, file = _mode_prefix(item, modes)
        for m in targets:
            out[m] = file
    return out


def parse_overrides(items: Sequence[str], modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--model [MODE:]KEY=VALUE`` items -> per mode, a dict of ``ModelConfig`` settings.

    ``KEY`` is a setting's dotted path (``ModelConfig.field_paths``):
    ``["encoder.packed_separators=False", "packed:heads.head_dim=256"]`` sets the first in every
    mode and the second in ``packed`` only. Values are read as Python literals (``False``,
    ``128``, ``"x"``), else kept as strings.

    Raises:
        SystemExit: an item without ``=``, a key that is not a ``ModelConfig`` setting (or one
            the bench sets itself: ``types``, ``encoder.name``, ``encoder.query_encoding``,
            ``graph.hidden_dim``, ``fusion.name``, ``image.use_image``), or a mode that
            ``--query-encoding`` does not run.
    """
    import ast

    from mnerqg_graph.config import ModelConfig

    allowed = set(ModelConfig.field_paths()) - {
        "types",
        "encoder.name",
        "encoder.query_encoding",
        "graph.hidden_dim",  # --hidden-dim
        "fusion.name",  # --fusion (the text-only model's is none)
        "image.use_image",  # the full models' image branch is what is measured
    }
    out: dict[str, dict[str, Any]] = {m: {} for m in modes}
    for item in items:
        targets, text = _mode_prefix(item, modes)
        key, sep, raw = text.partition("=")
        if not sep or key not in allowed:
            raise SystemExit(
                f"bench: --model expects [MODE:]KEY=VALUE with KEY one of "
                f"{', '.join(sorted(allowed))}; got {item!r}"
            )
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        for m in targets:
            out[m][key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mnerqg bench`` and ``python -m benchmarks.throughput`` (a checkout)."""
    args = build_parser().parse_args(argv)
    if min(args.tweets, args.batch_size, args.train_batch_size, args.train_steps, args.repeat) < 1:
        raise SystemExit("bench: sizes and counts must be >= 1")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
