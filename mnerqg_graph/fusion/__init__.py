"""Fusion modules, one per file; importing this package registers them all."""

# first: imports PyTorch Geometric without its import-time FutureWarning (mnerqg_graph.graph)
from mnerqg_graph import graph  # noqa: F401
from mnerqg_graph.fusion import cross_attention, graph_transformer, hetero_gat, hgt, none  # noqa: F401
from mnerqg_graph.fusion.base import FUSION_REGISTRY, FusionModule, FusionOutput, register_fusion

__all__ = ["FUSION_REGISTRY", "FusionModule", "FusionOutput", "register_fusion"]
