"""The report page in a real browser: headless Chromium opens the file from disk, no network.

Skipped, with the reason, where no Chromium is installed (``apt-get install chromium``; CI's
``.ci/run`` installs it). ``$MNERQG_CHROMIUM`` points at another build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mnerqg_graph.report.browser import HeadlessChromium, find_chromium, page_state
from tests.report.conftest import Built

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium found: apt-get install chromium (Debian), or set MNERQG_CHROMIUM",
)

READY = "!!document.documentElement && document.documentElement.dataset.ready === '1'"
KINDS = ("correct", "missed", "wrong_type", "boundary", "spurious")


@pytest.fixture(scope="module")
def browser(built: Built) -> Iterator[HeadlessChromium]:
    with HeadlessChromium(width=1300, height=900, timeout=60) as b:
        b.open(built.page.resolve().as_uri())
        b.wait_for(READY)
        yield b


def _state(browser: HeadlessChromium) -> dict[str, Any]:
    return page_state(browser)


def _expected(built: Built, kind: str, type_: str = "") -> list[str]:
    """Tweet ids the filter must show, from the page's per-entity kinds (split order)."""
    out = []
    for t in built.data["tweets"]:
        pairs = {(g["kind"], g["type"]) for g in t["gold"]}
        pairs |= {(k, e["type"]) for e, k in zip(t["entities"], t["pred_kinds"], strict=True)}
        if kind == "all":
            hit = not type_ or any(ty == type_ for _, ty in pairs)
        elif kind == "errors":
            hit = any(k != "correct" and (not type_ or ty == type_) for k, ty in pairs)
        elif kind == "clean":
            hit = not any(k != "correct" for k, _ in pairs)
        else:
            hit = any(k == kind and (not type_ or ty == type_) for k, ty in pairs)
        if hit:
            out.append(t["id"])
    return out


def test_page_opens_from_disk_without_errors_or_network(
    built: Built, browser: HeadlessChromium
) -> None:
    state = _state(browser)
    assert state["ready"] and state["errors"] == []
    assert browser.console_errors() == []
    page = built.page.resolve().as_uri()
    assert [u for u in browser.requests() if not u.startswith(("data:", page))] == []
    ids = [t["id"] for t in built.data["tweets"]]
    assert state["matches"] == ids and state["shown"] == ids
    # the scores tables show the embedded numbers
    micro = built.data["scores"]["entity"]["micro"]
    cell = browser.evaluate("document.querySelector('#type-scores tr.micro td:nth-child(4)')"
                            ".textContent")  # fmt: skip
    assert cell == f"{100 * micro['f1']:.2f}"
    assert (
        browser.evaluate("document.querySelectorAll('#confusion tr').length")
        == len(built.data["scores"]["confusion"]["rows"]) + 1
    )


def test_filtering_by_an_error_kind_shows_exactly_the_expected_tweets(
    built: Built, browser: HeadlessChromium
) -> None:
    nonempty = 0
    for kind in (*KINDS, "errors", "all"):
        browser.evaluate(f"document.querySelector('#kind-filter [data-kind={kind}]').click()")
        state = browser.wait_for(
            "(() => { const s = JSON.parse(document.getElementById('test-state').textContent);"
            f" return s.kind === '{kind}' ? s : null; }})()"
        )
        want = _expected(built, kind)
        assert state["matches"] == want, kind
        assert state["shown"] == want, kind  # the rows in the list, in split order
        count = browser.evaluate(
            f"document.querySelector('#kind-filter [data-kind={kind}] .n').textContent"
        )
        assert count == str(len(want)), kind
        nonempty += bool(want) and len(want) < len(built.data["tweets"])
    assert nonempty >= 3  # the tiny model's errors make the filters differ
    # a kind and a type together: e.g. the tweets with a missed PER
    types = {g["type"] for t in built.data["tweets"] for g in t["gold"] if g["kind"] == "missed"}
    type_ = sorted(types)[0]
    browser.evaluate("document.querySelector('#kind-filter [data-kind=missed]').click()")
    browser.evaluate(
        f"(() => {{ const s = document.getElementById('type-filter'); s.value = '{type_}';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    state = _state(browser)
    assert state["type"] == type_ and state["matches"] == _expected(built, "missed", type_)
    browser.evaluate(
        "(() => { const s = document.getElementById('type-filter'); s.value = '';"
        " s.dispatchEvent(new Event('change')); })()"
    )


def test_search_finds_tweets_by_text(built: Built, browser: HeadlessChromium) -> None:
    browser.evaluate("document.querySelector('#kind-filter [data-kind=all]').click()")
    word = built.data["tweets"][3]["tokens"][0]
    browser.evaluate(
        "(() => { const s = document.getElementById('search');"
        f" s.value = {word!r}; s.dispatchEvent(new Event('input')); }})()"
    )
    state = browser.wait_for(
        "(() => { const s = JSON.parse(document.getElementById('test-state').textContent);"
        " return s.query ? s : null; })()"
    )
    want = [
        t["id"]
        for t in built.data["tweets"]
        if word.lower() in (t["id"] + " " + " ".join(t["tokens"])).lower()
    ]
    assert built.data["tweets"][3]["id"] in state["matches"]
    assert state["matches"] == want
    browser.evaluate(
        "(() => { const s = document.getElementById('search');"
        " s.value = ''; s.dispatchEvent(new Event('input')); })()"
    )
    browser.wait_for("JSON.parse(document.getElementById('test-state').textContent).query === ''")


def test_selecting_a_tweet_draws_its_image_boxes_and_graph(
    built: Built, browser: HeadlessChromium
) -> None:
    tweets = built.data["tweets"]
    t = next(x for x in tweets if x["image"] and x["entities"])
    browser.evaluate(f"document.querySelector('li.tweet[data-id=\"{t['id']}\"]').click()")
    state = _state(browser)
    assert state["selected"] == t["id"] and state["errors"] == []
    assert state["svgNodes"] > 0 and state["svgEdges"] > 0
    g = t["graphs"][state["graphType"]]
    n_regions = sum(r * c for r, c in built.data["meta"]["grids"])
    assert state["svgNodes"] == 1 + len(g["nodes"]) + n_regions  # query, tokens, regions
    assert browser.evaluate("document.querySelectorAll('#detail .edge.query-token').length") == (
        len(g["query"])
    )
    _assert_weighted_query_edges(browser, g)
    assert browser.evaluate("document.querySelectorAll('#detail .edge.token-region').length") > 0
    assert browser.evaluate("document.querySelector('#detail .imgwrap img').naturalWidth") > 0
    boxes = browser.evaluate("document.querySelectorAll('#detail .imgwrap svg rect').length")
    assert boxes == sum(len(b) for b in t["gold_boxes"].values()) + sum(
        1 for b in t["boxes"].values() if b
    )
    # hovering a token colours the regions by its attention
    browser.evaluate(
        "document.querySelectorAll('#detail svg.graph .node.token')[0]"
        ".dispatchEvent(new MouseEvent('mouseenter'))"
    )
    assert _state(browser)["heat"] == n_regions
    assert "attends most to" in browser.evaluate("document.getElementById('readout').textContent")
    # another type's tab draws that query's graph
    other = next(ty for ty in built.data["meta"]["types"] if ty != state["graphType"])
    browser.evaluate(f"document.querySelector('#graph-panel .tabs [data-type={other}]').click()")
    assert _state(browser)["graphType"] == other
    # a text-only tweet: query-token edges, no regions
    plain = next(x for x in tweets if not x["image"])
    browser.evaluate(f"document.querySelector('li.tweet[data-id=\"{plain['id']}\"]').click()")
    state = _state(browser)
    g = plain["graphs"][state["graphType"]]
    assert state["svgNodes"] == 1 + len(g["nodes"]) and state["svgEdges"] == len(g["query"]) > 0
    _assert_weighted_query_edges(browser, g)
    # hovering a token of a text-only tweet reads out its query attention
    browser.evaluate(
        "document.querySelectorAll('#detail svg.graph .node.token')[0]"
        ".dispatchEvent(new MouseEvent('mouseenter'))"
    )
    readout = browser.evaluate("document.getElementById('readout').textContent")
    assert f"query attention {g['query_weight'][0]:.4f}" in readout, readout
    assert browser.console_errors() == [] and _state(browser)["errors"] == []


def _assert_weighted_query_edges(browser: HeadlessChromium, g: dict[str, Any]) -> None:
    """The drawn query-token edges carry the query's attention: weight, width, tooltip."""
    edges = browser.evaluate(
        "Array.from(document.querySelectorAll('#detail .edge.query-token'), (e) => ({"
        " node: Number(e.dataset.node), weight: Number(e.dataset.weight),"
        " width: Number(e.getAttribute('stroke-width')),"
        " opacity: Number(e.getAttribute('stroke-opacity')),"
        " title: e.querySelector('title').textContent }))"
    )
    weights = g["query_weight"]
    assert len(edges) == len(g["query"]) == len(weights) > 0
    by_node = {e["node"]: e for e in edges}
    strongest = max(weights)
    for p, w in zip(g["query"], weights, strict=True):
        k = g["nodes"].index(p)
        e = by_node[k]
        assert e["weight"] == pytest.approx(w), (p, e)
        assert e["width"] == pytest.approx(0.5 + 4 * w / strongest, abs=1e-6)
        assert e["opacity"] == pytest.approx(0.2 + 0.75 * w / strongest, abs=1e-6)
        assert f"attention {w:.4f}" in e["title"] and f"start {g['start'][k]:.3f}" in e["title"]
        assert f"end {g['end'][k]:.3f}" in e["title"]
    if len(set(weights)) > 1:  # width follows the weight
        widths = [by_node[g["nodes"].index(p)]["width"] for p in g["query"]]
        assert widths.index(max(widths)) == weights.index(strongest)


def test_the_hash_sets_the_view(built: Built, browser: HeadlessChromium) -> None:
    t = built.data["tweets"][-1]
    url = built.page.resolve().as_uri() + f"#kind=spurious&select={t['id']}&graph=LOC"
    browser.open("about:blank")  # a fresh load that reads the hash when it starts
    browser.open(url)
    browser.wait_for(READY)
    state = _state(browser)
    assert state["kind"] == "spurious" and state["matches"] == _expected(built, "spurious")
    assert state["selected"] == t["id"] and state["graphType"] == "LOC"
    assert state["svgNodes"] > 0 and state["errors"] == []
    assert browser.console_errors() == []

    # a new hash on the open page (the user edits it) changes the view too
    browser.open(built.page.resolve().as_uri() + "#kind=missed")
    state = browser.wait_for(
        "(() => { const s = JSON.parse(document.getElementById('test-state').textContent);"
        " return s.kind === 'missed' ? s : null; })()"
    )
    assert state["matches"] == _expected(built, "missed")
