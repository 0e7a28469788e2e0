"""WS-Management requests per remote step, and TCP connections per host per run, at the lab.

Runs the real engine (cmrunbook.run.orchestrate.execute_plan) for every runbook of the catalog and
every method, against lab hosts on 127.0.0.1 whose backend answers each script with a valid
result. Around each remote script the lab's own counters (server.stats) are read for that host,
so every figure is what the server saw, not what the client believes it sent.

Target: after a host's first step, at most 3 requests per remote step (Command, Send, Receive);
one TCP connection per host per run. For comparison, pywinrm's Session.run_ps on the same server.
Besides the WS-Man requests, each host's NTLM handshake costs HTTP requests of its own ("legs"):
1 (NEGOTIATE; the AUTHENTICATE leg carries the shell's Create), 2 for this process's first logon
(its AUTHENTICATE leg is an empty POST: no host had accepted the credential yet).

    python bench/requests_per_step.py
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlab import (
    HOSTS,
    PASSWORD,
    ROOT,
    RUN_PS_HOST,
    USER,
    QuietConsole,
    RunbookBackend,
    check_log_lines,
    headline,
    inventory_yaml,
    lab_connect,
    lab_server,
)

from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Planner
from cmrunbook.run.execute import Options
from cmrunbook.run.orchestrate import execute_plan

TARGET_PER_STEP = 3
RUN_PS_CALLS = 3


@dataclass
class HostFigures:
    steps: list[int] = field(default_factory=list)  # requests of each remote script
    connections: int = 0
    total: int = 0
    legs: int = 0  # HTTP requests that were handshake legs only


class Counted:
    """Wraps a host's transport: reads the lab's counters for that host around every script."""

    def __init__(self, inner: Any, name: str, server: Any, figures: HostFigures) -> None:
        self.inner, self.name, self.server, self.figures = inner, name, server, figures

    def _total(self) -> int:
        stats = self.server.stats.snapshot().get(self.name.lower())
        return stats.total_requests if stats else 0

    def run(self, script: str, *, deadline: float) -> Any:
        before = self._total()
        try:
            return self.inner.run(script, deadline=deadline)
        finally:
            self.figures.steps.append(self._total() - before)

    def close(self) -> None:
        self.inner.close()


def run_one(
    catalog: Project, server: Any, inventory_path: Path, runs: Path, runbook: str, method: Any
) -> tuple[dict[str, HostFigures], list[str]]:
    """One engine run: per host, what the lab counted; and each failed host's message."""
    loaded = catalog.load(runbook)
    inventory = load_inventory(inventory_path)
    plan = Planner(catalog, loaded, inventory).plan(method=method)
    figures: dict[str, HostFigures] = {}
    lock = threading.Lock()
    base = lab_connect(inventory, operation_timeout=5, read_timeout=10)

    def connect(name: str) -> Any:
        with lock:
            host = figures.setdefault(name, HostFigures())
        return Counted(base(name), name, server, host)

    server.stats.reset()
    options = Options(forks=4, yes=True, non_interactive=True, assume_manual_done=True)
    options.time_scale = 0.001  # log waits poll every 50 ms instead of every minute
    code = execute_plan(
        catalog, plan, options, runs_dir=runs, connect=connect, console=QuietConsole()
    )
    snapshot = server.stats.snapshot()
    for name, host in figures.items():
        stats = snapshot.get(name.lower())
        if stats is not None:
            host.connections, host.total = stats.connections, stats.total_requests
            host.legs = stats.http_requests - stats.total_requests
    failed: list[str] = []
    if code != 0:
        summary = sorted(runs.glob(f"*-{runbook}*/summary.txt"))[-1].read_text()
        failed = [" ".join(line.split()) for line in summary.splitlines()[1:] if " ok " not in line]
    return figures, failed


def run_ps_cost(server: Any) -> tuple[float, float]:
    """Requests and connections per call of pywinrm's Session.run_ps, at the lab."""
    import winrm

    server.stats.reset()
    session = winrm.Session(server.endpoint(), auth=(USER, PASSWORD), transport="ntlm")
    for i in range(RUN_PS_CALLS):
        result = session.run_ps(f"Write-Output 'call {i}'")
        assert result.status_code == 0, result
    stats = server.stats.snapshot()[RUN_PS_HOST]
    return stats.total_requests / RUN_PS_CALLS, stats.connections / RUN_PS_CALLS


def main() -> None:
    catalog = Project(ROOT)
    check_log_lines(catalog)
    backend = RunbookBackend(catalog)
    worst_step, worst_conn, failures = 0, 0, 0
    print(f"hosts: {HOSTS}")
    print("engine: cmrunbook.run.orchestrate.execute_plan, transport WinRMHost, NTLM + encryption")
    with tempfile.TemporaryDirectory() as tmp, lab_server(backend.backend) as server:
        inventory_path = Path(tmp) / "inventory.yaml"
        inventory_path.write_text(
            inventory_yaml(sites=2, dps_per_site=4, clients_per_site=4, port=server.port)
        )
        print(
            f"{'runbook':<20} {'method':<6} {'remote hosts':>12} {'scripts':>7} {'first':>5} "
            f"{'later max':>9} {'later mean':>10} {'conn/host max':>13} {'legs/host':>9} "
            f"{'wall s':>6}"
        )
        for runbook in catalog.ids():
            try:
                rb = catalog.load(runbook).runbook
            except Exception as exc:  # a runbook being written right now must not stop the rest
                print(f"{runbook:<20} skipped: does not load ({type(exc).__name__})")
                continue
            for method in [m.id for m in rb.methods] or [None]:
                started = time.perf_counter()
                result, failed = run_one(
                    catalog, server, inventory_path, Path(tmp) / "runs", runbook, method
                )
                wall = time.perf_counter() - started
                failures += bool(failed)
                firsts = [h.steps[0] for h in result.values() if h.steps]
                later = [n for h in result.values() for n in h.steps[1:]]
                conns = max(h.connections for h in result.values())
                step_max = max(later, default=0)
                worst_step = max(worst_step, step_max)
                worst_conn = max(worst_conn, conns)
                mean = sum(later) / len(later) if later else 0.0
                scripts = sum(len(h.steps) for h in result.values())
                legs = sorted({h.legs for h in result.values()})
                span = "-".join(str(n) for n in (legs[:1] + legs[-1:] if len(legs) > 1 else legs))
                print(
                    f"{runbook:<20} {method or '-':<6} {len(result):>12} {scripts:>7} "
                    f"{max(firsts, default=0):>5} {step_max:>9} {mean:>10.2f} {conns:>13} "
                    f"{span:>9} {wall:>6.2f}"
                )
                for line in failed:
                    print(f"    host failed (its scripts until then are counted): {line}")
        print("(first: requests of a host's first script, incl. the shell's Create; each run")
        print(" also ends with one Delete per host; later: every other script of that host;")
        print(" legs: HTTP requests of the NTLM handshake alone, per host, fewest-most)")
        per_call, conn_per_call = run_ps_cost(server)
        print(
            f"pywinrm Session.run_ps for comparison: {per_call:.1f} requests and "
            f"{conn_per_call:.1f} TCP connections per call ({RUN_PS_CALLS} calls)"
        )
    if failures:
        print(f"{failures} run(s) had failed hosts: their figures cover the scripts before it")
    ok = worst_step <= TARGET_PER_STEP and worst_conn == 1
    headline(
        f"requests_per_step_max={worst_step:.1f} (target <= {TARGET_PER_STEP}), "
        f"connections_per_host_max={worst_conn} (target 1) {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
