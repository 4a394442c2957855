"""Task heads on the fused graph: MRC span, existence, query grounding, auxiliary BIO tagger."""

from mnerqg_graph.heads.box_grounding import BoxGroundingHead
from mnerqg_graph.heads.existence import ExistenceHead
from mnerqg_graph.heads.grounding import GroundingHead
from mnerqg_graph.heads.span import SpanHead
from mnerqg_graph.heads.tagger import TagHead

__all__ = ["BoxGroundingHead", "ExistenceHead", "GroundingHead", "SpanHead", "TagHead"]
