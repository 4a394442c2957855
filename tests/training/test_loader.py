"""Length-bucketed batching: a permutation of the data, seeded, and with less padding."""

from __future__ import annotations

import random
from pathlib import Path

from mnerqg_graph.training.loop import length_bucket_batches


def _padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_bucketed_batches_cover_each_item_once_and_are_seeded() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 80) for _ in range(1003)]
    batches = length_bucket_batches(lengths, batch_size=8, pool_batches=10, seed=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1003))
    assert len(batches) == -(-1003 // 8)  # as many steps as plain batching
    assert sum(len(b) < 8 for b in batches) == 1  # only the last pool's tail is short
    assert batches == length_bucket_batches(lengths, 8, 10, seed=4)
    assert batches != length_bucket_batches(lengths, 8, 10, seed=5)


def test_bucketed_batches_pad_far_less_than_random_batches() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(5, 80) for _ in range(800)]
    order = list(range(800))
    rng.shuffle(order)
    plain = [order[i : i + 8] for i in range(0, 800, 8)]
    bucketed = length_bucket_batches(lengths, 8, 25, seed=0)
    assert _padding(bucketed, lengths) < 0.2 * _padding(plain, lengths)
    # batches are not in length order: the pool's sorted batches are shuffled
    maxima = [max(lengths[i] for i in b) for b in bucketed]
    assert maxima != sorted(maxima)


def test_loader_with_length_buckets_yields_every_tweet_once(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.encoders.text import minilm_path
    from mnerqg_graph.processing import MnerqgProcessor
    from mnerqg_graph.training.loop import make_loader
    from tests.helpers import samples

    smp = samples(tmp_path) * 10  # 30 tweets of three lengths
    tok = AutoTokenizer.from_pretrained(minilm_path())  # the tokenizer only: no model to build
    items = MnerqgProcessor(tok, load_queries(), 128, 8, image_size=None)(smp).items
    seen: list[int] = []
    for batch in make_loader(items, 4, 8, 64, 0, shuffle=True, seed=1, length_buckets=3):
        tweets = batch.tweet_index.unique().tolist()
        assert len(tweets) <= 4
        seen += tweets
    assert sorted(seen) == sorted(it.index for it in items)
