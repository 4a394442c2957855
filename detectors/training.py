"""What a training run of the detectors package did, and the loop the detector and grounder share.

Both train with AdamW on seeded random batches of image indices, on the toolkit's one training loop
(:class:`~mnerqg_graph.training.engine.TrainLoop`): :func:`train_on_indices`. The MNER model's
trainer (:mod:`mnerqg_graph.training.loop`) runs the same loop and has its own, richer result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mnerqg_graph.errors import check_counts
from mnerqg_graph.training.engine import Hooks, ItemMeanLoss, TrainLoop, shuffled_batches


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        history: mean total loss per epoch.
        steps: optimiser steps taken.
        seconds: wall-clock time of the training loop.
        checkpoint: where the model was saved (None when not saved).
    """

    history: list[float]
    steps: int
    seconds: float
    checkpoint: Path | None = None


@dataclass(frozen=True)
class Schedule:
    """How long and how fast a model of the detectors package trains (AdamW, fixed rate).

    Attributes:
        epochs: passes over the items.
        batch_size: items per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_steps: stop after this many steps (None: no limit).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check_counts(epochs=self.epochs, batch_size=self.batch_size, max_steps=self.max_steps)


def train_on_indices(
    loss_fn: Callable[[Tensor], Tensor],
    params: Sequence[Tensor],
    n_items: int,
    generator: torch.Generator,
    schedule: Schedule,
    *,
    name: str,
    clip: float,
    device: torch.device,
    say: Callable[[str], None],
    progress: bool = False,
) -> TrainResult:
    """AdamW on ``n_items`` items in batches of indices shuffled anew each epoch.

    Args:
        loss_fn: ``loss_fn(indices)``: the total loss of the batch of those items (it builds the
            batch, and may draw from ``generator`` too).
        params: the parameters AdamW trains (and whose gradient norm is clipped).
        n_items: the number of training items.
        generator: draws each epoch's order (one ``randperm`` at its start).
        schedule: epochs, batch size, learning rate, weight decay, maximal steps.
        name: what is trained, in the progress bar and the error of a non-finite loss.
        clip: maximal gradient norm.
        device: the loss's device.
        say: receives a line per epoch with its mean loss.
        progress: a progress bar inside each epoch on stderr.

    Returns:
        The mean loss per item of each epoch, the steps taken and the loop's time
        (``checkpoint`` not set).

    Raises:
        TrainingError: the loss became NaN or infinite.
    """
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    epochs, batch_size = schedule.epochs, schedule.batch_size

    def epoch_line(epoch: int, _steps: int, means: dict[str, float]) -> None:
        say(f"epoch {epoch + 1}/{epochs}: loss {means['total']:.4f}")

    loop: TrainLoop[Tensor] = TrainLoop(
        loss_fn,
        optimizer,
        params,
        clip=clip,
        meter=ItemMeanLoss,
        hooks=[Hooks(on_epoch_end=epoch_line)],
        device=device,
        name=name,
    )
    started = time.perf_counter()
    run = loop.run(
        lambda _epoch: shuffled_batches(n_items, batch_size, generator),
        epochs,
        max_steps=schedule.max_steps,
        steps_per_epoch=math.ceil(n_items / batch_size),
        progress=progress,
    )
    history = [means["total"] for means in run.history]
    return TrainResult(history, run.steps, time.perf_counter() - started)


__all__ = ["Schedule", "TrainResult", "train_on_indices"]
