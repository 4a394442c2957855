"""The MNER model's training: AdamW with warm-up, per-epoch validation, best-epoch selection.

:class:`Trainer` runs the toolkit's one training loop, shared with the detector and the
grounder (:class:`~mnerqg_graph.training.engine.TrainLoop`), and adds its own parts through
hooks: the weight average after each step; the validation, selection, checkpoints and logs after
each epoch.

The library never imports Sacred: metrics go through a ``log`` callable ``(name, value, step)``
(the experiment passes ``_run.log_scalar``). Checkpoints: ``out_dir/best`` (model checkpoint of the
best validation epoch), ``out_dir/last`` + ``out_dir/state`` (model and training state after the
last finished epoch; a restarted run with ``resume=True`` continues from there and ends with the
same result as an uninterrupted run on CPU).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mnerqg_graph.config import TrainConfig
from mnerqg_graph.data.collate import MrcBatch, TweetItem, collate
from mnerqg_graph.environment import resolve_device
from mnerqg_graph.errors import CheckpointError, ConfigError
from mnerqg_graph.io import recover_replaced_dir
from mnerqg_graph.training.averaging import WeightAverage
from mnerqg_graph.training.checkpoint import (
    load_state_tensors,
    load_training_state,
    save_model,
    save_training_state,
    training_state_meta,
)
from mnerqg_graph.training.distributed import barrier, is_active
from mnerqg_graph.training.engine import Hooks, TrainLoop

LogFn = Callable[[str, float, int], None]

#: Files of the training state beside the optimizer's: the weights it trains (always) and, with
#: ``optim.ema_decay``, their average.
RAW_WEIGHTS = "raw_model.safetensors"
AVERAGE = "weight_average.safetensors"


@dataclass
class TrainResult:
    """The outcome of :meth:`Trainer.fit`."""

    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    #: of ``seconds``, the training time of the epochs before a resume (0: a fresh run)
    seconds_before: float = 0.0


def length_bucket_batches(
    lengths: list[int], batch_size: int, pool_batches: int, seed: int
) -> list[list[int]]:
    """Seeded shuffled batches of similar length: shuffle, sort pools of batches, shuffle batches.

    Args:
        lengths: one length per item (e.g. tokens of its longest sequence).
        batch_size: items per batch.
        pool_batches: batches per pool sorted together (larger: less padding, less randomness).
        seed: the shuffle's seed (same seed, same batches).

    Returns:
        Batches of item indices; every index appears exactly once.
    """
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    pool = batch_size * max(pool_batches, 1)
    batches: list[list[int]] = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[j] for j in perm]


def make_loader(
    items: list[TweetItem],
    batch_size: int,
    max_span_len: int,
    image_size: int,
    pad_id: int,
    shuffle: bool,
    seed: int = 0,
    sampler: Any = None,
    pin_memory: bool = False,
    length_buckets: int = 0,
) -> DataLoader:
    """A DataLoader of :class:`MrcBatch` over tweets (shuffled by a seeded generator).

    ``length_buckets`` > 0 (with ``shuffle`` and no ``sampler``) batches tweets of similar length
    together (:func:`length_bucket_batches`).
    """
    collate_fn = partial(collate, max_span_len=max_span_len, image_size=image_size, pad_id=pad_id)
    if shuffle and sampler is None and length_buckets > 0:
        lengths = [max(len(ex.input_ids) for ex in it.examples) for it in items]
        return DataLoader(
            items,  # type: ignore[arg-type]
            batch_sampler=length_bucket_batches(lengths, batch_size, length_buckets, seed),
            collate_fn=collate_fn,
            pin_memory=pin_memory,
        )
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        items,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=gen if shuffle and sampler is None else None,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
    )


class ModelWithLosses(torch.nn.Module):
    """``model(batch)`` then ``model.losses(batch, out)`` as one forward (what DDP wraps)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: MrcBatch) -> dict[str, torch.Tensor]:
        """The named, weighted losses of ``batch`` and their sum under ``"total"``."""
        return self.model.losses(batch, self.model(batch))  # type: ignore[no-any-return]


def make_adamw(groups: list[dict[str, Any]], weight_decay: float) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel (CPU and CUDA), else the multi-tensor one.

    The same update rule either way; the fused kernel is one pass over each parameter (measured on
    the 2-core CPU for MiniLM's 23M parameters: 29 ms a step against 190 ms for ``foreach``).
    """
    try:
        return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, weight_decay=weight_decay, foreach=True)


def param_groups(model: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: the text encoder's (layer by layer) and the rest.

    The text encoder learns at ``encoder_lr``; with ``layer_decay`` < 1 a parameter at depth
    ``d`` of its encoder (:meth:`~mnerqg_graph.encoders.text.TextEncoder.depths`: 0 the
    embeddings, ``top`` above the last layer) at ``encoder_lr * layer_decay ** (top - d)``: the
    lower layers, closer to the pretrained features, move less. Everything else learns at ``lr``.

    Args:
        model: an :class:`~mnerqg_graph.model.MnerqgModel` (its ``text_encoder``).
        config: the learning rates.

    Returns:
        AdamW parameter groups (``params``, ``lr``), the encoder's from the bottom up.
    """
    if not 0.0 < config.layer_decay <= 1.0:
        raise ConfigError(f"layer_decay must be in (0, 1] (1: off), not {config.layer_decay!r}")
    prefix = "text_encoder."
    rest = [p for n, p in model.named_parameters() if not n.startswith(prefix)]
    enc = dict(model.text_encoder.named_parameters())
    if config.layer_decay == 1.0:
        groups = [{"params": list(enc.values()), "lr": config.encoder_lr}]
    else:
        depth, top = model.text_encoder.depths()
        by_depth: dict[int, list[torch.nn.Parameter]] = {}
        for name, param in enc.items():
            by_depth.setdefault(depth[name], []).append(param)
        groups = [
            {"params": by_depth[d], "lr": config.encoder_lr * config.layer_decay ** (top - d)}
            for d in sorted(by_depth)
        ]
    return [*groups, {"params": rest, "lr": config.lr}]


class Trainer:
    """Trains an :class:`~mnerqg_graph.model.MnerqgModel`.

    Args:
        model: the model (already on no particular device; moved here).
        tokenizer: saved with the checkpoints.
        queries: saved with the checkpoints.
        train_items: training tweets.
        evaluate: ``evaluate(model) -> metrics`` on the validation split (flat dict of floats).
        config: optimisation settings.
        out_dir: where ``best/``, ``last/`` and ``state/`` go.
        log: ``log(name, value, step)`` for per-epoch scalars (e.g. Sacred's ``log_scalar``).
        wrap: optional wrapper applied to the model for the forward pass (e.g. DDP).
        sampler_fn: ``sampler_fn(epoch)`` -> sampler for distributed training (None: shuffle).
        is_main: only the main process writes checkpoints and logs.
        progress: ``progress(line)`` receives a one-line summary per epoch (e.g. ``print``);
            the steps inside an epoch are shown by ``config.progress``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        queries: dict[str, str],
        train_items: list[TweetItem],
        evaluate: Callable[[Any], dict[str, float]],
        config: TrainConfig,
        out_dir: str | Path,
        log: LogFn | None = None,
        wrap: Callable[[Any], Any] | None = None,
        sampler_fn: Callable[[int], Any] | None = None,
        is_main: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.progress = progress
        self.cfg = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        # The losses are computed inside the wrapped forward, so that DDP sees exactly the tensors
        # the loss is made of (outputs that feed no loss would stall its gradient reduction).
        self.forward_model = ModelWithLosses(self.model)
        if wrap:
            self.forward_model = wrap(self.forward_model)
        self.tokenizer = tokenizer
        self.queries = queries
        self.train_items = train_items
        self.evaluate = evaluate
        self.out_dir = Path(out_dir)
        self.log = log or (lambda name, value, step: None)
        self.sampler_fn = sampler_fn
        self.is_main = is_main
        # No host-device sync inside a step (it would stall a GPU): loss sums stay on the device
        # and the non-finite-loss check reads back every `check_every` steps and at epoch end
        # (every step for a single CPU process, where a read-back costs nothing).
        self.check_every = 1 if self.device.type == "cpu" and not is_active() else 50
        self.optimizer = make_adamw(param_groups(model, config), weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(len(train_items) / config.batch_size)
        if sampler_fn is not None:
            self.steps_per_epoch = len(sampler_fn(0)) // config.batch_size + (
                len(sampler_fn(0)) % config.batch_size > 0
            )
        total = max(self.steps_per_epoch * config.epochs, 1)
        self.total_steps = total  # the schedule's length, which a resumed run must share
        warm = int(total * config.warmup_ratio)
        # the weights validated, selected and saved: an average of the raw ones (optim.ema_decay)
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: (
                (s + 1) / max(warm, 1) if s < warm else max(0.0, (total - s) / max(total - warm, 1))
            ),
        )
        average = self.average
        self.loop: TrainLoop[MrcBatch] = TrainLoop(
            self.forward_model,
            self.optimizer,
            self.model.parameters(),
            clip=config.grad_clip,
            scheduler=self.scheduler,
            autocast=self._autocast,
            hooks=[]
            if average is None
            else [Hooks(on_step_end=lambda _step, _losses: average.update(self.model))],
            device=self.device,
            check_every=self.check_every,
            nonfinite=self._nonfinite,
        )

    def _autocast(self) -> Any:
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def fit(self, resume: bool = False) -> TrainResult:
        """Train, validating after each epoch; return the best epoch's validation metrics.

        Args:
            resume: continue from ``out_dir/state`` when it holds a training state (the weights,
                the optimizer's and scheduler's state, the weight average, the RNG, the epochs
                done and the best so far); train afresh when there is none.

        Raises:
            ConfigError: the state was written with another weight-average setting or for a
                schedule of another length.
            CheckpointError: the state is unreadable or belongs to a model of another shape.
        """
        cfg = self.cfg
        start_epoch, step = 0, 0
        sel = _Selection()
        state_dir = self.out_dir / "state"
        if resume and self.is_main:  # a stop between replace_dir's two renames (rank 0 writes)
            for name in ("state", "last", "best"):
                recover_replaced_dir(self.out_dir / name)
        barrier()  # no rank looks for state/ before rank 0 has put it back
        if resume and (state_dir / "trainer.json").is_file():
            start_epoch, step, sel = self._resume(state_dir)
        t0 = time.perf_counter() - sel.seconds  # the time of the epochs done before a resume
        self.loop.run(
            self._batches,
            cfg.epochs,
            start_epoch=start_epoch,
            step=step,
            steps_per_epoch=self.steps_per_epoch,
            progress=cfg.progress and self.is_main,
            hooks=[
                Hooks(
                    on_epoch_start=lambda _epoch: self.model.train(),
                    on_epoch_end=partial(self._end_epoch, sel, t0),
                )
            ],
        )
        return TrainResult(
            sel.best_epoch, sel.best, sel.history, time.perf_counter() - t0, sel.seconds
        )

    def _resume(self, state_dir: Path) -> tuple[int, int, _Selection]:
        """Load the training state of ``state_dir``: the next epoch, the step, the selection."""
        planned = training_state_meta(state_dir)  # checked before anything is loaded
        total = planned.get("total_steps", self.total_steps)  # (not kept before 2026-12-08)
        if total != self.total_steps:  # another schedule: continuing it would be neither run
            raise ConfigError(
                f"{state_dir}: this training state is of a schedule of {total} steps, this run "
                f"plans {self.total_steps} (optim.epochs, optim.batch_size, the training data or "
                "the number of processes differ); resume with the settings it was started with, "
                "or train afresh in another folder"
            )
        averaged = (state_dir / AVERAGE).is_file()
        if averaged != (self.average is not None):
            raise ConfigError(
                f"{state_dir}: this training state was written "
                f"{'with' if averaged else 'without'} a weight average (optim.ema_decay); "
                "resume it with the same setting, or train afresh in another folder"
            )
        # the weights before the optimizer's state: a model of other shapes is refused first
        if (state_dir / RAW_WEIGHTS).is_file():  # the weights the state/ was written with
            raw, source = load_state_tensors(state_dir, RAW_WEIGHTS), state_dir / RAW_WEIGHTS
        else:  # a state written before the raw weights were kept in it (no average)
            source = self.out_dir / "last" / "model.safetensors"
            raw = load_state_tensors(source.parent, source.name)
        _load_matching(self.model, raw, source)
        if self.average is not None:
            self.average.load_state_dict(
                load_state_tensors(state_dir, AVERAGE), str(state_dir / AVERAGE)
            )
        meta = load_training_state(state_dir, self.optimizer)
        self.scheduler.load_state_dict(meta["scheduler"])
        sel = _Selection(
            meta["best"], meta["best_epoch"], meta["history"], float(meta.get("seconds", 0.0))
        )
        return meta["epoch"] + 1, meta["step"], sel

    def _batches(self, epoch: int) -> Iterator[MrcBatch]:
        """The training batches of ``epoch``, on the device (shuffled by ``seed + epoch``)."""
        cfg, mcfg = self.cfg, self.model.config
        loader = make_loader(
            self.train_items,
            cfg.batch_size,
            mcfg.heads.max_span_len,
            mcfg.image.image_size,
            self.tokenizer.pad_token_id or 0,
            shuffle=True,
            seed=cfg.seed + epoch,
            sampler=self.sampler_fn(epoch) if self.sampler_fn else None,
            pin_memory=self.device.type == "cuda",
            length_buckets=cfg.length_buckets,
        )
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)

    def _end_epoch(
        self, sel: _Selection, t0: float, epoch: int, step: int, means: dict[str, float]
    ) -> None:
        """Validate, log, select and save after ``epoch`` (global step count ``step``).

        Args:
            sel: the best epoch so far and the history, updated here.
            t0: when the training began (for the progress line).
            epoch: the epoch just trained.
            step: optimiser steps taken so far.
            means: the epoch's mean training losses per part (over every rank).
        """
        cfg = self.cfg
        metrics = {f"train/loss_{k}": v for k, v in means.items()}
        self.model.eval()
        with self._evaluated_weights():
            valid = self.evaluate(self.model)
        if cfg.select_metric not in valid:  # else every epoch scores -inf and the first is kept
            raise ConfigError(
                f"optim.select_metric {cfg.select_metric!r} is not a validation metric of this "
                f"run; validation gives: {', '.join(sorted(valid))}"
            )
        metrics.update({f"valid/{k}": float(v) for k, v in valid.items()})
        metrics["epoch"] = float(epoch)
        sel.history.append(metrics)
        if self.is_main:
            for k, v in metrics.items():
                if k != "epoch":
                    self.log(k, float(v), epoch)
        if self.is_main and self.progress is not None:
            shown = [
                "train/loss_total",
                "valid/f1",
                "valid/ambiguous_f1",
                "valid/grounding_acc",
            ]
            self.progress(
                f"epoch {epoch + 1}/{cfg.epochs} ({time.perf_counter() - t0:.0f} s): "
                + "  ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics)
            )
        score = float(valid[cfg.select_metric])
        improved = sel.best_epoch < 0 or score > sel.best.get(cfg.select_metric, float("-inf"))
        if improved:
            sel.best, sel.best_epoch = {k: float(v) for k, v in valid.items()}, epoch
        if self.is_main:
            mcfg = self.model.config
            with self._evaluated_weights():  # a saved model is the one evaluated
                for name in ("best", "last") if improved else ("last",):
                    save_model(self.model, mcfg, self.queries, self.tokenizer, self.out_dir / name)
            # to continue: the raw weights (and the average) go with the optimizer's state, so a
            # run stopped between writing last/ and state/ resumes from one consistent epoch
            extra = {RAW_WEIGHTS: dict(self.model.state_dict())}
            if self.average is not None:
                extra[AVERAGE] = self.average.state_dict()
            save_training_state(
                self.out_dir / "state",
                self.optimizer,
                {
                    "epoch": epoch,
                    "step": step,
                    "scheduler": self.scheduler.state_dict(),
                    "best": sel.best,
                    "best_epoch": sel.best_epoch,
                    "history": sel.history,
                    "seconds": time.perf_counter() - t0,
                    "total_steps": self.total_steps,
                },
                extra,
            )

    def _evaluated_weights(self) -> Any:
        """A context in which the model holds the weights to validate and save."""
        return self.average.applied(self.model) if self.average is not None else nullcontext()

    def _nonfinite(self, value: float, step: int) -> str:
        """The error's message when the loss of global step ``step`` is ``value`` (NaN, inf)."""
        return (
            f"loss is {value} at step {step}; the last good checkpoint is kept in "
            f"{self.out_dir / 'last'}"
        )

    def _step(self, batch: MrcBatch, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch`` (global step ``step``), without host-device sync.

        The forward under autocast, backward, clipping, AdamW, the scheduler and the weight
        average (:meth:`TrainLoop.step <mnerqg_graph.training.engine.TrainLoop.step>`).

        Returns:
            The weighted loss parts, detached and still on the device.
        """
        return self.loop.step(batch, step)


@dataclass
class _Selection:
    """What :meth:`Trainer.fit` keeps across epochs.

    Attributes:
        best: the best epoch's validation metrics.
        best_epoch: the best epoch (-1: none yet).
        history: each epoch's training losses and validation metrics.
        seconds: training time of the epochs a resumed run had done before (0: a fresh run).
    """

    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _load_matching(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``tensors`` into ``model``, or say in one line that they belong to another model.

    On a mismatch ``load_state_dict`` has already copied the tensors that fit; the run stops
    there, so the half-loaded model is never trained or saved.

    Raises:
        CheckpointError: missing, unexpected or differently shaped weights.
    """
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else "")
        raise CheckpointError(
            f"{source}: the saved training state is of a model with other settings ({detail}); "
            "resume with the settings it was trained with, or train afresh in another folder"
        ) from None


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    from mnerqg_graph.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
