"""Tests of the entity-type query files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnerqg_graph.data.queries import DEFAULT_QUERIES_PATH, check_queries_cover, load_queries
from mnerqg_graph.errors import ConfigError, DataError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "queries.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_queries_are_the_four_types_in_order() -> None:
    queries = load_queries()
    assert list(queries) == ["PER", "LOC", "ORG", "OTHER"]
    assert all(
        isinstance(q, str) and q.strip() == q and len(q.split()) >= 5 for q in queries.values()
    )
    assert len(set(queries.values())) == 4
    assert load_queries(DEFAULT_QUERIES_PATH) == queries


def test_packaged_query_files_by_name_and_a_real_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = load_queries("short")
    assert list(short) == ["PER", "LOC", "ORG", "OTHER"]
    assert all(len(q.split()) <= 6 for q in short.values())
    assert load_queries("default") == load_queries()
    monkeypatch.chdir(tmp_path)  # a user's own file called "short" is read, not the packaged one
    (tmp_path / "short").write_text('{"PER": "people"}', encoding="utf-8")
    assert load_queries("short") == {"PER": "people"}
    with pytest.raises(DataError, match="not found"):
        load_queries("shorter")


def test_default_file_is_package_data() -> None:
    assert DEFAULT_QUERIES_PATH.is_file()
    assert DEFAULT_QUERIES_PATH.parent.name == "queries"
    assert DEFAULT_QUERIES_PATH.parent.parent.name == "data"


def test_misc_is_read_as_other_and_order_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"ORG": " an org ", "MISC": "misc things", "PER": "people"}))
    assert list(load_queries(path).items()) == [
        ("ORG", "an org"),
        ("OTHER", "misc things"),
        ("PER", "people"),
    ]
    assert load_queries(str(path)) == load_queries(path)


@pytest.mark.parametrize(
    ("text", "field", "needle"),
    [
        ('{"PER": "x",', None, "invalid JSON"),
        ("[1, 2]", None, "JSON object"),
        ('"PER"', None, "JSON object"),
        ("{}", None, "no entity types"),
        ('{"PER": 3}', "PER", "string"),
        ('{"PER": null}', "PER", "string"),
        ('{"LOC": ["a"]}', "LOC", "string"),
        ('{"LOC": {"a": "b"}}', "LOC", "not object"),
        ('{"PER": "   "}', "PER", "empty"),
        ('{"PER": ""}', "PER", "empty"),
        ('{"PER": "\\u200b \\ufe0f"}', "PER", "only invisible characters"),  # no word piece
        ('{"": "q"}', "", "type name"),
        ('{"A B": "q"}', "A B", "type name"),
        ('{"OTHER": "a", "MISC": "b"}', "MISC", "twice"),
        ('{"PER": "a", "PER": "b"}', "PER", "twice"),
    ],
)
def test_bad_query_files_raise_data_error(
    tmp_path: Path, text: str, field: str | None, needle: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_queries(path)
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert err.field == field
    assert needle in err.message


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "PER": "x",\n  "LOC": \n}\n')
    with pytest.raises(DataError) as info:
        load_queries(path)
    assert info.value.line == 4


def test_missing_or_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_queries(tmp_path / "nope.json")
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"PER": "caf\xe9"}')
    with pytest.raises(DataError, match="cannot read"):
        load_queries(bad)


def test_check_queries_cover() -> None:
    queries = load_queries()
    check_queries_cover(queries, ["PER", "LOC", "ORG", "OTHER", "MISC"])
    check_queries_cover(queries, [])
    with pytest.raises(ConfigError) as info:
        check_queries_cover({"PER": "p"}, ["LOC", "PER", "MISC", "LOC"], "my/q.json")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("my/q.json: ")
    assert "LOC, OTHER" in message
    with pytest.raises(ConfigError, match=str(DEFAULT_QUERIES_PATH).replace("\\", "\\\\")):
        check_queries_cover({"PER": "p"}, ["EVENT"])
