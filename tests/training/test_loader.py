"""Length-bucketed batching: a permutation of the data, seeded, and with less padding."""

from __future__ import annotations

import random

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
