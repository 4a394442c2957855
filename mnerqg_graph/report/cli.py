"""``mnerqg report``: one HTML page of a checkpoint's predictions, errors and alignments on a split.

    mnerqg report --checkpoint DIR --data DIR [--split valid] --out report.html [--limit N]

The page is self-contained (script, styles, data and images inlined): it opens from disk in a
browser with no network. It shows the scores (micro and per-type P/R/F1, the type confusion table,
grounding accuracy and grounded-NER F1 where the split has images), the tweets with gold and
predicted entities, filterable by error kind and type and searchable, and for a selected tweet its
image with gold and predicted boxes and the alignment graph of each type's query. Entities are
those of ``mnerqg predict`` and scores those of ``mnerqg evaluate`` for the same checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from mnerqg_graph.cli_args import add_batch_and_device, check_minimums, doc_parser
from mnerqg_graph.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    ap = doc_parser("mnerqg report", __doc__)
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory")
    ap.add_argument("--data", required=True, help="data-set folder (train/valid/test.txt ...)")
    ap.add_argument("--split", default="valid", help="split to report on (default valid)")
    ap.add_argument("--out", required=True, help="the HTML file to write")
    ap.add_argument("--limit", type=int, default=None, help="only the first N tweets of the split")
    ap.add_argument("--images", help="image folder (default DATA/images when it exists)")
    ap.add_argument("--boxes", help="VOC box folder (default DATA/boxes when it exists)")
    ap.add_argument("--title", help="page title (default: MNER-QG report: SPLIT)")
    ap.add_argument(
        "--image-side",
        type=int,
        default=320,
        help="longest side of the embedded pictures in pixels (default 320)",
    )
    add_batch_and_device(ap, 32)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mnerqg report``."""
    args = build_parser().parse_args(argv)
    check_minimums(args, {"limit": 1, "batch_size": 1, "image_side": 16})
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out is a folder, not a file: {out}")

    from mnerqg_graph.data.dataset import canonical_split, load_split
    from mnerqg_graph.training.checkpoint import check_checkpoint_dir

    check_checkpoint_dir(args.checkpoint)
    split = canonical_split(args.split)
    data = load_split(args.data, split, args.images, args.boxes, strict=False)
    fatal = [p for p in data.report.problems if p.fatal]
    if fatal:
        print(
            f"warning: {len(fatal)} problem(s) in the {split} split, first: {fatal[0]} "
            f"(mnerqg check-data {args.data} lists them); the readable tweets are reported",
            file=sys.stderr,
        )
    samples = data.samples[: args.limit] if args.limit else data.samples
    if not samples:
        raise ConfigError(f"{data.report.path}: no tweets to report on")
    ambiguous = None
    if (Path(args.data) / "synth_meta.json").is_file():
        from mnerqg_graph.data.synth import load_ambiguous

        ambiguous = load_ambiguous(args.data).get(split)

    from mnerqg_graph.predict import Predictor
    from mnerqg_graph.report import write_report

    started = time.perf_counter()
    predictor = Predictor(args.checkpoint, args.device, args.batch_size)
    meta = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "split": split,
        "limit": args.limit,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    report = write_report(
        out,
        predictor.model,
        predictor.processor,
        samples,
        title=args.title,
        meta=meta,
        ambiguous=ambiguous,
        batch_size=args.batch_size,
        device=predictor.device,
        image_side=args.image_side,
    )
    micro = report["scores"]["entity"]["micro"]
    size = out.stat().st_size
    print(
        f"wrote {out} ({size / 1e6:.1f} MB, {len(samples)} tweets, "
        f"{report['meta']['n_images']} images) in {time.perf_counter() - started:.1f} s: "
        f"entity F1 {100 * micro['f1']:.2f}; open it in a browser"
    )
    return 0
