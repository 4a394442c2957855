"""The exponential moving average of the weights (``optim.ema_decay``): its arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnerqg_graph.errors import CheckpointError, ConfigError
from mnerqg_graph.training.averaging import WeightAverage


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    net[2].weight.requires_grad_(False)  # a frozen parameter
    return net


def test_the_average_follows_the_warmed_up_decay() -> None:
    net = _net()
    avg = WeightAverage(net, decay=0.5)
    # trained parameters and floating buffers; not the frozen weight, not the int counter
    assert set(avg.shadow) == {
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "2.bias",
    }  # fmt: skip
    expected = net[0].weight.detach().clone()
    for n in range(1, 4):
        with torch.no_grad():
            net[0].weight.add_(float(n))
        d = min(0.5, (1 + n) / (10 + n))  # 2/11, 3/12, 0.5 (capped at the decay)
        expected = d * expected + (1 - d) * net[0].weight.detach()
        avg.update(net)
        assert torch.allclose(avg.shadow["0.weight"], expected, atol=1e-6), n
    assert avg.updates == 3


def test_applied_swaps_the_average_in_and_back() -> None:
    net = _net()
    avg = WeightAverage(net, decay=0.9)
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    raw = net[0].weight.detach().clone()
    with avg.applied(net):
        assert torch.equal(net[0].weight, avg.shadow["0.weight"])
        assert not torch.equal(net[0].weight, raw)
    assert torch.equal(net[0].weight, raw)


def test_state_round_trip_and_mismatch() -> None:
    net = _net()
    avg = WeightAverage(net, decay=0.9)
    avg.update(net)
    back = WeightAverage(_net(), decay=0.9)
    back.load_state_dict(avg.state_dict())
    assert back.updates == 1
    assert all(torch.equal(back.shadow[k], avg.shadow[k]) for k in avg.shadow)
    other = WeightAverage(nn.Linear(3, 2), decay=0.9)
    with pytest.raises(CheckpointError, match="does not fit"):
        other.load_state_dict(avg.state_dict())


@pytest.mark.parametrize("decay", [-0.1, 1.0, 2.0])
def test_a_decay_outside_zero_one_is_refused(decay: float) -> None:
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        WeightAverage(_net(), decay)
