"""Auxiliary BIO tagger: every entity type's BIO tag on each token node of each query's sequence.

The span heads answer one query ("where are the PER entities?"); this head asks every token of
every (tweet, type) sequence for its tag over *all* types (``O``, ``B-t``, ``I-t``), the training
signal of a plain BIO tagger, so the shared token features also learn what is an entity of another
type. Its loss trains the features the span heads read; it can also decode on its own
(``ModelConfig.decoder="tags"``, :func:`mnerqg_graph.decoding.tag_head_spans`), which the
experiment weighs against the span heads on validation. Tag ids:
:func:`mnerqg_graph.data.collate.bio_tag_names`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mnerqg_graph.heads.features import TokenFeatures, first_layer, hidden_width, prepare


def num_tags(num_types: int) -> int:
    """``O`` plus ``B-`` and ``I-`` of each type."""
    return 1 + 2 * num_types


class TagHead(nn.Module):
    """A two-layer MLP from token node features to BIO tag logits over all types.

    Args:
        in_dim: token feature size (what the span heads read).
        num_types: entity types ``T``.
        dropout: dropout on the token features.
        hidden_dim: width of the hidden layer (0: ``in_dim``).

    Shapes:
        h: ``[N, W, in_dim]`` (or :class:`TokenFeatures` of that width) -> logits
        ``[N, W, 1 + 2 T]``.
    """

    def __init__(
        self, in_dim: int, num_types: int, dropout: float = 0.1, hidden_dim: int = 0
    ) -> None:
        super().__init__()
        hid = hidden_width(in_dim, hidden_dim)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hid),
            nn.GELU(),
            nn.Linear(hid, num_tags(num_types)),
        )

    def forward(self, h: Tensor | TokenFeatures) -> Tensor:
        """Tag logits (``h`` dense or in :class:`TokenFeatures` parts)."""
        h = prepare(h, self.mlp[0])  # type: ignore[arg-type]
        out: Tensor = self.mlp[3](self.mlp[2](first_layer(self.mlp[1], h)))  # type: ignore[arg-type]
        return out

    @staticmethod
    def loss(logits: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Cross-entropy over real tokens.

        Shapes:
            logits: ``[N, W, C]``; tags, mask: ``[N, W]``.
        """
        ce = F.cross_entropy(logits.float().flatten(0, 1), tags.flatten(), reduction="none")
        m = mask.flatten().float()  # a sum, not a masked select: no host-device sync
        return (ce * m).sum() / m.sum().clamp(min=1.0)
