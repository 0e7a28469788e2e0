"""The package's shape: imports point down the data flow, and class names are unique.

The contract is `[tool.importlinter]` in pyproject.toml (layers cli > docs | run > logs > record >
render's script makers > plan > load > render's template engine > base; remote a leaf of run and
cli; the lab a site that uses only load, render and base). import-linter reads every import
statement, including those deferred into functions, so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (ROOT / "src" / "cmrunbook", ROOT / "src" / "cmrunbook_lab")

#: The only imports the contract lets through, each named where it is declared in pyproject.toml.
ALLOWED_EXCEPTIONS = {
    "cmrunbook.cli.lab -> cmrunbook_lab.serve",
}


def test_imports_keep_the_layer_contract(capsys: pytest.CaptureFixture[str]) -> None:
    importlinter_cli = pytest.importorskip("importlinter.cli")
    code = importlinter_cli.lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 broken" in out, out


def test_the_contract_lets_through_only_the_named_exceptions() -> None:
    """An `ignore_imports` added to make a new upward import pass would fail here first."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    ignored = {imp for c in contracts for imp in c.get("ignore_imports", [])}
    assert ignored == ALLOWED_EXCEPTIONS
    assert {c["type"] for c in contracts} >= {"layers", "acyclic_siblings", "forbidden"}


def test_no_two_classes_share_a_name() -> None:
    """A name means one thing across the tool and the lab (a reader, a traceback, an import
    must not have to ask which `Credentials` or `HostView` is meant)."""
    where: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    where[node.name].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert where, "no classes found: the scan looks in the wrong place"
    duplicates = {name: places for name, places in where.items() if len(places) > 1}
    assert duplicates == {}


def test_ruff_format_owns_every_python_file() -> None:
    """No formatter pragma (skip, off): the formatter, not a hand, lays out the code, the lab, the
    tests and the benches, so a diff shows what changed and not how it was spaced."""
    for folder in (*PACKAGES, ROOT / "tests", ROOT / "bench"):
        for path in folder.rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                assert "fmt: " + "skip" not in line, f"{path.relative_to(ROOT)}:{number}"
                assert "fmt: " + "off" not in line, f"{path.relative_to(ROOT)}:{number}"
