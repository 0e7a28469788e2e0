"""The quick YAML reader (no marks) and the marked builder must agree on every file.

A valid file of plain keys and values is read without marks and its marks are found only when
asked for; anything the marked builder would refuse, report or treat specially must be left to
it, so that an error still names its file, line and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_engine import EXAMPLE_INVENTORY, REPO

from cmrunbook.errors import ConfigError
from cmrunbook.load import sourcemap
from cmrunbook.load.sourcemap import _quick, _read, _Unusual, load_yaml

PLAIN = [
    "a: 1\nb: [x, 'y', \"z\"]\nc: {d: null, e: yes, f: 0777, g: 12:30, h: 1.5, i: 2024-01-02}\n",
    "- a\n- - b\n  - {c: ~}\n- ''\n-\n",  # empty values
    'top: |\n  two\n  lines\nkey with spaces: "esc\\u00e9"\n',
    "just a scalar\n",
    "on: off\nno: y\n",  # keys verbatim, values typed
]

UNUSUAL = [
    "a: &x 1\nb: *x\n",  # anchor and alias
    "a: !!str 0777\n",  # explicit tag
    "a: ! x\n",  # non-specific tag
    "a: 1\na: 2\n",  # duplicate key
    "base: {x: 1}\nc:\n  <<: {y: 2}\n",  # merge key
    "? [a]\n: 1\n",  # a key that is no scalar
    'a: "\\udc80"\n',  # lone surrogate
    '"\\udc80": 1\n',  # lone surrogate in a key
    "a: 1\n---\nb: 2\n",  # two documents
    "",  # no document
    "# only a comment\n",
    "a: [unclosed\n",  # parse error
    "[" * 70 + "]" * 70,  # deeper than MAX_DEPTH
]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_files_read_alike(text: str) -> None:
    """Same values, same types (True is not 1), as the marked builder gives."""
    quick, marked = _quick(text), _read(text, "f.yaml")[0]
    assert quick == marked
    assert repr(quick) == repr(marked)


@pytest.mark.parametrize("path", [EXAMPLE_INVENTORY, *sorted((REPO / "runbooks").glob("*.yaml"))])
def test_project_files_read_alike(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert repr(_quick(text)) == repr(_read(text, str(path))[0])


@pytest.mark.parametrize("text", UNUSUAL)
def test_unusual_files_are_left_to_the_marked_builder(text: str) -> None:
    with pytest.raises(_Unusual):
        _quick(text)


def test_marks_are_found_when_first_asked_for(tmp_path: Path) -> None:
    """A quickly read file still locates each value and key, and knows what was written."""
    path = tmp_path / "f.yaml"
    path.write_text("a:\n  b: [x, yes]\n  c: 0777\n")
    data, smap = load_yaml(path)
    assert data == {"a": {"b": ["x", True], "c": 511}}
    assert smap.locate(("a", "b", 1)) == (2, 10)
    assert smap.locate(("a", "c"), key=True) == (3, 3)
    assert smap.written[("a", "c")] == "0777"
    assert smap.problem(("a", "zz"), "m").line == 2  # nearest ancestor


def test_a_large_file_is_read_by_the_marked_builder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the quick reader's size the value-count limit must apply: no quick read."""
    monkeypatch.setattr(sourcemap, "MAX_VALUES", 10)
    monkeypatch.setattr(sourcemap, "QUICK_MAX_CHARS", 5)
    path = tmp_path / "f.yaml"
    path.write_text("[" + ",".join("1" * 20) + "]\n")
    with pytest.raises(ConfigError, match="more than 10 values"):
        load_yaml(path)
