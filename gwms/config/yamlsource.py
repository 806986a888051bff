"""Read YAML into plain data plus the line of every key and item, so errors can name the line.

PyYAML's SafeLoader follows YAML 1.1, where `no`, `on` and `2024-01-01` silently become a
boolean or a date; configuration authors expect YAML 1.2 core rules, so the resolvers here
only turn `true`/`false`, `null`/`~`, decimal/`0x`/`0o` integers and plain floats into
non-strings. Duplicate keys are errors (PyYAML keeps the last one without a word).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Loc = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Mark:
    """A 1-based line and column in the source file."""

    line: int
    column: int


@dataclass
class YamlSource:
    """Parsed data and where each part of it was written."""

    path: Path
    data: Any
    marks: dict[Loc, Mark] = field(default_factory=dict)

    def mark_for(self, loc: Loc) -> Mark | None:
        """The mark of the longest prefix of `loc` that exists in the file."""
        for end in range(len(loc), -1, -1):
            mark = self.marks.get(loc[:end])
            if mark is not None:
                return mark
        return None


class YamlProblem(Exception):
    """A syntax error or duplicate key with its position; the loader makes it a ConfigError."""

    def __init__(self, mark: Mark | None, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.loc = loc
        self.message = message


class _Core12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core schema scalars (see the module docstring)."""


_Core12Loader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
):
    _Core12Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))


def _construct_int(loader: yaml.SafeLoader, node: ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)


_Core12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed node tree into dicts/lists/scalars, recording a Mark per path."""

    def __init__(self, loader: _Core12Loader) -> None:
        self.loader = loader
        self.marks: dict[Loc, Mark] = {}
        self._active: set[int] = set()

    def build(self, node: Node, loc: Loc) -> Any:
        if id(node) in self._active:
            raise YamlProblem(_mark(node), loc, "recursive YAML alias; expand the anchor instead")
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, SequenceNode):
                return self._sequence(node, loc)
            return self.loader.construct_object(node, deep=True)
        finally:
            self._active.discard(id(node))

    def _sequence(self, node: SequenceNode, loc: Loc) -> list[Any]:
        items = []
        for index, child in enumerate(node.value):
            self.marks[(*loc, index)] = _mark(child)
            items.append(self.build(child, (*loc, index)))
        return items

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        merged: dict[Any, Any] = {}
        explicit: dict[Any, Any] = {}
        own_marks: dict[Any, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise YamlProblem(
                            _mark(source), loc, "a merge key (<<) must refer to a mapping"
                        )
                    for merged_key, merged_value in self._mapping(source, loc).items():
                        merged.setdefault(merged_key, merged_value)
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise YamlProblem(_mark(key_node), loc, "mapping keys must be plain scalars")
            if key in explicit:
                raise YamlProblem(
                    _mark(key_node),
                    (*loc, key),
                    f"duplicate key {key} (first set on line {own_marks[key].line}); keep only one",
                )
            own_marks[key] = self.marks[(*loc, key)] = _mark(key_node)
            explicit[key] = self.build(value_node, (*loc, key))
        if merged:
            # A merge written after an explicit key must not steal that key's line.
            for key, mark in own_marks.items():
                self.marks[(*loc, key)] = mark
        return {**merged, **explicit}


def read_yaml(path: Path, text: str) -> YamlSource:
    """Parse `text` (read from `path`); raise YamlProblem on syntax errors or duplicate keys."""
    loader = _Core12Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = Mark(mark.line + 1, mark.column + 1) if mark else None
            problem = exc.problem or exc.context or "cannot parse"
            column = f" at column {where.column}" if where else ""
            raise YamlProblem(
                where,
                (),
                f"YAML syntax error{column}: {problem}; check the indentation, colons and quotes"
                " on this line and the one before",
            ) from None
        except yaml.YAMLError as exc:
            raise YamlProblem(None, (), f"YAML syntax error: {exc}") from None
        source = YamlSource(path=path, data=None)
        if node is None:
            return source
        builder = _Builder(loader)
        builder.marks[()] = _mark(node)
        try:
            source.data = builder.build(node, ())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = Mark(mark.line + 1, mark.column + 1) if mark else None
            raise YamlProblem(where, (), f"YAML error: {exc.problem}") from None
        source.marks = builder.marks
        return source
    finally:
        loader.dispose()
