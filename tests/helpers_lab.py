"""Driving the lab's simulated hosts directly, without the network: the lab and a script run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmrunbook.load.project import Project
from cmrunbook.remote.winrm.host import BOOTSTRAP_ARGUMENTS, POWERSHELL
from cmrunbook.render.result import parse_result
from cmrunbook_lab.clock import ManualClock
from cmrunbook_lab.labfile import LabFile, load_lab_file
from cmrunbook_lab.world import Lab

PROJECT = Project(Path(__file__).resolve().parents[1])


def sim_lab(edit: Callable[[dict[str, Any]], None] | None = None) -> tuple[Lab, ManualClock]:
    """The default lab on a manual clock; `edit` may change its lab-file data first."""
    data = load_lab_file().model_dump()
    if edit is not None:
        edit(data)
    clock = ManualClock()
    return Lab(LabFile.model_validate(data), clock), clock


def run(lab: Lab, host: str, script: str) -> tuple[dict[str, Any] | None, bytes, int | None]:
    """Run a script as the transport does: bootstrap on the command line, script on stdin."""
    backend = lab.backend(host)
    assert backend is not None, f"{host} has no WinRM"
    cmd = backend.start_command(POWERSHELL, list(BOOTSTRAP_ARGUMENTS))
    cmd.send_input(script.encode("utf-8"), True)
    out, err, done, code = cmd.receive(0.01)
    if not done:
        return None, err, None
    result = parse_result(out.decode("utf-8"))
    return (result.__dict__ if result else None), err, code


def make_lab(**dp_changes: dict[str, Any]) -> tuple[Lab, ManualClock]:
    """The lab with some DPs' `dp` settings changed (e.g. a multicast fault)."""

    def change(data: dict[str, Any]) -> None:
        for host, changes in dp_changes.items():
            data["hosts"][host]["dp"].update(changes)

    return sim_lab(change)


def engine_script(name: str, header: str, **ctx: Any) -> str:
    return PROJECT.renderer.script(f"engine/{name}.ps1.j2", ctx, f"cmrunbook engine | {header}")
