"""`invoke log-check` on every real site-system log sample in shared/logs (SOURCES.md).

The verdicts come from the log monitor's own code (monitor.check_file), so these are the
verdicts a real wait would reach on these lines: success for the successful installs and
updates, failure for the 1603 MSI log, pending for the distmgr excerpt with no outcome, and
never a failure for the harmless "Failed ..." and "success or error status: 0." lines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from cmrunbook.load.logcatalog import PATTERN_KINDS
from cmrunbook.load.project import Project
from cmrunbook.logs.cmtrace import open_log
from tests.helpers_engine import INVOKE, REPO, run_cli

SHARED_LOGS = REPO.parent / "shared" / "logs"
CATALOG = Project(REPO)

needs_samples = pytest.mark.skipif(
    not (SHARED_LOGS / "SOURCES.md").is_file(), reason="shared/logs is not next to the repository"
)


class Case(NamedTuple):
    file: str
    log: str
    event: str
    package_id: str | None
    verdict: str
    decided: str  # text of the line that decided ("" for pending)


CASES = [
    Case(
        "distmgr-boot-image-add-to-pxe-dp-RR200004-kb4468601.log",
        "distmgr.log",
        "boot-image-updated",
        "RR200004",
        "pending",
        "",
    ),
    Case(
        "distmgr-boot-image-distributed-ok-PS10000A-itpro-poc.log",
        "distmgr.log",
        "boot-image-updated",
        "PS10000A",
        "success",
        'ISTR1="PS10000A"',
    ),
    Case(
        "distmgr-package-update-ok-PS100039-package-actions.log",
        "distmgr.log",
        "boot-image-updated",
        "PS100039",
        "success",
        "ID=2301 SEV=I",
    ),
    # The same log waited on for another package: its lines end no wait but their own.
    Case(
        "distmgr-package-update-ok-PS100039-package-actions.log",
        "distmgr.log",
        "boot-image-updated",
        "PS10000A",
        "pending",
        "",
    ),
    Case(
        "fsmmsi-configmgr-role-msi-install-ok-analogue.log",
        "MCSMSI.log",
        "install",
        None,
        "success",
        "Installation success or error status: 0.",
    ),
    Case(
        "msi-verbose-install-fail-1603-nodejs-analogue.log",
        "MCSMSI.log",
        "install",
        None,
        "failure",
        "Installation success or error status: 1603.",
    ),
    Case(
        "msi-verbose-uninstall-ok-nodejs-analogue.log",
        "MCSMSI.log",
        "uninstall",
        None,
        "success",
        "Removal success or error status: 0.",
    ),
    Case(
        "smsdpprov-pxe-install-ok-cm2012r2-kb4468601.log",
        "smsdpprov.log",
        "pxe-install",
        None,
        "success",
        "11:31:50]:Installed PXE",
    ),
    Case(
        "supsetup-rolesetup-install-ok-2014-analogue.log",
        "MCSSetup.log",
        "install",
        None,
        "success",
        "Installation was successful.",
    ),
    Case(
        "supsetup-rolesetup-install-ok-2014-analogue.log",
        "PXESetup.log",
        "install",
        None,
        "success",
        "Installation was successful.",
    ),
]


def log_check(case: Case) -> tuple[int, list[str]]:
    args = ["log-check", str(SHARED_LOGS / case.file), "--log", case.log, "--event", case.event]
    if case.package_id:
        args += ["--package-id", case.package_id]
    res = run_cli(*args)
    assert not res.stderr, res.stderr
    return res.returncode, res.stdout.splitlines()


@needs_samples
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.file}:{c.log}:{c.package_id or ''}")
def test_each_real_sample_gets_its_verdict(case: Case) -> None:
    code, lines = log_check(case)
    assert lines[-1].startswith(f"{case.verdict}:"), lines
    assert case.decided in lines[-1]
    assert code == (0 if case.verdict == "success" else 1)


@needs_samples
def test_every_site_system_sample_is_checked() -> None:
    """A sample added to SOURCES.md's site-system table must get its verdict here."""
    sources = (SHARED_LOGS / "SOURCES.md").read_text(encoding="utf-8")
    table = sources[sources.index("## Site-system logs") :].split("\n## ")[0]
    listed = set(re.findall(r"^\| ([\w.-]+\.log) \|", table, re.MULTILINE))
    assert listed and listed == {c.file for c in CASES}


@needs_samples
def test_harmless_failure_lines_are_shown_but_do_not_decide() -> None:
    code, lines = log_check(CASES[7])  # smsdpprov.log: "Failed to open WDS service." and more
    shown = "\n".join(lines[:-1])
    assert "does not decide" in shown and code == 0
    assert lines[-1].startswith("success: line 55:")


@needs_samples
def test_every_seen_in_pattern_matches_a_line_of_the_sample_it_cites() -> None:
    """The catalog's citations are checked: each seen_in pattern matches its sample."""
    item = {"PackageID": "PS10000A"}
    checked = 0
    for log, d in CATALOG.logs.logs.items():
        for event, exp in d.expect.items():
            for kind in PATTERN_KINDS:
                for pat in getattr(exp, kind):
                    if pat.seen_in is None:
                        assert pat.unconfirmed, (log, event, pat.re)
                        continue
                    files = [
                        f
                        for f in re.findall(r"[\w.-]+\.log", pat.seen_in)
                        if (SHARED_LOGS / f).is_file()
                    ]
                    assert files, f"{log} {event}: seen_in names no sample: {pat.seen_in}"
                    sample = files[0]
                    pid = re.search(r'"(PS\w{6})"', pat.seen_in)
                    values = {**item, "PackageID": pid[1]} if pid else item
                    rx = re.compile(pat.re.replace("{PackageID}", values["PackageID"]))
                    messages = [r.message for r in open_log(SHARED_LOGS / sample)]
                    assert any(rx.search(m) for m in messages), (log, event, pat.re, sample)
                    checked += 1
    assert checked >= 6


@needs_samples
def test_smsts_and_osdlaunch_samples_are_not_site_system_logs() -> None:
    """smsts.log and OSDLaunch.log are client logs read by `invoke diagnose`; no wait watches
    them, so log-check refuses them rather than judge them by some other log's patterns."""
    res = run_cli(
        "log-check",
        str(SHARED_LOGS / "osdlaunch-nt4-kb930011.log"),
        "--log",
        "OSDLaunch.log",
        "--event",
        "install",
    )
    assert res.returncode == 2 and "is not in the catalog" in res.stderr


def test_bad_input_exits_2_and_says_what_is_expected(tmp_path: Path) -> None:
    log = tmp_path / "distmgr.log"
    log.write_text("nothing\n", encoding="utf-8")
    missing_id = run_cli(
        "log-check", str(log), "--log", "distmgr.log", "--event", "boot-image-updated"
    )
    assert missing_id.returncode == 2 and "needs --package-id" in missing_id.stderr
    event = run_cli("log-check", str(log), "--log", "MCSSetup.log", "--event", "installed")
    assert event.returncode == 2 and "known: install, uninstall" in event.stderr
    absent = run_cli(
        "log-check", str(tmp_path / "no.log"), "--log", "MCSSetup.log", "--event", "install"
    )
    assert absent.returncode == 2 and "no such file" in absent.stderr


def test_a_binary_log_is_a_failure_as_in_a_wait(tmp_path: Path) -> None:
    log = tmp_path / "MCSSetup.log"
    log.write_bytes(b"\0" * 256)
    res = run_cli("log-check", str(log), "--log", "MCSSetup.log", "--event", "install")
    assert res.returncode == 1
    assert res.stdout.splitlines()[-1].startswith("failure: MCSSetup.log cannot be read")


def test_the_cmrunbook_program_has_log_check(tmp_path: Path) -> None:
    program = shutil.which("cmrunbook", path=str(INVOKE.parent))
    assert program is not None
    log = tmp_path / "MCSSetup.log"
    log.write_text("Failed to open WDS service.\nmcs.msi exited with return code 0\n")
    res = subprocess.run(
        [program, "log-check", str(log), "--log", "MCSSetup.log", "--event", "install"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "success: line 2: mcs.msi exited with return code 0"
