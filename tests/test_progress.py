"""The progress display: plain lines in a log, a bar on a terminal, nothing when disabled."""

from __future__ import annotations

import io

import pytest

from mnerqg_graph import progress as progress_mod
from mnerqg_graph.progress import Progress, format_duration


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 4.4, 59.6, 130, 3599, 3720, 90061)] == [
        "0s", "4s", "1m00s", "2m10s", "59m59s", "1h02m", "25h01m",
    ]  # fmt: skip


def test_plain_lines_every_interval_with_loss_eta_and_a_last_line() -> None:
    clock, out = Clock(), io.StringIO()
    reads = []

    def loss() -> float:
        reads.append(clock.t)
        return 0.82134

    bar = Progress(400, "epoch 3/10", stream=out, terminal=False, interval=30, clock=clock)
    for _ in range(100):  # 100 steps in 25 s: under the interval, no line yet
        clock.t += 0.25
        bar.update(loss=loss)
    assert out.getvalue() == "" and reads == []  # the loss is not read when nothing is drawn
    for _ in range(20):  # 120 steps at 30 s
        clock.t += 0.25
        bar.update(loss=loss)
    # 30 s for 120 steps: 280 more take 70 s
    assert out.getvalue() == "epoch 3/10 step 120/400 loss 0.8213 eta 1m10s\n"
    assert reads == [130.0]
    for _ in range(280):
        clock.t += 0.25
        bar.update(loss=loss)
    bar.close()
    bar.close()  # idempotent
    assert out.getvalue().splitlines() == [
        "epoch 3/10 step 120/400 loss 0.8213 eta 1m10s",
        "epoch 3/10 step 240/400 loss 0.8213 eta 40s",
        "epoch 3/10 step 360/400 loss 0.8213 eta 10s",
        "epoch 3/10 step 400/400 loss 0.8213 done in 1m40s",
    ]


def test_plain_lines_every_n_steps_and_unknown_total() -> None:
    clock, out = Clock(), io.StringIO()
    with Progress(None, "predict", "tweet", every=64, stream=out, terminal=False, clock=clock) as p:
        for _ in range(5):
            clock.t += 1.0
            p.update(32)
    assert out.getvalue().splitlines() == [
        "predict tweet 64 32.0 tweet/s",
        "predict tweet 128 32.0 tweet/s",
        "predict tweet 160 32.0 tweet/s",  # the last line, at the end
    ]


def test_a_short_pass_prints_nothing() -> None:
    out = io.StringIO()
    with Progress(10, "valid", "tweet", stream=out, terminal=False) as p:
        for _ in range(10):
            p.update()
    assert out.getvalue() == ""


@pytest.mark.parametrize("terminal", [False, True])
def test_disabled_prints_nothing(terminal: bool) -> None:
    out = io.StringIO()
    with Progress(4, "epoch 1/1", stream=out, terminal=terminal, interval=0, enabled=False) as p:
        for _ in range(4):
            p.update(loss=lambda: 1.0)
    assert out.getvalue() == ""


def test_terminal_gets_a_bar_with_the_running_loss() -> None:
    out = io.StringIO()
    with Progress(4, "epoch 1/2", stream=out, terminal=True, leave=True) as p:
        for _ in range(4):
            p.update(loss=lambda: 0.5)
    text = out.getvalue()
    assert "epoch 1/2" in text and "4/4" in text and "loss 0.5000" in text
    assert "\r" in text  # redrawn in place, not one line per step


def test_stderr_decides_unless_pinned(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress_mod, "_pinned_terminal", None)
    assert not progress_mod.stderr_is_terminal()  # pytest's capture is not a terminal
    with Progress(2, "epoch 1/1", interval=0) as p:
        p.update()
    assert capsys.readouterr().err == "epoch 1/1 step 1/2 eta 0s\n"
    progress_mod.pin_terminal(True)  # what the experiment does before Sacred captures stderr
    assert progress_mod.stderr_is_terminal()
    with Progress(2, "epoch 1/1", interval=0) as p:
        p.update()
    assert "\r" in capsys.readouterr().err
