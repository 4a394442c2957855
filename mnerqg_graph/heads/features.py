"""The token features the span and tagger heads read, kept in the parts they are made of.

A token node's head input is ``[fused | encoder state, casing | asked type]``: the fusion module's
output for that (tweet, type) example, then the token's own input features (a skip around the
fusion). With packed queries the middle part is the same for the ``T`` examples of a tweet, and
the last is one vector per example. :class:`TokenFeatures` keeps the three apart, so a head's first
linear layer runs on each part at the size it has (``N x W``, ``B x W`` and ``N`` rows) and adds
them, instead of on an ``N x W`` concatenation: the same sums, in less time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnerqg_graph.tensors import take_rows


@dataclass
class TokenFeatures:
    """Head input of ``N`` examples' tokens as ``[fused | shared[rows] | asked]`` columns.

    Attributes:
        fused: per-example token features (the fusion module's output).
        shared: features shared by the examples that read one sequence (encoder state, casing).
        rows: the row of ``shared`` of each example.
        asked: per-example features, the same for all its tokens (the asked type).

    Shapes:
        fused: ``[N, W, F]``; shared: ``[S, W, E]``; rows: ``[N]``; asked: ``[N, A]``.
    """

    fused: Tensor
    shared: Tensor
    rows: Tensor
    asked: Tensor

    @property
    def dim(self) -> int:
        """Width of the concatenation, ``F + E + A``."""
        return self.fused.size(-1) + self.shared.size(-1) + self.asked.size(-1)

    def dense(self) -> Tensor:
        """The concatenation ``[N, W, F + E + A]``."""
        n, w, _ = self.fused.shape
        dtype = self.fused.dtype
        return torch.cat(
            [
                self.fused,
                take_rows(self.shared.to(dtype), self.rows),
                self.asked.to(dtype).unsqueeze(1).expand(n, w, -1),
            ],
            -1,
        )

    def linear(self, layer: nn.Linear) -> Tensor:
        """``layer(self.dense())``, computed part by part (shared rows once, asked once).

        Shapes:
            -> ``[N, W, layer.out_features]``.
        """
        f, e = self.fused.size(-1), self.shared.size(-1)
        w = layer.weight
        dtype = self.fused.dtype
        out = F.linear(self.fused, w[:, :f].to(dtype))
        shared = F.linear(self.shared.to(dtype), w[:, f : f + e].to(dtype))
        out = out + take_rows(shared, self.rows)
        asked = F.linear(self.asked.to(dtype), w[:, f + e :].to(dtype), layer.bias)
        return out + asked.unsqueeze(1)


def first_layer(layer: nn.Linear, h: Tensor | TokenFeatures) -> Tensor:
    """A head's first linear layer on dense features or on :class:`TokenFeatures` parts."""
    return h.linear(layer) if isinstance(h, TokenFeatures) else layer(h)


def prepare(h: Tensor | TokenFeatures, dropout: nn.Dropout) -> Tensor | TokenFeatures:
    """Apply the head's input dropout; features stay in parts only where it is the identity.

    In training (dropout active) the parts are joined first, so each example's tokens get their
    own dropout mask, as with dense features.
    """
    if isinstance(h, TokenFeatures):
        if dropout.training and dropout.p > 0:
            return dropout(h.dense())
        return h
    return dropout(h)


def hidden_width(in_dim: int, hidden_dim: int) -> int:
    """The hidden width of a token head's MLP: ``hidden_dim``, or ``in_dim`` when it is 0.

    Args:
        in_dim: token feature size.
        hidden_dim: the configured width (0: ``in_dim``).

    Raises:
        ValueError: ``hidden_dim`` is negative.
    """
    if hidden_dim < 0:
        raise ValueError(f"hidden_dim must be >= 0 (0: in_dim), not {hidden_dim}")
    return hidden_dim or in_dim
