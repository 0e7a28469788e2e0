"""YAML loading that keeps line marks, so a validation error names file:line:column.

Only PyYAML's safe constructors are used (no tags beyond the core schema). Duplicate keys, which
PyYAML silently overwrites, are reported, since a runbook with two `when:` lines is a bug.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from cmrunbook.errors import ConfigError, Problem

Path_ = tuple[str | int, ...]

#: libyaml's parser, when PyYAML was built with it: its events come about 10x faster than the
#: pure-Python parser's. Its error texts differ, so a document it rejects is parsed again by the
#: pure-Python loader, whose message is the one reported.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_PARSE_ERRORS = (yaml.parser.ParserError, yaml.scanner.ScannerError, yaml.reader.ReaderError)
#: The tags a file may write out (`!!str 0777`): the core schema's scalars. PyYAML's safe loader
#: also knows !!binary (a bytes repr reached the scripts), !!set, !!omap and !!pairs, and kept
#: the value of an unknown tag on a sequence or mapping as if the tag were not there.
_EXPLICIT_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")
)

#: Limits that keep a file from exhausting the jump host (attack §3: a 2.6 KB alias bomb took 71 s
#: and 2.5 GB; 5,000 nested brackets a RecursionError). A 10,000-host inventory is 1 MB, about
#: 100,000 values and 4 levels deep, so each limit leaves a wide margin for real files.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 64
#: Values an alias may copy in: anchors are for sharing a small value (`os: *w2008`), so aliases
#: may add ten times the values written out, or 100,000, whichever is more; never more than
#: MAX_VALUES in all.
MAX_ALIASED = 100_000
MAX_VALUES = 5_000_000


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large tree of new values is built.

    Loading a 10,000-host inventory or planning over it creates hundreds of thousands of dicts,
    lists and objects, none in a reference cycle; each allocation burst makes the collector
    traverse the whole growing heap again, which cost a third of the load's CPU. Reference
    counting still frees everything as usual; the collector resumes (if it ran before) at the end.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            # What was built is long-lived (an inventory, a plan): it joins the oldest generation
            # without a pass (freeze, then unfreeze into that generation). Re-enabled as it was,
            # the collector's first young pass went over all of it, then again as it aged: 0.2 s
            # of a 10,000-host dry run. A cycle among these values is still found by the next
            # full collection. Not done where the program froze objects of its own (unfreeze
            # would let go of them too).
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


class SourceMap:
    """Where each value of a loaded document came from, by its path of keys and indexes.

    A map made with `text` finds the marks when first asked for them (an error to report, a
    value to quote back), by reading the text again with marks: a valid file never needs them,
    and recording a mark per value was half the cost of loading a 10,000-host inventory.
    """

    def __init__(self, file: str, *, text: str | None = None) -> None:
        self.file = file
        self._text = text
        self._marks: dict[Path_, tuple[int, int]] = {}
        self._key_marks: dict[Path_, tuple[int, int]] = {}
        self._written: dict[Path_, str] = {}

    def _filled(self) -> SourceMap:
        """This map, with the marks of its text read if they are still to be found."""
        if self._text is not None:
            text, self._text = self._text, None
            with collector_paused():
                found = _read(text, self.file)[1].smap
            self._marks, self._key_marks, self._written = (
                found.marks,
                found.key_marks,
                found.written,
            )
        return self

    @property
    def marks(self) -> dict[Path_, tuple[int, int]]:
        """The 1-based line and column of each value."""
        return self._filled()._marks

    @property
    def key_marks(self) -> dict[Path_, tuple[int, int]]:
        """The 1-based line and column of each mapping key, by the path of its value."""
        return self._filled()._key_marks

    @property
    def written(self) -> dict[Path_, str]:
        """What the file wrote for each plain scalar that YAML typed as something else than a
        string (`yes`, `0777`, `12:30`, `null`), so a string field can tell the user what they
        wrote."""
        return self._filled()._written

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """The 1-based line and column of the value at `path`, or of its nearest ancestor."""
        marks, key_marks = self.marks, self.key_marks
        p = tuple(path)
        while True:
            if key and p in key_marks:
                return key_marks[p]
            if p in marks:
                return marks[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def problem(self, path: Sequence[str | int], message: str, *, key: bool = False) -> Problem:
        line, col = self.locate(path, key=key)
        return Problem(self.file, line, col, message)


class _Builder:
    """Turns a YAML event stream into plain Python values, recording marks as it goes.

    Built on the parser's events rather than on a composed node tree: composing wraps every
    scalar in a Node and calls three Python resolver hooks for it, which made composing a
    10,000-host inventory cost ten times what parsing it does.
    """

    def __init__(self, smap: SourceMap, next_event: Callable[[], yaml.Event]) -> None:
        self.smap = smap
        # The map's own dicts, filled directly (a map without text has nothing to find later).
        self._marks, self._key_marks, self._written = smap.marks, smap.key_marks, smap.written
        self.problems: list[Problem] = []
        # The parser's own get_event, called directly: yaml.parse wraps it in a generator that
        # costs a Python frame per event (a 10,000-host inventory is 190,000 events).
        self._next = next_event
        self._anchors: dict[str, Any] = {}
        self._resolver = yaml.resolver.Resolver()
        self._constructor = yaml.constructor.SafeConstructor()
        # Tags and constructed scalars are pure functions of the scalar's text (the safe
        # loaders have no path resolvers); an inventory repeats a few values thousands of times.
        self._tags: dict[tuple[str, Any], str] = {}
        self._scalars: dict[tuple[str, str], Any] = {}
        # Values built so far (each alias counts as every value it copies), how many of them
        # aliases copied, and how many values each anchor stands for.
        self._values = 0
        self._aliased = 0
        self._sizes: dict[str, int] = {}

    def document(self) -> Any:
        """The stream's single document; a stream without one (empty, comments) is an error."""
        self._next()  # StreamStartEvent
        event = self._next()
        if isinstance(event, yaml.StreamEndEvent):
            raise ConfigError([self.smap.problem((), "file is empty; expected a mapping")])
        data = self.build(self._next(), ())
        self._next()  # DocumentEndEvent
        event = self._next()
        if not isinstance(event, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                None,
                "but found another document",
                event.start_mark,
            )
        return data

    def build(self, event: yaml.Event, path: Path_) -> Any:
        mark = event.start_mark
        self._marks[path] = (mark.line + 1, mark.column + 1)
        before = self._values
        self._values += 1
        if isinstance(event, yaml.ScalarEvent):
            self._check_text(event)
            value = self._scalar(event)
            if not event.style and not isinstance(value, str):  # plain (libyaml: '')
                self._written[path] = event.value
        elif isinstance(event, yaml.CollectionStartEvent):
            if event.tag not in (None, "!") and event.tag not in _EXPLICIT_TAGS:
                raise self._refuse(event, _unsupported(event.tag))
            if len(path) >= MAX_DEPTH:
                raise self._refuse(event, f"values nested more than {MAX_DEPTH} levels deep")
            if isinstance(event, yaml.MappingStartEvent):
                value = self._mapping(path)
            else:
                value = []
                item = self._next()
                while not isinstance(item, yaml.SequenceEndEvent):
                    value.append(self.build(item, (*path, len(value))))
                    item = self._next()
        elif isinstance(event, yaml.AliasEvent):
            return self._alias(event)
        else:
            raise yaml.composer.ComposerError(None, None, f"unexpected {event}", mark)
        if self._values > MAX_VALUES:
            raise self._refuse(event, f"the file holds more than {MAX_VALUES:,} values")
        if event.anchor is not None:
            self._anchors[event.anchor] = value
            self._sizes[event.anchor] = self._values - before
        return value

    def _alias(self, event: yaml.AliasEvent) -> Any:
        """A copy of the anchor's value, as composing would give (each use of an anchor is a
        value of its own), refused before copying when aliases would copy too much."""
        if event.anchor not in self._anchors:
            raise yaml.composer.ComposerError(
                None, None, f"found undefined alias {event.anchor!r}", event.start_mark
            )
        size = self._sizes[event.anchor]
        allowed = max(MAX_ALIASED, 10 * (self._values - self._aliased))
        if self._aliased + size > allowed or self._values + size > MAX_VALUES:
            raise self._refuse(
                event,
                f"alias *{event.anchor} would expand the file beyond {allowed:,} copied values "
                "(aliases of aliases multiply: a few KB can stand for gigabytes)",
            )
        self._aliased += size
        self._values += size
        return copy.deepcopy(self._anchors[event.anchor])

    def _check_text(self, event: yaml.ScalarEvent) -> None:
        """A double-quoted scalar can write a lone surrogate (`"\\udc80"`), which is no text:
        it would make every script and journal line that carries it invalid UTF-8 (attack 1c)."""
        if event.style == '"':
            try:
                event.value.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = f"U+{ord(event.value[exc.start]):04X}"
                raise self._refuse(event, f"not text: a lone surrogate {bad}") from None

    def _refuse(self, event: yaml.Event, message: str) -> ConfigError:
        """A limit or an unsupported construct, reported at the value, before it is built."""
        return ConfigError([self._at(event, message)])

    def _mapping(self, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        event = self._next()
        while not isinstance(event, yaml.MappingEndEvent):
            if not isinstance(event, yaml.ScalarEvent):
                self.problems.append(self._at(event, "a key must be a plain string"))
                self._skip(event)
                self._skip(self._next())
            elif event.value == "<<" and self._tag(event) == _MERGE:
                self.problems.append(self._at(event, "YAML merge keys (<<) are not supported here"))
                self._skip(self._next())
            elif event.value in out:
                self.problems.append(self._at(event, f"duplicate key '{event.value}'"))
                self._skip(self._next())
            else:
                # Keys are taken verbatim: YAML 1.1 would read `on:` or `no:` as booleans.
                self._check_text(event)
                if event.tag not in (None, "!", _STR):
                    raise self._refuse(event, _unsupported(event.tag))
                key = event.value
                child = (*path, key)
                self._key_marks[child] = (
                    event.start_mark.line + 1,
                    event.start_mark.column + 1,
                )
                out[key] = self.build(self._next(), child)
            event = self._next()
        return out

    def _skip(self, event: yaml.Event) -> None:
        """Consume the rest of a value that is reported, not kept."""
        depth = int(isinstance(event, yaml.CollectionStartEvent))
        while depth:
            event = self._next()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1

    def _tag(self, event: yaml.ScalarEvent) -> str:
        if event.tag not in (None, "!"):
            if event.tag not in _EXPLICIT_TAGS and event.tag != _MERGE:
                raise self._refuse(event, _unsupported(event.tag))
            return str(event.tag)
        key = (event.value, event.implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = self._resolver.resolve(
                yaml.ScalarNode, event.value, event.implicit
            )
        return tag

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        tag = self._tag(event)
        if tag == _STR:
            return event.value  # what SafeConstructor.construct_yaml_str returns
        key = (tag, event.value)
        if key not in self._scalars:
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            self._scalars[key] = self._constructor.construct_object(node, deep=True)
        return self._scalars[key]

    def _at(self, event: yaml.Event, message: str) -> Problem:
        mark = event.start_mark
        return Problem(self.smap.file, mark.line + 1, mark.column + 1, message)


def _read(text: str, name: str) -> tuple[Any, _Builder]:
    """The document's data and the builder that holds its marks and problems.

    A document libyaml rejects is read again by the pure-Python parser, whose error is raised.
    """

    def read(loader_class: type[yaml.SafeLoader]) -> tuple[Any, _Builder]:
        loader = loader_class(text)
        try:
            builder = _Builder(SourceMap(name), loader.get_event)
            return builder.document(), builder
        finally:
            loader.dispose()

    try:
        return read(_FAST_LOADER)
    except _PARSE_ERRORS:
        if _FAST_LOADER is yaml.SafeLoader:
            raise
    return read(yaml.SafeLoader)


class _Unusual(Exception):
    """What the quick reader leaves to the marked one: anything but plain keys and values."""


class _QuickReader:
    """Plain Python values from the C parser's events, without marks: the common case of a
    valid file of plain keys and values, read at a fraction of the marked builder's cost.

    Whatever the marked builder would report, refuse or treat specially (an anchor, an alias,
    an explicit tag, a merge or duplicate key, a lone surrogate, deep nesting, a parse error,
    a stream without exactly one document) raises _Unusual instead, and the file is read again
    by the marked builder, which reports it as it always did. So both readers accept the same
    files and give the same values. No value count is kept: a file read here is below
    QUICK_MAX_CHARS, and without aliases a file holds at most one value per character.
    """

    def __init__(self, next_event: Callable[[], yaml.Event]) -> None:
        self._next = next_event
        self._resolver = yaml.resolver.Resolver()
        self._constructor = yaml.constructor.SafeConstructor()
        self._tags: dict[str, str] = {}
        self._scalars: dict[tuple[str, str], Any] = {}

    def document(self) -> Any:
        self._next()  # StreamStartEvent
        if type(self._next()) is not yaml.DocumentStartEvent:
            raise _Unusual
        data = self._value(self._next(), 0)
        if type(self._next()) is not yaml.DocumentEndEvent:
            raise _Unusual
        if type(self._next()) is not yaml.StreamEndEvent:
            raise _Unusual
        return data

    def _value(self, event: yaml.Event, depth: int) -> Any:
        kind = type(event)
        if kind is yaml.ScalarEvent:
            return self._scalar(event)
        if event.anchor is not None or event.tag is not None or depth >= MAX_DEPTH - 1:
            raise _Unusual
        if kind is yaml.MappingStartEvent:
            out: dict[str, Any] = {}
            key = self._next()
            while type(key) is yaml.ScalarEvent:
                name = key.value
                if key.tag is not None or key.anchor is not None or name in out or name == "<<":
                    raise _Unusual
                if key.style == '"':
                    _encodable(name)
                out[name] = self._value(self._next(), depth + 1)
                key = self._next()
            if type(key) is not yaml.MappingEndEvent:
                raise _Unusual
            return out
        if kind is yaml.SequenceStartEvent:
            items: list[Any] = []
            item = self._next()
            while type(item) is not yaml.SequenceEndEvent:
                items.append(self._value(item, depth + 1))
                item = self._next()
            return items
        raise _Unusual

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        if event.anchor is not None or event.tag is not None:
            raise _Unusual
        value: str = event.value
        if not event.implicit[0]:  # quoted: a string
            if event.style == '"':
                _encodable(value)
            return value
        tag = self._tags.get(value)
        if tag is None:
            tag = self._tags[value] = self._resolver.resolve(yaml.ScalarNode, value, event.implicit)
        if tag == _STR:
            return value
        key = (tag, value)
        if key not in self._scalars:
            node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
            self._scalars[key] = self._constructor.construct_object(node, deep=True)
        return self._scalars[key]


def _encodable(text: str) -> None:
    """Raise _Unusual for text with a lone surrogate (the marked builder reports it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Unusual from None


#: Files up to this size are first read without marks (_QuickReader); larger ones, which only a
#: value-count limit can stop, by the marked builder alone.
QUICK_MAX_CHARS = MAX_VALUES // 2


def _quick(text: str) -> Any:
    """The document's data read without marks; _Unusual when the marked builder must read it."""
    if _FAST_LOADER is yaml.SafeLoader or len(text) > QUICK_MAX_CHARS:
        raise _Unusual
    loader = _FAST_LOADER(text)
    try:
        return _QuickReader(loader.get_event).document()
    except yaml.YAMLError:
        raise _Unusual from None
    finally:
        loader.dispose()


def _unsupported(tag: str) -> str:
    short = tag.replace("tag:yaml.org,2002:", "!!")
    return f"unsupported YAML tag {short}; write the value as plain text (quoted if need be)"


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character `index` of `text`."""
    return text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)


def _text(path: Path, name: str) -> str:
    """The file as text: at most MAX_FILE_BYTES (read so, since the path may be /dev/zero or a
    pipe), UTF-8, with an undecodable byte located at its line."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(name, 1, 1, f"cannot read file: {exc.strerror}")]) from exc
    if len(raw) > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // (1024 * 1024)
        raise ConfigError([Problem(name, 1, 1, f"file is larger than {limit} MB; not read")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", "replace")
        line, col = _position(before, len(before))
        problem = f"file is not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        raise ConfigError([Problem(name, line, col, problem)]) from exc


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap]:
    """Safely load one YAML document, returning its data and where every value came from."""
    name = display or str(path)
    text = _text(path, name)
    try:
        with collector_paused():
            return _quick(text), SourceMap(name, text=text)
    except _Unusual:
        pass
    try:
        with collector_paused():
            data, builder = _read(text, name)
    except yaml.reader.ReaderError as exc:
        line, col = _position(text, exc.position)
        what = f"not valid YAML: control character U+{exc.character:04X}"
        raise ConfigError([Problem(name, line, col, what)]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = (
            "unsupported YAML value"
            if isinstance(exc, yaml.constructor.ConstructorError)
            else "not valid YAML"
        )
        raise ConfigError(
            [Problem(name, line, col, f"{what}: {exc.problem or exc.context}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, 1, 1, f"not valid YAML: {exc}")]) from exc
    if builder.problems:
        raise ConfigError(builder.problems)
    return data, builder.smap
