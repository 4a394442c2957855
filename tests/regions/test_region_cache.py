"""The region-feature cache: extraction CLI, round trip against the image side, stale entries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from detectors.region_cache import RegionCache, attach, main, open_for_model
from mnerqg_graph.data.collate import collate
from mnerqg_graph.data.dataset import load_split
from mnerqg_graph.data.queries import load_queries
from mnerqg_graph.data.synth import generate
from mnerqg_graph.errors import ConfigError, DataError
from mnerqg_graph.model import build_model
from mnerqg_graph.processing import MnerqgProcessor
from tests.helpers import tiny_config, write_image
from tests.regions.test_detector_model import detector_config

BACKBONE = {"width": 8, "out_channels": 16}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache") / "synth"
    generate(root, seed=5, n_train=10, n_valid=4, n_test=4, image_size=64)
    return root


def _extract(synth: Path, out: Path, *extra: str) -> Path:
    argv = ["--data", str(synth), "--out", str(out), "--backbone-kwargs", json.dumps(BACKBONE)]
    assert (
        main([*argv, "--image-size", "64", "--batch-size", "3", "--shard-size", "4", *extra]) == 0
    )
    return out


@pytest.fixture(scope="module")
def grid_cache(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _extract(synth, tmp_path_factory.mktemp("gc") / "regions", "--grid", "--no-progress")


def _items(model, encoder: Path, samples, cache: RegionCache | None):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(encoder))
    processor = MnerqgProcessor.from_model(model, tok, load_queries())
    if cache is not None:
        processor = processor.replace(image_size=None)
    items = processor(samples).items
    report = attach(cache, model, items, samples) if cache is not None else None
    return items, report


def _same_outputs(model, a, b) -> None:  # type: ignore[no-untyped-def]
    cfg = model.config
    out_a = model(collate(a, cfg.heads.max_span_len, cfg.image.image_size))
    out_b = model(collate(b, cfg.heads.max_span_len, cfg.image.image_size))
    for x, y in zip(out_a.span_logits, out_b.span_logits, strict=True):
        assert torch.allclose(x, y, atol=1e-5)
    assert torch.allclose(out_a.grounding_logits, out_b.grounding_logits, atol=1e-5)
    assert torch.allclose(out_a.grounding_boxes, out_b.grounding_boxes, atol=1e-5)


def test_grid_cache_round_trip_equals_the_image_side(
    synth: Path, grid_cache: Path, encoder_dir: Path
) -> None:
    meta = json.loads((grid_cache / "cache.json").read_text())
    shards = sorted(p.name for p in grid_cache.glob("shard-*.safetensors"))
    n = sum(
        s.image_path is not None
        for split in ("train", "valid", "test")
        for s in load_split(synth, split).samples
    )
    assert meta["regions"] == "grid" and meta["entries"] == n and len(shards) == -(-n // 4)
    samples = load_split(synth, "train").samples
    torch.manual_seed(1)  # another initialisation than the cache's backbone: it is adopted
    model = build_model(
        tiny_config(encoder_dir, {"image.backbone_kwargs": BACKBONE, "image.freeze_image": True})
    )
    model.eval()
    cache = open_for_model(grid_cache, model, adopt_backbone=True)
    cached, report = _items(model, encoder_dir, samples, cache)
    assert report is not None and report.read == sum(s.image_path is not None for s in samples)
    assert all(it.image is None for it in cached)
    fly, _ = _items(model, encoder_dir, samples, None)
    assert all(it.regions is None for it in fly)
    with torch.no_grad():
        _same_outputs(model, cached, fly)


def test_detector_cache_round_trip(
    synth: Path, tmp_path: Path, encoder_dir: Path, detector_dir: Path
) -> None:
    cache_dir = _extract(
        synth, tmp_path / "det_regions", "--detector", str(detector_dir), "--no-progress"
    )
    meta = json.loads((cache_dir / "cache.json").read_text())
    assert meta["regions"] == "detector" and meta["detector"]["sha256"]
    # every option of the region source, so that a model pooling otherwise is refused
    assert meta["region_kwargs"] == {
        "max_regions": 16,
        "score_threshold": 0.3,
        "num_classes": 4,
        "canonical_size": 0.25,
        "pool_size": 2,
        "sampling_ratio": 2,
    }
    samples = load_split(synth, "valid").samples
    model = build_model(
        detector_config(
            encoder_dir,
            detector_dir,
            {"image.backbone_kwargs": BACKBONE, "image.freeze_image": True},
        )
    ).eval()
    cache = open_for_model(cache_dir, model, adopt_backbone=True)
    # the fixed detector gives the i-th image of a batch TABLE[i % 3]: batches of 3 images here
    cached, _ = _items(model, encoder_dir, samples, cache)
    fly, _ = _items(model, encoder_dir, samples, None)
    assert [it.regions["s2.boxes"].shape[0] for it in cached if it.regions] == [0, 0, 2, 0]
    with torch.no_grad():
        cfg = model.config
        a = model(collate(cached[:3], cfg.heads.max_span_len, cfg.image.image_size))
        b = model(collate(fly[:3], cfg.heads.max_span_len, cfg.image.image_size))
    assert a.grounding_mask is not None and b.grounding_mask is not None
    assert torch.equal(a.grounding_mask, b.grounding_mask)
    assert torch.allclose(a.grounding_logits, b.grounding_logits, atol=1e-5)  # type: ignore[arg-type]


def test_stale_entries_are_refused_with_their_imgid(
    synth: Path, grid_cache: Path, tmp_path: Path, encoder_dir: Path
) -> None:
    samples = load_split(synth, "train").samples
    # another backbone: weights given in the config are kept, and no entry fits them
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    torch.manual_seed(7)
    donor = build_model(tiny_config(encoder_dir, {"image.backbone_kwargs": BACKBONE}))
    assert donor.backbone is not None
    save_file({k: v.clone() for k, v in donor.backbone.state_dict().items()}, str(other))
    model = build_model(
        tiny_config(
            encoder_dir,
            {
                "image.backbone_kwargs": {**BACKBONE, "weights": str(other)},
                "image.freeze_image": True,
            },
        )
    )
    cache = open_for_model(grid_cache, model)
    first = next(s.tweet.id for s in samples if s.image_path is not None)
    with pytest.raises(DataError, match=rf"IMGID:{first} was made from another backbone"):
        _items(model, encoder_dir, samples, cache)
    # an image that changed since the extraction
    copy = tmp_path / "synth"
    shutil.copytree(synth, copy)
    changed = load_split(copy, "train").samples
    victim = [s for s in changed if s.image_path is not None][2]
    assert victim.image_path is not None
    write_image(victim.image_path, seed=99, size=64)
    model = build_model(
        tiny_config(encoder_dir, {"image.backbone_kwargs": BACKBONE, "image.freeze_image": True})
    )
    cache = open_for_model(grid_cache, model, adopt_backbone=True)
    with pytest.raises(DataError, match=rf"IMGID:{victim.tweet.id} was made from another version"):
        _items(model, encoder_dir, changed, cache)


def test_a_model_keeps_its_backbone_unless_it_adopts_the_caches(
    synth: Path, grid_cache: Path, encoder_dir: Path
) -> None:
    torch.manual_seed(5)  # a model whose backbone is not the cache's (say, a trained one)
    model = build_model(
        tiny_config(encoder_dir, {"image.backbone_kwargs": BACKBONE, "image.freeze_image": True})
    )
    assert model.backbone is not None
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    cache = open_for_model(grid_cache, model)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    samples = load_split(synth, "train").samples
    with pytest.raises(DataError, match="was made from another backbone"):
        _items(model, encoder_dir, samples, cache)
    open_for_model(grid_cache, model, adopt_backbone=True)
    assert not all(torch.equal(before[k], model.backbone.state_dict()[k]) for k in before)


def test_missing_entries_run_text_only_and_are_counted(
    synth: Path, tmp_path: Path, encoder_dir: Path
) -> None:
    only_train = _extract(synth, tmp_path / "train_only", "--grid", "--splits", "train")
    model = build_model(
        tiny_config(encoder_dir, {"image.backbone_kwargs": BACKBONE, "image.freeze_image": True})
    )
    cache = open_for_model(only_train, model)
    test = load_split(synth, "test").samples
    items, report = _items(model, encoder_dir, test, cache)
    with_image = [s.tweet.id for s in test if s.image_path is not None]
    assert report is not None and report.read == 0 and report.missing == with_image
    assert all(it.image is None and it.regions is None for it in items)
    batch = collate(items, model.config.heads.max_span_len, model.config.image.image_size)
    assert not batch.has_image.any()


def test_a_cache_of_another_configuration_is_refused(grid_cache: Path, encoder_dir: Path) -> None:
    model = build_model(
        tiny_config(encoder_dir, {"image.backbone_kwargs": BACKBONE, "image.image_size": 32})
    )
    with pytest.raises(ConfigError, match="image_size=64.*image_size=32"):
        open_for_model(grid_cache, model)
    model = build_model(
        tiny_config(encoder_dir, {"image.backbone_kwargs": {"width": 4, "out_channels": 16}})
    )
    with pytest.raises(ConfigError, match="backbone_kwargs"):
        open_for_model(grid_cache, model)
    with pytest.raises(DataError, match="not a region cache"):
        RegionCache.open(grid_cache.parent)


def test_bad_outputs_and_inputs_are_one_line_errors(
    synth: Path, grid_cache: Path, tmp_path: Path
) -> None:
    """Bad outputs and inputs of the cache are one-line errors, and nothing is deleted.

    What a reviewer found: a user's folder as ``--out`` was deleted; a misspelled split, a zero
    batch size and a corrupt shard were tracebacks.
    """
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("my notes")
    argv = ["--data", str(synth), "--grid", "--no-progress", "--image-size", "64"]
    with pytest.raises(ConfigError, match="no cache.json in it"):
        main([*argv, "--out", str(precious)])
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="unknown split 'tset'"):
        main([*argv, "--out", str(tmp_path / "c1"), "--splits", "train,tset"])
    for flag in ("--batch-size", "--shard-size", "--image-size"):
        with pytest.raises(ConfigError, match=f"{flag[2:].replace('-', '_')} must be an integer"):
            main([*argv, "--out", str(tmp_path / "c2"), flag, "0"])
    with pytest.raises(ConfigError, match="--max-regions only apply with --detector"):
        main([*argv, "--out", str(tmp_path / "c3"), "--max-regions", "4"])  # ignored by a grid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # nothing half-written
    broken = tmp_path / "broken"
    shutil.copytree(grid_cache, broken)
    shard = sorted(broken.glob("shard-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match="unreadable region cache shard"):
        RegionCache.open(broken)
