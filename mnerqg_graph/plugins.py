"""Plugins: modules from outside the toolkit that register components in its registries.

A plugin module registers fusion modules, text encoders, image backbones, region sources, ... with
``@REGISTRY.register("name")`` when it is imported. It is imported in one of three ways:

1. **Named**: ``mnerqg --plugin MODULE``, the experiment's ``model.plugins=[...]`` or
   ``ModelConfig.plugins`` (a dotted module name, or the path of a ``.py`` file):
   :func:`load_plugin`.
2. **Installed**: a distribution declares the module in the entry-point group
   :data:`ENTRY_POINT_GROUP` (what pytest does with ``pytest11``)::

       [project.entry-points."mnerqg_graph.plugins"]
       my_fusion = "my_package.fusion"

   The group is read with :mod:`importlib.metadata` the first time a registry is asked for a name
   it does not know, or for its list of names (:func:`load_entry_points`), so no flag is needed
   and nothing is imported while every name asked for is a built-in one. An entry point may also
   name a function (``"my_package:register"``), which is called with no arguments.
3. **Recorded**: a saved checkpoint lists, in its ``config.json`` (``plugins``), the plugin modules
   its components come from (:func:`mnerqg_graph.registry.plugins_of`), and loading it imports
   them again, so ``mnerqg predict``/``visualize`` of a checkpoint never need ``--plugin``.

Importing this module imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from mnerqg_graph.errors import PluginError, one_line_reason

#: The entry-point group an installed package declares its plugin modules in.
ENTRY_POINT_GROUP = "mnerqg_graph.plugins"

#: Top-level packages of the toolkit itself: what they register is built in, not a plugin.
TOOLKIT_PACKAGES = ("mnerqg_graph", "detectors", "experiments", "benchmarks")

#: Module name -> the ``.py`` file it was loaded from (file plugins are not importable by name).
_FILE_PLUGINS: dict[str, str] = {}

#: Entry points that could not be loaded: ``"name = value (distribution): error"``.
_ENTRY_POINT_FAILURES: list[str] = []
_entry_points_loaded = False


def load_plugin(spec: str) -> ModuleType:
    """Import a plugin module so that its registrations take effect (once per process).

    Args:
        spec: a dotted module name, importable from ``sys.path`` or the current folder, or the
            path of a ``.py`` file.

    Returns:
        The imported module.

    Raises:
        FileNotFoundError: ``spec`` is a path and no such file exists.
        PluginError: no module of that name, or the file is not a Python module.
    """
    if spec.endswith(".py") or os.sep in spec:
        return _load_file(Path(spec))
    # Like `python -m`, let modules in the current folder be found (the console script's
    # sys.path[0] is its bin/ folder); appended, so installed packages win.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise PluginError(
                f"cannot import plugin {spec!r}: no such module (is its folder on PYTHONPATH?)"
            ) from exc
        raise


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise FileNotFoundError(2, "plugin file not found", str(path))
    resolved = str(path.resolve())
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and _FILE_PLUGINS.get(name) == resolved:
        return loaded  # already imported from this file: registering twice would clash
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"cannot import plugin {str(path)!r}: not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _FILE_PLUGINS[name] = resolved
    return module


def import_plugins(specs: Iterable[str]) -> None:
    """:func:`load_plugin` every spec of ``specs``, in order."""
    for spec in specs:
        load_plugin(spec)


def load_entry_points() -> list[str]:
    """Import every plugin that installed packages declare in :data:`ENTRY_POINT_GROUP` (once).

    A plugin that fails to import does not stop the others; its error is kept and returned (a
    registry adds it to its "unknown name" message).

    Returns:
        The failures so far, one line each.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return list(_ENTRY_POINT_FAILURES)
    _entry_points_loaded = True
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_key):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, (ModuleType, type)):
                obj()  # "package.module:register": a function that registers
        except Exception as exc:  # a broken plugin is reported, and the others still load
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            _ENTRY_POINT_FAILURES.append(f"{ep.name} = {ep.value} ({dist}): {one_line_reason(exc)}")
    return list(_ENTRY_POINT_FAILURES)


def _ep_key(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    return ep.name, ep.value


def is_toolkit_module(module: str) -> bool:
    """Whether ``module`` belongs to the toolkit itself (its registrations are built in)."""
    return module.split(".", 1)[0] in TOOLKIT_PACKAGES


def plugin_spec(module: str) -> str | None:
    """How to import ``module`` again: its name, its ``.py`` file, or None (``__main__``)."""
    if module in _FILE_PLUGINS:
        return _FILE_PLUGINS[module]
    if module == "__main__" or module.startswith("__main__."):
        return None
    return module
