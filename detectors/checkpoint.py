"""Checkpoint folders of the detectors package: ``model.safetensors`` + ``config.json``, no pickle.

The object detectors (:mod:`detectors.detection`) and the visual-grounding model
(:mod:`detectors.grounder`) save and load through these helpers. ``config.json`` always holds a
``"kind"`` (``"detector"``, ``"visual_grounder"``) so that loading a checkpoint of another kind is a
one-line :class:`~mnerqg_graph.errors.CheckpointError` naming the file and both kinds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from mnerqg_graph.encoders.image import load_state_dict_file, load_weights_into
from mnerqg_graph.errors import CheckpointError
from mnerqg_graph.io import (
    abandon_dir,
    atomic_write_text,
    read_json_object,
    replace_dir,
    temp_dir_beside,
)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_checkpoint(module: nn.Module, config: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``module``'s weights as safetensors and ``config`` as JSON into ``out_dir``.

    The folder is written beside ``out_dir`` and moved into place, so an interruption leaves the
    old checkpoint (or none), never half of one.

    Args:
        module: the model.
        config: JSON-ready description; must hold ``"kind"``.
        out_dir: the checkpoint folder.

    Returns:
        ``out_dir`` as a path.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = temp_dir_beside(out)
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"kind": str(config["kind"])})
        atomic_write_text(tmp / CONFIG_NAME, json.dumps(config, indent=1, sort_keys=True) + "\n")
        replace_dir(tmp, out, WEIGHTS_NAME)
    except BaseException as exc:  # a write error names the file of out that failed
        abandon_dir(tmp, out, exc)
        raise
    return out


def read_checkpoint_config(ckpt_dir: str | Path, kind: str) -> tuple[Path, dict[str, Any]]:
    """Read ``config.json`` of a checkpoint folder and check that it is of ``kind``.

    Args:
        ckpt_dir: the checkpoint folder.
        kind: the expected ``"kind"`` (``"detector"``, ``"visual_grounder"``).

    Returns:
        ``(path of config.json, its content)``.

    Raises:
        CheckpointError: the folder or a file is missing, the JSON is malformed, or the checkpoint
            is of another kind (the message names the file and both kinds).
    """
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: checkpoint folder does not exist")
    path = ckpt / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint is missing {CONFIG_NAME}")
    config = read_json_object(
        path,
        CheckpointError,
        unreadable="unreadable checkpoint config",
        not_object="checkpoint config must be a JSON object",
    )
    found = config.get("kind")
    if found != kind:
        what = (
            f"a {found!r} checkpoint"
            if isinstance(found, str)
            else "a checkpoint of another kind (no 'kind' field; an MNER-QG model checkpoint?)"
        )
        raise CheckpointError(f"{path}: {what}, not a {kind!r} checkpoint")
    return path, config


def load_checkpoint_weights(module: nn.Module, ckpt_dir: str | Path) -> None:
    """Load ``model.safetensors`` of a checkpoint folder into ``module`` (strict, one-line errors).

    Raises:
        CheckpointError: the file is missing or unreadable, or its keys/shapes do not fit.
    """
    path = Path(ckpt_dir) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{Path(ckpt_dir)}: checkpoint is missing {WEIGHTS_NAME}")
    state = load_state_dict_file(path)
    load_weights_into(module, state, path, what=type(module).__name__)


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "load_checkpoint_weights",
    "read_checkpoint_config",
    "save_checkpoint",
]
