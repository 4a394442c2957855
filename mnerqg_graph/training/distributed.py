"""Plain data-parallel training: DistributedDataParallel with ranks taken from the environment.

The way nanoGPT's ``train.py`` does it: ``torchrun`` (or any launcher) sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` starts the
process group when ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on CPU) and gives each process its
device (``cuda:LOCAL_RANK``). Only the main process (rank 0) logs, writes checkpoints and carries
the Sacred observers (sacred issue 772). Everything here is a no-op for a single process, so the
experiment calls it unconditionally.

What the experiment hands to :class:`~mnerqg_graph.training.loop.Trainer`:

* ``sampler_fn``: :func:`make_sampler_fn`, a :class:`~torch.utils.data.DistributedSampler` per
  epoch (``set_epoch`` reshuffles; every rank gets ``ceil(n / world)`` tweets, so all ranks take
  the same number of steps);
* ``wrap``: :func:`make_wrap`, the DDP wrapper. ``find_unused_parameters=True``, because some
  parameters do not reach the loss in some steps (the image branch and grounding head when a batch
  has no image, the text encoder's pooler always). Lazy (``-1``) layers get one dry forward first;
* ``evaluate``: wrapped by :func:`on_main`, validation runs on rank 0 and its metrics are broadcast,
  so every rank selects the same best epoch;
* the per-epoch training losses are averaged over all ranks' batches (:func:`mean_over_ranks`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from mnerqg_graph.errors import ConfigError, TrainingError

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job.

    Args:
        rank: global rank (0 is the main process).
        local_rank: rank on this machine (selects the GPU).
        world_size: number of processes.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is the process that logs and writes checkpoints."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (unset: a single process).

        Raises:
            ConfigError: a value that is not an integer, or a rank outside ``[0, WORLD_SIZE)``.
        """
        env = os.environ if environ is None else environ
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError as exc:
            raise ConfigError(f"distributed environment: {exc}") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ConfigError(
                f"distributed environment: RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world}"
            )
        return cls(rank=rank, local_rank=local, world_size=world)


def is_active() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(
    device: str = "auto", env: DistEnv | None = None, timeout: timedelta = timedelta(minutes=30)
) -> tuple[DistEnv, str]:
    """Start the process group when the environment asks for several processes.

    Args:
        device: the configured device (``cpu``, ``cuda``, ``cuda:N`` or ``auto``).
        env: the ranks (default: :meth:`DistEnv.from_env`).
        timeout: how long a collective waits for the other ranks.

    Returns:
        The ranks and this process's device: unchanged for a single process, ``cuda:LOCAL_RANK``
        for each process of a CUDA job (NCCL), the configured CPU device otherwise (gloo).
    """
    env = DistEnv.from_env() if env is None else env
    if not env.enabled:
        return env, device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if env.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} CUDA devices"
            )
        device = f"cuda:{env.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": torch.device(device)} if cuda else {}
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=timeout,
            **kwargs,
        )
    return env, device


def cleanup() -> None:
    """Destroy the process group, if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if is_active():
        dist.barrier()


@contextmanager
def main_process_first(env: DistEnv) -> Iterator[None]:
    """Run the body on rank 0 first, then on each machine's local rank 0, then on the rest.

    For bodies that create files when they are missing (SynthTweets): rank 0 writes them; on a
    shared file system every other rank then finds them complete; on a machine of its own, that
    machine's local rank 0 writes them before its other ranks look. No two processes ever write
    the same files at the same time.
    """
    if not env.enabled:
        yield
        return
    phase = 0 if env.is_main else 1 if env.local_rank == 0 else 2
    for _ in range(phase):
        barrier()
    yield
    for _ in range(2 - phase):
        barrier()


def build_on_main(build: Callable[[Path], str | Path], env: DistEnv, work: Path) -> str:
    """Run ``build(work)`` on rank 0 only; every rank gets the path it returns.

    A directory that ``build`` created under ``work`` (e.g. the tiny text encoder) is sent to the
    other ranks and written under ``work/rank<N>/`` (Hugging Face's ``save_pretrained`` writes
    nothing on a rank other than 0 once a process group exists, and another machine may not see
    rank 0's disk); any other path (an installed model, a user's folder) is used as it is.

    Returns:
        The directory, as a string, valid on this rank.
    """
    if not env.enabled:
        return str(build(work))
    message: tuple[str, dict[str, bytes] | None] | None = None
    if env.is_main:
        path = Path(build(work))
        files = None
        if path.is_dir() and path.resolve().is_relative_to(work.resolve()):
            files = {
                str(f.relative_to(path)): f.read_bytes()
                for f in sorted(path.rglob("*"))
                if f.is_file()
            }
        message = (str(path), files)
    path_s, files = broadcast_object(message)
    if env.is_main or files is None:
        return path_s
    dest = work / f"rank{env.rank}" / Path(path_s).name
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    return str(dest)


def make_sampler_fn(
    dataset: Sized, env: DistEnv, seed: int, shuffle: bool = True
) -> Callable[[int], DistributedSampler]:
    """``sampler_fn(epoch)`` for the Trainer: this rank's share of ``dataset`` in that epoch.

    All ranks draw the same permutation (``seed + epoch``) and take every ``world_size``-th index
    from their rank on, padded so that every rank gets the same number of tweets.
    """

    def sampler_fn(epoch: int) -> DistributedSampler:
        sampler: DistributedSampler = DistributedSampler(
            dataset,  # type: ignore[arg-type]
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=False,
        )
        sampler.set_epoch(epoch)
        return sampler

    return sampler_fn


def has_lazy_parameters(model: nn.Module) -> bool:
    """Whether some parameter's shape is still unknown (a lazy ``-1`` layer before its forward)."""
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())


def make_wrap(
    env: DistEnv,
    device: str | torch.device,
    example: Callable[[nn.Module], Any] | None = None,
    find_unused_parameters: bool = True,
) -> Callable[[nn.Module], nn.Module] | None:
    """The Trainer's ``wrap``: DistributedDataParallel around the model (None: single process).

    Args:
        env: the ranks.
        device: this process's device (a ``cuda:N`` device is DDP's ``device_ids``).
        example: ``example(model)`` returns an input batch on which a model with lazy layers is
            run once, under ``no_grad``, before wrapping (DDP must see every parameter's shape).
        find_unused_parameters: see the module docstring.
    """
    if not env.enabled:
        return None
    dev = torch.device(device)

    def wrap(model: nn.Module) -> nn.Module:
        if has_lazy_parameters(model):
            if example is None:
                raise TrainingError(
                    "the model has lazy layers: DDP needs an example batch to "
                    "initialise them before wrapping"
                )
            batch = example(model)
            with torch.no_grad():
                model(batch.to(dev) if hasattr(batch, "to") else batch)
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )

    return wrap


def broadcast_object(obj: T | None, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (picklable objects; returns ``obj`` when alone)."""
    if not is_active():
        return obj  # type: ignore[return-value]
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def on_main(fn: Callable[..., T], env: DistEnv) -> Callable[..., T]:
    """Run ``fn`` on rank 0 only and give its result to every rank.

    Used for validation: rank 0 predicts and scores, the other ranks wait and receive the same
    metrics. An exception on rank 0 is re-raised there and reported on the others as a
    :class:`TrainingError`, so no rank is left waiting.
    """
    if not env.enabled:
        return fn

    def wrapped(*args: Any, **kwargs: Any) -> T:
        result: Any = None
        error: BaseException | None = None
        if env.is_main:
            try:
                result = ("ok", fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - re-raised below after telling the others
                error = exc
                result = ("error", f"{type(exc).__name__}: {exc}")
        status, value = broadcast_object(result)
        if error is not None:
            raise error
        if status == "error":
            raise TrainingError(f"rank 0 failed: {value}")
        return value  # type: ignore[no-any-return]

    return wrapped


def mean_over_ranks(sums: Mapping[str, Tensor], count: int) -> dict[str, float]:
    """Per-key mean over every rank's batches: ``sum of sums / sum of counts`` (one host sync).

    Args:
        sums: per key, the sum over this rank's batches (scalar tensors on one device); every
            rank must hold the same keys (the model reports the same loss parts for every batch).
        count: number of batches those sums cover on this rank.
    """
    if not sums:
        return {}
    keys = sorted(sums)  # every rank in the same order (each rank's dict follows its batches)
    flat = torch.stack([sums[k].detach().float().reshape(()) for k in keys])
    flat = torch.cat([flat, flat.new_tensor([float(count)])])
    if is_active():
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    values = flat.tolist()
    n = max(values[-1], 1.0)
    return {k: v / n for k, v in zip(keys, values[:-1], strict=True)}


def first_bad_step(first_bad: Tensor) -> int:
    """The earliest step with a non-finite loss on any rank, or -1 (one host sync).

    Args:
        first_bad: this rank's earliest such step (``-1``: none), a scalar integer tensor.
    """
    if not is_active():
        return int(first_bad.item())
    none = torch.iinfo(torch.long).max
    t = torch.where(first_bad < 0, none, first_bad).to(torch.long).reshape(1)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    value = int(t.item())
    return -1 if value == none else value


def trainer_kwargs(
    env: DistEnv, device: str | torch.device, train_items: Sequence[Any], seed: int, pad_id: int = 0
) -> dict[str, Any]:
    """The distributed keyword arguments of :class:`~mnerqg_graph.training.loop.Trainer`.

    ``wrap`` (DDP; a model with lazy layers first runs on the first two training tweets),
    ``sampler_fn`` (a DistributedSampler per epoch) and ``is_main``; for a single process they
    leave the Trainer as it is (no wrap, its own shuffling, main process).
    """
    if not env.enabled:
        return {"wrap": None, "sampler_fn": None, "is_main": True}

    def example(model: nn.Module) -> Any:
        from mnerqg_graph.data.collate import collate

        cfg: Any = getattr(model, "model", model).config  # the Trainer's ModelWithLosses
        return collate(list(train_items[:2]), cfg.heads.max_span_len, cfg.image.image_size, pad_id)

    return {
        "wrap": make_wrap(env, device, example),
        "sampler_fn": make_sampler_fn(train_items, env, seed),
        "is_main": env.is_main,
    }
