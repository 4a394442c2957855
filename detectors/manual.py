"""Which training tweets count as "manually annotated" (gold boxes) under weak supervision.

:func:`select_manual` is the one choice: the experiment (``grounding.manual_fraction``) keeps gold
boxes on exactly these tweets, ``python -m detectors.grounder finetune`` fine-tunes the grounder
on them, and ``mnerqg pseudo-label`` (:mod:`detectors.weak_labels`) labels the others, so the same
tweets are "manual" everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mnerqg_graph.data.types import Sample
from mnerqg_graph.errors import ConfigError


def select_manual(samples: Sequence[Sample], fraction: float, seed: int) -> set[int]:
    """The indices of the "manually annotated" tweets: a seeded share of those with an image.

    ``random.Random(seed).sample`` of the indices of the tweets with an image
    (``image_path is not None``), ``round(fraction * n)`` of them. The experiment keeps gold boxes
    on exactly these tweets, and the grounder is fine-tuned on them.

    Args:
        samples: the training tweets, in file order (after any ``data.limit``).
        fraction: the share in [0, 1]; 1 selects every tweet with an image.
        seed: the experiment's seed.

    Returns:
        Indices into ``samples``.

    Raises:
        ConfigError: ``fraction`` outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"manual_fraction must be in [0, 1], got {fraction}")
    with_image = [i for i, s in enumerate(samples) if s.image_path is not None]
    rng = random.Random(seed)
    return set(rng.sample(with_image, round(fraction * len(with_image))))


__all__ = ["select_manual"]
