"""One-stage, anchor-free query-grounding head over the 3 region scales.

For each (tweet, type) example with an image, every region cell of every scale predicts a confidence
that it holds the centre of a box of type t, and a box (centre offsets inside the cell, width and
height relative to the image). The predicted box of the type is that of the most confident cell over
all scales; the caller's threshold on its confidence says "type t is not in the image" (the
decoding step reads the model config's ``grounding_threshold``).

Targets: a gold box is assigned, at every scale, to the cell that contains its centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnerqg_graph.boxes import generalized_box_iou


class GroundingHead(nn.Module):
    """Query-conditioned confidence and box per region cell.

    Args:
        region_dim: region feature size after fusion.
        query_dim: query feature size after fusion.
        grids: ``(rows, cols)`` per scale, coarsest first.
        hidden_dim: MLP width.

    Shapes:
        regions: list over scales of ``[M, rows*cols, region_dim]``; query: ``[M, query_dim]``
        -> logits ``[M, C]`` and boxes ``[M, C, 4]`` (normalised xyxy), ``C`` = all cells.
    """

    cells: Tensor  # [C, 4]: column, row, columns, rows of every cell (coarsest scale first)

    def __init__(
        self,
        region_dim: int,
        query_dim: int,
        grids: tuple[tuple[int, int], ...],
        hidden_dim: int = 128,
    ) -> None:
        super().__init__()
        self.grids = grids
        self.region_proj = nn.Linear(region_dim, hidden_dim)
        self.query_proj = nn.Linear(query_dim, hidden_dim)
        self.scale_emb = nn.Embedding(len(grids), hidden_dim)
        self.mlp = nn.Sequential(
            nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 5)
        )
        cells = []
        for rows, cols in grids:
            idx = torch.arange(rows * cols)
            cells.append(
                torch.stack(
                    [
                        idx % cols,
                        idx // cols,
                        torch.full_like(idx, cols),
                        torch.full_like(idx, rows),
                    ],
                    -1,
                ).float()
            )
        self.register_buffer("cells", torch.cat(cells), persistent=False)  # [C, 4]: col,row,W,H

    def forward(self, regions: list[Tensor], query: Tensor) -> tuple[Tensor, Tensor]:
        """Confidence logits and boxes for every cell (see the class docstring)."""
        feats = []
        for level, r in enumerate(regions):
            feats.append(self.region_proj(r) + self.scale_emb.weight[level])
        h = torch.cat(feats, 1) * self.query_proj(query).unsqueeze(1)  # [M, C, hidden]
        out = self.mlp(h)
        col, row, ncol, nrow = self.cells.unbind(-1)
        cx = (col + torch.sigmoid(out[..., 1])) / ncol
        cy = (row + torch.sigmoid(out[..., 2])) / nrow
        w, hh = torch.sigmoid(out[..., 3]), torch.sigmoid(out[..., 4])
        boxes = torch.stack([cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2], -1).clamp(0, 1)
        return out[..., 0], boxes

    def targets(self, gt: Tensor, gt_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-cell 0/1 confidence targets and box targets from gold boxes.

        Shapes:
            gt: ``[M, K, 4]`` normalised xyxy; gt_mask: ``[M, K]`` -> ``[M, C]``, ``[M, C, 4]``.
        """
        m, k = gt_mask.shape
        n_cells = self.cells.size(0)
        conf = torch.zeros(m, n_cells, device=gt.device)
        box_t = torch.zeros(m, n_cells, 4, device=gt.device)
        centre = (gt[..., :2] + gt[..., 2:]) / 2
        offset = 0
        ex = torch.arange(m, device=gt.device).unsqueeze(1).expand(m, k)[gt_mask]
        for rows, cols in self.grids:
            c = centre[gt_mask]
            col = (c[:, 0] * cols).long().clamp(0, cols - 1)
            row = (c[:, 1] * rows).long().clamp(0, rows - 1)
            cell = offset + row * cols + col
            conf[ex, cell] = 1.0
            box_t[ex, cell] = gt[gt_mask]
            offset += rows * cols
        return conf, box_t

    def loss(
        self,
        logits: Tensor,
        boxes: Tensor,
        gt: Tensor,
        gt_mask: Tensor,
        presence_weight: float = 0.0,
    ) -> Tensor:
        """Confidence BCE (positives and negatives balanced) + L1 + GIoU on positive cells.

        Args:
            logits: per-cell confidence logits.
            boxes: per-cell boxes.
            gt: gold boxes (normalised xyxy).
            gt_mask: which gold slots are real (all False: the type is not in the image).
            presence_weight: weight of a BCE on the best cell's logit with target "the type has a
                box in this image". The per-cell negative term is a mean over all cells, which
                barely pushes down the one cell holding an object of another type; this term does,
                so "not in the image" is learned.
        """
        conf_t, box_t = self.targets(gt, gt_mask)
        pos = conf_t > 0.5
        bce = F.binary_cross_entropy_with_logits(logits, conf_t, reduction="none")
        n_pos = pos.sum().clamp(min=1)
        conf_loss = bce[pos].sum() / n_pos + bce[~pos].mean() if pos.any() else bce.mean()
        if presence_weight:
            present = gt_mask.any(dim=1).to(logits.dtype)
            conf_loss = conf_loss + presence_weight * F.binary_cross_entropy_with_logits(
                logits.max(dim=1).values, present
            )
        if not pos.any():
            return conf_loss
        _, giou = generalized_box_iou(boxes[pos], box_t[pos])
        box_loss = F.l1_loss(boxes[pos], box_t[pos], reduction="sum") / n_pos
        return conf_loss + box_loss + (1 - giou).sum() / n_pos

    def predict(self, logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Best box per example and its confidence.

        Shapes:
            logits: ``[M, C]``; boxes: ``[M, C, 4]`` -> box ``[M, 4]``, confidence ``[M]``.
        """
        conf, best = torch.sigmoid(logits).max(1)
        return boxes[torch.arange(boxes.size(0), device=boxes.device), best], conf
