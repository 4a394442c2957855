"""Sacred config entries taken from the library's config dataclasses (one source of defaults).

An ingredient adds :func:`dataclass_defaults` to its configurations instead of repeating the
defaults in a config scope: its keys are the dataclass's fields, its values the dataclass's defaults
(``dataclasses.asdict`` of an instance built with defaults only), and the comment that
``print_config`` shows beside each key is the first sentence of that field's entry in the
dataclass's ``Args:`` docstring section. Changing a default is therefore one edit, in the
dataclass, and ``python -m experiments.train print_config`` shows the values the library uses when
it is called without Sacred.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sacred.config.config_dict import ConfigDict
from sacred.config.config_summary import ConfigSummary

#: An ``Args:`` entry of a Google-style docstring: ``name: text`` (more text on indented lines).
_ARG = re.compile(r"^(\s*)(\w+): (.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """The first sentence of each field's entry in ``cls``'s ``Args:`` docstring section.

    Args:
        cls: a dataclass with a Google-style docstring.

    Returns:
        Field name -> one-line description (fields without an entry are absent).
    """
    lines = (cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    except StopIteration:
        return {}
    docs: dict[str, list[str]] = {}
    indent: int | None = None
    current: list[str] | None = None
    for line in lines[start:]:
        if not line.strip():
            if docs:
                break  # a blank line ends the section
            continue
        m = _ARG.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            current = docs.setdefault(m.group(2), [])
            current.append(m.group(3).strip())
        elif current is not None and indent is not None and len(line) - len(line.lstrip()) > indent:
            current.append(line.strip())
        else:
            break  # the next section (``Shapes:``, ...)
    return {name: _first_sentence(" ".join(parts)) for name, parts in docs.items()}


def _first_sentence(text: str) -> str:
    """Up to the first full stop (not that of "e.g." or "i.e."), without reST backquotes."""
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    text = text[: match.start()] if match else text
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "").strip()


def dataclass_defaults(
    cls: type,
    exclude: Iterable[str] = (),
    docs: Mapping[str, str] | None = None,
    **required: Any,
) -> DataclassConfig:
    """A Sacred configuration holding the defaults of dataclass ``cls``.

    A field that is itself a dataclass (a section of :class:`mnerqg_graph.config.ModelConfig`)
    becomes a nested entry, whose keys are documented from that dataclass's docstring.

    Args:
        cls: the config dataclass (e.g. :class:`mnerqg_graph.config.ModelConfig`).
        exclude: fields that are not part of this ingredient (set elsewhere by the experiment).
        docs: comments that replace the docstring's for these (dotted) keys.
        required: values for the fields without a default, only to build the default instance
            (they are dropped when also excluded).

    Returns:
        A config to append to an ingredient's ``configurations``.
    """
    instance = cls(**required)
    defaults = dataclasses.asdict(instance)
    skip = set(exclude)
    values = {k: v for k, v in defaults.items() if k not in skip}
    comments = {k: v for k, v in field_docs(cls).items() if k in values}
    for name in values:
        section = getattr(instance, name)
        if dataclasses.is_dataclass(section):  # a nested section: its own fields' docs
            comments.update({f"{name}.{k}": v for k, v in field_docs(type(section)).items()})
    comments.update(docs or {})
    return DataclassConfig(values, comments)


class DataclassConfig(ConfigDict):
    """A Sacred :class:`~sacred.config.config_dict.ConfigDict` that also carries per-key docs.

    Args:
        values: the config entries (JSON values).
        docs: key -> the comment ``print_config`` shows beside it.
    """

    def __init__(self, values: dict[str, Any], docs: dict[str, str]) -> None:
        super().__init__(values)
        self.values = dict(values)
        self.docs = dict(docs)

    def __call__(
        self,
        fixed: dict[str, Any] | None = None,
        preset: dict[str, Any] | None = None,
        fallback: dict[str, Any] | None = None,
    ) -> ConfigSummary:
        """Evaluate as Sacred does, with the docs attached."""
        summary: ConfigSummary = super().__call__(fixed, preset, fallback)
        summary.docs.update(self.docs)
        return summary
