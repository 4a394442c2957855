"""Decoding study of a trained checkpoint on a validation file: is the F1 left in the decoding?

Usage::

    python -m benchmarks.decoding_study --checkpoint DIR --input VALID.txt [--out FILE.md]

One forward pass over the file (gold BIO labels in CoNLL), then entity F1 (conlleval counting)
under decoding rules over a grid of thresholds, and where the errors of the checkpoint's own
decoding come from (:func:`mnerqg_graph.metrics.error_breakdown`):

- ``all``: the model's rule: start, end and match probability each over the threshold;
- ``mean``: their geometric mean over the threshold (a confident match can carry a weak end);
- ``pooled``: ``all``, plus spans that no type passes but whose geometric means summed over the
  types pass a second threshold, given their best type (for entities whose probability is split
  between types).

Every rule feeds the same cross-type overlap resolution as the model
(:func:`mnerqg_graph.data.mrc.decode_spans`). Choosing a decoding is model selection: the input
must be a validation file, and a file named ``test*`` is refused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = ["SpanProbs", "collect", "decode_rule", "main", "study"]

THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
POOL_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
RULES = ("all", "mean", "pooled")


@dataclass
class SpanProbs:
    """One (tweet, type) example's span probabilities (see ``MnerqgModel.span_probabilities``).

    Shapes:
        start: ``[W, 1]``; end, match: ``[W, S]``; is_span: ``[W, S]`` bool.
    """

    type: str
    start: torch.Tensor
    end: torch.Tensor
    match: torch.Tensor
    is_span: torch.Tensor
    existence: float


def collect(
    model: Any, items: list[Any], batch_size: int, pad_id: int
) -> dict[int, list[SpanProbs]]:
    """Span probabilities of every example, by tweet index (one forward pass, CPU).

    Args:
        model: an ``MnerqgModel`` in eval mode.
        items: tweet items (``MnerqgProcessor(samples).items``).
        batch_size: tweets per forward pass.
        pad_id: the tokenizer's padding id.
    """
    from mnerqg_graph.data.collate import collate

    cfg = model.config
    out: dict[int, list[SpanProbs]] = {}
    # similar lengths together, as the pipeline batches them: less padding
    items = sorted(items, key=lambda it: max(len(ex.input_ids) for ex in it.examples))
    with torch.no_grad():
        for k in range(0, len(items), batch_size):
            chunk = items[k : k + batch_size]
            fwd = model(collate(chunk, cfg.heads.max_span_len, cfg.image.image_size, pad_id))
            ps, pe, pm, cand = model.span_probabilities(fwd)
            pex = torch.sigmoid(fwd.existence_logits).tolist()
            row = 0
            for it in chunk:
                for ex in it.examples:
                    out.setdefault(it.index, []).append(
                        SpanProbs(ex.type, ps[row], pe[row], pm[row], cand[row], pex[row])
                    )
                    row += 1
    return out


def decode_rule(
    probs: Sequence[SpanProbs],
    n_tokens: int,
    rule: str,
    threshold: float,
    existence_threshold: float = 0.0,
    pool_threshold: float = 1.0,
) -> list[str]:
    """One tweet's BIO tags under a decoding rule (see the module docstring).

    Args:
        probs: the tweet's examples, one per type.
        n_tokens: the tweet's number of tokens.
        rule: ``all``, ``mean`` or ``pooled``.
        threshold: the span threshold.
        existence_threshold: types whose existence probability is under it get no spans (0: off).
        pool_threshold: ``pooled`` only: the threshold of the summed geometric means.
    """
    from mnerqg_graph.data.mrc import decode_spans, spans_to_bio

    cands: list[tuple[int, int, str, float]] = []
    means: dict[str, torch.Tensor] = {}
    for p in probs:
        if existence_threshold > 0 and p.existence < existence_threshold:
            continue
        mean = (p.start * p.end * p.match * p.is_span).clamp(min=1e-12) ** (1 / 3)
        if rule == "mean":
            ok = (mean > threshold) & p.is_span
        else:
            ok = (p.start > threshold) & (p.end > threshold) & (p.match > threshold) & p.is_span
        means[p.type] = mean * p.is_span
        for i, k in ok.nonzero().tolist():
            cands.append((i, i + k + 1, p.type, float(mean[i, k])))
    if rule == "pooled" and means:
        types = list(means)
        stacked = torch.stack([means[t] for t in types])  # [T, W, S]
        total, best = stacked.sum(0), stacked.argmax(0)
        have = {(a, b) for a, b, _, _ in cands}
        for i, k in (total > pool_threshold).nonzero().tolist():
            if (i, i + k + 1) not in have:  # ranked under every passing candidate
                cands.append((i, i + k + 1, types[int(best[i, k])], float(stacked[:, i, k].max())))
    return spans_to_bio(n_tokens, decode_spans(n_tokens, cands))


def study(
    probs: dict[int, list[SpanProbs]], gold: list[list[str]], own: tuple[float, float]
) -> dict[str, Any]:
    """F1 of every (rule, thresholds) and the error breakdown at the checkpoint's own decoding.

    Args:
        probs: from :func:`collect`.
        gold: gold BIO tags per tweet, in item index order.
        own: the checkpoint's ``(span_threshold, existence_threshold)``.

    Returns:
        ``{"grid": [(f1, rule, threshold, existence_threshold, pool_threshold)], "own": ...,
        "errors": ErrorBreakdown}``, the grid sorted best first.
    """
    from mnerqg_graph.metrics import entity_prf, error_breakdown

    def tags(rule: str, t: float, et: float, pool: float = 1.0) -> list[list[str]]:
        return [
            decode_rule(probs.get(i, []), len(g), rule, t, et, pool) for i, g in enumerate(gold)
        ]

    grid: list[tuple[float, str, float, float, float | None]] = []
    for t in THRESHOLDS:
        for et in (0.0, 0.5):
            for rule in ("all", "mean"):
                grid.append((entity_prf(gold, tags(rule, t, et)).micro.f1, rule, t, et, None))
            for pool in POOL_THRESHOLDS:
                f1 = entity_prf(gold, tags("pooled", t, et, pool)).micro.f1
                grid.append((f1, "pooled", t, et, pool))
    grid.sort(key=lambda r: -r[0])
    own_tags = tags("all", *own)
    return {
        "grid": grid,
        "own": entity_prf(gold, own_tags).micro.f1,
        "errors": error_breakdown(gold, own_tags),
    }


def markdown(result: dict[str, Any], own: tuple[float, float], label: str) -> str:
    """The study as a markdown section."""
    e = result["errors"]
    best = {r: next(g for g in result["grid"] if g[1] == r) for r in RULES}
    lines = [
        f"Decoding study of `{label}` (validation):",
        "",
        "| rule | best F1 | span threshold | existence threshold | pool threshold |",
        "|---|---:|---:|---:|---:|",
        f"| `all`, the checkpoint's own thresholds | {100 * result['own']:.2f} | {own[0]:.2f} "
        f"| {'off' if own[1] == 0 else f'{own[1]:.2f}'} | |",
    ]
    for r in RULES:
        f1, _, t, et, pool = best[r]
        lines.append(
            f"| `{r}` | {100 * f1:.2f} | {t:.2f} | {'off' if et == 0 else f'{et:.2f}'} "
            f"| {'' if pool is None else f'{pool:.2f}'} |"
        )
    conf = ", ".join(f"{g}->{p} {n}" for (g, p), n in e.confusions.most_common(6))
    unseen = ", ".join(f"{t} {n}" for t, n in e.unseen_by_type.most_common())
    lines += [
        "",
        f"Errors at the checkpoint's own decoding: of {e.gold} gold entities {e.correct} correct, "
        f"{e.unseen} with no overlapping prediction ({unseen}), {e.wrong_type} with the right "
        f"span and another type ({conf}), {e.boundary} overlapped with other boundaries; of "
        f"{e.predicted} predicted, {e.overlapping} overlap a gold entity and {e.spurious} "
        "overlap none.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.decoding_study", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--input", required=True, help="validation file (CoNLL, gold labels)")
    p.add_argument("--out", default=None, help="also write the markdown here")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    if Path(args.input).name.lower().startswith("test"):
        p.error(f"{args.input}: decodings are chosen on validation; a test file is not studied")

    from mnerqg_graph.data.conll import read_conll
    from mnerqg_graph.data.types import Sample
    from mnerqg_graph.errors import MnerqgError
    from mnerqg_graph.io import atomic_write_text
    from mnerqg_graph.training.checkpoint import load_checkpoint

    try:
        tweets = read_conll(args.input).tweets
        model, processor = load_checkpoint(args.checkpoint, torch.device("cpu"))
    except (MnerqgError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model.eval()
    cfg = model.config
    inputs = processor.replace(image_size=None)([Sample(t) for t in tweets])
    probs = collect(model, inputs.items, args.batch_size, inputs.pad_id)
    own = (float(cfg.decoding.span_threshold), float(cfg.decoding.existence_threshold))
    result = study(probs, [list(t.tags) for t in tweets], own)
    text = markdown(result, own, args.checkpoint)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
