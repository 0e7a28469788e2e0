"""The console's words for time and results, as an operator reads them."""

from __future__ import annotations

import io

import pytest

from cmrunbook.run.console import TextConsole, span, tally


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (44.6, "45s"), (130, "2m10s"), (900, "15m"), (3900, "1h05m"), (-3, "0s")],
)
def test_span(seconds: float, shown: str) -> None:
    assert span(seconds) == shown


def test_a_check_tally_counts_its_four_results_and_any_other() -> None:
    line = tally(["ok", "non-compliant", "ok", "failed"], check=True)
    assert line.plain == "4 hosts: 2 ok, 1 non-compliant, 0 unknown, 0 unreachable, 1 failed"


def test_a_remediation_tally_counts_only_what_happened() -> None:
    assert tally(["ok"], check=False).plain == "1 host: 1 ok"


def test_on_a_terminal_the_site_wide_lines_follow_the_table_even_without_hosts() -> None:
    """`--rollback --resume` has no host rows: its one line must still be shown."""
    out = io.StringIO()
    console = TextConsole(out, interactive=True)
    note = "nothing to set back: the run left no site-wide change outstanding"
    console.summary(note, [], [note], check=False)
    assert note in out.getvalue()
    out = io.StringIO()
    console = TextConsole(out, interactive=True)
    console.summary(
        "table\nC0700010 set back", [("dp", "ok", "done")], ["C0700010 set back"], check=False
    )
    shown = out.getvalue()
    assert "C0700010 set back" in shown and "dp" in shown


def test_beyond_its_host_lines_a_run_prints_a_tally_not_every_host() -> None:
    """A fleet's lines stop after `host_lines` hosts, said once; the tally still counts every
    host and the summary keeps its first rows, a count of the rest, and the notes."""
    out = io.StringIO()
    console = TextConsole(out, interactive=False, host_lines=2)
    for host in ("xp-1", "xp-2", "xp-3", "xp-4"):
        console.step(host, "[KB2910552] TSCore.dll")
        console.step(host, "OK: fine")
    console.progress("xp-3", "waiting")
    shown = out.getvalue()
    assert shown.count("xp-1 ") == 2 and shown.count("xp-2 ") == 2
    assert "xp-3" not in shown and "xp-4" not in shown
    assert shown.count("More than 2 hosts") == 1
    outcomes = [(f"xp-{n}", "ok" if n != 4 else "unknown", "fine") for n in (1, 2, 3, 4)]
    rows = [f"xp-{n}  ok  fine" for n in (1, 2, 3, 4)]
    text = "\n".join(["host  result  message", *rows, "site note"])
    console.summary(text, outcomes, ["site note"], check=True)
    end = out.getvalue()[len(shown) :]
    assert "4 hosts: 3 ok, 0 non-compliant, 1 unknown, 0 unreachable" in end
    assert "xp-1  ok" in end and "xp-2  ok" in end and "xp-3  ok" not in end
    assert "... 2 more hosts: summary.txt and the reports list every host" in end
    assert end.rstrip().endswith("site note")
