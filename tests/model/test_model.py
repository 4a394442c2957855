"""Heads' shapes and losses, the model's no-image path, decoding, and the image-once rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnerqg_graph.heads import ExistenceHead, GroundingHead, SpanHead
from mnerqg_graph.model import build_model
from tests.helpers import items_and_batch, samples, tiny_config


def test_span_head_shapes_and_match_indexing() -> None:
    head = SpanHead(8, max_span_len=3, dropout=0.0)
    h = torch.randn(2, 5, 8)
    start, end, match = head(h)
    assert start.shape == (2, 5) and end.shape == (2, 5) and match.shape == (2, 5, 3)
    # match[n, i, k] must depend on tokens i and i+k only
    h2 = h.clone()
    h2[0, 4] += 1.0
    _, _, match2 = head(h2)
    changed = (match2 - match).abs() > 1e-6
    assert changed[0, 4, 0] and changed[0, 3, 1] and changed[0, 2, 2]
    assert not changed[0, 0].any() and not changed[1].any()
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    cand = head.candidate_mask(mask)
    assert cand[1, 0, 1] and not cand[1, 1, 1] and not cand[0, 3, 2]


def test_match_loss_skips_gold_spans_whose_ends_are_no_nodes() -> None:
    """A gold entity opening on a zero-piece token (masked) is not decodable: not taught either."""
    head = SpanHead(8, max_span_len=3, dropout=0.0)
    mask = torch.tensor([[False, True, True, True, True]])  # token 0 has no word piece
    start, end, match = torch.zeros(1, 5), torch.zeros(1, 5), torch.zeros(1, 5, 3)
    start[0, 0], end[0, 1], match[0, 0, 1] = 1, 1, 1  # gold span 0..1, starting on the hole
    start[0, 3], end[0, 4], match[0, 3, 1] = 1, 1, 1  # gold span 3..4, both ends seen
    low = torch.full((1, 5), -5.0)  # nothing predicted: only gold boundaries make candidates
    focus = head.focus(low, low, mask, start, end, match)
    assert not focus[0, 0].any()  # before the fix the gold span (0, len 2) was in the focus
    assert focus[0, 3, 1] and int(focus.sum()) == 1  # the seen gold span, nothing else
    assert (focus <= head.candidate_mask(mask)).all()


def test_span_loss_falls_when_fitting_labels() -> None:
    torch.manual_seed(0)
    head = SpanHead(8, 3, dropout=0.0)
    h = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    start = torch.zeros(2, 5)
    end = torch.zeros(2, 5)
    match = torch.zeros(2, 5, 3)
    start[0, 1], end[0, 2], match[0, 1, 1] = 1, 1, 1
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        parts = head.loss(head(h), mask, start, end, match)
        loss = sum(parts.values())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.2 * first


def test_grounding_targets_and_prediction() -> None:
    head = GroundingHead(4, 4, grids=((1, 1), (2, 2)), hidden_dim=8)
    gt = torch.tensor([[[0.6, 0.6, 0.9, 0.9]]])
    conf, box = head.targets(gt, torch.tensor([[True]]))
    assert conf.tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0]]  # coarse cell 0, fine cell 3
    assert torch.equal(box[0, 4], gt[0, 0])
    logits, boxes = head([torch.randn(1, 1, 4), torch.randn(1, 4, 4)], torch.randn(1, 4))
    assert logits.shape == (1, 5) and boxes.shape == (1, 5, 4)
    assert (boxes >= 0).all() and (boxes <= 1).all()
    loss = head.loss(logits, boxes, gt, torch.tensor([[True]]))
    loss.backward()
    assert loss.item() > 0


def test_existence_head() -> None:
    head = ExistenceHead(6)
    assert head(torch.randn(3, 6)).shape == (3,)


def test_model_forward_losses_and_no_image_path(tmp_path: Path, encoder_dir: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    model = build_model(cfg)
    smp = samples(tmp_path)
    _, batch = items_and_batch(smp, encoder_dir, cfg)
    assert batch.has_image.tolist() == [True, False, True]
    calls: list[int] = []
    assert model.backbone is not None
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].size(0)))
    out = model(batch, return_attention=True, return_graph=True)
    assert calls == [2]  # the image is encoded once per tweet with an image, not per query
    n_types = len(cfg.types)
    assert out.existence_logits.shape == (3 * n_types,)
    # examples of the tweet with no image have no region nodes and are not grounded
    no_img = set(range(n_types, 2 * n_types))
    assert not no_img & set(out.image_examples.tolist())
    assert set(out.graph["region_s1"].batch.tolist()).isdisjoint(no_img)  # type: ignore[index]
    losses = model.losses(batch, out)
    assert set(losses) == {"start", "end", "match", "existence", "grounding", "total"}
    losses["total"].backward()
    assert model.no_image.grad is not None and model.no_image.grad.abs().sum() > 0
    spans, boxes = model.decode(out)
    assert len(spans) == 3 * n_types
    assert all(boxes[i] is None for i in no_img)
    assert all(boxes[i] is not None for i in range(n_types))
    assert out.attention and ("token", "cross", "query") in out.attention
    for (src, _, dst), (ei, w) in out.attention.items():
        assert (src.startswith("region") and dst == "token") or (src, dst) == ("token", "query")
        assert ei.size(1) == w.numel()


def test_a_batch_without_images_reports_the_same_loss_parts(
    tmp_path: Path, encoder_dir: Path
) -> None:
    """Every batch reports a ``grounding`` part when the model has the head (0 without an image).

    So the per-part means reduced across DDP ranks line up; the total is unchanged.
    """
    cfg = tiny_config(encoder_dir)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    smp = samples(tmp_path)
    _, with_images = items_and_batch(smp, encoder_dir, cfg)
    _, without = items_and_batch([smp[1]], encoder_dir, cfg)  # t2 has no image
    parts = model.losses(without, model(without))
    assert list(parts) == list(model.losses(with_images, model(with_images)))
    assert float(parts["grounding"]) == 0.0  # before the fix: no "grounding" key at all
    assert torch.equal(parts["total"], sum(v for k, v in parts.items() if k != "total"))


@pytest.mark.parametrize("fusion", ["none"])
def test_text_only_model_has_no_image_branch(
    tmp_path: Path, encoder_dir: Path, fusion: str
) -> None:
    cfg = tiny_config(encoder_dir, {"fusion.name": fusion, "image.use_image": False})
    model = build_model(cfg)
    assert model.backbone is None and model.grounding_head is None
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    out = model(batch)
    assert out.grounding_logits is None
    assert "grounding" not in model.losses(batch, out)


def test_unlabelled_grounding_examples_get_no_grounding_loss(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from mnerqg_graph.data.types import Sample

    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"graph.dropout": 0.0})
    model = build_model(cfg).eval()
    smp = samples(tmp_path)
    _, labelled = items_and_batch(smp, encoder_dir, cfg)
    # the same tweets, but t1's boxes are unknown: its gold PER box must no longer count
    smp[0] = Sample(
        smp[0].tweet, smp[0].image_path, smp[0].image_size, {}, grounding_labelled=False
    )
    _, unlabelled = items_and_batch(smp, encoder_dir, cfg)
    assert unlabelled.grounding_labelled.tolist().count(False) == len(cfg.types)
    with torch.no_grad():
        out = model(unlabelled)
        only_t3 = model.losses(unlabelled, out)["grounding"]
        out_l = model(labelled)
        both = model.losses(labelled, out_l)["grounding"]
    assert not torch.isclose(only_t3, both)
    # t1 (unlabelled) has no influence: removing its boxes entirely changes nothing
    smp[0] = Sample(
        smp[0].tweet,
        smp[0].image_path,
        smp[0].image_size,
        {s: [b] for s, bs in samples(tmp_path)[0].boxes.items() for b in bs},
        grounding_labelled=False,
    )
    _, unlabelled_with_boxes = items_and_batch(smp, encoder_dir, cfg)
    with torch.no_grad():
        again = model.losses(unlabelled_with_boxes, model(unlabelled_with_boxes))["grounding"]
    assert torch.isclose(again, only_t3)


def test_grounding_presence_term_targets_the_best_cell() -> None:
    import torch.nn.functional as F

    head = GroundingHead(4, 4, grids=((1, 1), (2, 2)), hidden_dim=8)
    logits = torch.tensor([[0.5, -1.0, 3.0, -2.0, 0.0], [1.0, 2.0, -1.0, 0.0, -3.0]])
    boxes = torch.rand(2, 5, 4).sort(-1).values
    gt = torch.tensor([[[0.6, 0.6, 0.9, 0.9]], [[0.0, 0.0, 0.0, 0.0]]])
    gt_mask = torch.tensor([[True], [False]])  # example 1: the type is not in the image
    plain = head.loss(logits, boxes, gt, gt_mask)
    with_presence = head.loss(logits, boxes, gt, gt_mask, presence_weight=2.0)
    expected = 2.0 * F.binary_cross_entropy_with_logits(
        torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.0])
    )
    assert torch.isclose(with_presence - plain, expected)


def test_batch_without_any_grounding_label_gives_a_finite_zero_grounding_loss(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from mnerqg_graph.data.types import Sample

    cfg = tiny_config(encoder_dir)
    model = build_model(cfg)
    smp = [
        Sample(s.tweet, s.image_path, s.image_size, {}, grounding_labelled=False)
        for s in samples(tmp_path)
    ]
    _, batch = items_and_batch(smp, encoder_dir, cfg)
    losses = model.losses(batch, model(batch))
    assert losses["grounding"].item() == 0.0 and torch.isfinite(losses["total"])
    losses["total"].backward()


def test_one_pass_decoded_at_several_thresholds_matches_predict(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from mnerqg_graph.decoding import Decoding
    from mnerqg_graph.pipeline import predict, predict_grid
    from tests.helpers import processor

    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    model = build_model(cfg)
    smp = samples(tmp_path)
    inputs = processor(encoder_dir, cfg)(smp)
    t = Decoding.of(cfg)
    grid = [Decoding("span", *k) for k in [(0.0, 0.0), t.thresholds, (1.0, 0.0), (0.0, 1.0)]]
    by_t = {d.thresholds: p for d, p in predict_grid(model, inputs, grid, batch_size=2).items()}
    ref = predict(model, inputs, batch_size=2)
    k = t.thresholds
    assert by_t[k].tags == ref.tags and by_t[k].spans == ref.spans and by_t[k].boxes == ref.boxes
    assert all(not s for s in by_t[(1.0, 0.0)].spans)  # no probability passes 1.0
    assert all(s for s in by_t[(0.0, 0.0)].spans)  # every candidate passes 0.0: all get spans
    assert all(tag != "O" for tags in by_t[(0.0, 0.0)].tags for tag in tags[:1])
    # existence threshold 1.0: the existence head rules every type out, whatever the span scores
    assert all(not s for s in by_t[(0.0, 1.0)].spans)


def test_inference_keeps_no_autograd_graph(tmp_path: Path, encoder_dir: Path) -> None:
    """Inference (predict, validation, ``mnerqg predict``) runs the model without autograd."""
    from mnerqg_graph.pipeline import predict
    from tests.helpers import processor

    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    model = build_model(cfg)
    inputs = processor(encoder_dir, cfg)(samples(tmp_path))
    seen: list[tuple[bool, bool]] = []

    def spy(module: torch.nn.Module, args: object, out: object) -> None:
        seen.append((torch.is_grad_enabled(), out.existence_logits.requires_grad))  # type: ignore[attr-defined]

    handle = model.register_forward_hook(spy)
    try:
        predict(model, inputs, batch_size=2)
    finally:
        handle.remove()
    assert seen and all(state == (False, False) for state in seen)
    assert torch.is_grad_enabled()  # restored for whoever trains next


def test_existence_threshold_drops_only_the_examples_the_head_rules_out(
    tmp_path: Path, encoder_dir: Path
) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir)
    model = build_model(cfg).eval()
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    with torch.no_grad():
        out = model(batch)
    p = torch.sigmoid(out.existence_logits)
    cut = float(p.median())
    free, _ = model.decode(out, span_threshold=0.0, existence_threshold=0.0)
    gated, _ = model.decode(out, span_threshold=0.0, existence_threshold=cut)
    for e in range(p.numel()):
        assert gated[e] == (free[e] if p[e] >= cut else [])
    assert any(not g for g in gated) and any(g for g in gated)
