"""MRC span heads (as in MRC-NER): start/end logits per token, a match score per bounded span."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from mnerqg_graph.heads.features import TokenFeatures, first_layer, hidden_width, prepare
from mnerqg_graph.tensors import take_rows

#: The match logit of a span that was not scored (``pairs``): sigmoid 0, a zero loss term.
UNSCORED = -1e4


def _boundary(mlp: nn.Sequential, h: Tensor | TokenFeatures) -> Tensor:
    """A ``Linear, GELU, Linear`` boundary scorer whose first layer reads ``h`` in parts."""
    first = mlp[0]
    assert isinstance(first, nn.Linear)
    out: Tensor = mlp[2](mlp[1](first_layer(first, h)))
    return out.squeeze(-1)


class SpanHead(nn.Module):
    """Start, end and span-match logits over the original tokens of each (tweet, type) example.

    Args:
        in_dim: token feature size (the fusion module's ``output_dims()["token"]``).
        max_span_len: longest span scored, in tokens.
        dropout: dropout on the token features.
        hidden_dim: width of the start/end MLPs' hidden layer and of the match head's start and
            end projections (0: ``in_dim``). Their first layers run on every token of every
            (tweet, type) example, so a narrower width is most of what the heads cost.

    Shapes:
        h: ``[N, W, in_dim]`` (or :class:`TokenFeatures` of that width); mask: ``[N, W]`` ->
        start, end: ``[N, W]``; match: ``[N, W, S]`` where ``match[n, i, k]`` scores the span of
        tokens ``i..i+k`` (``S = max_span_len``).
    """

    def __init__(
        self, in_dim: int, max_span_len: int, dropout: float = 0.1, hidden_dim: int = 0
    ) -> None:
        super().__init__()
        hid = hidden_width(in_dim, hidden_dim)
        self.max_span_len = max_span_len
        self.drop = nn.Dropout(dropout)
        self.start = nn.Sequential(nn.Linear(in_dim, hid), nn.GELU(), nn.Linear(hid, 1))
        self.end = nn.Sequential(nn.Linear(in_dim, hid), nn.GELU(), nn.Linear(hid, 1))
        self.match_start = nn.Linear(in_dim, hid)
        self.match_end = nn.Linear(in_dim, hid)
        self.match_out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hid, 1))

    def forward(
        self, h: Tensor | TokenFeatures, pairs: Callable[[Tensor, Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits for start, end and match (see the class docstring).

        Args:
            h: token features.
            pairs: None scores every span; else a function of the start and end logits giving
                the ``[N, W, S]`` spans to score (see :meth:`focus` and :meth:`decodable`).
                Every other span gets the match logit :data:`UNSCORED`: its probability is 0 and
                its loss term, where it has one, is 0 (a span outside the loss's focus has none).
        """
        h = prepare(h, self.drop)
        s = self.max_span_len
        start, end = _boundary(self.start, h), _boundary(self.end, h)
        hs, he = first_layer(self.match_start, h), first_layer(self.match_end, h)
        n, w, _ = hs.shape
        if pairs is None:
            he_pad = F.pad(he, (0, 0, 0, s - 1))  # [N, W+S-1, D]
            ends = he_pad.unfold(1, s, 1).permute(0, 1, 3, 2)  # [N, W, S, D]: end i+k, start i
            return start, end, self.match_out(hs.unsqueeze(2) + ends).squeeze(-1)
        # only the asked spans: [P, D] instead of [N, W, S, D] through GELU, dropout and Linear
        ex, i, k = pairs(start, end).nonzero(as_tuple=True)
        row = ex * w + i  # [P] rows of the flattened [N * W, D] features
        pair = take_rows(hs.flatten(0, 1), row) + take_rows(he.flatten(0, 1), row + k)
        scored = self.match_out(pair).squeeze(-1)
        match = scored.new_full((n, w, s), UNSCORED).index_put((ex, i, k), scored)
        return start, end, match

    def focus(
        self,
        start_l: Tensor,
        end_l: Tensor,
        mask: Tensor,
        start: Tensor,
        end: Tensor,
        match: Tensor,
    ) -> Tensor:
        """The spans the match loss is taken over: MRC-NER's candidates plus the gold spans.

        A real span (both ends are tokens the encoder saw) whose start and end are each a gold or
        a predicted boundary, or a real gold span.

        Shapes:
            start_l, end_l: ``[N, W]`` logits; mask, start, end: ``[N, W]``; match: ``[N, W, S]``
            (0/1 labels) -> ``[N, W, S]`` bool.
        """
        s = self.max_span_len
        start_ok = (start > 0.5) | (start_l > 0)
        end_ok = (end > 0.5) | (end_l > 0)
        end_ok_pad = F.pad(end_ok, (0, s - 1), value=False).unfold(1, s, 1)
        # a gold span whose start or end token is no node (a zero-piece token) cannot be decoded:
        # not taught either (its features would be the [CLS] state's)
        candidates = self.candidate_mask(mask)
        return candidates & ((start_ok.unsqueeze(-1) & end_ok_pad) | (match > 0.5))

    def decodable(self, start_l: Tensor, end_l: Tensor, mask: Tensor, floor: float) -> Tensor:
        """Real spans whose start and end probabilities both pass ``floor``.

        Decoding at a span threshold ``t >= floor`` accepts only such spans (it asks start, end
        and match to pass ``t``), so scoring just these decodes exactly as scoring all.

        Shapes:
            start_l, end_l: ``[N, W]`` logits; mask: ``[N, W]`` -> ``[N, W, S]`` bool.
        """
        s = self.max_span_len
        if floor <= 0:
            logit = -math.inf
        elif floor >= 1:
            logit = math.inf
        else:
            logit = math.log(floor / (1 - floor))
        start_ok = start_l.float() > logit
        end_ok = F.pad(end_l.float() > logit, (0, s - 1), value=False).unfold(1, s, 1)
        return self.candidate_mask(mask) & start_ok.unsqueeze(-1) & end_ok

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
        f = self.focus(start_l, end_l, mask, start, end, match).float()
        loss_match = (
            F.binary_cross_entropy_with_logits(match_l, match, reduction="none") * f
        ).sum()
        return {
            "start": loss_start / denom,
            "end": loss_end / denom,
            "match": loss_match / f.sum().clamp(min=1.0),
        }
