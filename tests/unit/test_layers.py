"""The package's shape: imports point down the data flow.

The contract is `[tool.importlinter]` in pyproject.toml (layers cli > docs | run > logs > record >
render's script makers > plan > load > render's template engine > base; remote a leaf of run and
cli; the lab a site that uses only load, render and base). import-linter reads every import
statement, including those deferred into functions, so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The only imports the contract lets through, each named where it is declared in pyproject.toml.
ALLOWED_EXCEPTIONS = {
    "cmrunbook.cli.tasks -> cmrunbook_lab.serve",
    "cmrunbook_lab.ntlm -> cmrunbook.remote.winrm.ntlm_http",
    "cmrunbook_lab.wsman -> cmrunbook.remote.winrm.sealing",
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
