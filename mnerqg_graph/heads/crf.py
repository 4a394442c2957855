"""A linear-chain CRF over the auxiliary tagger's BIO tags (``ModelConfig.tag_crf``).

With it the tagger's loss is the negative log-likelihood of the gold tag sequence under learned
tag-to-tag transitions instead of a per-token cross-entropy, and the ``tags`` decoder reads the
best sequence (Viterbi) instead of each token's best tag. The BIO constraints are built in:
``I-t`` follows only ``B-t`` or ``I-t`` and never opens a sequence, so a decoded sequence is
always well-formed.

Tag ids are those of :func:`mnerqg_graph.data.collate.bio_tag_names`: ``O``, then ``B-t``,
``I-t`` per type. A mask need not be a prefix: a token without word pieces (an emoji variation
selector, a zero-width joiner) is masked out in the middle of a tweet, and the chain runs over
the kept tokens in their order, linking the tokens on either side of such a hole (each row's kept
tokens are first moved to the front, :func:`kept_first`). The loops run over token positions (a
tweet's words), never over examples or edges.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnerqg_graph.heads.tagger import num_tags

#: Score of a transition the BIO scheme forbids (finite, so that sums stay finite).
FORBIDDEN = -1e4


def kept_first(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's kept positions first, in order, then the others.

    Args:
        mask: ``[N, W]`` boolean, True where a token is kept.

    Returns:
        ``(order, prefix)``: ``order [N, W]`` the positions to gather (kept ones first, stable),
        ``prefix [N, W]`` the mask of the gathered rows (a prefix of ``mask.sum(1)`` per row).
    """
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    counts = mask.sum(1, keepdim=True)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < counts
    return order, prefix


class BioCrf(nn.Module):
    """Transition, start and end scores over the BIO tags of ``num_types`` types.

    Args:
        num_types: entity types ``T`` (``1 + 2 T`` tags).

    Shapes:
        emissions: ``[N, W, 1 + 2 T]`` (tag scores per token); tags: ``[N, W]``; mask: ``[N, W]``
        (the tokens in the chain) -> loss ``[N]``, paths: one list of ``mask[n].sum()`` tag ids
        per row, one per kept token in order.
    """

    def __init__(self, num_types: int) -> None:
        super().__init__()
        c = num_tags(num_types)
        self.num_tags = c
        self.transitions = nn.Parameter(torch.zeros(c, c))  # [from, to]
        self.start = nn.Parameter(torch.zeros(c))
        self.end = nn.Parameter(torch.zeros(c))
        allowed = torch.ones(c, c, dtype=torch.bool)
        opens = torch.ones(c, dtype=torch.bool)
        for t in range(num_types):
            b, i = 1 + 2 * t, 2 + 2 * t
            allowed[:, i] = False
            allowed[b, i] = allowed[i, i] = True
            opens[i] = False
        self.register_buffer("allowed", allowed, persistent=False)
        self.register_buffer("opens", opens, persistent=False)

    def scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(transitions [C, C], start [C], end [C])`` with the forbidden moves at FORBIDDEN."""
        trans = self.transitions.masked_fill(~self.allowed, FORBIDDEN)  # type: ignore[operator]
        start = self.start.masked_fill(~self.opens, FORBIDDEN)  # type: ignore[operator]
        return trans, start, self.end

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood of each row's gold tags over its kept tokens (0 without any)."""
        mask = mask.bool()
        order, mask = kept_first(mask)
        emissions = emissions.float().gather(1, order[:, :, None].expand_as(emissions))
        tags = tags.gather(1, order)
        trans, start, end = self.scores()
        n, w, _ = emissions.shape
        if w == 0:  # no token in any row (empty tweets): 0, still part of the autograd graph
            return emissions.sum((1, 2)) * 0.0
        rows = torch.arange(n, device=emissions.device)
        # the gold path's score
        gold = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, w):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            gold = gold + step * mask[:, t]
        last = tags[rows, (mask.sum(1) - 1).clamp(min=0)]
        gold = gold + end[last]
        # the partition function (forward algorithm)
        alpha = start[None, :] + emissions[:, 0]  # [N, C]
        for t in range(1, w):
            nxt = torch.logsumexp(alpha[:, :, None] + trans[None] + emissions[:, t, None, :], 1)
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        log_z = torch.logsumexp(alpha + end[None, :], 1)
        return (log_z - gold) * mask[:, 0]

    def loss(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """The summed negative log-likelihood per real token (the cross-entropy's scale)."""
        return self.nll(emissions, tags, mask).sum() / mask.float().sum().clamp(min=1.0)

    @torch.no_grad()
    def viterbi(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """The best tag sequence of each row over its kept tokens (one tag each, in order)."""
        mask = mask.bool()
        order, mask = kept_first(mask)
        emissions = emissions.float().gather(1, order[:, :, None].expand_as(emissions))
        trans, start, end = self.scores()
        n, w, c = emissions.shape
        if w == 0:  # no token in any row (empty tweets)
            return [[] for _ in range(n)]
        score = start[None, :] + emissions[:, 0]  # [N, C]
        back = torch.zeros(n, w, c, dtype=torch.long, device=emissions.device)
        for t in range(1, w):
            best, arg = (score[:, :, None] + trans[None]).max(1)  # over the previous tag
            back[:, t] = arg
            score = torch.where(mask[:, t, None], best + emissions[:, t], score)
        score = score + end[None, :]
        lengths = mask.sum(1).tolist()
        last = score.argmax(1).tolist()
        back_cpu = back.cpu()
        paths: list[list[int]] = []
        for row in range(n):
            length = int(lengths[row])
            if length == 0:
                paths.append([])
                continue
            path = [int(last[row])]
            for t in range(length - 1, 0, -1):
                path.append(int(back_cpu[row, t, path[-1]]))
            paths.append(path[::-1])
        return paths
