"""Image side of MNER-QG: backbones, region sources, object detectors, grounding, weak labels.

Importing this package registers every built-in backbone in ``BACKBONE_REGISTRY`` and every region
source in ``REGION_SOURCE_REGISTRY`` (what the model needs), and nothing more: the object detectors
(:mod:`detectors.detection`, which registers its backends in ``DETECTOR_REGISTRY`` when imported),
the visual-grounding model (:mod:`detectors.grounder`), weak labels (:mod:`detectors.weak_labels`)
and the region cache (:mod:`detectors.region_cache`) are imported by those who use them.
"""

from detectors import detector_regions  # noqa: F401  (registers the 'detector' source)
from detectors.backbones import (
    BACKBONE_REGISTRY,
    ImageBackbone,
    ShapeSpec,
    build_backbone,
    load_state_dict_file,
)
from detectors.regions import (
    REGION_SOURCE_REGISTRY,
    RegionNodes,
    RegionSet,
    RegionSource,
    build_region_source,
    grid_boxes,
    grid_neighbors,
    parent_index,
)

__all__ = [
    "BACKBONE_REGISTRY",
    "REGION_SOURCE_REGISTRY",
    "ImageBackbone",
    "RegionNodes",
    "RegionSet",
    "RegionSource",
    "ShapeSpec",
    "build_backbone",
    "build_region_source",
    "grid_boxes",
    "grid_neighbors",
    "load_state_dict_file",
    "parent_index",
]
