"""The detector command line, and the public API of :mod:`detectors.detection` under its old name.

Command line::

    python -m detectors.detector train --data DIR --out CKPT [--epochs N ...]
    python -m detectors.detector detect --detector CKPT --data DIR [--split test] --out FILE.jsonl
    python -m detectors.detector evaluate --detector CKPT --data DIR [--split test] [--json]

``evaluate`` reports the box AP of each type at IoU 0.5 (all-point interpolated, as Pascal VOC
2010+), their mean (mAP@0.5), and the mean over IoU 0.5:0.95 (COCO's thresholds, same
interpolation) on a split's gold boxes (:func:`box_average_precision`).

The code lives with its owner (see :mod:`detectors.detection`): the interface and registry in
:mod:`detectors.detection.base`, the backends in :mod:`detectors.detection.torchvision_frcnn` and
:mod:`detectors.detection.detectron2_backend`, targets in :mod:`detectors.detection.data`,
training in :mod:`detectors.detection.train`, detection files and box AP in
:mod:`detectors.detection.evaluation`, checkpoint folders in :mod:`detectors.checkpoint`, image
sets in :mod:`detectors.images`. This module re-exports their public names (``__all__``), so
``from detectors.detector import build_detector, train_detector, ...`` keeps working; new code
imports from the owners.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from detectors.checkpoint import load_checkpoint_weights, read_checkpoint_config, save_checkpoint
from detectors.command import (
    json_object_option,
    option_values,
    run_main,
    subcommand_main,
    subcommand_parser,
)
from detectors.detection import (
    DETECTOR_REGISTRY,
    Detections,
    DetectorBackend,
    SplitImages,
    Target,
    TorchvisionFasterRCNN,
    box_average_precision,
    build_detector,
    detect_split,
    detection_regions,
    detection_targets,
    evaluate_split,
    load_detector,
    normalised_boxes,
    read_detections,
    train_detector,
)
from detectors.images import ImageSet, load_image_set
from detectors.training import TrainResult
from mnerqg_graph.environment import resolve_device
from mnerqg_graph.io import atomic_write_text

__all__ = [
    "DETECTOR_REGISTRY",
    "Detections",
    "DetectorBackend",
    "ImageSet",
    "PROG",
    "SplitImages",
    "Target",
    "TorchvisionFasterRCNN",
    "TrainResult",
    "box_average_precision",
    "build_detector",
    "build_parser",
    "detect_split",
    "detection_regions",
    "detection_targets",
    "evaluate_split",
    "load_checkpoint_weights",
    "load_detector",
    "load_image_set",
    "main",
    "normalised_boxes",
    "read_checkpoint_config",
    "read_detections",
    "resolve_device",
    "run_main",
    "save_checkpoint",
    "train_detector",
]

PROG = "python -m detectors.detector"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m detectors.detector {train,detect,evaluate}``."""
    parser, sub = subcommand_parser(
        PROG, "Train an object detector on a data set's VOC boxes, or run it on a split."
    )
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


#: The options of ``train`` that are parameters of :func:`train_detector` of the same name.
_TRAIN_OPTIONS = ("split", "epochs", "batch_size", "lr", "image_size", "max_steps", "limit", "seed")


def _train(args: argparse.Namespace) -> int:
    """``train``: train a detector and save its checkpoint."""
    kwargs: dict[str, Any] = {}
    if args.backend_kwargs is not None:
        kwargs = json_object_option("--backend-kwargs", args.backend_kwargs)
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
        log=_say,
        progress=not args.no_progress,
        device=args.device,
        **option_values(args, *_TRAIN_OPTIONS),
    )
    print(
        f"trained {result.steps} steps in {result.seconds:.1f} s; final loss "
        f"{result.history[-1] if result.history else math.nan:.4f}"
    )
    return 0


def _split_images(args: argparse.Namespace) -> SplitImages:
    """The split that ``evaluate`` and ``detect`` run the detector on.

    Args:
        args: the parsed command line (``--data``, ``--split``, ``--image-size``, ``--limit``).

    Returns:
        The split's images.
    """
    return SplitImages(args.data, args.split, args.image_size, limit=args.limit)


def _evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: box AP of a saved detector on a split."""
    detector = load_detector(args.detector, resolve_device(args.device))
    scores = evaluate_split(detector, _split_images(args))
    # a type without gold boxes has no AP (NaN): null in JSON (NaN is not JSON), n/a in text
    defined = {k: v if math.isfinite(v) else None for k, v in scores.items()}
    if args.json:
        print(json.dumps(defined, sort_keys=True, allow_nan=False))
    else:
        print(
            "  ".join(
                f"{k}=n/a" if v is None else f"{k}={v:.0f}" if k == "images" else f"{k}={v:.4f}"
                for k, v in defined.items()
            )
        )
    return 0


def _detect(args: argparse.Namespace) -> int:
    """``detect``: a saved detector's boxes on a split, as JSON lines."""
    detector = load_detector(args.detector, resolve_device(args.device))
    records = detect_split(detector, _split_images(args))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(args.out, text)
    n = sum(len(r["detections"]) for r in records)
    print(f"{n} detections in {len(records)} images written to {args.out}")
    return 0


main = subcommand_main(
    PROG, build_parser, {"train": _train, "detect": _detect, "evaluate": _evaluate}
)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_main(main, PROG))
