"""The shell's Create on NTLM's AUTHENTICATE leg, through the real CLI and the lab's counters.

A one-step check costs a host 5 HTTP requests: NEGOTIATE, AUTHENTICATE with the sealed Create,
Command (the script inline), Receive, Delete. The run's first logon has an empty last leg (no
host has accepted the credential yet, and a 401 there could be the password). A lab that answers
the combined leg with 401, as OMI did before microsoft/omi#577, costs one extra handshake on
the first host that tries it, and the rest of the run logs on the plain way.
"""

from __future__ import annotations

from conftest import Lab

HOSTS = ["xp-fleet001", "xp-fleet002", "xp-fleet004", "xp-fleet005"]  # all with WinRM
CHECK = ("check", "client-hotfix", "--hosts", ",".join(HOSTS), "--forks", "1")


def test_a_one_step_check_is_five_http_requests_per_host(lab: Lab) -> None:
    res = lab.cli(*CHECK, "--non-interactive")
    assert res.returncode == 1, res.stdout + res.stderr  # some clients are non-compliant
    stats = lab.running.server.stats.snapshot()
    assert sorted(stats) == HOSTS
    first, *rest = (stats[name] for name in HOSTS)  # --forks 1: in plan order
    assert first.http_requests == 6  # the credential's first logon: an empty last leg
    assert [s.http_requests for s in rest] == [5] * len(rest), stats
    for wire in stats.values():
        assert wire.total_requests == 4 and wire.connections == 1 and wire.rejected == 0


def test_a_site_refusing_the_last_leg_costs_one_extra_handshake(lab: Lab) -> None:
    lab.running.server.refuse_body_on_authenticate = True
    res = lab.cli(*CHECK, "--non-interactive")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "error" not in res.stdout.lower(), res.stdout
    stats = lab.running.server.stats.snapshot()
    first, tried, *rest = (stats[name] for name in HOSTS)
    assert (first.http_requests, first.connections) == (6, 1)
    # NEGOTIATE, AUTHENTICATE + Create (401); a new connection: NEGOTIATE, AUTHENTICATE, then
    # Create (run once), Command, Receive, Delete
    assert (tried.http_requests, tried.connections, tried.requests["Create"]) == (8, 2, 1)
    assert [(s.http_requests, s.connections) for s in rest] == [(6, 1)] * len(rest), stats
    assert sum(s.rejected for s in stats.values()) == 0
    report = (lab.run_dirs()[-1] / "summary.txt").read_text(encoding="utf-8")
    assert "unreachable" not in report and "failed" not in report, report
