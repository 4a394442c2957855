"""Packaging metadata: pyproject.toml, environment.yml, the Makefile and CI agree."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONDA_EXTRAS = ("vision", "minilm", "dev")  # the extras environment.yml installs
#: Requirements environment.yml takes from conda-forge instead of pip: seqeval is an sdist on PyPI
#: whose setup_requires fetches the newest setuptools_scm, which cannot build it any more.
FROM_CONDA = ("seqeval",)


def load_pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def _scalar(text: str) -> str:
    """A YAML plain or quoted scalar, without its comment."""
    text = text.strip()
    if text[:1] in "'\"" and text[-1:] == text[:1]:
        return text[1:-1]
    return re.sub(r"\s+#.*$", "", text)


def read_conda_env(path: Path) -> tuple[list[str], list[str]]:
    """The conda dependencies and the pip requirements of a conda environment file.

    A minimal reader for the block style environment files use: top-level keys, the
    ``dependencies:`` list, and its ``- pip:`` sub-list. Comments and blank lines are skipped.
    """
    conda: list[str] = []
    pip: list[str] = []
    section = None
    pip_indent: int | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        text = raw.strip()
        if indent == 0:
            section = text.split(":", 1)[0]
            pip_indent = None
            continue
        if section != "dependencies" or not text.startswith("-"):
            continue
        item = text[1:].strip()
        if pip_indent is not None and indent > pip_indent:
            pip.append(_scalar(item))
        elif item == "pip:":
            pip_indent = indent
        else:
            pip_indent = None
            conda.append(_scalar(item))
    return conda, pip


def expected_requirements(pyproject: dict) -> list[str]:
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    reqs = list(project["dependencies"]) + [r for extra in CONDA_EXTRAS for r in extras[extra]]
    return [r for r in reqs if canonicalize_name(Requirement(r).name) not in FROM_CONDA]


def compare_requirements(expected: list[str], actual: list[str]) -> list[str]:
    """Differences between two requirement lists; empty when they name the same packages alike.

    Options such as ``-e .`` are ignored. Two requirements on the same package agree when their
    extras, version specifiers and markers are equal (order and spaces do not matter).
    """
    problems = []

    def by_name(reqs: list[str], where: str) -> dict[str, Requirement]:
        table: dict[str, Requirement] = {}
        for text in reqs:
            if text.startswith("-"):
                continue
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name in table:
                problems.append(f"{name} listed twice in {where}")
            table[name] = req
        return table

    want = by_name(expected, "pyproject.toml")
    have = by_name(actual, "environment.yml")
    for name in sorted(want.keys() - have.keys()):
        problems.append(f"{name} is in pyproject.toml but not in environment.yml")
    for name in sorted(have.keys() - want.keys()):
        problems.append(f"{name} is in environment.yml but not in pyproject.toml")
    for name in sorted(want.keys() & have.keys()):
        a, b = want[name], have[name]
        if (a.specifier, a.extras, str(a.marker)) != (b.specifier, b.extras, str(b.marker)):
            problems.append(f"{name}: pyproject.toml says {a}, environment.yml says {b}")
    return problems


def test_conda_env_reader_agrees_with_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    conda, pip = read_conda_env(ROOT / "environment.yml")
    loaded = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    deps = loaded["dependencies"]
    assert conda == [d for d in deps if isinstance(d, str)]
    assert pip == next(d["pip"] for d in deps if isinstance(d, dict))


def test_conda_env_has_python_and_pip() -> None:
    conda, _ = read_conda_env(ROOT / "environment.yml")
    assert "pip" in conda
    pythons = [d for d in conda if d.startswith("python")]
    assert pythons == ["python=3.11"]
    requires = load_pyproject()["project"]["requires-python"]
    assert Requirement(f"python{requires}").specifier.contains("3.11")


def test_conda_pip_section_matches_pyproject() -> None:
    _, pip = read_conda_env(ROOT / "environment.yml")
    assert compare_requirements(expected_requirements(load_pyproject()), pip) == []
    assert "-e ." in pip


def test_conda_provides_what_pip_cannot_build() -> None:
    conda, _ = read_conda_env(ROOT / "environment.yml")
    extras = load_pyproject()["project"]["optional-dependencies"]
    dev = {canonicalize_name(Requirement(r).name) for r in extras["dev"]}
    for name in FROM_CONDA:
        assert name in dev and name in conda, name


def test_makefile_builds_seqeval_against_a_pinned_setuptools_scm() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert '"setuptools_scm<10"' in makefile
    assert "--no-build-isolation seqeval" in makefile
    editable = makefile.index('install -e ".[$(EXTRAS)]"')
    assert makefile.index("--no-build-isolation seqeval") < editable


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda reqs: reqs[1:], "not in environment.yml"),
        (lambda reqs: [*reqs, "requests"], "not in pyproject.toml"),
        (lambda reqs: ["torch>=2.0" if r == "torch>=2.4" else r for r in reqs], "torch"),
        (lambda reqs: [r.replace(",<2.9", "") for r in reqs], "torch-geometric"),
        (lambda reqs: [*reqs, "numpy"], "listed twice"),
    ],
)
def test_compare_catches_regressions(mutate, message: str) -> None:
    expected = expected_requirements(load_pyproject())
    problems = compare_requirements(expected, mutate(list(expected)))
    assert any(message in p for p in problems), problems


def test_compare_ignores_spacing_and_order() -> None:
    assert compare_requirements(["a>=1,<2", "B"], ["b", "a < 2, >= 1"]) == []


def test_pyproject_dependencies() -> None:
    project = load_pyproject()["project"]
    reqs = {canonicalize_name(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    assert str(reqs["sacred"].specifier) == "==0.8.7"
    # sacred 0.8.7 imports pkg_resources, which setuptools 81 removed.
    assert not reqs["setuptools"].specifier.contains("81")
    assert reqs["setuptools"].specifier.contains("80.9")
    assert not reqs["torch-geometric"].specifier.contains("2.9")
    assert project["requires-python"] == ">=3.10"


def test_extras() -> None:
    extras = load_pyproject()["project"]["optional-dependencies"]
    assert set(extras) == {"vision", "minilm", "dev", "detectron2"}
    assert extras["detectron2"] == []  # built from source, see README
    dev = {canonicalize_name(Requirement(r).name) for r in extras["dev"]}
    assert {"pytest", "pytest-timeout", "ruff", "mypy"} <= dev


def test_console_script_points_at_cli_main() -> None:
    target = load_pyproject()["project"]["scripts"]["mnerqg"]
    module_name, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attr))


def test_distribution_contents() -> None:
    setuptools_cfg = load_pyproject()["tool"]["setuptools"]
    include = setuptools_cfg["packages"]["find"]["include"]
    for package in ("mnerqg_graph", "detectors", "experiments"):
        assert package in include and f"{package}.*" in include
    # no top-level "benchmarks" package in the wheel: what `mnerqg bench` runs is mnerqg_graph.bench
    assert not any(p.split(".")[0] in ("tests", "benchmarks") for p in include)
    globs = setuptools_cfg["package-data"]["mnerqg_graph"]
    assert globs == ["data/queries/*.json", "report/static/*"]
    if (ROOT / "mnerqg_graph" / "data" / "queries").is_dir():
        assert any((ROOT / "mnerqg_graph").glob(globs[0])), "no query file matches the package data"
    static = {p.name for p in (ROOT / "mnerqg_graph").glob(globs[1])}
    assert {"report.js", "report.css"} <= static, "the report page's script and styles"


def test_makefile_torch_pin_satisfies_pyproject() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pins = dict(re.findall(r"\b(torch|torchvision)==([\w.]+)", makefile))
    assert set(pins) == {"torch", "torchvision"}
    project = load_pyproject()["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["vision"]]
    specs = {Requirement(r).name: Requirement(r).specifier for r in wanted}
    for name, version in pins.items():
        assert specs[name].contains(Version(version)), f"Makefile pins {name}=={version}"


def test_ci_script_is_strict_and_executable() -> None:
    script = ROOT / ".ci" / "run"
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "make test" in text
    assert os.access(script, os.X_OK)


def test_ci_script_installs_chromium_for_the_browser_tests() -> None:
    """Before ``make test``, where apt-get exists; without it the script still runs."""
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = text.index("apt-get install -y -qq chromium")
    assert text.index("command -v apt-get") < install < text.index('step "make test"')
    assert "DEBIAN_FRONTEND=noninteractive" in text
    assert "|| echo" in text[install : install + 200]  # a failed install does not stop CI
