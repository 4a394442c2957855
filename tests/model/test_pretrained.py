"""The Hugging Face-style API: save/load pretrained, the processor, the one inference path."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from mnerqg_graph.data.queries import load_queries
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.model import MnerqgModel, build_model
from mnerqg_graph.processing import PROCESSOR_FILE, MnerqgProcessor
from tests.helpers import samples, tiny_config

REPO = Path(__file__).resolve().parents[2]


def _model(encoder_dir: Path, over: dict[str, Any] | None = None) -> MnerqgModel:
    """A tiny model that predicts entities and boxes (low thresholds: the checks are not empty)."""
    torch.manual_seed(0)
    kw = {"decoding.span_threshold": 0.2, "decoding.grounding_threshold": 0.0, **(over or {})}
    return build_model(tiny_config(encoder_dir, kw)).eval()


def _processor(encoder_dir: Path, model: MnerqgModel) -> MnerqgProcessor:
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    return MnerqgProcessor.from_model(model, tok, load_queries())


def test_save_and_load_pretrained_predict_identically(tmp_path: Path, encoder_dir: Path) -> None:
    model = _model(encoder_dir)
    processor = _processor(encoder_dir, model)
    smp = samples(tmp_path)
    before = model.predict(processor(smp))
    # the check compares something: entities, and boxes in the 80x80 images' pixels
    assert sum(len(t.entities) for t in before) > 0
    assert before[0].boxes and all(b is not None for b in before[0].boxes.values())
    assert any(v > 1.5 for b in before[0].boxes.values() if b for v in b[0])  # pixels
    assert all(b is None for b in before[1].boxes.values())  # t2 has no image

    ckpt = model.save_pretrained(tmp_path / "ckpt", processor)
    loaded = MnerqgModel.from_pretrained(ckpt)
    proc2 = MnerqgProcessor.from_pretrained(ckpt)
    after = loaded.predict(proc2(smp))
    for a, b in zip(before, after, strict=True):
        assert (a.id, a.tokens, a.tags) == (b.id, b.tokens, b.tags)
        assert a.entities == b.entities  # spans, types and scores
        assert a.boxes == b.boxes and a.grounding_conf == b.grounding_conf
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    expected = model.config.to_dict()
    expected["encoder"]["name"] = str(ckpt / "text_encoder")
    assert loaded.config.to_dict() == expected

    # the processor's files survive a model saved alone into the folder, in either order
    loaded.config.decoding.span_threshold = 0.3
    loaded.save_pretrained(ckpt)
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved["decoding"]["span_threshold"] == 0.3
    assert MnerqgProcessor.from_pretrained(ckpt).options() == processor.options()
    fresh = tmp_path / "fresh"
    model.save_pretrained(fresh)
    processor.save_pretrained(fresh)
    assert MnerqgModel.from_pretrained(fresh).predict(proc2(smp)).tags == before.tags
    # a folder of something else is refused before anything is written (it would be replaced
    # as a whole, the user's files deleted)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="no model.safetensors in it"):
        model.save_pretrained(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_checkpoint_without_processor_json_still_loads(tmp_path: Path, encoder_dir: Path) -> None:
    from mnerqg_graph.pipeline import Pipeline

    model = _model(encoder_dir, {"encoder.url_word": "url", "encoder.max_length": 48})
    processor = _processor(encoder_dir, model)
    ckpt = model.save_pretrained(tmp_path / "old", processor)
    (ckpt / PROCESSOR_FILE).unlink()  # as written before processor.json existed
    old = MnerqgProcessor.from_pretrained(ckpt)
    assert (old.url_word, old.max_length, old.image_size) == ("url", 48, 64)
    pipe = Pipeline.from_pretrained(ckpt)
    assert pipe.processor.options() == processor.options()  # max_positions from the encoder
    smp = samples(tmp_path)
    assert pipe(smp).tags == model.predict(processor(smp)).tags


def test_processor_round_trip_keeps_every_option(tmp_path: Path, encoder_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    # not the default queries, nor their order
    queries = {"LOC": "where is it", "ORG": "which group", "PER": "who is it"}
    proc = MnerqgProcessor(
        tok,
        queries,
        max_length=40,
        max_span_len=5,
        image_size=32,
        url_word="url",
        query_encoding="packed",
        packed_positions="per_query",
        max_positions=77,
        packed_separators=False,
    )
    defaults = MnerqgProcessor(tok, queries)
    assert all(proc.options()[k] != defaults.options()[k] for k in MnerqgProcessor.OPTIONS)
    proc.save_pretrained(tmp_path / "p")
    back = MnerqgProcessor.from_pretrained(tmp_path / "p")
    assert back.options() == proc.options()
    assert list(back.queries.items()) == list(queries.items())
    assert back.tokenizer.get_vocab() == tok.get_vocab()
    smp = samples(tmp_path)
    a, b = proc(smp), back(smp)
    assert [[(e.input_ids, e.position_ids) for e in it.examples] for it in a.items] == [
        [(e.input_ids, e.position_ids) for e in it.examples] for it in b.items
    ]
    assert [it.image is None for it in b.items] == [False, True, False]
    assert b.items[0].image is not None and b.items[0].image.shape == (3, 32, 32)
    # a file this code cannot read says so
    meta = json.loads((tmp_path / "p" / PROCESSOR_FILE).read_text())
    (tmp_path / "p" / PROCESSOR_FILE).write_text(json.dumps({**meta, "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown processor options"):
        MnerqgProcessor.from_pretrained(tmp_path / "p")
    (tmp_path / "p" / PROCESSOR_FILE).write_text(json.dumps({**meta, "processor_version": 9}))
    with pytest.raises(ConfigError, match="processor_version"):
        MnerqgProcessor.from_pretrained(tmp_path / "p")


def test_processor_takes_text_and_records(tmp_path: Path, encoder_dir: Path) -> None:
    model = _model(encoder_dir)
    processor = _processor(encoder_dir, model)
    smp = samples(tmp_path)
    image = str(smp[0].image_path)
    inputs = processor(
        [
            {"id": "a", "text": "Kelvo visits Marn today", "image": image},
            "so much about Zed Corp !",
            smp[2],
        ]
    )
    assert [s.tweet.id for s in inputs.samples] == ["a", "1", "t3"]
    assert inputs.samples[0].tweet.tokens == ["Kelvo", "visits", "Marn", "today"]
    assert inputs.samples[0].image_size == (80, 80) and inputs.items[0].image is not None
    assert inputs.samples[1].tweet.tokens == smp[1].tweet.tokens
    preds = model.predict(inputs)
    want = model.predict(processor(smp[1:2]))
    assert preds[1].entities == want[0].entities and preds[1].tags == want[0].tags
    with pytest.raises(ConfigError, match="does not fit the model"):
        processor.replace(query_encoding="packed").check_model(model)


def _tagger_checkpoint(tmp_path: Path, encoder_dir: Path) -> tuple[Path, MnerqgModel]:
    """A checkpoint that decodes with the tagger, whose entities differ from the span heads'."""
    torch.manual_seed(0)
    model = build_model(
        tiny_config(encoder_dir, {"heads.tag_head": True, "decoding.decoder": "tags"})
    ).eval()
    with torch.no_grad():  # the tagger rarely says O: entities of several types
        model.tag_head.mlp[-1].bias[0] -= 5.0  # type: ignore[union-attr,index]
    processor = _processor(encoder_dir, model)
    return model.save_pretrained(tmp_path / "tagger", processor), model


def test_visualize_and_predict_give_the_same_entities_with_the_tagger(
    tmp_path: Path, encoder_dir: Path
) -> None:
    from mnerqg_graph.decoding import Decoding
    from mnerqg_graph.predict import Predictor
    from mnerqg_graph.viz.alignment import explain
    from mnerqg_graph.viz.cli import main as visualize_main

    ckpt, model = _tagger_checkpoint(tmp_path, encoder_dir)
    smp = samples(tmp_path)
    predictor = Predictor(str(ckpt), "cpu")
    records = predictor.predict(smp)
    assert sum(len(r["entities"]) for r in records) >= 3
    assert len({e["type"] for r in records for e in r["entities"]}) > 1
    # the span heads would decode other entities: the check below can tell the two apart
    span = Decoding("span", *Decoding.of(model.config).thresholds)
    by_span = model.predict(predictor.processor(smp), decoding=span)
    assert [[(sp.start, sp.end, sp.type) for sp, _ in t.entities] for t in by_span] != [
        [(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in records
    ]
    expl = explain(predictor.model, predictor.processor, smp)
    for e, r in zip(expl, records, strict=True):
        got = [(sp.start, sp.end, sp.type, round(sc, 6)) for sp, sc in e.entities]
        assert got == [(x["start"], x["end"], x["type"], x["score"]) for x in r["entities"]]
    # the files `mnerqg visualize` writes carry the same entities on their token nodes
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps(
                {"id": s.tweet.id, "tokens": s.tweet.tokens}
                | ({"image": str(s.image_path)} if s.image_path else {})
            )
            + "\n"
            for s in smp
        )
    )
    out = tmp_path / "viz"
    argv = ["--checkpoint", str(ckpt), "--input", str(jsonl), "--out", str(out)]
    assert visualize_main([*argv, "--device", "cpu"]) == 0
    for s, r in zip(smp, records, strict=True):
        data = json.loads((out / s.tweet.id / "alignment_PER.json").read_text())
        drawn = {n["position"]: n["entity"] for n in data["nodes"] if n["kind"] == "token"}
        predicted = {
            p: re.sub(r"^[BI]-", "", t) if t != "O" else "" for p, t in enumerate(r["tags"])
        }
        assert drawn == {p: predicted[p] for p in drawn}, s.tweet.id


def _readme_snippet() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- readme-python-api -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no python block after <!-- readme-python-api -->"
    return m.group(1)


def test_the_readme_snippet_runs(tmp_path: Path, encoder_dir: Path) -> None:
    model = _model(encoder_dir)
    ckpt = model.save_pretrained(tmp_path / "checkpoint", _processor(encoder_dir, model))
    smp = samples(tmp_path)
    code = (
        _readme_snippet()
        .replace("runs/demo/checkpoint", str(ckpt))
        .replace("photo.jpg", str(smp[0].image_path))
        .replace('"my_model"', repr(str(tmp_path / "my_model")))
    )
    out = io.StringIO()
    scope: dict[str, Any] = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    printed = out.getvalue()
    preds = scope["predictions"]
    assert len(preds) == 2 and preds[0].tokens == ["Kelvo", "visits", "Marn", "today"]
    assert str(preds[0].tags) in printed and str(preds[0].boxes) in printed
    # what the snippet saved loads back and predicts the same
    again = MnerqgModel.from_pretrained(tmp_path / "my_model")
    proc = MnerqgProcessor.from_pretrained(tmp_path / "my_model")
    assert again.predict(proc(smp)).spans == model.predict(proc(smp)).spans


def test_both_decoders_from_one_forward_pass_decode_as_each_alone(
    tmp_path: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnerqg_graph.decoding import Decoding
    from mnerqg_graph.pipeline import predict, predict_grid

    model = _model(encoder_dir, {"heads.tag_head": True})
    with torch.no_grad():
        model.tag_head.mlp[-1].bias[0] -= 5.0  # type: ignore[union-attr,index]
    inputs = _processor(encoder_dir, model)(samples(tmp_path))
    grid = [Decoding("span", t, e) for t in (0.1, 0.2, 0.4) for e in (0.0, 0.5)]
    grid += [Decoding("tags", 0.5, e) for e in (0.0, 0.5)]
    calls: list[float | None] = []
    forward = type(model).forward

    def counted(self: Any, batch: Any, *a: Any, **k: Any) -> Any:
        calls.append(k.get("span_floor"))
        return forward(self, batch, *a, **k)

    monkeypatch.setattr(type(model), "forward", counted)
    got = predict_grid(model, inputs, grid, batch_size=8)
    assert calls == [0.1]  # one batch, one forward pass, scored from the lowest span threshold
    assert sum(len(s) for s in got[grid[0]].spans) > 0 and got[grid[-2]].tags != got[grid[0]].tags
    for d in grid:
        alone = predict(model, inputs, decoding=d, batch_size=8)
        assert (alone.spans, alone.tags, alone.boxes) == (got[d].spans, got[d].tags, got[d].boxes)


def test_inputs_of_another_layout_are_refused(tmp_path: Path, encoder_dir: Path) -> None:
    from mnerqg_graph.errors import ConfigError
    from mnerqg_graph.model import build_model
    from mnerqg_graph.pipeline import predict
    from mnerqg_graph.processing import MnerqgProcessor
    from tests.helpers import samples, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(encoder_dir, {"encoder.query_encoding": "packed"})).eval()
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    proc = MnerqgProcessor.from_model(model, tok, load_queries())
    smp = samples(tmp_path)
    assert len(predict(model, proc.replace(image_size=None)(smp))) == len(smp)  # text-only: fine
    with pytest.raises(ConfigError, match="packed_separators"):
        model.predict(proc.replace(packed_separators=False)(smp))
