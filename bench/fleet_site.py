"""Fleet check through the site: `invoke check client-hotfix --via site` over generated clients.

Each size starts the lab (one 2012 R2 site whose generated Windows XP clients have no WinRM;
every 7th is missing from the software inventory) and runs the real CLI against it, on
127.0.0.1 only. Printed per size: wall time of the check (the lab's start is not counted),
the WS-Man requests the lab served (all hosts), requests per client, wall time per client, and
where the wall went by the journal's times: start (loading, planning), run, reports.

Targets (#14): 50,000 clients <= 60 s wall; requests independent of the number of clients;
cost per client flat or falling as the fleet grows.

    python bench/fleet_site.py [--sizes 100,1000,10000,50000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cmrunbook.record.journal_read import parse_time, read_events
from cmrunbook.run.locks import LOCK_DIR_ENV
from cmrunbook_lab.labfile import default_lab_path
from cmrunbook_lab.serve import start_lab

ROOT = Path(__file__).resolve().parent.parent
INVOKE = str(Path(sys.executable).with_name("invoke"))
TARGET_WALL = 60.0


def lab_file(folder: Path, count: int) -> Path:
    """The default lab with its generated fleet set to `count` clients without WinRM."""
    data = yaml.safe_load(default_lab_path().read_text(encoding="utf-8"))
    (fleet,) = data["clients"]
    fleet.update(count=count, no_winrm_every=1, not_inventoried_every=7)
    path = folder / f"lab-{count}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def phases(runs: Path, started: float, ended: float) -> tuple[float, float, float]:
    """Where the wall time went, from the journal's own times: start (loading and planning,
    until the run event), run (until run-end), reports and summary (after it)."""
    (journal,) = runs.glob("*/journal.jsonl")
    events = read_events(journal)[0]
    first, last = (parse_time(events[i]["time"]) for i in (0, -1))
    assert first is not None and last is not None
    return first.timestamp() - started, (last - first).total_seconds(), ended - last.timestamp()


def measure(folder: Path, count: int) -> tuple[float, dict[str, int], int, tuple[float, ...]]:
    """(wall seconds, WS-Man requests by action, exit code, phases) of one check over `count`
    clients."""
    running = start_lab(folder / f"lab{count}" / "inventory.yaml", lab_file=lab_file(folder, count))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMRUNBOOK_")}
        env.update(running.env())
        env[LOCK_DIR_ENV] = str(folder / "locks")
        cmd = [INVOKE, "check", "client-hotfix", "--via", "site", "--non-interactive"]
        cmd += ["--inventory", str(running.inventory_path), "--runs", str(folder / "runs")]
        running.server.stats.reset()
        runs = folder / f"runs-{count}"
        cmd[-1] = str(runs)
        started, since = time.perf_counter(), time.time()
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        split = phases(runs, since, time.time())
        requests: dict[str, int] = {}
        for stats in running.server.stats.snapshot().values():
            for action, n in stats.requests.items():
                requests[action] = requests.get(action, 0) + n
        if res.returncode not in (0, 1):
            print(res.stdout[-2000:], res.stderr[-2000:], file=sys.stderr)
        return wall, requests, res.returncode, split
    finally:
        running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000,50000")
    sizes = [int(x) for x in parser.parse_args().sizes.split(",")]
    print(
        f"{'clients':>8} {'wall s':>8} {'requests':>9} {'req/client':>11} {'ms/client':>10} exit"
        "   start s   run s  reports s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for count in sizes:
            wall, by_action, code, (start, run, reports) = measure(Path(tmp), count)
            requests = sum(by_action.values())
            print(
                f"{count:>8} {wall:>8.1f} {requests:>9} {requests / count:>11.4f} "
                f"{1000 * wall / count:>10.2f} {code:>4} {start:>9.1f} {run:>7.1f} "
                f"{reports:>10.1f}",
                flush=True,
            )
            print("         by action: " + ", ".join(f"{a} {n}" for a, n in by_action.items() if n))
            if count >= 50_000:
                verdict = "met" if wall <= TARGET_WALL and code in (0, 1) else "MISSED"
                print(f"target: {count} clients <= {TARGET_WALL:.0f} s wall: {verdict}")


if __name__ == "__main__":
    main()
