"""The one training loop of the toolkit: the MNER model's, the detector's and the grounder's.

:class:`TrainLoop` owns what every training here does the same way: epochs of batches, the
forward (``loss_fn(batch)``, under an optional autocast), the check that the loss is finite
(:class:`~mnerqg_graph.errors.TrainingError` naming the step), ``zero_grad`` / ``backward`` /
gradient clipping / the optimiser's and the scheduler's steps, the running loss shown by the
progress bar, each epoch's mean loss, and ``max_steps``. What differs between the trainings goes
in as arguments:

* the batches of an epoch, a callable ``batches(epoch)`` (a DataLoader over tweets for the MNER
  model; :func:`shuffled_batches` of image indices for the detector and the grounder, whose
  ``loss_fn`` builds the batch from the indices);
* how an epoch's loss is averaged: :class:`BatchMeanLoss` (every loss part, a batch counts once,
  summed on the device: no host-device sync at a step) or :class:`ItemMeanLoss` (the total, an
  item counts once, summed on the host);
* :class:`Hooks` at the start of an epoch, after each step and at the end of an epoch (the
  MNER trainer's weight average, validation, best-epoch selection, checkpoints and logs).

The loop draws no random numbers of its own, and a step runs its operations in a fixed order
(forward, finiteness, ``zero_grad``, ``backward``, clipping, optimiser, scheduler, step hooks,
loss sum), so that a training gives the same weights to the bit from the same seed at a given
thread count (the model's gathers of repeated rows keep their CPU backward in index order:
:mod:`mnerqg_graph.tensors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import Tensor

from mnerqg_graph.errors import TrainingError
from mnerqg_graph.progress import Progress
from mnerqg_graph.training.distributed import first_bad_step, mean_over_ranks

B = TypeVar("B")

#: ``loss_fn(batch)``: the batch's total loss, or named loss parts with their sum under ``total``.
LossFn = Callable[[B], "Tensor | Mapping[str, Tensor]"]


class LossMeter(Protocol):
    """How an epoch's loss is summed and averaged (a new meter for each epoch)."""

    def add(self, losses: Mapping[str, Tensor], batch: Any) -> None:
        """Count a step's detached losses (``total`` and any parts) on ``batch``."""

    def running(self) -> float:
        """The epoch's mean total loss so far (read by the progress display when it draws)."""

    def means(self) -> dict[str, float]:
        """The epoch's mean loss, per part (``total`` at least)."""


class BatchMeanLoss:
    """Each loss part's mean over the epoch's batches (a batch counts once), summed on the device.

    Adding a step's losses never waits for the device; :meth:`running` and :meth:`means` read
    back, and under DDP :meth:`means` averages over every rank's batches.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.batches = 0

    def add(self, losses: Mapping[str, Tensor], batch: Any) -> None:
        """Add every part of ``losses`` to its sum (``batch`` is not looked at)."""
        for k, part in losses.items():
            self.sums[k] = self.sums[k] + part if k in self.sums else part
        self.batches += 1

    def running(self) -> float:
        """The mean total loss so far (one read-back from the device)."""
        return float(self.sums["total"]) / max(self.batches, 1)

    def means(self) -> dict[str, float]:
        """Per part, the sum over every rank's batches divided by their number."""
        return mean_over_ranks(self.sums, self.batches)


class ItemMeanLoss:
    """The total loss's mean over the epoch's items (a batch counts ``size(batch)`` times).

    The sum is a Python float, added to at every step (a read-back of the loss).

    Args:
        size: the number of items of a batch (default ``len``: a batch of indices).
    """

    def __init__(self, size: Callable[[Any], int] = len) -> None:
        self.size = size
        self.total = 0.0
        self.count = 0

    def add(self, losses: Mapping[str, Tensor], batch: Any) -> None:
        """Add the total loss, weighted by the batch's size."""
        n = self.size(batch)
        self.total += float(losses["total"]) * n
        self.count += n

    def running(self) -> float:
        """The mean total loss per item so far."""
        return self.total / max(self.count, 1)

    def means(self) -> dict[str, float]:
        """``{"total": mean loss per item}``."""
        return {"total": self.total / max(self.count, 1)}


@dataclass
class Hooks:
    """What a training adds to :meth:`TrainLoop.run`; every hook is optional.

    A hook that returns True stops the run: ``on_step_end`` ends the epoch after that step (its
    ``on_epoch_end`` hooks still run), ``on_epoch_end`` ends the run after that epoch.

    Attributes:
        on_epoch_start: ``on_epoch_start(epoch)`` before the epoch's first batch is drawn.
        on_step_end: ``on_step_end(step, losses)`` after the optimiser's (and scheduler's) step
            ``step`` (counted from 0 over the whole training), with its detached losses.
        on_epoch_end: ``on_epoch_end(epoch, steps, means)`` after the epoch's last step and
            finiteness check: ``steps`` taken so far over the whole training, ``means`` the
            epoch's mean losses (the meter's :meth:`~LossMeter.means`).
    """

    on_epoch_start: Callable[[int], None] | None = None
    on_step_end: Callable[[int, dict[str, Tensor]], bool | None] | None = None
    on_epoch_end: Callable[[int, int, dict[str, float]], bool | None] | None = None


@dataclass
class LoopResult:
    """What :meth:`TrainLoop.run` did.

    Attributes:
        history: the mean losses of each epoch run (the meter's ``means``), in order.
        steps: the global step count at the end (the ``step`` the run started from, plus the
            steps it took).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0


class TrainLoop(Generic[B]):
    """Epochs of optimisation steps with a finiteness check, a progress bar and hooks.

    Args:
        loss_fn: ``loss_fn(batch)``: the batch's total loss (a scalar tensor), or a mapping of
            named loss parts whose ``total`` is optimised.
        optimizer: steps after every ``backward``.
        params: the parameters whose gradient norm is clipped (in this order).
        clip: the maximal gradient norm (0: no clipping).
        scheduler: steps after every optimiser step (None: none).
        autocast: a context for the forward (e.g. bf16 autocast on CUDA); None: none.
        meter: makes each epoch's :class:`LossMeter` (default :class:`BatchMeanLoss`).
        hooks: the hooks of every run (before those given to :meth:`run`).
        device: where the finiteness bookkeeping lives (the loss's device).
        check_every: read the finiteness check back every this many steps and at each epoch's
            end (1: before every step's update, so that a non-finite loss is never applied; more:
            no host-device sync at most steps, for a GPU).
        name: what is trained, in the progress bar and the error (``"detector"``: ``detector
            epoch 1/3``, ``detector loss became nan at step 4``).
        nonfinite: ``nonfinite(value, step)`` -> the error's message (None: as ``name`` says).
    """

    def __init__(
        self,
        loss_fn: LossFn[B],
        optimizer: torch.optim.Optimizer,
        params: Iterable[Tensor],
        *,
        clip: float = 0.0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        autocast: Callable[[], AbstractContextManager[Any]] | None = None,
        meter: Callable[[], LossMeter] = BatchMeanLoss,
        hooks: Sequence[Hooks] = (),
        device: str | torch.device = "cpu",
        check_every: int = 1,
        name: str = "",
        nonfinite: Callable[[float, int], str] | None = None,
    ) -> None:
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.params = list(params)
        self.clip = clip
        self.scheduler = scheduler
        self.autocast = autocast or nullcontext
        self.meter = meter
        self.hooks = list(hooks)
        self.device = torch.device(device)
        self.check_every = max(check_every, 1)
        self.name = name
        self.nonfinite = nonfinite or self._default_message

    def losses(self, batch: B) -> dict[str, Tensor]:
        """The forward: the loss parts of ``batch`` (``total`` among them), still attached."""
        with self.autocast():
            out = self.loss_fn(batch)
        return {"total": out} if isinstance(out, Tensor) else dict(out)

    def update(self, total: Tensor) -> None:
        """``zero_grad``, ``backward`` of ``total``, clipping, the optimiser and scheduler steps."""
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def step(self, batch: B, step: int) -> dict[str, Tensor]:
        """One optimisation step on ``batch`` (global step ``step``), unchecked, without sync.

        The forward, :meth:`update` and the ``on_step_end`` hooks (their stop is not looked at);
        what :meth:`run` does at each step but for the finiteness check and the loss sums.

        Returns:
            The loss parts, detached and still on their device.
        """
        losses = self.losses(batch)
        self.update(losses["total"])
        detached = {k: v.detach() for k, v in losses.items()}
        self._step_end(step, detached, ())
        return detached

    def run(
        self,
        batches: Callable[[int], Iterable[B]],
        epochs: int,
        *,
        start_epoch: int = 0,
        step: int = 0,
        max_steps: int | None = None,
        steps_per_epoch: int | None = None,
        progress: bool = False,
        hooks: Sequence[Hooks] = (),
    ) -> LoopResult:
        """Train epochs ``start_epoch`` to ``epochs - 1``.

        Args:
            batches: ``batches(epoch)``: the epoch's batches, drawn one by one as the steps go.
            epochs: the number of epochs of the whole training.
            start_epoch: the first epoch to run (after a resume).
            step: the global steps taken before (after a resume).
            max_steps: stop once the global step count reaches this (None: no limit).
            steps_per_epoch: the progress bar's total (None: unknown).
            progress: show a progress bar of each epoch's steps and running loss on stderr.
            hooks: hooks of this run, after the loop's own.

        Returns:
            The epochs' mean losses and the final global step count.

        Raises:
            TrainingError: a loss was NaN or infinite (the message names the first such step).
        """
        all_hooks = [*self.hooks, *hooks]
        result = LoopResult(steps=step)
        for epoch in range(start_epoch, epochs):
            for h in all_hooks:
                if h.on_epoch_start is not None:
                    h.on_epoch_start(epoch)
            meter = self.meter()
            first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
            bad_loss = torch.zeros((), device=self.device)
            stop = False
            with Progress(steps_per_epoch, self._desc(epoch, epochs), enabled=progress) as bar:
                for batch in batches(epoch):
                    losses = self.losses(batch)
                    total = losses["total"]
                    new_bad = (first_bad < 0) & ~torch.isfinite(total)
                    first_bad = torch.where(new_bad, step, first_bad)
                    bad_loss = torch.where(new_bad, total.detach().float(), bad_loss)
                    if (step + 1) % self.check_every == 0:
                        self._check_finite(first_bad, bad_loss)
                    self.update(total)
                    detached = {k: v.detach() for k, v in losses.items()}
                    stop = self._step_end(step, detached, hooks)
                    meter.add(detached, batch)
                    step += 1
                    bar.update(loss=meter.running)
                    if stop or (max_steps is not None and step >= max_steps):
                        stop = True
                        break
            self._check_finite(first_bad, bad_loss)
            means = meter.means()
            result.history.append(means)
            result.steps = step
            ends = [
                bool(h.on_epoch_end(epoch, step, means))
                for h in all_hooks
                if h.on_epoch_end is not None
            ]
            if stop or any(ends):
                break
        return result

    def _step_end(self, step: int, losses: dict[str, Tensor], hooks: Sequence[Hooks]) -> bool:
        """Run the ``on_step_end`` hooks; whether one asks to stop."""
        stops = [
            bool(h.on_step_end(step, losses))
            for h in (*self.hooks, *hooks)
            if h.on_step_end is not None
        ]
        return any(stops)

    def _check_finite(self, first_bad: Tensor, bad_loss: Tensor) -> None:
        """Raise if a step since the epoch began had a non-finite loss (on any rank)."""
        step = first_bad_step(first_bad)
        if step >= 0:
            value = float(bad_loss) if int(first_bad) == step else float("nan")
            raise TrainingError(self.nonfinite(value, step))

    def _desc(self, epoch: int, epochs: int) -> str:
        """The progress bar's description of an epoch."""
        return f"{self.name} epoch {epoch + 1}/{epochs}".lstrip()

    def _default_message(self, value: float, step: int) -> str:
        return f"{self.name} loss became {value} at step {step}".lstrip()


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """An epoch's batches of indices of ``n`` items, in an order drawn from ``generator``.

    The permutation is drawn when the first batch is asked for.

    Args:
        n: the number of items.
        batch_size: indices per batch (the last batch may be smaller).
        generator: draws the permutation (one ``randperm`` an epoch).

    Yields:
        Index tensors, together a permutation of ``range(n)``.
    """
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


__all__ = [
    "BatchMeanLoss",
    "Hooks",
    "ItemMeanLoss",
    "LossMeter",
    "LoopResult",
    "TrainLoop",
    "shuffled_batches",
]
