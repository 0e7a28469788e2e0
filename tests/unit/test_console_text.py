"""The console's words for time and results, as an operator reads them."""

from __future__ import annotations

import pytest

from cmrunbook.run.console import span, tally


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
