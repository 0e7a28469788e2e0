"""Planning at scale: a dry run of the whole catalog over a generated 10,000-host inventory.

Every runbook, with every method and `auto` (or its single procedure), is planned and printed as
a dry run (to an in-memory buffer) over one inventory of many sites, each with a site server,
distribution points with and without multicast and PXE, and clients with and without WinRM. The
inventory is loaded (YAML, validation) once, as one process planning the whole catalog would; its
load is in the figure and also printed on its own (each separate `invoke remediate --dry-run`
pays it once more).

Targets: under 2 s of CPU (time.process_time) for all of it, under 300 MB peak memory
(ru_maxrss growth).

    python bench/plan_scale.py [--hosts 10000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import resource
import tempfile
import time
from pathlib import Path

from benchlab import ROOT, headline, inventory_yaml

CPU_TARGET = 2.0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    args = parser.parse_args()
    sites = 100
    clients = args.hosts // sites - 1 - DPS_PER_SITE
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
        hosts = sites * (1 + DPS_PER_SITE + clients)
        size = inventory_path.stat().st_size
        # Imports are start-up cost (bench/startup.py), not planning: done before measuring.
        importlib.import_module("cmrunbook.docs.dryrun")  # and with it plan, catalog, inventory

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        profiler = cProfile.Profile() if args.profile else None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        runs, targets, chars, broken, load_cpu = dry_run_all(inventory_path)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"inventory: {hosts:,} hosts in {sites} sites ({size / 1e6:.1f} MB of YAML)")
    print(f"dry runs: {runs} (every runbook x every method and auto); {targets:,} target plans")
    if broken:
        print(f"runbooks that do not load (left out): {', '.join(broken)}")
    print(f"printed: {chars / 1e6:.1f} M characters (to an io.StringIO)")
    print(f"inventory load (YAML, validation): {load_cpu:.2f}s CPU, once")
    print(f"per dry run: {cpu / max(runs, 1) * 1000:.0f} ms CPU; wall {wall:.2f}s in all")
    growth = (rss - rss0) / 1024
    print(f"peak memory: ru_maxrss {rss / 1024:.0f} MB, growth {growth:.0f} MB")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    ok = cpu < CPU_TARGET and growth < MEMORY_TARGET_MB
    headline(
        f"cpu={cpu:.2f}s (target < {CPU_TARGET:g}s) peak_rss_growth={growth:.0f}MB "
        f"(target < {MEMORY_TARGET_MB}MB) for {runs} dry runs over {hosts:,} hosts "
        f"{'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
