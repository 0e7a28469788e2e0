"""Every runbook, every method, every target host of the example inventory: every script parses.

A PowerShell syntax error is only found on a real host, in the middle of a procedure, after the
steps before it have changed things. These tests render every script a run could send (probes
included) and parse it with tree-sitter-pwsh, so such an error fails here instead. Runbooks are
discovered from runbooks/, so a new runbook is covered the day it lands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers_engine import (
    EXAMPLE_INVENTORY,
    REPO,
    parse_ps,
    render_all,
    run_cli,
    syntax_problems,
)

from cmrunbook.load.inventory import Inventory, load_inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Planner

CATALOG = Project(REPO)
RUNBOOK_IDS = CATALOG.ids()


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return load_inventory(EXAMPLE_INVENTORY)


def modes(runbook_id: str) -> list[tuple[str | None, bool]]:
    """(method, rollback) for every way the runbook can be run."""
    rb = CATALOG.load(runbook_id).runbook
    out: list[tuple[str | None, bool]] = [(m.id, False) for m in rb.methods]
    out += [("auto", False)] if rb.methods else [(None, False)]
    if rb.rollback:
        out.append((out[0][0], True))
    return out


def test_the_catalog_is_not_empty() -> None:
    """The matrix below is vacuous without runbooks; multicast is the first and must be there."""
    assert "multicast" in RUNBOOK_IDS


def test_syntax_check_reports_the_bad_line() -> None:
    """Positive control: the checker used below finds a broken script and names its line."""
    script = "$a = 1\nif ($a {\n    'x'\n"
    problems = syntax_problems(script)
    assert problems, "an unclosed if condition must be reported"
    assert problems[0].startswith("line 2:"), problems
    assert syntax_problems("$a = 1\nif ($a) {\n    'x'\n}\n") == []


@pytest.mark.parametrize("runbook_id", RUNBOOK_IDS)
def test_every_method_and_target_renders_scripts_that_parse(
    runbook_id: str, inventory: Inventory
) -> None:
    """Each method (and auto, and rollback) × each target host: scripts render and parse."""
    loaded = CATALOG.load(runbook_id)
    planner = Planner(CATALOG, loaded, inventory)
    failures: list[str] = []
    for method, rollback in modes(runbook_id):
        mode = f"--method {method}" if method else "(no method)"
        mode += " --rollback" if rollback else ""
        plan = planner.plan(method=method, rollback=rollback)
        assert plan.hosts, f"{runbook_id} {mode}: no target host in {EXAMPLE_INVENTORY.name}"
        scripts = render_all(CATALOG, plan)
        assert scripts, f"{runbook_id} {mode}: nothing rendered"
        for label, script in scripts:
            bad = syntax_problems(script)
            if bad:
                failures.append(f"{runbook_id} {mode} {label}: {bad[0]}")
    assert not failures, "scripts that do not parse:\n" + "\n".join(failures)


@pytest.mark.parametrize("runbook_id", RUNBOOK_IDS)
def test_cli_out_files_parse(runbook_id: str, tmp_path: Path) -> None:
    """The files `--dry-run --out DIR` writes (what a change board reads) parse, one by one."""
    rb = CATALOG.load(runbook_id).runbook
    runs = [["--method", "auto"] if rb.methods else []]
    if rb.rollback:
        runs.append(["--rollback"])
    failures = []
    for n, extra in enumerate(runs):
        out = tmp_path / str(n)
        result = run_cli("remediate", runbook_id, "--dry-run", "--out", str(out), *extra)
        assert result.returncode == 0, result.stderr
        files = sorted(out.rglob("*.ps1"))
        assert files, f"{runbook_id} {extra}: --out wrote no script"
        for path in files:
            bad = syntax_problems(path.read_text("utf-8"))
            if bad:
                failures.append(f"{' '.join(extra)} {path.relative_to(out)}: {bad[0]}")
    assert not failures, "scripts that do not parse:\n" + "\n".join(failures)


def engine_context(template: str, inventory: Inventory) -> dict[str, Any]:
    """Plausible values for the engine's own scripts (log monitor, reboot), as the executor."""
    host = inventory.hosts["cm07-dp01"].as_context()
    return {
        "host": host,
        "target": host,
        "site": {"code": "C07", "install_dir": host["install_dir"]},
        "params": {},
        "step": {"id": "x", "key": "method:3/x", "kb": "Method 3, step 6", "title": "t"},
        "runbook": {"id": "multicast", "kb": "KB971413"},
        "logs": ["MCSSetup.log", "MCSMSI.log"],
        "dirs": [r"{install_dir}\Logs", r"C:\SMS\Logs"],
        "watches": {"MCSSetup.log": {"path": r"C:\SMS\Logs\MCSSetup.log", "offset": 1024}},
        "max_bytes": 1048576,
        "reason": "cmrunbook multicast: Method 4, step 6",
        "paths": [r"C:\StageNT\SMSOSD\OSDLogs\OSDLaunch.log", r"%windir%\Temp\smsts.log"],
    }


@pytest.mark.parametrize(
    "template",
    sorted(
        p.relative_to(REPO / "templates").as_posix()
        for p in (REPO / "templates").glob("engine/*.ps1.j2")
    ),
)
def test_engine_scripts_parse(template: str, inventory: Inventory) -> None:
    """The engine's scripts (arm and read a log, boot time, pending restart, restart) parse too."""
    refs = CATALOG.renderer.references(template)
    context = engine_context(template, inventory)
    for name in sorted(set(refs.names) - set(context)):
        # A name this test does not know yet: a list of paths is the usual shape; if the
        # template needs another, rendering fails here and engine_context() needs the name.
        context[name] = [r"C:\SMS\Logs\a.log", "b"]
    script = CATALOG.renderer.script(template, context, f"engine {template}")
    assert parse_ps(script).root_node.type == "program"
    assert syntax_problems(script) == [], f"{template}: {syntax_problems(script)[0]}"
