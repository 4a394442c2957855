"""An exponential moving average of a model's weights (``optim.ema_decay``).

The trainer updates the average after every optimiser step and validates, selects and saves the
*averaged* weights: a checkpoint's ``model.safetensors`` holds what was evaluated. The raw weights
the optimiser works on are kept in the training state (``state/``) beside the average, so that a
resumed run continues exactly.

The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the usual warm-up
of TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``), so that the first steps'
random weights do not linger in the average of a short run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from mnerqg_graph.errors import CheckpointError, ConfigError

#: Key of the update count in :meth:`WeightAverage.state_dict`.
UPDATES_KEY = "__updates__"


class WeightAverage:
    """An exponential moving average of a model's trained parameters and floating-point buffers.

    Frozen parameters (a frozen image side or detector) are left out: they do not move.

    Args:
        model: the model whose weights are averaged (its current weights start the average).
        decay: the average's decay per update, in ``(0, 1)`` (e.g. 0.999: about the last 1,000
            steps).

    Shapes:
        - :attr:`shadow`: name -> a float32 tensor of the shape of that entry of
          ``model.state_dict()``, on the model's device.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1) (0 turns it off), not {decay!r}")
        self.decay = decay
        self.updates = 0
        moving = {n for n, p in model.named_parameters() if p.requires_grad}
        moving |= {n for n, b in model.named_buffers() if b.is_floating_point()}
        self.shadow: dict[str, Tensor] = {
            name: t.detach().float().clone()
            for name, t in model.state_dict().items()
            if name in moving
        }

    def current_decay(self) -> float:
        """The decay of the next update (the warm-up of the module docstring)."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights (one fused ``lerp`` over all tensors)."""
        weight = 1.0 - self.current_decay()
        state = model.state_dict()
        averages = list(self.shadow.values())
        torch._foreach_lerp_(averages, [state[name].float() for name in self.shadow], weight)
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Load the averaged weights into ``model`` for the ``with`` block; restore them after."""
        state = model.state_dict()
        raw = {name: state[name].detach().clone() for name in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(raw, strict=False)

    def state_dict(self) -> dict[str, Tensor]:
        """The average and its update count, as tensors (for a safetensors file)."""
        out = {name: t.detach().cpu().contiguous() for name, t in self.shadow.items()}
        out[UPDATES_KEY] = torch.tensor([self.updates], dtype=torch.long)
        return out

    def load_state_dict(self, state: dict[str, Tensor], source: str = "average") -> None:
        """Restore :meth:`state_dict`'s output (tensors moved to the average's devices).

        Raises:
            CheckpointError: the names or shapes do not fit this model's average.
        """
        names = set(state) - {UPDATES_KEY}
        if names != set(self.shadow) or UPDATES_KEY not in state:
            raise CheckpointError(f"{source}: the weight average does not fit this model")
        for name, t in self.shadow.items():
            if state[name].shape != t.shape:
                raise CheckpointError(
                    f"{source}: {name} has shape {tuple(state[name].shape)}, "
                    f"the model's {tuple(t.shape)}"
                )
            t.copy_(state[name])
        self.updates = int(state[UPDATES_KEY][0])
