"""The journal survives a kill at any byte, and resume reads back what each host got done."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from cmrunbook.errors import LockHeld, UsageError
from cmrunbook.record.journal import JournalWriter, ResumeState
from cmrunbook.record.journal_read import JOURNAL_NAME as JOURNAL
from cmrunbook.record.journal_read import read_events, sent_script
from cmrunbook.record.vocabulary import Event, Status
from cmrunbook.run.locks import HostLocks


def _write_sample(run_dir: Path) -> None:
    j = JournalWriter(run_dir)
    j.write("run", runbook="multicast", method="3", targets=["dp1", "dp2"], request={"method": "3"})
    j.write(
        "probe", host="dp1", probe="multicast-images", on="site", value=[{"PackageID": "C0700001"}]
    )
    j.write("step-start", host="dp1", key="method:3/a", item="C0700001")
    j.write("step-end", host="dp1", key="method:3/a", item="C0700001", status="changed")
    j.write(
        "log-armed", host="dp1", key="method:3/w", logs={"MCSSetup.log": {"path": "x", "size": 10}}
    )
    j.write("step-end", host="dp1", key="method:3/b", item=None, status="failed")
    j.write("step-end", host="dp2", key="method:3/a", item=None, status="skipped")
    j.write("host-end", host="dp2", status="ok")
    j.close()


def test_every_event_is_one_json_line_with_increasing_seq(tmp_path: Path) -> None:
    _write_sample(tmp_path)
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    assert len(lines) == 8
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1, 9))


def test_resume_state_keeps_done_steps_probes_and_armed_offsets(tmp_path: Path) -> None:
    _write_sample(tmp_path)
    state = ResumeState.load(tmp_path)
    dp1 = state.hosts["dp1"]
    assert dp1.done == {"method:3/a#C0700001"}  # the failed step b will run again
    assert dp1.probes["multicast-images"] == [{"PackageID": "C0700001"}]
    assert dp1.armed["method:3/w"]["MCSSetup.log"]["size"] == 10
    assert dp1.finished is None
    assert state.hosts["dp2"].finished == "ok"
    assert state.run["request"] == {"method": "3"}


@pytest.mark.parametrize("cut", [1, 7, 20, 33])
def test_a_line_cut_by_a_kill_is_ignored_and_the_next_writer_starts_clean(
    tmp_path: Path, cut: int
) -> None:
    _write_sample(tmp_path)
    path = tmp_path / JOURNAL
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])  # the kill landed inside the last event
    before, _ = read_events(path)
    assert len(before) == (8 if cut == 1 else 7)  # cut=1 only lost the newline
    j = JournalWriter(tmp_path)
    j.write("resume")
    j.close()
    after, _ = read_events(path)
    assert [e["event"] for e in after][-1] == "resume"
    assert after[-1]["seq"] == before[-1]["seq"] + 1


def test_a_step_start_is_on_disk_before_the_step_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write-ahead: a durable event returns only after an fsync that covers every line so far;
    outcome events are flushed (a kill loses nothing) and synced at the latest on close."""
    synced_sizes: list[int] = []
    path = tmp_path / JOURNAL

    def fsync(fd: int) -> None:
        synced_sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr("cmrunbook.record.journal.os.fsync", fsync)
    j = JournalWriter(tmp_path)
    j.write("probe", host="dp1", probe="p", on="site", value=1)
    assert synced_sizes == [] and path.stat().st_size > 0  # flushed, not waited on
    j.write("step-start", host="dp1", key="k", item=None, durable=True)
    assert synced_sizes == [path.stat().st_size]  # the probe and the step-start
    j.write("step-end", host="dp1", key="k", item=None, status="ok")
    assert len(synced_sizes) == 1
    j.close()
    assert synced_sizes[-1] == path.stat().st_size
    assert [e["event"] for e in read_events(path)[0]] == ["probe", "step-start", "step-end"]


def test_a_corrupt_line_in_the_middle_stops_a_resume_and_is_noted_in_a_report(
    tmp_path: Path,
) -> None:
    _write_sample(tmp_path)
    path = tmp_path / JOURNAL
    lines = path.read_text().splitlines()
    lines[2] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"journal.jsonl:3: journal line is not complete JSON"):
        ResumeState.load(tmp_path)
    events, problems = read_events(path)
    assert len(events) == 7
    assert problems == ["journal.jsonl: line 3 is not complete JSON; ignored"]


def test_a_resume_state_carries_what_the_writer_continues_from(tmp_path: Path) -> None:
    _write_sample(tmp_path)
    state = ResumeState.load(tmp_path)
    assert (state.run_dir, state.last_seq) == (tmp_path, 8)
    j = JournalWriter(tmp_path, last_seq=state.last_seq)
    j.write("resume")
    j.close()
    assert read_events(tmp_path / JOURNAL)[0][-1]["seq"] == 9


def _writer_child(run_dir: str) -> None:
    j = JournalWriter(Path(run_dir))
    j.write("run", runbook="x", request={})
    n = 0
    while True:  # killed by the parent
        n += 1
        j.write("step-end", host="h", key=f"k{n}", item=None, status="ok", data={"pad": "x" * 500})


def test_sigkill_at_any_moment_leaves_a_journal_resume_accepts(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        run_dir = tmp_path / f"r{attempt}"
        run_dir.mkdir()
        proc = ctx.Process(target=_writer_child, args=(str(run_dir),))
        proc.start()
        while not (run_dir / JOURNAL).exists() or (run_dir / JOURNAL).stat().st_size < 20_000 * (
            attempt + 1
        ):
            pass
        os.kill(proc.pid, 9)
        proc.join()
        state = ResumeState.load(run_dir)
        done = state.hosts["h"].done
        assert done and all(k.startswith("k") for k in done)


def test_a_second_run_on_the_same_host_is_refused_while_the_first_holds_its_lock(
    tmp_path: Path,
) -> None:
    with HostLocks(tmp_path, {"dp1": "dp1", "dp2": "dp2"}, "run-a"):
        with (
            pytest.raises(LockHeld, match=r"dp2 is locked by run run-a"),
            HostLocks(tmp_path, {"dp2": "dp2"}, "run-b"),
        ):
            pass
        with HostLocks(tmp_path, {"dp3": "dp3"}, "run-c"):
            pass  # another host is free
    with HostLocks(tmp_path, {"dp2": "dp2"}, "run-b"):
        pass  # released with the first run


@pytest.mark.parametrize("host", ["../../escaped", "..", "corp\\..\\dp01", "/etc/dp01"])
def test_a_saved_script_stays_in_the_run_folder_whatever_the_host_is_called(
    tmp_path: Path, host: str
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    j = JournalWriter(run_dir)
    script = f"# cmrunbook check | ../step | kb | target {host} | on {host}\r\nWrite-Output 1\r\n"
    path = j.save_script(host, host, "../step", script)
    j.close()
    assert path.resolve().is_relative_to((run_dir / "scripts").resolve()), path
    assert list(tmp_path.rglob("*.ps1")) == [path]
    (event,) = read_events(run_dir / JOURNAL)[0]
    assert (event["event"], event["host"], event["name"]) == ("script", host, "../step")
    assert sent_script(run_dir, event) == script


def test_a_script_file_is_read_only_from_the_run_folders_scripts(tmp_path: Path) -> None:
    """A journal edited to name another file is refused, not followed."""
    (tmp_path / "secret.ps1").write_text("not a script of the run")
    for file in ("../secret.ps1", "scripts/../../secret.ps1", "/etc/passwd"):
        with pytest.raises(UsageError, match="names no script file"):
            sent_script(tmp_path / "run", {"name": "x", "header": "#", "file": file})


def test_the_vocabulary_is_the_strings_on_disk(tmp_path: Path) -> None:
    """Status and Event name the journal's and report.json's strings: renaming one is a format
    change that old journals, --resume and the dashboards reading report.json would not follow."""
    writer = JournalWriter(tmp_path)
    writer.write(Event.STEP_END, host="h", key="k", status=Status.NON_COMPLIANT)
    writer.close()
    (line,) = read_events(tmp_path / JOURNAL)[0]
    assert (line["event"], line["status"]) == ("step-end", "non-compliant")
    assert {s.value for s in Status} == {
        "ok",
        "changed",
        "skipped",
        "manual-confirmed",
        "non-compliant",
        "failed",
        "interrupted",
        "unknown",
        "unreachable",
        "not-tried",
        "stopped",
    }
    assert {e.value for e in Event} == {
        "run",
        "run-end",
        "probe",
        "step-start",
        "step-end",
        "stage-end",
        "reboot",
        "restart-asked",
        "consent",
        "log-armed",
        "host-end",
        "host-resume",
        "script",
        "site-state",
        "site-changed",
        "site-restored",
    }
