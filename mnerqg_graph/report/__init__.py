"""``mnerqg report``: one self-contained HTML page of what a model got right and wrong.

:func:`~mnerqg_graph.report.data.build_report_data` gathers a split's predictions (the
``mnerqg predict`` path), scores (:mod:`mnerqg_graph.metrics`), entity error kinds, images and
alignment graphs; :func:`~mnerqg_graph.report.html.render_html` turns them into one page that
opens from disk with no network; :func:`write_report` does both and writes the file atomically.
:mod:`~mnerqg_graph.report.browser` drives a headless Chromium over the DevTools protocol (the
tests, the screenshot and the load-time benchmark use it).

Names are imported on first use, so ``mnerqg report --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnerqg_graph.report.data import build_report_data
    from mnerqg_graph.report.html import extract_data, render_html

_WHERE = {"build_report_data": "data", "render_html": "html", "extract_data": "html"}

__all__ = ["build_report_data", "extract_data", "render_html", "write_report"]


def write_report(
    path: str | Path,
    model: Any,
    processor: Any,
    samples: Any,
    title: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Build the report of ``samples`` and write it to ``path`` atomically.

    Args:
        path: the HTML file (its folder is created).
        model: an :class:`~mnerqg_graph.model.MnerqgModel`.
        processor: its :class:`~mnerqg_graph.processing.MnerqgProcessor`.
        samples: the split's tweets with their gold tags.
        title: the page title (default from the split's name).
        **options: keyword arguments of
            :func:`~mnerqg_graph.report.data.build_report_data` (``meta``, ``device``, ...).

    Returns:
        The report data that the page embeds.
    """
    from mnerqg_graph.io import atomic_write_text
    from mnerqg_graph.report.data import build_report_data
    from mnerqg_graph.report.html import render_html

    data = build_report_data(model, processor, samples, **options)
    atomic_write_text(path, render_html(data, title))
    return data


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
