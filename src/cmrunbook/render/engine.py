"""The engine's own scripts: arming and reading the log monitor, the distribution status, a
host's boot time and a restart.

They are not runbook steps but are made like them (templates under `templates/engine/`, the same
prelude, header and result line), and named `engine/<name>` in their header so a journal, a
site's audit and the lab can tell them from a runbook's own steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cmrunbook.load.context import site_context
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import HostPlan, Plan
from cmrunbook.render.steps import script_header


class EngineScript(NamedTuple):
    """A script of the engine: its name (journaled as `engine-<name>`) and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class EngineScripts:
    """The engine's scripts for one target host of a plan; `on` is the host a script runs on."""

    catalog: Project
    plan: Plan
    hp: HostPlan

    def _make(self, on: str, template: str, name: str, **values: Any) -> EngineScript:
        ctx = {
            "host": self.plan.inventory.hosts[on].as_context(),
            "target": self.hp.target.as_context(),
            **values,
        }
        header = script_header(self.plan, f"engine/{name}", "read-only", self.hp.target.name, on)
        return EngineScript(name, self.catalog.renderer.script(f"engine/{template}", ctx, header))

    def log_arm(self, on: str, logs: Sequence[str], dirs: Sequence[str]) -> EngineScript:
        """Finds each log (in `dirs`) and reports its size, so the wait reads only what follows."""
        return self._make(on, "log_arm.ps1.j2", "log-arm", logs=logs, dirs=list(dirs))

    def log_read(self, on: str, watches: dict[str, dict[str, Any]], max_bytes: int) -> EngineScript:
        """Reads what each watched log gained since its offset, at most `max_bytes` a log."""
        return self._make(on, "log_read.ps1.j2", "log-read", watches=watches, max_bytes=max_bytes)

    def dist_status(self, on: str, package_id: str) -> EngineScript:
        """Reads a package's distribution status rows from the target's site's SMS Provider."""
        site = site_context(self.hp.target)
        return self._make(on, "dist_status.ps1.j2", "dist-status", site=site, package_id=package_id)

    def boot_time(self, on: str) -> EngineScript:
        """Reads the host's last boot time, to tell when a restart has happened."""
        return self._make(on, "boot_time.ps1.j2", "boot-time")

    def restart(self, on: str, reason: str) -> EngineScript:
        """Restarts the host with `reason` (the step's KB citation) as the restart's comment."""
        return self._make(on, "restart.ps1.j2", "restart", reason=reason)
