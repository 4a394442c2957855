"""Checkpoints as safetensors + JSON: nothing is ever unpickled.

A model checkpoint is a directory::

    model.safetensors     every weight (text encoder included)
    config.json           the ModelConfig (everything needed to rebuild the model)
    text_encoder/         the encoder's Hugging Face config (the model's) and tokenizer files
    queries.json          the entity-type queries the model was trained with
    processor.json        the preprocessing options (``MnerqgProcessor``)

The model's files are read by :meth:`MnerqgModel.from_pretrained
<mnerqg_graph.model.MnerqgModel.from_pretrained>`, the tokenizer, queries and processor.json by
:meth:`MnerqgProcessor.from_pretrained <mnerqg_graph.processing.MnerqgProcessor.from_pretrained>`
(a checkpoint written before processor.json existed takes its config.json's options).

A training state (for resuming) is a directory ``state/`` beside it with ``optimizer.safetensors``
(optimizer tensors, flattened), ``trainer.json`` (epoch, step, scheduler, history, optimizer
hyper-parameters) and ``rng.safetensors`` (torch's RNG state). Both are written to a temporary
directory and moved into place, so an interruption never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mnerqg_graph.config import ModelConfig
from mnerqg_graph.errors import CheckpointError, ConfigError, MnerqgError, one_line_reason
from mnerqg_graph.io import (
    abandon_dir,
    atomic_write_text,
    check_replaceable,
    replace_dir,
    temp_dir_beside,
    writing,
)
from mnerqg_graph.plugins import load_plugin
from mnerqg_graph.registry import plugins_of

MODEL_FILES = (
    "model.safetensors",
    "config.json",
    "queries.json",
    "text_encoder/config.json",
    "text_encoder/tokenizer.json",  # without it transformers builds an empty-vocabulary tokenizer
)
#: What the model alone needs (the rest is the processor's).
WEIGHT_FILES = ("model.safetensors", "config.json", "text_encoder/config.json")


def _processor_files(directory: Path) -> list[Path]:
    """The processor's files in a checkpoint folder (relative paths), as far as they exist."""
    from mnerqg_graph.processing import PROCESSOR_FILE, QUERIES_FILE, TOKENIZER_DIR

    found = [Path(n) for n in (PROCESSOR_FILE, QUERIES_FILE) if (directory / n).is_file()]
    tok = directory / TOKENIZER_DIR
    if tok.is_dir():
        found += [
            f.relative_to(directory)
            for f in sorted(tok.iterdir())
            if f.is_file() and f.name != "config.json"  # the encoder's config: the model's
        ]
    return found


def write_checkpoint(
    model: nn.Module, config: ModelConfig, processor: Any | None, out_dir: str | Path
) -> Path:
    """Write a model checkpoint directory atomically (see the module docstring).

    Args:
        model: the model (its weights and its text encoder's config are written).
        config: the config saved as ``config.json`` (usually ``model.config``).
        processor: a :class:`~mnerqg_graph.processing.MnerqgProcessor` whose files go beside
            (None: the processor files already in ``out_dir`` are kept).
        out_dir: the checkpoint folder; replaced as a whole once everything is written (a
            non-empty folder that is not a checkpoint's or a processor's is refused before
            anything is written).

    Raises:
        ConfigError: ``out_dir`` is a file, or a folder of something else.
        WriteError: a file cannot be written; ``out_dir`` is as it was.
    """
    from mnerqg_graph.processing import PROCESSOR_FILE

    out_dir = Path(out_dir)
    check_replaceable(out_dir, "model.safetensors", PROCESSOR_FILE)
    tmp = temp_dir_beside(out_dir)
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        with writing(tmp / "model.safetensors"):
            save_file(state, str(tmp / "model.safetensors"))
        enc = tmp / "text_encoder"
        enc.mkdir()
        if processor is not None:
            processor.write_files(tmp)
        elif out_dir.is_dir():
            for rel in _processor_files(out_dir):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out_dir / rel, tmp / rel)
        model.text_encoder.model.config.save_pretrained(str(enc))  # type: ignore[union-attr,operator]
        cfg = ModelConfig.from_dict(config.to_dict())
        cfg.encoder.name = "text_encoder"
        cfg.plugins = plugins_of(config, model)  # imported again by read_model
        cfg.save(tmp / "config.json")
        replace_dir(tmp, out_dir, "model.safetensors", PROCESSOR_FILE)  # (or a processor alone)
    except BaseException as exc:  # a write error names the file of out_dir that failed
        abandon_dir(tmp, out_dir, exc)
        raise
    return out_dir


def save_model(
    model: nn.Module,
    config: ModelConfig,
    queries: dict[str, str],
    tokenizer: Any,
    out_dir: str | Path,
) -> Path:
    """Write a model checkpoint with the processor that reads as ``model`` does.

    The processor is :meth:`~mnerqg_graph.processing.MnerqgProcessor.from_model` of ``model``,
    ``tokenizer`` and ``queries`` (see :func:`write_checkpoint`).
    """
    from mnerqg_graph.processing import MnerqgProcessor

    processor = MnerqgProcessor.from_model(model, tokenizer, queries).replace(
        max_length=int(config.encoder.max_length), url_word=str(config.encoder.url_word)
    )
    return write_checkpoint(model, config, processor, out_dir)


def check_checkpoint_dir(ckpt: str | Path, files: tuple[str, ...] = MODEL_FILES) -> Path:
    """Raise a one-line CheckpointError when ``ckpt`` is not a complete checkpoint directory."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint directory does not exist: {ckpt}")
    for name in files:
        if not (ckpt / name).is_file():
            raise CheckpointError(f"{ckpt}: checkpoint is missing {name}")
    return ckpt


@contextmanager
def uninitialised_weights() -> Iterator[None]:
    """Build modules without their random initialisation (their weights are loaded next).

    ``torch.nn.init``'s functions and transformers' ``init_weights`` do nothing inside the block
    (transformers' ``no_init_weights``), so parameters hold whatever memory they were given until
    a state dict overwrites them: use it only where every parameter is loaded, and strictly
    checked, afterwards. Buffers are unaffected (they are computed, not drawn). For MiniLM this
    saves about 0.2 s of CPU a load, for a BERT-base-sized encoder seconds.
    """
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]
    with no_init_weights():
        yield


def read_model(ckpt: str | Path, device: str | torch.device = "cpu") -> Any:
    """Rebuild a model from a checkpoint directory, without unpickling anything.

    Returns:
        The :class:`~mnerqg_graph.model.MnerqgModel`, in eval mode on ``device``.

    Raises:
        CheckpointError: files missing, or weights that do not fit the config.
        ConfigError: a config.json this code cannot build.
    """
    from mnerqg_graph.model import build_model

    ckpt = check_checkpoint_dir(ckpt, WEIGHT_FILES)
    config = ModelConfig.load(ckpt / "config.json")
    config.encoder.name = str(ckpt / "text_encoder")
    for spec in config.plugins:  # the modules its components come from, no --plugin needed
        try:
            load_plugin(spec)
        except (MnerqgError, ImportError, OSError) as exc:
            raise CheckpointError(
                f"{ckpt / 'config.json'}: needs plugin {spec!r}, which cannot be imported "
                f"({one_line_reason(exc)}); install it, or put its folder on PYTHONPATH"
            ) from None
    try:
        with uninitialised_weights():  # every weight is read from model.safetensors, checked below
            model = build_model(config, weights=False)
    except (ConfigError, TypeError, ValueError, OSError) as exc:  # a config from another model
        msg = f"{ckpt}: cannot build the model of config.json + text_encoder/config.json: {exc}"
        raise CheckpointError(msg.splitlines()[0]) from None
    try:
        state = load_file(str(ckpt / "model.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{ckpt / 'model.safetensors'}: unreadable: {exc}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"shape mismatch {bad[:3]}"
        )
        raise CheckpointError(f"{ckpt}: weights do not match config.json ({detail})")
    model.load_state_dict(state)
    model.to(device).eval()
    return model


def load_checkpoint(ckpt: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """A checkpoint's model and processor, checked against each other.

    A checkpoint without ``processor.json`` (written before it existed) gets the processor that
    reads as its model does (:meth:`~mnerqg_graph.processing.MnerqgProcessor.from_model`).

    Returns:
        ``(model, processor)``; the model is in eval mode on ``device``.

    Raises:
        CheckpointError: files missing, weights that do not fit the config, or a tokenizer of
            another encoder.
        ConfigError: a config.json or processor.json this code cannot use, or a processor
            that does not fit the model.
    """
    from mnerqg_graph.processing import PROCESSOR_FILE, MnerqgProcessor

    ckpt = check_checkpoint_dir(ckpt)
    config = ModelConfig.load(ckpt / "config.json")  # (config errors before the queries')
    processor = MnerqgProcessor.from_pretrained(ckpt)
    if list(processor.queries) != list(config.types):
        raise ConfigError(
            f"{ckpt}: queries.json types {list(processor.queries)} differ from config types "
            f"{config.types}"
        )
    model = read_model(ckpt, device)
    tokenizer = processor.tokenizer
    enc_cfg = getattr(getattr(model.text_encoder, "model", None), "config", None)
    vocab = getattr(enc_cfg, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise CheckpointError(
            f"{ckpt / 'text_encoder'}: the tokenizer has {len(tokenizer)} tokens, the encoder "
            f"only {vocab} embeddings (tokenizer files of another model?)"
        )
    if not (ckpt / PROCESSOR_FILE).is_file():
        processor = MnerqgProcessor.from_model(model, tokenizer, processor.queries)
    processor.check_model(model)
    return model, processor


def load_model(
    ckpt: str | Path, device: str | torch.device = "cpu"
) -> tuple[Any, ModelConfig, dict[str, str], Any]:
    """Rebuild a model from a checkpoint directory, without unpickling anything.

    Returns:
        ``(model, config, queries, tokenizer)``; the model is in eval mode on ``device``
        (:func:`load_checkpoint` gives the model and its processor).

    Raises:
        CheckpointError: files missing, or weights that do not fit the config.
        ConfigError: a config.json this code cannot build.
    """
    model, processor = load_checkpoint(ckpt, device)
    return model, model.config, processor.queries, processor.tokenizer


def save_training_state(
    out_dir: str | Path,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> None:
    """Write optimizer tensors, trainer bookkeeping and the RNG state atomically.

    Args:
        out_dir: the state folder (replaced as a whole).
        optimizer: its state is saved.
        trainer_state: JSON-serialisable bookkeeping, returned by :func:`load_training_state`.
        tensors: more safetensors files of the state, ``{file name: {key: tensor}}`` (read back
            with :func:`load_state_tensors`), e.g. a weight average and the raw weights.
    """
    out_dir = Path(out_dir)
    tmp = temp_dir_beside(out_dir)
    try:
        for file_name, part in (tensors or {}).items():
            with writing(tmp / file_name):
                flat = {k: v.detach().contiguous().cpu() for k, v in part.items()}
                save_file(flat, str(tmp / file_name))
        opt = optimizer.state_dict()
        opt_tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, Any] = {}
        for pid, st in opt["state"].items():
            for name, val in st.items():
                if torch.is_tensor(val):
                    opt_tensors[f"{pid}.{name}"] = val.detach().contiguous().cpu()
                else:
                    scalars[f"{pid}.{name}"] = val
        with writing(tmp / "optimizer.safetensors"):
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        with writing(tmp / "rng.safetensors"):
            save_file(rng_state(), str(tmp / "rng.safetensors"))
        meta = {"param_groups": opt["param_groups"], "scalars": scalars, "trainer": trainer_state}
        atomic_write_text(tmp / "trainer.json", json.dumps(meta, indent=1) + "\n")
        replace_dir(tmp, out_dir, "trainer.json")
    except BaseException as exc:
        abandon_dir(tmp, out_dir, exc)
        raise


def load_training_state(state_dir: str | Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer and RNG state; return the trainer bookkeeping."""
    state_dir = Path(state_dir)
    for name in ("optimizer.safetensors", "trainer.json", "rng.safetensors"):
        if not (state_dir / name).is_file():
            raise CheckpointError(f"{state_dir}: training state is missing {name}")
    try:
        meta = json.loads((state_dir / "trainer.json").read_text(encoding="utf-8"))
        tensors = load_file(str(state_dir / "optimizer.safetensors"))
        rng = load_file(str(state_dir / "rng.safetensors"))
        cpu_rng = rng["torch"]
    except (SafetensorError, OSError, ValueError, KeyError) as exc:  # JSON/UTF-8 errors: ValueError
        raise CheckpointError(f"{state_dir}: unreadable training state: {exc}") from None
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    for key, val in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:  # e.g. another optim.layer_decay: other groups
        raise CheckpointError(
            f"{state_dir}: the optimizer's state does not fit this run's parameter groups "
            f"({exc}); resume with the settings it was started with"
        ) from None
    torch.set_rng_state(cpu_rng)
    set_cuda_rng_state(rng)
    return dict(meta["trainer"])


def training_state_meta(state_dir: str | Path) -> dict[str, Any]:
    """The trainer's bookkeeping in ``state_dir/trainer.json``, read without loading anything.

    Raises:
        CheckpointError: the file is missing or unreadable.
    """
    path = Path(state_dir) / "trainer.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["trainer"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable training state: {exc}") from None


def rng_state() -> dict[str, torch.Tensor]:
    """The CPU generator's state (``torch``) and, once CUDA is in use, each GPU's (``cuda.N``)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.update({f"cuda.{i}": st for i, st in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_cuda_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore the GPUs' generators saved by :func:`rng_state` (those this machine has).

    Exact for one process. Under DDP only rank 0 writes the state, so the other ranks get rank
    0's copy of their device's generator, not their own: their dropout after a resume is seeded
    anew rather than continued.
    """
    saved = {int(k.split(".", 1)[1]): v for k, v in state.items() if k.startswith("cuda.")}
    if saved and torch.cuda.is_available():
        for i in range(min(torch.cuda.device_count(), len(saved))):
            torch.cuda.set_rng_state(saved[i], i)


def load_state_tensors(state_dir: str | Path, name: str) -> dict[str, torch.Tensor]:
    """One of :func:`save_training_state`'s ``tensors`` files.

    Raises:
        CheckpointError: the file is missing or unreadable.
    """
    path = Path(state_dir) / name
    if not path.is_file():
        raise CheckpointError(f"{state_dir}: training state is missing {name}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable training state: {exc}") from None
