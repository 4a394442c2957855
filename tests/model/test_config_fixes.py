"""Configs that name components from elsewhere: a plugin's decoder, another backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnerqg_graph.config import ImageConfig, ModelConfig, default_backbone_kwargs
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.heads.box_grounding import BoxGroundingHead
from tests.helpers import decoder_plugin


def test_a_saved_config_with_a_plugin_decoder_reads_back(tmp_path: Path) -> None:
    name, plugin = decoder_plugin(tmp_path)
    data = {"config_version": 1, "types": ["PER"], "text_encoder": "x", "decoder": name}
    data["plugins"] = [str(plugin)]
    assert ModelConfig.from_dict(data).decoding.decoder == name  # its plugin is imported first
    with pytest.raises(ConfigError, match="cannot be imported"):
        ModelConfig.from_dict({**data, "decoder": "nowhere", "plugins": [str(tmp_path / "no.py")]})


def test_the_default_backbone_options_are_small_cnns_only() -> None:
    cfg = ModelConfig(types=["PER"], image=ImageConfig(backbone="resnet18_fpn"))
    assert cfg.image.backbone_kwargs == {}
    assert ModelConfig(types=["PER"]).image.backbone_kwargs == default_backbone_kwargs()
    own = ImageConfig(backbone="resnet18_fpn", backbone_kwargs={"a": 1})
    assert own.backbone_kwargs == {"a": 1}


def test_box_grounding_loss_of_an_image_without_regions_is_finite() -> None:
    torch.manual_seed(0)
    head = BoxGroundingHead(8, 8, num_scales=1, hidden_dim=8)
    logits = torch.tensor([[0.5, -0.5], [-1e4, -1e4]])  # the second image: no region at all
    boxes = torch.rand(2, 2, 4).sort(-1).values
    anchors = boxes.clone()
    mask = torch.tensor([[True, True], [False, False]])
    gt = torch.tensor([[[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.2, 0.6, 0.6]]])
    gt_mask = torch.tensor([[True], [True]])
    loss = head.loss(logits, boxes, gt, gt_mask, anchors, mask, presence_weight=1.0)
    assert torch.isfinite(loss) and loss.item() < 100
