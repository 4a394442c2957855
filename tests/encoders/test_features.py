"""Token shape classes (the casing features of an uncased encoder) and URL handling."""

from __future__ import annotations

import pytest

from mnerqg_graph.encoders.features import SHAPES, encoder_words, is_url, token_shape, token_shapes


@pytest.mark.parametrize(
    ("token", "shape"),
    [
        ("obama", "lower"),
        ("Obama", "title"),
        ("A", "title"),
        ("NBA", "upper"),
        ("McDonald", "mixed"),
        ("2017", "digit"),
        ("3-1", "digit"),
        ("U2", "alnum"),
        ("@user_1", "mention"),
        ("#MCFC", "hashtag"),
        ("@", "punct"),
        ("#", "punct"),
        ("http://t.co/Z3neVBQ7vF", "url"),
        ("https://t.co/x", "url"),
        ("www.bbc.co.uk", "url"),
        ("http\u2026", "url"),
        ("http:\u2026", "url"),
        ("https", "url"),
        ("...", "punct"),
        ("\u200b", "other"),
        ("", "other"),
        ("Café", "title"),
    ],
)
def test_shape_classes(token: str, shape: str) -> None:
    assert SHAPES[token_shape(token)] == shape


def test_shape_zero_is_padding_only() -> None:
    words = ["RT", "@u", ":", "x", "http://t.co/a", "2", "#t", "\u200b", "MIXed", "a1"]
    assert 0 not in token_shapes(words)
    assert len(token_shapes(words)) == len(words)


@pytest.mark.parametrize("token", ["httpx", "HTTPie", "hthttp://", "wwwx.com", "url", "http-ish"])
def test_not_urls(token: str) -> None:
    assert not is_url(token)


def test_encoder_words_replace_urls_only() -> None:
    words = ["Go", "http://t.co/Z3", "now", "http\u2026", "www.x.org"]
    assert encoder_words(words, "url") == ["Go", "url", "now", "url", "url"]
    assert encoder_words(words, "") is words  # off: the very same list
    assert words[1] == "http://t.co/Z3"  # the input is not modified
