"""The one training loop (:mod:`mnerqg_graph.training.engine`): hooks, stops, losses, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mnerqg_graph.errors import TrainingError
from mnerqg_graph.training.engine import (
    BatchMeanLoss,
    Hooks,
    ItemMeanLoss,
    LossMeter,
    TrainLoop,
    shuffled_batches,
)

N_ITEMS, BATCH = 5, 2  # 3 batches an epoch: 2, 2 and 1 items


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N_ITEMS, 3, generator=g), torch.randn(N_ITEMS, 1, generator=g)


def _loop(
    model: nn.Module,
    meter: Callable[[], LossMeter] = BatchMeanLoss,
    bad_steps: tuple[int, ...] = (),
    **kw: Any,
) -> TrainLoop[Tensor]:
    """A loop over index batches of :func:`_data`; the loss is NaN at the calls ``bad_steps``."""
    x, y = _data()
    calls = 0

    def loss_fn(idx: Tensor) -> dict[str, Tensor]:
        nonlocal calls
        mse = ((model(x[idx]) - y[idx]) ** 2).mean()
        if calls in bad_steps:
            mse = mse * float("nan")
        calls += 1
        return {"total": 2 * mse, "mse": mse}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainLoop(loss_fn, opt, model.parameters(), meter=meter, **kw)


def _batches(seed: int = 0) -> Any:
    gen = torch.Generator().manual_seed(seed)
    return lambda _epoch: shuffled_batches(N_ITEMS, BATCH, gen)


def test_hooks_run_in_order_and_history_holds_the_epoch_means() -> None:
    events: list[tuple[Any, ...]] = []
    step_losses: list[dict[str, float]] = []

    def on_step_end(step: int, losses: dict[str, Tensor]) -> None:
        assert all(not v.requires_grad for v in losses.values())  # detached
        events.append(("step", step))
        step_losses.append({k: float(v) for k, v in losses.items()})

    own = Hooks(on_epoch_start=lambda e: events.append(("own start", e)))
    run_hooks = Hooks(
        on_epoch_start=lambda e: events.append(("start", e)),
        on_step_end=on_step_end,
        on_epoch_end=lambda e, s, m: events.append(("end", e, s, sorted(m))),
    )
    loop = _loop(nn.Linear(3, 1), hooks=[own])
    result = loop.run(_batches(), 2, hooks=[run_hooks])
    assert events == [
        ("own start", 0),
        ("start", 0),
        ("step", 0),
        ("step", 1),
        ("step", 2),
        ("end", 0, 3, ["mse", "total"]),
        ("own start", 1),
        ("start", 1),
        ("step", 3),
        ("step", 4),
        ("step", 5),
        ("end", 1, 6, ["mse", "total"]),
    ]
    assert result.steps == 6 and len(result.history) == 2
    for epoch, means in enumerate(result.history):
        steps = step_losses[3 * epoch : 3 * epoch + 3]
        for key in ("total", "mse"):  # a batch counts once
            assert means[key] == pytest.approx(sum(s[key] for s in steps) / 3)
    assert result.history[1]["total"] < result.history[0]["total"]  # it trains


def test_item_mean_weights_each_batch_by_its_size() -> None:
    sizes: list[int] = []
    totals: list[float] = []

    def record(step: int, losses: dict[str, Tensor]) -> None:
        totals.append(float(losses["total"]))

    gen = torch.Generator().manual_seed(0)

    def batches(_epoch: int) -> Iterator[Tensor]:
        for idx in shuffled_batches(N_ITEMS, BATCH, gen):
            sizes.append(len(idx))
            yield idx

    loop = _loop(nn.Linear(3, 1), meter=ItemMeanLoss, hooks=[Hooks(on_step_end=record)])
    result = loop.run(batches, 1)
    assert sizes == [2, 2, 1]
    expected = sum(t * n for t, n in zip(totals, sizes, strict=True)) / N_ITEMS
    assert result.history == [{"total": pytest.approx(expected)}]


def test_max_steps_ends_the_epoch_and_the_run() -> None:
    ends: list[int] = []
    starts: list[int] = []
    hooks = Hooks(on_epoch_start=starts.append, on_epoch_end=lambda e, s, m: ends.append(s))
    result = _loop(nn.Linear(3, 1)).run(_batches(), 5, max_steps=4, hooks=[hooks])
    assert result.steps == 4 and len(result.history) == 2  # the second epoch, cut short
    assert starts == [0, 1] and ends == [3, 4]


def test_a_hook_returning_true_stops() -> None:
    after_step = Hooks(on_step_end=lambda step, losses: step == 1)
    result = _loop(nn.Linear(3, 1)).run(_batches(), 3, hooks=[after_step])
    assert result.steps == 2 and len(result.history) == 1
    after_epoch = Hooks(on_epoch_end=lambda e, s, m: e == 1)
    result = _loop(nn.Linear(3, 1)).run(_batches(), 3, hooks=[after_epoch])
    assert result.steps == 6 and len(result.history) == 2


def test_resume_counts_from_the_given_epoch_and_step() -> None:
    starts: list[int] = []
    steps: list[int] = []
    hooks = Hooks(on_epoch_start=starts.append, on_step_end=lambda s, losses: steps.append(s))
    result = _loop(nn.Linear(3, 1)).run(_batches(), 3, start_epoch=2, step=6, hooks=[hooks])
    assert starts == [2] and steps == [6, 7, 8] and result.steps == 9


def test_non_finite_loss_raises_naming_the_step_before_applying_it() -> None:
    model = nn.Linear(3, 1)
    weights: list[Tensor] = []
    hooks = Hooks(on_step_end=lambda s, losses: weights.append(model.weight.detach().clone()))
    loop = _loop(model, bad_steps=(4,), name="detector", hooks=[hooks])
    with pytest.raises(TrainingError, match=r"^detector loss became nan at step 4$"):
        loop.run(_batches(), 3)
    assert len(weights) == 4  # steps 0-3 were taken, step 4's update was not
    assert torch.equal(model.weight, weights[-1])


def test_non_finite_loss_checked_every_few_steps_names_the_first_bad_step() -> None:
    taken: list[int] = []
    hooks = Hooks(on_step_end=lambda s, losses: taken.append(s))
    loop = _loop(
        nn.Linear(3, 1),
        bad_steps=(1,),
        check_every=50,
        hooks=[hooks],
        nonfinite=lambda value, step: f"loss is {value} at step {step}; see out/last",
    )
    with pytest.raises(TrainingError, match=r"^loss is nan at step 1; see out/last$"):
        loop.run(_batches(), 3)
    assert taken == [0, 1, 2]  # read back at the epoch's end


def test_clipping_scheduler_and_single_step() -> None:
    model = nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    seen: list[int] = []
    loop: TrainLoop[Tensor] = TrainLoop(
        lambda idx: 100 * ((model(x[idx]) - y[idx]) ** 2).mean(),
        opt,
        model.parameters(),
        clip=0.1,
        scheduler=sched,
        hooks=[Hooks(on_step_end=lambda s, losses: seen.append(s))],
    )
    losses = loop.step(torch.arange(N_ITEMS), 7)
    assert set(losses) == {"total"} and not losses["total"].requires_grad
    assert seen == [7] and sched.last_epoch == 1 and opt.param_groups[0]["lr"] == 0.5
    moved = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)]
    )
    assert float(moved.norm()) == pytest.approx(0.1, rel=1e-4)  # lr 1 times the clipped gradient


def test_shuffled_batches_are_a_seeded_permutation() -> None:
    def draw(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        return [b.tolist() for b in shuffled_batches(7, 3, gen)]

    a = draw(0)
    assert [len(b) for b in a] == [3, 3, 1]
    assert sorted(i for b in a for i in b) == list(range(7))
    assert draw(0) == a and draw(1) != a


def test_progress_bar_lines_name_the_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    from mnerqg_graph import progress as progress_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress_mod, "_pinned_terminal", False)
        mp.setattr(progress_mod, "PLAIN_INTERVAL_S", 0.0)
        _loop(nn.Linear(3, 1), name="grounder").run(_batches(), 1, steps_per_epoch=3, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[0].startswith("grounder epoch 1/1 step 1/3 loss ")


# --- the three trainings run this loop -------------------------------------------------------


class _Reached(Exception):
    """Raised by the patched :meth:`TrainLoop.run`: the training got to the shared loop."""

    def __init__(self, loop: TrainLoop[Any]) -> None:
        super().__init__()
        self.loop = loop


@pytest.fixture
def reached(monkeypatch: pytest.MonkeyPatch) -> None:
    """:meth:`TrainLoop.run` stops at once, handing its loop over (no training happens)."""

    def run(self: TrainLoop[Any], *args: Any, **kwargs: Any) -> Any:
        raise _Reached(self)

    monkeypatch.setattr(TrainLoop, "run", run)


@pytest.mark.usefixtures("reached")
def test_the_mner_trainer_runs_the_shared_loop(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.training.loop import TrainConfig, Trainer
    from tests.helpers import processor, samples, tiny_config, tiny_encoder

    enc = tiny_encoder(tmp_path)
    cfg = tiny_config(enc)
    items = processor(enc, cfg)(samples(tmp_path)).items
    tcfg = TrainConfig(epochs=1, batch_size=2, device="cpu", grad_clip=0.5)
    tok = AutoTokenizer.from_pretrained(str(enc))
    trainer = Trainer(build_model(cfg), tok, load_queries(), items, lambda m: {}, tcfg, tmp_path)
    with pytest.raises(_Reached) as got:
        trainer.fit()
    loop = got.value.loop
    assert loop is trainer.loop and loop.optimizer is trainer.optimizer
    assert loop.scheduler is trainer.scheduler and loop.clip == 0.5
    assert isinstance(loop.meter(), BatchMeanLoss)
    # and a single step of the throughput benchmark is the loop's step
    calls: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainLoop, "step", lambda self, batch, step: calls.append(step))
        trainer._step(None, 3)  # type: ignore[arg-type]
    assert calls == [3]


@pytest.mark.usefixtures("reached")
def test_the_grounder_runs_the_shared_loop(tmp_path: Path) -> None:
    from detectors.grounder import VisualGrounder, fit_grounder, grounding_data
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.data.synth import generate

    generate(tmp_path / "synth", seed=5, n_train=4, n_valid=1, n_test=1, image_size=64)
    types = ["PER", "LOC", "ORG", "OTHER"]
    data = grounding_data(load_split(tmp_path / "synth", "train").samples, types, 64)
    model = VisualGrounder(types, backbone_kwargs={"width": 8, "out_channels": 16}, hidden_dim=32)
    with pytest.raises(_Reached) as got:
        fit_grounder(model, data, epochs=1, device="cpu", log=None)
    loop = got.value.loop
    assert loop.name == "grounder" and loop.clip == 5.0
    assert isinstance(loop.meter(), ItemMeanLoss)


@pytest.mark.usefixtures("reached")
def test_the_detector_runs_the_shared_loop(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    from detectors.detection.train import train_detector
    from mnerqg_graph.data.synth import generate

    generate(tmp_path / "synth", seed=3, n_train=2, n_valid=1, n_test=1, image_size=64)
    with pytest.raises(_Reached) as got:
        train_detector(
            tmp_path / "synth",
            backend_kwargs={"min_size": 64, "max_size": 64},
            types=["PER", "LOC", "ORG", "OTHER"],
            image_size=64,
            device="cpu",
            log=None,
        )
    loop = got.value.loop
    assert loop.name == "detector" and loop.clip == 10.0
    assert isinstance(loop.meter(), ItemMeanLoss)
