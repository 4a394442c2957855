"""SynthTweets: determinism, real formats, and the properties that make images matter."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mnerqg_graph import cli
from mnerqg_graph.data.conll import read_conll
from mnerqg_graph.data.synth import (
    DISTRACTOR_CLASSES,
    META_NAME,
    SPLITS,
    TYPES,
    VISUAL_CLASSES,
    SynthParams,
    generate,
    load_ambiguous,
    main,
)
from mnerqg_graph.data.types import Tweet
from mnerqg_graph.data.voc import attach_boxes, read_voc
from mnerqg_graph.errors import ConfigError, DataError


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred tweets, shared by the checks of content (small images to stay fast)."""
    out = tmp_path_factory.mktemp("synth") / "big"
    generate(out, seed=3, n_train=300, n_valid=60, n_test=60, image_size=64)
    return out


@pytest.fixture(scope="module")
def tweets(big: Path) -> dict[str, list[Tweet]]:
    result = {}
    for split in SPLITS:
        conll = read_conll(big / f"{split}.txt", strict=False)
        assert conll.problems == []
        assert conll.trailing_blank
        result[split] = conll.tweets
    return result


@pytest.fixture(scope="module")
def meta(big: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((big / META_NAME).read_text(encoding="utf-8"))
    return data


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=7, n_train=30, n_valid=10, n_test=10)
    generate(tmp_path / "b", seed=7, n_train=30, n_valid=10, n_test=10)
    generate(tmp_path / "c", seed=8, n_train=30, n_valid=10, n_test=10)
    files_a, files_b, files_c = (tree_bytes(tmp_path / n) for n in "abc")
    assert sum(name.startswith("images/") for name in files_a) >= 30
    assert files_a == files_b
    assert files_a["train.txt"] != files_c["train.txt"]
    shared = [n for n in files_a if n.startswith("images/") and n in files_c]
    assert any(files_a[n] != files_c[n] for n in shared)
    assert a.tweets == {"train": 30, "valid": 10, "test": 10}
    assert a.seconds > 0


def test_rerun_replaces_a_synth_folder_and_refuses_others(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate(out, seed=1, n_train=5, n_valid=2, n_test=2)
    before = tree_bytes(out)
    generate(out, seed=1, n_train=5, n_valid=2, n_test=2)  # a SynthTweets folder: replaced
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folder left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate(other, n_train=2, n_valid=1, n_test=1)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError):
        generate(tmp_path / "x", n_train=-1)
    with pytest.raises(ConfigError):
        generate(tmp_path / "x", image_size=16)
    with pytest.raises(ConfigError):
        generate(tmp_path / "x", params=SynthParams(p_no_image=1.5))


def test_splits_are_independent_streams(tmp_path: Path) -> None:
    small = generate(tmp_path / "s", seed=2, n_train=5, n_valid=3, n_test=4, image_size=32)
    large = generate(tmp_path / "l", seed=2, n_train=9, n_valid=3, n_test=4, image_size=32)
    assert small.tweets["test"] == large.tweets["test"] == 4
    a = read_conll(tmp_path / "s" / "test.txt").tweets
    b = read_conll(tmp_path / "l" / "test.txt").tweets
    assert [(t.tokens, t.tags) for t in a] == [(t.tokens, t.tags) for t in b]


def test_files_parse_and_boxes_match_entities(
    big: Path, tweets: dict[str, list[Tweet]], meta: dict[str, Any]
) -> None:
    ids = [t.id for split in SPLITS for t in tweets[split]]
    assert len(ids) == len(set(ids)) == 420
    assert all(t.id.startswith("synth_") for t in tweets["train"])
    images = {p.stem for p in (big / "images").iterdir()}
    xmls = {p.stem for p in (big / "boxes").iterdir()}
    assert xmls <= images <= set(ids)
    n_boxes = 0
    for split in SPLITS:
        objects = meta["splits"][split]["image_objects"]
        assert set(objects) == {t.id for t in tweets[split]} & images
        for tweet in tweets[split]:
            if tweet.id not in images:
                assert tweet.id not in xmls  # no image, no boxes
                continue
            with Image.open(big / "images" / f"{tweet.id}.jpg") as image:
                assert image.format == "JPEG"
                assert image.size == (64, 64)
            drawn = Counter(c for c in objects[tweet.id] if c not in DISTRACTOR_CLASSES)
            if tweet.id not in xmls:
                assert not drawn  # an unrelated image: distractors only
                continue
            ann = read_voc(big / "boxes" / f"{tweet.id}.xml")
            assert (ann.filename, ann.width, ann.height) == (f"{tweet.id}.jpg", 64, 64)
            boxes, problems = attach_boxes(tweet, ann, big / "boxes" / f"{tweet.id}.xml")
            assert problems == []
            n_boxes += len(ann.objects)
            assert sum(len(b) for b in boxes.values()) == len(ann.objects)
            for span_boxes in boxes.values():
                for box in span_boxes:
                    assert 0 <= box.xmin < box.xmax <= 64
                    assert 0 <= box.ymin < box.ymax <= 64
                    assert max(box.xmax - box.xmin, box.ymax - box.ymin) >= 0.15 * 64
            # The drawn entity objects are exactly one per box, of the box's type's class.
            assert drawn == Counter(VISUAL_CLASSES[s.type] for s, bs in boxes.items() for _ in bs)
    assert n_boxes == meta["rates"]["boxes"] > 0


def test_ambiguous_mentions_are_resolved_by_the_image(
    big: Path, tweets: dict[str, list[Tweet]], meta: dict[str, Any]
) -> None:
    names: dict[str, list[str]] = meta["ambiguous_names"]
    ambiguous = load_ambiguous(big / META_NAME)
    assert ambiguous == load_ambiguous(big)
    assert set(ambiguous) == set(SPLITS)
    n_mentions = n_ambiguous = 0
    types_of_name: dict[str, set[str]] = {}
    for split in SPLITS:
        objects = meta["splits"][split]["image_objects"]
        found = set()
        for tweet in tweets[split]:
            for span in tweet.entities:
                n_mentions += 1
                text = span.text(tweet.tokens)
                if text not in names:
                    continue
                n_ambiguous += 1
                found.add((tweet.id, span.start, span.end))
                types_of_name.setdefault(text, set()).add(span.type)
                candidates = names[text]
                assert span.type in candidates
                # Always depicted: one box of its own, one object of its class, none of the other.
                ann = read_voc(big / "boxes" / f"{tweet.id}.xml")
                assert [o.name for o in ann.objects].count(text) == 1
                drawn = objects[tweet.id]
                assert drawn.count(VISUAL_CLASSES[span.type]) == 1
                for other in candidates:
                    if other != span.type:
                        assert VISUAL_CLASSES[other] not in drawn
                # The tweet's other entities are of neither candidate type.
                others = [s for s in tweet.entities if s != span]
                assert all(s.type not in candidates for s in others)
        assert found == ambiguous[split]
    assert 0.3 <= n_ambiguous / n_mentions <= 0.55
    assert n_ambiguous / n_mentions == pytest.approx(meta["rates"]["ambiguous_share"], abs=1e-6)
    # The point of ambiguity: most names are seen as both of their types.
    both = sum(len(t) == 2 for t in types_of_name.values())
    assert both >= 0.7 * len(types_of_name)


def test_noise_and_rates(big: Path, tweets: dict[str, list[Tweet]], meta: dict[str, Any]) -> None:
    all_tweets = [t for split in SPLITS for t in tweets[split]]
    tokens = [tok for t in all_tweets for tok in t.tokens]
    assert all(tok and not any(ch.isspace() for ch in tok) for tok in tokens)
    assert any(tok.startswith("@") for tok in tokens)
    assert any(tok.startswith("#") for tok in tokens)
    assert any(not tok.isascii() for tok in tokens)  # emoji
    assert any(not t.entities for t in all_tweets)
    images = {p.stem for p in (big / "images").iterdir()}
    no_image = sum(t.id not in images for t in all_tweets)
    assert 0.03 <= no_image / len(all_tweets) <= 0.25
    rates = meta["rates"]
    assert rates["tweets"] == {"train": 300, "valid": 60, "test": 60}
    assert rates["no_image_share"] == pytest.approx(no_image / len(all_tweets), abs=1e-6)
    assert 0.05 <= rates["unrelated_image_share"] <= 0.35
    assert 0.5 <= rates["mean_distractors_per_image"] <= 2.5
    assert 0.6 <= rates["depicted_share"] <= 0.95
    per_type = Counter(s.type for t in all_tweets for s in t.entities)
    assert rates["mentions_per_type"] == {t: per_type[t] for t in TYPES}
    assert min(per_type.values()) >= 0.1 * sum(per_type.values())
    assert meta["params"]["seed"] == 3 and meta["params"]["image_size"] == 64


def test_load_ambiguous_reports_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_ambiguous(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"splits": {"test": {"ambiguous": [["synth_000001", 3, 2]]}}}')
    with pytest.raises(DataError, match=r"splits\.test\.ambiguous\[0\]"):
        load_ambiguous(bad)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--seed", "4", "--train", "6", "--valid", "2", "--test", "2"]
    assert main([*argv, "--image-size", "48"]) == 0
    assert "ambiguous mentions" in capsys.readouterr().out
    assert json.loads((out / META_NAME).read_text())["params"]["n_train"] == 6
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    assert cli.main(["synth", "--out", str(tmp_path / "busy"), "--train", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
