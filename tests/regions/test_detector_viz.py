"""Visualisations of a model on detector regions: boxes as region nodes, drawn as boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from mnerqg_graph.viz.alignment import explain, to_networkx
from mnerqg_graph.viz.artifacts import visualize_samples
from mnerqg_graph.viz.draw import graph_figure, heatmap_figure, load_picture
from tests.regions.helpers import TABLE, image_samples
from tests.regions.test_detector_model import detector_config


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory, encoder_dir: Path, detector_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.model import build_model
    from mnerqg_graph.processing import MnerqgProcessor

    tmp = tmp_path_factory.mktemp("dviz")
    torch.manual_seed(0)
    model = build_model(detector_config(encoder_dir, detector_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    processor = MnerqgProcessor.from_model(model, tok, load_queries())
    smp = image_samples(tmp)
    return model, processor, smp, explain(model, processor, smp)


def test_alignment_regions_are_the_detected_boxes(explained) -> None:  # type: ignore[no-untyped-def]
    _, _, _, expl = explained
    al = expl[2].alignments["PER"]  # the 4-box image (in a batch of 3 images: TABLE[2])
    kept = [r for r in TABLE[2] if r[1] >= 0.3]
    assert al.image_branch and al.has_image and al.grids == () and al.box_scales == 3
    assert al.scale_sizes() == [1, 2, 1]
    got = sorted(tuple(round(v, 4) for v in r.box) for r in al.regions)
    assert got == sorted(tuple(round(v, 4) for v in r[0]) for r in kept)
    assert all(r.row == -1 for r in al.regions)
    # every token-region edge of the example, onto this example's boxes
    assert al.num_edges == len(al.tokens) * len(kept)
    assert set(al.edge_region.tolist()) == set(range(len(kept)))
    g = to_networkx(al)
    assert sum(1 for _, d in g.nodes(data=True) if d["kind"] == "region") == len(kept)
    empty = expl[0].alignments["PER"]  # an image without boxes: image node, no region
    assert empty.has_image and empty.regions == [] and empty.num_edges == 0
    assert expl[3].alignments["PER"].has_image is False


def test_pictures_draw_the_boxes(explained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, processor, smp, expl = explained
    al = expl[2].alignments["PER"]
    picture = load_picture(expl[2].sample)
    fig = graph_figure(al, picture[0] if picture else None)
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(boxes) >= 3 + len(al.regions)  # one frame per scale, one rectangle per box
    heat = heatmap_figure(al, picture)
    assert sum(len(ax.patches) for ax in heat.axes) >= len(al.regions)
    paths = visualize_samples(model, processor, smp[2:3], tmp_path, top_k=5, types=["PER"])
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 3
    from PIL import Image

    for p in pngs:
        arr = np.asarray(Image.open(p).convert("RGB"))
        assert arr.std() > 0


def test_report_of_a_detector_region_model(explained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The HTML report runs (its page draws grid regions only: none for box regions)."""
    from mnerqg_graph.report import write_report

    model, processor, smp, _ = explained
    page = tmp_path / "report.html"
    write_report(page, model, processor, smp)
    assert page.stat().st_size > 0
