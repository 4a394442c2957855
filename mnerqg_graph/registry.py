"""Registries for the swappable parts of the model.

A :class:`Registry` maps a name to a callable that builds one component. The registry's docstring is
its contract: what a registered callable takes and what it must return. :meth:`Registry.build`
accepts a name or an already built instance, checks the type of what it built, and turns an unknown
name into a one-line error listing the known ones.

Implementations register themselves when their module is imported; each package's ``__init__``
imports its modules so that importing the package fills the registry. A user adds a component from
their own file by decorating it with ``@REGISTRY.register("name")`` and importing that file (the CLI
and the Sacred experiment accept ``--plugin`` / ``plugins=[...]`` module paths for that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from mnerqg_graph.errors import ConfigError

T = TypeVar("T")


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

    def register(self, key: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory under ``key``."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if key in self._table and self._table[key] is not obj:
                raise ConfigError(f"{self.name} {key!r} is already registered")
            self._table[key] = obj
            return obj

        return deco

    def get(self, key: str) -> Callable[..., T]:
        """The builder registered under ``key``."""
        try:
            return self._table[key]
        except KeyError:
            known = ", ".join(sorted(self._table)) or "(none)"
            raise ConfigError(f"unknown {self.name} {key!r}; known: {known}") from None

    def build(self, key_or_obj: str | T, **kwargs: Any) -> T:
        """Build the component named ``key_or_obj`` with ``kwargs``, or return an instance as is."""
        if not isinstance(key_or_obj, str):
            obj = key_or_obj
        else:
            obj = self.get(key_or_obj)(**kwargs)
        if not isinstance(obj, self.base):
            raise ConfigError(
                f"{self.name} {key_or_obj!r} built a {type(obj).__name__}, "
                f"not a {self.base.__name__}"
            )
        return obj

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table
