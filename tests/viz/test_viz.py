"""Alignment data, pictures, graph files and the ``mnerqg visualize`` command on a tiny model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from mnerqg_graph.data.types import Sample
from mnerqg_graph.processing import MnerqgProcessor
from mnerqg_graph.viz.alignment import (
    TweetExplanation,
    explain,
    graph_layout,
    to_networkx,
    write_graph,
)
from mnerqg_graph.viz.artifacts import visualize_samples
from mnerqg_graph.viz.draw import (
    boxes_figure,
    draw_graph,
    graph_figure,
    load_picture,
    select_edges,
)
from tests.helpers import items_and_batch, samples, tiny_config, tiny_encoder


@dataclass
class Setup:
    tmp: Path
    encoder: Path
    model: Any
    tokenizer: Any
    queries: dict[str, str]
    samples: list[Sample]
    explained: list[TweetExplanation]


# tiny tensors: one intra-op thread (OpenMP threads spin badly on a shared, busy CPU)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Setup:
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model

    tmp = tmp_path_factory.mktemp("viz")
    enc = tiny_encoder(tmp)
    torch.manual_seed(0)
    model = build_model(tiny_config(enc)).eval()
    tok = AutoTokenizer.from_pretrained(str(enc))
    queries = load_queries()
    smp = samples(tmp)
    return Setup(
        tmp,
        enc,
        model,
        tok,
        queries,
        smp,
        explain(model, MnerqgProcessor.from_model(model, tok, queries), smp),
    )


def _proc(model: Any, setup: Setup) -> MnerqgProcessor:
    """The processor that reads as ``model`` does, with the setup's tokenizer and queries."""
    return MnerqgProcessor.from_model(model, setup.tokenizer, setup.queries)


def _png_ok(path: Path) -> np.ndarray:
    """The PNG decodes and is not blank: pixel variance > 0 and more than one colour."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.ndim == 3 and arr.shape[0] > 50 and arr.shape[1] > 50
    assert arr.var() > 0
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 1
    return arr


def _texts(fig: Figure) -> list[str]:
    out = [t.get_text() for ax in fig.axes for t in ax.texts]
    return out + [t.get_text() for t in fig.texts]


def _direct_attention(setup: Setup, row: int) -> dict[tuple[int, int, int], float]:
    """(token position, scale, cell) -> weight of example ``row``, from a direct model call.

    Node ids are mapped back without the visualiser's code: token nodes are the ``first_piece >= 0``
    entries in (example, position) order, region nodes ``n_cells`` per image example.
    """
    _, batch = items_and_batch(setup.samples, setup.encoder, setup.model.config)
    with torch.no_grad():
        out = setup.model(batch, return_attention=True)
    tokens = (batch.first_piece >= 0).nonzero().tolist()  # [(example, position)]
    img_ex = batch.has_image[batch.example_tweet].nonzero(as_tuple=True)[0].tolist()
    got: dict[tuple[int, int, int], float] = {}
    for level, (rows, cols) in enumerate(setup.model.spec.grids):
        n_cells = rows * cols
        ei, w = out.attention[(f"region_s{level + 1}", "cross", "token")]
        for r, t, v in zip(ei[0].tolist(), ei[1].tolist(), w.tolist(), strict=True):
            ex, p = tokens[t]
            assert img_ex[r // n_cells] == ex  # edges stay inside their example
            if ex == row:
                got[(p, level + 1, r % n_cells)] = v
    return got


def _direct_query_attention(setup: Setup, row: int) -> dict[int, float]:
    """Token position -> the query's attention weight in example ``row``, by a direct model call."""
    _, batch = items_and_batch(setup.samples, setup.encoder, setup.model.config)
    with torch.no_grad():
        out = setup.model(batch, return_attention=True)
    tokens = (batch.first_piece >= 0).nonzero().tolist()  # [(example, position)]
    ei, w = out.attention[("token", "cross", "query")]
    got: dict[int, float] = {}
    for t, q, v in zip(ei[0].tolist(), ei[1].tolist(), w.tolist(), strict=True):
        ex, p = tokens[t]
        assert ex == q  # a token hangs on its own example's query node
        if ex == row:
            got[p] = v
    return got


def test_graphml_nodes_edges_and_weights_match_the_model(setup: Setup, tmp_path: Path) -> None:
    t1 = setup.explained[0]
    al = t1.alignments["PER"]
    graphml, js = write_graph(al, tmp_path)
    g = nx.read_graphml(graphml)
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    _, batch = items_and_batch(setup.samples[:1], setup.encoder, setup.model.config)
    n_tok = int((batch.first_piece[0] >= 0).sum())  # tokens with word pieces (U+FE0F has none)
    n_cells = sum(r * c for r, c in setup.model.spec.grids)
    assert n_tok == 4 and n_cells == 4 + 16 + 64
    assert kinds.count("token") == n_tok
    assert kinds.count("region") == n_cells
    assert kinds.count("query") == 1 and kinds.count("image") == 1
    assert n_tok * n_cells == al.num_edges
    assert g.number_of_edges() == n_tok * n_cells + n_tok  # region -> token, token -> query
    # every edge weight is the model's attention value for this input (example 0 = t1, PER)
    direct = _direct_attention(setup, row=0)
    direct_query = _direct_query_attention(setup, row=0)
    from_file, from_file_query = {}, {}
    for u, v, d in g.edges(data=True):
        if d["kind"] == "query":
            assert g.nodes[u]["kind"] == "token" and v == "query" and "scale" not in d
            from_file_query[int(g.nodes[u]["position"])] = d["weight"]
            continue
        assert d["kind"] == "region"
        assert g.nodes[u]["kind"] == "region" and g.nodes[v]["kind"] == "token"
        key = (int(g.nodes[v]["position"]), int(g.nodes[u]["scale"]), int(g.nodes[u]["cell"]))
        assert d["scale"] == key[1]
        from_file[key] = d["weight"]
    assert set(from_file) == set(direct)
    np.testing.assert_allclose(
        [from_file[k] for k in sorted(direct)],
        [direct[k] for k in sorted(direct)],
        rtol=0,
        atol=1e-6,
    )
    # the query-token edges: the query's attention over its tokens (one GATv2 softmax: sum 1)
    assert sorted(from_file_query) == sorted(direct_query) == al.query_token.tolist()
    np.testing.assert_allclose(
        [from_file_query[k] for k in sorted(direct_query)],
        [direct_query[k] for k in sorted(direct_query)],
        rtol=0,
        atol=1e-6,
    )
    np.testing.assert_allclose(al.query_weight, [direct_query[k] for k in sorted(direct_query)],
                               rtol=0, atol=1e-6)  # fmt: skip
    assert sum(from_file_query.values()) == pytest.approx(1.0, abs=1e-5)
    # region attributes and the node-link JSON copy
    node = g.nodes["region_s2:5"]
    assert (node["row"], node["col"]) == (1, 1)
    assert json.loads(node["box"]) == [0.25, 0.25, 0.5, 0.5]
    assert g.nodes["token:0"]["text"] == "Kelvo" and g.nodes["token:0"]["pieces"]
    data = json.loads(js.read_text(encoding="utf-8"))
    g2 = nx.node_link_graph(data, edges="edges")
    assert g2.number_of_nodes() == g.number_of_nodes()
    assert g2.number_of_edges() == g.number_of_edges()
    assert sorted(d["kind"] for _, _, d in g2.edges(data=True)) == sorted(
        d["kind"] for _, _, d in g.edges(data=True)
    )
    assert g2.nodes["region_s2:5"]["box"] == [0.25, 0.25, 0.5, 0.5]


def test_token_order_is_kept_in_the_layout(setup: Setup, tmp_path: Path) -> None:
    al = setup.explained[1].alignments["ORG"]  # t2: "so much about Zed Corp !"
    pos = graph_layout(al)
    ys = [pos[t.node_id][1] for t in al.tokens]
    xs = {pos[t.node_id][0] for t in al.tokens}
    assert [t.position for t in al.tokens] == list(range(6))
    assert all(a < b for a, b in zip(ys, ys[1:], strict=False)) and len(xs) == 1
    # the written graph carries the same positions
    g = nx.read_graphml(write_graph(al, tmp_path)[0])
    toks = sorted(
        (d for _, d in g.nodes(data=True) if d["kind"] == "token"), key=lambda d: d["position"]
    )
    assert [d["text"] for d in toks] == ["so", "much", "about", "Zed", "Corp", "!"]
    assert all(a["y"] < b["y"] for a, b in zip(toks, toks[1:], strict=False))
    # region cells are laid out by grid position: left to right, top to bottom, per scale
    al1 = setup.explained[0].alignments["ORG"]
    p1 = graph_layout(al1)
    assert (
        p1["region_s1:0"][0] < p1["region_s1:1"][0] and p1["region_s1:0"][1] < p1["region_s1:2"][1]
    )
    assert p1["region_s1:3"][1] < p1["region_s2:0"][1] < p1["region_s3:0"][1]


def test_edge_selection_top_k_per_scale_and_threshold(setup: Setup) -> None:
    al = setup.explained[0].alignments["PER"]
    scale = np.array([r.scale for r in al.regions])[al.edge_region]
    top = select_edges(al, top_k=3)
    assert len(top) == 9 and all((scale[top] == s).sum() == 3 for s in (1, 2, 3))
    for s in (1, 2, 3):  # the 3 kept are the strongest of their scale
        kept = al.edge_weight[top[scale[top] == s]]
        rest = np.delete(al.edge_weight, top)[np.delete(scale, top) == s]
        assert kept.min() >= rest.max()
    thr = float(np.median(al.edge_weight))
    sel = select_edges(al, top_k=None, threshold=thr)
    assert len(sel) == int((al.edge_weight >= thr).sum())
    assert np.all(np.diff(al.edge_weight[sel]) <= 0)  # strongest first


def test_pictures_decode_and_are_not_blank(setup: Setup, tmp_path: Path) -> None:
    paths = visualize_samples(
        setup.model,
        _proc(setup.model, setup),
        setup.samples[:1],
        tmp_path,
        top_k=5,
        types=["PER"],
    )
    names = sorted(p.name for p in paths)
    assert names == [
        "alignment_PER.graphml",
        "alignment_PER.json",
        "boxes.png",
        "graph_PER.png",
        "heatmap_PER.png",
    ]
    assert {p.parent for p in paths} == {tmp_path / "t1"}
    for p in paths:
        if p.suffix == ".png":
            _png_ok(p)
    # the boxes picture shows prediction and gold (t1 has a gold PER box) side by side
    expl = setup.explained[0]
    fig = boxes_figure(expl, load_picture(expl.sample))
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2
    assert any(t.startswith("PER Kelvo") for t in _texts(fig))


def test_no_image_draws_the_text_side_and_a_placeholder(setup: Setup, tmp_path: Path) -> None:
    expl = setup.explained[1]  # t2 has no image
    assert expl.sample.image_path is None
    al = expl.alignments["PER"]
    assert not al.has_image and al.regions == [] and al.num_edges == 0
    assert "no image" in al.note()
    g = nx.read_graphml(write_graph(al, tmp_path)[0])
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    assert kinds.count("token") == 6 and "region" not in kinds
    # only the query's attention over the tokens: the graph is not empty
    assert g.number_of_edges() == 6
    assert all(d["kind"] == "query" and v == "query" for _, v, d in g.edges(data=True))
    assert sum(d["weight"] for _, _, d in g.edges(data=True)) == pytest.approx(1.0, abs=1e-5)
    compact = draw_graph(al, tmp_path / "graph.png", compact=True)
    _png_ok(compact)
    with Image.open(compact) as im:
        assert im.mode == "P"  # 256-colour palette
    assert "no image" in _texts(graph_figure(al))
    fig = boxes_figure(expl, load_picture(expl.sample))
    assert "no image" in _texts(fig)
    paths = visualize_samples(
        setup.model, _proc(setup.model, setup), [expl.sample], tmp_path / "out", types=["PER"]
    )
    _png_ok(next(p for p in paths if p.name == "boxes.png"))


def _fusions_with_image() -> list[str]:
    from mnerqg_graph.fusion import FUSION_REGISTRY

    return [
        n for n in FUSION_REGISTRY.names() if getattr(FUSION_REGISTRY.get(n), "uses_image", True)
    ]


@pytest.mark.parametrize("fusion", _fusions_with_image())
def test_every_fusion_with_attention_gives_complete_weighted_graphs(
    setup: Setup, fusion: str
) -> None:
    from mnerqg_graph.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config(setup.encoder, {"fusion.name": fusion}), weights=False).eval()
    expl = explain(model, _proc(model, setup), setup.samples[:2])
    al = expl[0].alignments["LOC"]
    assert al.attention and not al.note()
    g = to_networkx(al)
    assert g.number_of_edges() == 4 * 84 + 4 and al.num_edges == 4 * 84
    assert np.isfinite(al.edge_weight).all() and (al.edge_weight >= 0).all()
    assert al.query_token.tolist() == [0, 1, 2, 3] and al.query_weight.shape == (4,)
    assert np.isfinite(al.query_weight).all() and (al.query_weight > 0).all()
    assert al.query_weight.sum() <= 1 + 1e-5  # 1 per relation; less where image nodes share
    t2 = expl[1].alignments["LOC"]
    assert not t2.num_edges and t2.query_weight.size == len(t2.tokens) > 0  # t2 has no image
    assert {d["kind"] for _, _, d in to_networkx(t2).edges(data=True)} == {"query"}
    # spans stay on token nodes (t1's 5th token, U+FE0F, has no word piece)
    assert all(0 <= a < b <= 4 for a, b, _, _ in al.entities)


def test_text_only_model_says_it_has_no_attention(setup: Setup, tmp_path: Path) -> None:
    from mnerqg_graph.model import build_model

    torch.manual_seed(0)
    model = build_model(
        tiny_config(setup.encoder, {"fusion.name": "none", "image.use_image": False})
    ).eval()
    [expl] = explain(model, _proc(model, setup), setup.samples[:1])
    al = expl.alignments["LOC"]
    assert not al.image_branch and al.num_edges == 0 and "no image branch" in al.note()
    g = nx.read_graphml(write_graph(al, tmp_path)[0])
    assert sorted({d["kind"] for _, d in g.nodes(data=True)}) == ["query", "token"]
    assert g.graph["attention"] is False
    assert al.query_weight.size == 0 and g.number_of_edges() == 0  # no attention, no edge
    fig = graph_figure(al)
    assert any("fusion 'none' has no image branch" in t for t in [fig.get_suptitle()])
    _png_ok(draw_graph(al, tmp_path / "graph.png"))


def test_cli_end_to_end(setup: Setup, tmp_path: Path) -> None:
    from mnerqg_graph.data.conll import write_conll
    from mnerqg_graph.data.voc import VocAnnotation, VocObject, write_voc
    from mnerqg_graph.training.checkpoint import save_model
    from mnerqg_graph.viz.cli import main

    ckpt = save_model(
        setup.model, setup.model.config, setup.queries, setup.tokenizer, tmp_path / "ckpt"
    )
    t1, t2 = setup.samples[0], setup.samples[1]
    # a JSON-lines file, as `mnerqg predict --input` reads it
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "t2", "tokens": t2.tweet.tokens},
                {"id": "t1", "tokens": t1.tweet.tokens, "image": str(t1.image_path)},
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--input",
                str(jsonl),
                "--ids",
                "t1",
                "--out",
                str(out),
                "--types",
                "PER",
                "--top-k",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "t1").iterdir()) == [
        "alignment_PER.graphml",
        "alignment_PER.json",
        "boxes.png",
        "graph_PER.png",
        "heatmap_PER.png",
    ]
    assert not (out / "t2").exists()
    g = nx.read_graphml(out / "t1" / "alignment_PER.graphml")
    assert g.number_of_edges() == 4 * 84 + 4
    kinds = [d["kind"] for _, _, d in g.edges(data=True)]
    assert kinds.count("region") == 4 * 84 and kinds.count("query") == 4
    # --text without an image
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--text",
                "Kelvo visits Marn",
                "--out",
                str(out),
                "--types",
                "LOC",
                "--threshold",
                "0.1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    _png_ok(out / "text" / "boxes.png")
    # a data-set folder: its gold boxes are drawn
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "boxes").mkdir()
    write_conll(root / "test.txt", [t1.tweet, t2.tweet])
    assert t1.image_path is not None
    (root / "images" / "t1.jpg").write_bytes(t1.image_path.read_bytes())
    write_voc(
        root / "boxes" / "t1.xml",
        VocAnnotation(
            "t1.jpg", 80, 80, [VocObject("Kelvo", box) for box in t1.boxes_of_type("PER")]
        ),
    )

    def visualize(ids: str, out: str, *options: str) -> int:
        argv = ["--checkpoint", str(ckpt), "--input", str(root), "--ids", ids]
        return main([*argv, "--out", str(tmp_path / out), *options])

    assert visualize("t1,t2", "ds_out", "--types", "PER", "--device", "cpu") == 0
    _png_ok(tmp_path / "ds_out" / "t1" / "boxes.png")
    assert (tmp_path / "ds_out" / "t2" / "graph_PER.png").is_file()
    from mnerqg_graph.errors import DataError

    with pytest.raises(DataError, match="nope"):
        visualize("nope", "x")


def test_packed_queries_explain_every_type_with_the_tweet_pieces(setup: Setup) -> None:
    from mnerqg_graph.model import build_model

    torch.manual_seed(0)
    cfg = tiny_config(setup.encoder, {"encoder.query_encoding": "packed"})
    model = build_model(cfg, weights=False).eval()
    expl = explain(model, _proc(model, setup), setup.samples[:2])
    per_type = setup.explained[0].alignments
    for typ, al in expl[0].alignments.items():
        # the same token nodes and word pieces as per_type: only the sequence around them differs
        assert [t.pieces for t in al.tokens] == [t.pieces for t in per_type[typ].tokens]
        assert al.attention and al.num_edges == per_type[typ].num_edges


@pytest.mark.parametrize("model_kind", ["image", "text_only_gat", "none"])
def test_query_token_edges_carry_attention_and_span_probabilities(
    setup: Setup, model_kind: str, tmp_path: Path
) -> None:
    """Every token node hangs on its query node, text-only tweets and models included.

    The edge weighs the query's attention over the token (no edge without attention); the span
    heads' probabilities ride along.
    """
    from mnerqg_graph.model import build_model

    torch.manual_seed(0)
    cfg = {
        "image": tiny_config(setup.encoder),
        "text_only_gat": tiny_config(setup.encoder, {"image.use_image": False}),
        "none": tiny_config(setup.encoder, {"fusion.name": "none", "image.use_image": False}),
    }[model_kind]
    model = build_model(cfg).eval()
    expl = explain(model, _proc(model, setup), setup.samples)
    _, batch = items_and_batch(setup.samples, setup.encoder, cfg)
    with torch.no_grad():
        out = model(batch, return_attention=True)
    p_start = torch.sigmoid(out.span_logits[0])
    p_end = torch.sigmoid(out.span_logits[1])
    tokens = (batch.first_piece >= 0).nonzero().tolist()  # [(example, position)]
    direct: dict[tuple[int, int], float] = {}
    if model_kind != "none":
        ei, w = out.attention[("token", "cross", "query")]
        for t, v in zip(ei[0].tolist(), w.tolist(), strict=True):
            direct[(tokens[t][0], tokens[t][1])] = v
    row = 0
    for e in expl:
        for t, al in e.alignments.items():
            positions = [tok.position for tok in al.tokens]
            assert al.query_token.tolist() == positions and positions, (e.tweet_id, t)
            np.testing.assert_allclose(al.token_start, p_start[row, positions], atol=1e-6)
            np.testing.assert_allclose(al.token_end, p_end[row, positions], atol=1e-6)
            g = to_networkx(al)
            q_edges = {u: d for u, v, d in g.edges(data=True) if d["kind"] == "query"}
            if model_kind == "none":
                assert al.query_weight.size == 0 and not q_edges and not al.attention
            else:
                want = [direct[(row, p)] for p in positions]
                np.testing.assert_allclose(al.query_weight, want, rtol=0, atol=1e-6)
                assert al.attention and sorted(q_edges) == sorted(f"token:{p}" for p in positions)
                for p, wt in zip(positions, want, strict=True):
                    assert q_edges[f"token:{p}"]["weight"] == pytest.approx(wt, abs=1e-6)
                if model_kind == "text_only_gat":  # one GATv2 softmax per relation
                    assert al.query_weight.sum() == pytest.approx(1.0, abs=1e-5)
                    assert {d["kind"] for _, _, d in g.edges(data=True)} == {"query"}
            row += 1
    assert row == batch.first_piece.size(0)


def test_explain_runs_at_predicts_precision(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward pass of explain runs under the pipeline's inference precision (bf16 on CUDA).

    Forced to bf16 on the CPU here, the model runs under autocast, and the explanation (attention
    weights, span probabilities) still converts to NumPy.
    """
    from mnerqg_graph import pipeline

    seen: list[bool] = []
    hook = setup.model.register_forward_pre_hook(
        lambda _m, _a: seen.append(torch.is_autocast_enabled("cpu"))
    )
    proc = _proc(setup.model, setup)
    try:
        explain(setup.model, proc, setup.samples[:2])
        assert seen and not any(seen)  # float32 on the CPU by default
        seen.clear()
        forced = pipeline.inference_precision
        monkeypatch.setattr(pipeline, "inference_precision", lambda d: forced(d, bf16=True))
        expl = explain(setup.model, proc, setup.samples[:2])
    finally:
        hook.remove()
    assert seen and all(seen)
    assert all(al.edge_weight.dtype == np.float32 for e in expl for al in e.alignments.values())


def test_pictures_are_drawn_as_the_model_reads_them(tmp_path: Path) -> None:
    """Transparency on white and 16-bit images scaled, in ``visualize`` and ``report`` alike.

    Both converted with PIL's plain ``convert("RGB")``: transparent areas came out black and a
    16-bit image almost white, unlike the picture the model read (one decoder now:
    ``data.images.read_rgb``).
    """
    import base64
    import io

    from mnerqg_graph.data.images import load_image
    from mnerqg_graph.data.types import Tweet
    from mnerqg_graph.report.data import encode_image
    from mnerqg_graph.viz.draw import load_picture

    clear = tmp_path / "clear.png"
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(clear)
    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((30, 40), 32768, dtype=np.uint16)).save(wide)
    for path, value in ((clear, 255), (wide, 128)):
        sample = Sample(Tweet("t", ["a"], ["O"]), path, (40, 30))
        picture = load_picture(sample, max_side=64)
        assert picture is not None and picture[1] == (40, 30)
        assert abs(float(picture[0].mean()) - value) <= 1, path.name
        assert abs(float(load_image(path, 8).mean()) * 255 - value) <= 1  # what the model reads
        uri, size = encode_image(sample, 32)
        assert uri is not None and size == [40, 30]
        jpeg = base64.b64decode(uri.split(",", 1)[1])
        assert abs(float(np.asarray(Image.open(io.BytesIO(jpeg))).mean()) - value) <= 2
