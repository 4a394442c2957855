"""Tensor helpers shared by the model's steps.

:func:`take_rows` is ``x[index]`` for an index that repeats rows (a tweet's shared encoder states
read by each of its types' examples, an image's nodes copied to each (tweet, type) example, the
start and end features of many candidate spans). Both compute the same forward, but their
backward passes differ on CPU: ``x[index]``'s backward is ``index_put_(accumulate=True)``, which
with more than one torch thread and 32,768 elements or more adds from several threads with
atomics, so the order of the float sums, and the last bits of the gradient, depend on how the
threads are scheduled (a loaded machine gives other weights than an idle one from the same seed).
``index_select``'s backward is ``index_add_``, which adds the rows in index order: the same bits
on every run, whatever the thread count or the load. With one thread both add in index order and
agree to the bit.
"""

from __future__ import annotations

from torch import Tensor


def take_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along the first dimension, with a deterministic backward (see the module).

    Args:
        x: the rows.
        index: which row each output row copies (repeats allowed).

    Shapes:
        x: ``[R, *]``, index: ``[M]`` (integer) -> ``[M, *]``.
    """
    return x.index_select(0, index)
