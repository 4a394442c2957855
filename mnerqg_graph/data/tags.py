"""BIO tags <-> entity spans, counted exactly as conlleval and seqeval's default mode count them.

conlleval starts a new entity at every ``B-X``, at an ``I-X`` that follows ``O`` or a tag of another
type (the "I- without B-" case of Twitter-2015), and ends it at ``O``, ``B-`` or a type change.
Twitter-2015's ``OTHER`` and Twitter-2017's ``MISC`` are the same type; :func:`canonical_type`
maps both to ``OTHER``.

This module imports nothing of the toolkit; :mod:`mnerqg_graph.data.types` builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Span:
    """An entity mention: tokens ``[start, end)`` of one tweet, with its canonical type."""

    start: int
    end: int
    type: str

    def text(self, tokens: list[str]) -> str:
        """The mention's surface string: its tokens joined by single spaces (the VOC ``<name>``)."""
        return " ".join(tokens[self.start : self.end])


#: Type names read as another canonical type.
TYPE_ALIASES: dict[str, str] = {"MISC": "OTHER"}


def canonical_type(name: str) -> str:
    """The canonical entity type for a type name read from a file (``MISC`` -> ``OTHER``)."""
    return TYPE_ALIASES.get(name, name)


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", None)``. Raises ValueError otherwise."""
    if tag == "O":
        return "O", None
    prefix, sep, typ = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not typ:
        raise ValueError(f"not a BIO tag: {tag!r}")
    return prefix, canonical_type(typ)


def spans_from_tags(tags: list[str]) -> list[Span]:
    """Entity spans of a BIO sequence, the conlleval way (lenient: I- without B- starts one)."""
    spans: list[Span] = []
    start: int | None = None
    cur: str | None = None
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if start is not None and (prefix != "I" or typ != cur):
            assert cur is not None
            spans.append(Span(start, i, cur))
            start, cur = None, None
        if prefix == "B" or (prefix == "I" and start is None):
            start, cur = i, typ
    if start is not None:
        assert cur is not None
        spans.append(Span(start, len(tags), cur))
    return spans


def tags_from_spans(n_tokens: int, spans: list[Span]) -> list[str]:
    """A BIO sequence of length ``n_tokens`` for non-overlapping ``spans`` (canonical types)."""
    tags = ["O"] * n_tokens
    for span in sorted(spans):
        if not 0 <= span.start < span.end <= n_tokens:
            raise ValueError(f"span {span} outside a tweet of {n_tokens} tokens")
        if any(t != "O" for t in tags[span.start : span.end]):
            raise ValueError(f"span {span} overlaps another span")
        tags[span.start] = f"B-{span.type}"
        for i in range(span.start + 1, span.end):
            tags[i] = f"I-{span.type}"
    return tags


def normalise_tags(tags: list[str]) -> list[str]:
    """Canonical BIO: types canonical, each entity opened by ``B-`` (conlleval's reading kept)."""
    return tags_from_spans(len(tags), spans_from_tags(tags))
