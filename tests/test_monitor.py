"""Log monitors read only appended bytes, follow a rollover and stop on the first verdict."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cmrunbook.logcatalog import Expectation, Pattern
from cmrunbook.monitor import Watch, compile_expectation, make_watch, wait_for_logs

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
