"""Query grounding over box regions (a detector's boxes): pick a region, refine its box.

For each (tweet, type) example with an image, every region node (any scale) predicts a confidence
that it shows an entity of type t and a refinement of its own box (centre shift in units of the
box's size, log-scale of width and height, bounded). The prediction is the refined box of the most
confident region; a confidence under the config's ``grounding_threshold`` (read by the decoding
step, :func:`mnerqg_graph.decoding.ground`), or an image without regions, means "not in the
image".

Targets: a region is positive for a gold box when their IoU is at least ``positive_iou``; each gold
box also makes its best-overlapping region positive (so a gold box that overlaps some region has a
positive); a positive region's box target is the gold box it overlaps most.

Outputs are dense per example (``C`` = the most regions of one example in the batch) with a mask;
padded slots have a logit of :data:`PAD_LOGIT` and take no part in the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnerqg_graph.boxes import generalized_box_iou, pairwise_box_iou

#: Logit of the padded slots of an example with fewer regions than ``C`` (sigmoid: 0).
PAD_LOGIT = -1.0e4
#: Bound of the log-scale refinement of a box's width and height.
MAX_LOG_SCALE = 1.5


class BoxGroundingHead(nn.Module):
    """Query-conditioned confidence and refined box per region box.

    Args:
        region_dim: region feature size after fusion.
        query_dim: query feature size after fusion.
        num_scales: region scales (each has a learned embedding).
        hidden_dim: MLP width.
        positive_iou: IoU with a gold box from which a region is a positive.

    Shapes:
        regions[k]: ``[n_k, region_dim]``; boxes[k]: ``[n_k, 4]``; example[k]: ``[n_k]`` (the
        node's example among the ``M`` image examples); query: ``[M, query_dim]``
        -> logits ``[M, C]``, boxes ``[M, C, 4]``, anchors ``[M, C, 4]`` (the regions' own boxes),
        mask ``[M, C]``.
    """

    def __init__(
        self,
        region_dim: int,
        query_dim: int,
        num_scales: int,
        hidden_dim: int = 128,
        positive_iou: float = 0.5,
    ) -> None:
        super().__init__()
        self.positive_iou = positive_iou
        self.region_proj = nn.Linear(region_dim, hidden_dim)
        self.box_proj = nn.Linear(4, hidden_dim)
        self.query_proj = nn.Linear(query_dim, hidden_dim)
        self.scale_emb = nn.Embedding(num_scales, hidden_dim)
        self.mlp = nn.Sequential(
            nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 5)
        )

    def forward(
        self, regions: list[Tensor], boxes: list[Tensor], example: list[Tensor], query: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Confidence logits, refined boxes, region boxes and mask (see the class docstring)."""
        m = query.size(0)
        feats = [
            self.region_proj(r) + self.box_proj(b.to(r.dtype)) + self.scale_emb.weight[k]
            for k, (r, b) in enumerate(zip(regions, boxes, strict=True))
        ]
        h = torch.cat(feats)
        anchor = torch.cat(boxes).to(h.dtype)
        ex = torch.cat(example)
        order = ex.argsort(stable=True)  # example-major, scales in order within an example
        h, anchor, ex = h[order], anchor[order], ex[order]
        counts = torch.bincount(ex, minlength=m)
        c = max(int(counts.max()) if counts.numel() else 0, 1)
        slot = torch.arange(ex.numel(), device=ex.device) - (torch.cumsum(counts, 0) - counts)[ex]
        dense = h.new_zeros(m, c, h.size(-1))
        dense[ex, slot] = h
        anchors = anchor.new_zeros(m, c, 4)
        anchors[ex, slot] = anchor
        mask = torch.zeros(m, c, dtype=torch.bool, device=h.device)
        mask[ex, slot] = True
        out = self.mlp(dense * self.query_proj(query).unsqueeze(1))  # [M, C, 5]
        wh = (anchors[..., 2:] - anchors[..., :2]).clamp(min=1e-3)
        centre = (anchors[..., :2] + anchors[..., 2:]) / 2 + torch.tanh(out[..., 1:3]) * wh / 2
        size = wh * torch.exp(MAX_LOG_SCALE * torch.tanh(out[..., 3:5]))
        refined = torch.cat([centre - size / 2, centre + size / 2], -1).clamp(0, 1)
        logits = out[..., 0].masked_fill(~mask, PAD_LOGIT)
        return logits, refined, anchors, mask

    def targets(
        self, anchors: Tensor, mask: Tensor, gt: Tensor, gt_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per-region 0/1 confidence targets and box targets from gold boxes.

        Shapes:
            anchors: ``[M, C, 4]``; mask: ``[M, C]``; gt: ``[M, K, 4]``; gt_mask: ``[M, K]``
            -> ``[M, C]``, ``[M, C, 4]``.
        """
        iou = pairwise_box_iou(anchors, gt)  # [M, C, K]
        iou = iou.masked_fill(~(mask[:, :, None] & gt_mask[:, None, :]), -1.0)
        best_iou, best_gt = iou.max(2)  # per region: the gold box it overlaps most
        pos = best_iou >= self.positive_iou
        # each gold box's best region (when it overlaps one at all)
        top_iou, top_region = iou.max(1)  # [M, K]
        m_idx, k_idx = ((top_iou > 0) & gt_mask).nonzero(as_tuple=True)
        pos[m_idx, top_region[m_idx, k_idx]] = True
        box_t = gt.gather(1, best_gt.unsqueeze(-1).expand(-1, -1, 4)).clone()
        box_t[m_idx, top_region[m_idx, k_idx]] = gt[m_idx, k_idx]
        return (pos & mask).to(anchors.dtype), box_t

    def loss(
        self,
        logits: Tensor,
        boxes: Tensor,
        gt: Tensor,
        gt_mask: Tensor,
        anchors: Tensor,
        mask: Tensor,
        presence_weight: float = 0.0,
    ) -> Tensor:
        """Confidence BCE (positives and negatives balanced) + L1 + GIoU on positive regions.

        Args:
            logits: per-region confidence logits.
            boxes: per-region refined boxes.
            gt: gold boxes (normalised xyxy).
            gt_mask: which gold slots are real (all False: the type is not in the image).
            anchors: the regions' own boxes.
            mask: which region slots are real.
            presence_weight: weight of a BCE on the best region's logit with target "the type
                has a box in this image" (see ``GroundingHead.loss``).
        """
        conf_t, box_t = self.targets(anchors, mask, gt, gt_mask)
        pos = conf_t > 0.5
        neg = mask & ~pos
        bce = F.binary_cross_entropy_with_logits(logits, conf_t, reduction="none")
        n_pos = pos.sum().clamp(min=1)
        conf_loss = bce[pos].sum() / n_pos if pos.any() else logits.sum() * 0.0
        if neg.any():
            conf_loss = conf_loss + bce[neg].mean()
        has = mask.any(dim=1)  # an image without regions has no best region to ask
        if presence_weight and has.any():
            present = gt_mask.any(dim=1).to(logits.dtype)
            conf_loss = conf_loss + presence_weight * F.binary_cross_entropy_with_logits(
                logits.max(dim=1).values[has], present[has]
            )
        if not pos.any():
            return conf_loss + boxes.sum() * 0.0
        _, giou = generalized_box_iou(boxes[pos], box_t[pos])
        box_loss = F.l1_loss(boxes[pos], box_t[pos], reduction="sum") / n_pos
        return conf_loss + box_loss + (1 - giou).sum() / n_pos

    def predict(self, logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Best refined box per example and its confidence (0 without regions).

        Shapes:
            logits: ``[M, C]``; boxes: ``[M, C, 4]`` -> box ``[M, 4]``, confidence ``[M]``.
        """
        conf, best = torch.sigmoid(logits).max(1)
        return boxes[torch.arange(boxes.size(0), device=boxes.device), best], conf
