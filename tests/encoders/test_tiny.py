"""Tests of the tiny random BERT written as a local Hugging Face model directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mnerqg_graph.encoders.tiny import (  # noqa: E402
    SPECIAL_TOKENS,
    build_tiny_encoder,
    build_tiny_tokenizer,
    build_tiny_vocab,
)

CORPUS = [
    ["RT", "@user", ":", "Barack", "Obama", "visits", "New", "York", "\u200b", "http://t.co/x1"],
    ["Café", "Müller", "won't", "open", "\ufe0f", "#MCFC", "!"],
    ["St", ".", "Louis", "Cardinals", "beat", "the", "Cubs"],
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc", CORPUS, seed=3)


def test_files_and_reload_offline(model_dir: Path) -> None:
    names = {p.name for p in model_dir.iterdir()}
    assert {"vocab.txt", "config.json", "model.safetensors", "tokenizer_config.json"} <= names
    assert not any(p.name.endswith(".bin") for p in model_dir.iterdir())
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp left

    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir)
    assert tok.is_fast
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 2)
    assert config.intermediate_size == 128 and config.max_position_embeddings == 256
    assert config.vocab_size == len(tok) == len(model_dir.joinpath("vocab.txt").read_text().split())
    assert tok.pad_token_id == 0 == config.pad_token_id

    enc = tok("Obama visits New York", return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    assert out.shape == (1, 6, 64)
    assert torch.isfinite(out).all()


def test_known_words_stay_whole_and_invisible_tokens_vanish(model_dir: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert tok.tokenize("Obama visits new YORK") == ["obama", "visits", "new", "york"]
    assert tok.tokenize("café müller") == ["cafe", "muller"]  # lowercased, accents stripped
    assert tok.tokenize("won't") == ["won", "'", "t"]
    # An unseen word falls back to single characters seen in the corpus, never [UNK].
    pieces = tok.tokenize("yorker")
    assert "[UNK]" not in pieces and pieces[0] == "york"
    # Words of the default queries are in the vocabulary.
    assert tok.tokenize("person location organization") == ["person", "location", "organization"]
    enc = tok(["\u200b", "Obama", "\ufe0f"], is_split_into_words=True, add_special_tokens=False)
    assert enc.word_ids() == [1]


def test_vocab_is_sorted_with_specials_first() -> None:
    vocab = build_tiny_vocab(CORPUS, queries={"PER": "people"})
    assert tuple(vocab[:5]) == SPECIAL_TOKENS
    assert vocab[5:] == sorted(vocab[5:])
    assert len(set(vocab)) == len(vocab)
    assert {"obama", "o", "##o", "people", "cafe"} <= set(vocab)
    assert "Obama" not in vocab and "" not in vocab
    cased = build_tiny_vocab(CORPUS, lowercase=False, queries={})
    assert "Obama" in cased and "Café" in cased and "people" not in cased


def test_same_corpus_and_seed_give_identical_files(model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_encoder(tmp_path / "again", CORPUS, seed=3)
    other = build_tiny_encoder(tmp_path / "other", CORPUS, seed=4)
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (model_dir / name).read_bytes() == (again / name).read_bytes(), name
    assert (model_dir / "vocab.txt").read_bytes() == (other / "vocab.txt").read_bytes()
    assert (model_dir / "model.safetensors").read_bytes() != (
        other / "model.safetensors"
    ).read_bytes()


def test_rebuild_replaces_an_existing_directory(tmp_path: Path) -> None:
    out = build_tiny_encoder(tmp_path / "m", CORPUS[:1], hidden_size=32, intermediate_size=64)
    (out / "stale.txt").write_text("x")
    build_tiny_encoder(out, CORPUS[:1], hidden_size=32, intermediate_size=64)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_tokenizer_without_files_matches_saved_one(model_dir: Path) -> None:
    tok = build_tiny_tokenizer(CORPUS)
    saved = transformers.AutoTokenizer.from_pretrained(model_dir)
    text = "RT @user : St . Louis Cardinals beat the Cubs http://t.co/x1"
    assert tok(text)["input_ids"] == saved(text)["input_ids"]
    assert tok.model_max_length == 256


def test_loading_prints_no_progress_bar(model_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Loading the encoder prints nothing and leaves transformers' progress bars as they were."""
    from transformers.utils import logging as hf_logging

    from mnerqg_graph.encoders.text import HFTextEncoder

    hf_logging.enable_progress_bar()
    capfd.readouterr()
    HFTextEncoder(str(model_dir))
    out, err = capfd.readouterr()
    assert "Loading weights" not in err + out
    assert err == "" and out == ""
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is restored
