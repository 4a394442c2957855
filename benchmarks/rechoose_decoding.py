r"""Choose a kept run's decoder and thresholds again on validation, with today's choice.

Usage::

    python -m benchmarks.rechoose_decoding --runs RUNS.jsonl --dataset twitter2017 \
        --variant tag_head=True --seed 1 --data-root ../shared/data/twitter2017

For a run of :mod:`benchmarks.real_data` kept with ``--checkpoints`` that finished before the
experiment chose among the decoders (``experiments.runner.choose_decoding``): the same choice is
made on its checkpoint, on the validation split, as a run finishing today would make it. When it
differs from the checkpoint's, the checkpoint's config is rewritten, the test split is decoded
once with the new choice, and the run's record in ``RUNS.jsonl`` gets the new validation and test
scores (marked ``decoding_rechosen``). The training is not repeated: the epoch was chosen with the
span heads' F1 during training either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.runlog import load_runs  # noqa: E402

__all__ = ["main", "rechoose"]


def rechoose(record: dict[str, Any], data_root: Path, batch_size: int = 32) -> dict[str, Any]:
    """The record after choosing its checkpoint's decoding on validation (see the module doc).

    Args:
        record: a :mod:`benchmarks.real_data` record with a ``checkpoint``.
        data_root: the data set's folder (``valid.txt``, ``test.txt``).
        batch_size: tweets per forward pass.

    Returns:
        A new record (the input when the choice is unchanged).
    """
    import torch

    from experiments.runner import choose_decoding
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.evaluation import score_predictions
    from mnerqg_graph.pipeline import predict
    from mnerqg_graph.training.checkpoint import load_checkpoint

    ckpt = Path(record["checkpoint"])
    device = torch.device("cpu")
    model, processor = load_checkpoint(ckpt, device)
    cfg = model.config
    model.eval()
    text_only = processor.replace(image_size=None)  # the real-data runs had no images
    inputs = {split: text_only(load_split(data_root, split).samples) for split in ("valid", "test")}
    types = list(processor.queries)
    chosen, scored, by_decoder = choose_decoding(
        model, inputs["valid"], types, None, "f1", batch_size, device
    )
    own = (
        cfg.decoding.decoder,
        float(cfg.decoding.span_threshold),
        float(cfg.decoding.existence_threshold),
    )
    print(f"{ckpt}: kept {own}, valid f1 {record['result'].get('valid/f1', float('nan')):.4f}")
    print(f"{ckpt}: chosen {chosen}, valid f1 {scored['f1']:.4f}")
    print(f"{ckpt}: best valid f1 by decoder: {by_decoder}")
    if chosen == own:
        return record
    cfg.decoding.decoder = chosen[0]
    cfg.decoding.span_threshold, cfg.decoding.existence_threshold = chosen[1], chosen[2]
    model.save_pretrained(ckpt, processor)
    preds = predict(model, inputs["test"], batch_size=batch_size, device=device)
    test = score_predictions(inputs["test"].samples, preds, types)
    result = dict(record["result"])
    result.update({f"test/{k}": float(v) for k, v in test.items()})
    result.update({f"valid/{k}": float(v) for k, v in scored.items()})
    result.update(
        span_threshold=float(cfg.decoding.span_threshold),
        existence_threshold=float(cfg.decoding.existence_threshold),
        tag_decoder=float(cfg.decoding.decoder == "tags"),
    )
    print(f"{ckpt}: test f1 {test['f1']:.4f} (was {record['result'].get('test/f1', 0):.4f})")
    return {**record, "result": result, "decoding_rechosen": time.strftime("%Y-%m-%d")}


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.rechoose_decoding", description=__doc__)
    p.add_argument("--runs", required=True, type=Path, help="the real_data JSON-lines file")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--data-root", required=True, type=Path)
    args = p.parse_args(argv)

    from mnerqg_graph.errors import MnerqgError
    from mnerqg_graph.io import atomic_write_text

    rows = load_runs(args.runs)
    hits = [
        i
        for i, r in enumerate(rows)
        if (r.get("dataset"), r.get("variant"), r.get("seed"), r.get("updates") or [])
        == (args.dataset, args.variant, args.seed, [])
    ]
    if len(hits) != 1:
        p.error(f"{args.runs}: {len(hits)} records of {args.variant} seed {args.seed}, not one")
    if "checkpoint" not in rows[hits[0]]:
        p.error(f"{args.runs}: the record kept no checkpoint (run real_data with --checkpoints)")
    try:
        new = rechoose(rows[hits[0]], args.data_root)
    except (MnerqgError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if new is not rows[hits[0]]:
        rows[hits[0]] = new
        atomic_write_text(args.runs, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
