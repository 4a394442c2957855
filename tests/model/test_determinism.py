"""The same seed gives the same weights to the bit, whatever the load on the machine.

On CPU, the backward of ``x[index]`` with repeated rows is ``index_put_(accumulate=True)``, which
with more than one torch thread adds from several threads with atomics: the order of the float
sums, and so the last bits of a gradient, depend on how the threads are scheduled (two `make demo`
runs of one seed on a loaded machine drifted apart within the first epoch). The model gathers
repeated rows with :func:`mnerqg_graph.tensors.take_rows` (``index_select``, whose backward adds in
index order). These tests walk the autograd graph of a training loss and fail on any advanced-index
gather whose index repeats a row, for the layouts that gather repeated rows: per-type and packed
queries, grid image regions, the span-match head's candidate pairs (detector regions:
``tests/regions/test_detector_model.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mnerqg_graph.model import build_model
from mnerqg_graph.tensors import take_rows
from tests.helpers import index_gathers, items_and_batch, repeats_a_row, samples, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"encoder.query_encoding": "packed"},
    ],
    ids=["per_type", "packed"],
)
def test_no_gather_of_repeated_rows_in_the_training_backward(
    tmp_path: Path, encoder_dir: Path, over: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"heads.tag_head": True, **over})
    model = build_model(cfg).train()
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    loss = model.losses(batch, model(batch))["total"]
    gathers = index_gathers(loss)
    assert gathers, "the walk must reach the boolean-mask gathers of the graph builder"
    bad = [type(fn).__name__ for fn in gathers if repeats_a_row(fn)]
    assert bad == [], f"{len(bad)} gathers of repeated rows: use mnerqg_graph.tensors.take_rows"


def test_take_rows_is_indexing_with_a_backward_in_index_order() -> None:
    x = torch.randn(5, 3, 2, requires_grad=True)
    rows = torch.tensor([4, 0, 0, 2, 4, 4])
    out = take_rows(x, rows)
    assert torch.equal(out, x[rows])
    grad = torch.randn_like(out)
    out.backward(grad)
    expected = torch.zeros_like(x)
    for r, g in zip(rows.tolist(), grad, strict=True):  # serial adds, in index order
        expected[r] += g
    assert x.grad is not None and torch.equal(x.grad, expected)
    # and the probe sees what plain indexing would do
    loss = x[rows].sum()
    assert any(repeats_a_row(fn) for fn in index_gathers(loss))
