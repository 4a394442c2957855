"""The CRF over the tagger's BIO tags (``tag_crf``): brute force agrees, a model trains with it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from mnerqg_graph.data.collate import bio_tag_names
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.heads.crf import BioCrf
from mnerqg_graph.model import build_model
from tests.helpers import items_and_batch, samples, tiny_config


def _crf(num_types: int, seed: int = 0) -> BioCrf:
    torch.manual_seed(seed)
    crf = BioCrf(num_types)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _path_score(crf: BioCrf, em: torch.Tensor, path: tuple[int, ...]) -> torch.Tensor:
    trans, start, end = crf.scores()
    s = start[path[0]] + em[0, path[0]] + end[path[-1]]
    for t in range(1, len(path)):
        s = s + trans[path[t - 1], path[t]] + em[t, path[t]]
    return s


def _valid(names: list[str], path: tuple[int, ...]) -> bool:
    prev = "O"
    for i in path:
        tag = names[i]
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


def test_likelihood_and_viterbi_equal_brute_force() -> None:
    crf = _crf(2)  # 5 tags: O, B-a, I-a, B-b, I-b
    names = bio_tag_names(["a", "b"])
    torch.manual_seed(1)
    em = torch.randn(3, 4, crf.num_tags)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    tags = torch.tensor([[1, 2, 0, 3], [3, 4, 0, 0], [0, 0, 0, 0]])
    nll = crf.nll(em, tags, mask).detach()
    paths = crf.viterbi(em, mask)
    for row in range(2):
        n = int(mask[row].sum())
        every = list(itertools.product(range(crf.num_tags), repeat=n))
        log_z = torch.logsumexp(torch.stack([_path_score(crf, em[row], p) for p in every]), 0)
        gold = _path_score(crf, em[row], tuple(tags[row, :n].tolist()))
        assert float(nll[row]) == pytest.approx(float((log_z - gold).detach()), abs=1e-4), row
        best = max(
            (p for p in every if _valid(names, p)), key=lambda p: _path_score(crf, em[row], p)
        )
        assert tuple(paths[row]) == best, row
    assert nll[2] == 0 and paths[2] == []  # a row without tokens


def test_masked_tokens_inside_a_row_are_skipped_by_the_chain() -> None:
    """A zero-piece token masked mid-tweet: the chain links its neighbours, as brute force does.

    Rows: a hole inside an entity (B-a <hole> I-a is one entity), a hole first, holes at both
    ends. The likelihood and the best path equal brute force over the kept tokens alone.
    """
    from mnerqg_graph.decoding import tag_head_spans

    crf = _crf(2, seed=3)
    names = bio_tag_names(["a", "b"])
    torch.manual_seed(4)
    em = torch.randn(3, 5, crf.num_tags)
    mask = torch.tensor([[1, 0, 1, 1, 1], [0, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    tags = torch.tensor([[1, 0, 2, 0, 3], [0, 3, 4, 0, 1], [0, 1, 2, 0, 0]])
    nll = crf.nll(em, tags, mask).detach()
    paths = crf.viterbi(em, mask)
    for row in range(3):
        kept = mask[row].nonzero()[:, 0]
        em_k = em[row, kept]
        every = list(itertools.product(range(crf.num_tags), repeat=len(kept)))
        log_z = torch.logsumexp(torch.stack([_path_score(crf, em_k, p) for p in every]), 0)
        gold = _path_score(crf, em_k, tuple(tags[row, kept].tolist()))
        assert float(nll[row]) == pytest.approx(float((log_z - gold).detach()), abs=1e-4), row
        assert float(nll[row]) < 100  # B-a <hole> I-a is allowed, not a forbidden O -> I-a
        best = max((p for p in every if _valid(names, p)), key=lambda p: _path_score(crf, em_k, p))
        assert tuple(paths[row]) == best, row
    # the decoder puts each kept token's tag on that token, and the hole inside the entity
    # stays in it
    lp = torch.full((1, 5, crf.num_tags), -20.0)
    for t, tag in enumerate([1, 0, 2, 0, 3]):  # B-a <hole> I-a O B-a... emissions
        lp[0, t, tag] = 0.0
    with torch.no_grad():
        crf.transitions.zero_()
        crf.start.zero_()
        crf.end.zero_()
    spans = tag_head_spans(lp, mask[0], torch.ones(2), ["a", "b"], 0.0, crf)
    assert [(sp.start, sp.end, sp.type) for sp, _ in spans] == [(0, 3, "a"), (4, 5, "b")]


def test_decoded_sequences_are_well_formed_bio() -> None:
    crf = _crf(3, seed=2)
    names = bio_tag_names(["a", "b", "c"])
    em = torch.randn(8, 6, crf.num_tags) * 3
    em[..., 2::2] += 4.0  # the emissions prefer I- tags everywhere: the constraints must hold
    for path in crf.viterbi(em, torch.ones(8, 6, dtype=torch.bool)):
        assert _valid(names, tuple(path)), [names[i] for i in path]


def test_the_model_trains_and_decodes_with_the_crf(tmp_path: Path, encoder_dir: Path) -> None:
    from mnerqg_graph.decoding import tag_head_spans
    from mnerqg_graph.training.checkpoint import load_model, save_model

    torch.manual_seed(0)
    cfg = tiny_config(
        encoder_dir, {"heads.tag_head": True, "heads.tag_crf": True, "decoding.decoder": "tags"}
    )
    model = build_model(cfg)
    _, batch = items_and_batch(samples(tmp_path), encoder_dir, cfg)
    out = model(batch)
    assert model.tag_crf is not None and out.tag_logits is not None
    losses = model.losses(batch, out)
    expected = model.tag_crf.loss(out.tag_logits, batch.tags, out.token_mask)
    assert torch.allclose(losses["tags"], expected)
    losses["total"].backward()
    assert model.tag_crf.transitions.grad is not None
    assert model.tag_crf.transitions.grad.abs().sum() > 0
    # the decoder reads the Viterbi path: a well-formed sequence, not each token's best tag
    lp = torch.log_softmax(out.tag_logits[:4].detach(), -1)
    spans = tag_head_spans(lp, out.token_mask[0], torch.ones(len(cfg.types)), cfg.types, 0.0,
                           model.tag_crf)  # fmt: skip
    assert all(sp.type in cfg.types for sp, _ in spans)
    # saved and read back with its transitions
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    save_model(model, cfg, {t: t for t in cfg.types}, tok, tmp_path / "ck")
    loaded, _, _, _ = load_model(tmp_path / "ck", "cpu")
    assert loaded.tag_crf is not None
    assert torch.equal(loaded.tag_crf.transitions, model.tag_crf.transitions)
    # empty tweets (a batch of them alone, and beside others) decode to no entity; the chain
    # over zero tokens used to fail with an IndexError, ending a whole predict or evaluation
    from mnerqg_graph.data.types import Sample, Tweet
    from mnerqg_graph.pipeline import predict
    from mnerqg_graph.processing import MnerqgProcessor

    proc = MnerqgProcessor.from_model(loaded, tok, {t: t for t in cfg.types})
    empty = Sample(Tweet("empty", [], []))
    assert predict(loaded, proc([empty]), batch_size=4).spans == [[]]
    mixed = predict(loaded, proc([empty, *samples(tmp_path)[:1], empty]), batch_size=4)
    assert mixed.spans[0] == [] and mixed.spans[2] == [] and mixed.tags[0] == []
    assert crf_path_of_nothing(loaded.tag_crf) == ([[], []], [0.0, 0.0])


def crf_path_of_nothing(crf: BioCrf) -> tuple[list[list[int]], list[float]]:
    """The CRF on rows of zero tokens: the best paths and likelihoods."""
    em = torch.zeros(2, 0, crf.num_tags)
    mask = torch.zeros(2, 0, dtype=torch.bool)
    tags = torch.zeros(2, 0, dtype=torch.long)
    return crf.viterbi(em, mask), crf.nll(em, tags, mask).tolist()


def test_a_crf_without_the_tagger_is_refused(encoder_dir: Path) -> None:
    with pytest.raises(ConfigError, match="tag_crf needs heads.tag_head"):
        tiny_config(encoder_dir, {"heads.tag_crf": True})
