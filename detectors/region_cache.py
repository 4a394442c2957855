"""The region-feature cache: a data set's region nodes extracted once, read back in training.

``mnerqg extract-regions (--detector DIR | --grid) --data DIR [--images DIR] --out PATH`` runs the
image side once over every image of the data set (train, valid and test): the backbone in
evaluation mode (a frozen image side), the detector (``--detector``), and the region source, and
writes what the model reads from an image, its :class:`~mnerqg_graph.regions.RegionNodes`, into a
folder::

    PATH/cache.json              what made the cache: backbone (name, options, weights hash), image
                                 size, scales, region source and options, detector (hash, config),
                                 the shards and the number of entries
    PATH/backbone.safetensors    the backbone's weights (a model reading the cache adopts them)
    PATH/shard-00000.safetensors entries keyed by IMGID: ``<IMGID>/s1.features``, ``.boxes``,
                                 ``.geometry`` per scale (boxes and scores: see
                                 :class:`~mnerqg_graph.regions.RegionNodes`) and ``<IMGID>/pooled``;
                                 the shard's metadata holds, per IMGID, the sha256 of the image
                                 file and of the backbone and detector weights that made it

The folder is written beside ``PATH`` and moved into place (atomic); nothing is pickled.

The experiment reads it with ``data.region_cache=PATH`` (:func:`open_for_model` then
:func:`attach`): the tweets' items carry their region nodes instead of images, so training never
decodes an image nor runs the backbone or detector. A cache whose backbone, detector, image size,
scales or region source differ from the model's, an entry made by other weights, or an entry whose
image file changed since, is refused with a one-line error (naming the IMGID for an entry); a
tweet with an image but no entry runs text-only and is counted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detectors.command import json_object_option
from mnerqg_graph.errors import ConfigError, DataError, check_counts

CACHE_KIND = "region_cache"
CACHE_FORMAT = 1
META_NAME = "cache.json"
BACKBONE_NAME = "backbone.safetensors"
#: Backbone options that do not change what it computes from its weights.
_NOT_ARCH = ("weights", "freeze")


def weights_sha256(module: nn.Module) -> str:
    """The sha256 of a module's state (names, dtypes, shapes, bytes), in name order."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class CacheEntry:
    """One image's cached region nodes and the identities of what made them.

    Attributes:
        tensors: the image's tensors (:meth:`~mnerqg_graph.regions.RegionNodes.per_image`).
        image_sha256: the image file's hash.
        backbone_sha256: the backbone weights' hash.
        detector_sha256: the detector weights' hash ("" for grid regions).
    """

    tensors: dict[str, Tensor]
    image_sha256: str
    backbone_sha256: str
    detector_sha256: str = ""


@dataclass
class CacheReport:
    """What attaching a cache to a split's tweets found.

    Attributes:
        read: tweets whose region nodes come from the cache.
        missing: IMGIDs of tweets with an image but no cache entry (they run text-only).
    """

    read: int = 0
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return f"{self.read} tweets from the region cache, {len(self.missing)} missing (text-only)"


@dataclass
class RegionCache:
    """A region cache folder, read.

    Attributes:
        path: the folder.
        meta: ``cache.json``.
        entries: IMGID -> entry.
    """

    path: Path
    meta: dict[str, Any]
    entries: dict[str, CacheEntry]

    @classmethod
    def open(cls, path: str | Path) -> RegionCache:
        """Read a cache folder written by :func:`extract_regions`.

        Raises:
            DataError: not a region cache, or an unreadable or malformed file (names it).
        """
        from safetensors import SafetensorError, safe_open

        root = Path(path)
        meta_path = root / META_NAME
        if not meta_path.is_file():
            raise DataError(str(root), f"not a region cache (no {META_NAME})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(str(meta_path), f"unreadable region cache description: {exc}") from None
        if not isinstance(meta, dict) or meta.get("kind") != CACHE_KIND:
            raise DataError(str(meta_path), f"not a region cache ('kind' is not {CACHE_KIND!r})")
        if meta.get("format") != CACHE_FORMAT:
            raise DataError(
                str(meta_path), f"region cache format {meta.get('format')!r}, not {CACHE_FORMAT}"
            )
        entries: dict[str, CacheEntry] = {}
        for name in meta.get("shards", []):
            shard = root / str(name)
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    ids = json.loads((handle.metadata() or {}).get("entries", "{}"))
                    tensors: dict[str, dict[str, Tensor]] = {}
                    for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                        imgid, part = key.rsplit("/", 1)
                        tensors.setdefault(imgid, {})[part] = handle.get_tensor(key)
            except (OSError, ValueError, json.JSONDecodeError, SafetensorError) as exc:
                raise DataError(str(shard), f"unreadable region cache shard: {exc}") from None
            for imgid, ident in ids.items():
                if imgid not in tensors:
                    raise DataError(str(shard), f"entry IMGID:{imgid} has no tensors")
                entries[imgid] = CacheEntry(
                    tensors[imgid],
                    str(ident.get("image_sha256", "")),
                    str(ident.get("backbone_sha256", "")),
                    str(ident.get("detector_sha256", "")),
                )
        return cls(root, meta, entries)

    def backbone_state(self) -> dict[str, Tensor]:
        """The weights of the backbone that made the cache."""
        from mnerqg_graph.encoders.image import load_state_dict_file

        return load_state_dict_file(self.path / BACKBONE_NAME)


def open_for_model(path: str | Path, model: Any, adopt_backbone: bool = False) -> RegionCache:
    """Open a cache for ``model``, optionally making its backbone the one that made the cache.

    The model's config must match the cache's (backbone name and options, image size, scales,
    region source and its options, detector). With ``adopt_backbone`` a model built without
    backbone weights (no ``weights`` in ``backbone_kwargs``, or None), i.e. a new model about to
    train from the cache, takes the cache's backbone weights, so that its checkpoint predicts on
    images exactly as it was trained; otherwise the model keeps its backbone (a trained one is
    never overwritten) and :func:`attach` refuses entries made by other weights.

    Args:
        path: the cache folder.
        model: an :class:`~mnerqg_graph.model.MnerqgModel` with an image branch.
        adopt_backbone: load the cache's backbone into a model built without backbone weights.

    Raises:
        ConfigError: the model cannot read this cache (names the field that differs).
        DataError: the cache folder is not readable.
    """
    cache = RegionCache.open(path)
    meta, cfg = cache.meta, model.config
    if model.backbone is None or model.region_source is None:
        raise ConfigError(f"data.region_cache={path}: the model has no image branch to feed")
    want = {
        "backbone": cfg.image.backbone,
        "backbone_kwargs": {
            k: v for k, v in cfg.image.backbone_kwargs.items() if k not in _NOT_ARCH
        },
        "image_size": cfg.image.image_size,
        "num_scales": cfg.image.num_scales,
        "regions": cfg.image.regions,
    }
    for key, value in want.items():
        if meta.get(key) != value:
            raise ConfigError(
                f"{cache.path / META_NAME}: the cache was made with {key}={meta.get(key)!r}, "
                f"the model has {key}={value!r}"
            )
    for key, value in dict(meta.get("region_kwargs", {})).items():
        if getattr(model.region_source, key, value) != value:
            raise ConfigError(
                f"{cache.path / META_NAME}: the cache was made with region option {key}={value!r}, "
                f"the model has {getattr(model.region_source, key)!r}"
            )
    if adopt_backbone and cfg.image.backbone_kwargs.get("weights") is None:
        try:
            model.backbone.load_state_dict(cache.backbone_state())
        except RuntimeError as exc:
            raise ConfigError(
                f"{cache.path / BACKBONE_NAME}: does not fit the model's backbone: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return cache


#: Region-source options recorded in the cache and compared with the reading model's source.
REGION_OPTIONS = (
    "max_regions",
    "score_threshold",
    "num_classes",
    "canonical_size",
    "pool_size",
    "sampling_ratio",
)


def attach(
    cache: RegionCache, model: Any, items: Sequence[Any], samples: Sequence[Any]
) -> CacheReport:
    """Give each tweet item with an image its cached region nodes in place of the image.

    Args:
        cache: from :func:`open_for_model`.
        model: the model (its backbone and detector weights are checked against each entry's).
        items: the split's :class:`~mnerqg_graph.data.collate.TweetItem` s (changed in place).
        samples: the split's samples (``items[i].index`` indexes them).

    Returns:
        How many tweets read the cache, and the IMGIDs without an entry (text-only).

    Raises:
        DataError: an entry made by other backbone or detector weights, or from an image file
            that changed since (names the IMGID and the cache).
    """
    backbone_sha = weights_sha256(model.backbone)
    detector_sha = weights_sha256(model.detector) if model.detector is not None else ""
    report = CacheReport()
    for item in items:
        sample = samples[item.index]
        item.image = None
        item.regions = None
        if sample.image_path is None:
            continue
        imgid = sample.tweet.id
        entry = cache.entries.get(imgid)
        if entry is None:
            report.missing.append(imgid)
            continue
        stale = None
        if entry.backbone_sha256 != backbone_sha:
            stale = "another backbone's weights"
        elif entry.detector_sha256 != detector_sha:
            stale = "another detector's weights"
        elif entry.image_sha256 != file_sha256(sample.image_path):
            stale = f"another version of {sample.image_path}"
        if stale is not None:
            raise DataError(
                str(cache.path),
                f"region cache entry IMGID:{imgid} was made from {stale}; "
                "run mnerqg extract-regions again",
            )
        item.regions = entry.tensors
        report.read += 1
    return report


def extract_regions(
    samples: Sequence[Any],
    out: str | Path,
    backbone: nn.Module,
    backbone_spec: dict[str, Any],
    image_size: int,
    source: nn.Module,
    source_spec: dict[str, Any],
    detector: nn.Module | None = None,
    detector_spec: dict[str, Any] | None = None,
    batch_size: int = 32,
    shard_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[Path, int, list[str]]:
    """Compute and write the region cache of some samples (one entry per IMGID with an image).

    Images are read as the model reads them (resized to ``image_size``, kept as 8-bit values);
    the backbone (and detector) run in evaluation mode without gradients.

    Args:
        samples: the tweets (those without an image are skipped; one entry per IMGID).
        out: the cache folder (replaced when it exists).
        backbone: the image backbone.
        backbone_spec: ``{"backbone": name, "backbone_kwargs": {...}}`` as the model config has
            them.
        image_size: the side images are resized to.
        source: the region source (``nodes(maps, detections)``).
        source_spec: ``{"regions": name, "num_scales": k, "region_kwargs": {...}}``.
        detector: the detector of a box source.
        detector_spec: ``{"path": ..., "config": {...}}`` of the detector, recorded.
        batch_size: images per forward pass.
        shard_size: images per shard file.
        device: where the image side runs.
        progress: show a progress bar (or lines) on stderr.

    Returns:
        ``(out, entries written, "path: reason" of unreadable images)``.
    """
    from safetensors.torch import save_file

    from mnerqg_graph.data.images import load_image
    from mnerqg_graph.io import (
        abandon_dir,
        atomic_write_text,
        check_replaceable,
        replace_dir,
        temp_dir_beside,
    )
    from mnerqg_graph.progress import Progress

    check_counts(image_size=image_size, batch_size=batch_size, shard_size=shard_size)
    check_replaceable(out, META_NAME)  # before any work, and again by replace_dir
    dev = torch.device(device)
    backbone.to(dev).eval()
    if detector is not None:
        detector.to(dev).eval()
    seen: dict[str, Any] = {}
    for s in samples:
        if s.image_path is not None and s.tweet.id not in seen:
            seen[s.tweet.id] = s
    todo = list(seen.values())
    backbone_sha = weights_sha256(backbone)
    detector_sha = weights_sha256(detector) if detector is not None else ""
    out = Path(out)
    tmp = temp_dir_beside(out)
    skipped: list[str] = []
    shards: list[str] = []
    written = 0
    try:
        pending: dict[str, Tensor] = {}
        idents: dict[str, dict[str, str]] = {}

        def flush() -> None:
            if not idents:
                return
            name = f"shard-{len(shards):05d}.safetensors"
            save_file(pending, str(tmp / name), metadata={"entries": json.dumps(idents)})
            shards.append(name)
            pending.clear()
            idents.clear()

        with (
            Progress(len(todo), "extract-regions", "image", enabled=progress) as bar,
            torch.no_grad(),
        ):
            for start in range(0, len(todo), batch_size):
                chunk, images = [], []
                for s in todo[start : start + batch_size]:
                    try:  # 8-bit, as the training items hold images
                        img = (load_image(s.image_path, image_size) * 255).round() / 255.0
                    except DataError as err:
                        skipped.append(str(err))
                        continue
                    chunk.append(s)
                    images.append(img)
                if chunk:
                    batch = torch.stack(images).to(dev)
                    maps = backbone(batch)
                    dets = detector.detect(batch) if detector is not None else None  # type: ignore[operator]
                    nodes = source.nodes(maps, dets)  # type: ignore[operator]
                    for s, tensors in zip(chunk, nodes.to("cpu").per_image(), strict=True):
                        for key, value in tensors.items():
                            pending[f"{s.tweet.id}/{key}"] = value
                        idents[s.tweet.id] = {
                            "image_sha256": file_sha256(s.image_path),
                            "backbone_sha256": backbone_sha,
                            "detector_sha256": detector_sha,
                        }
                        written += 1
                        if len(idents) >= shard_size:
                            flush()
                bar.update(len(todo[start : start + batch_size]))
        flush()
        state = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
        save_file(state, str(tmp / BACKBONE_NAME))
        meta = {
            "kind": CACHE_KIND,
            "format": CACHE_FORMAT,
            **backbone_spec,
            "backbone_sha256": backbone_sha,
            "image_size": image_size,
            **source_spec,
            "detector": dict(detector_spec or {}, sha256=detector_sha) if detector else None,
            "entries": written,
            "shards": shards,
        }
        atomic_write_text(tmp / META_NAME, json.dumps(meta, indent=1, sort_keys=True) + "\n")
        replace_dir(tmp, out, META_NAME)
    except BaseException as exc:  # a failed write is a WriteError naming OUT; OUT is as it was
        abandon_dir(tmp, out, exc)
        raise
    return out, written, skipped


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

#: The SynthTweets demo model's backbone options (experiments/ingredients/model.py).
DEMO_BACKBONE_KWARGS = '{"width": 16, "out_channels": 64, "min_stride": 8}'


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``mnerqg extract-regions``."""
    parser = argparse.ArgumentParser(
        prog="mnerqg extract-regions",
        description="Extract every image's region features once into a region cache folder "
        "(read in training with data.region_cache=PATH).",
        allow_abbrev=False,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--detector",
        type=Path,
        metavar="DIR",
        help="detector regions: a checkpoint of python -m detectors.detector train",
    )
    which.add_argument("--grid", action="store_true", help="grid regions (every cell)")
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="data-set folder")
    parser.add_argument("--images", type=Path, metavar="DIR", help="image folder (ROOT/images)")
    parser.add_argument("--out", required=True, type=Path, metavar="PATH", help="cache folder")
    parser.add_argument("--backbone", default="small_cnn", help="image backbone (model.backbone)")
    parser.add_argument(
        "--backbone-kwargs",
        default=DEMO_BACKBONE_KWARGS,
        metavar="JSON",
        help="backbone options, as model.backbone_kwargs (default: the demo's %(default)s)",
    )
    parser.add_argument(
        "--backbone-weights",
        metavar="FILE",
        help="backbone weights (default: random initialisation from --seed)",
    )
    parser.add_argument("--image-size", type=int, default=64, metavar="PX")
    parser.add_argument("--num-scales", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seeds a random backbone")
    parser.add_argument(
        "--max-regions", type=int, default=None, help="with --detector: boxes per image (16)"
    )
    parser.add_argument(
        "--score-threshold", type=float, default=None, help="with --detector: min score (0.3)"
    )
    parser.add_argument(
        "--splits", default="train,valid,test", help="splits to read (default %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=512, help="images per shard file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mnerqg extract-regions``; user errors are raised as ``MnerqgError``."""
    from mnerqg_graph.data.dataset import load_split, split_path
    from mnerqg_graph.encoders.image import build_backbone
    from mnerqg_graph.regions import build_region_source

    args = build_parser().parse_args(argv)
    kwargs = json_object_option("--backbone-kwargs", args.backbone_kwargs)
    torch.manual_seed(args.seed)
    backbone = build_backbone(args.backbone, **kwargs)
    if args.backbone_weights:
        backbone.load_weights(args.backbone_weights)
    detector = None
    region_kwargs: dict[str, Any] = {}
    detector_spec = None
    detector_only = {"--max-regions": args.max_regions, "--score-threshold": args.score_threshold}
    given = [flag for flag, value in detector_only.items() if value is not None]
    if args.detector is None and given:  # they would be ignored by the grid
        raise ConfigError(f"{', '.join(given)} only apply with --detector")
    if args.detector is not None:
        from detectors.detection import load_detector

        detector = load_detector(args.detector, args.device)
        region_kwargs = {
            "max_regions": 16 if args.max_regions is None else args.max_regions,
            "score_threshold": 0.3 if args.score_threshold is None else args.score_threshold,
        }
        detector_spec = {"path": str(args.detector), "config": detector.config()}
        source = build_region_source(
            "detector",
            scales=args.num_scales,
            num_classes=len(detector.types),
            **region_kwargs,
        )
    else:
        source = build_region_source("grid", scales=args.num_scales)
    # every option of the built source, so that a model pooling otherwise is refused
    region_kwargs = {k: getattr(source, k) for k in REGION_OPTIONS if hasattr(source, k)}
    samples = []
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        if split_path(args.data, split) is None:
            continue
        samples += load_split(args.data, split, images_dir=args.images).samples
    out, n, skipped = extract_regions(
        samples,
        args.out,
        backbone,
        {
            "backbone": args.backbone,
            "backbone_kwargs": {k: v for k, v in kwargs.items() if k not in _NOT_ARCH},
        },
        args.image_size,
        source,
        {
            "regions": "detector" if detector is not None else "grid",
            "num_scales": args.num_scales,
            "region_kwargs": region_kwargs,
        },
        detector,
        detector_spec,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        device=args.device,
        progress=not args.no_progress,
    )
    for msg in skipped:
        print(f"warning: {msg} (no entry: the tweet runs text-only)")
    print(f"{n} images' region features written to {out}")
    return 0


__all__ = [
    "CacheEntry",
    "CacheReport",
    "RegionCache",
    "attach",
    "extract_regions",
    "file_sha256",
    "main",
    "open_for_model",
    "weights_sha256",
]
