"""Detector interface and registry: :class:`DetectorBackend`, :class:`Detections`, build, load.

A detector finds boxes of the entity types' visual classes in an image (class = the type of the
entity a gold box belongs to). Every backend is a :class:`DetectorBackend` (an ``nn.Module``):

``fit_step(images, targets) -> {loss name: scalar}``
    the losses of one batch in training mode (the caller back-propagates their sum);
``detect(images) -> list[Detections]``
    per image, boxes in normalised ``xyxy``, scores and type indices, best first;
``save(dir)`` / ``load(dir)``
    ``model.safetensors`` + ``config.json`` (``{"kind": "detector", "backend": NAME,
    "kwargs": {...}}``); never pickles. Loading a checkpoint written by another backend, or a
    checkpoint that is not a detector's, is a one-line :class:`CheckpointError`.

The backends register themselves in ``DETECTOR_REGISTRY`` when :mod:`detectors.detection` is
imported (which importing this module does first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detectors.checkpoint import load_checkpoint_weights, read_checkpoint_config, save_checkpoint
from mnerqg_graph.errors import CheckpointError, ConfigError
from mnerqg_graph.registry import Registry

#: ``config.json["kind"]`` of a detector checkpoint.
DETECTOR_KIND = "detector"
#: Version of the detector checkpoint layout.
CHECKPOINT_FORMAT = 1

#: A training target of one image: ``boxes [n, 4]`` normalised xyxy, ``labels [n]`` type indices.
Target = Mapping[str, Tensor]


@dataclass
class Detections:
    """The detections of one image, best first.

    Attributes:
        boxes: normalised ``xyxy`` boxes in ``[0, 1]``.
        scores: confidences in ``[0, 1]``.
        labels: indices into the detector's ``types`` (background excluded).

    Shapes:
        - boxes: ``[K, 4]``; scores: ``[K]``; labels: ``[K]`` int64.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        k = self.scores.shape[0]
        if self.boxes.shape != (k, 4) or self.labels.shape != (k,):
            raise ValueError(
                f"Detections: boxes {tuple(self.boxes.shape)}, scores {tuple(self.scores.shape)}, "
                f"labels {tuple(self.labels.shape)} do not fit [K, 4], [K], [K]"
            )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: torch.device | str) -> Detections:
        """The same detections on ``device``."""
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))


class DetectorBackend(nn.Module):
    """Base class of detector backends (see the module docstring for the contract).

    Subclasses set :attr:`name` (their registry name) and implement :meth:`fit_step`,
    :meth:`detect` and :meth:`config`; saving and loading are shared.

    Args:
        types: the entity types, in label order (label ``i`` is ``types[i]``).

    Shapes:
        - images: ``[B, 3, H, W]`` RGB in ``[0, 1]`` (or a list of ``[3, H_i, W_i]``).
        - targets[i]: ``boxes [n_i, 4]`` normalised xyxy, ``labels [n_i]`` int64 type indices.
    """

    name: ClassVar[str] = ""

    def __init__(self, types: Sequence[str]) -> None:
        super().__init__()
        if not types or len(set(types)) != len(types):
            raise ConfigError(f"detector types must be non-empty and distinct, got {list(types)}")
        self.types = list(types)

    def fit_step(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[Target]
    ) -> dict[str, Tensor]:
        """Named scalar losses of one batch, in training mode (the caller sums and steps)."""
        raise NotImplementedError

    def detect(self, images: Tensor | Sequence[Tensor]) -> list[Detections]:
        """Detections per image, in evaluation mode, without gradients."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-ready constructor keyword arguments that rebuild this backend (weights aside)."""
        raise NotImplementedError

    def save(self, out_dir: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``out_dir``, atomically.

        Args:
            out_dir: the checkpoint folder (replaced when it exists).

        Returns:
            ``out_dir``.
        """
        config = {
            "kind": DETECTOR_KIND,
            "format": CHECKPOINT_FORMAT,
            "backend": self.name,
            "kwargs": self.config(),
        }
        return save_checkpoint(self, config, out_dir)

    def load(self, ckpt_dir: str | Path) -> None:
        """Load the weights of a checkpoint written by :meth:`save` of the same backend.

        Args:
            ckpt_dir: the checkpoint folder.

        Raises:
            CheckpointError: missing files, not a detector checkpoint, a checkpoint of another
                backend (the message names the file and both backends), or weights that do not
                fit this backend's configuration.
        """
        config_path, config = read_checkpoint_config(ckpt_dir, DETECTOR_KIND)
        saved = config.get("backend")
        if saved != self.name:
            raise CheckpointError(
                f"{config_path}: checkpoint of detector backend {saved!r}, "
                f"cannot load it into backend {self.name!r}"
            )
        load_checkpoint_weights(self, ckpt_dir)


DETECTOR_REGISTRY: Registry[DetectorBackend] = Registry(
    "detector backend",
    DetectorBackend,
    doc="""Object-detector backends, by name.

    A registered builder takes keyword arguments only: ``types: list[str]`` (the entity types, in
    label order) and backend options, all JSON values with defaults; it returns a
    :class:`DetectorBackend` whose ``fit_step(images [B, 3, H, W] in [0, 1], targets)`` returns
    named scalar losses (targets: per image ``boxes [n, 4]`` normalised xyxy and ``labels [n]``
    type indices), whose ``detect(images)`` returns one :class:`Detections` per image (normalised
    xyxy boxes, scores, type indices, best first), and whose ``config()`` returns the keyword
    arguments that rebuild it. It must not download anything unless the user asked for it.
    """,
)


#: Build the detector backend registered under a name with its constructor arguments (``types``
#: among them), or return an instance as is: :meth:`~mnerqg_graph.registry.Registry.build`.
build_detector = DETECTOR_REGISTRY.build


def load_detector(ckpt_dir: str | Path, device: str | torch.device = "cpu") -> DetectorBackend:
    """Rebuild a detector from a checkpoint folder (its backend is read from ``config.json``).

    Args:
        ckpt_dir: a folder written by :meth:`DetectorBackend.save`.
        device: where to put the model.

    Returns:
        The backend in evaluation mode on ``device``.

    Raises:
        CheckpointError: missing files, not a detector checkpoint, unknown backend, bad weights.
    """
    config_path, config = read_checkpoint_config(ckpt_dir, DETECTOR_KIND)
    backend = config.get("backend")
    kwargs = config.get("kwargs")
    if not isinstance(backend, str) or not isinstance(kwargs, dict):
        raise CheckpointError(f"{config_path}: missing 'backend' or 'kwargs'")
    if backend not in DETECTOR_REGISTRY:
        raise CheckpointError(
            f"{config_path}: unknown detector backend {backend!r}; "
            f"known: {', '.join(DETECTOR_REGISTRY.names())}"
        )
    detector = build_detector(backend, **kwargs)
    detector.load(ckpt_dir)
    return detector.to(device).eval()


def as_image_list(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """A batch of images as a list of ``[3, H, W]`` tensors (what detection models take).

    Args:
        images: ``[B, 3, H, W]``, or a sequence of ``[3, H_i, W_i]``.

    Returns:
        The images, one tensor each.

    Raises:
        ValueError: an image is not 3-channel ``[3, H, W]``.
    """
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        return list(images.unbind(0))
    out = list(images)
    for img in out:
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"expected images [3, H, W], got {tuple(img.shape)}")
    return out


__all__ = [
    "CHECKPOINT_FORMAT",
    "DETECTOR_KIND",
    "DETECTOR_REGISTRY",
    "Detections",
    "DetectorBackend",
    "Target",
    "as_image_list",
    "build_detector",
    "load_detector",
]
