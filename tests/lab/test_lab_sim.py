"""The lab's simulated hosts, driven directly (no network) with the scripts the engine renders.

A small player below walks a planned method the way the engine does (probes, loops over items,
log monitors armed before their trigger, reads of appended bytes, restarts if pending), so each
test checks a whole KB method's effect on the simulated DP, not one script in isolation.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers_lab import engine_script, make_lab, run

from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Planner
from cmrunbook.remote.winrm.host import BOOTSTRAP_ARGUMENTS, POWERSHELL
from cmrunbook.render.steps import render_probe, render_step
from cmrunbook_lab.clock import ManualClock
from cmrunbook_lab.world import MCS_KEY, Lab

REPO = Path(__file__).resolve().parents[2]
CATALOG = Project(REPO)
INVENTORY = load_inventory(REPO / "inventory" / "example.yaml")
_CMTRACE = re.compile(r"<!\[LOG\[(?P<msg>.*?)\]LOG\]!>")


def messages(data: bytes) -> list[str]:
    out = []
    for line in data.decode("utf-8").splitlines():
        m = _CMTRACE.search(line)
        out.append(m["msg"] if m else line.split("  $$<")[0])
    return out


class Player:
    """Plays a plan on the lab like the engine: the contract the lab must honour."""

    def __init__(self, lab: Lab, clock: ManualClock, method: str, target: str) -> None:
        self.lab, self.clock = lab, clock
        self.plan = Planner(CATALOG, CATALOG.load("multicast"), INVENTORY).plan(
            method=method, hosts=target
        )
        self.hp = self.plan.hosts[0]
        self.target = self.hp.target
        self.armed: dict[str, dict[str, Any]] = {}
        self.probes: dict[str, Any] = {}
        self.log: list[str] = []
        self.restart_asked = False  # a script's RestartNeeded / 3010, or a log's prompt

    def probe(self, probe_id: str) -> Any:
        if probe_id not in self.probes:
            pr = self.plan.runbook.probe(probe_id)
            assert pr is not None
            host, script = render_probe(CATALOG, self.plan, self.hp, pr)
            result, _, _ = run(self.lab, host, script)
            assert result and result["ok"], result
            self.probes[probe_id] = result["data"]
        return self.probes[probe_id]

    def stage(self, prefix: str) -> None:
        for st in self.hp.stages:
            if st.name.startswith(prefix):
                for ps in st.steps:
                    self.step(ps)

    def step(self, ps: Any) -> None:
        step = ps.step
        if ps.skip_reason or step.kind == "manual":
            return
        for key in ps.arms:
            self.arm(key)
        if step.kind == "script":
            if step.when_probe and self.probe(step.when_probe.probe) != step.when_probe.equals:
                return
            items = self.probe(step.for_each) if step.for_each else [None]
            for item in items:
                script = render_step(CATALOG, self.plan, self.hp, ps, item)
                assert script is not None
                result, err, _ = run(self.lab, ps.run_on, script)
                waited = 0.0
                while result and not result["ok"] and waited < step.settle:  # the engine's settle
                    self.clock.advance(step.settle / 10)
                    waited += step.settle / 10
                    result, err, _ = run(self.lab, ps.run_on, script)
                assert result is not None, err
                assert result["ok"], (ps.key, result)
                self.restart_asked = self.restart_asked or result["reboot_required"]
                self.log.append(f"{ps.key}: {result['message']}")
        elif step.kind == "wait_log":
            self.wait(ps)
        elif step.kind == "reboot":
            self.restart_if_asked()

    def arm(self, key: str) -> None:
        wait = next(s for s in self.hp.all_steps() if s.key == key).step.wait
        script = engine_script(
            "log_arm",
            f"{key} | arm",
            logs=wait.logs,
            dirs=CATALOG.logs.dirs,
            host=self.target.as_context(),
        )
        result, _, _ = run(self.lab, self.target.name, script)
        assert result and result["ok"], result
        self.armed[key] = {
            n: {"path": e["path"], "offset": e["size"]} for n, e in result["data"].items()
        }

    def read(self, key: str) -> dict[str, list[str]]:
        script = engine_script(
            "log_read", f"{key} | read", watches=self.armed[key], max_bytes=65536
        )
        result, _, _ = run(self.lab, self.target.name, script)
        assert result and result["ok"], result
        out = {}
        for name, entry in result["data"].items():
            self.armed[key][name]["offset"] = entry["offset"]
            out[name] = [m for c in entry["chunks"] for m in messages(base64.b64decode(c))]
        return out

    def wait(self, ps: Any) -> str:
        w = ps.step.wait
        seen: dict[str, list[str]] = {n: [] for n in w.logs}
        for _ in range(w.timeout // w.poll):
            self.clock.advance(w.poll)
            for name, lines in self.read(ps.key).items():
                seen[name] += lines
            verdicts = [self.verdict(n, w.expect, seen[n]) for n in w.logs]
            if "failure" in verdicts:
                raise AssertionError(f"{ps.key}: failure line in {seen}")
            if all(v == "success" for v in verdicts):
                asks = [CATALOG.logs.expectation(n, w.expect).reboot for n in w.logs]
                self.restart_asked = self.restart_asked or any(
                    re.search(p.re, line)
                    for n, ps_ in zip(w.logs, asks, strict=True)
                    for p in ps_
                    for line in seen[n]
                )
                return "success"
        raise AssertionError(f"{ps.key}: timed out; read {seen}")

    @staticmethod
    def verdict(log: str, expect: str, lines: list[str]) -> str | None:
        exp = CATALOG.logs.expectation(log, expect)
        for line in lines:
            if any(re.search(p.re, line) for p in exp.failure):
                return "failure"
            if any(re.search(p.re, line) for p in [*exp.success, *exp.reboot]):
                return "success"
        return None

    def restart_if_asked(self) -> bool:
        name = self.target.name
        if not self.restart_asked:
            return False
        self.restart_asked = False
        before, _, _ = run(self.lab, name, engine_script("boot_time", "x | boot"))
        result, _, _ = run(self.lab, name, engine_script("restart", "x | restart", reason="lab"))
        assert result and result["ok"]
        backend = self.lab.backend(name)
        self.clock.advance(6)
        assert not backend.is_up()
        while not backend.is_up():
            self.clock.advance(5)
        after, _, _ = run(self.lab, name, engine_script("boot_time", "x | boot"))
        assert before and after and after["data"] != before["data"]
        return True

    def settle(self, seconds: float = 600) -> None:
        self.clock.advance(seconds)
        self.lab.tick()

    def verify(self) -> dict[str, Any]:
        ps = next(s for st in self.hp.stages if st.kind == "verify" for s in st.steps)
        script = render_step(CATALOG, self.plan, self.hp, ps)
        result, _, _ = run(self.lab, ps.run_on, script)
        assert result is not None
        return result


# -- image flags -----------------------------------------------------------------------------------


def _image_script(action: str, package_id: str, flag: int | None = None) -> str:
    plan = Planner(CATALOG, CATALOG.load("multicast"), INVENTORY).plan(
        method="3",
        hosts="cm07-dp02",
        overrides=[f"multicast_flag={flag}"] if flag is not None else [],
    )
    hp = plan.hosts[0]
    step = "m3.clear-image-multicast" if action == "disable" else "m3.set-image-multicast"
    ps = next(s for s in hp.all_steps() if s.step.id == step)
    return render_step(CATALOG, plan, hp, ps, {"PackageID": package_id, "Name": "x", "SizeMB": 1})


def test_image_flag_disable_clears_bit_27_and_put_saves_it() -> None:
    lab, _ = make_lab()
    image = lab.sites["C07"].images["C0700010"]
    image["PkgFlags"] |= 0x2
    result, _, code = run(lab, "cm07-site01", _image_script("disable", "C0700010"))
    assert code == 0 and result and result["changed"]
    assert image["PkgFlags"] == 0x2
    assert result["data"] == {"PackageID": "C0700010", "before": 0x08000002, "after": 0x2}
    result, _, _ = run(lab, "cm07-site01", _image_script("enable", "C0700010"))
    assert image["PkgFlags"] == 0x08000002


def test_wrong_flag_bit_changes_the_wrong_bit() -> None:
    lab, _ = make_lab()
    image = lab.sites["C07"].images["C0700010"]
    result, _, _ = run(lab, "cm07-site01", _image_script("disable", "C0700010", flag=0x04000000))
    assert result and not result["changed"]
    assert image["PkgFlags"] == 0x08000000  # bit 26 was not set, so nothing was cleared
    run(lab, "cm07-site01", _image_script("enable", "C0700010", flag=0x04000000))
    assert image["PkgFlags"] == 0x0C000000


def test_missing_put_saves_nothing() -> None:
    lab, _ = make_lab()
    script = _image_script("disable", "C0700010").replace("        [void]$image.Put()\n", "", 1)
    result, _, _ = run(lab, "cm07-site01", script)
    assert lab.sites["C07"].images["C0700010"]["PkgFlags"] == 0x08000000
    assert result and result["data"]["after"] == 0x08000000


def test_provider_scripts_fail_off_the_site_server() -> None:
    lab, _ = make_lab()
    result, _, code = run(lab, "cm07-dp01", _image_script("disable", "C0700010"))
    assert code == 1 and result and "Invalid namespace" in result["message"]


def test_unrecognised_script_fails_on_stderr() -> None:
    lab, _ = make_lab()
    result, err, code = run(lab, "cm07-dp01", "# cmrunbook x | y\nGet-Date\n")
    assert result is None and code == 1 and err.startswith(b"#< CLIXML")


# -- site control file and setup logs ------------------------------------------------------------


def test_scf_delete_commit_writes_mcssetup_lines_after_the_delay() -> None:
    lab, clock = make_lab()
    p = Player(lab, clock, "3", "cm07-dp02")
    p.arm("method:3/m3.wait-mcs-uninstall")
    ps = next(s for s in p.hp.all_steps() if s.step.id == "m3.disable-dp-multicast")
    p.step(ps)
    multicast = {r.server() for r in lab.sites["C07"].scf if "Multicast" in r.RoleName}
    assert multicast == {"cm07-dp01", "bak-cm07-dp02"}  # cm07-dp02's is gone, its neighbour's not
    backups = lab.hosts["cm07-site01"].fs.list(
        r"C:\ProgramData\cmrunbook\backup", "multicast-role-*.xml"
    )
    assert len(backups) == 1 and b"SMS Multicast Service Point" in bytes(backups[0].data)
    assert p.read("method:3/m3.wait-mcs-uninstall") == {"MCSSetup.log": [], "MCSMSI.log": []}
    clock.advance(lab.spec.delays.role_uninstall + 2 * lab.spec.delays.log_line + 1)
    lines = p.read("method:3/m3.wait-mcs-uninstall")
    assert "mcs.msi exited with return code: 0" in lines["MCSSetup.log"]
    assert any("Removal success or error status: 0." in m for m in lines["MCSMSI.log"])
    # cm07-dp02's MCSSetup.log is in the older 2007 form
    raw = bytes(lab.hosts["cm07-dp02"].fs.get(r"D:\SMS\Logs\MCSSetup.log").data).decode()
    assert "mcs.msi exited with return code: 0  $$<SMS_MULTICAST_SERVICE_POINT><" in raw


def test_method_1_does_not_fix_mcs_key_but_method_3_does() -> None:
    lab, clock = make_lab()
    p1 = Player(lab, clock, "1", "cm07-dp02")
    assert not p1.verify()["ok"]
    p1.stage("method:1")
    p1.settle()
    v = p1.verify()
    assert not v["ok"] and "SerializedMCSKey is empty" in v["message"]
    assert "multicast removal overtaken by re-add" in lab.dps["cm07-dp02"].history
    p3 = Player(lab, clock, "3", "cm07-dp02")
    p3.stage("method:3")
    # The DP writes its new key at once; the MP signs it later (delays.mcs_signing).
    assert p3.verify()["data"]["verdict"] == "not-settled", lab.dps["cm07-dp02"].history
    assert not lab.hosts["cm07-dp02"].registry.get(MCS_KEY, "SignedSerializedMCSKey")
    p3.settle(lab.spec.delays.mcs_signing)
    assert p3.verify()["ok"], lab.dps["cm07-dp02"].history
    assert lab.hosts["cm07-dp02"].registry.get(MCS_KEY, "SignedSerializedMCSKey")


def test_method_2_fixes_image_flags_and_wrong_bit_does_not() -> None:
    lab, clock = make_lab(**{"cm07-dp02": {"multicast_fault": "image-flags"}})
    bad = Player(lab, clock, "2", "cm07-dp02")
    bad.plan = Planner(CATALOG, CATALOG.load("multicast"), INVENTORY).plan(
        method="2", hosts="cm07-dp02", overrides=["multicast_flag=67108864"]
    )
    bad.hp = bad.plan.hosts[0]
    bad.probes["multicast-images"] = [{"PackageID": "C0700010", "Name": "x", "SizeMB": 1}]
    bad.stage("method:2")
    bad.settle()
    assert not bad.verify()["ok"]
    p = Player(lab, clock, "2", "cm07-dp02")
    p.stage("method:2")
    p.settle()
    assert p.verify()["data"]["verdict"] == "not-settled"  # written, not signed yet
    p.settle(lab.spec.delays.mcs_signing)
    assert p.verify()["ok"]


def test_method_4_fixes_wds_on_2008r2_with_pxe_and_restarts() -> None:
    lab, clock = make_lab()
    host = lab.hosts["cm07-dp01"]
    boot0 = host.boot_time
    p1 = Player(lab, clock, "1", "cm07-dp01")
    p1.stage("method:1")
    p1.settle()
    assert "the WDSServer service is Stopped" in p1.verify()["message"]
    p = Player(lab, clock, "4", "cm07-dp01")
    p.stage("method:4")
    p.settle()
    assert p.verify()["ok"], lab.dps["cm07-dp01"].history
    assert host.boot_time > boot0 and not host.pending_reboot()
    site = lab.sites["C07"]
    pxe = [r["PackageID"] for r in site.dp_records if "SMSPXEIMAGES$" in r["ServerNALPath"]]
    assert sorted(pxe) == ["C0700003", "C0700004"]
    assert {"WDS", "WDS-Deployment", "WDS-Transport"} <= host.features


def test_wds_install_without_transport_leaves_multicast_broken() -> None:
    lab, clock = make_lab()
    p = Player(lab, clock, "4", "cm07-dp01")
    p.plan = Planner(CATALOG, CATALOG.load("multicast"), INVENTORY).plan(
        method="4", hosts="cm07-dp01", overrides=["wds_features=WDS-Deployment"]
    )
    p.hp = p.plan.hosts[0]
    with pytest.raises(AssertionError, match="wait-mcs-install"):
        p.stage("method:4")  # mcs.msi needs the Transport Server: its install fails
    assert "WDS-Transport" not in lab.hosts["cm07-dp01"].features


# -- Windows versions and their feature tools ----------------------------------------------------


def _wds_script(host: str, action: str) -> str:
    plan = Planner(CATALOG, CATALOG.load("multicast"), INVENTORY).plan(method="4", hosts=host)
    hp = plan.hosts[0]
    ps = next(s for s in hp.all_steps() if s.step.id == f"m4.{action}-wds")
    return render_step(CATALOG, plan, hp, ps)


@pytest.mark.parametrize(
    ("host", "os_version"),
    [("cm07-dp01", "2008r2"), ("cm07-dp02", "2008"), ("cm07-dp01", "2012r2")],
)
def test_wds_uninstall_and_install_on_each_windows(host: str, os_version: str) -> None:
    lab, clock = make_lab()
    h = lab.hosts[host]
    # The script is the inventory's (2008 R2: Add-/Remove-WindowsFeature); on 2012 R2 those
    # names are aliases of Install-/Uninstall-WindowsFeature, so it works there too.
    h.os_version = os_version
    result, _, code = run(lab, host, _wds_script(host, "uninstall"))
    assert code == 0 and result and result["changed"] and result["reboot_required"]
    assert "WDSServer" not in h.services and h.pending_reboot()
    result, _, code = run(lab, host, _wds_script(host, "install"))
    assert code == 1 and result and " failed" in result["message"]
    player = Player(lab, clock, "4", host)
    player.restart_asked = True  # the uninstall's RestartNeeded
    assert player.restart_if_asked()
    result, _, code = run(lab, host, _wds_script(host, "install"))
    assert code == 0 and result and result["changed"]
    assert {"WDS-Deployment", "WDS-Transport"} <= h.features


def test_wrong_tool_fails_as_powershell_does() -> None:
    lab, _ = make_lab()
    lab.hosts["cm07-dp02"].os_version = "2012r2"  # ServerManagerCmd.exe is gone on 2012 R2
    result, _, code = run(lab, "cm07-dp02", _wds_script("cm07-dp02", "uninstall"))
    assert code == 1 and result
    assert result["message"].startswith(
        "The term 'ServerManagerCmd.exe' is not recognized as the name of a cmdlet"
    )
    script = _wds_script("cm07-dp01", "install").replace(
        "Add-WindowsFeature", "Install-WindowsFeature"
    )
    run(lab, "cm07-dp01", _wds_script("cm07-dp01", "uninstall"))
    lab.hosts["cm07-dp01"].clear_reboot_marks()
    lab.dps["cm07-dp01"].wds_removal_pending = False
    result, _, code = run(lab, "cm07-dp01", script)
    assert (
        code == 1 and result and "'Install-WindowsFeature' is not recognized" in result["message"]
    )


# -- engine log monitors -------------------------------------------------------------------------


def test_log_read_returns_only_appended_bytes_and_survives_rollover() -> None:
    lab, clock = make_lab()
    lab.faults.add(host="cm07-dp02", kind="log-rollover", log="MCSSetup.log", operation="uninstall")
    p = Player(lab, clock, "3", "cm07-dp02")
    host = lab.hosts["cm07-dp02"]
    p.arm("method:3/m3.wait-mcs-uninstall")
    start = dict(p.armed["method:3/m3.wait-mcs-uninstall"]["MCSSetup.log"])
    assert start["offset"] > 0  # the old install is there, and must not be read
    p.step(next(s for s in p.hp.all_steps() if s.step.id == "m3.disable-dp-multicast"))
    host.stats.log_reads.clear()
    seen: list[str] = []
    for _ in range(60):
        clock.advance(5)
        seen += p.read("method:3/m3.wait-mcs-uninstall")["MCSSetup.log"]
    assert host.fs.get(r"D:\SMS\Logs\MCSSetup.lo_") is not None
    assert "Installation was successful." not in seen  # the old lines before the armed offset
    assert seen[0].startswith("*****") and "mcs.msi exited with return code: 0" in seen
    appended = host.fs.get(r"D:\SMS\Logs\MCSSetup.lo_").size - start["offset"]
    appended += host.fs.get(r"D:\SMS\Logs\MCSSetup.log").size
    setup = sum(r["bytes"] for r in host.stats.log_reads if r["log"] == "MCSSetup.log")
    assert setup == appended


def test_log_failure_fault_writes_a_failure_line_and_keeps_the_role() -> None:
    lab, clock = make_lab()
    lab.faults.add(host="cm07-dp02", kind="log-failure", operation="uninstall")
    p = Player(lab, clock, "3", "cm07-dp02")
    with pytest.raises(AssertionError, match="failure line"):
        p.stage("method:3")
    assert lab.dps["cm07-dp02"].roles["multicast"].installed


def test_reboot_during_a_step_never_completes_and_host_returns() -> None:
    lab, clock = make_lab()
    lab.faults.add(
        host="cm07-dp01", kind="reboot-during", step="*m4.uninstall-wds", down_seconds=40
    )
    backend = lab.backend("cm07-dp01")
    result, _, code = run(lab, "cm07-dp01", _wds_script("cm07-dp01", "uninstall"))
    assert result is None and code is None and not backend.is_up()
    clock.advance(41)
    assert backend.is_up()


def test_script_failure_fault() -> None:
    lab, _ = make_lab()
    lab.faults.add(host="cm07-dp01", kind="script-failure", step="*uninstall-wds", message="boom")
    result, _, code = run(lab, "cm07-dp01", _wds_script("cm07-dp01", "uninstall"))
    assert code == 1 and result and result["message"] == "boom"
    assert "WDS" in lab.hosts["cm07-dp01"].features


def test_boot_image_update_script_writes_distmgr_statmsgs() -> None:
    lab, clock = make_lab()
    plan = Planner(CATALOG, CATALOG.load("boot-image-update"), INVENTORY).plan(
        method=None, hosts="cm12-site01"
    )
    hp = plan.hosts[0]
    ps = next(s for s in hp.all_steps() if s.step.id == "upd.update-boot-image")
    item = {"PackageID": "P1200005", "Name": "WinPE 3.1 x86", "Architecture": "x86"}
    result, err, code = run(lab, "cm12-site01", render_step(CATALOG, plan, hp, ps, item))
    assert code == 0 and result and result["changed"], (result, err)
    clock.advance(lab.spec.delays.distmgr + lab.spec.delays.distmgr_done + 1)
    lab.tick()
    log = lab.hosts["cm12-site01"].fs.get(
        r"C:\Program Files\Microsoft Configuration Manager\Logs\distmgr.log"
    )
    text = [m for m in messages(bytes(log.data)) if "STATMSG" in m]
    # The order of the package-actions sample (shared/logs, distmgr-package-update-ok-PS100039).
    assert [re.search(r"ID=(\d+)", m)[1] for m in text] == ["2376", "2311", "2301"]
    assert all('AVAL0="P1200005"' in m for m in text)
    assert lab.sites["P12"].boot_images["P1200005"]["SourceVersion"] == 2


def test_hosts_without_winrm_are_not_served() -> None:
    lab, _ = make_lab()
    assert lab.backend("xp-wks001") is None
    assert lab.backend("xp-wks002") is not None
    fleet = [h for h in lab.hosts if h.startswith("xp-fleet")]
    assert len(fleet) == 50 and sum(lab.backend(h) is None for h in fleet) == 16


def test_result_line_is_json() -> None:
    lab, _ = make_lab()
    backend = lab.backend("cm07-dp01")
    cmd = backend.start_command(POWERSHELL, list(BOOTSTRAP_ARGUMENTS))
    cmd.send_input(engine_script("boot_time", "x | boot").encode(), True)
    out, _, done, code = cmd.receive(0)
    assert done and code == 0 and out.startswith(b"CMRB-RESULT {") and out.endswith(b"\r\n")
    assert json.loads(out[len(b"CMRB-RESULT ") :])["data"].endswith("+000")


def test_write_inventory_matches_the_lab(tmp_path: Path) -> None:
    from cmrunbook_lab.inventory_out import write_inventory

    lab, _ = make_lab()
    inv = write_inventory(lab, tmp_path / "lab.yaml", lambda name: (45985, f"/wsman/{name}"))
    dp = inv.hosts["cm07-dp01"]
    assert dp.address == "cm07-dp01.corp.example" and dp.pxe and dp.multicast
    assert dp.winrm(inv).address == "127.0.0.1"  # connect here; templates keep the FQDN
    assert dp.winrm(inv).path == "/wsman/cm07-dp01" and dp.winrm(inv).port == 45985
    assert not inv.hosts["xp-wks001"].has_winrm and inv.file.sites["C07"].provider == "cm07-site01"
