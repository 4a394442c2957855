"""Fusion modules, one per file; importing this package registers them all."""

from mnerqg_graph.fusion import hetero_gat, none  # noqa: F401  (registration side effects)
from mnerqg_graph.fusion.base import FUSION_REGISTRY, FusionModule, FusionOutput, register_fusion

__all__ = ["FUSION_REGISTRY", "FusionModule", "FusionOutput", "register_fusion"]
