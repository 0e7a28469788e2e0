"""The dry run of the whole catalog over a mixed fleet, compared with a golden copy.

Planning and printing share work between hosts that are alike (bench/plan_scale.py); whatever
is shared, each host's text must come out exactly as if it had been planned on its own. The
fleet mixes what a plan reads: sites of both versions, DPs with every multicast/PXE pair, two
OS versions and architectures, clients with and without WinRM, and parameters set by group and
host vars, interleaved so that alike hosts are never neighbours only.

After an intended change of the dry run's text, write the new golden copy with
`CMRUNBOOK_WRITE_GOLDEN=1 pytest tests/unit/test_dry_run_golden.py` and review its diff.
"""

from __future__ import annotations

import difflib
import io
import os
from pathlib import Path
from typing import Any

import pytest
from helpers_engine import EXAMPLE_INVENTORY, REPO, dump_yaml_file

from cmrunbook.docs.dryrun import print_dry_run
from cmrunbook.errors import UsageError
from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Planner

CATALOG = Project(REPO)
GOLDEN = REPO / "tests" / "data" / "golden"


def fleet() -> dict[str, Any]:
    """A fleet of three sites whose hosts differ in every value a plan reads."""
    sites = {
        "A07": {"version": "2007", "release": "SP2", "provider": "a07-site01"},
        "B12": {"version": "2012r2", "release": "CU1", "provider": "b12-site01"},
        "C07": {
            "version": "2007",
            "release": "SP1 R2",
            "provider": "c07-site01",
            "install_dir": r"D:\Program Files\Microsoft Configuration Manager",
        },
    }
    hosts: dict[str, Any] = {}
    for code in sites:
        low = code.lower()
        hosts[f"{low}-site01"] = {
            "site": code,
            "roles": ["site_server"],
            "os": {"version": "2008r2" if code == "A07" else "2012r2"},
        }
        for i in range(6):
            hosts[f"{low}-dp{i:02d}"] = {
                "site": code,
                "roles": ["distribution_point"],
                "os": {
                    "version": ("2008", "2008r2", "2012r2")[i % 3],
                    "arch": "x86" if i == 4 else "x64",
                },
                "dp": {"multicast": i % 2 == 0 or i == 5, "pxe": i % 4 < 2},
            }
            hosts[f"{low}-xp{i:02d}"] = {
                "site": code,
                "roles": ["client"],
                "os": {"version": "xp" if i != 3 else "7", "arch": "x64" if i == 2 else "x86"},
                "winrm": i % 2 == 0,
            }
    hosts["b12-site02"] = {"site": "B12", "roles": ["site_server"], "os": {"version": "2012r2"}}
    # Names and values with control characters are shown as escapes, wherever they appear.
    hosts["b12-xp\x1b]0;x\x07\u202e99"] = dict(hosts["b12-xp00"], vars={"multicast_role": "M\rP"})
    hosts["b12-dp\r99"] = dict(hosts["b12-dp00"])
    hosts["a07-dp02"]["vars"] = {"wim_limit_mb": 2048, "verify_settle": 900}
    hosts["b12-dp00"]["vars"] = {"smswdstp_paths": [r"E:\SMS\bin\x64\smswdstp.dll"]}
    hosts["c07-xp04"]["vars"] = {"tscore_version": "5.0.7958.1000"}
    hosts["a07-xp01"]["groups"] = ["late-xp"]
    hosts["b12-site01"]["vars"] = {"ts_files": ["Tscore.dll"]}
    return {
        "credentials": {"source": "env"},
        "winrm": {"port": 5985, "scheme": "http", "auth": "ntlm"},
        "vars": {"multicast_role": "SMS Multicast Service Point"},
        "sites": sites,
        "groups": {
            "big-wims": {
                "hosts": ["c07-dp00", "c07-dp02", "a07-dp04"],
                "vars": {"wim_limit_mb": 8192, "multicast_role": "Multicast Point"},
            },
            "late-xp": {"hosts": ["b12-xp02"], "vars": {"client_dirs": [r"C:\Windows\CCM"]}},
        },
        "hosts": hosts,
    }


def catalog_dry_runs(inventory: Path, hosts: str | None = None) -> str:
    """Every runbook with every method and auto (or its procedure), as one text."""
    inv = load_inventory(inventory)
    out = io.StringIO()
    for runbook in CATALOG.ids():
        loaded = CATALOG.load(runbook)
        rb = loaded.runbook
        methods: list[str | None] = [m.id for m in rb.methods] + ["auto"] if rb.methods else [None]
        for method in methods:
            out.write(f"#### {runbook} {method}\n")
            try:
                plan = Planner(CATALOG, loaded, inv).plan(method=method, hosts=hosts)
            except UsageError as exc:  # no target: the message names each host and why
                out.write(f"{exc}\n")
                continue
            print_dry_run(plan, CATALOG, out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "hosts"),
    [("fleet", None), ("fleet-selected", "a07-*,b12-*,!b12-dp0[0-2]"), ("example", None)],
)
def test_dry_run_of_the_catalog_is_unchanged(tmp_path: Path, name: str, hosts: str | None) -> None:
    """Each host's text, byte for byte, as the golden copy has it."""
    inventory = EXAMPLE_INVENTORY
    if name != "example":
        inventory = tmp_path / "fleet.yaml"
        dump_yaml_file(inventory, fleet())
    actual = catalog_dry_runs(inventory, hosts).replace(str(inventory), "<inventory>")
    golden = GOLDEN / f"dry-run-{name}.txt"
    if os.environ.get("CMRUNBOOK_WRITE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), "golden", "now", lineterm="", n=2
        )
        pytest.fail("the dry run changed:\n" + "\n".join(list(diff)[:60]))
