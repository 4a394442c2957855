"""The detector toolkit of MNER-QG: object detectors, visual grounding, weak labels, region cache.

It builds on the core: the image backbones (:mod:`mnerqg_graph.encoders.image`) and region sources
(:mod:`mnerqg_graph.regions`) that the model needs live in ``mnerqg_graph``, and nothing in
``mnerqg_graph`` imports this package at module level (the model's ``detector`` regions load a
detector checkpoint through :mod:`detectors.detection`, when such a model is built).

- :mod:`detectors.detection`: object detectors (``DETECTOR_REGISTRY``, backends registered when it
  is imported), their training, detection files and box AP; ``python -m detectors.detector``;
- :mod:`detectors.grounder`, :mod:`detectors.weak_labels`, :mod:`detectors.manual`: the
  visual-grounding model, weak labels and the choice of "manual" tweets;
- :mod:`detectors.region_cache`: region features extracted once (``mnerqg extract-regions``).

The backbone and region-source names below are re-exported from the core, so
``from detectors import BACKBONE_REGISTRY, ...`` keeps working.
"""

from mnerqg_graph.encoders.image import (
    BACKBONE_REGISTRY,
    ImageBackbone,
    ShapeSpec,
    build_backbone,
    load_state_dict_file,
)
from mnerqg_graph.regions import (
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
