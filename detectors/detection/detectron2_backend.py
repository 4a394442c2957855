"""The ``detectron2`` detector backend: detectron2's GeneralizedRCNN as a ``DetectorBackend``.

detectron2 is optional and not on PyPI; it is imported only when this backend is built. Without it,
building the backend raises a one-line :class:`~mnerqg_graph.errors.ConfigError` that says how to
install it::

    pip install --no-build-isolation "git+https://github.com/facebookresearch/detectron2.git"

The model is built from a detectron2 config file (a model-zoo name such as
``"COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"`` or a local ``.yaml``) with
``MODEL.ROI_HEADS.NUM_CLASSES`` set to the number of entity types and ``MODEL.WEIGHTS`` empty: it
never downloads. Images are resized the way detectron2's ``DefaultPredictor`` does (shorter side to
``min_size``, longer side at most ``max_size``) and given to the model as 0-255 tensors in the
config's ``INPUT.FORMAT`` channel order; detections come back in the input image's coordinates
(the model's post-processing rescales them) and are normalised here. Training calls the model in
training mode inside a detectron2 ``EventStorage`` (its heads log statistics there).

Initial weights are read from local files as state dicts (``.safetensors`` or a ``torch.save``-d
``.pth``), never unpickled; convert a model-zoo ``.pkl`` once with detectron2's own tools, e.g.
``DetectionCheckpointer(model).load(pkl)`` followed by ``torch.save(model.state_dict(), pth)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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

#: The one-line install instruction shown when detectron2 is missing.
INSTALL_HINT = (
    "detector backend 'detectron2' needs detectron2, which is not on PyPI; build it from source "
    "against the installed torch: pip install --no-build-isolation "
    "'git+https://github.com/facebookresearch/detectron2.git' (see README, "
    "'Image regions, visual grounding and weak labels')"
)


def detectron2_available() -> bool:
    """Whether detectron2 can be imported."""
    import importlib.util

    return importlib.util.find_spec("detectron2") is not None


@DETECTOR_REGISTRY.register("detectron2")
class Detectron2Backend(DetectorBackend):
    """detectron2 GeneralizedRCNN (Faster R-CNN by default) over the entity types.

    Args:
        types: the entity types, in label order.
        config_file: a detectron2 model-zoo config name or a local ``.yaml`` file.
        min_size: the shorter side images are resized to (``INPUT.MIN_SIZE_TEST``).
        max_size: the longest side after resizing (``INPUT.MAX_SIZE_TEST``).
        weights: a local state-dict file (``.safetensors`` / ``.pth``); box-predictor weights whose
            shape does not fit the number of types keep their initialisation.
        score_thresh: ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``.
        nms_thresh: ``MODEL.ROI_HEADS.NMS_THRESH_TEST``.
        detections_per_img: ``TEST.DETECTIONS_PER_IMAGE``.
        opts: further ``[KEY, VALUE, ...]`` config overrides (``cfg.merge_from_list``).

    Shapes:
        - images: ``[B, 3, H, W]`` RGB in ``[0, 1]``.
        - detect output: per image ``Detections(boxes [K, 4], scores [K], labels [K])``.

    Raises:
        ConfigError: detectron2 is not installed (with the install command), or a bad option.
    """

    name = "detectron2"

    def __init__(
        self,
        types: Sequence[str] = ("PER", "LOC", "ORG", "OTHER"),
        config_file: str = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
        min_size: int = 320,
        max_size: int = 640,
        weights: str | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        opts: Sequence[Any] = (),
    ) -> None:
        super().__init__(types)
        try:
            from detectron2 import model_zoo
            from detectron2.config import get_cfg
            from detectron2.modeling import build_model
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        if min_size < 16 or max_size < min_size:
            raise ConfigError(f"need 16 <= min_size <= max_size, got {min_size}, {max_size}")
        if len(opts) % 2:
            raise ConfigError("detectron2 opts must be KEY VALUE pairs")
        cfg = get_cfg()
        try:
            if Path(config_file).is_file():
                cfg.merge_from_file(config_file)
            else:
                cfg.merge_from_file(model_zoo.get_config_file(config_file))
            cfg.merge_from_list(list(opts))
        except (OSError, KeyError, ValueError, AssertionError, RuntimeError) as exc:
            raise ConfigError(f"detectron2 config {config_file!r}: {exc}") from None
        cfg.MODEL.WEIGHTS = ""
        cfg.MODEL.DEVICE = "cpu"  # moved with .to(); the model follows its parameters
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(self.types)
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_thresh
        cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = nms_thresh
        cfg.TEST.DETECTIONS_PER_IMAGE = detections_per_img
        cfg.INPUT.MIN_SIZE_TEST = min_size
        cfg.INPUT.MAX_SIZE_TEST = max_size
        self.input_format = str(cfg.INPUT.FORMAT)
        self.options: dict[str, Any] = {
            "config_file": config_file,
            "min_size": min_size,
            "max_size": max_size,
            "score_thresh": score_thresh,
            "nms_thresh": nms_thresh,
            "detections_per_img": detections_per_img,
            "opts": list(opts),
        }
        self.model: nn.Module = build_model(cfg)
        if weights is not None:
            state = dict(load_state_dict_file(weights))
            own = self.model.state_dict()
            for key in [k for k in own if k.startswith("roi_heads.box_predictor.")]:
                if key in state and state[key].shape != own[key].shape:
                    state[key] = own[key]
            load_weights_into(self.model, state, weights, what=f"detectron2 {config_file}")

    def config(self) -> dict[str, Any]:
        """Constructor arguments (the weights file is not recorded: the checkpoint holds it)."""
        return {"types": list(self.types), **self.options}

    def _resize(self, image: Tensor) -> tuple[Tensor, float]:
        """Resize like ``ResizeShortestEdge``; returns the model input (0-255) and the scale."""
        h, w = int(image.shape[1]), int(image.shape[2])
        scale = self.options["min_size"] / min(h, w)
        if max(h, w) * scale > self.options["max_size"]:
            scale = self.options["max_size"] / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)
        x = resized[0].clamp(0, 1) * 255.0
        if self.input_format == "BGR":
            x = x.flip(0)
        return x, scale

    def fit_step(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[Target]
    ) -> dict[str, Tensor]:
        """detectron2's losses (RPN and box head) of a batch.

        Shapes:
            - images: ``[B, 3, H, W]``; targets[i]: ``boxes [n_i, 4]`` normalised, ``labels [n_i]``.
        """
        from detectron2.structures import Boxes, Instances
        from detectron2.utils.events import EventStorage

        imgs = as_image_list(images)
        if len(imgs) != len(targets):
            raise ValueError(f"{len(imgs)} images but {len(targets)} targets")
        inputs = []
        for img, tgt in zip(imgs, targets, strict=True):
            x, _ = self._resize(img)
            nh, nw = int(x.shape[1]), int(x.shape[2])
            scale = torch.tensor([nw, nh, nw, nh], dtype=torch.float32, device=img.device)
            inst = Instances((nh, nw))
            inst.gt_boxes = Boxes(tgt["boxes"].to(img.device, torch.float32).reshape(-1, 4) * scale)
            inst.gt_classes = tgt["labels"].to(img.device, torch.int64).reshape(-1)
            inputs.append({"image": x, "instances": inst, "height": nh, "width": nw})
        self.model.train()
        with EventStorage():
            losses = self.model(inputs)
        return {str(k): v for k, v in losses.items()}

    @torch.no_grad()
    def detect(self, images: Tensor | Sequence[Tensor]) -> list[Detections]:
        """Detections per image, best first (boxes normalised by the input image size)."""
        imgs = as_image_list(images)
        inputs = []
        for img in imgs:
            x, _ = self._resize(img)
            inputs.append({"image": x, "height": int(img.shape[1]), "width": int(img.shape[2])})
        self.model.eval()
        outputs = self.model(inputs)
        dets = []
        for img, out in zip(imgs, outputs, strict=True):
            inst = out["instances"]
            h, w = int(img.shape[1]), int(img.shape[2])
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=inst.scores.device)
            order = inst.scores.argsort(descending=True)
            boxes = (inst.pred_boxes.tensor[order] / scale).clamp(0.0, 1.0)
            dets.append(Detections(boxes, inst.scores[order], inst.pred_classes[order].long()))
        return dets


__all__ = ["INSTALL_HINT", "Detectron2Backend", "detectron2_available"]
