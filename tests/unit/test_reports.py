"""Run reports from hand-written journals: complete, killed mid-step, hosts interleaved."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from invoke.context import Context

from cmrunbook.cli.documents import report as report_task
from cmrunbook.load.project import Project
from cmrunbook.record import reports
from cmrunbook.record.journal_read import JournalError, load_journal
from cmrunbook.record.reports import REPORT_FILES, copy_reports, prune_reports, write_reports
from cmrunbook.record.vocabulary import Status

ROOT = Path(__file__).resolve().parents[2]
JOURNALS = Path(__file__).resolve().parents[1] / "data" / "journals"
COMPLETE = "20261121-061000-multicast"
KILLED = "20261121-071500-multicast-killed"
SCHEMA = json.loads((ROOT / "schema" / "report.schema.json").read_text("utf-8"))
CMTRACE = re.compile(
    r'^<!\[LOG\[(?P<msg>.*)\]LOG\]!><time="(?P<time>\d\d:\d\d:\d\d\.\d{3}[+-]\d{3})" '
    r'date="(?P<date>\d\d-\d\d-\d{4})" component="(?P<component>[^"]*)" context="[^"]*" '
    r'type="(?P<type>[123])" thread="(?P<thread>\d+)" file="(?P<file>[^"]*)">$'
)


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMRUNBOOK_ROOT", str(ROOT))
    monkeypatch.chdir(ROOT)


def _run(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / "runs" / name
    shutil.copytree(JOURNALS / name, dest)
    return dest


def test_journal_interleaved_hosts_are_kept_apart() -> None:
    j = load_journal(JOURNALS / COMPLETE)
    assert j.complete and j.status == "failed" and j.exit_code == 1 and not j.problems
    assert j.targets == ["cm07-dp01", "cm07-dp02"]
    dp01, dp02 = j.host("cm07-dp01"), j.host("cm07-dp02")
    assert dp01.status == "ok" and [s.status for s in dp01.steps].count("failed") == 0
    assert len(dp01.steps) == 9
    assert dp02.status == "failed"
    failed = dp02.failures()
    assert [s.key for s in failed] == ["method:3/m3.wait-mcs-install"]
    assert any("return code: 1603" in line for line in failed[0].log_lines)
    loop = dp01.step("method:3/m3.clear-image-multicast")
    assert loop is not None and [r.item for r in loop.results] == ["CCR00012", "CCR00019"]
    assert loop.status == "changed" and loop.duration == pytest.approx(4.8)


def test_journal_killed_mid_step_still_loads() -> None:
    j = load_journal(JOURNALS / KILLED)
    assert not j.complete and j.status == Status.INTERRUPTED and j.exit_code is None
    assert any("last line" in p for p in j.problems)
    dp02 = j.host("cm07-dp02")
    assert dp02.status == Status.INTERRUPTED and dp02.steps[-1].status == Status.INTERRUPTED
    assert "disable-dp-multicast" in dp02.message


def test_journal_without_trailing_newline_and_missing(tmp_path: Path) -> None:
    text = (JOURNALS / COMPLETE / "journal.jsonl").read_text("utf-8").rstrip("\n")
    (tmp_path / "journal.jsonl").write_text(text, encoding="utf-8")
    j = load_journal(tmp_path)
    assert j.complete and not j.problems
    with pytest.raises(JournalError):
        load_journal(tmp_path / "nowhere")
    (tmp_path / "journal.jsonl").write_text('{"seq":1,"ev', encoding="utf-8")
    with pytest.raises(JournalError):
        load_journal(tmp_path)


@pytest.mark.parametrize("name", [COMPLETE, KILLED])
def test_reports_written_and_valid(tmp_path: Path, name: str) -> None:
    run = _run(tmp_path, name)
    paths = write_reports(run, Project(ROOT), None)
    assert sorted(p.name for p in paths) == sorted(REPORT_FILES)
    report = json.loads((run / "report.json").read_text("utf-8"))
    jsonschema.validate(report, SCHEMA)
    assert [h["name"] for h in report["hosts"]] == ["cm07-dp01", "cm07-dp02"]

    suites = ET.parse(run / "junit.xml").getroot()
    assert suites.tag == "testsuites"
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites.findall("testsuite"):
        cases = suite.findall("testcase")
        counted = {
            "tests": len(cases),
            "failures": sum(1 for c in cases if c.find("failure") is not None),
            "errors": sum(1 for c in cases if c.find("error") is not None),
            "skipped": sum(1 for c in cases if c.find("skipped") is not None),
        }
        for k, v in counted.items():
            assert int(suite.get(k, "-1")) == v, (suite.get("name"), k)
            total[k] += v
        host = suite.get("hostname")
        assert {c.get("classname") for c in cases} == {f"multicast.{host}"}
        assert cases[0].get("name") == f"host {host}"
        assert all(float(c.get("time", "x")) >= 0 for c in cases)
    for k, v in total.items():
        assert int(suites.get(k, "-1")) == v

    raw = (run / "cmrunbook.log").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = raw[3:].decode("utf-8").split("\r\n")
    assert lines[-1] == ""
    entries = [CMTRACE.match(line) for line in lines[:-1]]
    assert all(entries), [ln for ln, m in zip(lines, entries, strict=False) if not m][:1]
    events = len(load_journal(run).events)
    assert len(entries) >= events
    assert {m["component"] for m in entries if m} == {"cmrunbook"}
    assert any(m and m["type"] == "3" for m in entries)

    page = (run / "report.html").read_text("utf-8")
    assert re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I) is None
    assert "<script" not in page.lower()


def test_complete_report_figures(tmp_path: Path) -> None:
    run = _run(tmp_path, COMPLETE)
    write_reports(run, Project(ROOT), None)
    report = json.loads((run / "report.json").read_text("utf-8"))
    assert report["run"]["exit_code"] == 1 and report["run"]["status"] == "failed"
    assert report["summary"]["by_status"] == {"failed": 1, "ok": 1}
    (fail,) = report["failures"]
    assert fail["host"] == "cm07-dp02" and fail["citation"] == "Method 3, step 8"
    assert "mcs.msi exited with return code: 1603" in "\n".join(fail["last_log_lines"])
    dp02 = report["hosts"][1]
    assert dp02["steps_planned"] == 9 and dp02["steps_done"] == 6
    suites = ET.parse(run / "junit.xml").getroot()
    dp02_suite = next(s for s in suites if s.get("hostname") == "cm07-dp02")
    assert dp02_suite.get("failures") == "2"  # the host and its failed log wait
    assert dp02_suite.get("skipped") == "2"  # steps 9-12 and the verification, never reached
    log = (run / "cmrunbook.log").read_text("utf-8-sig")
    assert 'type="3" thread="3" file="cm07-dp02"' in log
    page = (run / "report.html").read_text("utf-8")
    assert "cm07-dp01" in page and "return code: 1603" in page and "Last log lines read" in page


def test_killed_report(tmp_path: Path) -> None:
    run = _run(tmp_path, KILLED)
    write_reports(run, Project(ROOT), None)
    report = json.loads((run / "report.json").read_text("utf-8"))
    assert report["run"]["exit_code"] is None and report["run"]["complete"] is False
    assert report["summary"]["by_status"] == {Status.INTERRUPTED: 2}
    assert report["problems"]
    suites = ET.parse(run / "junit.xml").getroot()
    assert int(suites.get("errors", "0")) >= 3  # two hosts and dp02's open step


def test_copy_and_prune(tmp_path: Path) -> None:
    run = _run(tmp_path, COMPLETE)
    files = write_reports(run, Project(ROOT), None)
    dest = tmp_path / "reports"
    target = copy_reports(run, dest, files)
    assert sorted(p.name for p in target.iterdir()) == sorted([*REPORT_FILES, "journal.jsonl"])
    for stamp in ("20261101-010000", "20261110-010000", "20261120-010000"):
        (dest / f"{stamp}-multicast").mkdir()
        (dest / f"{stamp}-multicast" / "report.json").write_text("{}", encoding="utf-8")
    (dest / "not-a-run").mkdir()
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    gone = prune_reports(dest, keep_days=14, now=now)
    assert [p.name for p in gone] == ["20261101-010000-multicast"]
    gone = prune_reports(dest, keep_runs=2, now=now)
    assert [p.name for p in gone] == ["20261110-010000-multicast"]
    assert sorted(p.name for p in dest.iterdir()) == [
        "20261120-010000-multicast",
        COMPLETE,
        "not-a-run",
    ]


def test_report_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path, COMPLETE)
    report_task(Context(), str(run), reports=str(tmp_path / "share"), keep_runs=5)
    out = capsys.readouterr().out
    assert "wrote" in out and (tmp_path / "share" / COMPLETE / "junit.xml").is_file()


# A real `--method auto` run against the lab (cm07-dp02, empty multicast key): the check before
# any method and the ones after Methods 1 and 2 find the fault, Method 3 mends it; exit code 0.
AUTO = "20261202-164351-multicast-auto"
INTERNAL = re.compile(r"\b(?:verify|method):\d|precheck/")
DMTF = re.compile(r"\d{14}\.\d+[+-]\d{3}")


def _auto_reports(tmp_path: Path, journal: str | None = None) -> Path:
    run = _run(tmp_path, AUTO)
    if journal is not None:
        (run / "journal.jsonl").write_text(journal, encoding="utf-8")
    write_reports(run, Project(ROOT), None)
    return run


def test_verifications_that_found_the_fault_before_escalating_are_not_failures(
    tmp_path: Path,
) -> None:
    run = _auto_reports(tmp_path)
    report = json.loads((run / "report.json").read_text("utf-8"))
    jsonschema.validate(report, SCHEMA)
    assert report["run"]["exit_code"] == 0
    assert report["failures"] == [] and report["summary"]["steps_failed"] == 0
    verify = [s for s in report["hosts"][0]["steps"] if s["key"].startswith("verify:")]
    # On disk the status stays what the engine wrote; the report says why it is no failure.
    assert [(s["status"], s["found_fault"]) for s in verify] == [
        ("failed", True),
        ("failed", True),
        ("failed", True),
        ("ok", False),
    ]
    suites = ET.parse(run / "junit.xml").getroot()
    assert (suites.get("failures"), suites.get("errors")) == ("0", "0")
    page = (run / "report.html").read_text("utf-8")
    assert 'class="st st-failed"' not in page and "Failures</h2>" not in page
    assert page.count(">fault found</span>") == 3
    log = (run / "cmrunbook.log").read_text("utf-8-sig")
    assert 'type="3"' not in log


def test_a_verification_the_run_stopped_at_is_still_a_failure(tmp_path: Path) -> None:
    """Cut the auto run after the check following Method 2, as if it had ended there."""
    lines = (JOURNALS / AUTO / "journal.jsonl").read_text("utf-8").splitlines()
    cut = next(
        n for n, line in enumerate(lines) if '"stage": "verify:2", "status": "failed"' in line
    )
    ends = [
        '{"seq": 900, "time": "2026-12-02T16:44:18.000+00:00", "event": "host-end", "host": '
        '"cm07-dp02", "status": "failed", "message": "still failing after Method 2", '
        '"steps_done": 15, "duration": 26.0}',
        '{"seq": 901, "time": "2026-12-02T16:44:18.001+00:00", "event": "run-end", '
        '"status": "failed", "exit_code": 1}',
    ]
    run = _auto_reports(tmp_path, "\n".join([*lines[: cut + 1], *ends]) + "\n")
    report = json.loads((run / "report.json").read_text("utf-8"))
    assert [f["key"] for f in report["failures"]] == ["verify:2/verify.multicast"]
    assert report["summary"]["steps_failed"] == 1
    suite = ET.parse(run / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "2"  # the host and its last check
    failed = [c.get("name", "") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed[1].startswith("15 Verify after Method 2 (Note after each method): Verify")
    skipped = {el.get("message") for el in suite.iter("skipped")}
    assert skipped == {"not reached"}  # Method 3 and on would have run: the host failed


def test_junit_says_an_auto_run_did_not_need_the_later_methods(tmp_path: Path) -> None:
    run = _auto_reports(tmp_path)
    suite = ET.parse(run / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    unrun = [c for c in suite.iter("testcase") if c.find("skipped") is not None]
    names = [c.get("name", "") for c in unrun]  # Method 4 and the check after it
    assert len(names) == 10 and all(n.startswith("-- Method 4") for n in names[:-1])
    assert names[-1].startswith("-- Verify after Method 4 (Note after each method): Verify")
    assert {c.find("skipped").get("message") for c in unrun} == {  # type: ignore[union-attr]
        "not needed: an earlier verification passed"
    }


def test_report_text_names_steps_by_citation_and_times_as_dates(tmp_path: Path) -> None:
    run = _auto_reports(tmp_path)
    page = (run / "report.html").read_text("utf-8")
    text = re.sub(r"<code>.*?</code>|<[^>]+>", " ", page, flags=re.S)
    assert not INTERNAL.search(text), INTERNAL.findall(text)
    assert not DMTF.search(page)
    # The restart's boot times, as the journal holds them in WMI form, read as dates.
    assert "up since 2026-12-02 16:44:02 UTC" in page
    assert "restarted (Method 1, step 3 asked for a restart)" in page
    assert "Stages: Is it still broken?: failed; Verify after Method 1: failed" in page
    suites = ET.parse(run / "junit.xml").getroot()
    human = [c.get("name", "") for c in suites.iter("testcase")]
    human += [el.get("message", "") for el in suites.iter() if el.get("message")]
    assert not any(INTERNAL.search(t) for t in human), [t for t in human if INTERNAL.search(t)]
    assert "03 Is it still broken? (Note after each method): Verify multicast" in human[3]
    messages = [
        m["msg"]
        for line in (run / "cmrunbook.log").read_text("utf-8-sig").splitlines()
        if (m := CMTRACE.match(line))
    ]
    assert not any(INTERNAL.search(m) or DMTF.search(m) for m in messages)


def test_cmtrace_log_says_consent_restarts_and_the_run_duration_in_words(tmp_path: Path) -> None:
    run = _auto_reports(tmp_path)
    lines = (run / "cmrunbook.log").read_text("utf-8-sig").splitlines()
    messages = [m["msg"] for line in lines if (m := CMTRACE.match(line))]
    assert len(messages) == len(lines)
    assert not any('"event":' in m for m in messages)  # no event dumped as raw JSON
    assert messages[-1] == "Run ok, exit code 0, 27.3 s"
    consent = [m for m in messages if "consent" in m]
    assert consent[0].startswith("cm07-dp02: consent to Method 1 (--yes) for its destructive")
    assert "cm07-dp02: restart asked: Method 1, step 3 asked for a restart" in messages


def test_steps_done_counts_plan_steps_once_and_the_html_says_so(tmp_path: Path) -> None:
    """The engine's host-end count is per loop item (25 here): against the plan's 32 steps it
    read as more done than planned on runs with loops."""
    run = _auto_reports(tmp_path)
    report = json.loads((run / "report.json").read_text("utf-8"))
    (host,) = report["hosts"]
    assert host["steps_planned"] == 32
    done_keys = {s["key"] for s in host["steps"] if s["status"] in ("ok", "changed")}
    done_keys |= {s["key"] for s in host["steps"] if s["status"] == "manual-confirmed"}
    assert host["steps_done"] == len(done_keys) == 19
    page = (run / "report.html").read_text("utf-8")
    assert '<td class="n">19 / 32</td>' in page
    assert "stops at the first method that verifies" in page


def test_report_html_shows_the_site_wide_state(tmp_path: Path) -> None:
    run = _auto_reports(tmp_path)
    page = (run / "report.html").read_text("utf-8")
    assert "Site-wide changes: none left outstanding (site C07: image-multicast)." in page
    lines = (JOURNALS / AUTO / "journal.jsonl").read_text("utf-8").splitlines()
    # Killed between clearing the images' multicast option and setting it back.
    cut = next(n for n, line in enumerate(lines) if "m1.wait-image-multicast" in line)
    run = _auto_reports(tmp_path / "killed", "\n".join(lines[:cut]) + "\n")
    page = (run / "report.html").read_text("utf-8")
    assert "Site C07: image-multicast NOT set back: C0700010, C0700011" in page
    assert "none left outstanding" not in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    not (CHROMIUM and shutil.which("pdftotext")), reason="needs chromium and poppler-utils"
)
def test_report_html_page_1_holds_the_first_host_timeline(tmp_path: Path) -> None:
    """A one-host run: the summary is short, so its timeline starts under it on page 1."""
    run = _auto_reports(tmp_path)
    pdf = tmp_path / "report.pdf"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--print-to-pdf={pdf}",
            "--no-pdf-header-footer",
            (run / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True)
    page_1 = " ".join(text.stdout.split("\f")[0].split())
    assert "Summary" in page_1 and "Confirm the site reset after KB971413" in page_1


def test_report_html_of_a_fleet_lists_the_hosts_to_act_on_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond HTML_HOSTS hosts the page lists the worst first and counts the rest by result;
    report.json, junit.xml and the CMTrace log still hold every host."""
    monkeypatch.setattr(reports, "HTML_HOSTS", 1)
    run = _run(tmp_path, COMPLETE)
    write_reports(run, Project(ROOT))
    page = (run / "report.html").read_text("utf-8")
    assert 'id="host-cm07-dp02"' in page and 'id="host-cm07-dp01"' not in page
    assert "1 more hosts are not listed here (1 ok)" in page
    assert "lists the 1 to act on first of 2" in page
    report = json.loads((run / "report.json").read_text("utf-8"))
    assert [h["name"] for h in report["hosts"]] == ["cm07-dp01", "cm07-dp02"]
    assert len(ET.parse(run / "junit.xml").getroot().findall("testsuite")) == 2
    log = (run / "cmrunbook.log").read_text("utf-8-sig")
    assert 'file="cm07-dp01"' in log and 'file="cm07-dp02"' in log


def test_report_json_has_a_line_per_host_and_reads_back_as_built(tmp_path: Path) -> None:
    run = _run(tmp_path, COMPLETE)
    write_reports(run, Project(ROOT))
    text = (run / "report.json").read_text("utf-8")
    report = reports.build_report(load_journal(run), None)
    assert json.loads("".join(reports.report_json_text(report))) == report
    host_lines = [line for line in text.splitlines() if line.startswith('    {"name": ')]
    assert [json.loads(line.rstrip(","))["name"] for line in host_lines] == [
        "cm07-dp01",
        "cm07-dp02",
    ]
