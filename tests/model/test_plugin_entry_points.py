"""Plugins without ``--plugin``: entry points of installed packages, modules a checkpoint records.

The end-to-end test installs a plugin the way pip would (a module and a real ``.dist-info`` folder
with ``entry_points.txt`` in a folder on ``sys.path``), trains the ``fast`` experiment with its
fusion module in a subprocess, and predicts with the checkpoint in another, with no ``--plugin``
anywhere; then, the package uninstalled (its ``.dist-info`` removed), the module the checkpoint
recorded is still imported by loading it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnerqg_graph import plugins
from mnerqg_graph.config import DecodingConfig, ModelConfig
from mnerqg_graph.errors import CheckpointError, ConfigError
from mnerqg_graph.fusion import FUSION_REGISTRY
from mnerqg_graph.model import build_model
from mnerqg_graph.registry import Registry, plugins_of
from tests.helpers import decoder_plugin, tiny_config
from tests.model.test_plugin import PLUGIN

REPO = Path(__file__).resolve().parents[2]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _plugin_source(fusion: str) -> str:
    return PLUGIN.replace('@register_fusion("my_fusion")', f'@register_fusion("{fusion}")')


def install(site: Path, module: str, fusion: str, dist: str = "mnerqg-ep-plugin") -> Path:
    """Write ``module.py`` and a ``.dist-info`` whose entry point declares it; return the latter."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(_plugin_source(fusion), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[{plugins.ENTRY_POINT_GROUP}]\n{fusion} = {module}\n", encoding="utf-8"
    )
    return info


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registry, loaded entry points and file plugins are restored after the test."""
    monkeypatch.setattr(FUSION_REGISTRY, "_table", dict(FUSION_REGISTRY._table))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    monkeypatch.setattr(plugins, "_ENTRY_POINT_FAILURES", [])
    monkeypatch.setattr(plugins, "_FILE_PLUGINS", dict(plugins._FILE_PLUGINS))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("ep_", "file_")):
            del sys.modules[name]


def _python(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    # the timeout only stops a hang: a loaded machine may take minutes for the tiny training
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200
    )


def test_entry_point_plugin_trains_and_its_checkpoint_predicts_without_flag(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    info = install(site, "mnerqg_ep_plugin", "ep_fusion")
    out = tmp_path / "out"
    train = _python(
        ["-m", "experiments.train", "-u", "with", "fast", "model.fusion.name=ep_fusion",
         f"data.root={tmp_path / 'synth'}", f"output_dir={out}", "save_artifacts=False"],
        site,
        tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    config = json.loads((out / "checkpoint" / "config.json").read_text(encoding="utf-8"))
    assert config["fusion"]["name"] == "ep_fusion"
    assert config["plugins"] == ["mnerqg_ep_plugin"]  # recorded: the module, not the flag

    predict = ["-m", "mnerqg_graph", "predict", "--checkpoint", str(out / "checkpoint"),
               "--text", "Kelvo visits Marn", "--device", "cpu"]  # fmt: skip
    found = _python(predict, site, tmp_path)
    assert found.returncode == 0, found.stderr[-3000:]
    assert json.loads(found.stdout.splitlines()[0])["tokens"] == ["Kelvo", "visits", "Marn"]

    for f in info.iterdir():  # uninstalled: no entry point now, the recorded module still loads
        f.unlink()
    info.rmdir()
    recorded = _python(predict, site, tmp_path)
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    assert recorded.stdout == found.stdout

    (site / "mnerqg_ep_plugin.py").unlink()  # gone altogether: one line saying what is missing
    missing = _python(predict, site, tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "needs plugin 'mnerqg_ep_plugin', which cannot be imported" in missing.stderr


def test_registry_looks_at_entry_points_for_an_unknown_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: None
) -> None:
    site = tmp_path / "site"
    install(site, "ep_good", "ep_good_fusion", dist="good-plugin")
    (site / "ep_broken.py").write_text("raise RuntimeError('boom at import')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    real = importlib.metadata.entry_points

    def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        broken = importlib.metadata.EntryPoint("ep_broken", "ep_broken", group)
        return [*real(group=group), broken]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert "ep_good_fusion" not in FUSION_REGISTRY._table  # nothing imported yet
    assert FUSION_REGISTRY.get("ep_good_fusion").__module__ == "ep_good"
    with pytest.raises(ConfigError) as err:
        FUSION_REGISTRY.get("no_such_fusion")
    message = str(err.value)
    assert "unknown fusion module 'no_such_fusion'" in message and "ep_good_fusion" in message
    assert "ep_broken = ep_broken (?): boom at import" in message  # the broken one is named
    assert "\n" not in message


def test_file_plugin_is_recorded_by_path_and_reimported_on_load(
    tmp_path: Path, encoder_dir: Path, clean_registry: None
) -> None:
    from transformers import AutoTokenizer

    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.training.checkpoint import load_model, save_model

    plugin = tmp_path / "file_fusion.py"
    plugin.write_text(_plugin_source("file_fusion"), encoding="utf-8")
    plugins.load_plugin(str(plugin))  # what `mnerqg --plugin file_fusion.py train ...` does
    plugins.load_plugin(str(plugin))  # a second import of the same file is a no-op
    torch.manual_seed(0)
    cfg = tiny_config(encoder_dir, {"fusion.name": "file_fusion"})
    model = build_model(cfg).eval()
    ckpt = save_model(
        model, cfg, load_queries(), AutoTokenizer.from_pretrained(str(encoder_dir)), tmp_path / "c"
    )
    saved = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    assert saved["plugins"] == [str(plugin.resolve())]

    del FUSION_REGISTRY._table["file_fusion"]  # as in a new process
    del sys.modules["file_fusion"]
    plugins._FILE_PLUGINS.pop("file_fusion")
    loaded, config, _, _ = load_model(ckpt)
    assert type(loaded.fusion).__name__ == "MyFusion" and config.fusion.name == "file_fusion"
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name

    plugin.unlink()
    del FUSION_REGISTRY._table["file_fusion"]
    del sys.modules["file_fusion"]
    plugins._FILE_PLUGINS.pop("file_fusion")
    with pytest.raises(CheckpointError, match="needs plugin .*file_fusion.py.*plugin file not"):
        load_model(ckpt)


def test_built_in_components_record_no_plugin(encoder_dir: Path) -> None:
    cfg = tiny_config(encoder_dir)
    assert plugins_of(cfg, build_model(cfg)) == []
    assert "plugins" not in cfg.to_dict()  # config.json as before: earlier versions read it
    cfg.plugins = ["json"]  # named by the user: kept, first
    assert plugins_of(cfg) == ["json"]


def test_a_plugin_component_named_inside_a_config_section_is_recorded(tmp_path: Path) -> None:
    """A registered name in a nested section (``decoding.decoder``) names its plugin too."""
    name, plugin = decoder_plugin(tmp_path)
    plugins.load_plugin(str(plugin))
    try:
        cfg = ModelConfig(types=["PER"], decoding=DecodingConfig(decoder=name))
        assert cfg.plugins == [] and plugins_of(cfg) == [str(plugin.resolve())]
    finally:
        from mnerqg_graph.decoding import DECODER_REGISTRY

        del DECODER_REGISTRY._table[name]
        sys.modules.pop(name, None)
        plugins._FILE_PLUGINS.pop(name, None)


def test_an_option_the_builder_does_not_take_is_one_line() -> None:
    registry: Registry[object] = Registry("widget", object)

    @registry.register("knob")
    class Knob:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert registry.build("knob", size=3).size == 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"widget 'knob' takes no option \['heads'\]; its op"):
        registry.build("knob", heads=4)
