"""Object detectors behind one interface, trained on the VOC boxes of a data-set folder.

A detector finds boxes of the entity types' visual classes in an image (class = the type of the
entity a gold box belongs to). Its boxes can replace the grid cells as image regions: see
:func:`detection_regions`, which feeds them to the ``detector_boxes`` region source of
:mod:`detectors.regions`.

Every backend is a :class:`DetectorBackend` (an ``nn.Module``):

``fit_step(images, targets) -> {loss name: scalar}``
    the losses of one batch in training mode (the caller back-propagates their sum);
``detect(images) -> list[Detections]``
    per image, boxes in normalised ``xyxy``, scores and type indices, best first;
``save(dir)`` / ``load(dir)``
    ``model.safetensors`` + ``config.json`` (``{"kind": "detector", "backend": NAME,
    "kwargs": {...}}``); never pickles. Loading a checkpoint written by another backend, or a
    checkpoint that is not a detector's, is a one-line :class:`CheckpointError`.

Registered backends (``DETECTOR_REGISTRY``):

``torchvision_frcnn``
    torchvision Faster R-CNN with an FPN backbone (``mobilenet_v3_large_fpn`` or
    ``resnet50_fpn``), randomly initialised or from local weights files; needs torchvision.
``detectron2``
    detectron2's GeneralizedRCNN (:mod:`detectors.detectron2_backend`); needs detectron2, built
    from source. Building it without detectron2 is a :class:`ConfigError` saying how to install it.

Command line::

    python -m detectors.detector train --data DIR --out CKPT [--epochs N ...]
    python -m detectors.detector detect --detector CKPT --data DIR [--split test] --out FILE.jsonl
    python -m detectors.detector evaluate --detector CKPT --data DIR [--split test] [--json]

``evaluate`` reports the box AP of each type at IoU 0.5 (all-point interpolated, as Pascal VOC
2010+), their mean (mAP@0.5), and the mean over IoU 0.5:0.95 (COCO's thresholds, same
interpolation) on a split's gold boxes (:func:`box_average_precision`).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from detectors.backbones import _load_into, load_state_dict_file
from detectors.regions import DetectorBoxRegions, RegionSet
from mnerqg_graph.data.types import Sample
from mnerqg_graph.errors import CheckpointError, ConfigError, DataError, MnerqgError
from mnerqg_graph.io import abandon_dir, atomic_write_text, replace_dir, temp_dir_beside
from mnerqg_graph.progress import Progress
from mnerqg_graph.registry import Registry

#: ``config.json["kind"]`` of a detector checkpoint.
DETECTOR_KIND = "detector"
#: Version of the detector checkpoint layout.
CHECKPOINT_FORMAT = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

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


def build_detector(name: str | DetectorBackend, **kwargs: Any) -> DetectorBackend:
    """Build the backend registered as ``name`` (or return an instance as is).

    Args:
        name: a name from ``DETECTOR_REGISTRY.names()``, or a :class:`DetectorBackend`.
        **kwargs: the backend's constructor arguments (``types`` among them).

    Returns:
        The backend.

    Raises:
        ConfigError: unknown name, a missing optional dependency, or an invalid option.
    """
    return DETECTOR_REGISTRY.build(name, **kwargs)


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


# --------------------------------------------------------------------------------------------------
# Checkpoint helpers (shared with the visual-grounding model)
# --------------------------------------------------------------------------------------------------


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
        replace_dir(tmp, out)
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
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint config: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: checkpoint config must be a JSON object")
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
    _load_into(module, state, path, what=type(module).__name__)


# --------------------------------------------------------------------------------------------------
# torchvision Faster R-CNN
# --------------------------------------------------------------------------------------------------

_FRCNN_ARCHS = ("mobilenet_v3_large_fpn", "resnet50_fpn")


def _as_image_list(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        return list(images.unbind(0))
    out = list(images)
    for img in out:
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"expected images [3, H, W], got {tuple(img.shape)}")
    return out


def _pixel_scale(image: Tensor) -> Tensor:
    """``[W, H, W, H]`` of a ``[3, H, W]`` image, as float on its device."""
    h, w = int(image.shape[1]), int(image.shape[2])
    return torch.tensor([w, h, w, h], dtype=torch.float32, device=image.device)


@DETECTOR_REGISTRY.register("torchvision_frcnn")
class TorchvisionFasterRCNN(DetectorBackend):
    """torchvision Faster R-CNN with an FPN backbone; one class per entity type + background.

    Never downloads: torchvision is asked for ``weights=None, weights_backbone=None`` and weights
    come from local files only. Without weights every layer (BatchNorm included) trains.

    Args:
        types: the entity types, in label order.
        arch: ``"mobilenet_v3_large_fpn"`` (light) or ``"resnet50_fpn"``.
        min_size: the shorter image side torchvision resizes to (small values for tiny images and
            CPU tests).
        max_size: the longest image side after resizing.
        weights: a local file with a whole Faster R-CNN state dict (e.g. torchvision's COCO
            ``fasterrcnn_*.pth``); box-predictor weights whose shape does not fit the number of
            types keep their initialisation (transfer learning).
        weights_backbone: a local file with the classification trunk's state dict (torchvision's
            ``mobilenet_v3_large-*.pth`` / ``resnet50-*.pth``); its classifier keys are ignored.
        trainable_backbone_layers: trunk stages that train (torchvision's meaning); None: all
            without weights, 3 with them.
        score_thresh: detections under this score are dropped.
        nms_thresh: per-class NMS IoU threshold of the box head.
        detections_per_img: at most this many detections per image.
        rpn_pre_nms_top_n: proposals per FPN level kept before NMS (training and testing).
        rpn_post_nms_top_n: proposals kept after NMS.
        box_batch_size_per_image: sampled RoIs per image for the box-head loss.

    Shapes:
        - images: ``[B, 3, H, W]`` in ``[0, 1]`` (torchvision normalises them itself).
        - detect output: per image ``Detections(boxes [K, 4], scores [K], labels [K])``.
    """

    name = "torchvision_frcnn"

    def __init__(
        self,
        types: Sequence[str] = ("PER", "LOC", "ORG", "OTHER"),
        arch: str = "mobilenet_v3_large_fpn",
        min_size: int = 320,
        max_size: int = 640,
        weights: str | None = None,
        weights_backbone: str | None = None,
        trainable_backbone_layers: int | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        rpn_pre_nms_top_n: int = 1000,
        rpn_post_nms_top_n: int = 1000,
        box_batch_size_per_image: int = 512,
    ) -> None:
        super().__init__(types)
        try:
            from torchvision.models import detection
        except ImportError:
            raise ConfigError(
                "detector backend 'torchvision_frcnn' needs torchvision: "
                "pip install 'mnerqg-graph[vision]'"
            ) from None
        if arch not in _FRCNN_ARCHS:
            raise ConfigError(
                f"torchvision_frcnn arch must be one of {', '.join(_FRCNN_ARCHS)}, got {arch!r}"
            )
        if min_size < 16 or max_size < min_size:
            raise ConfigError(f"need 16 <= min_size <= max_size, got {min_size}, {max_size}")
        self.arch = arch
        self.options: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "trainable_backbone_layers": trainable_backbone_layers,
            "score_thresh": score_thresh,
            "nms_thresh": nms_thresh,
            "detections_per_img": detections_per_img,
            "rpn_pre_nms_top_n": rpn_pre_nms_top_n,
            "rpn_post_nms_top_n": rpn_post_nms_top_n,
            "box_batch_size_per_image": box_batch_size_per_image,
        }
        builder = getattr(detection, f"fasterrcnn_{arch}")
        kwargs: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "box_score_thresh": score_thresh,
            "box_nms_thresh": nms_thresh,
            "box_detections_per_img": detections_per_img,
            "rpn_pre_nms_top_n_train": rpn_pre_nms_top_n,
            "rpn_pre_nms_top_n_test": rpn_pre_nms_top_n,
            "rpn_post_nms_top_n_train": rpn_post_nms_top_n,
            "rpn_post_nms_top_n_test": rpn_post_nms_top_n,
            "box_batch_size_per_image": box_batch_size_per_image,
        }
        if trainable_backbone_layers is not None:
            kwargs["trainable_backbone_layers"] = trainable_backbone_layers
        self.model: nn.Module = builder(
            weights=None, weights_backbone=None, num_classes=len(self.types) + 1, **kwargs
        )
        if weights_backbone is not None:
            self._load_backbone(weights_backbone)
        if weights is not None:
            self._load_detector(weights)

    def _load_backbone(self, weights: str) -> None:
        state = load_state_dict_file(weights)
        prefix = "features." if self.arch.startswith("mobilenet") else ""
        trunk = {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix) and not k.startswith(("fc.", "classifier."))
        }
        body = self.model.get_submodule("backbone.body")
        if self.arch.startswith("mobilenet"):  # body is features[:n]; keys "0.", "1.", ...
            own = set(body.state_dict())
            trunk = {k: v for k, v in trunk.items() if k in own}
        _load_into(body, trunk, weights, what=f"the {self.arch} trunk")

    def _load_detector(self, weights: str) -> None:
        state = dict(load_state_dict_file(weights))
        own = self.model.state_dict()
        for key in [k for k in own if k.startswith("roi_heads.box_predictor.")]:
            if key in state and state[key].shape != own[key].shape:
                state[key] = own[key]  # another number of classes: keep the initialisation
        _load_into(self.model, state, weights, what=f"Faster R-CNN {self.arch}")

    def config(self) -> dict[str, Any]:
        """Constructor arguments (weights files are not recorded: the checkpoint holds them)."""
        return {"types": list(self.types), "arch": self.arch, **self.options}

    def fit_step(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[Target]
    ) -> dict[str, Tensor]:
        """The four torchvision losses (classifier, box_reg, objectness, rpn_box_reg) of a batch.

        Args:
            images: RGB in ``[0, 1]``.
            targets: per image, ``boxes`` normalised xyxy and ``labels`` type indices.

        Returns:
            ``{"loss_classifier": ..., "loss_box_reg": ..., "loss_objectness": ...,
            "loss_rpn_box_reg": ...}``, scalars with gradients.

        Shapes:
            - images: ``[B, 3, H, W]``; targets[i]: ``boxes [n_i, 4]``, ``labels [n_i]``.
        """
        imgs = _as_image_list(images)
        if len(imgs) != len(targets):
            raise ValueError(f"{len(imgs)} images but {len(targets)} targets")
        tv_targets = []
        for img, tgt in zip(imgs, targets, strict=True):
            boxes = tgt["boxes"].to(img.device, torch.float32).reshape(-1, 4)
            labels = tgt["labels"].to(img.device, torch.int64).reshape(-1)
            if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.types)):
                raise ValueError(f"labels must be in [0, {len(self.types)}), got {labels.tolist()}")
            tv_targets.append({"boxes": boxes * _pixel_scale(img), "labels": labels + 1})
        self.model.train()
        losses = self.model(imgs, tv_targets)
        return {str(k): v for k, v in losses.items()}

    @torch.no_grad()
    def detect(self, images: Tensor | Sequence[Tensor]) -> list[Detections]:
        """Detections per image (see the class docstring), best first."""
        imgs = _as_image_list(images)
        self.model.eval()
        outputs = self.model(imgs)
        dets = []
        for img, out in zip(imgs, outputs, strict=True):
            order = out["scores"].argsort(descending=True)
            boxes = (out["boxes"][order] / _pixel_scale(img)).clamp(0.0, 1.0)
            dets.append(Detections(boxes, out["scores"][order], out["labels"][order] - 1))
        return dets


@DETECTOR_REGISTRY.register("detectron2")
def _build_detectron2(**kwargs: Any) -> DetectorBackend:
    """Build the detectron2 backend (its module imports detectron2 only when built)."""
    from detectors.detectron2_backend import Detectron2Backend

    return Detectron2Backend(**kwargs)


# --------------------------------------------------------------------------------------------------
# Detections as regions
# --------------------------------------------------------------------------------------------------


def detection_regions(
    features: Sequence[Tensor],
    detections: Sequence[Detections],
    image_size: int,
    max_regions: int = 16,
    min_score: float = 0.0,
    **kwargs: Any,
) -> list[RegionSet]:
    """Region sets of the ``detector_boxes`` source from detections, best-scoring boxes first.

    Args:
        features: the image backbone's maps, coarsest first, ``[B, C_k, h_k, w_k]``.
        detections: one :class:`Detections` per image of the batch.
        image_size: the (square) input side in pixels.
        max_regions: region slots per scale and image.
        min_score: detections under this score are not used.
        **kwargs: further options of :class:`detectors.regions.DetectorBoxRegions`.

    Returns:
        One :class:`RegionSet` per scale, coarsest first (see ``DetectorBoxRegions``).

    Shapes:
        - output[k].features: ``[B, max_regions, C_k]``; ``.boxes`` ``[B, max_regions, 4]``.
    """
    boxes = []
    for det in detections:
        keep = det.scores >= min_score
        order = det.scores[keep].argsort(descending=True)
        boxes.append(det.boxes[keep][order])
    source = DetectorBoxRegions(scales=len(features), max_regions=max_regions, **kwargs)
    return source.regions(features, image_size, boxes)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageSet:
    """The images of some samples, resized and kept in memory as bytes.

    Attributes:
        images: the images, uint8 RGB.
        samples: the sample of each image (tweets whose image could not be read are left out).
        skipped: ``"path: reason"`` of the images that could not be read.

    Shapes:
        - images: ``[N, 3, S, S]`` uint8.
    """

    images: Tensor
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)

    def batch(self, index: Tensor | Sequence[int], device: torch.device | str) -> Tensor:
        """Images ``index`` as float RGB in ``[0, 1]`` on ``device``, ``[len(index), 3, S, S]``."""
        return self.images[torch.as_tensor(index, dtype=torch.long)].to(device).float().div_(255.0)


def load_image_set(samples: Sequence[Sample], size: int) -> ImageSet:
    """Load the images of the samples that have one, resized to ``size`` x ``size``.

    An image that cannot be decoded (e.g. a truncated file whose header was fine) is skipped and
    listed in ``skipped``, never silently.

    Args:
        samples: samples; those with ``image_path is None`` are ignored.
        size: the side in pixels.

    Returns:
        The image set.
    """
    from mnerqg_graph.data.images import load_image

    images, kept, skipped = [], [], []
    for sample in samples:
        if sample.image_path is None:
            continue
        try:
            img = load_image(sample.image_path, size)
        except DataError as err:
            skipped.append(str(err))
            continue
        images.append(img.mul(255.0).round_().to(torch.uint8))
        kept.append(sample)
    stacked = torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return ImageSet(stacked, kept, skipped)


def normalised_boxes(sample: Sample, entity_type: str) -> Tensor:
    """The boxes of ``entity_type``'s entities in ``sample``, normalised by its image size.

    Boxes are clipped to the image; those that become empty are left out.

    Shapes:
        - output: ``[n, 4]`` normalised xyxy (``n`` may be 0).
    """
    if sample.image_size is None:
        return torch.zeros(0, 4)
    w, h = sample.image_size
    rows = []
    for b in sample.boxes_of_type(entity_type):
        box = [
            min(max(b.xmin / w, 0.0), 1.0),
            min(max(b.ymin / h, 0.0), 1.0),
            min(max(b.xmax / w, 0.0), 1.0),
            min(max(b.ymax / h, 0.0), 1.0),
        ]
        if box[2] > box[0] and box[3] > box[1]:
            rows.append(box)
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def detection_targets(samples: Sequence[Sample], types: Sequence[str]) -> list[dict[str, Tensor]]:
    """Per sample, ``{"boxes": [n, 4] normalised xyxy, "labels": [n] type indices}``.

    Raises:
        ConfigError: a box belongs to an entity whose type is not in ``types``.
    """
    index = {t: i for i, t in enumerate(types)}
    out = []
    for sample in samples:
        unknown = {span.type for span in sample.boxes if span.type not in index}
        if unknown:
            raise ConfigError(
                f"tweet IMGID:{sample.tweet.id} has boxes of type(s) {', '.join(sorted(unknown))} "
                f"that the detector does not know (types: {', '.join(types)})"
            )
        boxes, labels = [], []
        for t, i in index.items():
            b = normalised_boxes(sample, t)
            boxes.append(b)
            labels.append(torch.full((b.shape[0],), i, dtype=torch.int64))
        out.append({"boxes": torch.cat(boxes), "labels": torch.cat(labels)})
    return out


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        history: mean total loss per epoch.
        steps: optimiser steps taken.
        seconds: wall-clock time of the training loop.
        checkpoint: where the model was saved (None when not saved).
    """

    history: list[float]
    steps: int
    seconds: float
    checkpoint: Path | None = None


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names as given."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    steps = 0
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(targets), generator=gen)
        total, count = 0.0, 0
        bar = Progress(
            math.ceil(len(order) / batch_size),
            f"detector epoch {epoch + 1}/{epochs}",
            enabled=progress,
        )
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            images = image_set.batch(idx, dev)
            batch_targets = [
                {k: v.to(dev) for k, v in targets[int(i)].items()} for i in idx.tolist()
            ]
            losses = detector.fit_step(images, batch_targets)
            loss = torch.stack(list(losses.values())).sum()
            if not torch.isfinite(loss):
                from mnerqg_graph.errors import TrainingError

                raise TrainingError(f"detector loss became {loss.item()} at step {steps}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            steps += 1
            bar.update(loss=functools.partial(float, total / count))
            if max_steps is not None and steps >= max_steps:
                break
        bar.close()
        history.append(total / max(count, 1))
        say(f"epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}")
        if max_steps is not None and steps >= max_steps:
            break
    result = TrainResult(history, steps, time.perf_counter() - started)
    detector.eval()
    if out is not None:
        result.checkpoint = detector.save(out)
        say(f"detector saved to {out}")
    return detector, result


def detect_split(
    detector: DetectorBackend,
    data: str | Path,
    split: str = "test",
    image_size: int = 128,
    batch_size: int = 16,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Detect boxes in every image of a split; one JSON-ready record per tweet with an image.

    Args:
        detector: the detector (on its device).
        data: the data-set folder.
        split: the split.
        image_size: side the images are resized to before detection.
        batch_size: images per forward pass.
        limit: only the first ``limit`` tweets.

    Returns:
        ``{"id", "image", "width", "height", "detections": [{"type", "score", "box"}]}`` records,
        boxes in pixels of the original image (xyxy).
    """
    from mnerqg_graph.data.dataset import load_split

    samples = load_split(data, split).samples
    if limit is not None:
        samples = samples[:limit]
    image_set = load_image_set(samples, image_size)
    dev = next(detector.parameters()).device
    records = []
    for start in range(0, len(image_set.samples), batch_size):
        idx = list(range(start, min(start + batch_size, len(image_set.samples))))
        for i, det in zip(idx, detector.detect(image_set.batch(idx, dev)), strict=True):
            sample = image_set.samples[i]
            assert sample.image_size is not None and sample.image_path is not None
            w, h = sample.image_size
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            boxes = (det.boxes.cpu() * scale).tolist()
            records.append(
                {
                    "id": sample.tweet.id,
                    "image": sample.image_path.name,
                    "width": w,
                    "height": h,
                    "detections": [
                        {
                            "type": detector.types[int(lab)],
                            "score": round(float(s), 5),
                            "box": [round(float(v), 2) for v in box],
                        }
                        for box, s, lab in zip(
                            boxes, det.scores.tolist(), det.labels.tolist(), strict=True
                        )
                    ],
                }
            )
    return records


def read_detections(path: str | Path, types: Sequence[str]) -> dict[str, Detections]:
    """Read the JSON lines of :func:`detect_split` back as normalised :class:`Detections`.

    Args:
        path: the ``.jsonl`` file.
        types: the type order of the labels.

    Returns:
        ``{tweet id: Detections}``.

    Raises:
        DataError: a malformed line or an unknown type (names the file and line).
    """
    index = {t: i for i, t in enumerate(types)}
    out: dict[str, Detections] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                w, h = float(rec["width"]), float(rec["height"])
                dets = rec["detections"]
                boxes = [
                    [d["box"][0] / w, d["box"][1] / h, d["box"][2] / w, d["box"][3] / h]
                    for d in dets
                ]
                labels = [index[d["type"]] for d in dets]
                scores = [float(d["score"]) for d in dets]
                out[str(rec["id"])] = Detections(
                    torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4).clamp(0, 1),
                    torch.tensor(scores, dtype=torch.float32),
                    torch.tensor(labels, dtype=torch.int64),
                )
            except (json.JSONDecodeError, KeyError, TypeError, IndexError, ZeroDivisionError) as e:
                raise DataError(
                    str(path), f"malformed detection record ({e!r})", line=lineno
                ) from None
    return out


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def _average_precision(
    detections: Sequence[Detections], targets: Sequence[Target], label: int, iou: float
) -> float:
    """All-point interpolated AP of one class at one IoU threshold (nan: no gold box)."""
    from torchvision.ops import box_iou

    n_gold = sum(int((t["labels"] == label).sum()) for t in targets)
    if n_gold == 0:
        return math.nan
    scores, hits = [], []
    for det, tgt in zip(detections, targets, strict=True):
        sel = det.labels == label
        boxes, sc = det.boxes[sel], det.scores[sel]
        gold = tgt["boxes"][tgt["labels"] == label]
        order = sc.argsort(descending=True)
        boxes, sc = boxes[order], sc[order]
        taken = torch.zeros(gold.shape[0], dtype=torch.bool)
        overlaps = box_iou(boxes, gold) if gold.numel() and boxes.numel() else None
        for i in range(boxes.shape[0]):  # greedy matching, best score first (VOC)
            hit = False
            if overlaps is not None:
                o = overlaps[i].masked_fill(taken, -1.0)
                best, j = o.max(0)
                if float(best) >= iou:
                    taken[j] = True
                    hit = True
            hits.append(hit)
        scores.append(sc)
    if not hits:
        return 0.0
    order = torch.cat(scores).argsort(descending=True)
    tp = torch.tensor(hits, dtype=torch.float64)[order]
    ctp, cfp = tp.cumsum(0), (1 - tp).cumsum(0)
    recall = ctp / n_gold
    precision = ctp / (ctp + cfp)
    # precision envelope (non-increasing from the right), then area under the step curve
    envelope = precision.flip(0).cummax(0).values.flip(0)
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - prev) * envelope).sum())


def box_average_precision(
    detections: Sequence[Detections], targets: Sequence[Target], types: Sequence[str]
) -> dict[str, float]:
    """Box AP of detections against gold boxes: per type at IoU 0.5, mAP@0.5, mAP@0.5:0.95.

    Args:
        detections: per image.
        targets: per image, ``boxes [n, 4]`` and ``labels [n]`` (as :func:`detection_targets`).
        types: the type of each label.

    Returns:
        ``{"AP50_<type>": ..., "mAP50": ..., "mAP50_95": ...}``; a type without gold boxes is
        left out of the means (its AP is nan).
    """
    out: dict[str, float] = {}
    per_iou: dict[float, list[float]] = {}
    for iou in [0.5 + 0.05 * i for i in range(10)]:
        aps = [_average_precision(detections, targets, k, iou) for k in range(len(types))]
        per_iou[iou] = [a for a in aps if not math.isnan(a)]
        if iou == 0.5:
            out.update({f"AP50_{t}": a for t, a in zip(types, aps, strict=True)})
    out["mAP50"] = sum(per_iou[0.5]) / len(per_iou[0.5]) if per_iou[0.5] else math.nan
    means = [sum(v) / len(v) for v in per_iou.values() if v]
    out["mAP50_95"] = sum(means) / len(means) if means else math.nan
    return out


def evaluate_split(
    detector: DetectorBackend,
    data: str | Path,
    split: str = "test",
    image_size: int = 128,
    batch_size: int = 16,
    limit: int | None = None,
) -> dict[str, float]:
    """:func:`box_average_precision` of a detector on a split's images and gold boxes.

    Every tweet with a readable image counts (an image without gold boxes contributes its false
    positives); ``images`` is added to the result.
    """
    from mnerqg_graph.data.dataset import load_split

    samples = load_split(data, split).samples
    if limit is not None:
        samples = samples[:limit]
    image_set = load_image_set(samples, image_size)
    targets = detection_targets(image_set.samples, detector.types)
    dev = next(detector.parameters()).device
    dets: list[Detections] = []
    for start in range(0, len(image_set.samples), batch_size):
        idx = list(range(start, min(start + batch_size, len(image_set.samples))))
        dets += [d.to("cpu") for d in detector.detect(image_set.batch(idx, dev))]
    result = box_average_precision(dets, targets, detector.types)
    result["images"] = float(len(dets))
    return result


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

PROG = "python -m detectors.detector"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m detectors.detector {train,detect,evaluate}``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train an object detector on a data set's VOC boxes, or run it on a split.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a detector (class = entity type)")
    train.add_argument("--data", required=True, type=Path, metavar="DIR", help="data-set folder")
    train.add_argument("--out", required=True, type=Path, metavar="DIR", help="checkpoint folder")
    train.add_argument(
        "--backend", default="torchvision_frcnn", help="detector backend (default %(default)s)"
    )
    train.add_argument(
        "--arch",
        default=None,
        help="torchvision_frcnn: mobilenet_v3_large_fpn (default) or resnet50_fpn",
    )
    train.add_argument(
        "--weights", default=None, metavar="FILE", help="local file: whole-detector initial weights"
    )
    train.add_argument(
        "--weights-backbone",
        default=None,
        metavar="FILE",
        help="local file: classification-trunk initial weights",
    )
    train.add_argument(
        "--min-size",
        type=int,
        default=None,
        metavar="PX",
        help="shorter side the backend resizes images to",
    )
    train.add_argument(
        "--max-size", type=int, default=None, metavar="PX", help="longest side after resizing"
    )
    train.add_argument(
        "--backend-kwargs",
        default=None,
        metavar="JSON",
        help="more backend options as a JSON object, e.g. torchvision_frcnn's "
        '\'{"rpn_post_nms_top_n": 100, "box_batch_size_per_image": 64}\' (fewer proposals and '
        "sampled regions: much cheaper on CPU for images with few boxes)",
    )
    train.add_argument(
        "--types",
        default=None,
        help="comma-separated entity types (default: the packaged queries' types)",
    )
    train.add_argument("--split", default="train")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument("--image-size", type=int, default=128, metavar="PX")
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument(
        "--limit", type=int, default=None, metavar="N", help="first N tweets of the split only"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument(
        "--no-progress", action="store_true", help="no progress bar inside the epochs"
    )
    detect = sub.add_parser("detect", help="detect boxes in a split, write JSON lines")
    detect.add_argument("--detector", required=True, type=Path, metavar="CKPT")
    detect.add_argument("--data", required=True, type=Path, metavar="DIR")
    detect.add_argument("--split", default="test")
    detect.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help="output .jsonl (one record per tweet with an image)",
    )
    detect.add_argument("--image-size", type=int, default=128, metavar="PX")
    detect.add_argument("--limit", type=int, default=None, metavar="N")
    detect.add_argument("--device", default="auto")
    evaluate = sub.add_parser("evaluate", help="box AP (per type @0.5, mAP@0.5, @0.5:0.95)")
    evaluate.add_argument("--detector", required=True, type=Path, metavar="CKPT")
    evaluate.add_argument("--data", required=True, type=Path, metavar="DIR")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--image-size", type=int, default=128, metavar="PX")
    evaluate.add_argument("--limit", type=int, default=None, metavar="N")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _say(message: str) -> None:
    """A line on stdout, flushed (a log file sees each epoch as it ends)."""
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m detectors.detector``; user errors are raised as :class:`MnerqgError`.

    Args:
        argv: the arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit code (0).
    """
    args = build_parser().parse_args(argv)
    if args.command == "train":
        kwargs: dict[str, Any] = {}
        if args.backend_kwargs is not None:
            try:
                kwargs = json.loads(args.backend_kwargs)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--backend-kwargs is not JSON: {exc}") from None
            if not isinstance(kwargs, dict):
                raise ConfigError("--backend-kwargs must be a JSON object")
        for key in ("arch", "weights", "weights_backbone", "min_size", "max_size"):
            if getattr(args, key) is not None:
                kwargs[key] = getattr(args, key)
        types = [t.strip() for t in args.types.split(",")] if args.types else None
        _, result = train_detector(
            args.data,
            args.out,
            backend=args.backend,
            backend_kwargs=kwargs,
            types=types,
            split=args.split,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            image_size=args.image_size,
            max_steps=args.max_steps,
            limit=args.limit,
            seed=args.seed,
            device=args.device,
            log=_say,
            progress=not args.no_progress,
        )
        print(
            f"trained {result.steps} steps in {result.seconds:.1f} s; final loss "
            f"{result.history[-1] if result.history else math.nan:.4f}"
        )
        return 0
    detector = load_detector(args.detector, resolve_device(args.device))
    if args.command == "evaluate":
        scores = evaluate_split(detector, args.data, args.split, args.image_size, limit=args.limit)
        if args.json:
            print(json.dumps(scores, sort_keys=True))
        else:
            print(
                "  ".join(
                    f"{k}={v:.4f}" if k != "images" else f"{k}={v:.0f}" for k, v in scores.items()
                )
            )
        return 0
    records = detect_split(detector, args.data, args.split, args.image_size, limit=args.limit)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(args.out, text)
    n = sum(len(r["detections"]) for r in records)
    print(f"{n} detections in {len(records)} images written to {args.out}")
    return 0


def run_main(
    main_fn: Callable[[list[str] | None], int], prog: str, argv: list[str] | None = None
) -> int:
    """Run a command's ``main`` as a script: a user error prints one line and exits with 2.

    Args:
        main_fn: the command's ``main(argv) -> int``.
        prog: the program name for the error line.
        argv: the arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit code.
    """
    try:
        return main_fn(argv)
    except MnerqgError as exc:
        print(f"{prog}: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return 130


__all__ = [
    "DETECTOR_REGISTRY",
    "Detections",
    "box_average_precision",
    "evaluate_split",
    "DetectorBackend",
    "ImageSet",
    "TorchvisionFasterRCNN",
    "TrainResult",
    "build_detector",
    "detect_split",
    "detection_regions",
    "detection_targets",
    "load_checkpoint_weights",
    "load_detector",
    "load_image_set",
    "normalised_boxes",
    "read_checkpoint_config",
    "read_detections",
    "resolve_device",
    "save_checkpoint",
    "train_detector",
]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_main(main, PROG))
