"""One self-contained HTML page from the report data: styles, script and data inlined.

The page needs no server and no network: its script and styles are the package files
``static/report.js`` and ``static/report.css``, copied into the page; the data is one
``<script type="application/json" id="report-data">`` block (images in it as data URIs). The
script draws the page from that block when it opens.

Test hooks of the page (used by the browser tests and the load-time benchmark): the hash
``#kind=missed&type=PER&q=text&select=ID&graph=TYPE`` sets the filters and the selected tweet;
once drawn, ``<html>`` gets ``data-ready="1"`` and ``data-ready-ms`` (milliseconds since
navigation; ``data-painted-ms`` when the first frame after that is painted), and
``<pre id="test-state">`` holds the page's state as JSON (filters, matching and shown tweet ids,
the selected tweet, the graph's node and edge counts, and every script error or
``console.error`` message).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="mnerqg-graph {version}">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<header id="top">
  <h1 id="title">{title}</h1>
  <div id="meta"></div>
</header>
<noscript><p class="note">This page draws itself with JavaScript; please enable it.</p></noscript>
<main>
  <section id="scores" aria-label="scores"></section>
  <div id="browser">
    <section id="list-pane" aria-label="tweets">
      <div id="controls">
        <div id="kind-filter" role="group" aria-label="filter by error kind"></div>
        <div class="row">
          <label>type <select id="type-filter"></select></label>
          <input id="search" type="search" placeholder="search text or id" aria-label="search">
        </div>
        <div id="legend"></div>
      </div>
      <div id="count" aria-live="polite"></div>
      <ol id="tweets"></ol>
      <button id="more" type="button" hidden>show more</button>
    </section>
    <section id="detail" aria-label="selected tweet">
      <p class="note">Select a tweet to see its entities, image, boxes and alignment graphs.</p>
    </section>
  </div>
</main>
<pre id="test-state" hidden></pre>
<script type="application/json" id="report-data">{data}</script>
<script>
{js}
</script>
</body>
</html>
"""


def _static(name: str) -> str:
    return resources.files("mnerqg_graph.report").joinpath("static", name).read_text("utf-8")


def embed_json(data: Any) -> str:
    r"""``data`` as JSON that is safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` become ``\u003c``, ``\u003e``, ``\u0026`` (they can only occur
    inside JSON strings, where these escapes mean the same characters), so no text of a tweet can
    close the element or open a comment. NaN and infinities are refused (not JSON).
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: dict[str, Any], title: str | None = None) -> str:
    """The report page of ``data`` (from :func:`~mnerqg_graph.report.data.build_report_data`).

    Args:
        data: the report data.
        title: the page title (default: "MNER-QG report" and the split's name when known).

    Returns:
        The HTML document.
    """
    from mnerqg_graph import __version__

    meta = data.get("meta", {})
    if title is None:
        split = meta.get("split")
        title = "MNER-QG report" + (f": {split}" if split else "")
    return _TEMPLATE.format(
        version=html.escape(__version__),
        title=html.escape(title),
        css=_static("report.css"),
        js=_static("report.js"),
        data=embed_json(data),
    )


def extract_data(page: str) -> dict[str, Any]:
    """The report data embedded in a page written by :func:`render_html`.

    Raises:
        ValueError: the page has no report data block.
    """
    start_tag = '<script type="application/json" id="report-data">'
    start = page.find(start_tag)
    end = page.find("</script>", start)
    if start < 0 or end < 0:
        raise ValueError("no report data in this page")
    return json.loads(page[start + len(start_tag) : end])  # type: ignore[no-any-return]
