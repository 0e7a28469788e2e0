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
