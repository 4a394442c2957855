"""Region sources: backbone feature maps in, region nodes out (see :mod:`.sources`).

Importing this package registers every built-in source in ``REGION_SOURCE_REGISTRY``: ``grid`` and
``detector_boxes`` (:mod:`mnerqg_graph.regions.sources`) and ``detector``
(:mod:`mnerqg_graph.regions.detector`).
"""

from mnerqg_graph.regions import sources
from mnerqg_graph.regions.detector import DetectorRegions
from mnerqg_graph.regions.sources import (  # noqa: F401 - all of sources.__all__, re-exported
    REGION_SOURCE_REGISTRY,
    BoxDetections,
    DetectorBoxRegions,
    GridRegions,
    RegionNodes,
    RegionSet,
    RegionSource,
    assign_levels,
    build_region_source,
    grid_boxes,
    grid_neighbors,
    parent_index,
)

__all__ = [*sources.__all__, "DetectorRegions"]
