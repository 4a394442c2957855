"""Tweets -> padded tensors: the model's :class:`MrcBatch` (schema in :mod:`mnerqg_graph.model`).

The unit of batching is the tweet, not the (tweet, type) example: a :class:`TweetItem` holds the
tweet's ``T`` MRC examples and its image (or none), so the image is decoded, and later encoded, once
per tweet and shared by its queries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mnerqg_graph.data.mrc import MrcExample

if TYPE_CHECKING:
    from mnerqg_graph.regions import RegionNodes


def bio_tag_names(types: Sequence[str]) -> list[str]:
    """The tag of each id of :func:`bio_tag_ids`: ``O``, then ``B-t``, ``I-t`` per type in order."""
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def bio_tag_ids(
    start: Tensor, end: Tensor, type_index: Tensor, example_tweet: Tensor, mask: Tensor
) -> Tensor:
    """Every type's BIO tag per token, from the per-type start/end labels of a tweet's examples.

    Tag ids (:func:`bio_tag_names`): 0 is ``O``, ``1 + 2 t`` is ``B`` and ``2 + 2 t`` is ``I`` of
    type index ``t``. An
    entity runs from a start label to the first end label at or after it (the types' entities do
    not overlap within one type); every example of a tweet gets the tweet's tags over all types.
    Tokens outside ``mask`` are ``O``, and an entity's ``B`` is on its first token inside ``mask``.

    Args:
        start: 0/1 labels where an entity of the example's own type starts.
        end: 0/1 labels where it ends (inclusive).
        type_index: the type of each example.
        example_tweet: the tweet of each example.
        mask: real tokens.

    Shapes:
        start, end, mask: ``[N, W]``; type_index, example_tweet: ``[N]`` -> ``[N, W]`` long.
    """
    n, w = start.shape
    pos = torch.arange(w, device=start.device).expand(n, w)
    big = torch.full_like(pos, w)
    # for each token, the first end at or after it (reverse cumulative min over end positions)
    end_pos = torch.where(end > 0.5, pos, big)
    next_end = end_pos.flip(1).cummin(1).values.flip(1)
    # for each token, the last start at or before it, and the end that start runs to
    start_pos = torch.where(start > 0.5, pos, torch.full_like(pos, -1))
    last_start = start_pos.cummax(1).values
    run_end = next_end.gather(1, last_start.clamp(min=0))
    inside = (last_start >= 0) & (pos <= run_end) & mask
    # B- on the first token of each entity that is a node: an entity opening on a zero-piece
    # token (masked) starts at its next token, so the gold chain never reads O -> I- (which a
    # CRF forbids); ``before`` counts the entity tokens left of each position
    before = inside.long().cumsum(1) - inside.long()
    is_begin = inside & (before == before.gather(1, last_start.clamp(min=0)))
    own = torch.where(is_begin, 1 + 2 * type_index[:, None], 2 + 2 * type_index[:, None])
    own = torch.where(inside, own, torch.zeros_like(own))  # [N, W] tags of the example's type
    # one tweet's examples share their tokens: the tweet's tag is the (only) non-O over its types
    tweets = int(example_tweet.max()) + 1 if n else 0
    per_tweet = torch.zeros(tweets, w, dtype=torch.long, device=start.device)
    per_tweet.scatter_reduce_(0, example_tweet[:, None].expand(n, w), own, reduce="amax")
    return per_tweet[example_tweet] * mask


@dataclass
class TweetItem:
    """One tweet ready for batching.

    Attributes:
        index: position of the tweet in its split (to map predictions back).
        examples: its MRC examples, one per type, in type order.
        shapes: casing/shape class per original token.
        image: ``[3, S, S]`` uint8, or None when the tweet has no usable image.
        grounding_labelled: whether the tweet's boxes are known (see ``Sample``).
        regions: the image's region nodes read from a region cache (one image's tensors, as
            :meth:`mnerqg_graph.regions.RegionNodes.per_image` gives them), in place of ``image``;
            None: the image (if any) is encoded by the model.
    """

    index: int
    examples: list[MrcExample]
    shapes: list[int]
    image: Tensor | None
    grounding_labelled: bool = True
    regions: dict[str, Tensor] | None = None


@dataclass
class MrcBatch:
    """Padded tensors of a batch of tweets (see :mod:`mnerqg_graph.model` for shapes)."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    position_ids: Tensor
    query_slot: Tensor
    example_sequence: Tensor
    query_span: Tensor
    first_piece: Tensor
    token_shape: Tensor
    type_index: Tensor
    example_tweet: Tensor
    images: Tensor
    has_image: Tensor
    start: Tensor
    end: Tensor
    match: Tensor
    exists: Tensor
    tags: Tensor
    gt_boxes: Tensor
    gt_mask: Tensor
    tweet_index: Tensor
    grounding_labelled: Tensor
    regions: RegionNodes | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MrcBatch:
        """A copy with every tensor on ``device``."""
        fields: dict[str, Any] = {
            f.name: v.to(device, non_blocking=non_blocking) if v is not None else None
            for f in dataclasses.fields(self)
            for v in (getattr(self, f.name),)
        }
        return MrcBatch(**fields)

    def pin_memory(self) -> MrcBatch:
        """A copy in pinned host memory (the DataLoader calls this when ``pin_memory=True``)."""
        fields: dict[str, Any] = {
            f.name: v.pin_memory() if v is not None else None
            for f in dataclasses.fields(self)
            for v in (getattr(self, f.name),)
        }
        return MrcBatch(**fields)

    @property
    def num_examples(self) -> int:
        """``N``, the number of (tweet, type) examples."""
        return int(self.type_index.size(0))


def collate(
    items: list[TweetItem], max_span_len: int, image_size: int, pad_id: int = 0
) -> MrcBatch:
    """Pad a list of tweets into one batch.

    Args:
        items: the tweets.
        max_span_len: ``S``, the span-match label width.
        image_size: side of the image tensor (tweets without image get zeros).
        pad_id: the tokenizer's padding id.

    Items with cached ``regions`` count as having an image; their images are not read, and the
    batch carries their region nodes (:class:`~mnerqg_graph.regions.RegionNodes`, in item order).
    """
    exs = [e for it in items for e in it.examples]
    n = len(exs)
    packed = {e.packed for e in exs}
    if len(packed) > 1:
        raise ValueError("collate: a batch mixes packed and per-type examples")
    # the encoder sequences: one per tweet when packed (its examples share it), else one per example
    seqs = [it.examples[0] for it in items] if packed == {True} else exs
    seq_len = max(len(e.input_ids) for e in seqs)
    width = max(max(e.n_tokens for e in exs), 1)
    n_box = max(max((len(e.boxes) for e in exs), default=0), 1)

    def pad(rows: list[list[int]], size: int, value: int) -> list[list[int]]:
        return [r + [value] * (size - len(r)) for r in rows]

    # padded Python lists, then one tensor per field (not one small tensor per example and field)
    input_ids = torch.tensor(pad([e.input_ids for e in seqs], seq_len, pad_id), dtype=torch.long)
    attention = torch.tensor(pad([[1] * len(e.input_ids) for e in seqs], seq_len, 0))
    token_type = torch.tensor(pad([e.token_type_ids for e in seqs], seq_len, 0), dtype=torch.long)
    # explicit positions (packed ``per_query``) restart within a sequence, so the longest row can
    # be longer than the encoder has positions for: its padding reads position 0 (masked anyway)
    counting = list(range(seq_len))
    position_ids = torch.tensor(
        [pad([e.position_ids], seq_len, 0)[0] if e.position_ids else counting for e in seqs],
        dtype=torch.long,
    )
    query_slot = torch.tensor(
        pad([e.query_slot or [] for e in seqs], seq_len, -1), dtype=torch.long
    )
    first_piece = torch.tensor(pad([e.first_piece for e in exs], width, -1), dtype=torch.long)
    shapes = torch.tensor(
        pad([it.shapes for it in items for _ in it.examples], width, 0), dtype=torch.long
    )
    start = torch.tensor(pad([e.start_labels for e in exs], width, 0), dtype=torch.float)
    end = torch.tensor(pad([e.end_labels for e in exs], width, 0), dtype=torch.float)
    match = torch.zeros(n, width, max_span_len)
    pairs = [
        (row, a, b - a) for row, e in enumerate(exs) for a, b in e.spans if b - a < max_span_len
    ]
    if pairs:
        match[tuple(torch.tensor(pairs).unbind(1))] = 1.0
    gt_boxes = torch.zeros(n, n_box, 4)
    gt_mask = torch.zeros(n, n_box, dtype=torch.bool)
    for row, e in enumerate(exs):
        if e.boxes:
            gt_boxes[row, : len(e.boxes)] = torch.tensor(e.boxes, dtype=torch.float)
            gt_mask[row, : len(e.boxes)] = True
    example_tweet = torch.tensor(
        [t for t, it in enumerate(items) for _ in it.examples], dtype=torch.long
    )
    example_sequence = example_tweet if seqs is not exs else torch.arange(n)
    type_index = torch.tensor([e.type_index for e in exs], dtype=torch.long)
    images = torch.zeros(len(items), 3, image_size, image_size)
    has_image = torch.zeros(len(items), dtype=torch.bool)
    cached = [it.regions for it in items if it.regions is not None]
    for t, it in enumerate(items):
        if it.regions is not None:
            has_image[t] = True
        elif it.image is not None:
            if cached:
                raise ValueError("collate: a batch mixes cached region nodes and images")
            images[t] = it.image.float() / 255.0
            has_image[t] = True
    regions = None
    if cached:
        from mnerqg_graph.regions import RegionNodes

        regions = RegionNodes.cat(cached)
    return MrcBatch(
        input_ids=input_ids,
        attention_mask=attention,
        token_type_ids=token_type,
        position_ids=position_ids,
        query_slot=query_slot,
        example_sequence=example_sequence,
        query_span=torch.tensor([e.query_span for e in exs], dtype=torch.long).view(n, 2),
        first_piece=first_piece,
        token_shape=shapes,
        type_index=type_index,
        example_tweet=example_tweet,
        images=images,
        has_image=has_image,
        start=start,
        end=end,
        match=match,
        exists=torch.tensor([float(e.exists) for e in exs]),
        tags=bio_tag_ids(start, end, type_index, example_tweet, first_piece >= 0),
        gt_boxes=gt_boxes,
        gt_mask=gt_mask,
        tweet_index=torch.tensor([it.index for it in items], dtype=torch.long),
        grounding_labelled=torch.tensor(
            [it.grounding_labelled for it in items for _ in it.examples], dtype=torch.bool
        ),
        regions=regions,
    )
