"""Registries for the swappable parts of the model.

A :class:`Registry` maps a name to a callable that builds one component. The registry's docstring is
its contract: what a registered callable takes and what it must return. :meth:`Registry.build`
accepts a name or an already built instance, checks the options against the builder's signature
and the type of what it built, and turns an unknown name or option into a one-line error listing
the known ones.

Implementations register themselves when their module is imported; each package's ``__init__``
imports its modules so that importing the package fills the registry. A user adds a component from
their own file by decorating it with ``@REGISTRY.register("name")`` and importing that file: the
CLI and the Sacred experiment accept ``--plugin`` / ``plugins=[...]`` module paths for that, an
installed package declares it in the ``mnerqg_graph.plugins`` entry-point group (read the first
time a registry is asked for a name it does not know), and a checkpoint records the plugin modules
its components come from (:func:`plugins_of`, :mod:`mnerqg_graph.plugins`).
"""

from __future__ import annotations

import inspect
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from mnerqg_graph.errors import ConfigError
from mnerqg_graph.plugins import is_toolkit_module, load_entry_points, plugin_spec

T = TypeVar("T")

_REGISTRIES: weakref.WeakSet[Registry[Any]] = weakref.WeakSet()


def all_registries() -> list[Registry[Any]]:
    """Every registry made so far (those of the packages imported), by name."""
    return sorted(_REGISTRIES, key=lambda r: r.name)


class Registry(Generic[T]):
    """A name -> builder table for one kind of component.

    Args:
        name: what the registry holds (used in error messages), e.g. ``"fusion module"``.
        base: the type every built object must be an instance of.
        doc: the contract a registered builder must meet.
    """

    def __init__(self, name: str, base: type, doc: str = "") -> None:
        self.name = name
        self.base = base
        self.__doc__ = doc
        self._table: dict[str, Callable[..., T]] = {}
        _REGISTRIES.add(self)

    def register(self, key: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory under ``key``."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if key in self._table and self._table[key] is not obj:
                raise ConfigError(f"{self.name} {key!r} is already registered")
            self._table[key] = obj
            return obj

        return deco

    def get(self, key: str) -> Callable[..., T]:
        """The builder registered under ``key`` (installed plugins are looked at when needed)."""
        if key not in self._table:
            failures = load_entry_points()
            if key not in self._table:
                known = ", ".join(sorted(self._table)) or "(none)"
                broken = (
                    f" (plugins that failed to load: {'; '.join(failures)})" if failures else ""
                )
                raise ConfigError(f"unknown {self.name} {key!r}; known: {known}{broken}")
        return self._table[key]

    def build(self, key_or_obj: str | T, **kwargs: Any) -> T:
        """Build the component named ``key_or_obj`` with ``kwargs``, or return an instance as is.

        The packages' ``build_*`` functions (``build_backbone``, ``build_region_source``,
        ``build_detector``) are this method of their registry.

        Args:
            key_or_obj: a name from :meth:`names`, or an already built component.
            **kwargs: the builder's keyword arguments.

        Returns:
            The component.

        Raises:
            ConfigError: an unknown name or option (a missing optional dependency, an invalid
                option value, as the builder says), or a builder that did not return a ``base``.
        """
        if not isinstance(key_or_obj, str):
            obj = key_or_obj
        else:
            builder = self.get(key_or_obj)
            _check_options(self.name, key_or_obj, builder, kwargs)
            obj = builder(**kwargs)
        if not isinstance(obj, self.base):
            raise ConfigError(
                f"{self.name} {key_or_obj!r} built a {type(obj).__name__}, "
                f"not a {self.base.__name__}"
            )
        return obj

    def names(self) -> list[str]:
        """Registered names, sorted (installed plugins included)."""
        load_entry_points()
        return sorted(self._table)

    def items(self) -> Iterator[tuple[str, Callable[..., T]]]:
        """``(name, builder)`` pairs registered so far (no plugin is looked for)."""
        return iter(list(self._table.items()))

    def __contains__(self, key: object) -> bool:
        if key in self._table:
            return True
        load_entry_points()
        return key in self._table


def _check_options(
    kind: str, key: str, builder: Callable[..., Any], kwargs: dict[str, Any]
) -> None:
    """A ConfigError naming an option that ``builder`` does not take (instead of a TypeError)."""
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        options = ", ".join(sorted(accepted - {"self"})) or "(none)"
        raise ConfigError(f"{kind} {key!r} takes no option {unknown}; its options: {options}")


def plugins_of(config: Any, model: Any = None) -> list[str]:
    """The plugin modules that a model's components come from, to record in its checkpoint.

    These are the modules named in ``config.plugins``, then the (non-toolkit) modules of every
    registered component that the config names (any string value, nested ones included, that is
    a key of a registry) or that the model holds (a submodule whose class is registered).

    Args:
        config: the model's config (a :class:`~mnerqg_graph.config.ModelConfig`).
        model: the built model (an ``nn.Module``), or None.

    Returns:
        Import specs (dotted names or ``.py`` paths), each once, in a stable order.
    """
    fields = config.to_dict() if hasattr(config, "to_dict") else vars(config)  # sections nested
    names = set(_strings(fields))
    classes = {type(m) for m in model.modules()} if model is not None else set()
    found: list[str] = []
    for spec in config.plugins:  # a file keeps its absolute path: loading may run elsewhere
        spec = str(Path(spec).resolve()) if spec.endswith(".py") or os.sep in spec else spec
        if spec not in found:
            found.append(spec)
    for registry in all_registries():
        for key, builder in registry.items():
            module = getattr(builder, "__module__", None)
            if not module or is_toolkit_module(module):
                continue
            if key in names or builder in classes:
                spec = plugin_spec(module)
                if spec is not None and spec not in found:
                    found.append(spec)
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
