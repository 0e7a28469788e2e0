"""Fan-out: client-hotfix-check over 1,000 lab clients whose check takes 1 s, with --forks 100.

The engine (`run.orchestrate.execute_plan`, WinRMHost over NTLM with encryption) runs in this
process; the lab server, which plays all 1,000 clients (routed by URL path /wsman/<name>), runs in
a child process, as remote hosts would: its NTLM and encryption work is the hosts' CPU, not the
engine's. The hosts' backend sleeps 1 s in the TSCore.dll check and answers with a result
without data (the verdict is not what this bench measures).

Target: wall time / ideal (hosts x 1 s / forks) <= 1.25. Peak memory of the engine process is
shown (ru_maxrss). Leave a minute between runs: the TIME_WAIT count printed first says whether
the previous run's connections still weigh on this one.

    python bench/fanout.py [--hosts 1000] [--forks 100] [--in-process]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import multiprocessing as mp
import pstats
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlab import (
    HOSTS,
    ROOT,
    QuietConsole,
    RunbookBackend,
    headline,
    inventory_yaml,
    lab_connect,
    lab_server,
)

RUNBOOK = "client-hotfix-check"
CHECK_SECONDS = 1.0
CHECK_STEP = r"^client-hotfix-check steps/client\.tscore-file$"
TARGET_RATIO = 1.25
CLIENTS_PER_SITE = 100


def serve(port_queue: Any, stop: Any, stats_queue: Any, seconds: float) -> None:
    """The lab in a child process: serve until told to stop, then hand back its counters."""
    from cmrunbook.load.project import Project

    backend = RunbookBackend(Project(ROOT), delays={CHECK_STEP: seconds})
    with lab_server(backend.backend) as server:
        port_queue.put(server.port)
        stop.wait(600)
        snapshot = server.stats.snapshot()
        stats_queue.put(
            {
                "hosts": len(snapshot),
                "connections": sum(s.connections for s in snapshot.values()),
                "requests": sum(s.total_requests for s in snapshot.values()),
                "http_requests": sum(s.http_requests for s in snapshot.values()),
                "max_connections": max((s.connections for s in snapshot.values()), default=0),
            }
        )


def time_wait_sockets() -> int | None:
    """TCP sockets in TIME_WAIT on this machine (Linux), or None where that cannot be read.

    A run leaves its 1,000 closed connections in TIME_WAIT for 60 s, and while they last every
    new connect() searches longer for a free port: a run started right after another one spends
    noticeably more CPU on connecting, and its ratio shows it.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                count += sum(1 for line in handle if line.split()[3:4] == ["06"])
        except OSError:
            return None
    return count


class ThreadProfiles:
    """cProfile in every thread the engine starts (cProfile sees only its own thread), merged.

    The engine's CPU is spread over --forks worker threads; a profile of the main thread alone
    would show them waiting.
    """

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start)
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        self.profiles[0].disable()

    def _start(self, *_: object) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU, not the waits
        with self._lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this hook in the calling thread

    def report(self, top: int) -> None:
        stats = pstats.Stats(self.profiles[0], stream=sys.stdout)
        for profile in self.profiles[1:]:
            stats.add(profile)
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--forks", type=int, default=100)
    parser.add_argument("--check-seconds", type=float, default=CHECK_SECONDS)
    parser.add_argument("--in-process", action="store_true", help="lab in this process too")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="profile the engine's threads; print the top N"
    )
    args = parser.parse_args()

    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.load.project import Project
    from cmrunbook.plan.planner import Planner
    from cmrunbook.run.execute import Options
    from cmrunbook.run.orchestrate import execute_plan

    print(f"hosts: {HOSTS}")
    waiting = time_wait_sockets()
    print(f"TIME_WAIT sockets at start: {'unknown' if waiting is None else waiting}")
    ctx = mp.get_context("spawn")
    port_queue, stats_queue, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    child = None
    local = None
    if args.in_process:
        local = lab_server(
            RunbookBackend(Project(ROOT), delays={CHECK_STEP: args.check_seconds}).backend
        )
        port = local.__enter__().port
    else:
        child = ctx.Process(
            target=serve, args=(port_queue, stop, stats_queue, args.check_seconds), daemon=True
        )
        child.start()
        port = port_queue.get(timeout=60)
    sites = max(1, args.hosts // CLIENTS_PER_SITE)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inventory_path = Path(tmp) / "inventory.yaml"
            inventory_path.write_text(
                inventory_yaml(
                    sites=sites,
                    dps_per_site=0,
                    clients_per_site=args.hosts // sites,
                    port=port,
                    clients_without_winrm=0,
                    versions=("2012r2",),
                )
            )
            catalog = Project(ROOT)
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            inventory = load_inventory(inventory_path)
            plan = Planner(catalog, catalog.load(RUNBOOK), inventory).plan(method=None)
            t_plan = time.perf_counter() - t0
            options = Options(forks=args.forks, yes=True, non_interactive=True)
            console = QuietConsole()
            profiles = ThreadProfiles() if args.profile else None
            t1 = time.perf_counter()
            with profiles or contextlib.nullcontext():
                code = execute_plan(
                    catalog,
                    plan,
                    options,
                    runs_dir=Path(tmp) / "runs",
                    connect=lab_connect(inventory, operation_timeout=20, read_timeout=30),
                    console=console,
                )
            t_run = time.perf_counter() - t1
            cpu = time.process_time() - cpu0
            summary = next((Path(tmp) / "runs").glob(f"*-{RUNBOOK}/summary.txt")).read_text()
    finally:
        if child is not None:
            stop.set()
        if local is not None:
            local.__exit__(None, None, None)
    stats = stats_queue.get(timeout=60) if child is not None else None
    if child is not None:
        child.join(timeout=30)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lab_cpu = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    targets = len(plan.hosts)
    ideal = max(targets * args.check_seconds / args.forks, 1e-9)
    ok_hosts = sum(1 for line in summary.splitlines()[1:] if line.split()[2:3] == ["ok"])
    print(
        f"{targets} clients, --forks {args.forks}, check {args.check_seconds:g}s per client; "
        f"lab {'in this process' if args.in_process else 'in a child process'}"
    )
    print(f"load + plan: {t_plan:.2f}s; run: {t_run:.2f}s wall, engine CPU {cpu:.1f}s")
    print(f"hosts ok: {ok_hosts} of {targets}; exit code {code}")
    if stats:
        print(
            f"lab counted {stats['requests']} WS-Man requests in {stats['http_requests']} HTTP "
            f"requests (the rest is the NTLM handshake), {stats['connections']} TCP connections "
            f"over {stats['hosts']} hosts (max {stats['max_connections']} per host); "
            f"lab CPU {lab_cpu:.1f}s"
        )
    print(
        f"engine peak memory (ru_maxrss): {rss / 1024:.0f} MB ({rss_before / 1024:.0f} MB before)"
    )
    ratio = t_run / ideal
    good = ratio <= TARGET_RATIO and ok_hosts == targets
    if profiles is not None:
        profiles.report(args.profile)
    headline(
        f"wall_over_ideal={ratio:.2f} ({t_run:.1f}s / {ideal:.1f}s, target <= {TARGET_RATIO}) "
        f"peak_rss={rss / 1024:.0f}MB {'PASS' if good else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
