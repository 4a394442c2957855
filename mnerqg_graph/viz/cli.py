"""``mnerqg visualize``: draw what a checkpoint aligned, per tweet and entity-type query.

    mnerqg visualize --checkpoint DIR --text "..." [--image PATH] --out DIR
    mnerqg visualize --checkpoint DIR --input FILE --ids ID,ID --out DIR [--images DIR]
    mnerqg visualize --checkpoint DIR --input DATASET_DIR [--split test] --ids ID,ID --out DIR

``--input`` is a CoNLL or JSON-lines file, read as ``mnerqg predict --input`` reads it, or a
data-set folder (``train.txt``/``valid.txt``/``test.txt`` with ``images/`` and ``boxes/``), whose
gold boxes are drawn beside the predicted ones. Without ``--ids`` the first ``--limit`` tweets are
drawn. Writes, per tweet, ``OUT/<tweet id>/``: ``graph_<TYPE>.png``, ``heatmap_<TYPE>.png``,
``alignment_<TYPE>.graphml``, ``alignment_<TYPE>.json`` per type and ``boxes.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnerqg_graph.cli_args import (
    add_batch_and_device,
    add_tweet_input,
    check_minimums,
    check_tweet_input,
    doc_parser,
)
from mnerqg_graph.data.types import Sample, Tweet
from mnerqg_graph.errors import ConfigError, DataError


def _text_sample(text: str, image: str | None) -> Sample:
    """The ``--text`` tweet (id ``text``), with its image when it can be read."""
    from mnerqg_graph.data.images import probe_image
    from mnerqg_graph.predict import tokenize

    tokens = tokenize(text)
    if not tokens:
        raise DataError("<text>", "the text has no tokens")
    path: Path | None = None
    size = None
    if image:
        try:
            size = probe_image(image)
            path = Path(image)
        except DataError as exc:
            print(f"warning: {exc}; the tweet runs text-only", file=sys.stderr)
    return Sample(Tweet("text", tokens, ["O"] * len(tokens), "<text>", 0), path, size)


def _pick(samples: list[Sample], ids: list[str] | None, limit: int, source: str) -> list[Sample]:
    """The samples named by ``ids`` (in that order), or the first ``limit``."""
    if ids is None:
        return samples[:limit]
    by_id: dict[str, Sample] = {}
    for s in samples:
        by_id.setdefault(s.tweet.id, s)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(source, f"no tweet with id {', '.join(missing)}")
    return [by_id[i] for i in ids]


def _file_samples(path: str, images: str | None, ids: list[str] | None, limit: int) -> list[Sample]:
    """Stream a CoNLL/JSON-lines file, keeping only what is drawn."""
    from mnerqg_graph.predict import read_inputs

    wanted = set(ids) if ids is not None else None
    kept: list[Sample] = []
    for s in read_inputs(path, images):
        if wanted is None:
            kept.append(s)
            if len(kept) >= limit:
                break
        elif s.tweet.id in wanted:
            kept.append(s)
            if len({k.tweet.id for k in kept}) == len(wanted):
                break
    return _pick(kept, ids, limit, path)


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    ap = doc_parser("mnerqg visualize", __doc__)
    add_tweet_input(
        ap,
        input_help="CoNLL or JSON-lines file, or a data-set folder",
        images_help="image folder (<IMGID>.jpg) for --input",
    )
    ap.add_argument("--boxes", help="VOC box folder for a data-set --input (default ROOT/boxes)")
    ap.add_argument("--split", default="test", help="split of a data-set --input (default test)")
    ap.add_argument("--ids", help="comma-separated tweet ids to draw")
    ap.add_argument(
        "--limit", type=int, default=5, help="without --ids, draw the first N tweets (default 5)"
    )
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="strongest token-region edges drawn per scale (default 20, or no limit "
        "when --threshold is given)",
    )
    ap.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="draw only token-region edges with at least this attention weight",
    )
    ap.add_argument("--types", help="comma-separated entity types to draw (default: all)")
    ap.add_argument("--dpi", type=int, default=100, help="resolution of the PNGs (default 100)")
    ap.add_argument(
        "--compact",
        action="store_true",
        help="256-colour PNGs, about a third of the size (e.g. for docs)",
    )
    add_batch_and_device(ap, 8)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mnerqg visualize``."""
    args = build_parser().parse_args(argv)
    check_minimums(args, {"top_k": 1})
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}")
    check_minimums(args, {"dpi": 20, "limit": 1})
    check_tweet_input(args)
    top_k = args.top_k if args.top_k is not None else (None if args.threshold is not None else 20)
    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types else None

    gold: bool | None = None
    if args.text is not None:
        samples = [_text_sample(args.text, args.image)]
    elif Path(args.input).is_dir():
        from mnerqg_graph.data.dataset import load_split

        split = load_split(
            args.input, args.split, images_dir=args.images, boxes_dir=args.boxes, strict=False
        )
        samples = _pick(split.samples, ids, args.limit, split.report.path)
        gold = True if split.report.boxes_dir else None
    else:
        samples = _file_samples(args.input, args.images, ids, args.limit)

    from mnerqg_graph.predict import Predictor
    from mnerqg_graph.viz.artifacts import visualize_samples

    predictor = Predictor(args.checkpoint, args.device, args.batch_size)
    model = predictor.model
    if model.backbone is None:
        print(
            f"note: the model (fusion '{model.config.fusion.name}') has no image branch: the "
            "pictures show the text side only",
            file=sys.stderr,
        )
    paths = visualize_samples(
        model,
        predictor.processor,
        samples,
        args.out,
        top_k=top_k,
        threshold=args.threshold,
        gold=gold,
        types=types,
        batch_size=args.batch_size,
        dpi=args.dpi,
        compact=args.compact,
    )
    folders = sorted({p.parent for p in paths})
    print(f"wrote {len(paths)} files for {len(folders)} tweet(s) under {args.out}")
    for f in folders:
        print(f"  {f}")
    return 0
