"""`invoke lab`: start the lab, simulated ConfigMgr sites behind a WinRM server on 127.0.0.1."""

from __future__ import annotations

import errno
import shlex
from pathlib import Path
from typing import Any

from cmrunbook.cli.common import cli_task
from cmrunbook.errors import UsageError

LAB_HELP = {
    "lab_file": "Lab file (YAML) describing sites, hosts, faults and delays (default: built in).",
    "port": "Port on 127.0.0.1 for the WS-Management server (default 55985).",
    "speed": "Run the lab's delays this many times faster (default 1).",
    "state": "Folder for the lab's inventory and credentials file (default lab-state/).",
    "from_inventory": "Simulate the sites and hosts of this inventory (e.g. one written by "
    "`invoke inventory from-site`); --lab-file then adds images, host state, delays and faults.",
    "fault": "With --from-inventory: HOST=KIND breaks a DP's multicast (image-flags, mcs-key, "
    "wds; repeatable).",
    "refuse_body_on_authenticate": "Answer a message sent on NTLM's last leg with 401, as OMI "
    "did before microsoft/omi#577 (Windows takes it): the client then logs on with an empty leg.",
}


#: The lab measures a settle on its own clock (`--speed` times faster) and the engine waits
#: `--time-scale` times as long: below 0.75 a verification ends before the lab's change settled
#: (README, "Try it for real: the lab").
MIN_SPEED_X_TIME_SCALE = 0.75


def matching_time_scale(speed: float) -> float:
    """The smallest round time-scale (10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, ...) with speed x
    time-scale still at MIN_SPEED_X_TIME_SCALE: the fastest client run this lab keeps up with."""
    steps = [round(m * 10.0**e, 12) for e in range(1, -10, -1) for m in (1, 0.5, 0.2)]
    return min(s for s in steps if speed * s >= MIN_SPEED_X_TIME_SCALE)


def client_commands(inventory: Path, env_file: Path, speed: float) -> list[str]:
    """What to run in a second terminal against this lab, each part explained."""
    scale = f"{matching_time_scale(speed):g}"
    inv = shlex.quote(str(inventory))
    return [
        "In another terminal:",
        f"  . {shlex.quote(str(env_file))}",
        f"  invoke remediate multicast --method auto --inventory {inv} --yes \\",
        f"      --assume-manual-done --time-scale {scale} --set verify_settle=1800",
        f"  invoke check client-hotfix --inventory {inv} --forks 20 --time-scale {scale}",
        f"--time-scale {scale}: the engine's waits to match --speed {speed:g} (keep speed x "
        f"time-scale >= {MIN_SPEED_X_TIME_SCALE:g}).",
        "--yes runs the destructive steps without asking; --assume-manual-done treats the "
        "console-only checks as done (the lab has no console). Without them the run asks.",
    ]


@cli_task(help=LAB_HELP, iterable=["fault"])
def lab(
    c: Any,
    lab_file: str | None = None,
    port: int = 55985,
    speed: float = 1.0,
    state: str = "lab-state",
    from_inventory: str | None = None,
    fault: list[str] | None = None,
    refuse_body_on_authenticate: bool = False,
) -> None:
    """Start the lab: simulated ConfigMgr hosts behind a WinRM server on 127.0.0.1 (Ctrl-C ends)."""
    import time

    from cmrunbook_lab.serve import start_lab

    if speed <= 0:
        raise UsageError(f"--speed {speed:g}: expected a number above 0")
    folder = Path(state)
    try:
        running = start_lab(
            folder / "inventory.yaml",
            lab_file=Path(lab_file) if lab_file else None,
            from_inventory=Path(from_inventory) if from_inventory else None,
            faults=fault,
            port=port,
            speed=speed,
            refuse_body_on_authenticate=refuse_body_on_authenticate,
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise UsageError(
            f"port {port} on 127.0.0.1 is in use (another lab?): stop it, or start this one "
            f"with --port N"
        ) from None
    env_file = running.write_env_file(folder / "credentials.env")
    hosts = running.inventory.hosts
    print(
        f"Lab listening on http://127.0.0.1:{running.server.port}/wsman/<host> ({len(hosts)} hosts)"
    )
    print(f"Inventory: {running.inventory_path}")
    for line in client_commands(running.inventory_path, env_file, speed):
        print(line)
    print("Ctrl-C stops the lab.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("lab stopped")
    finally:
        running.stop()
