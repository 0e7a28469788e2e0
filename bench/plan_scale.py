"""Planning at scale: a dry run of the whole catalog over generated inventories of 100, 1,000 and
10,000 hosts.

Every runbook, with every method and `auto` (or its single procedure), is planned and printed as
a dry run (to an in-memory buffer) over one inventory of many sites (100 hosts each; 2 sites
for the smallest), each with a site server, distribution points with and without multicast and
PXE, and clients with and without WinRM. The inventory is loaded (YAML, validation) once, as one
process planning the whole catalog would; its load is in the figure and also printed on its own
(each separate `invoke remediate --dry-run` pays it once more).

Each size runs in a process of its own, so that its peak memory (ru_maxrss growth) is its own.
The growth table shows CPU (time.process_time) per host, which should stay flat or fall.
Targets, for 10,000 hosts: under 0.5 s of CPU for all of it, under 300 MB peak memory growth.

    python bench/plan_scale.py [--hosts N] [--profile]

`--hosts N` measures one size only; `--profile` (one size, 10,000 unless given) prints the top
of a cProfile, by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlab import ROOT, headline, inventory_yaml

CPU_TARGET = 0.5
MEMORY_TARGET_MB = 300
DPS_PER_SITE = 8


def dry_run_all(inventory_path: Path) -> tuple[int, int, int, list[str], float]:
    """(dry runs, planned target hosts, characters printed, runbooks that did not load, CPU
    seconds of the inventory load)."""
    from cmrunbook.docs.dryrun import print_dry_run
    from cmrunbook.errors import ConfigError, UsageError
    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.load.project import Project
    from cmrunbook.plan.planner import Planner

    catalog = Project(ROOT)
    cpu0 = time.process_time()
    inventory = load_inventory(inventory_path)
    load_cpu = time.process_time() - cpu0
    runs = targets = chars = 0
    broken: list[str] = []
    for runbook in catalog.ids():
        try:
            loaded = catalog.load(runbook)
        except (ConfigError, UsageError):
            broken.append(runbook)
            continue
        rb = loaded.runbook
        methods: list[str | None] = [m.id for m in rb.methods] + ["auto"] if rb.methods else [None]
        for method in methods:
            plan = Planner(catalog, loaded, inventory).plan(method=method)
            out = io.StringIO()
            print_dry_run(plan, catalog, out)
            runs += 1
            targets += len(plan.hosts)
            chars += len(out.getvalue())
    return runs, targets, chars, broken, load_cpu


def measure(hosts: int, *, profile: bool = False) -> dict[str, float | int | str]:
    """The figures of one size, measured in this process; with `profile`, the cProfile printed."""
    sites = max(2, hosts // 100)
    clients = hosts // sites - 1 - DPS_PER_SITE
    with tempfile.TemporaryDirectory() as tmp:
        inventory_path = Path(tmp) / "inventory.yaml"
        inventory_path.write_text(
            inventory_yaml(
                sites=sites,
                dps_per_site=DPS_PER_SITE,
                clients_per_site=clients,
                lab_routing=False,
                clients_without_winrm=0.5,
            )
        )
        size = inventory_path.stat().st_size
        # Imports are start-up cost (bench/startup.py), not planning: done before measuring.
        importlib.import_module("cmrunbook.docs.dryrun")  # and with it plan, catalog, inventory

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        profiler = cProfile.Profile() if profile else None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        runs, targets, chars, broken, load_cpu = dry_run_all(inventory_path)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if profiler:
        for order in ("tottime", "cumulative"):
            pstats.Stats(profiler).sort_stats(order).print_stats(15)
    return {
        "hosts": sites * (1 + DPS_PER_SITE + clients),
        "sites": sites,
        "yaml_mb": size / 1e6,
        "runs": runs,
        "targets": targets,
        "chars": chars,
        "broken": ", ".join(broken),
        "load_cpu": load_cpu,
        "cpu": cpu,
        "wall": wall,
        "rss_mb": rss / 1024,
        "growth_mb": (rss - rss0) / 1024,
    }


def report(row: dict[str, float | int | str]) -> None:
    """The figures of one size, in words."""
    print(
        f"inventory: {row['hosts']:,} hosts in {row['sites']} sites "
        f"({row['yaml_mb']:.1f} MB of YAML)"
    )
    print(
        f"dry runs: {row['runs']} (every runbook x every method and auto); "
        f"{row['targets']:,} target plans"
    )
    if row["broken"]:
        print(f"runbooks that do not load (left out): {row['broken']}")
    print(f"printed: {float(row['chars']) / 1e6:.1f} M characters (to an io.StringIO)")
    print(f"inventory load (YAML, validation): {row['load_cpu']:.2f}s CPU, once")
    per_run = float(row["cpu"]) / max(int(row["runs"]), 1) * 1000
    print(f"per dry run: {per_run:.0f} ms CPU; wall {row['wall']:.2f}s in all")
    print(f"peak memory: ru_maxrss {row['rss_mb']:.0f} MB, growth {row['growth_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, help="measure this size only (default: the table)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one table row
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.hosts)))
        return
    if args.hosts or args.profile:
        row = measure(args.hosts or 10_000, profile=args.profile)
        report(row)
    else:
        rows = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--hosts", str(n), "--json"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for n in (100, 1_000, 10_000)
        ]
        row = rows[-1]
        report(row)
        print()
        print(f"{'hosts':>8} {'load CPU':>9} {'CPU total':>10} {'CPU/host':>9} {'peak growth':>12}")
        for r in rows:
            per_host = r["cpu"] / r["hosts"] * 1e6
            print(
                f"{r['hosts']:>8,} {r['load_cpu']:>8.3f}s {r['cpu']:>9.3f}s "
                f"{per_host:>7.0f}us {r['growth_mb']:>10.0f}MB"
            )
    cpu, growth = float(row["cpu"]), float(row["growth_mb"])
    ok = cpu < CPU_TARGET and growth < MEMORY_TARGET_MB
    headline(
        f"cpu={cpu:.2f}s (target < {CPU_TARGET:g}s) peak_rss_growth={growth:.0f}MB "
        f"(target < {MEMORY_TARGET_MB}MB) for {row['runs']} dry runs over {row['hosts']:,} hosts "
        f"{'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
