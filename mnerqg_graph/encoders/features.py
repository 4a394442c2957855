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
#: ``http://...``, ``https://...``, ``www....`` and the cut-off forms tweets end with (``http…``,
#: ``http:…``, ``https``).
_URL = re.compile(r"^(?:https?(?::|\u2026|$)|www\.)", re.IGNORECASE)


def is_url(token: str) -> bool:
    """Whether ``token`` is a URL (or what is left of one in a cut-off tweet)."""
    return _URL.match(token) is not None


def encoder_words(tokens: list[str], url_word: str) -> list[str]:
    """The words the text encoder reads: URLs replaced by ``url_word`` (``""``: unchanged).

    A ``t.co`` URL is 15-20 word pieces of random characters; one word in its place keeps the
    token (its label, its shape feature, its position in the output) and drops the pieces.
    """
    if not url_word:
        return tokens
    return [url_word if is_url(t) else t for t in tokens]


def token_shape(token: str) -> int:
    """The shape class (index into :data:`SHAPES`) of one token."""
    if token.startswith("@") and len(token) > 1:
        return SHAPES.index("mention")
    if token.startswith("#") and len(token) > 1:
        return SHAPES.index("hashtag")
    if is_url(token):
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
