"""MRC span heads (as in MRC-NER): start/end logits per token, a match score per bounded span."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mnerqg_graph.heads.features import TokenFeatures, first_layer, prepare


class SpanHead(nn.Module):
    """Start, end and span-match logits over the original tokens of each (tweet, type) example.

    Args:
        in_dim: token feature size (the fusion module's ``output_dims()["token"]``).
        max_span_len: longest span scored, in tokens.
        dropout: dropout on the token features.

    Shapes:
        h: ``[N, W, in_dim]`` (or :class:`TokenFeatures` of that width); mask: ``[N, W]`` ->
        start, end: ``[N, W]``; match: ``[N, W, S]`` where ``match[n, i, k]`` scores the span of
        tokens ``i..i+k`` (``S = max_span_len``).
    """

    def __init__(self, in_dim: int, max_span_len: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.max_span_len = max_span_len
        self.drop = nn.Dropout(dropout)
        self.start = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, 1))
        self.end = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, 1))
        self.match_start = nn.Linear(in_dim, in_dim)
        self.match_end = nn.Linear(in_dim, in_dim)
        self.match_out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(in_dim, 1))

    def forward(self, h: Tensor | TokenFeatures) -> tuple[Tensor, Tensor, Tensor]:
        """Logits for start, end and match (see the class docstring)."""
        h = prepare(h, self.drop)
        s = self.max_span_len
        hs, he = first_layer(self.match_start, h), first_layer(self.match_end, h)
        he_pad = F.pad(he, (0, 0, 0, s - 1))  # [N, W+S-1, D]
        ends = he_pad.unfold(1, s, 1).permute(0, 1, 3, 2)  # [N, W, S, D]: end i+k for start i
        match = self.match_out(hs.unsqueeze(2) + ends).squeeze(-1)
        start = self.start[2](self.start[1](first_layer(self.start[0], h))).squeeze(-1)
        end = self.end[2](self.end[1](first_layer(self.end[0], h))).squeeze(-1)
        return start, end, match

    def candidate_mask(self, mask: Tensor) -> Tensor:
        """Which (start i, length k) pairs are real spans: both ends are real tokens.

        Shapes:
            mask: ``[N, W]`` bool -> ``[N, W, S]`` bool.
        """
        s = self.max_span_len
        pad = F.pad(mask, (0, s - 1), value=False)
        return mask.unsqueeze(-1) & pad.unfold(1, s, 1)

    def loss(
        self,
        logits: tuple[Tensor, Tensor, Tensor],
        mask: Tensor,
        start: Tensor,
        end: Tensor,
        match: Tensor,
    ) -> dict[str, Tensor]:
        """Binary cross-entropy of the three outputs over real tokens / real spans.

        The match loss is taken over spans whose start and end are gold or predicted boundaries
        (MRC-NER's candidate set) plus every gold span, so it concentrates on hard pairs.

        Shapes:
            mask, start, end: ``[N, W]``; match: ``[N, W, S]`` (0/1 labels).
        """
        start_l, end_l, match_l = logits
        m = mask.float()
        denom = m.sum().clamp(min=1.0)
        loss_start = (
            F.binary_cross_entropy_with_logits(start_l, start, reduction="none") * m
        ).sum()
        loss_end = (F.binary_cross_entropy_with_logits(end_l, end, reduction="none") * m).sum()
        cand = self.candidate_mask(mask)
        s = self.max_span_len
        start_ok = (start > 0.5) | (start_l > 0)
        end_ok = (end > 0.5) | (end_l > 0)
        end_ok_pad = F.pad(end_ok, (0, s - 1), value=False).unfold(1, s, 1)
        focus = (cand & start_ok.unsqueeze(-1) & end_ok_pad) | (match > 0.5)
        f = focus.float()
        loss_match = (
            F.binary_cross_entropy_with_logits(match_l, match, reduction="none") * f
        ).sum()
        return {
            "start": loss_start / denom,
            "end": loss_end / denom,
            "match": loss_match / f.sum().clamp(min=1.0),
        }
