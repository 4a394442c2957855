"""What a training run of the detectors package did (the detector's and the grounder's loops).

The MNER model's own loop (:mod:`mnerqg_graph.training.loop`) has its own, richer result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        history: mean total loss per epoch.
        steps: optimiser steps taken.
        seconds: wall-clock time of the training loop.
        checkpoint: where the model was saved (None when not saved).
    """

    history: list[float]
    steps: int
    seconds: float
    checkpoint: Path | None = None


__all__ = ["TrainResult"]
