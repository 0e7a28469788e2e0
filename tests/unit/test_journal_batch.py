"""The journal's batches: the same events, a batch at a time, on disk before a remote call."""

from __future__ import annotations

import threading
from pathlib import Path

from cmrunbook.record.journal import JournalWriter, ResumeState
from cmrunbook.record.journal_read import JOURNAL_NAME, read_events


def _lines(run: Path) -> list[dict[str, object]]:
    return read_events(run / JOURNAL_NAME)[0]


def test_a_batch_is_written_whole_numbered_in_order_and_resumes(tmp_path: Path) -> None:
    journal = JournalWriter(tmp_path)
    journal.write("run", runbook="client-hotfix-check", targets=["xp-1", "xp-2"])
    with journal.batch(size=100):
        for host in ("xp-1", "xp-2"):
            journal.write("step-start", host=host, key="steps/a", item=None, durable=True)
            journal.write("step-end", host=host, key="steps/a", item=None, status="ok")
            journal.write("host-end", host=host, status="ok")
        assert [e["event"] for e in _lines(tmp_path)] == ["run"]
    journal.close()
    events = _lines(tmp_path)
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert list(events[1]) == ["seq", "time", "event", "host", "key", "item"]
    state = ResumeState.load(tmp_path)
    assert state.last_seq == 7
    assert {h: (s.done, s.finished) for h, s in state.hosts.items()} == {
        "xp-1": ({"steps/a"}, "ok"),
        "xp-2": ({"steps/a"}, "ok"),
    }


def test_a_batch_is_on_disk_before_its_thread_calls_a_host(tmp_path: Path) -> None:
    """`settle` (called before every remote call) writes the batch; a full batch is written
    at once; another thread's events are not held back by it."""
    journal = JournalWriter(tmp_path)
    with journal.batch(size=3):
        journal.write("step-start", host="xp-1", key="steps/a", durable=True)
        other = threading.Thread(target=journal.write, args=("probe",), kwargs={"host": "dp"})
        other.start()
        other.join()
        assert [e["event"] for e in _lines(tmp_path)] == ["probe"]
        journal.settle()
        assert [e["event"] for e in _lines(tmp_path)] == ["probe", "step-start"]
        for n in range(3):
            journal.write("host-end", host=f"xp-{n}", status="ok")
        assert len(_lines(tmp_path)) == 5
    journal.close()
    assert [e["seq"] for e in _lines(tmp_path)] == [1, 2, 3, 4, 5]
