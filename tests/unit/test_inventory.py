"""Choosing hosts with --hosts, and where each parameter value comes from.

A wrong `--hosts` pattern runs a destructive step on the wrong machine; a wrong precedence runs it
with the wrong share or folder. Expected host sets are computed from the inventory file itself,
so these tests keep working when hosts are added to the example inventory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers_engine import (
    EXAMPLE_INVENTORY,
    dump_yaml_file,
    load_yaml_file,
    make_root,
    run_cli,
    run_program,
)

from cmrunbook.errors import UsageError
from cmrunbook.load.inventory import Inventory, load_inventory

RAW: dict[str, Any] = load_yaml_file(EXAMPLE_INVENTORY)
HOSTS: dict[str, dict[str, Any]] = RAW["hosts"]


def names(pred: Callable[[str, dict[str, Any]], bool]) -> set[str]:
    return {h for h, spec in HOSTS.items() if pred(h, spec)}


def in_group(group: str) -> set[str]:
    return set(RAW["groups"][group]["hosts"]) | names(lambda h, s: group in s.get("groups", []))


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return load_inventory(EXAMPLE_INVENTORY)


SELECTIONS: dict[str, Callable[[], set[str]]] = {
    "cm07-dp*": lambda: names(lambda h, s: h.startswith("cm07-dp")),
    "xp-wks00[12]": lambda: {"xp-wks001", "xp-wks002"},
    "*-site01": lambda: names(lambda h, s: h.endswith("-site01")),
    "client": lambda: names(lambda h, s: "client" in s["roles"]),
    "role:site_server": lambda: names(lambda h, s: "site_server" in s["roles"]),
    "group:xp-fleet": lambda: in_group("xp-fleet"),
    "win7-fleet": lambda: in_group("win7-fleet"),
    "site:C07": lambda: names(lambda h, s: s["site"] == "C07"),
    "site:C07,!cm07-site01": lambda: names(lambda h, s: s["site"] == "C07") - {"cm07-site01"},
    "!client": lambda: names(lambda h, s: "client" not in s["roles"]),
    "distribution_point,!cm12-*": lambda: names(
        lambda h, s: "distribution_point" in s["roles"] and not h.startswith("cm12-")
    ),
    "group:xp-fleet,group:win7-fleet,!xp-wks002": lambda: (
        (in_group("xp-fleet") | in_group("win7-fleet")) - {"xp-wks002"}
    ),
    " cm07-dp01 , cm12-dp01 ": lambda: {"cm07-dp01", "cm12-dp01"},
}


@pytest.mark.parametrize("pattern", list(SELECTIONS))
def test_select(pattern: str, inventory: Inventory) -> None:
    expected = SELECTIONS[pattern]()
    assert expected, f"{pattern!r} should match something in the example inventory"
    assert {h.name for h in inventory.select(pattern)} == expected


def test_no_pattern_is_every_host(inventory: Inventory) -> None:
    assert {h.name for h in inventory.select(None)} == set(HOSTS)


@pytest.mark.parametrize("pattern", ["nomatch", "site:X99", "group:nogroup", "cm07-*,!cm07-*"])
def test_select_nothing_is_an_error(pattern: str, inventory: Inventory) -> None:
    with pytest.raises(UsageError, match="matches no host"):
        inventory.select(pattern)


def planned_hosts(stdout: str) -> list[str]:
    return re.findall(r"^== (\S+) \(", stdout, re.M)


def test_cli_hosts_glob_shows_targets_and_why_others_are_not() -> None:
    """`--hosts 'cm07-*'`: both C07 DPs are planned; the site server is named as no target."""
    result = run_cli("remediate", "multicast", "--method", "3", "--dry-run", "--hosts", "cm07-*")
    assert result.returncode == 0, result.stderr
    assert planned_hosts(result.stdout) == ["cm07-dp01", "cm07-dp02"]
    assert "- cm07-site01: not a target (not a distribution_point)" in result.stdout


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("!cm07-dp02", ["cm07-dp01"]),
        ("group:dps", ["cm07-dp02"]),
        ("site:C07,!cm07-dp01", ["cm07-dp02"]),
        ("distribution_point", ["cm07-dp01", "cm07-dp02"]),
    ],
)
def test_cli_hosts_selects_plans(pattern: str, expected: list[str], tmp_path: Path) -> None:
    """Selections narrow the plan to the right targets (in-process CLI)."""
    root = make_root(tmp_path / "root")
    data = load_yaml_file(root / "inventory" / "example.yaml")
    data["groups"]["dps"] = {"hosts": ["cm07-dp02", "cm12-dp01"]}
    dump_yaml_file(root / "inventory" / "example.yaml", data)
    result = run_program(
        "remediate", "multicast", "--method", "1", "--dry-run", "--hosts", pattern, root=root
    )
    assert result.returncode == 0, result.stderr
    assert planned_hosts(result.stdout) == expected


def test_cli_selection_without_a_target_says_why() -> None:
    """site:P12 has a multicast DP, but on ConfigMgr 2012 R2: no target, exit 2, reasons given."""
    result = run_program("remediate", "multicast", "--dry-run", "--hosts", "site:P12")
    assert result.returncode == 2
    assert "no target among the selected hosts" in result.stderr
    assert "cm12-dp01: runbook applies to ConfigMgr 2007; site P12 is 2012r2" in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------------------------------------
# Parameter precedence


LEVELS = ["default", "inventory", "group", "host", "set"]


def precedence_root(tmp_path: Path, upto: str) -> tuple[Path, list[str]]:
    """An inventory with pxe_share and wim_limit_mb set at every level up to `upto`."""
    root = make_root(tmp_path / upto)
    path = root / "inventory" / "example.yaml"
    data = load_yaml_file(path)
    order = LEVELS.index(upto)
    if order >= LEVELS.index("inventory"):
        data["vars"] = {"pxe_share": "FROM-INVENTORY$", "wim_limit_mb": 1000}
    if order >= LEVELS.index("group"):
        data["groups"]["pxe-dps"] = {
            "hosts": ["cm07-dp01"],
            "vars": {"pxe_share": "FROM-GROUP$", "wim_limit_mb": "2000"},
        }
    if order >= LEVELS.index("host"):
        data["hosts"]["cm07-dp01"]["vars"] = {"pxe_share": "FROM-HOST$", "wim_limit_mb": 3000}
    dump_yaml_file(path, data)
    overrides = (
        ["--set", "pxe_share=FROM-SET$", "--set", "wim_limit_mb=4000"] if upto == "set" else []
    )
    return root, overrides


EXPECTED = {
    "default": ("SMSPXEIMAGES$", 4096),
    "inventory": ("FROM-INVENTORY$", 1000),
    "group": ("FROM-GROUP$", 2000),
    "host": ("FROM-HOST$", 3000),
    "set": ("FROM-SET$", 4000),
}


def host_section(stdout: str, host: str) -> str:
    parts = re.split(r"^(?=== )", stdout, flags=re.M)
    found = [p for p in parts if p.startswith(f"== {host} (")]
    assert len(found) == 1, stdout[:300]
    return found[0]


@pytest.mark.parametrize("upto", LEVELS)
def test_parameter_precedence(upto: str, tmp_path: Path) -> None:
    """default < inventory vars < group vars < host vars < --set, as the dry run shows it."""
    root, overrides = precedence_root(tmp_path, upto)
    result = run_program(
        "remediate",
        "multicast",
        "--method",
        "4",
        "--dry-run",
        "--show-scripts",
        *overrides,
        root=root,
    )
    assert result.returncode == 0, result.stderr
    share, limit = EXPECTED[upto]
    dp01 = host_section(result.stdout, "cm07-dp01")
    unconfirmed = re.search(r"UNCONFIRMED parameters \(.*?\): (.*)$", dp01, re.M)
    assert unconfirmed, dp01[:500]
    assert f"pxe_share='{share}'" in unconfirmed.group(1)
    # In the script: a string literal, and an int (quoted in YAML at group level) as a number.
    assert f"| $share = '{share}'" in dp01
    assert f"| $limitMB = {limit}\n" in dp01
    # cm07-dp02 is in no group and has no host vars: it sees only the inventory level (or --set).
    dp02 = host_section(result.stdout, "cm07-dp02")
    dp02_share = {"group": "FROM-INVENTORY$", "host": "FROM-INVENTORY$"}.get(upto, share)
    assert f"pxe_share='{dp02_share}'" in dp02


def test_parameter_precedence_end_to_end(tmp_path: Path) -> None:
    """The same through the real `invoke` process, every level set at once: --set wins."""
    root, overrides = precedence_root(tmp_path, "set")
    result = run_cli(
        "remediate",
        "multicast",
        "--method",
        "4",
        "--dry-run",
        "--hosts",
        "cm07-dp01",
        *overrides,
        root=root,
    )
    assert result.returncode == 0, result.stderr
    assert "pxe_share='FROM-SET$'" in result.stdout


def test_set_method_is_not_silently_ignored() -> None:
    """`--set method=3` plans Method 3, as `--method 3` would; it never runs auto instead."""
    result = run_program("remediate", "multicast", "--dry-run", "--set", "method=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DRY RUN: multicast (method 3)"), result.stdout[:100]


def test_method_and_set_method_that_disagree_are_refused() -> None:
    result = run_program(
        "remediate", "multicast", "--dry-run", "--method", "4", "--set", "method=3"
    )
    assert result.returncode == 2, result.stdout[:300]
    assert "disagree" in result.stderr, result.stderr
    agree = run_program("remediate", "multicast", "--dry-run", "--method", "3", "--set", "method=3")
    assert agree.returncode == 0, agree.stderr
    assert agree.stdout.startswith("DRY RUN: multicast (method 3)")


def method_var_root(tmp_path: Path, where: str) -> Path:
    """A project copy whose inventory sets the `method` var at `where` ('vars' or a host)."""
    root = make_root(tmp_path / "root")
    inv = root / "inventory" / "example.yaml"
    data = load_yaml_file(inv)
    owner = data if where == "vars" else data["hosts"][where]
    owner.setdefault("vars", {})["method"] = "3"
    dump_yaml_file(inv, data)
    return root


def test_method_from_an_inventory_var(tmp_path: Path) -> None:
    """An inventory var `method` is the method unless --method says otherwise."""
    root = method_var_root(tmp_path, "vars")
    result = run_program("remediate", "multicast", "--dry-run", root=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DRY RUN: multicast (method 3)"), result.stdout[:100]
    result = run_program("remediate", "multicast", "--dry-run", "--method", "auto", root=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DRY RUN: multicast (method auto)"), result.stdout[:100]


def test_targets_resolving_to_different_methods_are_refused(tmp_path: Path) -> None:
    """One run follows one method: hosts whose vars choose different ones must be told apart."""
    root = method_var_root(tmp_path, "cm07-dp01")
    result = run_program("remediate", "multicast", "--dry-run", root=root)
    assert result.returncode == 2, result.stdout[:300]
    assert "different methods" in result.stderr and "cm07-dp01" in result.stderr, result.stderr
    alone = run_program("remediate", "multicast", "--dry-run", "--hosts", "cm07-dp01", root=root)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith("DRY RUN: multicast (method 3)"), alone.stdout[:100]


def test_targets_condition_sees_the_parameters(tmp_path: Path) -> None:
    """`targets.when` is evaluated with each host's resolved parameters: --set widens it."""
    root = make_root(tmp_path / "root", runbooks=("client-hotfix-check",))
    path = root / "runbooks" / "client-hotfix-check.yaml"
    text = path.read_text("utf-8")
    text = text.replace("  when: target.os == 'xp'\n", "  when: target.os in params.client_os\n")
    text = text.replace(
        "parameters:\n",
        "parameters:\n  client_os:\n    type: list\n    default: [xp]\n    help: OS versions.\n",
        1,
    )
    path.write_text(text, "utf-8")
    w7 = names(lambda h, s: "client" in s["roles"] and s["os"]["version"] == "7")
    args = ("remediate", "client-hotfix-check", "--dry-run", "--hosts", "client")
    narrow = run_program(*args, root=root)
    assert narrow.returncode == 0, narrow.stderr
    wide = run_program(*args, "--set", "client_os=xp,7", root=root)
    assert wide.returncode == 0, wide.stderr
    planned = {
        name: set(re.findall(r"^== (\S+) \(", result.stdout, re.M))
        for name, result in (("narrow", narrow), ("wide", wide))
    }
    assert planned["narrow"] and not planned["narrow"] & w7, planned
    assert planned["wide"] - planned["narrow"] == planned["wide"] & w7 != set(), planned


@pytest.mark.parametrize(
    ("inventory_winrm", "host_winrm", "url"),
    [
        ({}, None, "http://cm07-dp01.corp.example:5985/wsman"),
        ({"scheme": "https"}, None, "https://cm07-dp01.corp.example:5986/wsman"),
        ({"scheme": "https"}, {"port": 443}, "https://cm07-dp01.corp.example:443/wsman"),
        ({"port": 8080}, {"scheme": "https"}, "https://cm07-dp01.corp.example:8080/wsman"),
        ({}, {"address": "10.0.0.5", "path": "/wsman/x"}, "http://10.0.0.5:5985/wsman/x"),
    ],
)
def test_winrm_endpoint_follows_inventory_then_host_and_the_port_follows_the_scheme(
    inventory_winrm: dict[str, Any], host_winrm: dict[str, Any] | None, url: str, tmp_path: Path
) -> None:
    """An https listener without a port given is on 5986, WinRM's default, not http's 5985."""
    from cmrunbook.run.connect import endpoint_for

    data = load_yaml_file(EXAMPLE_INVENTORY)
    data["winrm"] = inventory_winrm
    if host_winrm is not None:
        data["hosts"]["cm07-dp01"]["winrm"] = host_winrm
    path = tmp_path / "inventory.yaml"
    dump_yaml_file(path, data)
    inv = load_inventory(path)
    assert endpoint_for(inv.hosts["cm07-dp01"], inv).url == url
