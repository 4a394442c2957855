"""Shared builders for tests: tiny encoders, tiny samples, tiny models (CPU, seconds)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
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
from mnerqg_graph.fusion.base import FusionModule
from mnerqg_graph.processing import MnerqgProcessor

TWEETS = [
    Tweet("t1", ["Kelvo", "visits", "Marn", "today", "\ufe0f"], ["B-PER", "O", "B-LOC", "O", "O"]),
    Tweet(
        "t2", ["so", "much", "about", "Zed", "Corp", "!"], ["O", "O", "O", "B-ORG", "I-ORG", "O"]
    ),
    Tweet("t3", ["nothing", "here"], ["O", "O"]),
]


@contextmanager
def one_torch_thread(seed: int | None = None) -> Iterator[None]:
    """One intra-op thread for the block, then the number there was before.

    On a shared 2-core machine, tiny ops run 10x+ faster with one thread than with two (OpenMP
    threads spin), and one thread is deterministic.

    Args:
        seed: when given, seed PyTorch's global generator on entry.

    Returns:
        A context manager (yields nothing).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synth_data(factory: pytest.TempPathFactory, name: str, seed: int, n_test: int) -> Path:
    """A tiny SynthTweets folder (20 train, 2 valid, ``n_test`` test tweets, 64 px images).

    Args:
        factory: pytest's ``tmp_path_factory``.
        name: prefix of the temporary folder.
        seed: the generator's seed.
        n_test: number of test tweets.

    Returns:
        The data-set folder (``<tmp>/synth``).
    """
    from mnerqg_graph.data.synth import generate

    root = factory.mktemp(name) / "synth"
    generate(root, seed=seed, n_train=20, n_valid=2, n_test=n_test, image_size=64)
    return root


def tiny_encoder(root: Path, tweets: list[Tweet] = TWEETS) -> Path:
    """A tiny random BERT (deterministic) at ``root/enc``.

    Args:
        root: the parent folder.
        tweets: the tweets whose words (with the default queries') make the vocabulary.

    Returns:
        The encoder folder.
    """
    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.encoders.tiny import build_tiny_encoder

    corpus = [t.tokens for t in tweets] + [q.split() for q in load_queries().values()]
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


def toy_fusion(name: str, node_types: Iterable[str], gating: bool = True) -> FusionModule:
    """The fusion module ``name`` at toy size: 8 features, 1 layer, 2 heads, no dropout.

    Args:
        name: a name of ``FUSION_REGISTRY``.
        node_types: the node types of the graph (8 input features each).
        gating: ``existence_gating``.

    Returns:
        The module over the three-scale graph's edge types (in training mode).
    """
    from mnerqg_graph.fusion import FUSION_REGISTRY
    from mnerqg_graph.graph.schema import edge_types

    return FUSION_REGISTRY.build(
        name,
        in_dims={nt: 8 for nt in node_types},
        hidden_dim=8,
        num_layers=1,
        edge_types=edge_types(3, True),
        existence_gating=gating,
        dropout=0.0,
        heads=2,
    )


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


def index_gathers(loss: torch.Tensor) -> list[Any]:
    """Every ``IndexBackward`` node (the backward of ``x[index]``) behind ``loss``."""
    found, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__.startswith("IndexBackward"):
            found.append(fn)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


def repeats_a_row(fn: Any) -> bool:
    """Whether an ``IndexBackward`` node's integer indices address one element twice."""
    ints = [t for t in fn._saved_indices if t is not None and t.dtype != torch.bool]
    if not ints:
        return False  # a boolean mask selects each element at most once
    key = torch.stack(torch.broadcast_tensors(*ints), -1).reshape(-1, len(ints))
    return int(torch.unique(key, dim=0).size(0)) < key.size(0)


def decoder_plugin(folder: Path) -> tuple[str, Path]:
    """Write a plugin file registering a span decoder under a fresh name: ``(name, path)``."""
    import uuid

    name = f"span_copy_{uuid.uuid4().hex[:8]}"
    plugin = folder / f"{name}.py"
    plugin.write_text(
        "from mnerqg_graph.decoding import DECODER_REGISTRY, SpanDecoder\n"
        f"DECODER_REGISTRY.register({name!r})(type({name!r}, (SpanDecoder,), {{}}))\n"
    )
    return name, plugin
