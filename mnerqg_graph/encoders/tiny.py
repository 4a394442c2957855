"""A tiny, randomly initialised BERT saved as an ordinary local Hugging Face model directory.

Tests and the SynthTweets demo need a text encoder that exists offline and runs in milliseconds.
This module builds one from a corpus: a WordPiece vocabulary that covers the corpus exactly (every
word seen kept whole, every character seen as a fallback piece), a ``BertTokenizerFast`` and a
``BertModel`` with random weights. The result is a directory that ``AutoTokenizer.from_pretrained``
and ``AutoModel.from_pretrained`` load like any other model path. Same corpus and seed, same bytes.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tokenizers import normalizers, pre_tokenizers

from mnerqg_graph.data.queries import load_queries
from mnerqg_graph.io import abandon_dir, atomic_write_text, replace_dir, temp_dir_beside

#: Special tokens, in vocabulary order ([PAD] is id 0, as BertConfig expects).
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _splitter(lowercase: bool) -> Callable[[str], list[str]]:
    """The BERT normaliser + pre-tokeniser pair that the tokenizer itself will apply."""
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    pre = pre_tokenizers.BertPreTokenizer()

    def split(text: str) -> list[str]:
        return [w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text))]

    return split


def build_tiny_vocab(
    corpus: Iterable[list[str]],
    lowercase: bool = True,
    queries: Mapping[str, str] | None = None,
) -> list[str]:
    """A deterministic WordPiece vocabulary covering ``corpus`` and the queries.

    The words are what the BERT normaliser and pre-tokeniser make of each token (so ``don't`` gives
    ``don``, ``'`` and ``t``, and invisible characters give nothing), lowercased when ``lowercase``.

    Args:
        corpus: token lists (tweets).
        lowercase: lowercase and strip accents, as the tokenizer will.
        queries: type -> query whose words are added too; the package's default queries when None.

    Returns:
        The special tokens, then every word, every single character and ``##`` + each character,
        sorted (Python string order) and without duplicates.
    """
    split = _splitter(lowercase)
    unique_tokens: set[str] = set()
    for tokens in corpus:
        unique_tokens.update(tokens)
    words: set[str] = set()
    for token in unique_tokens:
        words.update(split(token))
    for query in (load_queries() if queries is None else queries).values():
        words.update(split(query))
    chars = {ch for w in words for ch in w}
    entries = (words | chars | {"##" + ch for ch in chars}) - set(SPECIAL_TOKENS)
    entries.discard("")
    return [*SPECIAL_TOKENS, *sorted(entries)]


def build_tiny_tokenizer(
    corpus: Iterable[list[str]],
    lowercase: bool = True,
    queries: Mapping[str, str] | None = None,
    max_position: int = 256,
) -> Any:
    """A ``BertTokenizerFast`` over :func:`build_tiny_vocab`'s vocabulary (nothing written).

    Args:
        corpus: token lists (tweets).
        lowercase: lowercase and strip accents.
        queries: type -> query whose words are added; the default queries when None.
        max_position: the tokenizer's ``model_max_length``.

    Returns:
        A ``transformers.BertTokenizerFast``.
    """
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    vocab = build_tiny_vocab(corpus, lowercase=lowercase, queries=queries)
    options: dict[str, Any] = {
        "do_lower_case": lowercase,
        "strip_accents": lowercase,
        "model_max_length": max_position,
    }
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:
        # transformers >= 5: the vocabulary is given as a dict.
        return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, **options)
    # transformers 4: only a vocab.txt path is accepted.
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
        return BertTokenizerFast(vocab_file=str(vocab_file), **options)


def build_tiny_encoder(
    out_dir: str | Path,
    corpus: Iterable[list[str]],
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 128,
    max_position: int = 256,
    seed: int = 0,
    lowercase: bool = True,
    queries: Mapping[str, str] | None = None,
) -> Path:
    """Write a tiny random BERT (tokenizer + model) as a local Hugging Face model directory.

    The directory is written in a temporary folder next to ``out_dir`` and moved into place, so a
    reader never sees a half-written model; an existing ``out_dir`` is replaced.

    Args:
        out_dir: the model directory to write.
        corpus: token lists whose words the vocabulary covers.
        hidden_size: hidden size.
        num_layers: transformer layers.
        num_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: feed-forward size.
        max_position: maximum sequence length (position embeddings).
        seed: seed of the random weights.
        lowercase: lowercase and strip accents in the tokenizer.
        queries: type -> query whose words join the vocabulary; the default queries when None.

    Returns:
        ``out_dir`` as a Path: ``vocab.txt``, tokenizer files, ``config.json``,
        ``model.safetensors``.
    """
    import torch
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(
        corpus, lowercase=lowercase, queries=queries, max_position=max_position
    )
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = BertModel(config)
    finally:
        torch.random.set_rng_state(state)
    model.eval()

    tmp = temp_dir_beside(out)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer.save_pretrained(str(tmp))
        atomic_write_text(tmp / "vocab.txt", "".join(w + "\n" for w, _ in vocab))
        model.save_pretrained(str(tmp), safe_serialization=True)
        replace_dir(tmp, out, "model.safetensors")
    except BaseException as exc:
        abandon_dir(tmp, out, exc)
        raise
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out
