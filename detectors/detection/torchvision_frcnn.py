"""The ``torchvision_frcnn`` detector backend: torchvision Faster R-CNN with an FPN backbone.

``arch`` is ``mobilenet_v3_large_fpn`` (light) or ``resnet50_fpn``; the model is randomly
initialised or read from local weights files, never downloaded. Needs torchvision (the ``vision``
extra), imported only when the backend is built: without it, building is a one-line
:class:`~mnerqg_graph.errors.ConfigError` saying how to install it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detectors.detection.base import (
    DETECTOR_REGISTRY,
    Detections,
    DetectorBackend,
    Target,
    as_image_list,
)
from mnerqg_graph.encoders.image import load_state_dict_file, load_weights_into
from mnerqg_graph.errors import ConfigError

_FRCNN_ARCHS = ("mobilenet_v3_large_fpn", "resnet50_fpn")


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
        load_weights_into(body, trunk, weights, what=f"the {self.arch} trunk")

    def _load_detector(self, weights: str) -> None:
        state = dict(load_state_dict_file(weights))
        own = self.model.state_dict()
        for key in [k for k in own if k.startswith("roi_heads.box_predictor.")]:
            if key in state and state[key].shape != own[key].shape:
                state[key] = own[key]  # another number of classes: keep the initialisation
        load_weights_into(self.model, state, weights, what=f"Faster R-CNN {self.arch}")

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
        imgs = as_image_list(images)
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
        imgs = as_image_list(images)
        self.model.eval()
        outputs = self.model(imgs)
        dets = []
        for img, out in zip(imgs, outputs, strict=True):
            order = out["scores"].argsort(descending=True)
            boxes = (out["boxes"][order] / _pixel_scale(img)).clamp(0.0, 1.0)
            dets.append(Detections(boxes, out["scores"][order], out["labels"][order] - 1))
        return dets


__all__ = ["TorchvisionFasterRCNN"]
