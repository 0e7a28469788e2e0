"""Start-up: `invoke --list` and a one-runbook dry run, and what each heavy import costs.

Wall times are the median of several runs of the real command line (context only: they vary
with the machine). The import figures come from `python -X importtime`: the cumulative cost of
each heavy dependency where the command imports it, and "-" where it does not import it at all,
which is the figure that matters: a dependency a command never imports costs it nothing.

Target: neither `invoke --list` nor a dry run imports winrm, requests or spnego (the transport).

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

from benchlab import ROOT, headline

HEAVY = ("winrm", "requests", "spnego", "pydantic", "jinja2", "yaml", "invoke")
TRANSPORT = ("winrm", "requests", "spnego")
DRY_RUN = ["-m", "invoke", "remediate", "multicast", "--method", "3", "--dry-run"]
COMMANDS: dict[str, list[str]] = {
    "invoke --list": ["-m", "invoke", "--list"],
    "dry run (multicast, method 3)": DRY_RUN,
    "import cmrunbook.cli.collection": ["-c", "import cmrunbook.cli.collection"],
}
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def run(args: list[str], *, importtime: bool = False) -> tuple[float, str]:
    """Wall seconds and stderr of `python [-X importtime] args` in the project folder."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), *args]
    started = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"bench: {' '.join(args)} failed ({done.returncode}): {done.stderr[-500:]}"
        )
    return wall, done.stderr


def import_costs(stderr: str) -> tuple[dict[str, float], float]:
    """Cumulative ms of each heavy package where it was first imported; and the total."""
    costs: dict[str, float] = {}
    total = 0.0
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        cumulative, indent, name = int(match.group(2)), match.group(3), match.group(4)
        if len(indent) == 1:  # top level of this command's imports
            total += cumulative / 1000
        if name in HEAVY and name not in costs:
            costs[name] = cumulative / 1000
    return costs, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; median of {args.runs} runs each")
    header = f"{'command':<32} {'wall ms':>8} {'imports ms':>10}  " + " ".join(
        f"{h:>8}" for h in HEAVY
    )
    print(header)
    leaked: list[str] = []
    for label, argv in COMMANDS.items():
        walls = [run(argv)[0] for _ in range(args.runs)]
        samples = [import_costs(run(argv, importtime=True)[1]) for _ in range(args.runs)]
        median = {
            h: statistics.median(s[0][h] for s in samples) if h in samples[0][0] else None
            for h in HEAVY
        }
        total = statistics.median(s[1] for s in samples)
        cells = " ".join(f"{'-' if v is None else f'{v:.0f}':>8}" for v in median.values())
        print(f"{label:<32} {statistics.median(walls) * 1000:>8.0f} {total:>10.0f}  {cells}")
        if label != "import cmrunbook.cli.collection":
            leaked += [f"{label}: {h}" for h in TRANSPORT if median[h] is not None]
    print("(ms of cumulative import time per package where the command first imports it;")
    print(" '-' = not imported. Nested packages are also inside their importer's figure.)")
    alone = {
        h: statistics.median(
            import_costs(run(["-c", f"import {h}"], importtime=True)[1])[0].get(h, 0.0)
            for _ in range(args.runs)
        )
        for h in TRANSPORT
    }
    print(
        "what the transport would add if imported: "
        + ", ".join(f"{h} {ms:.0f} ms" for h, ms in alone.items())
    )
    if leaked:
        print("transport imported by: " + "; ".join(leaked))
    headline(
        f"transport_imports_in_list_and_dry_run={len(leaked)} (target 0) "
        f"{'PASS' if not leaked else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
