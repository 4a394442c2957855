"""Shared builders for tests: tiny encoders, tiny samples, tiny models (CPU, seconds)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from mnerqg_graph.config import (
    EncoderConfig,
    FusionConfig,
    GraphConfig,
    ImageConfig,
    ModelConfig,
)
from mnerqg_graph.data.collate import MrcBatch, TweetItem, collate
from mnerqg_graph.data.types import Box, Sample, Span, Tweet
from mnerqg_graph.processing import MnerqgProcessor

TWEETS = [
    Tweet("t1", ["Kelvo", "visits", "Marn", "today", "\ufe0f"], ["B-PER", "O", "B-LOC", "O", "O"]),
    Tweet(
        "t2", ["so", "much", "about", "Zed", "Corp", "!"], ["O", "O", "O", "B-ORG", "I-ORG", "O"]
    ),
    Tweet("t3", ["nothing", "here"], ["O", "O"]),
]


def tiny_encoder(root: Path) -> Path:
    """A tiny random BERT built from :data:`TWEETS` (deterministic)."""
    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.encoders.tiny import build_tiny_encoder

    corpus = [t.tokens for t in TWEETS] + [q.split() for q in load_queries().values()]
    return build_tiny_encoder(
        root / "enc",
        corpus,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        seed=0,
    )


def write_image(path: Path, seed: int = 0, size: int = 80) -> Path:
    """A random RGB JPEG."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr).save(path)
    return path


def samples(tmp: Path) -> list[Sample]:
    """t1 has an image and a PER box, t2 has no image, t3 has an image and no entity."""
    img1 = write_image(tmp / "t1.jpg", 1)
    img3 = write_image(tmp / "t3.jpg", 3)
    return [
        Sample(TWEETS[0], img1, (80, 80), {Span(0, 1, "PER"): [Box(8, 8, 40, 60)]}),
        Sample(TWEETS[1]),
        Sample(TWEETS[2], img3, (80, 80), {}),
    ]


def tiny_config(encoder: Path, over: Mapping[str, object] | None = None) -> ModelConfig:
    """A tiny model config (32-dim, 1 fusion layer, 64 px images).

    Args:
        encoder: the text encoder directory.
        over: settings changed after those, by dotted path (``{"heads.tag_head": True}``).
    """
    from mnerqg_graph.data.queries import load_queries

    cfg = ModelConfig(
        types=list(load_queries()),
        encoder=EncoderConfig(name=str(encoder), casing_dim=4),
        image=ImageConfig(backbone_kwargs={"width": 8, "out_channels": 16}, image_size=64),
        graph=GraphConfig(hidden_dim=32),
        fusion=FusionConfig(layers=1, kwargs={"heads": 2}),
    )
    return cfg.updated(over) if over else cfg


def processor(encoder: Path, cfg: ModelConfig) -> MnerqgProcessor:
    """The processor of ``cfg`` with the default queries (images at ``cfg.image.image_size``)."""
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.processing import MnerqgProcessor

    tok = AutoTokenizer.from_pretrained(str(encoder))
    return MnerqgProcessor(
        tok,
        load_queries(),
        max_length=cfg.encoder.max_length,
        max_span_len=cfg.heads.max_span_len,
        image_size=cfg.image.image_size,
        query_encoding=cfg.encoder.query_encoding,
        packed_positions=cfg.encoder.packed_positions,
    )


def items_and_batch(
    smp: list[Sample], encoder: Path, cfg: ModelConfig
) -> tuple[list[TweetItem], MrcBatch]:
    """Tweet items and their collated batch."""
    proc = processor(encoder, cfg)
    items = proc(smp).items
    return items, collate(
        items, cfg.heads.max_span_len, cfg.image.image_size, proc.tokenizer.pad_token_id
    )


def count_calls(fn: Callable[..., object], *args: object, **kwargs: object) -> int:
    """How many function calls (Python and C, e.g. torch ops) ``fn(*args, **kwargs)`` makes.

    A structural stand-in for a time limit: a vectorised step makes the same number of calls
    whatever the size of its input, a Python loop over examples or edges does not.
    """
    import sys

    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        fn(*args, **kwargs)
    finally:
        sys.setprofile(None)
    return calls
