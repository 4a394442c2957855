"""The auxiliary BIO tagger: its labels in the batch, its loss, its checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnerqg_graph.config import DecodingConfig, EncoderConfig, ModelConfig
from mnerqg_graph.data.collate import bio_tag_ids, bio_tag_names
from mnerqg_graph.heads import TagHead
from mnerqg_graph.heads.tagger import num_tags
from mnerqg_graph.model import build_model
from tests.helpers import items_and_batch, samples, tiny_config


def test_bio_tag_ids_join_every_types_entities_per_tweet() -> None:
    # one tweet of 6 tokens asked for types 0 and 1: type 0 at 0..1, type 1 at 3 and at 4..5;
    # a second tweet of 4 tokens (padded to 6) with type 1 at 1..2
    start = torch.tensor(
        [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    ).float()
    end = torch.tensor(
        [[0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]]
    ).float()
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2:, 4:] = False
    tags = bio_tag_ids(start, end, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]), mask)
    # O=0, B-type0=1, I-type0=2, B-type1=3, I-type1=4; adjacent entities stay two (B, B-I)
    assert tags.tolist() == [
        [1, 2, 0, 3, 3, 4],
        [1, 2, 0, 3, 3, 4],
        [0, 3, 4, 0, 0, 0],
        [0, 3, 4, 0, 0, 0],
    ]


def test_bio_tag_ids_open_an_entity_on_its_first_seen_token() -> None:
    """An entity whose first token has no word piece (masked) gets B- on its next token.

    So the gold chain never reads ``O -> I-`` (a CRF's forbidden move); masked tokens stay ``O``.
    """
    # tokens 0..2 type 0 with token 0 masked; tokens 3..5 type 0 with token 4 masked (a hole)
    start = torch.tensor([[1, 0, 0, 1, 0, 0]]).float()
    end = torch.tensor([[0, 0, 1, 0, 0, 1]]).float()
    mask = torch.tensor([[False, True, True, True, False, True]])
    tags = bio_tag_ids(start, end, torch.tensor([0]), torch.tensor([0]), mask)
    assert tags.tolist() == [[0, 1, 2, 1, 0, 2]]  # before the fix: [0, 2, 2, 1, 0, 2]
    from mnerqg_graph.heads.crf import BioCrf

    crf = BioCrf(1)
    nll = crf.nll(torch.zeros(1, 6, crf.num_tags), tags, mask)
    assert float(nll[0].detach()) < 100  # a forbidden gold move costs about 1e4


def test_batch_tags_match_the_gold_bio(tmp_path: Path, encoder_dir: Path) -> None:
    cfg = tiny_config(encoder_dir)
    smp = samples(tmp_path)
    _, batch = items_and_batch(smp, encoder_dir, cfg)
    names = bio_tag_names(cfg.types)
    assert len(names) == num_tags(len(cfg.types))
    for row in range(batch.num_examples):
        sample = smp[int(batch.tweet_index[batch.example_tweet[row]])]
        n = len(sample.tweet.tokens)
        assert [names[i] for i in batch.tags[row, :n].tolist()] == sample.tweet.tags


def test_tag_head_trains_the_shared_features_and_round_trips(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from mnerqg_graph.training.checkpoint import load_model, save_model

    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"heads.tag_head": True, "losses.weights": {"tags": 2.0}})
    model = build_model(cfg)
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    out = model(batch)
    n_types = len(cfg.types)
    assert out.tag_logits is not None
    assert out.tag_logits.shape == (*batch.first_piece.shape, 1 + 2 * n_types)
    losses = model.losses(batch, out)
    expected = TagHead.loss(out.tag_logits, batch.tags, out.token_mask)
    assert torch.allclose(losses["tags"], 2.0 * expected)  # weighted by loss_weights["tags"]
    losses["tags"].backward()  # the tagger's loss reaches the encoder the span heads read
    enc = [p.grad for n, p in model.named_parameters() if n.startswith("text_encoder.")]
    assert any(g is not None and g.abs().sum() > 0 for g in enc)
    # a model without the head has no such output, no such loss
    plain = build_model(tiny_config(encoder_dir))
    assert plain.tag_head is None and "tags" not in plain.losses(batch, plain(batch))
    # the head's weights and flag survive a checkpoint
    save_model(model, cfg, {t: t for t in cfg.types}, _tokenizer(encoder_dir), tmp_path / "ck")
    loaded, _, _, _ = load_model(tmp_path / "ck", "cpu")
    assert loaded.config.heads.tag_head and loaded.tag_head is not None
    key = "tag_head.mlp.3.weight"
    assert torch.equal(model.state_dict()[key], loaded.state_dict()[key])
    assert ModelConfig.from_dict(cfg.to_dict()).heads.tag_head


def test_tag_loss_ignores_padding_tokens() -> None:
    logits = torch.zeros(1, 3, 5, requires_grad=True)
    tags = torch.tensor([[1, 2, 4]])
    mask = torch.tensor([[True, True, False]])
    loss = TagHead.loss(logits, tags, mask)
    assert torch.isclose(loss, torch.log(torch.tensor(5.0)))  # uniform over 5 tags
    loss.backward()
    assert logits.grad is not None and logits.grad[0, 2].abs().sum() == 0


def _tokenizer(encoder: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(encoder))


def test_tag_head_spans_average_readings_gate_types_and_mask_unseen_tokens() -> None:
    from mnerqg_graph.data.types import Span
    from mnerqg_graph.decoding import tag_head_spans

    types = ["PER", "LOC"]  # tag ids: O, B-PER, I-PER, B-LOC, I-LOC

    def reading(ids: list[int], p: float) -> torch.Tensor:
        probs = torch.full((len(ids), 5), (1 - p) / 4)
        probs[torch.arange(len(ids)), torch.tensor(ids)] = p
        return probs.log()

    # reading 1 is sure of "B-PER I-PER O B-LOC"; reading 2 weakly says the LOC token is O:
    # the average keeps B-LOC; the last token was cut by truncation, so it is O whatever it says
    lp = torch.stack([reading([1, 2, 0, 3, 3], 0.9), reading([1, 2, 0, 0, 3], 0.4)])
    mask = torch.tensor([True, True, True, True, False])
    got = tag_head_spans(lp, mask, torch.tensor([0.9, 0.9]), types)
    assert [sp for sp, _ in got] == [Span(0, 2, "PER"), Span(3, 4, "LOC")]
    assert all(0 < score <= 1 for _, score in got)
    # the existence head rules LOC out at 0.5: its token takes its next best tag
    gated = tag_head_spans(lp, mask, torch.tensor([0.9, 0.2]), types, existence_threshold=0.5)
    assert [sp for sp, _ in gated] == [Span(0, 2, "PER")]
    # I- without B- opens an entity (conlleval's counting), not dropped
    lone = tag_head_spans(
        reading([0, 4, 4], 0.9)[None], torch.ones(3, dtype=torch.bool), torch.ones(2), types
    )
    assert [sp for sp, _ in lone] == [Span(1, 3, "LOC")]


def test_tag_head_spans_keep_an_unseen_token_inside_its_entity() -> None:
    """A zero-piece token (not a node) between ``B-PER`` and ``I-PER`` stays in the entity.

    One before an entity, between two entities or before another type's ``I-`` does not join.
    """
    from mnerqg_graph.data.types import Span
    from mnerqg_graph.decoding import bridge_unseen_tokens, tag_head_spans

    types = ["PER", "LOC"]  # tag ids: O, B-PER, I-PER, B-LOC, I-LOC
    ids = [1, 0, 2, 0, 1, 0, 1, 0, 4]  # B-PER <> I-PER <> B-PER <> B-PER <> I-LOC
    lp = torch.full((1, len(ids), 5), -9.0)
    lp[0, torch.arange(len(ids)), torch.tensor(ids)] = -0.01
    mask = torch.tensor([True, False] * 4 + [True])
    got = tag_head_spans(lp, mask, torch.ones(2), types)
    assert [sp for sp, _ in got] == [
        Span(0, 3, "PER"),  # before the fix: (0, 1) and (2, 3)
        Span(4, 5, "PER"),
        Span(6, 7, "PER"),
        Span(8, 9, "LOC"),
    ]
    assert got[0][1] == pytest.approx(float(torch.tensor(-0.01).exp()))  # over its seen tokens
    # unseen tokens at either end of the tweet stay O
    edge = bridge_unseen_tokens(torch.tensor([0, 2, 0]), torch.tensor([False, True, False]))
    assert edge.tolist() == [0, 2, 0]


def test_decoder_config_is_checked() -> None:
    import pytest

    from mnerqg_graph.errors import ConfigError

    with pytest.raises(ConfigError, match="decoder must be one of"):
        ModelConfig(types=["PER"], decoding=DecodingConfig(decoder="crf"))
    with pytest.raises(ConfigError, match="needs heads.tag_head=True"):
        ModelConfig(types=["PER"], decoding=DecodingConfig(decoder="tags"))
    data = ModelConfig(types=["PER"], encoder=EncoderConfig(name="x")).to_dict()
    data["decoding"]["decoder"] = "tags"  # a saved config asking for a tagger the model lacks
    with pytest.raises(ConfigError, match="ck/config.json: .*needs heads.tag_head=True"):
        ModelConfig.from_dict(data, source="ck/config.json")


def test_tags_decoder_predictions_follow_the_tagger(tmp_path: Path, encoder_dir: Path) -> None:
    from mnerqg_graph.decoding import Decoding, tag_head_spans
    from mnerqg_graph.errors import ConfigError
    from mnerqg_graph.pipeline import predict, predict_grid
    from tests.helpers import processor

    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"heads.tag_head": True})
    model = build_model(cfg).eval()
    smp = samples(tmp_path)
    _, batch = items_and_batch(smp, encoder_dir, cfg)
    inputs = processor(encoder_dir, cfg)(smp)
    with torch.no_grad():  # make the tagger say B-<first type> on every token, sure of it
        last = model.tag_head.mlp[-1]  # type: ignore[union-attr,index]
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[1] = 10.0
    keys = [Decoding("tags", 0.5, 0.0), Decoding("tags", 0.3, 0.0)]
    by_t = {d.thresholds: p for d, p in predict_grid(model, inputs, keys).items()}
    first = cfg.types[0]
    for s, tags in zip(smp, by_t[(0.5, 0.0)].tags, strict=True):
        # t1's last token (U+FE0F) has no word piece, so no node: O whatever the tagger says
        unseen = {4} if s.tweet.id == "t1" else set()
        want = ["O" if i in unseen else f"B-{first}" for i in range(len(s.tweet.tokens))]
        assert tags == want
    assert by_t[(0.3, 0.0)].tags == by_t[(0.5, 0.0)].tags  # the span threshold does not apply
    cfg.decoding.decoder = "tags"  # predict() follows the config's decoder
    assert predict(model, inputs).tags == by_t[(0.5, 0.0)].tags
    with torch.no_grad():
        out = model(batch)
    assert out.tag_logits is not None
    lp = torch.log_softmax(out.tag_logits, -1)
    got = tag_head_spans(lp[:4, :5], out.token_mask[0, :5], torch.ones(4), cfg.types)
    assert len(got) == 4  # four B- tags on t1's four seen tokens: four one-token entities
    plain = build_model(tiny_config(encoder_dir))
    import pytest

    with pytest.raises(ConfigError, match="tag_head=True"):
        predict_grid(plain, inputs, keys)
