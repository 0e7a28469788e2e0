"""YAML loading that keeps line marks, so a validation error names file:line:column.

Only PyYAML's safe constructors are used (no tags beyond the core schema). Duplicate keys, which
PyYAML silently overwrites, are reported, since a runbook with two `when:` lines is a bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cmrunbook.errors import ConfigError, Problem

Path_ = tuple[str | int, ...]

#: libyaml's composer, when PyYAML was built with it: about 10x faster than the pure-Python one
#: (a 10,000-host inventory: ~0.8 s instead of ~8 s). Its nodes carry the same marks; its error
#: texts differ, so a document it rejects is composed again by the pure-Python loader, whose
#: message is the one reported.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"


class _MemoResolver:
    """Remembers the implicit tag of each distinct scalar while one document is composed.

    The resolver is a pure function of (kind, value, implicit) for the safe loaders (they have
    no path resolvers); an inventory repeats the same few values (roles, OS versions, true)
    thousands of times, and resolving each one ran a list of regular expressions in Python.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._tags: dict[tuple[str, tuple[bool, bool]], str] = {}

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[misc, no-any-return]
        key = (value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)  # type: ignore[misc]
        return tag


class _FastSafeLoader(_MemoResolver, _FAST_LOADER):  # type: ignore[misc, valid-type]
    """The fast loader with memoized scalar resolution."""


@dataclass
class SourceMap:
    """Where each value of a loaded document came from, by its path of keys and indexes."""

    file: str
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """The 1-based line and column of the value at `path`, or of its nearest ancestor."""
        p = tuple(path)
        while True:
            if key and p in self.key_marks:
                return self.key_marks[p]
            if p in self.marks:
                return self.marks[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def problem(self, path: Sequence[str | int], message: str, *, key: bool = False) -> Problem:
        line, col = self.locate(path, key=key)
        return Problem(self.file, line, col, message)


class _Builder:
    """Turns a composed YAML node tree into plain Python values, recording marks as it goes."""

    def __init__(self, smap: SourceMap) -> None:
        self.smap = smap
        self.problems: list[Problem] = []
        self._scalar = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.smap.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problems.append(
                        self._at(key_node, "YAML merge keys (<<) are not supported here")
                    )
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(self._at(key_node, "a key must be a plain string"))
                    continue
                # Keys are taken verbatim: YAML 1.1 would read `on:` or `no:` as booleans.
                key = key_node.value
                if key in out:
                    self.problems.append(self._at(key_node, f"duplicate key '{key}'"))
                    continue
                child = (*path, key)
                self.smap.key_marks[child] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if node.tag == _STR and isinstance(node, yaml.ScalarNode):
            return node.value  # what SafeConstructor.construct_yaml_str returns, without its cost
        return self._scalar.construct_object(node, deep=True)

    def _at(self, node: yaml.Node, message: str) -> Problem:
        return Problem(
            self.smap.file, node.start_mark.line + 1, node.start_mark.column + 1, message
        )


def _compose(text: str) -> yaml.Node | None:
    """The document's node tree; errors are always the pure-Python loader's (see _FAST_LOADER)."""
    if _FAST_LOADER is not yaml.SafeLoader:
        try:
            return yaml.compose(text, Loader=_FastSafeLoader)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap]:
    """Safely load one YAML document, returning its data and where every value came from."""
    name = display or str(path)
    smap = SourceMap(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(name, 1, 1, f"cannot read file: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(name, 1, 1, "file is not UTF-8 text")]) from exc
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError(
            [Problem(name, line, col, f"not valid YAML: {exc.problem or exc.context}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, 1, 1, f"not valid YAML: {exc}")]) from exc
    if node is None:
        raise ConfigError([Problem(name, 1, 1, "file is empty; expected a mapping")])
    builder = _Builder(smap)
    try:
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError(
            [Problem(name, line, col, f"unsupported YAML value: {exc.problem}")]
        ) from exc
    if builder.problems:
        raise ConfigError(builder.problems)
    return data, smap
