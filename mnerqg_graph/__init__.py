"""mnerqg-graph: multimodal NER with query grounding (MNER-QG) as graph-based, modular reasoning.

The Hugging Face-style entry points are imported on first use (``import mnerqg_graph`` stays
light)::

    from mnerqg_graph import MnerqgModel, MnerqgProcessor

    model = MnerqgModel.from_pretrained("runs/demo/checkpoint")
    processor = MnerqgProcessor.from_pretrained("runs/demo/checkpoint")
    predictions = model.predict(processor(["Kelvo visits Marn today"]))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnerqg_graph.model import MnerqgModel
    from mnerqg_graph.pipeline import Pipeline
    from mnerqg_graph.processing import MnerqgProcessor

__version__ = "0.1.0"

_WHERE = {"MnerqgModel": "model", "MnerqgProcessor": "processing", "Pipeline": "pipeline"}

__all__ = ["MnerqgModel", "MnerqgProcessor", "Pipeline", "__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
