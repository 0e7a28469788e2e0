"""Planning a fleet: work shared between hosts must never blur what each host gets.

A `when` condition is evaluated once per distinct set of the values it reads, and the dry run
is written at once; both are there for speed (bench/plan_scale.py), so these tests check what an
operator reads per host: each host's own decision, and the output written before an error.
"""

from __future__ import annotations

import gc
import io
from pathlib import Path
from typing import Any

import pytest
from helpers_engine import EXAMPLE_INVENTORY, REPO, dump_yaml_file, load_yaml_file
from test_dry_run_golden import fleet  # the mixed fleet of the golden dry run

from cmrunbook.docs import dryrun
from cmrunbook.docs.dryrun import print_dry_run
from cmrunbook.errors import ConfigError
from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Planner

CATALOG = Project(REPO)


def fleet_inventory(tmp_path: Path, edit: Any) -> Path:
    """The example inventory, changed by `edit`, written under tmp_path."""
    data = load_yaml_file(EXAMPLE_INVENTORY)
    edit(data)
    path = tmp_path / "fleet.yaml"
    dump_yaml_file(path, data)
    return path


def test_each_dp_gets_its_own_pxe_decision(tmp_path: Path) -> None:
    """Twenty DPs of one site, PXE on every third, two OS versions: the `target.pxe` steps run
    exactly on the PXE ones, however hosts with equal and different values are interleaved."""
    pxe: dict[str, bool] = {}

    def add_dps(data: dict[str, Any]) -> None:
        for i in range(20):
            name = f"dp{i:02d}"
            pxe[name] = i % 3 == 0
            data["hosts"][name] = {
                "site": "C07",
                "roles": ["distribution_point"],
                "os": {"version": "2008r2" if i % 2 else "2008"},
                "dp": {"multicast": True, "pxe": pxe[name]},
            }

    inv = load_inventory(fleet_inventory(tmp_path, add_dps))
    plan = Planner(CATALOG, CATALOG.load("multicast"), inv).plan(method="4", hosts="dp*")
    assert sorted(hp.target.name for hp in plan.hosts) == sorted(pxe)
    for hp in plan.hosts:
        gated = [ps for ps in hp.all_steps() if ps.step.when == "target.pxe"]
        assert gated, "method 4 has steps only for a DP with PXE"
        for ps in gated:
            assert (ps.skip_reason is None) == pxe[hp.target.name], (hp.target.name, ps.key)
            if ps.skip_reason:
                assert f"false for {hp.target.name} in" in ps.skip_reason


def test_a_host_of_its_own_kind_is_decided_by_its_own_values(tmp_path: Path) -> None:
    """`site.provider == target.name` reads a value no two hosts share: only the site's
    provider is a target of nt4-precheck, though the other site servers are alike in the rest."""

    def twin_servers(data: dict[str, Any]) -> None:
        for i in range(3):
            data["hosts"][f"cm07-twin{i}"] = {
                "site": "C07",
                "roles": ["site_server"],
                "os": dict(data["hosts"]["cm07-site01"]["os"]),
            }

    inv = load_inventory(fleet_inventory(tmp_path, twin_servers))
    plan = Planner(CATALOG, CATALOG.load("nt4-precheck"), inv).plan(method=None)
    assert [hp.target.name for hp in plan.hosts] == ["cm07-site01"]
    skipped = dict(plan.skipped_hosts)
    for twin in ("cm07-twin0", "cm07-twin1", "cm07-twin2"):
        assert "targets condition 'site.provider == target.name' is false" in skipped[twin]


def test_dry_run_output_before_an_error_is_still_written(tmp_path: Path) -> None:
    """A dry run that stops on an error (here: --out cannot make a host's folder) still shows
    what it had printed, as it did when each line was written as it came."""
    plan = Planner(CATALOG, CATALOG.load("multicast"), load_inventory(EXAMPLE_INVENTORY)).plan(
        method="4", hosts="cm07-dp01"
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "cm07-dp01").write_text("a file where the host's folder would go")
    sink = io.StringIO()
    with pytest.raises(OSError):
        print_dry_run(plan, CATALOG, sink, out_dir=out_dir)
    printed = sink.getvalue()
    assert printed.startswith("DRY RUN: multicast (method 4)")
    assert "== cm07-dp01 (distribution_point" in printed


def test_dry_run_shows_control_characters_of_the_inventory_as_text(tmp_path: Path) -> None:
    """A site release carrying a terminal title sequence and a carriage return is printed as
    escapes: the dry run can neither retitle the terminal nor overwrite its own lines."""

    def hostile(data: dict[str, Any]) -> None:
        data["sites"]["C07"]["release"] = "SP1\x1b]0;PWNED\x07\r"

    inv = load_inventory(fleet_inventory(tmp_path, hostile))
    plan = Planner(CATALOG, CATALOG.load("multicast"), inv).plan(method="1", hosts="cm07-dp01")
    sink = io.StringIO()
    print_dry_run(plan, CATALOG, sink)
    printed = sink.getvalue()
    assert "ConfigMgr 2007 SP1\\x1b]0;PWNED\\x07\\x0d; Windows" in printed
    assert not [c for c in printed if ord(c) < 0x20 and c not in "\n\t"]


@pytest.mark.parametrize("content", ["hosts: {}\nsites: {}\n", "hosts: [unclosed\n", None])
def test_loading_and_planning_leave_the_garbage_collector_as_they_found_it(
    tmp_path: Path, content: str | None
) -> None:
    """The collector is paused while an inventory is loaded and a plan built (for speed); it
    must run again afterwards, whether the load succeeded or stopped on a bad file, and must not
    be switched on where the caller had it off."""
    path = EXAMPLE_INVENTORY
    if content is not None:
        path = tmp_path / "inv.yaml"
        path.write_text(content)
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            try:
                inv = load_inventory(path)
            except ConfigError:
                assert content is not None
            else:
                Planner(CATALOG, CATALOG.load("multicast"), inv).plan(method="auto")
            assert gc.isenabled() is enabled
        finally:
            gc.enable()


def test_what_a_paused_collector_built_is_not_left_for_a_young_pass(tmp_path: Path) -> None:
    """An inventory (here 2,000 hosts) and its plan join the oldest generation when the collector
    resumes, where no young collection goes over them again; nothing is left frozen."""

    def many_clients(data: dict[str, Any]) -> None:
        for i in range(2000):
            data["hosts"][f"xp{i:04d}"] = {
                "site": "P12",
                "roles": ["client"],
                "os": {"version": "xp"},
            }

    path = fleet_inventory(tmp_path, many_clients)
    loaded = CATALOG.load("client-hotfix-check")
    was_enabled = gc.isenabled()
    gc.enable()  # as a command runs
    try:
        inv = load_inventory(path)
        plan = Planner(CATALOG, loaded, inv).plan(method=None)
    finally:
        if not was_enabled:
            gc.disable()
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(inv.hosts) in oldest
    assert id(plan.hosts) in oldest
    assert gc.get_freeze_count() == 0


def test_each_host_gets_its_own_parameters_among_hosts_on_the_defaults(tmp_path: Path) -> None:
    """A runbook's defaults are converted once per plan for the hosts no var changes; hosts
    with their own vars, interleaved with those, still get their own values, the command line
    still wins over the default, and no two hosts share one list."""
    own: dict[str, list[str]] = {}

    def xp_clients(data: dict[str, Any]) -> None:
        for i in range(8):
            name = f"xp-extra{i}"
            data["hosts"][name] = {
                "site": "P12",
                "roles": ["client"],
                "os": {"version": "xp", "arch": "x86"},
            }
            if i % 3 == 1:
                own[name] = [f"C:\\{name}\\CCM"]
                data["hosts"][name]["vars"] = {"client_dirs": own[name]}

    inv = load_inventory(fleet_inventory(tmp_path, xp_clients))
    check = CATALOG.load("client-hotfix-check")
    plan = Planner(CATALOG, check, inv).plan(method=None, overrides=["tscore_version=5.0.1"])
    params = {hp.target.name: hp.params for hp in plan.hosts}
    assert set(own) < set(params) and len(params) > len(own) + 3
    default = check.runbook.parameters["client_dirs"].default
    for name, got in params.items():
        assert got["tscore_version"] == "5.0.1", name
        assert got["client_dirs"] == own.get(name, default), name
    lists = [id(got["client_dirs"]) for got in params.values()]
    assert len(set(lists)) == len(lists), "hosts share one list"


def _steps(stages: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (st.name, ps.key, ps.run_on, ps.skip_reason, ps.note, ps.settle, ps.arms)
        for st in stages
        for ps in st.steps
    ]


@pytest.mark.parametrize("runbook", CATALOG.ids())
def test_alike_targets_get_the_steps_planning_each_alone_gives(
    tmp_path: Path, runbook: str
) -> None:
    """Alike targets share one planned class; each one's steps (where they run, why they are
    skipped, their notes) are those it gets when it is the only host planned."""
    inv_path = tmp_path / "fleet.yaml"
    dump_yaml_file(inv_path, fleet())
    inv = load_inventory(inv_path)
    loaded = CATALOG.load(runbook)
    method = "auto" if loaded.runbook.methods else None
    plan = Planner(CATALOG, loaded, inv).plan(method=method)
    assert len({id(hp.shared) for hp in plan.hosts}) < len(plan.hosts) or len(plan.hosts) < 3
    for hp in plan.hosts:
        alone = Planner(CATALOG, loaded, inv).plan(method=method, hosts=hp.target.name)
        assert _steps(hp.stages) == _steps(alone.hosts[0].stages), hp.target.name


def test_a_class_text_is_not_used_where_its_stand_ins_occur(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should a runbook's own text hold the stand-ins a class's text is made with, each host is
    printed on its own, and the text is still what it was."""
    plan = Planner(CATALOG, CATALOG.load("multicast"), load_inventory(EXAMPLE_INVENTORY)).plan(
        method="auto"
    )
    expected = io.StringIO()
    print_dry_run(plan, CATALOG, expected)
    monkeypatch.setattr(
        dryrun, "_STAND_INS", (("Pre-checks", "\x00P1\x00"), ("\x00T2\x00", "\x00P2\x00"))
    )
    got = io.StringIO()
    print_dry_run(plan, CATALOG, got)
    assert got.getvalue() == expected.getvalue()
