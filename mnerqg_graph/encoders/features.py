"""Token casing and shape features, fed to token nodes (the text encoders may be uncased)."""

from __future__ import annotations

import re

#: Shape classes; index 0 is padding.
SHAPES: tuple[str, ...] = (
    "<pad>",
    "lower",
    "title",
    "upper",
    "mixed",
    "digit",
    "alnum",
    "mention",
    "hashtag",
    "url",
    "punct",
    "other",
)
_URL = re.compile(r"^(https?://|www\.)", re.IGNORECASE)


def token_shape(token: str) -> int:
    """The shape class (index into :data:`SHAPES`) of one token."""
    if token.startswith("@") and len(token) > 1:
        return SHAPES.index("mention")
    if token.startswith("#") and len(token) > 1:
        return SHAPES.index("hashtag")
    if _URL.match(token):
        return SHAPES.index("url")
    letters = [c for c in token if c.isalpha()]
    if not letters:
        if any(c.isdigit() for c in token):
            return SHAPES.index("digit")
        if token and all(not c.isalnum() for c in token) and token.isprintable():
            return SHAPES.index("punct")
        return SHAPES.index("other")
    if any(c.isdigit() for c in token):
        return SHAPES.index("alnum")
    if all(c.islower() for c in letters):
        return SHAPES.index("lower")
    if all(c.isupper() for c in letters):
        return SHAPES.index("upper") if len(letters) > 1 else SHAPES.index("title")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return SHAPES.index("title")
    return SHAPES.index("mixed")


def token_shapes(tokens: list[str]) -> list[int]:
    """Shape classes of a token list."""
    return [token_shape(t) for t in tokens]
