"""The MNER-QG meta-architecture: backbones (text, image) + neck (graph + fusion) + heads.

Input schema (:class:`mnerqg_graph.data.collate.MrcBatch`), for a batch of ``B`` tweets and ``T``
entity types, ``N = B * T`` (tweet, type) examples ordered tweet-major, read from ``R`` encoder
sequences: ``R = N`` with ``query_encoding="per_type"`` (``[CLS] query [SEP] tweet [SEP]``),
``R = B`` with ``packed`` (``[CLS] q_1 [SEP] ... q_T [SEP] tweet [SEP]``, see
:mod:`mnerqg_graph.data.mrc`):

===================  ===============  ======================================================
key                  shape            meaning
===================  ===============  ======================================================
input_ids            [R, L]           word pieces of the encoder sequences
attention_mask       [R, L]           1 on real pieces
token_type_ids       [R, L]           0 on the query part, 1 on the tweet part
position_ids         [R, L]           position id of every piece
query_slot           [R, L]           packed: query index of each query piece, else -1
example_sequence     [N]              the sequence (row) each example reads
query_span           [N, 2]           positions of the example's query pieces in its row
first_piece          [N, W]           position of each original token's first piece in the
                                      example's row, -1: none
token_shape          [N, W]           casing/shape class per original token (0: padding)
type_index           [N]              entity type of the example
example_tweet        [N]              index of the example's tweet in ``images``
images               [B, 3, H, W]     RGB in [0, 1] (zeros where there is no image)
has_image            [B]              whether the tweet has an image
regions              RegionNodes      or None: the region nodes of the tweets that have an
                                      image, read from a region cache (then ``images`` is
                                      not read: the backbone and detector do not run)
start, end           [N, W]           0/1 span boundary labels (training)
match                [N, W, S]        0/1 label of span ``i..i+k`` (training)
exists               [N]              0/1 existence label (training)
tags                 [N, W]           BIO tag over all types, the tweet's (training, tag head)
gt_boxes, gt_mask    [N, K, 4], [N,K] gold boxes of the type, normalised xyxy (training)
===================  ===============  ======================================================

The image is encoded once per tweet (``B`` images, not ``N``) and shared by the tweet's ``T``
queries through ``example_tweet``; with ``packed`` queries the text is too. The model asks its
region source (``config.image.regions``, :data:`mnerqg_graph.regions.REGION_SOURCE_REGISTRY`) for
each image's region nodes: ``grid`` cells (each plus a learned per-cell embedding) or ``detector``
boxes (each plus a projection of its geometry), a variable number per image, in the graph without
padding; the grounding head is :class:`~mnerqg_graph.heads.GroundingHead` over grid cells or
:class:`~mnerqg_graph.heads.BoxGroundingHead` over boxes. Each example's query
node is the ``[CLS]`` state of its sequence (``per_type``) or the mean of its own query's piece
states (``packed``), plus a learned type embedding; its token nodes are the states of the
tweet's first pieces, its casing and the asked type. :meth:`MnerqgModel.forward` returns a
:class:`ModelOutput`; :meth:`MnerqgModel.losses` returns a dict of named, weighted losses.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from mnerqg_graph.config import ModelConfig, default_fusion_kwargs
from mnerqg_graph.data.collate import MrcBatch
from mnerqg_graph.encoders.features import SHAPES
from mnerqg_graph.encoders.image import BACKBONE_REGISTRY, ImageBackbone
from mnerqg_graph.encoders.text import TEXT_ENCODER_REGISTRY, TextEncoder
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.fusion import FUSION_REGISTRY, FusionModule
from mnerqg_graph.graph.builder import BoxLayout, GraphSpec, build_graph
from mnerqg_graph.graph.schema import IMAGE, QUERY, TOKEN, EdgeType, edge_types, region_types
from mnerqg_graph.heads import BoxGroundingHead, ExistenceHead, GroundingHead, SpanHead, TagHead
from mnerqg_graph.heads.crf import BioCrf
from mnerqg_graph.heads.features import TokenFeatures
from mnerqg_graph.pipeline import predict as pipeline_predict
from mnerqg_graph.plugins import import_plugins
from mnerqg_graph.regions import REGION_SOURCE_REGISTRY, RegionNodes, RegionSource
from mnerqg_graph.tensors import take_rows

if TYPE_CHECKING:
    from mnerqg_graph.processing import MnerqgProcessor

#: Size of the entity-type embedding appended to every token node (the query's type).
TYPE_DIM = 16


@dataclass
class ModelOutput:
    """What the model computes for a batch.

    Attributes:
        span_logits: start ``[N, W]``, end ``[N, W]``, match ``[N, W, S]``.
        token_mask: ``[N, W]`` tokens that are graph nodes.
        existence_logits: ``[N]`` from the fused query node.
        gate_logits: ``[N]`` from the text-only query node, used to gate unimodal messages.
        image_examples: ``[M]`` indices of the examples that have an image.
        grounding_logits: ``[M, C]`` per-cell (or per-region) confidence logits (None without
            image branch).
        grounding_boxes: ``[M, C, 4]`` per-cell boxes, normalised xyxy (None without image branch).
        grounding_anchors: box regions: ``[M, C, 4]`` each region's own box (None for grids).
        grounding_mask: box regions: ``[M, C]`` real region slots (None for grids).
        tag_logits: ``[N, W, 1 + 2 T]`` of the auxiliary BIO tagger (None without it).
        attention: the last fusion layer's attention on the alignment edges (region->token and
            token->query; see :class:`~mnerqg_graph.fusion.base.FusionOutput`), when asked for.
        graph: the batch graph, when asked for (visualisation).
    """

    span_logits: tuple[Tensor, Tensor, Tensor]
    token_mask: Tensor
    existence_logits: Tensor
    gate_logits: Tensor
    image_examples: Tensor
    grounding_logits: Tensor | None
    grounding_boxes: Tensor | None
    tag_logits: Tensor | None = None
    attention: dict[EdgeType, tuple[Tensor, Tensor]] | None = None
    graph: object | None = None
    grounding_anchors: Tensor | None = None
    grounding_mask: Tensor | None = None


@dataclass
class TextNodes:
    """The text side of a batch, before fusion.

    Attributes:
        shared: each sequence's token features: the encoder state of the token's first piece and
            its casing embedding (``S = R`` sequences; a tweet's examples share one with
            ``packed``).
        rows: the sequence of each example.
        asked: the asked type's embedding, per example (appended to each of its tokens).
        query: the query node of each example.

    Shapes:
        shared: ``[R, W, D + casing_dim]``; rows: ``[N]``; asked: ``[N, TYPE_DIM]``;
        query: ``[N, D]``.
    """

    shared: Tensor
    rows: Tensor
    asked: Tensor
    query: Tensor

    def tokens(self) -> Tensor:
        """Every example's token features ``[N, W, D + casing_dim + TYPE_DIM]``.

        Tokens with ``first_piece < 0`` hold their sequence's first state (not graph nodes).
        """
        n, w = self.rows.numel(), self.shared.size(1)
        shared = take_rows(self.shared, self.rows)
        return torch.cat([shared, self.asked.unsqueeze(1).expand(n, w, -1)], -1)


class MnerqgModel(nn.Module):
    """MNER-QG on a heterogeneous graph.

    Args:
        config: the hyper-parameters (kept, to be saved with the weights).
        text_encoder: contextual word-piece features.
        backbone: image backbone with 3 scales (None: text only).
        fusion: the graph fusion module.
        grids: region grid ``(rows, cols)`` per scale in use, coarsest first (grid regions; empty
            for box regions).
        region_source: turns the backbone's maps (and detections) into region nodes (None: a
            ``grid`` source of ``config.image.num_scales`` scales).
        detector: the frozen detector of a source with ``uses_detector`` (its boxes are regions).
    """

    def __init__(
        self,
        config: ModelConfig,
        text_encoder: TextEncoder,
        backbone: ImageBackbone | None,
        fusion: FusionModule,
        grids: tuple[tuple[int, int], ...],
        region_source: RegionSource | None = None,
        detector: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder
        self.backbone = backbone
        self.fusion = fusion
        if backbone is not None and region_source is None:
            region_source = REGION_SOURCE_REGISTRY.build("grid", scales=config.image.num_scales)
        self.region_source = region_source
        boxes = region_source is not None and region_source.box_layout
        if region_source is not None and region_source.uses_detector and detector is None:
            raise ConfigError(f"region source {config.image.regions!r} needs a detector")
        self.detector = detector
        if detector is not None:
            detector.requires_grad_(False)
        if backbone is not None and config.image.freeze_image:
            backbone.requires_grad_(False)
        self.spec = GraphSpec(
            grids=() if boxes else grids,
            token_window=config.graph.token_window,
            use_image=backbone is not None,
            box_scales=config.image.num_scales if boxes else 0,
            knn=config.graph.region_knn,
        )
        d_text = text_encoder.output_dim
        self.casing = (
            nn.Embedding(len(SHAPES), config.encoder.casing_dim)
            if config.encoder.casing_dim
            else None
        )
        self.type_emb = nn.Embedding(len(config.types), d_text)
        self.token_type_emb = nn.Embedding(len(config.types), TYPE_DIM)
        self.gate_head = nn.Linear(d_text, 1)
        if backbone is not None and not boxes:
            shapes = backbone.output_shape()[: len(grids)]
            self.region_pos = nn.ParameterList(
                [
                    nn.Parameter(torch.zeros(r * c, s.channels))
                    for (r, c), s in zip(grids, shapes, strict=True)
                ]
            )
            self.no_image = nn.Parameter(torch.zeros(shapes[0].channels))
        elif backbone is not None:
            assert region_source is not None
            shapes = backbone.output_shape()[: config.image.num_scales]
            # a box's geometry (box, area, score, class) is added to its RoIAligned feature
            self.region_geometry = nn.ModuleList(
                [nn.Linear(region_source.geometry_dim, s.channels) for s in shapes]
            )
            self.no_image = nn.Parameter(torch.zeros(shapes[0].channels))
        out = fusion.output_dims()
        # the span heads read the fused token features next to the token's own input features
        # (a skip around the fusion module), so no fusion module can start worse than text-only
        token_in = d_text + config.encoder.casing_dim + TYPE_DIM
        self.span_head = SpanHead(
            out[TOKEN] + token_in,
            config.heads.max_span_len,
            config.graph.dropout,
            config.heads.head_dim,
        )
        self.existence_head = ExistenceHead(out[QUERY], config.graph.dropout)
        self.grounding_head: GroundingHead | BoxGroundingHead | None = None
        if backbone is not None and boxes:
            self.grounding_head = BoxGroundingHead(
                out[region_types(1)[0]], out[QUERY], config.image.num_scales
            )
        elif backbone is not None:
            self.grounding_head = GroundingHead(out[region_types(1)[0]], out[QUERY], grids)
        span_in = out[TOKEN] + token_in
        self.tag_head = (
            TagHead(span_in, len(config.types), config.graph.dropout, config.heads.head_dim)
            if config.heads.tag_head
            else None
        )
        self.tag_crf = BioCrf(len(config.types)) if config.heads.tag_crf else None

    @staticmethod
    def input_dims(
        config: ModelConfig, text_dim: int, backbone: ImageBackbone | None, num_scales: int
    ) -> dict[str, int]:
        """Input feature size per node type, for building the fusion module."""
        dims = {TOKEN: text_dim + config.encoder.casing_dim + TYPE_DIM, QUERY: text_dim}
        if backbone is not None:
            shapes = backbone.output_shape()
            for rtype, s in zip(region_types(num_scales), shapes[:num_scales], strict=True):
                dims[rtype] = s.channels
            dims[IMAGE] = shapes[0].channels
        return dims

    def forward(
        self,
        batch: MrcBatch,
        return_attention: bool = False,
        return_graph: bool = False,
        span_floor: float | None = None,
    ) -> ModelOutput:
        """Run the model on a batch (see the module docstring for the input schema).

        The span-match head scores, in training, only the spans its loss is taken over
        (:meth:`SpanHead.focus`); in evaluation every span, or with ``span_floor`` only those
        that decoding at a span threshold of at least ``span_floor`` can accept
        (:meth:`SpanHead.decodable`) and those of the loss. Other spans get match probability 0;
        the losses and decoding (at thresholds ``>= span_floor``) are the same as when every
        span is scored.
        """
        # Each stage runs under a ``mnerqg::<stage>`` profiler label (``mnerqg bench`` reads them);
        # record_function costs next to nothing when no profiler is active.
        with record_function("mnerqg::text_encoder"):
            text = self.text_nodes(batch)
            tok, query = text.tokens(), text.query
            n, w = batch.first_piece.shape
            token_mask = batch.first_piece >= 0
            gate_logits = self.gate_head(query).squeeze(-1)

        example_has_image = (
            batch.has_image[batch.example_tweet]
            if self.backbone is not None
            else torch.zeros(n, dtype=torch.bool, device=tok.device)
        )
        img_ex = example_has_image.nonzero(as_tuple=True)[0]
        x = {TOKEN: tok[token_mask], QUERY: query}
        layout: BoxLayout | None = None
        if self.backbone is not None:
            with record_function("mnerqg::image_encoder"):
                image_x, layout = self._image_nodes(batch, img_ex, example_has_image)
                x.update(image_x)
        with record_function("mnerqg::graph_build"):
            graph = build_graph(token_mask, example_has_image, self.spec, layout)
        with record_function("mnerqg::fusion"):
            batch_dict = {nt: graph[nt].batch for nt in x}
            fused = self.fusion(
                x,
                graph.edge_index_dict,
                graph.edge_attr_dict,
                batch_dict,
                torch.sigmoid(gate_logits),
                return_attention=return_attention,
            )
        with record_function("mnerqg::heads"):
            h_tok = fused.x_dict[TOKEN].new_zeros(n, w, fused.x_dict[TOKEN].size(-1))
            h_tok[token_mask] = fused.x_dict[TOKEN]
            # [fused | the token's input features]; the shared part is computed once a sequence
            h_span = TokenFeatures(h_tok, text.shared, text.rows, text.asked)
            head = self.span_head

            def pairs(start_l: Tensor, end_l: Tensor) -> Tensor:
                focus = head.focus(start_l, end_l, token_mask, batch.start, batch.end, batch.match)
                if self.training or span_floor is None:
                    return focus
                return focus | head.decodable(start_l, end_l, token_mask, span_floor)

            dense = not self.training and span_floor is None
            span_logits = self.span_head(h_span, None if dense else pairs)
            tag_logits = self.tag_head(h_span) if self.tag_head is not None else None
            q_out = fused.x_dict[QUERY]
            g_logits = g_boxes = g_anchors = g_mask = None
            if isinstance(self.grounding_head, BoxGroundingHead):
                assert layout is not None
                rank = torch.full((n,), -1, dtype=torch.long, device=img_ex.device)
                rank[img_ex] = torch.arange(img_ex.numel(), device=img_ex.device)
                rts = region_types(self.spec.num_scales)
                g_logits, g_boxes, g_anchors, g_mask = self.grounding_head(
                    [fused.x_dict[rt] for rt in rts],
                    layout.boxes,
                    [rank[e] for e in layout.example],
                    q_out[img_ex],
                )
            elif self.grounding_head is not None:
                m = img_ex.numel()
                regions = [
                    fused.x_dict[rt].view(m, r * c, fused.x_dict[rt].size(-1))
                    for rt, (r, c) in zip(
                        region_types(self.spec.num_scales), self.spec.grids, strict=True
                    )
                ]
                g_logits, g_boxes = self.grounding_head(regions, q_out[img_ex])
            existence_logits = self.existence_head(q_out)
        return ModelOutput(
            span_logits=span_logits,
            token_mask=token_mask,
            existence_logits=existence_logits,
            gate_logits=gate_logits,
            image_examples=img_ex,
            grounding_logits=g_logits,
            grounding_boxes=g_boxes,
            tag_logits=tag_logits,
            attention=fused.attention,
            graph=graph if return_graph else None,
            grounding_anchors=g_anchors,
            grounding_mask=g_mask,
        )

    def text_nodes(self, batch: MrcBatch) -> TextNodes:
        """The text side's node features, from one encoder pass over the batch's sequences.

        Token ``w`` of example ``n`` is the encoder state at ``first_piece[n, w]`` of the
        example's sequence (``example_sequence[n]``: its own with ``per_type``, its tweet's with
        ``packed``), then its casing embedding and the asked type's embedding; the query node is
        :meth:`_query_states` plus the type embedding. Token features are kept per sequence
        (see :class:`TextNodes`): with ``packed`` a tweet's examples share theirs.
        """
        packed = self.config.encoder.query_encoding == "packed"
        hidden = self.text_encoder(
            batch.input_ids,
            self._attention(batch),
            batch.token_type_ids,
            batch.position_ids if packed else None,  # per_type: the encoder's own
        )  # [R, L, D]
        r, length, d = hidden.shape
        rows = batch.example_sequence
        # each sequence's first example (rows is sorted): its token alignment and casing
        first = torch.searchsorted(rows, torch.arange(r, device=rows.device))
        flat = hidden.reshape(r * length, d)
        idx = torch.arange(r, device=rows.device)[:, None] * length
        pieces = idx + batch.first_piece[first].clamp(min=0)  # [R, W]
        shared = take_rows(flat, pieces.reshape(-1)).view(r, -1, d)  # [R, W, D]
        if self.casing is not None:
            shared = torch.cat([shared, self.casing(batch.token_shape[first])], -1)
        # every token node also carries the asked type, so a token's start/end decision can
        # depend on the type without first having to be routed through attention
        asked = self.token_type_emb(batch.type_index)  # [N, TYPE_DIM]
        query = self._query_states(hidden, batch) + self.type_emb(batch.type_index)  # [N, D]
        return TextNodes(shared, rows, asked, query)

    def _attention(self, batch: MrcBatch) -> Tensor:
        """The encoder's attention mask: ``[R, L]`` (padding), or ``[R, L, L]`` when isolated.

        With ``packed_attention="isolated"`` a packed query's pieces see only their own query,
        ``[CLS]`` and the tweet; ``[CLS]`` and the tweet see everything.
        """
        if (
            self.config.encoder.query_encoding != "packed"
            or self.config.encoder.packed_attention == "full"
        ):
            return batch.attention_mask
        slot = batch.query_slot
        free = slot < 0  # [CLS], the tweet and padding: no slot
        visible = (slot[:, :, None] == slot[:, None, :]) | free[:, :, None] | free[:, None, :]
        return visible & batch.attention_mask[:, None, :].bool()

    def _query_states(self, hidden: Tensor, batch: MrcBatch) -> Tensor:
        """Each example's query state, before the type embedding.

        ``per_type``: its sequence's first state (``[CLS]``); ``packed``, where ``[CLS]`` is
        shared: the mean of its own query's piece states.

        Shapes:
            hidden: ``[R, L, D]`` -> ``[N, D]``.
        """
        rows = batch.example_sequence
        if self.config.encoder.query_encoding != "packed":
            return hidden[rows, 0]
        # a span's sum as the difference of two prefix sums: no [N, L, D] copy, no host sync
        cum = torch.nn.functional.pad(hidden.float().cumsum(1), (0, 0, 1, 0))  # [R, L + 1, D]
        q0, q1 = batch.query_span.unbind(-1)
        total = cum[rows, q1] - cum[rows, q0]
        return (total / (q1 - q0).clamp(min=1).unsqueeze(-1)).to(hidden.dtype)

    def train(self, mode: bool = True) -> MnerqgModel:
        """Set training mode; a frozen image side and the detector stay in evaluation mode."""
        super().train(mode)
        if self.backbone is not None and self.config.image.freeze_image:
            self.backbone.eval()
        if self.detector is not None:
            self.detector.eval()
        return self

    def region_nodes(self, batch: MrcBatch) -> RegionNodes | None:
        """The region nodes of the batch's tweets that have an image, in tweet order.

        Read from ``batch.regions`` when the batch carries them (a region cache); else the
        backbone encodes the images (once per tweet; without gradients when ``freeze_image``),
        the detector finds boxes (box sources) and the region source makes the nodes. None when
        no tweet of the batch has an image.
        """
        if batch.regions is not None:
            return batch.regions
        assert self.backbone is not None and self.region_source is not None
        tweets_with_image = batch.has_image.nonzero(as_tuple=True)[0]
        if not tweets_with_image.numel():
            return None
        images = batch.images[tweets_with_image]
        frozen = self.config.image.freeze_image
        with torch.no_grad() if frozen else nullcontext():
            maps = self.backbone(images)
        detections = None
        if self.detector is not None:
            detections = self.detector.detect(images)  # type: ignore[operator]
        return self.region_source.nodes(maps, detections)

    def _image_nodes(
        self, batch: MrcBatch, img_ex: Tensor, example_has_image: Tensor
    ) -> tuple[dict[str, Tensor], BoxLayout | None]:
        """Region and image node features of the examples, and box regions' layout.

        The image is encoded once per tweet (:meth:`region_nodes`); each example with an image
        gets a copy of its tweet's region nodes, with the learned per-cell embedding (grid) or
        the projection of each box's geometry (box regions).
        """
        nodes = self.region_nodes(batch)
        slot = torch.full_like(batch.has_image, -1, dtype=torch.long)
        tweets_with_image = batch.has_image.nonzero(as_tuple=True)[0]
        slot[tweets_with_image] = torch.arange(tweets_with_image.numel(), device=slot.device)
        rows = slot[batch.example_tweet[img_ex]]  # each image example's row in the encoded images
        out: dict[str, Tensor] = {}
        rtypes = region_types(self.spec.num_scales)
        layout = None if self.spec.grids else BoxLayout([], [])
        for level, rtype in enumerate(rtypes):
            if self.spec.grids:
                pos = self.region_pos[level]
                if nodes is None:
                    out[rtype] = pos.new_zeros(0, pos.size(-1))
                    continue
                f = nodes.features[level]
                f = f.view(nodes.num_images, -1, f.size(-1))  # [B_img, cells, C]
                out[rtype] = (take_rows(f, rows) + pos).reshape(-1, f.size(-1))
                continue
            assert layout is not None
            proj = self.region_geometry[level]
            assert isinstance(proj, nn.Linear)
            if nodes is None:
                out[rtype] = self.no_image.new_zeros(0, proj.out_features)
                layout.example.append(img_ex.new_zeros(0))
                layout.boxes.append(self.no_image.new_zeros(0, 4))
                continue
            # each image example's copy of its image's nodes, in example order
            per_image = nodes.counts(level)
            first = torch.cumsum(per_image, 0) - per_image
            cnt = per_image[rows]
            owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), cnt)
            local = torch.arange(owner.numel(), device=rows.device) - (
                torch.cumsum(cnt, 0) - cnt
            ).repeat_interleave(cnt)
            src = first[rows[owner]] + local
            geometry = take_rows(nodes.geometry[level], src)
            features = take_rows(nodes.features[level], src)
            out[rtype] = features + proj(geometry.to(proj.weight.dtype))
            layout.example.append(img_ex[owner])
            layout.boxes.append(nodes.boxes[level][src])
        image = self.no_image.expand(example_has_image.numel(), -1).clone()
        if nodes is not None:
            image[img_ex] = take_rows(nodes.pooled, rows).to(image.dtype)
        out[IMAGE] = image
        return out, layout

    def losses(self, batch: MrcBatch, out: ModelOutput) -> dict[str, Tensor]:
        """Weighted loss parts and their sum under ``"total"``."""
        wts = self.config.losses.weights
        parts = self.span_head.loss(
            out.span_logits, out.token_mask, batch.start, batch.end, batch.match
        )
        parts["existence"] = ExistenceHead.loss(out.existence_logits, batch.exists) + (
            ExistenceHead.loss(out.gate_logits, batch.exists)
        )
        if out.tag_logits is not None and self.tag_crf is not None:
            parts["tags"] = self.tag_crf.loss(out.tag_logits, batch.tags, out.token_mask)
        elif out.tag_logits is not None:
            parts["tags"] = TagHead.loss(out.tag_logits, batch.tags, out.token_mask)
        if (
            self.grounding_head is not None
            and out.grounding_logits is not None
            and (out.image_examples.numel())
        ):
            # only examples whose tweet has known boxes (gold or weak) are supervised
            keep = batch.grounding_labelled[out.image_examples]
            ie = out.image_examples[keep]
            assert out.grounding_boxes is not None
            if keep.any() and isinstance(self.grounding_head, BoxGroundingHead):
                assert out.grounding_anchors is not None and out.grounding_mask is not None
                parts["grounding"] = self.grounding_head.loss(
                    out.grounding_logits[keep],
                    out.grounding_boxes[keep],
                    batch.gt_boxes[ie],
                    batch.gt_mask[ie],
                    out.grounding_anchors[keep],
                    out.grounding_mask[keep],
                    presence_weight=self.config.losses.grounding_presence_weight,
                )
            elif keep.any():
                assert isinstance(self.grounding_head, GroundingHead)
                parts["grounding"] = self.grounding_head.loss(
                    out.grounding_logits[keep],
                    out.grounding_boxes[keep],
                    batch.gt_boxes[ie],
                    batch.gt_mask[ie],
                    presence_weight=self.config.losses.grounding_presence_weight,
                )
            else:  # no example of this batch has known boxes: zero, still on the graph (DDP)
                parts["grounding"] = out.grounding_logits.sum() * 0.0
        weighted = {k: v * wts.get(k, 1.0) for k, v in parts.items()}
        total = torch.stack(list(weighted.values())).sum()
        if self.grounding_head is not None and "grounding" not in weighted:
            # no image in this batch: the part is 0, so that every batch (and, under DDP, every
            # rank) reports the same parts, whose means are reduced position by position
            weighted["grounding"] = total.new_zeros(())
        weighted["total"] = total
        return weighted

    @torch.no_grad()
    def span_probabilities(self, out: ModelOutput) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Start, end and match probabilities of every bounded span (span ``i .. i + k``).

        Args:
            out: the forward pass's output.

        Returns:
            ``(p_start, p_end, p_match, is_span)``; ``is_span`` says both ends are real tokens.

        Shapes:
            -> ``[N, W, 1]``, ``[N, W, S]``, ``[N, W, S]``, ``[N, W, S]`` bool
            (``S = max_span_len``; ``p_end[n, i, k]`` is the end probability of token ``i + k``).
        """
        start_l, end_l, match_l = out.span_logits
        s = self.config.heads.max_span_len
        pe = torch.nn.functional.pad(torch.sigmoid(end_l), (0, s - 1)).unfold(1, s, 1)
        cand = self.span_head.candidate_mask(out.token_mask)
        return torch.sigmoid(start_l).unsqueeze(-1), pe, torch.sigmoid(match_l), cand

    @torch.no_grad()
    def span_candidates(
        self,
        out: ModelOutput,
        span_threshold: float | None = None,
        existence_threshold: float | None = None,
    ) -> list[list[tuple[int, int, float]]]:
        """The spans of each example that pass the thresholds (the span decoder's candidates).

        Args:
            out: the forward pass's output.
            span_threshold: probability each of start, end and match must pass (None: the
                config's ``span_threshold``).
            existence_threshold: examples whose existence probability is under it get no spans
                (None: the config's ``existence_threshold``; 0: off).

        Returns:
            Per example, ``(start, end_exclusive, score)``; the score is the geometric mean of
            the start, end and match probabilities.
        """
        t = self.config.decoding.span_threshold if span_threshold is None else span_threshold
        ps, pe, pm, cand = self.span_probabilities(out)
        ok = (ps > t) & (pe > t) & (pm > t) & cand
        et = (
            self.config.decoding.existence_threshold
            if existence_threshold is None
            else existence_threshold
        )
        if et > 0:  # the existence head says the type is not in the tweet: no spans
            ok &= (torch.sigmoid(out.existence_logits) >= et)[:, None, None]
        score = (ps * pe * pm * cand).clamp(min=1e-12) ** (1 / 3)  # geometric mean
        ex, i, k = ok.nonzero(as_tuple=True)
        sc = score[ex, i, k]
        spans: list[list[tuple[int, int, float]]] = [[] for _ in range(ps.size(0))]
        for e, a, b, v in zip(ex.tolist(), i.tolist(), k.tolist(), sc.tolist(), strict=True):
            spans[e].append((a, a + b + 1, v))
        return spans

    @torch.no_grad()
    def ground(self, out: ModelOutput) -> list[tuple[list[float], float] | None]:
        """Each example's grounding: ``(box xyxy normalised, confidence)``, None without image.

        The box is the most confident cell's over every scale, whatever its confidence; the
        decoding step (:func:`mnerqg_graph.decoding.ground`) says "not in the image" under the
        config's ``grounding_threshold``.
        """
        n = out.existence_logits.size(0)
        boxes: list[tuple[list[float], float] | None] = [None] * n
        if (
            self.grounding_head is not None
            and out.grounding_logits is not None
            and (out.image_examples.numel())
        ):
            assert out.grounding_boxes is not None
            box, conf = self.grounding_head.predict(out.grounding_logits, out.grounding_boxes)
            has = (
                out.grounding_mask.any(1).tolist()
                if out.grounding_mask is not None
                else [True] * len(conf)
            )  # box regions: an image without detections grounds nothing
            for e, bx, c, h in zip(
                out.image_examples.tolist(), box.tolist(), conf.tolist(), has, strict=True
            ):
                if h:
                    boxes[e] = (bx, c)
        return boxes

    @torch.no_grad()
    def decode(
        self,
        out: ModelOutput,
        span_threshold: float | None = None,
        existence_threshold: float | None = None,
    ) -> tuple[list[list[tuple[int, int, float]]], list[tuple[list[float], float] | None]]:
        """Span candidates (:meth:`span_candidates`) and groundings (:meth:`ground`) per example.

        This is the span heads' raw output per (tweet, type); per-tweet predictions (resolved
        entities, BIO tags, boxes in pixels) come from :meth:`predict`.
        """
        return self.span_candidates(out, span_threshold, existence_threshold), self.ground(out)

    # ---------------------------------------------------------------------------------------------
    #: Per-tweet predictions of prepared inputs: :func:`mnerqg_graph.pipeline.predict`, the one
    #: inference path, with this model (``model.predict(inputs, batch_size=..., ...)``).
    predict = pipeline_predict

    def save_pretrained(
        self, directory: str | Path, processor: MnerqgProcessor | None = None
    ) -> Path:
        """Write a checkpoint folder atomically: weights, config and the processor's files.

        Without ``processor`` the processor files already in ``directory`` are kept (so that
        ``model.save_pretrained(d)`` and ``processor.save_pretrained(d)`` may come in any order).
        See :mod:`mnerqg_graph.training.checkpoint` for the layout.
        """
        from mnerqg_graph.training.checkpoint import write_checkpoint

        return write_checkpoint(self, self.config, processor, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu"
    ) -> MnerqgModel:
        """Rebuild a model from a checkpoint folder (in eval mode on ``device``).

        Raises:
            CheckpointError: files missing, or weights that do not fit the config.
            ConfigError: a config.json this code cannot build.
        """
        from mnerqg_graph.training.checkpoint import read_model

        return read_model(directory, device)


def build_model(config: ModelConfig, weights: bool = True) -> MnerqgModel:
    """Build a model from its config (the typed builder used by the experiment, CLI and loader).

    Args:
        config: the hyper-parameters. With ``regions="detector"`` and ``weights``, the detector
            checkpoint's backend and options are recorded in ``config.image.detector_config``.
        weights: load the text encoder's pretrained weights from ``config.encoder.name`` and the
            detector from ``config.image.detector`` (False: build them from their configs only, as
            when a checkpoint's weights are loaded next).

    Raises:
        ConfigError: a component the config names cannot be built, or ``encoder.max_length``
            is longer than the text encoder's position embeddings.
    """
    import_plugins(config.plugins)  # the modules that register the components it names
    text = TEXT_ENCODER_REGISTRY.build("hf", path=config.encoder.name, from_config=not weights)
    limit = text.max_positions
    if limit is not None and config.encoder.max_length > limit:  # both query encodings
        raise ConfigError(
            f"model.encoder.max_length {config.encoder.max_length} exceeds the encoder's {limit} "
            f"positions ({config.encoder.name})"
        )
    fusion_cls = FUSION_REGISTRY.get(config.fusion.name)
    use_image = config.image.use_image and getattr(fusion_cls, "uses_image", True)
    backbone = (
        BACKBONE_REGISTRY.build(config.image.backbone, **config.image.backbone_kwargs)
        if use_image
        else None
    )
    grids: tuple[tuple[int, int], ...] = ()
    source: RegionSource | None = None
    detector: nn.Module | None = None
    if backbone is not None:
        source_cls = REGION_SOURCE_REGISTRY.get(config.image.regions)
        kwargs: dict[str, Any] = dict(config.image.region_kwargs)
        if getattr(source_cls, "uses_detector", False):
            detector = build_region_detector(config, weights)
            kwargs.setdefault("num_classes", len(detector.types))  # type: ignore[arg-type]
            kwargs.setdefault("max_regions", config.image.max_regions)
            kwargs.setdefault("score_threshold", config.image.region_score_threshold)
        source = REGION_SOURCE_REGISTRY.build(
            config.image.regions, scales=config.image.num_scales, **kwargs
        )
        if type(source).nodes is RegionSource.nodes:
            raise ConfigError(
                f"region source {config.image.regions!r} gives no graph nodes; model.image.regions "
                "must be one of the sources with nodes() (grid, detector)"
            )
        shapes = backbone.output_shape()
        if not source.box_layout:
            grids = tuple(
                (config.image.image_size // s.stride, config.image.image_size // s.stride)
                for s in shapes[: config.image.num_scales]
            )
    in_dims = MnerqgModel.input_dims(config, text.output_dim, backbone, config.image.num_scales)
    fusion_kwargs = dict(config.fusion.kwargs)
    if fusion_kwargs == default_fusion_kwargs() and not _takes(fusion_cls, "heads"):
        fusion_kwargs = {}  # the default options are the attention modules'
    fusion = FUSION_REGISTRY.build(
        config.fusion.name,
        in_dims=in_dims,
        hidden_dim=config.graph.hidden_dim,
        num_layers=config.fusion.layers,
        edge_types=edge_types(config.image.num_scales, backbone is not None),
        existence_gating=config.fusion.existence_gating,
        dropout=config.graph.dropout,
        **fusion_kwargs,
    )
    return MnerqgModel(config, text, backbone, fusion, grids, source, detector)


def _takes(builder: Any, option: str) -> bool:
    """Whether ``builder`` accepts the keyword ``option`` (or any keyword)."""
    import inspect

    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == option or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_region_detector(config: ModelConfig, weights: bool = True) -> nn.Module:
    """The frozen detector of ``regions="detector"`` (see :func:`build_model`).

    With ``weights``: loaded from the checkpoint folder ``config.image.detector``, whose backend
    and options are then recorded in ``config.image.detector_config``. Without: rebuilt from
    ``config.image.detector_config`` (its weights come with the model's), or from the folder when
    the config has none.

    Raises:
        ConfigError: no detector folder given. CheckpointError: the folder is not a detector's.
    """
    from detectors.detection import build_detector, load_detector

    if not weights and config.image.detector_config:
        spec = config.image.detector_config
        det = build_detector(str(spec.get("backend")), **dict(spec.get("kwargs", {})))
    else:
        if not config.image.detector:
            raise ConfigError(
                f"model.image.regions={config.image.regions!r} needs model.image.detector=DIR, "
                "a checkpoint of python -m detectors.detector train"
            )
        det = load_detector(config.image.detector)
        config.image.detector_config = {"backend": det.name, "kwargs": det.config()}
    det.requires_grad_(False)
    return det.eval()
