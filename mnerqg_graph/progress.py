"""Progress of long passes on stderr: a tqdm bar on a terminal, plain lines in a log.

A training epoch, an evaluation or ``mnerqg predict --input`` reports its steps as it goes::

    with Progress(len(loader), "epoch 3/10", enabled=config.progress) as progress:
        for batch in loader:
            ...
            progress.update(loss=lambda: float(loss_sum) / n)

On a terminal this is a tqdm bar (steps, rate, ETA, running loss). Elsewhere (a file, a pipe, a
job's log) it is a plain line every ``interval`` seconds (30) or every ``every`` steps, such as
``epoch 3/10 step 120/422 loss 0.8213 eta 2m10s``, and a last line when the pass ends if it
printed any: a short pass prints nothing. ``enabled=False`` prints nothing at all.

The loss is a callable read only when something is drawn (at most once a second on a terminal,
once a line in a log), so a loss kept on the GPU costs a device read-back that often, not at
every step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from mnerqg_graph.io import ClosingContext

#: Seconds between two plain lines (tests lower it).
PLAIN_INTERVAL_S = 30.0
#: Seconds between two reads of the running loss for the bar.
BAR_LOSS_INTERVAL_S = 1.0

_pinned_terminal: bool | None = None


def pin_terminal(is_terminal: bool | None) -> None:
    """Decide once whether stderr is a terminal, before something redirects it.

    Sacred's output capture replaces stderr by a pipe while a run lasts; the experiment's entry
    point calls this before the run, so that a bar stays a bar on a terminal.

    Args:
        is_terminal: what :func:`stderr_is_terminal` answers from now on; None: ask stderr.
    """
    global _pinned_terminal
    _pinned_terminal = is_terminal


def stderr_is_terminal() -> bool:
    """Whether progress on stderr goes to a terminal (see :func:`pin_terminal`)."""
    if _pinned_terminal is not None:
        return _pinned_terminal
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def format_duration(seconds: float) -> str:
    """``45s``, ``2m10s``, ``1h02m``: a duration for humans, to the second under an hour."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress(ClosingContext):
    """Progress of one pass: a bar on a terminal, plain lines elsewhere, or nothing.

    Args:
        total: steps of the pass (None: unknown; no ETA then).
        desc: what runs, first on the line (``"epoch 3/10"``, ``"predict"``).
        unit: what a step is (``"step"``, ``"tweet"``).
        enabled: False prints nothing.
        every: a plain line every this many steps too (0: time only).
        interval: seconds between plain lines; None: :data:`PLAIN_INTERVAL_S`.
        stream: where to write; None: ``sys.stderr`` (at construction).
        terminal: a bar (True) or plain lines (False); None: :func:`stderr_is_terminal` when
            writing to stderr, else whether ``stream`` is a terminal.
        leave: keep the bar on screen when the pass ends (terminal only).
        clock: seconds, monotonic (tests give a fake one).
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "step",
        *,
        enabled: bool = True,
        every: int = 0,
        interval: float | None = None,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        leave: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.every = every
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.stream = sys.stderr if stream is None else stream
        if terminal is None:
            if stream is None:
                terminal = stderr_is_terminal()
            else:
                isatty = getattr(stream, "isatty", None)
                terminal = bool(isatty and isatty())
        self.clock = clock
        self.n = 0
        self.start = clock()
        self._loss: Callable[[], float] | None = None
        self._last_n = 0
        self._last_t = self.start
        self._lines = 0
        self._loss_t = float("-inf")
        self._bar: Any = None
        if enabled and terminal:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=self.stream,
                leave=leave,
                dynamic_ncols=True,
            )

    def update(self, n: int = 1, loss: Callable[[], float] | None = None) -> None:
        """Count ``n`` more steps done.

        Args:
            n: steps done since the last update.
            loss: the running loss, read only when it is shown (None: no loss shown).
        """
        if not self.enabled:
            return
        self.n += n
        if loss is not None:
            self._loss = loss
        now = self.clock()
        if self._bar is not None:
            if self._loss is not None and now - self._loss_t >= BAR_LOSS_INTERVAL_S:
                self._loss_t = now
                self._bar.set_postfix_str(f"loss {self._loss():.4f}", refresh=False)
            self._bar.update(n)
            return
        if (self.every and self.n - self._last_n >= self.every) or (
            now - self._last_t >= self.interval
        ):
            self._line(now)

    def close(self) -> None:
        """End the pass: close the bar, or write a last line if any was written before."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines and self.n != self._last_n:
            self._line(self.clock())
        self.enabled = False

    def line(self, now: float | None = None) -> str:
        """The plain line for where the pass stands at time ``now`` (None: the clock's now)."""
        now = self.clock() if now is None else now
        parts = [self.desc] if self.desc else []
        parts.append(f"{self.unit} {self.n}" + (f"/{self.total}" if self.total else ""))
        if self._loss is not None:
            parts.append(f"loss {self._loss():.4f}")
        elapsed = now - self.start
        if self.total and self.n >= self.total:
            parts.append(f"done in {format_duration(elapsed)}")
        elif self.total and self.n > 0:
            parts.append(f"eta {format_duration(elapsed / self.n * (self.total - self.n))}")
        elif self.n > 0 and elapsed > 0:
            parts.append(f"{self.n / elapsed:.1f} {self.unit}/s")
        return " ".join(parts)

    def _line(self, now: float) -> None:
        print(self.line(now), file=self.stream, flush=True)
        self._lines += 1
        self._last_n, self._last_t = self.n, now
