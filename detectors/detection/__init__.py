"""Object detectors behind one interface, trained on the VOC boxes of a data-set folder.

Importing this package registers every built-in backend in ``DETECTOR_REGISTRY``:

``torchvision_frcnn``
    torchvision Faster R-CNN with an FPN backbone (``mobilenet_v3_large_fpn`` or
    ``resnet50_fpn``), randomly initialised or from local weights files; needs torchvision
    (:mod:`detectors.detection.torchvision_frcnn`).
``detectron2``
    detectron2's GeneralizedRCNN (:mod:`detectors.detection.detectron2_backend`); needs
    detectron2, built from source. Building it without detectron2 is a ``ConfigError`` saying how
    to install it.

One owner per concern:

===============================  =============================================================
module                           owns
===============================  =============================================================
:mod:`.base`                     ``Detections``, ``DetectorBackend``, ``DETECTOR_REGISTRY``,
                                 ``build_detector``, ``load_detector``
:mod:`.torchvision_frcnn`        the ``torchvision_frcnn`` backend
:mod:`.detectron2_backend`       the ``detectron2`` backend
:mod:`.data`                     detection targets from VOC boxes
:mod:`.train`                    ``train_detector``
:mod:`.evaluation`               detection files (``detect_split``, ``read_detections``) and box AP
:mod:`.regions`                  ``detection_regions`` (detections as ``detector_boxes`` regions)
===============================  =============================================================

The command line (``python -m detectors.detector``) lives in :mod:`detectors.detector`.
"""

from detectors.detection import base, detectron2_backend, torchvision_frcnn  # registers backends
from detectors.detection.base import (  # noqa: F401 - all of base.__all__, re-exported
    CHECKPOINT_FORMAT,
    DETECTOR_KIND,
    DETECTOR_REGISTRY,
    Detections,
    DetectorBackend,
    Target,
    as_image_list,
    build_detector,
    load_detector,
)
from detectors.detection.data import detection_targets, normalised_boxes
from detectors.detection.evaluation import (
    SplitImages,
    box_average_precision,
    detect_split,
    evaluate_split,
    read_detections,
)
from detectors.detection.regions import detection_regions
from detectors.detection.torchvision_frcnn import TorchvisionFasterRCNN
from detectors.detection.train import train_detector

__all__ = [
    *base.__all__,
    "SplitImages",
    "TorchvisionFasterRCNN",
    "box_average_precision",
    "detect_split",
    "detection_regions",
    "detection_targets",
    "detectron2_backend",
    "evaluate_split",
    "normalised_boxes",
    "read_detections",
    "torchvision_frcnn",
    "train_detector",
]
