"""Existence head: does entity type t occur in the tweet (from the fused query node)?"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ExistenceHead(nn.Module):
    """A two-layer MLP on the query node.

    Args:
        in_dim: query feature size.
        dropout: dropout before the MLP.

    Shapes:
        q: ``[N, in_dim]`` -> logits ``[N]``.
    """

    def __init__(self, in_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, 1)
        )

    def forward(self, q: Tensor) -> Tensor:
        """Existence logits."""
        return self.mlp(q).squeeze(-1)

    @staticmethod
    def loss(logits: Tensor, target: Tensor) -> Tensor:
        """Binary cross-entropy against the 0/1 existence labels."""
        return F.binary_cross_entropy_with_logits(logits, target)
