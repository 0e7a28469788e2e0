"""Log monitors read only appended bytes, follow a rollover and stop on the first verdict."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers_lab import engine_script, make_lab, run

from cmrunbook.load.logcatalog import Expectation, Pattern
from cmrunbook.load.project import Project
from cmrunbook.run.monitor import (
    WaitResult,
    Watch,
    compile_expectation,
    distribution_verdict,
    make_watch,
    wait_for_logs,
)
from cmrunbook_lab.logs import Line, append

MSI_OK = (
    "Windows Installer removed the product. Product Name: ConfigMgr MCS. "
    "Removal success or error status: 0."
)


def cm(message: str, type_: int = 1) -> str:
    return (
        f'<![LOG[{message}]LOG]!><time="10:00:00.000+000" date="11-21-2026" component="MCSSetup" '
        f'context="" type="{type_}" thread="100" file="setup.cpp:1">\n'
    )


class FakeHost:
    """Files on a 'host', read the way templates/engine/log_read.ps1.j2 reads them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.reads: list[tuple[int, int]] = []  # (bytes appended since last poll, bytes read)
        self._sizes: dict[str, int] = {}

    def append(self, name: str, text: str) -> None:
        self.append_bytes(name, text.encode("utf-8"))

    def append_bytes(self, name: str, data: bytes) -> None:
        with open(self.folder / name, "ab") as fh:
            fh.write(data)

    def read(self, request: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out = {}
        for log, w in request.items():
            path = self.folder / log
            offset = int(w["offset"])
            chunks = []
            size = path.stat().st_size if path.exists() else 0
            if size < offset:
                old = path.with_suffix(".lo_")
                chunks.append(old.read_bytes()[offset:])
                offset = 0
            data = path.read_bytes()[offset:] if path.exists() else b""
            chunks.append(data)
            appended = size - self._sizes.get(log, int(w["offset"])) if size >= offset else size
            self._sizes[log] = size
            self.reads.append((appended, sum(len(c) for c in chunks)))
            out[log] = {
                "chunks": [base64.b64encode(c).decode() for c in chunks],
                "offset": offset + len(data),
            }
        return out


def watch(
    log: str, offset: int, success: str, failure: str = "exited with return code: [1-9]"
) -> Watch:
    exp = Expectation(
        success=[pat(success)],
        failure=[pat(failure)],
        reboot=[pat("return code: 3010")],
        confidence="docs",
        provenance="test",
    )
    return make_watch(log, exp, None, path=log, offset=offset)


def pat(regex: str) -> Pattern:
    return Pattern(re=regex, unconfirmed="test")


def test_lines_written_before_arming_do_not_count(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.append("MCSSetup.log", cm("mcs.msi exited with return code: 0"))  # an earlier install
    armed = (tmp_path / "MCSSetup.log").stat().st_size
    w = watch("MCSSetup.log", armed, r"mcs\.msi exited with return code: 0\b")
    polls = iter(range(100))

    def sleep(_: float) -> None:
        n = next(polls)
        if n == 1:
            host.append("MCSSetup.log", cm("Deinstalling component"))
        if n == 2:
            host.append("MCSSetup.log", cm("mcs.msi exited with return code: 0"))

    res = wait_for_logs([w], host.read, timeout=100, poll=1, sleep=sleep, clock=lambda: 0.0)
    assert res.status == "ok" and res.polls == 4
    assert all(read == appended for appended, read in host.reads), host.reads  # only new bytes


def test_all_logs_must_succeed_and_a_failure_line_stops_at_once(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.append("MCSSetup.log", cm("mcs.msi exited with return code: 0"))
    host.append(
        "MCSMSI.log",
        cm("Windows Installer removed the product. Removal success or error status: 1603.", 3),
    )
    a = watch("MCSSetup.log", 0, r"mcs\.msi exited with return code: 0\b")
    b = watch(
        "MCSMSI.log",
        0,
        r"Removal success or error status: 0\.",
        r"Removal success or error status: (?!0\.)\d+",
    )
    res = wait_for_logs(
        [a, b], host.read, timeout=100, poll=1, sleep=lambda _: None, clock=lambda: 0.0
    )
    assert res.status == "failed"
    assert "MCSMSI.log reports failure" in res.message and "1603" in res.message


def test_a_rollover_to_lo_during_the_wait_loses_no_line(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.append("PXESetup.log", cm("starting") * 3)
    armed = (tmp_path / "PXESetup.log").stat().st_size
    w = watch("PXESetup.log", armed, r"pxe\.msi exited with return code: 0\b")
    step = iter(range(100))

    def sleep(_: float) -> None:
        n = next(step)
        if n == 0:
            host.append("PXESetup.log", cm("Installing pxe.msi"))
        if n == 1:  # the size limit is reached: the log becomes .lo_ and a new file starts
            (tmp_path / "PXESetup.log").rename(tmp_path / "PXESetup.lo_")
            host.append("PXESetup.log", cm("pxe.msi exited with return code: 0"))

    res = wait_for_logs([w], host.read, timeout=100, poll=1, sleep=sleep, clock=lambda: 0.0)
    assert res.status == "ok"
    assert any("Installing pxe.msi" in line for line in w.tail)


def test_timeout_reports_the_last_lines_read(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.append("MCSMSI.log", cm("still working 1") + cm("still working 2"))
    w = watch("MCSMSI.log", 0, MSI_OK)
    ticks = iter(range(0, 1000, 10))
    res = wait_for_logs(
        [w], host.read, timeout=30, poll=10, sleep=lambda _: None, clock=lambda: float(next(ticks))
    )
    assert res.status == "timeout"
    assert "timed out after 30s waiting for MCSMSI.log" in res.message
    assert res.lines[-1].endswith("still working 2")


def test_patterns_take_the_loop_item_escaped(tmp_path: Path) -> None:
    exp = Expectation(
        success=[pat(r'STATMSG: ID=2301 .*ISTR0="{PackageID}"')], confidence="docs", provenance="t"
    )
    (success,), _, _ = compile_expectation(exp, {"PackageID": "P12.0004"})
    assert success.search('STATMSG: ID=2301 SEV=I ISTR0="P12.0004"')
    assert not success.search('STATMSG: ID=2301 SEV=I ISTR0="P12X0004"')  # the dot is literal


def test_a_character_split_between_two_polls_stays_whole(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    line = cm("Installing “SMS Multicast Service Point” (mcs.msi)") + cm(
        "mcs.msi exited with return code: 0"
    )
    data = line.encode("utf-8")
    cut = data.index("“".encode()) + 1  # inside the three bytes of the quotation mark
    host.append_bytes("MCSSetup.log", data[:cut])
    w = watch("MCSSetup.log", 0, r"mcs\.msi exited with return code: 0\b")
    polls = iter(range(100))

    def sleep(_: float) -> None:
        if next(polls) == 0:
            host.append_bytes("MCSSetup.log", data[cut:])

    res = wait_for_logs([w], host.read, timeout=100, poll=1, sleep=sleep, clock=lambda: 0.0)
    assert res.status == "ok"
    assert w.tail[0] == "Installing “SMS Multicast Service Point” (mcs.msi)"


def test_a_log_that_is_not_text_fails_the_wait_and_says_why(tmp_path: Path) -> None:
    """A log padded with NULs (a crash while it was written) is a failed wait, not a crash."""
    host = FakeHost(tmp_path)
    host.append_bytes("MCSSetup.log", b"\0" * 512)
    w = watch("MCSSetup.log", 0, r"mcs\.msi exited with return code: 0\b")
    res = wait_for_logs(
        [w], host.read, timeout=100, poll=1, sleep=lambda _: None, clock=lambda: 0.0
    )
    assert res.status == "failed" and res.polls == 1
    assert res.message.startswith("MCSSetup.log cannot be read as a log: content is binary")


# -- real line shapes (shared/logs) -------------------------------------------------------------

CATALOG = Project(Path(__file__).resolve().parents[2])
# Lines as the real samples write them (shared/logs/SOURCES.md).
FSP_MSI_OK = (
    "Windows Installer installed the product. Product Name: ConfigMgr Fallback Status Point. "
    "Product Version: 5.00.9096.1000. Product Language: 1033. Manufacturer: Microsoft "
    "Corporation. Installation success or error status: 0."
)
DPPROV_HARMLESS = "[66C][Thu 09/04/2014 11:30:39]:Failed to open WDS service."
ROLESETUP_OK = "<02/09/14 22:53:44> Installation was successful."


def statmsg(msg_id: int, name: str, package_id: str) -> str:
    """A distmgr STATMSG line in the shape of the PS10000A / PS100039 samples."""
    return (
        f'STATMSG: ID={msg_id} SEV=I LEV=M SOURCE="SMS Server" COMP="SMS_DISTRIBUTION_MANAGER" '
        f"SYS=SRV1.CONTOSO.COM SITE=PS1 PID=924 TID=1424 GMTDATE=Tue Oct 09 22:36:30.986 2018 "
        f'ISTR0="{name}" ISTR1="{package_id}" ISTR2="" NUMATTRS=1 AID0=400 AVAL0="{package_id}"'
    )


def catalog_watch(log: str, event: str, item: dict[str, str] | None = None) -> Watch:
    return make_watch(log, CATALOG.logs.expectation(log, event), item, path=log, offset=0)


def run_wait(
    host: FakeHost, watches: list[Watch], script: dict[int, tuple[str, str]], **kw: Any
) -> WaitResult:
    """Wait with lines appended at given polls: {poll number: (log, line)}."""
    polls = iter(range(100))

    def sleep(_: float) -> None:
        n = next(polls)
        if n in script:
            host.append(*script[n])

    return wait_for_logs(
        watches, host.read, timeout=100, poll=1, sleep=sleep, clock=lambda: 0.0, **kw
    )


def test_real_success_lines_with_error_words_are_success(tmp_path: Path) -> None:
    """An MSI log's "success or error status: 0." and a setup's "Failed to ..." on the way to
    "Installation was successful" end the install wait with success, not failure."""
    host = FakeHost(tmp_path)
    host.append("MCSMSI.log", FSP_MSI_OK + "\n")
    setup = catalog_watch("MCSSetup.log", "install")
    res = run_wait(
        host,
        [setup, catalog_watch("MCSMSI.log", "install")],
        {0: ("MCSSetup.log", DPPROV_HARMLESS + "\n"), 2: ("MCSSetup.log", ROLESETUP_OK + "\n")},
    )
    assert res.status == "ok", res.message
    assert "MCSMSI.log: Windows Installer installed the product" in res.message
    assert setup.errors[0] == DPPROV_HARMLESS  # kept as a hint, did not decide


def test_a_cmtrace_error_entry_no_pattern_knows_does_not_end_the_wait(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    w = catalog_watch("MCSSetup.log", "install")
    res = run_wait(
        host,
        [w],
        {
            0: ("MCSSetup.log", cm("Failed to open WDS service.", 3)),
            1: ("MCSSetup.log", cm("mcs.msi exited with return code 0")),
        },
    )
    assert res.status == "ok" and res.message == "MCSSetup.log: mcs.msi exited with return code 0"


def test_a_wait_no_pattern_ends_says_it_cannot_tell(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.append("MCSSetup.log", cm("Failed to open WDS service.", 3))
    ticks = iter(range(0, 1000, 10))
    res = wait_for_logs(
        [catalog_watch("MCSSetup.log", "uninstall"), catalog_watch("MCSMSI.log", "uninstall")],
        host.read,
        timeout=30,
        poll=10,
        sleep=lambda _: None,
        clock=lambda: float(next(ticks)),
    )
    assert res.status == "timeout"
    assert res.message.startswith(
        "timed out after 30s waiting for MCSSetup.log, MCSMSI.log (not required); "
        "cannot tell: no known line seen"
    )
    assert "error entries no pattern knows: Failed to open WDS service." in res.message


def test_an_uninstall_ends_on_the_setup_log_when_no_msi_log_is_written(tmp_path: Path) -> None:
    """No source shows a role removal writing MCSMSI.log: the uninstall wait needs MCSSetup.log."""
    host = FakeHost(tmp_path)
    res = run_wait(
        host,
        [catalog_watch("MCSSetup.log", "uninstall"), catalog_watch("MCSMSI.log", "uninstall")],
        {1: ("MCSSetup.log", cm("mcs.msi exited with return code: 0"))},
    )
    assert res.status == "ok", res.message


def test_a_failure_in_the_msi_log_still_ends_an_uninstall(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    failed = MSI_OK.replace("status: 0.", "status: 1603.")
    res = run_wait(
        host,
        [catalog_watch("MCSSetup.log", "uninstall"), catalog_watch("MCSMSI.log", "uninstall")],
        {1: ("MCSMSI.log", cm(failed, 3))},
    )
    assert res.status == "failed" and res.message.startswith("MCSMSI.log reports failure")


def test_a_distmgr_failure_ends_only_the_wait_for_the_package_it_names(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    item = {"PackageID": "PS10000A"}
    w = catalog_watch("distmgr.log", "boot-image-updated", item)
    res = run_wait(
        host,
        [w],
        {
            0: ("distmgr.log", statmsg(2302, "Other image", "PS10000B") + "\n"),
            1: ("distmgr.log", statmsg(2301, "Other image", "PS10000B") + "\n"),
            2: ("distmgr.log", statmsg(2301, "Zero Touch WinPE x64", "PS10000A") + "\n"),
        },
        confirm=lambda: ("success", "") if w.outcome else ("pending", ""),
    )
    assert res.status == "ok" and 'ISTR1="PS10000A"' in res.message


def test_a_boot_image_wait_does_not_end_at_2301_but_when_the_dps_have_it(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    item = {"PackageID": "PS10000A"}
    w = catalog_watch("distmgr.log", "boot-image-updated", item)
    nal = r'["Display=\\DP1\"]MSWNET:["SMS_SITE=PS1"]\\DP1\\'
    baseline = [{"dp": nal, "state": 0, "version": 1}]
    answers = [[{"dp": nal, "state": 1, "version": 1}]] * 3 + [
        [{"dp": nal, "state": 0, "version": 2}]
    ]
    asked: list[str] = []

    def confirm() -> tuple[str, str]:
        verdict = distribution_verdict("PS10000A", answers[len(asked)], baseline)
        asked.append(f"{w.outcome}/{verdict[0]}")
        return verdict

    res = run_wait(
        host,
        [w],
        {0: ("distmgr.log", statmsg(2301, "Zero Touch WinPE x64", "PS10000A") + "\n")},
        confirm=confirm,
    )
    # 2301 is read at the second poll; the wait goes on until the DP has the new version.
    assert asked == ["None/pending", "None/pending", "success/pending", "success/success"]
    assert res.status == "ok"
    assert "distribution status: PS10000A installed on all 1 distribution point(s)" in res.message


def test_distribution_status_verdicts() -> None:
    dp, other = "dp1", "dp2"
    before = [{"dp": dp, "state": 0, "version": 3}, {"dp": other, "state": 3, "version": 3}]
    same = [{"dp": dp, "state": 0, "version": 3}, {"dp": other, "state": 0, "version": 4}]
    assert distribution_verdict("P", same, before)[0] == "pending"  # dp1 still has version 3
    old_failure = [{"dp": dp, "state": 0, "version": 4}, {"dp": other, "state": 3, "version": 3}]
    assert distribution_verdict("P", old_failure, before)[0] == "pending"  # retried, not new
    new_failure = [{"dp": dp, "state": 3, "version": 3}, {"dp": other, "state": 1, "version": 3}]
    state, said = distribution_verdict("P", new_failure, before)
    assert state == "failure" and "P failed to install on dp1 (State 3" in said
    done = [{"dp": dp, "state": 0, "version": 4}, {"dp": other, "state": 0, "version": 4}]
    assert distribution_verdict("P", done, before)[0] == "success"
    assert distribution_verdict("P", [], before)[0] == "pending"


# -- arming where the log really is (templates/engine/log_arm, log_read, in the lab) ----------


def test_a_log_absent_at_arm_time_is_watched_in_every_candidate_folder() -> None:
    """The first existing folder (a stale C:\\SMS\\Logs) is not where the role writes."""
    lab, _ = make_lab()
    host = lab.hosts["cm07-dp02"]  # not a PXE service point: no PXESetup.log yet
    host.fs.mkdir(r"C:\SMS\Logs")
    dirs = [r"C:\SMS\Logs", r"E:\SMS\Logs", host.log_dir]
    assert host.fs.get(host.log_path("PXESetup.log")) is None
    armed, _, code = run(
        lab,
        "cm07-dp02",
        engine_script(
            "log_arm", "x | arm", logs=["PXESetup.log"], dirs=dirs, host={"install_dir": "C:\\SMS"}
        ),
    )
    assert code == 0 and armed is not None
    entry = armed["data"]["PXESetup.log"]
    assert entry["path"] is None and entry["exists"] is False
    assert entry["candidates"][-1] == host.log_path("PXESetup.log")
    w = catalog_watch("PXESetup.log", "install")
    w.path, w.candidates = None, entry["candidates"]

    def read(request: dict[str, dict[str, Any]]) -> dict[str, Any]:
        result, _, _ = run(
            lab,
            "cm07-dp02",
            engine_script("log_read", "x | read", watches=request, max_bytes=1 << 20),
        )
        assert result is not None
        return result["data"]

    polls = iter(range(100))

    def sleep(_: float) -> None:
        if next(polls) == 1:
            append(
                host,
                "PXESetup.log",
                [Line("pxe.msi exited with return code: 0", "PXE")],
                datetime(2026, 12, 2),
            )

    res = wait_for_logs([w], read, timeout=100, poll=1, sleep=sleep, clock=lambda: 0.0)
    assert res.status == "ok" and w.path == host.log_path("PXESetup.log")
