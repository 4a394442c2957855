"""Seeing what a model aligned: graph drawings, box pictures, heat maps and graph files.

:func:`~mnerqg_graph.viz.alignment.explain` turns a model's output on some tweets into
per-(tweet, type) :class:`~mnerqg_graph.viz.alignment.Alignment` data;
:mod:`~mnerqg_graph.viz.draw` draws it (headless, Agg) and
:func:`~mnerqg_graph.viz.artifacts.visualize_samples` writes every file for a list of tweets (the
``mnerqg visualize`` command and the experiment's ``visualize=N`` use it).

The names below are imported on first use, so ``mnerqg visualize --help`` does not load torch or
matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnerqg_graph.viz.alignment import (
        Alignment,
        RegionNode,
        TokenNode,
        TweetExplanation,
        explain,
        graph_layout,
        to_networkx,
        write_graph,
    )
    from mnerqg_graph.viz.artifacts import visualize_samples, visualize_tweet
    from mnerqg_graph.viz.draw import (
        draw_boxes,
        draw_graph,
        draw_heatmap,
        load_picture,
        save_png,
        select_edges,
    )

_WHERE: dict[str, str] = {
    **dict.fromkeys(
        (
            "Alignment",
            "RegionNode",
            "TokenNode",
            "TweetExplanation",
            "explain",
            "graph_layout",
            "to_networkx",
            "write_graph",
        ),
        "alignment",
    ),
    **dict.fromkeys(("visualize_samples", "visualize_tweet"), "artifacts"),
    **dict.fromkeys(
        ("draw_boxes", "draw_graph", "draw_heatmap", "load_picture", "save_png", "select_edges"),
        "draw",
    ),
}

__all__ = [
    "Alignment",
    "RegionNode",
    "TokenNode",
    "TweetExplanation",
    "draw_boxes",
    "draw_graph",
    "draw_heatmap",
    "explain",
    "graph_layout",
    "load_picture",
    "save_png",
    "select_edges",
    "to_networkx",
    "visualize_samples",
    "visualize_tweet",
    "write_graph",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
