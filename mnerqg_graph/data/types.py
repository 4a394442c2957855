"""Typed records shared by every part of the toolkit.

Conventions: token spans are half-open ``[start, end)`` over the tweet's original tokens; entity
types are canonical names (``MISC`` is read as ``OTHER``, see :mod:`mnerqg_graph.data.tags`); boxes
are pixel coordinates of the original image, ``xmin < xmax``, ``ymin < ymax``. :class:`Span` is
defined beside the BIO tags it is read from (:mod:`mnerqg_graph.data.tags`) and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnerqg_graph.data.tags import Span, spans_from_tags

__all__ = ["Box", "Sample", "Span", "Tweet"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the original image (``confidence``: weak labels)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    confidence: float | None = None

    @property
    def area(self) -> float:
        """Box area in square pixels (0 when degenerate)."""
        return max(0.0, self.xmax - self.xmin) * max(0.0, self.ymax - self.ymin)


@dataclass
class Tweet:
    """One tweet of a CoNLL file.

    Attributes:
        id: the IMGID (also the image's file stem).
        tokens: original tokens, exactly as in the file.
        tags: original BIO tags, exactly as in the file (``B-MISC`` stays ``B-MISC``).
        source: the file it was read from ("" when built in memory).
        line: 1-based line number of its ``IMGID:`` line (0 when built in memory).
    """

    id: str
    tokens: list[str]
    tags: list[str]
    source: str = ""
    line: int = 0

    @property
    def entities(self) -> list[Span]:
        """Entity spans counted the conlleval way (an I- with no B- starts an entity)."""
        return spans_from_tags(self.tags)


@dataclass
class Sample:
    """A tweet with its optional image and the gold boxes of its entities.

    Attributes:
        tweet: the text and labels.
        image_path: the image file, or None when the tweet has no (readable) image.
        image_size: ``(width, height)`` of the original image, when known.
        boxes: gold (or weak) boxes per entity span of ``tweet.entities``; an entity that is not in
            the image has no key (or an empty list).
        grounding_labelled: False when the tweet's boxes are unknown (not annotated and no weak
            label): its examples then get no grounding loss instead of learning "not in the image".
    """

    tweet: Tweet
    image_path: Path | None = None
    image_size: tuple[int, int] | None = None
    boxes: dict[Span, list[Box]] = field(default_factory=dict)
    grounding_labelled: bool = True

    def boxes_of_type(self, entity_type: str) -> list[Box]:
        """All boxes of the entities of ``entity_type`` (the type's query-grounding target)."""
        return [b for span, bs in self.boxes.items() if span.type == entity_type for b in bs]
