"""The transport behind one interface: the engine sees cmrunbook.remote, never WinRM.

cmrunbook.remote (Remote, CommandResult, TransportError) imports nothing outside the standard
library, so the engine and its in-process tests run without pywinrm, requests or pyspnego; the
only module outside remote/winrm that builds WinRM hosts is run/connect.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cmrunbook"
TRANSPORT = ("winrm", "requests", "spnego", "urllib3", "http.client")
#: The one factory from an inventory host to a WinRM host.
FACTORY = PACKAGE / "run" / "connect.py"


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _is(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def test_only_remote_winrm_imports_the_transport_libraries() -> None:
    winrm_dir = PACKAGE / "remote" / "winrm"
    offenders = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in PACKAGE.rglob("*.py")
        if winrm_dir not in path.parents
        for name in _imports(path)
        if any(_is(name, lib) for lib in TRANSPORT)
    }
    assert offenders == set()


def test_only_the_factory_imports_remote_winrm() -> None:
    winrm_dir = PACKAGE / "remote" / "winrm"
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if winrm_dir not in path.parents
        and any(_is(name, "cmrunbook.remote.winrm") for name in _imports(path))
    }
    assert users == {str(FACTORY.relative_to(PACKAGE))}


def test_the_engine_loads_without_the_transport() -> None:
    """Importing the interface and the executor loads no transport library (a fresh process)."""
    code = (
        "import sys, cmrunbook.remote, cmrunbook.run.execute, cmrunbook.run.orchestrate\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TRANSPORT[:4]!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
