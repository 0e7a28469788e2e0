"""A running lab: the simulated hosts of a lab file behind one WS-Management server on 127.0.0.1.

Used by `invoke lab` (for a person to try every runbook for real) and by the end-to-end tests.
The lab's password is made up at each start and handed over through the environment (an env
file readable only by its owner), never written into the inventory.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cmrunbook.errors import UsageError
from cmrunbook.load.inventory import Inventory
from cmrunbook_lab.from_inventory import lab_file_from_inventory, parse_faults
from cmrunbook_lab.inventory_out import write_inventory
from cmrunbook_lab.winrm.server import LabServer
from cmrunbook_lab.world import Lab

LAB_USER = "LAB\\cmrunbook"


@dataclass
class RunningLab:
    lab: Lab
    server: LabServer
    inventory_path: Path
    inventory: Inventory
    username: str
    password: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """The environment a cmrunbook run against this lab needs (the inventory names it)."""
        return {"CMRUNBOOK_USER": self.username, "CMRUNBOOK_PASSWORD": self.password}

    def write_env_file(self, path: Path) -> Path:
        """`source`-able credentials, readable by the owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for key, value in self.env().items():
                fh.write(f"export {key}='{value}'\n")
        return path

    def stop(self) -> None:
        self.server.stop()


def start_lab(
    inventory_path: Path,
    *,
    lab_file: Path | None = None,
    from_inventory: Path | None = None,
    faults: list[str] | None = None,
    port: int = 0,
    speed: float | None = None,
    password: str | None = None,
    refuse_body_on_authenticate: bool = False,
) -> RunningLab:
    """Serve a lab and write its inventory. The lab is the lab file (default: the packaged one),
    or with `from_inventory` the sites and hosts of that inventory, which the lab file then only
    completes (images, host state, delays, faults); `faults` are `--fault HOST=KIND` values;
    `refuse_body_on_authenticate` makes the server answer a message on NTLM's last leg with 401
    (OMI before microsoft/omi#577; Windows takes it)."""
    if from_inventory is not None:
        spec = lab_file_from_inventory(from_inventory, lab_file, parse_faults(faults or []))
        lab = Lab(spec, source=str(from_inventory))
    elif faults:
        raise UsageError("--fault needs --from-inventory (a lab file names its own faults)")
    else:
        lab = Lab.load(lab_file)
    if speed:
        lab.speed = speed
    # What the lab changes is appended next to its inventory: <state>/changes.jsonl.
    inventory_path.parent.mkdir(parents=True, exist_ok=True)
    lab.changes_path = inventory_path.parent / "changes.jsonl"
    password = password or secrets.token_urlsafe(18)
    server = LabServer(
        lab.backend,
        users={LAB_USER: password},
        port=port,
        refuse_body_on_authenticate=refuse_body_on_authenticate,
    )
    lab.on_host_down.append(server.drop_shells)
    server.start()
    try:
        inventory = write_inventory(
            lab, inventory_path, lambda name: (server.port, f"/wsman/{name}")
        )
    except BaseException:
        server.stop()
        raise
    return RunningLab(lab, server, inventory_path, inventory, LAB_USER, password)
