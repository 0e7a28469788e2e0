"""`invoke lab`: start the lab, simulated ConfigMgr sites behind a WinRM server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmrunbook.cli.common import cli_task

LAB_HELP = {
    "lab_file": "Lab file (YAML) describing sites, hosts, faults and delays (default: built in).",
    "port": "Port on 127.0.0.1 for the WS-Management server (default 55985).",
    "speed": "Run the lab's delays this many times faster (default 1).",
    "state": "Folder for the lab's inventory and credentials file (default lab-state/).",
}


@cli_task(help=LAB_HELP)
def lab(
    c: Any,
    lab_file: str | None = None,
    port: int = 55985,
    speed: float = 1.0,
    state: str = "lab-state",
) -> None:
    """Start the lab: simulated ConfigMgr hosts behind a WinRM server on 127.0.0.1 (Ctrl-C ends)."""
    import time

    from cmrunbook_lab.serve import start_lab

    folder = Path(state)
    running = start_lab(
        folder / "inventory.yaml",
        lab_file=Path(lab_file) if lab_file else None,
        port=port,
        speed=speed,
    )
    env_file = running.write_env_file(folder / "credentials.env")
    hosts = running.inventory.hosts
    print(
        f"Lab listening on http://127.0.0.1:{running.server.port}/wsman/<host> ({len(hosts)} hosts)"
    )
    print(f"Inventory: {running.inventory_path}")
    print("In another terminal:")
    print(f"  . {env_file}")
    print(f"  invoke remediate multicast --method 4 --inventory {running.inventory_path} --yes")
    print(f"  invoke check client-hotfix --inventory {running.inventory_path}")
    print("Ctrl-C stops the lab.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("lab stopped")
    finally:
        running.stop()
