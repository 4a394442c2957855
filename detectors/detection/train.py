"""Training a detector on the VOC boxes of a data-set folder (:func:`train_detector`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from detectors.checkpoint import WEIGHTS_NAME
from detectors.detection.base import DetectorBackend, build_detector
from detectors.detection.data import detection_targets
from detectors.images import load_image_set
from detectors.training import Schedule, TrainResult, train_on_indices
from mnerqg_graph.environment import resolve_device
from mnerqg_graph.errors import DataError, check_counts
from mnerqg_graph.io import check_replaceable


def train_detector(
    data: str | Path,
    out: str | Path | None = None,
    backend: str | DetectorBackend = "torchvision_frcnn",
    backend_kwargs: Mapping[str, Any] | None = None,
    types: Sequence[str] | None = None,
    split: str = "train",
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    image_size: int = 128,
    max_steps: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    log: Callable[[str], None] | None = print,
    progress: bool = False,
) -> tuple[DetectorBackend, TrainResult]:
    """Train a detector on the VOC boxes of a data-set folder (class = the entity's type).

    Every tweet of the split with a readable image is a training image; an image without boxes
    teaches background. Images are resized to ``image_size`` and kept in memory.

    Args:
        data: the data-set folder (``train.txt``, ``images/``, ``boxes/``).
        out: the checkpoint folder to write at the end (None: do not save).
        backend: a registered backend name or an instance.
        backend_kwargs: the backend's options (besides ``types``).
        types: the entity types in label order; default: the packaged query file's types.
        split: the split to train on.
        epochs: passes over the images.
        batch_size: images per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        image_size: side the images are resized to before the backend sees them.
        max_steps: stop after this many steps (smoke runs).
        limit: use only the first ``limit`` tweets of the split.
        seed: seeds the initialisation and the batch order.
        device: ``auto``, ``cpu``, ``cuda``, ...
        log: a line per epoch and the summary go here (None: quiet).
        progress: a progress bar inside each epoch on stderr (steps, running loss, ETA; plain
            lines when stderr is not a terminal).

    Returns:
        The trained backend (evaluation mode) and what the training did.

    Raises:
        DataError: the folder or split is missing or malformed, or there is no usable image.
        ConfigError: bad options, or a box of a type not in ``types``.
    """
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.data.queries import load_queries

    check_counts(epochs=epochs, batch_size=batch_size, limit=limit, image_size=image_size)
    if out is not None:  # refused before the training, not after it
        check_replaceable(out, WEIGHTS_NAME)
    say = log or (lambda _msg: None)
    types = list(types) if types is not None else list(load_queries())
    dev = resolve_device(device)
    torch.manual_seed(seed)
    if isinstance(backend, str):
        detector = build_detector(backend, types=types, **dict(backend_kwargs or {}))
    else:
        detector = backend
    detector.to(dev)
    samples = load_split(data, split).samples
    if limit is not None:
        samples = samples[:limit]
    image_set = load_image_set(samples, image_size)
    for msg in image_set.skipped:
        say(f"warning: {msg} (image skipped)")
    if not len(image_set.samples):
        raise DataError(str(data), f"no readable image in the {split} split to train a detector")
    targets = detection_targets(image_set.samples, detector.types)
    n_boxes = sum(int(t["labels"].numel()) for t in targets)
    say(f"detector {detector.name}: {len(targets)} images, {n_boxes} boxes, {len(types)} types")
    params = [p for p in detector.parameters() if p.requires_grad]

    def loss(idx: torch.Tensor) -> torch.Tensor:
        images = image_set.batch(idx, dev)
        batch_targets = [{k: v.to(dev) for k, v in targets[int(i)].items()} for i in idx.tolist()]
        losses = detector.fit_step(images, batch_targets)
        return torch.stack(list(losses.values())).sum()

    result = train_on_indices(
        loss,
        params,
        len(targets),
        torch.Generator().manual_seed(seed),
        Schedule(epochs, batch_size, lr, weight_decay, max_steps),
        name="detector",
        clip=10.0,
        device=dev,
        say=say,
        progress=progress,
    )
    detector.eval()
    if out is not None:
        result.checkpoint = detector.save(out)
        say(f"detector saved to {out}")
    return detector, result


__all__ = ["train_detector"]
