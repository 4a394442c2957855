"""mnerqg-graph: multimodal NER with query grounding (MNER-QG) as graph-based, modular reasoning."""

__version__ = "0.1.0"
