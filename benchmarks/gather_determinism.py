"""How often the backward of a gather of repeated rows differs between identical runs (CPU).

Usage::

    python -m benchmarks.gather_determinism [--threads 2] [--runs 3000]

The gather is the model's commonest one: 15 images' 8x8-cell maps of 64 channels, each copied to its
4 (tweet, type) examples. Its backward runs ``--runs`` times on the same inputs, and the script
counts the runs whose gradient is not bit-identical to the first one, for ``x[rows]`` (backward
``index_put_(accumulate=True)``: atomic adds from several threads) and for
:func:`mnerqg_graph.tensors.take_rows` (``index_select``; backward ``index_add_``, in index order).
Run it on a busy machine (other processes on the cores) to see the first differ.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from mnerqg_graph.tensors import take_rows


def differing_runs(gather: Callable[[torch.Tensor], torch.Tensor], runs: int) -> int:
    """Runs of ``gather``'s backward whose gradient differs from the first run's."""
    torch.manual_seed(0)
    x = torch.randn(15, 64, 64, requires_grad=True)
    grad = torch.randn(60, 64, 64)
    first, differ = None, 0
    for _ in range(runs):
        x.grad = None
        gather(x).backward(grad)
        assert x.grad is not None
        if first is None:
            first = x.grad.clone()
        elif not torch.equal(x.grad, first):
            differ += 1
    return differ


def main(argv: list[str] | None = None) -> int:
    """Count the differing runs of both gathers and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3000)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = torch.arange(15).repeat_interleave(4)
    for name, gather in (
        ("x[rows]", lambda t: t[rows]),
        ("take_rows(x, rows)", lambda t: take_rows(t, rows)),
    ):
        n = differing_runs(gather, args.runs)
        print(f"{name}: {n} of {args.runs - 1} runs differ from the first ({args.threads} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
