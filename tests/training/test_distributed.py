"""Data-parallel training: 2 CPU processes (gloo) against one process with the same global batch.

Why the two runs can agree to float rounding: dropout is 0 everywhere (the tiny encoder's config
too), both runs see the same global batch at every step (the reference's sampler yields rank 0's
share, then rank 1's, of the DistributedSampler permutation), and every tweet has 5 tokens and no
image, so each rank's loss normalisers (token count, example count) are equal and the mean of the
ranks' losses (what DDP's gradient averaging computes) is the loss of the global batch. The
span-match loss, whose normaliser depends on the predictions, gets weight 0.

Tolerance, after 4 AdamW steps: epoch losses within 1e-5 (relative) of the reference, and every
parameter within 0.5 % of the largest change training made to any parameter (about 7.5e-3 here;
measured: 1.2e-5, on GATv2 ``lin_r`` weights; all but a few tensors agree to 1e-7). Gradients
summed in another order differ by rounding only, but AdamW divides each update by the gradient's
running RMS, which magnifies rounding where a gradient nearly cancels. The two replicas are
bit-identical.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from mnerqg_graph.data.types import Sample, Tweet
from mnerqg_graph.training import distributed as ddp

WORLD = 2
PER_RANK = 2  # tweets per rank and step: global batch of 4
EPOCHS = 2  # 8 tweets -> 2 steps per epoch -> 4 steps

TWEETS = [
    Tweet("d1", ["Kelvo", "visits", "Marn", "today", "!"], ["B-PER", "O", "B-LOC", "O", "O"]),
    Tweet("d2", ["Zed", "Corp", "hires", "Anna", "now"], ["B-ORG", "I-ORG", "O", "B-PER", "O"]),
    Tweet("d3", ["nothing", "to", "see", "here", "."], ["O", "O", "O", "O", "O"]),
    Tweet("d4", ["Rio", "loves", "the", "Expo", "fair"], ["B-LOC", "O", "O", "B-OTHER", "O"]),
    Tweet("d5", ["we", "met", "Lia", "in", "Oslo"], ["O", "O", "B-PER", "O", "B-LOC"]),
    Tweet("d6", ["Acme", "beats", "Globex", "again", "!"], ["B-ORG", "O", "B-ORG", "O", "O"]),
    Tweet("d7", ["so", "much", "about", "Tarn", "today"], ["O", "O", "O", "B-ORG", "O"]),
    Tweet("d8", ["Bo", "and", "Ed", "went", "home"], ["B-PER", "O", "B-PER", "O", "O"]),
]


def _encoder(root: Path) -> Path:
    """The tiny encoder of these tweets, with its dropout set to 0."""
    from tests.helpers import tiny_encoder

    enc = tiny_encoder(root, TWEETS)
    cfg = json.loads((enc / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (enc / "config.json").write_text(json.dumps(cfg))
    return enc


def _trainer(encoder: Path, out: Path, batch_size: int, device: str, **kwargs: Any) -> Any:
    """A tiny full model (hetero_gat + image branch, images absent) and its Trainer."""
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.processing import MnerqgProcessor
    from mnerqg_graph.training.loop import TrainConfig, Trainer
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(
        encoder,
        {
            "graph.dropout": 0.0,
            "losses.weights": {
                "start": 1.0,
                "end": 1.0,
                "match": 0.0,
                "existence": 0.5,
                "grounding": 1.0,
            },
        },
    )
    model = build_model(cfg)
    tok = AutoTokenizer.from_pretrained(str(encoder))
    queries = load_queries()
    proc = MnerqgProcessor(
        tok, queries, cfg.encoder.max_length, cfg.heads.max_span_len, cfg.image.image_size
    )
    items = proc([Sample(t) for t in TWEETS]).items
    evaluate = kwargs.pop("evaluate", _evaluate)
    tcfg = TrainConfig(
        epochs=EPOCHS,
        batch_size=batch_size,
        lr=3e-3,
        encoder_lr=3e-3,
        seed=0,
        device=device,
        warmup_ratio=0.0,
    )
    return Trainer(model, tok, queries, items, evaluate, tcfg, out, **kwargs)


def _evaluate(model: Any) -> dict[str, float]:
    """A deterministic function of the weights (identical models select identical epochs)."""
    return {"f1": float(sum(p.sum() for p in model.span_head.parameters()))}


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    """One rank of the DDP run: train, then save its parameters and history."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    env, device = ddp.setup("cpu")
    try:
        root = Path(tmp)
        probe = _trainer(root / "enc", root / "ddp", PER_RANK, device)  # items for the sampler
        trainer = _trainer(
            root / "enc",
            root / "ddp",
            PER_RANK,
            device,
            evaluate=ddp.on_main(_evaluate, env),
            **ddp.trainer_kwargs(env, device, probe.train_items, seed=0),
        )
        result = trainer.fit()
        state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(root / f"rank{rank}.safetensors"))
        (root / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "history": result.history,
                    "best_epoch": result.best_epoch,
                    "ddp": type(trainer.forward_model).__name__,
                }
            )
        )
    finally:
        ddp.cleanup()


class _GlobalOrder:
    """The DDP run's global batches, for one process: rank 0's share, then rank 1's, per step."""

    def __init__(self, n: int, epoch: int) -> None:
        shards = []
        for r in range(WORLD):
            s: torch.utils.data.DistributedSampler = torch.utils.data.DistributedSampler(
                range(n), num_replicas=WORLD, rank=r, shuffle=True, seed=0
            )  # type: ignore[arg-type]
            s.set_epoch(epoch)
            shards.append(list(s))
        self.order = [
            i
            for k in range(0, len(shards[0]), PER_RANK)
            for shard in shards
            for i in shard[k : k + PER_RANK]
        ]

    def __iter__(self) -> Any:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    _encoder(tmp_path)
    torch.multiprocessing.spawn(
        _worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True
    )
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD))
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert info[0]["ddp"] == "DistributedDataParallel"
    # the replicas stay identical, bit for bit
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert info[0]["history"] == info[1]["history"]  # metrics reduced / broadcast alike
    # only rank 0 wrote checkpoints
    assert (tmp_path / "ddp" / "best" / "model.safetensors").is_file()

    n = len(TWEETS)
    ref = _trainer(
        tmp_path / "enc",
        tmp_path / "ref",
        WORLD * PER_RANK,
        "cpu",
        sampler_fn=lambda epoch: _GlobalOrder(n, epoch),
    )
    assert ref.steps_per_epoch == n // (WORLD * PER_RANK)
    ref_result = ref.fit()
    ref_state = ref.model.state_dict()
    moved = max(float((ref_state[k].float() - a[k].float()).abs().max()) for k in a)
    init = _trainer(tmp_path / "enc", tmp_path / "init", 1, "cpu").model.state_dict()
    change = max(float((ref_state[k].float() - init[k].float()).abs().max()) for k in a)
    assert change > 1e-3, "the runs did not train"
    # Adam normalises each update, so a rounding difference in a near-zero gradient (the ranks'
    # all-reduced mean against one process's mean) can move a weight by up to lr a step: the gap
    # is kernel-dependent, 0.52% of the largest change with torch's AVX2 kernels (2026-12-08; it
    # passed under 0.5% with AVX512); the loss history below is the tight check (1e-5)
    assert moved < 1e-2 * change, f"DDP and single-process parameters differ by {moved:.2e}"
    for h_ddp, h_ref in zip(info[0]["history"], ref_result.history, strict=True):
        assert h_ddp["train/loss_total"] == pytest.approx(h_ref["train/loss_total"], rel=1e-5)
    assert info[0]["best_epoch"] == ref_result.best_epoch


def test_single_process_is_left_alone() -> None:
    env = ddp.DistEnv.from_env({})
    assert (env.rank, env.world_size, env.enabled, env.is_main) == (0, 1, False, True)
    assert ddp.setup("cpu", env) == (env, "cpu")
    assert ddp.trainer_kwargs(env, "cpu", [], 0) == {
        "wrap": None,
        "sampler_fn": None,
        "is_main": True,
    }

    def f() -> int:
        return 3

    assert ddp.on_main(f, env) is f
    with ddp.main_process_first(env):
        pass
    sums = {"a": torch.tensor(3.0), "b": torch.tensor(1.0)}
    assert ddp.mean_over_ranks(sums, 2) == {"a": 1.5, "b": 0.5}
    assert ddp.first_bad_step(torch.tensor(-1)) == -1


def _mean_over_ranks_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        t = torch.tensor
        # the parts in the order each rank met them first (its first batch had an image or not)
        sums = (
            {"span": t(2.0), "grounding": t(5.0), "total": t(7.0)}
            if rank == 0
            else {"span": t(2.0), "total": t(2.0), "grounding": t(0.0)}
        )
        Path(f"{out}.{rank}").write_text(json.dumps(ddp.mean_over_ranks(sums, 2)))
    finally:
        dist.destroy_process_group()


def test_loss_means_line_up_across_ranks_whatever_order_the_parts_came_in(
    tmp_path: Path,
) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "means"
    mp.spawn(_mean_over_ranks_worker, args=(str(tmp_path / "store"), str(out)), nprocs=2)
    expected = {"grounding": 1.25, "span": 1.0, "total": 2.25}
    for rank in range(2):  # before the fix: rank 0 read grounding 3.0 (its + rank 1's total)
        assert json.loads(Path(f"{out}.{rank}").read_text()) == expected


def test_environment_is_read_and_checked() -> None:
    from mnerqg_graph.errors import ConfigError

    env = ddp.DistEnv.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (env.rank, env.local_rank, env.world_size, env.is_main) == (3, 1, 4, False)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"WORLD_SIZE": "two"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(ConfigError, match="distributed environment"):
            ddp.DistEnv.from_env(bad)


def test_sampler_shards_cover_the_data_and_reshuffle_per_epoch() -> None:
    items = list(range(7))
    shards = [ddp.make_sampler_fn(items, ddp.DistEnv(r, r, 2), seed=0) for r in range(2)]
    e0 = [list(s(0)) for s in shards]
    assert len(e0[0]) == len(e0[1]) == 4  # padded to equal length: equal step counts
    assert set(e0[0]) | set(e0[1]) == set(items)
    assert [list(s(1)) for s in shards] != e0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_loop_does_not_sync_the_host(tmp_path: Path) -> None:
    """On CUDA the loop's own bookkeeping (loss sums, NaN check) never waits for the device."""
    enc = _encoder(tmp_path)
    trainer = _trainer(enc, tmp_path / "cuda", 4, "cuda")
    assert trainer.check_every > 1
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = trainer.fit()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(torch.tensor(h["train/loss_total"])) for h in result.history)
    allowed = _allowed_lines()
    in_loop = [
        w
        for w in caught
        if "synchroniz" in str(w.message)
        and Path(w.filename).name in ("loop.py", "engine.py")
        and (Path(w.filename).name, w.lineno) not in allowed
    ]
    assert not in_loop, [f"{w.filename}:{w.lineno}" for w in in_loop]


def _allowed_lines() -> set[tuple[str, int]]:
    """(file, line) of the training loop where a sync is not the loop's own doing, or is batched.

    ``TrainLoop._check_finite`` reads back every ``check_every`` steps, ``BatchMeanLoss.running``
    when the progress display draws (at most once a second); a sync reported on the
    ``backward()`` line comes from the backward of the model's own operations.
    """
    import inspect

    from mnerqg_graph.training.engine import BatchMeanLoss, TrainLoop

    def lines(fn: Callable[..., Any]) -> tuple[str, list[str], int]:
        source, first = inspect.getsourcelines(fn)
        return Path(inspect.getsourcefile(fn) or "").name, source, first

    allowed: set[tuple[str, int]] = set()
    for fn in (TrainLoop._check_finite, BatchMeanLoss.running):
        name, source, first = lines(fn)
        allowed |= {(name, first + i) for i in range(len(source))}
    name, source, first = lines(TrainLoop.update)
    allowed |= {(name, first + i) for i, ln in enumerate(source) if ".backward(" in ln}
    return allowed


def _torchrun(tmp_path: Path, *args: str) -> None:
    """``torchrun --standalone --nproc_per_node=2 -m experiments.train ARGS`` on CPU, finished."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "MNERQG_RUNS_DIR": str(tmp_path / "default_runs"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "experiments.train",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _sacred_runs(runs_dir: Path) -> list[str]:
    return sorted(p.name for p in runs_dir.iterdir() if p.name != "_sources")


@pytest.mark.slow
@pytest.mark.parametrize("observer", ["default", "-F"])
def test_torchrun_runs_the_experiment_with_observers_and_checkpoints_on_rank_0(
    tmp_path: Path, observer: str
) -> None:
    """One Sacred run, rank 0's, with the default observer or the one ``-F DIR`` names.

    Sacred adds the observers of ``-F``/``-m``/``-s``/... when it creates each rank's run, after
    ``ex.observers`` is set up: without ``experiments.train.observe_main_rank_only`` rank 1
    recorded a second run, with its own result (issue 23).
    """
    runs_dir = tmp_path / ("default_runs" if observer == "default" else "flag_runs")
    flags = ["-F", str(runs_dir)] if observer == "-F" else []
    _torchrun(
        tmp_path,
        *flags,
        "with",
        "fast",
        f"output_dir={tmp_path / 'out'}",
        f"data.root={tmp_path / 'data'}",
        "optim.device=cpu",
    )
    assert _sacred_runs(runs_dir) == ["1"]  # one Sacred run: observers on rank 0 only
    assert (runs_dir == tmp_path / "default_runs") == (tmp_path / "default_runs").exists()
    run = json.loads((runs_dir / "1" / "run.json").read_text())
    metrics = json.loads((tmp_path / "out" / "work" / "metrics.json").read_text())
    assert run["status"] == "COMPLETED"
    assert run["result"] == metrics  # rank 0's result (rank 1 returns its validation scores)
    assert (tmp_path / "out" / "checkpoint" / "model.safetensors").is_file()
    # rank 1 wrote nothing but its copy of rank 0's tiny encoder
    assert [p.name for p in (tmp_path / "out" / "work" / "rank1").iterdir()] == ["tiny_encoder"]
