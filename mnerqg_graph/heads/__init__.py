"""Task heads on top of the fused graph: MRC span, existence and query grounding."""

from mnerqg_graph.heads.existence import ExistenceHead
from mnerqg_graph.heads.grounding import GroundingHead
from mnerqg_graph.heads.span import SpanHead

__all__ = ["ExistenceHead", "GroundingHead", "SpanHead"]
