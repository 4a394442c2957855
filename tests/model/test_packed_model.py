"""The model on packed queries: one encoder pass per tweet, per-example nodes as the layout says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from mnerqg_graph.data.collate import collate
from mnerqg_graph.data.queries import load_queries
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.fusion import FUSION_REGISTRY
from mnerqg_graph.model import build_model
from mnerqg_graph.pipeline import predict
from mnerqg_graph.processing import MnerqgProcessor
from mnerqg_graph.training.checkpoint import load_checkpoint, load_model, save_model
from tests.helpers import items_and_batch, samples, tiny_config

PACKED = {"encoder.query_encoding": "packed"}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_encoder_reads_one_sequence_per_tweet(tmp_path: Path, encoder_dir: Path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_dir, PACKED)).eval()
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, model.config)
    seen: list[tuple[int, ...]] = []
    model.text_encoder.register_forward_hook(lambda m, a, o: seen.append(tuple(o.shape)))
    out = model(batch)
    assert seen[0][0] == 3 and batch.num_examples == 12  # B sequences, not B x T
    assert out.span_logits[0].shape[0] == 12 and out.existence_logits.shape == (12,)


def test_token_and_query_nodes_are_what_the_layout_promises(
    tmp_path: Path, encoder_dir: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_dir, {"encoder.casing_dim": 0, **PACKED})).eval()
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, model.config)
    with torch.no_grad():
        hidden = model.text_encoder(
            batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.position_ids
        )
        text = model.text_nodes(batch)
        tok, query = text.tokens(), text.query
    d = hidden.size(-1)
    for n in range(batch.num_examples):
        row, t = int(batch.example_sequence[n]), int(batch.type_index[n])
        for w, p in enumerate(batch.first_piece[n].tolist()):
            if p >= 0:  # the shared state of the token's first piece, then the asked type
                assert torch.allclose(tok[n, w, :d], hidden[row, p])
                assert torch.allclose(tok[n, w, d:], model.token_type_emb.weight[t])
        a, b = batch.query_span[n].tolist()
        own = hidden[row, a:b].mean(0) + model.type_emb.weight[t]
        assert torch.allclose(query[n], own, atol=1e-5)
    # a tweet's examples share their token states (one row per tweet) but differ in the type part
    assert text.shared.size(0) == 3 and text.rows.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(tok[0, :, :d], tok[1, :, :d]) and not torch.equal(tok[0], tok[1])


def test_one_type_packed_reads_exactly_what_per_type_reads(
    tmp_path: Path, encoder_dir: Path
) -> None:
    queries = {"PER": load_queries()["PER"]}
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    smp = [s for s in samples(tmp_path) if all(sp.type == "PER" for sp in s.tweet.entities)]
    feats = {}
    for mode in ("per_type", "packed"):
        torch.manual_seed(0)
        model = build_model(
            tiny_config(encoder_dir, {"types": ["PER"], "encoder.query_encoding": mode})
        ).eval()
        items = MnerqgProcessor.from_model(model, tok, queries)(smp).items
        batch = collate(items, 8, 64, tok.pad_token_id)
        with torch.no_grad():
            feats[mode] = model.text_nodes(batch).tokens()
    assert torch.allclose(feats["per_type"], feats["packed"], atol=1e-6)


def test_isolated_queries_see_only_themselves_and_the_tweet(
    tmp_path: Path, encoder_dir: Path
) -> None:
    smp = samples(tmp_path)
    states = {}
    for attention in ("full", "isolated"):
        torch.manual_seed(0)
        model = build_model(
            tiny_config(
                encoder_dir,
                {"encoder.packed_attention": attention, "encoder.casing_dim": 0, **PACKED},
            )
        ).eval()
        _, batch = items_and_batch(smp, encoder_dir, model.config)
        mask = model._attention(batch)
        if attention == "isolated":  # the mask itself: [CLS] and the tweet see all, q_t only t
            slot = batch.query_slot[0]
            q0, q1 = (slot == 0).nonzero()[0, 0], (slot == 1).nonzero()[0, 0]
            tweet = int(batch.first_piece[0, 0])
            assert mask.shape == (3, *batch.input_ids.shape[1:], batch.input_ids.size(1))
            assert mask[0, q0, tweet] and mask[0, q0, 0] and not mask[0, q0, q1]
            assert mask[0, tweet, q1] and mask[0, 0, q0]
        changed = batch.input_ids.clone()
        a, b = batch.query_span[1].tolist()  # the second query (LOC) of the first tweet
        changed[0, a:b] = changed[0, a]
        with torch.no_grad():
            before = model.text_nodes(batch).query[0]  # PER's query node
            batch.input_ids = changed
            after = model.text_nodes(batch).query[0]
        states[attention] = (before - after).abs().max().item()
    assert states["isolated"] < 1e-6 < states["full"]


@pytest.mark.parametrize("fusion", FUSION_REGISTRY.names())
@pytest.mark.parametrize(
    ("positions", "separators"), [("sequential", True), ("per_query", True), ("sequential", False)]
)
def test_every_fusion_module_trains_a_step_on_packed_queries(
    tmp_path: Path, encoder_dir: Path, fusion: str, positions: str, separators: bool
) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(
        encoder_dir,
        {
            "fusion.name": fusion,
            "heads.tag_head": True,
            "encoder.packed_positions": positions,
            "encoder.packed_separators": separators,
            **PACKED,
        },
    )
    model = build_model(cfg)
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        parts = model.losses(batch, model(batch))
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
        losses.append(parts["total"].item())
    assert {"start", "end", "match", "existence", "tags"} <= set(parts)
    emb = model.text_encoder.model.embeddings.word_embeddings.weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert losses[-1] < losses[0]


def test_checkpoint_keeps_the_mode_and_predicts_identically(
    tmp_path: Path, encoder_dir: Path
) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(
        encoder_dir,
        {
            "encoder.packed_attention": "isolated",
            "encoder.packed_positions": "per_query",
            "encoder.packed_separators": False,
            **PACKED,
        },
    )
    model = build_model(cfg).eval()
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    ckpt = save_model(model, cfg, load_queries(), tok, tmp_path / "ckpt")
    loaded, cfg2, queries, tok2 = load_model(ckpt)
    assert (
        cfg2.encoder.query_encoding,
        cfg2.encoder.packed_attention,
        cfg2.encoder.packed_positions,
        cfg2.encoder.packed_separators,
    ) == ("packed", "isolated", "per_query", False)
    _, proc = load_checkpoint(ckpt)
    assert (proc.query_encoding, proc.packed_positions, proc.packed_separators) == (
        "packed",
        "per_query",
        False,
    )
    smp = samples(tmp_path)
    inputs = proc(smp)
    assert all(ex.packed for it in inputs.items for ex in it.examples)
    ex = inputs.items[0].examples[0]  # one [SEP] between the last query and the tweet, none between
    assert ex.input_ids.count(proc.tokenizer.sep_token_id) == 2
    a, b = predict(model, inputs), predict(loaded, inputs)
    assert a.tags == b.tags and a.spans == b.spans and a.grounding_conf == b.grounding_conf


@pytest.mark.parametrize("mode", ["per_type", "packed"])
def test_heads_on_feature_parts_equal_heads_on_the_concatenation(
    tmp_path: Path, encoder_dir: Path, mode: str
) -> None:
    from mnerqg_graph.heads.features import TokenFeatures

    torch.manual_seed(0)
    model = build_model(
        tiny_config(encoder_dir, {"heads.tag_head": True, "encoder.query_encoding": mode})
    ).eval()
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, model.config)
    with torch.no_grad():
        text = model.text_nodes(batch)
        fused = torch.randn(batch.num_examples, text.shared.size(1), 32)
        parts = TokenFeatures(fused, text.shared, text.rows, text.asked)
        dense = parts.dense()
        assert torch.equal(dense, torch.cat([fused, text.tokens()], -1))
        for a, b in zip(model.span_head(parts), model.span_head(dense), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
        assert model.tag_head is not None
        assert torch.allclose(model.tag_head(parts), model.tag_head(dense), atol=1e-5)
    # in training the parts are joined first: each example keeps its own dropout mask
    model.train()
    torch.manual_seed(1)
    a = model.span_head(parts)[0]
    torch.manual_seed(1)
    b = model.span_head(dense)[0]
    assert torch.equal(a, b)


def test_scoring_only_the_needed_spans_changes_no_loss_and_no_decoding(
    tmp_path: Path, encoder_dir: Path
) -> None:
    torch.manual_seed(0)
    # no image branch: its batch norm would differ between training and evaluation
    cfg = tiny_config(
        encoder_dir,
        {"graph.dropout": 0.0, "heads.max_span_len": 3, "image.use_image": False, **PACKED},
    )
    model = build_model(cfg)
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    with torch.no_grad():  # start/end biases that make some, not all, tokens candidates
        for scorer in (model.span_head.start, model.span_head.end):
            scorer[-1].bias.fill_(0.3)
    # training: the focus spans only, against every span (the same features, head in training)
    model.eval()
    dense = model(batch)
    head = model.span_head.train()
    mask = dense.token_mask
    h = torch.randn(*mask.shape, head.start[0].in_features)

    def focus(start_l: torch.Tensor, end_l: torch.Tensor) -> torch.Tensor:
        return head.focus(start_l, end_l, mask, batch.start, batch.end, batch.match)

    outs, grads = [], []
    for pairs in (focus, None):
        head.zero_grad()
        logits = head(h, pairs)
        parts = head.loss(logits, mask, batch.start, batch.end, batch.match)
        parts["match"].backward()
        outs.append((logits, parts))
        grads.append(head.match_start.weight.grad.clone())
    (sparse_l, a), (dense_l, b) = outs
    scored = sparse_l[2] > -1e3
    assert 0 < scored.sum() < head.candidate_mask(mask).sum()
    assert torch.allclose(sparse_l[2][scored], dense_l[2][scored], atol=1e-5)
    for key in ("start", "end", "match"):
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    model.eval()
    # evaluation: decoding at thresholds >= the floor is the same as with every span scored
    floored = model(batch, span_floor=0.55)
    assert (floored.span_logits[2] > -1e3).sum() < model.span_head.candidate_mask(
        dense.token_mask
    ).sum()
    assert any(model.decode(dense, 0.55)[0])  # something to decode
    for t in (0.55, 0.6, 0.7):
        assert model.decode(floored, t)[0] == model.decode(dense, t)[0]


def test_head_dim_narrows_the_span_and_tagger_mlps(tmp_path: Path, encoder_dir: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"heads.tag_head": True, "heads.head_dim": 12, **PACKED})
    model = build_model(cfg)
    span_in = model.span_head.start[0].in_features
    for layer in (
        model.span_head.start[0],
        model.span_head.end[0],
        model.span_head.match_start,
        model.span_head.match_end,
        model.tag_head.mlp[1],  # type: ignore[union-attr]
    ):
        assert (layer.in_features, layer.out_features) == (span_in, 12)
    assert model.span_head.match_out[-1].in_features == 12
    wide = build_model(tiny_config(encoder_dir, {"heads.tag_head": True, **PACKED}))
    assert wide.span_head.start[0].out_features == span_in  # 0: the input width, as before
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    parts = model.losses(batch, model(batch))
    parts["total"].backward()
    assert model.span_head.match_start.weight.grad is not None
    # saved and rebuilt at that width
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    loaded, cfg2, _, _ = load_model(save_model(model, cfg, load_queries(), tok, tmp_path / "c"))
    assert cfg2.heads.head_dim == 12 and loaded.span_head.match_end.out_features == 12
    with pytest.raises(ConfigError, match="head_dim"):
        tiny_config(encoder_dir, {"heads.head_dim": -1})


def test_per_query_positions_batch_tweets_near_the_encoder_position_limit(tmp_path: Path) -> None:
    """Padding of a ``per_query`` packed row never reads a position the encoder lacks.

    Its real pieces stay under ``max_position_embeddings`` (positions restart per query), but
    the packed row is longer than that: a shorter tweet batched with it used to be padded with
    positions up to the row's length (an IndexError in the position embedding).
    """
    from mnerqg_graph.data.types import Sample, Tweet
    from mnerqg_graph.encoders.tiny import build_tiny_encoder
    from tests.helpers import TWEETS

    corpus = [t.tokens for t in TWEETS] + [q.split() for q in load_queries().values()]
    enc = build_tiny_encoder(
        tmp_path / "enc", corpus, hidden_size=32, num_layers=1, num_heads=2,
        intermediate_size=64, max_position=40,
    )  # fmt: skip
    cfg = tiny_config(
        enc, {**PACKED, "encoder.packed_positions": "per_query", "encoder.max_length": 40}
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    proc = MnerqgProcessor.from_model(
        model, AutoTokenizer.from_pretrained(str(enc)), load_queries()
    )
    long = Tweet("long", ["Kelvo", "visits", "Marn", "today"] * 4, ["O"] * 16)
    short = Tweet("short", ["Kelvo"], ["B-PER"])
    inputs = proc([Sample(long), Sample(short)])
    longest = max(len(it.examples[0].input_ids) for it in inputs.items)
    assert longest > 40  # the packed row is longer than the encoder's positions
    assert max(p for it in inputs.items for p in it.examples[0].position_ids) < 40
    batch = collate(inputs.items, cfg.heads.max_span_len, cfg.image.image_size)
    assert int(batch.position_ids.max()) < 40
    together = predict(model, inputs, batch_size=2)
    alone = [predict(model, proc([Sample(t)]), batch_size=1) for t in (long, short)]
    assert together.tags == [p.tags[0] for p in alone]


@pytest.mark.parametrize("encoding", ["per_type", "packed"])
def test_max_length_past_the_encoder_positions_fails_when_the_model_is_built(
    tmp_path: Path, encoding: str
) -> None:
    """``build_model`` refuses a ``max_length`` the encoder has no positions for, in both modes.

    A per-type model used to build, prepare its data and fail at the first long tweet's forward,
    deep inside the encoder; a processor made longer later is refused by the processor.
    """
    from mnerqg_graph.data.types import Sample, Tweet
    from mnerqg_graph.encoders.tiny import build_tiny_encoder
    from tests.helpers import TWEETS

    corpus = [t.tokens for t in TWEETS] + [q.split() for q in load_queries().values()]
    enc = build_tiny_encoder(
        tmp_path / "enc", corpus, hidden_size=32, num_layers=1, num_heads=2,
        intermediate_size=64, max_position=40,
    )  # fmt: skip
    over = {"encoder.query_encoding": encoding}
    with pytest.raises(ConfigError, match="max_length 64 exceeds the encoder's 40 positions"):
        build_model(tiny_config(enc, {**over, "encoder.max_length": 64}))
    model = build_model(tiny_config(enc, {**over, "encoder.max_length": 40}))
    tok = AutoTokenizer.from_pretrained(str(enc))
    proc = MnerqgProcessor.from_model(model, tok, load_queries())
    long = Sample(Tweet("long", ["Kelvo", "visits", "Marn", "today"] * 15, ["O"] * 60))
    with pytest.raises(ConfigError, match="40 positions"):
        proc.replace(max_length=64)([long])
