"""``benchmarks.decoding_study``: its rules, the model's own rule reproduced, test refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import decoding_study as ds
from mnerqg_graph.bench.throughput import set_span_bias
from tests.helpers import TWEETS, tiny_config, tiny_encoder


def _probs(
    typ: str, start: list[float], end: list[float], match: dict[tuple[int, int], float], s: int = 3
) -> ds.SpanProbs:
    """One example over ``len(start)`` tokens; ``match[(i, k)]`` for span ``i .. i + k``."""
    w = len(start)
    pe = torch.nn.functional.pad(torch.tensor(end), (0, s - 1)).unfold(0, s, 1)
    pm = torch.zeros(w, s)
    for (i, k), v in match.items():
        pm[i, k] = v
    is_span = torch.tensor([[i + k < w for k in range(s)] for i in range(w)])
    return ds.SpanProbs(typ, torch.tensor(start).unsqueeze(-1), pe, pm, is_span, 0.9)


def test_rules_differ_where_they_should() -> None:
    # token 0: start .9, end .9, match .3 (mean .63): `all` at .5 rejects it, `mean` keeps it
    per = _probs("PER", [0.9, 0.1, 0.1], [0.9, 0.1, 0.1], {(0, 0): 0.3})
    assert ds.decode_rule([per], 3, "all", 0.5) == ["O", "O", "O"]
    assert ds.decode_rule([per], 3, "mean", 0.5) == ["B-PER", "O", "O"]
    # tokens 1-2: .45 for LOC and .45 for ORG everywhere: no type passes .5, together they do
    loc = _probs("LOC", [0.1, 0.45, 0.1], [0.1, 0.1, 0.45], {(1, 1): 0.45})
    org = _probs("ORG", [0.1, 0.45, 0.1], [0.1, 0.1, 0.45], {(1, 1): 0.46})
    assert ds.decode_rule([loc, org], 3, "all", 0.5) == ["O", "O", "O"]
    assert ds.decode_rule([loc, org], 3, "pooled", 0.5, pool_threshold=0.8) == [
        "O",
        "B-ORG",
        "I-ORG",
    ]  # the better of the two types
    assert ds.decode_rule([loc, org], 3, "pooled", 0.5, pool_threshold=0.95) == ["O"] * 3
    # the existence threshold removes a type's spans
    sure = _probs("PER", [0.9, 0.1, 0.1], [0.9, 0.1, 0.1], {(0, 0): 0.9})
    sure.existence = 0.2
    assert ds.decode_rule([sure], 3, "all", 0.5) == ["B-PER", "O", "O"]
    assert ds.decode_rule([sure], 3, "all", 0.5, existence_threshold=0.5) == ["O"] * 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.training.checkpoint import save_model

    root = tmp_path_factory.mktemp("decoding")
    enc = tiny_encoder(root)
    torch.manual_seed(0)
    cfg = tiny_config(enc, {"image.use_image": False, "decoding.span_threshold": 0.45})
    model = build_model(cfg).eval()
    set_span_bias(model, 0.0)  # probabilities near .5: thresholds matter
    return save_model(
        model, cfg, load_queries(), AutoTokenizer.from_pretrained(str(enc)), root / "ckpt"
    )


def test_the_model_rule_matches_the_pipeline(checkpoint: Path, tmp_path: Path) -> None:
    """`all` at the checkpoint's thresholds gives what ``mnerqg predict`` gives."""
    from mnerqg_graph.data.conll import write_conll
    from mnerqg_graph.data.types import Sample
    from mnerqg_graph.metrics import entity_prf
    from mnerqg_graph.predict import Predictor

    valid = tmp_path / "valid.txt"
    write_conll(valid, TWEETS)
    out = tmp_path / "study.md"
    assert ds.main(["--checkpoint", str(checkpoint), "--input", str(valid), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    records = Predictor(str(checkpoint), "cpu").predict([Sample(t) for t in TWEETS])
    assert any(r["entities"] for r in records)  # something decoded, so the F1 is a real check
    f1 = entity_prf([list(t.tags) for t in TWEETS], [r["tags"] for r in records]).micro.f1
    assert f"| `all`, the checkpoint's own thresholds | {100 * f1:.2f} | 0.45 |" in text
    assert "Errors at the checkpoint's own decoding: of " in text


def test_a_test_file_is_refused(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        ds.main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "test.txt")])
    assert "chosen on validation" in capsys.readouterr().err


def test_a_missing_checkpoint_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnerqg_graph.data.conll import write_conll

    valid = tmp_path / "valid.txt"
    write_conll(valid, TWEETS)
    assert ds.main(["--checkpoint", str(tmp_path / "nope"), "--input", str(valid)]) == 2
    assert "nope" in capsys.readouterr().err
