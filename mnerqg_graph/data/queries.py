"""Entity-type queries: the natural-language question asked once per entity type (MRC formulation).

A query file is a JSON object mapping an entity type to its query sentence, in the order the model
asks them::

    {"PER": "Find person names: ...", "LOC": "...", "ORG": "...", "OTHER": "..."}

Types are read through :func:`mnerqg_graph.data.tags.canonical_type`, so a file written for
Twitter-2017 may say ``MISC``; it is the same type as ``OTHER``. The default file ships with the
package (``mnerqg_graph/data/queries/default.json``); users add types or rewrite queries by pointing
the toolkit at their own file. ``short`` (``queries/short.json``: two to six words a type) is also
packaged: it halves the encoder's work per tweet, which is what an uncased MiniLM on a CPU needs.
``words`` (one word a type: ``person``, ``location``, ``organization``, ``other``) is the compact
end, for packed queries without separators (``ModelConfig.packed_separators``).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mnerqg_graph.data.tags import canonical_type
from mnerqg_graph.errors import ConfigError, DataError

#: The query file shipped with the package.
DEFAULT_QUERIES_PATH: Path = Path(__file__).resolve().parent / "queries" / "default.json"
#: Query files shipped with the package, by name (``load_queries("short")``).
PACKAGED_QUERIES: dict[str, Path] = {
    p.stem: p for p in sorted(DEFAULT_QUERIES_PATH.parent.glob("*.json"))
}


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its ``(key, value)`` pairs, so that duplicate keys stay visible."""


def _keep_pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    """A ``json`` ``object_pairs_hook`` that turns each object into :class:`_Pairs`."""
    return _Pairs(pairs)


def load_queries(path: str | Path | None = None) -> dict[str, str]:
    """Read a query file: entity type -> query sentence, in the file's order.

    Args:
        path: a JSON query file, or the name of a packaged one (``default``, ``short``,
            ``words``) when no such file exists; the package's default file when None.

    Returns:
        An ordered dict from canonical entity type (``MISC`` read as ``OTHER``) to its query, with
        surrounding whitespace stripped.

    Raises:
        DataError: the file is missing or unreadable, is not a JSON object, is empty, has an empty
            or whitespace-containing type name, a type given twice (``MISC`` and ``OTHER`` count as
            the same), or a query that is not a string with a visible character. The message
            names the file and the key at fault.
    """
    file = DEFAULT_QUERIES_PATH if path is None else Path(path)
    if path is not None and not file.exists() and str(path) in PACKAGED_QUERIES:
        file = PACKAGED_QUERIES[str(path)]
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(file, "query file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(file, f"cannot read the query file: {exc}") from None
    try:
        parsed = json.loads(text, object_pairs_hook=_keep_pairs)
    except json.JSONDecodeError as exc:
        raise DataError(file, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(parsed, _Pairs):
        raise DataError(file, "a query file must be a JSON object {type: query, ...}")
    if not parsed:
        raise DataError(file, "the query file defines no entity types")
    queries: dict[str, str] = {}
    for key, value in parsed:
        if not key.strip() or any(ch.isspace() for ch in key):
            raise DataError(
                file, "an entity type name must be non-empty, without spaces", field=key
            )
        typ = canonical_type(key)
        if typ in queries:
            raise DataError(file, f"entity type {typ} is given twice", field=key)
        if not isinstance(value, str):
            kind = "object" if isinstance(value, _Pairs) else type(value).__name__
            raise DataError(file, f"the query must be a string, not {kind}", field=key)
        if not any(unicodedata.category(ch)[0] in "LNPS" for ch in value):
            # (U+200B, U+FE0F and the like survive strip() but give no word piece)
            raise DataError(file, "the query is empty or only invisible characters", field=key)
        queries[typ] = value.strip()
    return queries


def check_queries_cover(
    queries: Mapping[str, str], types_in_data: Iterable[str], path: str | Path | None = None
) -> None:
    """Check that every entity type found in the data has a query.

    Args:
        queries: type -> query, as returned by :func:`load_queries`.
        types_in_data: entity type names seen in the data (``MISC`` is read as ``OTHER``).
        path: the query file, named in the error message (the default file when None).

    Raises:
        ConfigError: one line naming the types that have no query.
    """
    have = {canonical_type(t) for t in queries}
    missing = sorted({canonical_type(t) for t in types_in_data} - have)
    if missing:
        where = DEFAULT_QUERIES_PATH if path is None else Path(path)
        raise ConfigError(
            f"{where}: no query for entity type(s) {', '.join(missing)} found in the data "
            f"(the query file defines {', '.join(queries) or 'none'})"
        )
