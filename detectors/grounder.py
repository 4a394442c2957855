"""The visual-grounding model that makes MNER-QG's weak grounding labels.

Given an image and an entity-type query, it predicts the box of that type's entities, or says the
type is not in the image. It is the image half of MNER-QG's grounding head on its own: a backbone
from ``BACKBONE_REGISTRY`` (default ``small_cnn``) gives 3 feature maps; each cell is projected to
``hidden_dim``; a learned embedding per entity type is the query; and the query-conditioned,
anchor-free :class:`~mnerqg_graph.heads.grounding.GroundingHead` (the main model's own head, with
its targets, loss and prediction) scores every cell of the 3 scales. The image is encoded once and
shared by all its type queries. Training adds one term to the head's loss: a BCE on the best cell's
logit, target "the type has a box in this image". The head's own negative term is a mean over all
cells, which barely pushes down the one cell holding an object of *another* type, so without this
term the grounder rarely says "not in the image" (on SynthTweets its none-accuracy goes from about
0.1 to about 0.75 with it, and the box accuracy does not drop).

Transfer learning, as in the paper's weak supervision:

1. ``pretrain`` on a *source* set with boxes for everything (e.g. SynthTweets generated with
   another seed), every (image, type) pair a training example (a type without boxes teaches
   "not in the image");
2. ``finetune`` on the few manually annotated tweets of the *target* set: the ``manual_fraction``
   of its training tweets with an image chosen by
   :func:`detectors.manual.select_manual` (the experiment keeps gold boxes on exactly those);
3. ``mnerqg pseudo-label`` (:mod:`detectors.weak_labels`) writes its boxes for the other tweets.

Command line::

    python -m detectors.grounder pretrain --data SRC --out CKPT
    python -m detectors.grounder finetune --init CKPT --data TGT --manual-fraction 0.2 --out CKPT2
    python -m detectors.grounder evaluate --grounder CKPT2 --data TGT --split test

Checkpoints are folders with ``model.safetensors`` and ``config.json``
(``{"kind": "visual_grounder", "model": {...}, "stages": [...]}``); nothing is pickled.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detectors.checkpoint import (
    WEIGHTS_NAME,
    load_checkpoint_weights,
    read_checkpoint_config,
    save_checkpoint,
)
from detectors.command import (
    json_object_option,
    option_values,
    run_main,
    subcommand_main,
    subcommand_parser,
)
from detectors.detection.data import normalised_boxes
from detectors.images import ImageSet, load_image_set
from detectors.manual import select_manual
from detectors.training import Schedule, TrainResult, train_on_indices
from mnerqg_graph.data.types import Box, Sample
from mnerqg_graph.encoders.image import build_backbone
from mnerqg_graph.environment import resolve_device
from mnerqg_graph.errors import CheckpointError, ConfigError, DataError, check_counts
from mnerqg_graph.heads.grounding import GroundingHead
from mnerqg_graph.io import check_replaceable
from mnerqg_graph.metrics import GroundingScores, grounding_accuracy

__all__ = [
    "FINETUNING",
    "GROUNDER_KIND",
    "PRETRAINING",
    "GrounderScores",
    "GrounderTraining",
    "GroundingData",
    "TweetSplit",
    "VisualGrounder",
    "evaluate_grounder",
    "finetune",
    "fit_grounder",
    "grounding_data",
    "load_grounder",
    "pixel_box",
    "predict_image_set",
    "pretrain",
    "save_grounder",
]

#: ``config.json["kind"]`` of a visual-grounding checkpoint.
GROUNDER_KIND = "visual_grounder"
#: Version of the grounder checkpoint layout.
GROUNDER_FORMAT = 1
#: IoU a predicted box needs to count as correct.
IOU_THRESHOLD = 0.5
#: Default backbone options: 64 px input -> 2x2, 4x4, 8x8 cells, fast on a CPU.
DEFAULT_BACKBONE_KWARGS: dict[str, Any] = {"width": 16, "out_channels": 32}


class VisualGrounder(nn.Module):
    """Backbone + type-query embedding + :class:`GroundingHead` over 3 scales.

    Args:
        types: the entity types (the queries), in index order.
        backbone: a ``BACKBONE_REGISTRY`` name.
        backbone_kwargs: the backbone's options (JSON values); None: :data:`DEFAULT_BACKBONE_KWARGS`
            for ``small_cnn``, the backbone's defaults otherwise.
        image_size: the square input side in pixels; a multiple of the backbone's coarsest stride.
        hidden_dim: width of the projected cells, the query embedding and the head.
        threshold: confidence under which the answer is "not in the image".
        existence_weight: weight of the best-cell existence BCE added to the head's loss
            (0: the head's loss alone).

    Shapes:
        - images: ``[B, 3, S, S]`` RGB in ``[0, 1]``; image_index, type_index: ``[M]``
        - forward -> logits ``[M, C]``, boxes ``[M, C, 4]`` (normalised xyxy), ``C`` = all cells
          of the 3 scales.
    """

    def __init__(
        self,
        types: Sequence[str],
        backbone: str = "small_cnn",
        backbone_kwargs: Mapping[str, Any] | None = None,
        image_size: int = 64,
        hidden_dim: int = 64,
        threshold: float = 0.5,
        existence_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not types or len(set(types)) != len(types):
            raise ConfigError(f"grounder types must be non-empty and distinct, got {list(types)}")
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"grounder threshold must be in (0, 1), got {threshold}")
        self.types = list(types)
        self.backbone_name = backbone
        if backbone_kwargs is None:
            backbone_kwargs = DEFAULT_BACKBONE_KWARGS if backbone == "small_cnn" else {}
        self.backbone_kwargs = dict(backbone_kwargs)
        self.image_size = image_size
        self.hidden_dim = hidden_dim
        self.threshold = threshold
        self.existence_weight = existence_weight
        self.backbone = build_backbone(backbone, **self.backbone_kwargs)
        specs = self.backbone.output_shape()
        bad = [s.stride for s in specs if image_size % s.stride]
        if bad or image_size < max(s.stride for s in specs):
            raise ConfigError(
                f"grounder image_size {image_size} must be a multiple of the backbone strides "
                f"{[s.stride for s in specs]}"
            )
        grids = tuple((image_size // s.stride, image_size // s.stride) for s in specs)
        self.region_proj = nn.ModuleList(nn.Linear(s.channels, hidden_dim) for s in specs)
        self.query_emb = nn.Embedding(len(self.types), hidden_dim)
        self.head = GroundingHead(hidden_dim, hidden_dim, grids, hidden_dim)

    def config(self) -> dict[str, Any]:
        """JSON-ready constructor arguments."""
        return {
            "types": list(self.types),
            "backbone": self.backbone_name,
            "backbone_kwargs": dict(self.backbone_kwargs),
            "image_size": self.image_size,
            "hidden_dim": self.hidden_dim,
            "threshold": self.threshold,
            "existence_weight": self.existence_weight,
        }

    def encode(self, images: Tensor) -> list[Tensor]:
        """Projected cell features of each scale, coarsest first.

        Shapes:
            - images: ``[B, 3, S, S]`` -> output[k]: ``[B, h_k * w_k, hidden_dim]``
        """
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"grounder expects {self.image_size}x{self.image_size} images, "
                f"got {tuple(images.shape[-2:])}"
            )
        maps = self.backbone(images)
        return [
            proj(m.flatten(2).transpose(1, 2))
            for proj, m in zip(self.region_proj, maps, strict=True)
        ]

    def forward(
        self, images: Tensor, image_index: Tensor, type_index: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per-cell confidence logits and boxes of each (image, type) example.

        Args:
            images: the distinct images of the batch.
            image_index: the image of each example.
            type_index: the type (query) of each example.

        Returns:
            ``(logits [M, C], boxes [M, C, 4])``.
        """
        regions = self.encode(images)  # each (B, N_k, D)
        per_example = [r[image_index] for r in regions]  # each (M, N_k, D)
        return self.head(per_example, self.query_emb(type_index))

    def loss(
        self, images: Tensor, image_index: Tensor, type_index: Tensor, gt: Tensor, gt_mask: Tensor
    ) -> Tensor:
        """The grounding head's loss (confidence BCE + L1 + GIoU) + the weighted existence BCE.

        Shapes:
            - gt: ``[M, K, 4]`` normalised xyxy; gt_mask: ``[M, K]`` (all False: not in the image).
        """
        logits, boxes = self(images, image_index, type_index)
        return self.head.loss(logits, boxes, gt, gt_mask, presence_weight=self.existence_weight)

    @torch.no_grad()
    def predict(
        self, images: Tensor, image_index: Tensor, type_index: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The best box and its confidence per example (confidence < threshold: not there).

        Shapes:
            - output: boxes ``[M, 4]`` normalised xyxy, confidences ``[M]``.
        """
        logits, boxes = self(images, image_index, type_index)
        return self.head.predict(logits, boxes)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def save_grounder(
    model: VisualGrounder, out_dir: str | Path, stages: Sequence[Mapping[str, Any]] = ()
) -> Path:
    """Write a grounder checkpoint folder (``model.safetensors`` + ``config.json``), atomically.

    Args:
        model: the grounder.
        out_dir: the folder (replaced when it exists).
        stages: the training stages that made it (pretrain, finetune), recorded in the config.

    Returns:
        ``out_dir``.
    """
    config = {
        "kind": GROUNDER_KIND,
        "format": GROUNDER_FORMAT,
        "model": model.config(),
        "stages": [dict(s) for s in stages],
    }
    return save_checkpoint(model, config, out_dir)


def load_grounder(
    ckpt_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[VisualGrounder, list[dict[str, Any]]]:
    """Rebuild a grounder from its checkpoint folder.

    Args:
        ckpt_dir: a folder written by :func:`save_grounder`.
        device: where to put the model.

    Returns:
        The grounder (evaluation mode, on ``device``) and its recorded training stages.

    Raises:
        CheckpointError: missing files, a checkpoint of another kind (a detector's, an MNER-QG
            model's; the message names the file), or weights that do not fit.
    """
    path, config = read_checkpoint_config(ckpt_dir, GROUNDER_KIND)
    kwargs = config.get("model")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: missing the 'model' section")
    try:
        model = VisualGrounder(**kwargs)
    except (TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the grounder: {exc}") from None
    load_checkpoint_weights(model, ckpt_dir)
    stages = config.get("stages") or []
    return model.to(resolve_device(device)).eval(), list(stages)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass
class GroundingData:
    """Images with, per image and type, the gold boxes (empty: the type is not in the image).

    Attributes:
        images: the images (tweets whose image could not be read are left out and listed).
        boxes: ``boxes[i][t]`` the normalised xyxy boxes ``[n, 4]`` of type ``t`` in image ``i``.
    """

    images: ImageSet
    boxes: list[list[Tensor]]

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def num_boxes(self) -> int:
        """The gold boxes of every image and type."""
        return sum(int(b.shape[0]) for per_image in self.boxes for b in per_image)


def grounding_data(
    samples: Sequence[Sample], types: Sequence[str], image_size: int
) -> GroundingData:
    """Load the images of the samples that have one, with their per-type gold boxes.

    Args:
        samples: the tweets (those without an image are ignored).
        types: the type order.
        image_size: the side the images are resized to.

    Returns:
        The images and boxes.
    """
    image_set = load_image_set(samples, image_size)
    boxes = [[normalised_boxes(s, t) for t in types] for s in image_set.samples]
    return GroundingData(image_set, boxes)


def _batch_targets(
    boxes: Sequence[Sequence[Tensor]], flip: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Example indices and padded gold boxes of a batch of images, every type each.

    Returns:
        ``image_index [M]``, ``type_index [M]``, ``gt [M, K, 4]``, ``gt_mask [M, K]`` with
        ``M = B * T``; boxes of flipped images are mirrored.
    """
    n_img, n_types = len(boxes), len(boxes[0])
    image_index = torch.arange(n_img).repeat_interleave(n_types)
    type_index = torch.arange(n_types).repeat(n_img)
    flat = [b for per_image in boxes for b in per_image]
    k = max(1, max(int(b.shape[0]) for b in flat))
    gt = torch.zeros(len(flat), k, 4)
    gt_mask = torch.zeros(len(flat), k, dtype=torch.bool)
    for m, b in enumerate(flat):
        n = int(b.shape[0])
        if n:
            if flip[m // n_types]:
                b = torch.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], dim=1)
            gt[m, :n] = b
            gt_mask[m, :n] = True
    return image_index, type_index, gt, gt_mask


def fit_grounder(
    model: VisualGrounder,
    data: GroundingData,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    flip: bool = True,
    max_steps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train a grounder on every (image, type) pair of ``data`` (AdamW, fixed learning rate).

    Args:
        model: the grounder (moved to ``device``).
        data: images and per-type boxes.
        epochs: passes over the images.
        batch_size: images per step (each with all its type queries).
        lr: learning rate.
        weight_decay: AdamW weight decay.
        flip: mirror half of the images (and their boxes) at random.
        max_steps: stop after this many steps.
        seed: seeds the batch order and the flips.
        device: ``auto``, ``cpu``, ``cuda``, ...
        log: progress lines go here (None: quiet).

    Returns:
        Loss history per epoch, steps and time (``checkpoint`` not set).

    Raises:
        DataError: ``data`` has no image.
        TrainingError: the loss became NaN or infinite.
    """
    say = log or (lambda _msg: None)
    if not len(data):
        raise DataError("grounder", "no training image (no tweet with a readable image)")
    dev = resolve_device(device)
    model.to(dev).train()
    gen = torch.Generator().manual_seed(seed)

    def loss(idx: Tensor) -> Tensor:
        flips = (torch.rand(len(idx), generator=gen) < 0.5) & flip
        images = data.images.batch(idx, dev)
        images[flips.to(dev)] = images[flips.to(dev)].flip(-1)
        image_index, type_index, gt, gt_mask = _batch_targets(
            [data.boxes[int(i)] for i in idx], flips
        )
        return model.loss(
            images, image_index.to(dev), type_index.to(dev), gt.to(dev), gt_mask.to(dev)
        )

    result = train_on_indices(
        loss,
        list(model.parameters()),
        len(data),
        gen,
        Schedule(epochs, batch_size, lr, weight_decay, max_steps),
        name="grounder",
        clip=5.0,
        device=dev,
        say=say,
    )
    model.eval()
    return result


@torch.no_grad()
def predict_image_set(
    model: VisualGrounder, images: ImageSet, batch_size: int = 64
) -> tuple[Tensor, Tensor]:
    """The grounder's box and confidence for every image and every type.

    Args:
        model: the grounder (on its device).
        images: the images (resized to ``model.image_size``).
        batch_size: images per forward pass.

    Returns:
        ``(boxes, confidences)`` on the CPU.

    Shapes:
        - boxes: ``[N, T, 4]`` normalised xyxy; confidences: ``[N, T]``.
    """
    check_counts(batch_size=batch_size)
    model.eval()
    dev = next(model.parameters()).device
    n, n_types = len(images.samples), len(model.types)
    boxes = torch.zeros(n, n_types, 4)
    conf = torch.zeros(n, n_types)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        b = len(idx)
        image_index = torch.arange(b, device=dev).repeat_interleave(n_types)
        type_index = torch.arange(n_types, device=dev).repeat(b)
        box, c = model.predict(images.batch(idx, dev), image_index, type_index)
        boxes[start : start + b] = box.float().cpu().view(b, n_types, 4)
        conf[start : start + b] = c.float().cpu().view(b, n_types)
    return boxes, conf


def pixel_box(
    box: Sequence[float], image_size: tuple[int, int], confidence: float | None = None
) -> Box:
    """A normalised xyxy box in pixels of an image of ``(width, height)``."""
    w, h = image_size
    return Box(box[0] * w, box[1] * h, box[2] * w, box[3] * h, confidence)


@dataclass
class GrounderScores:
    """Grounding accuracy of a grounder on a split.

    Attributes:
        all_types: over every (tweet with an image, type) pair, as the main model's
            ``grounding_acc`` / ``none_acc`` are counted.
        text_types: over the pairs whose type occurs in the tweet's gold text (the cases that
            ``mnerqg pseudo-label`` labels).
        images: tweets with a readable image evaluated.
    """

    all_types: GroundingScores
    text_types: GroundingScores
    images: int

    def to_dict(self) -> dict[str, float | int]:
        """Flat JSON-ready scores."""
        out: dict[str, float | int] = {"images": self.images}
        for prefix, s in (("", self.all_types), ("text_types_", self.text_types)):
            out[f"{prefix}grounding_acc"] = s.accuracy
            out[f"{prefix}none_acc"] = s.none_accuracy
            out[f"{prefix}grounded_cases"] = s.grounded_total
            out[f"{prefix}none_cases"] = s.none_total
        return out


def evaluate_grounder(
    model: VisualGrounder, samples: Sequence[Sample], batch_size: int = 64
) -> GrounderScores:
    """Grounding accuracy (IoU >= 0.5) and none-accuracy of a grounder on some tweets.

    A prediction whose confidence is under ``model.threshold`` is "not in the image". Boxes are
    compared in pixels of the original image.

    Args:
        model: the grounder (on its device).
        samples: the tweets; those without a readable image are not cases.
        batch_size: images per forward pass.

    Returns:
        The scores, fractions in [0, 1].
    """
    data = load_image_set(samples, model.image_size)
    boxes, conf = predict_image_set(model, data, batch_size)
    gold_all: list[list[Box]] = []
    pred_all: list[Box | None] = []
    gold_txt: list[list[Box]] = []
    pred_txt: list[Box | None] = []
    for i, sample in enumerate(data.samples):
        assert sample.image_size is not None
        present = {span.type for span in sample.tweet.entities}
        for t, typ in enumerate(model.types):
            gold = sample.boxes_of_type(typ)
            c = float(conf[i, t])
            pred = (
                pixel_box(boxes[i, t].tolist(), sample.image_size)
                if (c >= model.threshold)
                else None
            )
            gold_all.append(gold)
            pred_all.append(pred)
            if typ in present:
                gold_txt.append(gold)
                pred_txt.append(pred)
    return GrounderScores(
        grounding_accuracy(gold_all, pred_all, IOU_THRESHOLD),
        grounding_accuracy(gold_txt, pred_txt, IOU_THRESHOLD),
        len(data.samples),
    )


# --------------------------------------------------------------------------------------------------
# The three steps
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TweetSplit:
    """Which tweets of which data set: the first ``limit`` tweets of one split.

    Args:
        data: the data-set folder.
        split: the split.
        limit: the first ``limit`` tweets of the split only (None: all of them).
        images_dir: the image folder (None: ``DATA/images``).
        boxes_dir: the box folder (None: ``DATA/boxes``).
    """

    data: str | Path
    split: str = "train"
    limit: int | None = None
    images_dir: str | Path | None = None
    boxes_dir: str | Path | None = None

    def __post_init__(self) -> None:
        check_counts(limit=self.limit)

    def samples(self) -> list[Sample]:
        """The tweets, read with :func:`mnerqg_graph.data.dataset.load_split`.

        Raises:
            DataError: the data-set folder or split is missing or malformed.
        """
        from mnerqg_graph.data.dataset import load_split

        loaded = load_split(
            self.data, self.split, images_dir=self.images_dir, boxes_dir=self.boxes_dir
        ).samples
        return loaded[: self.limit] if self.limit is not None else loaded


@dataclass(frozen=True)
class GrounderTraining:
    """How :func:`pretrain` and :func:`finetune` train a grounder (with :func:`fit_grounder`).

    Args:
        lr: learning rate (each stage's default: :data:`PRETRAINING`, :data:`FINETUNING`).
        epochs: passes over the images.
        batch_size: images per step.
        max_steps: stop after this many steps (None: no limit).
        seed: the batch-order seed; pretraining seeds the initialisation with it too, fine-tuning
            the choice of the manual tweets (the experiment's seed).
        device: ``auto``, ``cpu``, ``cuda``.
    """

    lr: float
    epochs: int = 15
    batch_size: int = 32
    max_steps: int | None = None
    seed: int = 0
    device: str | torch.device = "auto"


#: How :func:`pretrain` trains by default.
PRETRAINING = GrounderTraining(lr=2e-3)
#: How :func:`finetune` trains by default (a smaller learning rate).
FINETUNING = GrounderTraining(lr=1e-3)


def _train_stage(
    model: VisualGrounder,
    data: GroundingData,
    training: GrounderTraining,
    stage: Mapping[str, Any],
    out: str | Path | None,
    earlier: Sequence[Mapping[str, Any]],
    log: Callable[[str], None] | None,
) -> TrainResult:
    """Train a grounder, then save it with the record of its stages (the earlier ones, this one).

    Args:
        model: the grounder.
        data: the images and boxes it trains on.
        training: how it trains.
        stage: what the stage was asked (``{"stage": name, ...}``), the first keys of its record.
        out: the checkpoint folder (None: do not save).
        earlier: the records of the stages the grounder went through before.
        log: progress lines (None: quiet).

    Returns:
        What the training did (with the checkpoint when saved).
    """
    if out is not None:  # refused before the training, not after it
        check_replaceable(out, WEIGHTS_NAME)
    result = fit_grounder(
        model,
        data,
        training.epochs,
        training.batch_size,
        training.lr,
        max_steps=training.max_steps,
        seed=training.seed,
        device=training.device,
        log=log,
    )
    record = {
        **stage,
        "images": len(data),
        "boxes": data.num_boxes,
        "epochs": training.epochs,
        "steps": result.steps,
        "lr": training.lr,
        "seed": training.seed,
        "final_loss": result.history[-1] if result.history else None,
    }
    if out is not None:
        result.checkpoint = save_grounder(model, out, [*earlier, record])
        if log is not None:
            log(f"grounder saved to {out}")
    return result


def pretrain(
    tweets: TweetSplit,
    out: str | Path | None,
    types: Sequence[str] | None = None,
    backbone: str = "small_cnn",
    backbone_kwargs: Mapping[str, Any] | None = None,
    image_size: int = 64,
    hidden_dim: int = 64,
    threshold: float = 0.5,
    training: GrounderTraining = PRETRAINING,
    log: Callable[[str], None] | None = print,
) -> tuple[VisualGrounder, TrainResult]:
    """Train a new grounder on every gold box of a (source) data set.

    Args:
        tweets: the tweets of the source data set trained on (all of them with an image).
        out: the checkpoint folder (None: do not save).
        types: the entity types; default: the packaged query file's types.
        backbone: a ``BACKBONE_REGISTRY`` name.
        backbone_kwargs: its options (default :data:`DEFAULT_BACKBONE_KWARGS` for ``small_cnn``).
        image_size: input side in pixels.
        hidden_dim: model width.
        threshold: the "not in the image" confidence threshold.
        training: how it trains (its seed seeds the initialisation too).
        log: progress lines (None: quiet).

    Returns:
        The grounder and what its training did.
    """
    from mnerqg_graph.data.queries import load_queries

    say = log or (lambda _msg: None)
    types = list(types) if types is not None else list(load_queries())
    torch.manual_seed(training.seed)
    model = VisualGrounder(types, backbone, backbone_kwargs, image_size, hidden_dim, threshold)
    gdata = grounding_data(tweets.samples(), types, image_size)
    _report_skipped(gdata.images, say)
    say(
        f"pretrain: {len(gdata)} images, {gdata.num_boxes} boxes from {tweets.data} "
        f"({tweets.split})"
    )
    stage = {"stage": "pretrain", "data": str(tweets.data), "split": tweets.split}
    return model, _train_stage(model, gdata, training, stage, out, [], log)


def finetune(
    init: str | Path,
    tweets: TweetSplit,
    out: str | Path | None,
    manual_fraction: float = 0.2,
    training: GrounderTraining = FINETUNING,
    log: Callable[[str], None] | None = print,
) -> tuple[VisualGrounder, TrainResult]:
    """Fine-tune a grounder on the manually annotated tweets of the target data set.

    The manual tweets are ``select_manual(samples, manual_fraction, training.seed)`` of the split's
    tweets (after ``tweets.limit``), the same ones the experiment keeps gold boxes on when it runs
    with ``grounding.manual_fraction`` and the same seed and ``data.limit``.

    Args:
        init: the pretrained grounder's checkpoint folder.
        tweets: the tweets of the target data set (``limit``: the experiment's ``data.limit``).
        out: the new checkpoint folder (None: do not save).
        manual_fraction: share of the split's tweets with an image whose gold boxes are used.
        training: how it trains on the manual images (its seed chooses them too).
        log: progress lines (None: quiet).

    Returns:
        The fine-tuned grounder and what its training did.
    """
    say = log or (lambda _msg: None)
    model, stages = load_grounder(init, "cpu")
    samples = tweets.samples()
    manual = select_manual(samples, manual_fraction, training.seed)
    chosen = [samples[i] for i in sorted(manual)]
    gdata = grounding_data(chosen, model.types, model.image_size)
    _report_skipped(gdata.images, say)
    say(
        f"finetune: {len(manual)} manual tweets ({manual_fraction:.0%} of those with an image), "
        f"{gdata.num_boxes} boxes from {tweets.data} ({tweets.split})"
    )
    if not len(gdata):
        raise DataError(
            str(tweets.data),
            f"no manual tweet with a readable image to fine-tune on "
            f"(manual_fraction {manual_fraction})",
        )
    stage = {
        "stage": "finetune",
        "init": str(init),
        "data": str(tweets.data),
        "split": tweets.split,
        "manual_fraction": manual_fraction,
        "manual_tweets": len(manual),
        "limit": tweets.limit,
    }
    return model, _train_stage(model, gdata, training, stage, out, stages, log)


def _report_skipped(images: ImageSet, say: Callable[[str], None]) -> None:
    for msg in images.skipped:
        say(f"warning: {msg} (image skipped)")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

PROG = "python -m detectors.grounder"


#: The options that make a :class:`TweetSplit` (every subcommand has them).
_TWEETS = ("data", "split", "limit", "images_dir", "boxes_dir")
#: The options that make a :class:`GrounderTraining` (all added by :func:`_common`).
_TRAINING = ("lr", "epochs", "batch_size", "max_steps", "seed", "device")


def _tweets(args: argparse.Namespace) -> TweetSplit:
    """The tweets a subcommand reads, from its ``--data``, ``--split``, ``--limit`` ... options."""
    return TweetSplit(**option_values(args, *_TWEETS))


def _training(args: argparse.Namespace) -> GrounderTraining:
    """How ``pretrain`` or ``finetune`` trains, from its ``--lr``, ``--epochs`` ... options."""
    return GrounderTraining(**option_values(args, *_TRAINING))


def _common(p: argparse.ArgumentParser, lr: float) -> None:
    """The options of ``pretrain`` and ``finetune`` alike (``lr``: the default of ``--lr``)."""
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--split", default="train", help="split to train on (default %(default)s)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="first N tweets of the split only (the experiment's data.limit)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--images-dir", type=Path, default=None)
    p.add_argument("--boxes-dir", type=Path, default=None)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m detectors.grounder {pretrain,finetune,evaluate}``."""
    parser, sub = subcommand_parser(
        PROG, "Train (pretrain, finetune) and evaluate the visual-grounding model."
    )
    pre = sub.add_parser("pretrain", help="train on every gold box of a source data set")
    pre.add_argument("--data", required=True, type=Path, metavar="SRC")
    pre.add_argument("--out", required=True, type=Path, metavar="CKPT")
    pre.add_argument("--types", default=None, help="comma-separated types (default: queries')")
    pre.add_argument("--backbone", default="small_cnn")
    pre.add_argument(
        "--backbone-kwargs",
        default=None,
        metavar="JSON",
        help=f"backbone options (default for small_cnn: {json.dumps(DEFAULT_BACKBONE_KWARGS)})",
    )
    pre.add_argument("--image-size", type=int, default=64, metavar="PX")
    pre.add_argument("--hidden-dim", type=int, default=64)
    pre.add_argument("--threshold", type=float, default=0.5)
    _common(pre, PRETRAINING.lr)
    fine = sub.add_parser("finetune", help="fine-tune on the manual share of a target data set")
    fine.add_argument("--init", required=True, type=Path, metavar="CKPT")
    fine.add_argument("--data", required=True, type=Path, metavar="TGT")
    fine.add_argument("--out", required=True, type=Path, metavar="CKPT2")
    fine.add_argument("--manual-fraction", type=float, default=0.2)
    _common(fine, FINETUNING.lr)
    ev = sub.add_parser("evaluate", help="grounding accuracy (IoU >= 0.5) and none-accuracy")
    ev.add_argument("--grounder", required=True, type=Path, metavar="CKPT")
    ev.add_argument("--data", required=True, type=Path, metavar="DIR")
    ev.add_argument("--split", default="test")
    ev.add_argument("--limit", type=int, default=None, metavar="N")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--images-dir", type=Path, default=None)
    ev.add_argument("--boxes-dir", type=Path, default=None)
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    return parser


def format_scores(scores: GrounderScores) -> str:
    """Two lines: all (image, type) pairs, and the pairs whose type is in the tweet's text."""
    lines = [f"grounder on {scores.images} images:"]
    for label, s in (("all types", scores.all_types), ("text types", scores.text_types)):
        lines.append(
            f"  {label}: accuracy@IoU0.5 {s.accuracy:.4f} ({s.grounded_correct}/{s.grounded_total})"
            f"  none-accuracy {s.none_accuracy:.4f} ({s.none_correct}/{s.none_total})"
        )
    return "\n".join(lines)


def _pretrain(args: argparse.Namespace) -> int:
    """``pretrain``: train on every gold box of a source data set."""
    bk = (
        json_object_option("--backbone-kwargs", args.backbone_kwargs)
        if args.backbone_kwargs
        else None
    )
    types = [t.strip() for t in args.types.split(",")] if args.types else None
    _, result = pretrain(
        _tweets(args),
        args.out,
        types=types,
        backbone=args.backbone,
        backbone_kwargs=bk,
        training=_training(args),
        **option_values(args, "image_size", "hidden_dim", "threshold"),
    )
    print(f"pretrained {result.steps} steps in {result.seconds:.1f} s")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    """``finetune``: fine-tune on the manual share of a target data set."""
    _, result = finetune(args.init, _tweets(args), args.out, args.manual_fraction, _training(args))
    print(f"fine-tuned {result.steps} steps in {result.seconds:.1f} s")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: grounding accuracy of a saved grounder on a split."""
    model, _ = load_grounder(args.grounder, resolve_device(args.device))
    scores = evaluate_grounder(model, _tweets(args).samples())
    print(json.dumps(scores.to_dict(), indent=1) if args.json else format_scores(scores))
    return 0


_HANDLERS = {"pretrain": _pretrain, "finetune": _finetune, "evaluate": _evaluate}
main = subcommand_main(PROG, build_parser, _HANDLERS)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_main(main, PROG))
