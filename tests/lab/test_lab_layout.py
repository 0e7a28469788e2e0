"""How the lab's code is laid out, and what it may import.

A reader looking for the lab's answer to ``templates/<folder>/<name>.ps1.j2`` opens
``cmrunbook_lab/sims/<folder>.py``; the WinRM service is one module per protocol layer, each
importing only layers below it; and the lab shares no code with the engine's WinRM client, so a
bug in one end of the wire cannot be mirrored by the other. These tests keep those promises.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cmrunbook_lab import interpreter
from cmrunbook_lab.sims import (
    boot_image,
    bootsect,
    checks,
    engine,
    inventory,
    multicast,
    publish,
)

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "src" / "cmrunbook_lab"
# The WinRM service's layers, bottom first: a module may import only modules before it.
WINRM_LAYERS = ("cmdline", "commands", "soap", "shells", "control", "ntlm", "encryption", "server")
SIMULATORS = {
    "boot-image": boot_image,
    "bootsect": bootsect,
    "checks": checks,
    "engine": engine,
    "inventory": inventory,
    "multicast": multicast,
    "publish": publish,
}


def test_each_simulator_answers_only_templates_of_its_own_folder() -> None:
    for folder, module in SIMULATORS.items():
        assert module.__name__.rsplit(".", 1)[-1] == folder.replace("-", "_")
        names = [op.name for op in module.OPERATIONS]
        assert names, f"{module.__name__} declares no operation"
        for name in names:
            assert name.split("/", 1)[0] == folder, f"{module.__name__} answers {name}"
            assert (REPO / "templates" / f"{name}.ps1.j2").is_file(), f"no template for {name}"


def test_the_interpreter_tries_every_simulator_operation_once() -> None:
    declared = [op.name for module in SIMULATORS.values() for op in module.OPERATIONS]
    tried = [op.name for op in interpreter.OPERATIONS]
    assert sorted(tried) == sorted(declared)
    assert len(set(tried)) == len(tried)


def _imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(module imported, the statement, whether it sits at module level) for every import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    for node in tree.body:  # `if TYPE_CHECKING:` blocks count as module level
        if isinstance(node, ast.If):
            top.update(map(id, node.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(name, node, id(node) in top) for name in names]
    return found


def test_the_lab_imports_nothing_of_the_engines_winrm_client() -> None:
    for path in LAB.rglob("*.py"):
        for name, node, _ in _imports(path):
            assert not name.startswith("cmrunbook.remote"), (
                f"{path.relative_to(REPO)}:{node.lineno} imports {name}"
            )


def test_no_import_in_the_lab_is_deferred_into_a_function() -> None:
    for path in LAB.rglob("*.py"):
        for name, node, top in _imports(path):
            assert top, f"{path.relative_to(REPO)}:{node.lineno} imports {name} inside code"


def test_each_winrm_layer_imports_only_layers_below_it() -> None:
    assert sorted(p.stem for p in (LAB / "winrm").glob("*.py")) == sorted(
        ("__init__", *WINRM_LAYERS)
    )
    for rank, layer in enumerate(WINRM_LAYERS):
        for name, node, _ in _imports(LAB / "winrm" / f"{layer}.py"):
            if not name.startswith("cmrunbook_lab"):
                continue
            assert name.startswith("cmrunbook_lab.winrm."), f"{layer}:{node.lineno} imports {name}"
            target = name.split(".")[2]
            assert target in WINRM_LAYERS[:rank], f"{layer}:{node.lineno} imports {target}"
