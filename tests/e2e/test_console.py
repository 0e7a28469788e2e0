"""What a run prints: on a terminal (a pty, as an operator sees it) colour, a tally and a
table that fit its width; on a pipe, or with NO_COLOR, no colour."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import struct
import termios
from collections import Counter
from collections.abc import Callable

from conftest import Lab, events

CHECK = ("check", "client-hotfix", "--non-interactive")
#: Any escape sequence a terminal acts on: CSI (colour, cursor, erase) and OSC.
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
#: A colour (foreground 30-37, 90-97), as rich writes it inside an SGR sequence.
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-7]|9[0-7])(?:;[0-9]+)*m")
TALLY = re.compile(
    r"^(\d+) hosts: (\d+) ok, (\d+) non-compliant, (\d+) unknown, (\d+) unreachable", re.M
)


def on_terminal(
    lab: Lab, *args: str, columns: int, time_scale: str = "0.02", **env: str
) -> tuple[int, str]:
    """Run the CLI with its stdout on a pty `columns` wide: its exit code and what it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    # The pty's size and these variables alone decide: not the size or colour of the tests'.
    inherited = ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR")
    environment = {k: v for k, v in lab.env().items() if k not in inherited}
    environment.update(TERM="xterm-256color", **env)
    proc = lab.popen(*args, stdout=slave, env=environment, time_scale=time_scale)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the run closed the terminal
                assert exc.errno == errno.EIO
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    proc.communicate(timeout=120)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def final_statuses(lab: Lab) -> Counter[str]:
    (run,) = lab.run_dirs()
    return Counter(e["status"] for e in events(run) if e["event"] == "host-end")


def test_a_check_on_a_terminal_colours_each_result_and_fits_its_width(lab: Lab) -> None:
    code, out = on_terminal(lab, *CHECK, columns=72)
    assert code == 1, out  # the lab's fleet has non-compliant clients
    statuses = final_statuses(lab)
    # The tally counts what the hosts ended as, and says 0 for a result none had.
    (tally,) = TALLY.findall(ESCAPES.sub("", out))
    assert tuple(map(int, tally)) == (
        sum(statuses.values()),
        statuses["ok"],
        statuses["non-compliant"],
        statuses["unknown"],
        statuses["unreachable"],
    )
    assert statuses["ok"] and statuses["non-compliant"]
    # Each result in its own colour: ok green, non-compliant magenta, unknown yellow.
    assert re.search(r"\x1b\[32m\d+ ok\x1b\[0m", out), out
    assert re.search(r"\x1b\[1;35m\d+ non-compliant\x1b\[0m", out), out
    assert re.search(r"\x1b\[1;33m\d+ unknown\x1b\[0m", out), out
    assert re.search(r"\x1b\[1;35mNON-COMPLIANT\x1b\[0m", out), out  # a host's end line
    # Nothing is wider than the terminal: not a step line, not a status row, not the table;
    # only a path to copy (the run folder, the reports) is left whole for the terminal to fold.
    plain = ESCAPES.sub("", out)
    lines = re.split(r"\r\n|\r|\n", plain)
    too_wide = [s for s in lines if len(s) > 72 and not s.startswith(("Run folder: ", "Reports: "))]
    assert not too_wide, too_wide
    assert re.search(r"^ *host +result +message", plain, re.M), plain


def test_no_color_on_a_terminal_has_no_colour(lab: Lab) -> None:
    code, out = on_terminal(lab, *CHECK, columns=100, NO_COLOR="1")
    assert code == 1, out
    assert TALLY.search(ESCAPES.sub("", out)), out
    assert not COLOUR.search(out), COLOUR.findall(out)[:5]


def test_piped_output_is_plain_text_with_the_tally(lab: Lab) -> None:
    res = lab.cli(*CHECK)
    assert res.returncode == 1, res.stderr
    assert "\x1b" not in res.stdout
    statuses = final_statuses(lab)
    (tally,) = TALLY.findall(res.stdout)
    assert int(tally[2]) == statuses["non-compliant"]
    assert re.search(r"^host +steps done +result +duration +message", res.stdout, re.M)


def test_a_restart_wait_says_whom_it_waits_for_and_how_long_not_a_transport_error(
    make_lab: Callable[..., Lab],
) -> None:
    """Method 4 restarts cm07-dp01: while it is down, its status row reads "waiting for
    cm07-dp01 to restart (Xs of Ym): not answering", never the refused connection."""
    lab = make_lab(speed=200.0)  # the lab's 60 s role install takes 0.3 s
    args = (
        "remediate",
        "multicast",
        "--method",
        "4",
        "--hosts",
        "cm07-dp01",
        "--yes",
        "--non-interactive",
        "--assume-manual-done",
    )
    code, out = on_terminal(lab, *args, columns=120, time_scale="0.005")
    assert code == 0, out
    plain = ESCAPES.sub("", out)
    rows = re.findall(r"cm07-dp01: (waiting for cm07-dp01 to restart[^\r\n]*)", plain)
    assert rows, plain
    # 900 s at time scale 0.005: 4.5 s, shown as 4s or 5s
    row = re.compile(
        r"waiting for cm07-dp01 to restart \(\d+s of [45]s\): "
        r"(not answering|up, not restarted yet)"
    )
    assert all(row.fullmatch(r) for r in rows), rows
    assert "not answering" in " ".join(rows)


def test_each_host_keeps_one_style_so_it_can_be_followed(lab: Lab) -> None:
    """The client check's lines interleave several hosts: each host's name is always shown in
    the same style, and the hosts do not all share one."""
    code, out = on_terminal(lab, *CHECK, columns=200)
    assert code == 1, out
    hosts = {e["host"] for e in events(lab.run_dirs()[0]) if e["event"] == "host-end"}
    styles: dict[str, set[str]] = {}
    for sgr, name in re.findall(r"\d\d:\d\d:\d\d (\x1b\[[0-9;]*m)([\w.-]+) *\x1b\[0m", out):
        styles.setdefault(name, set()).add(sgr)
    assert set(styles) == hosts, (set(styles), hosts)
    assert all(len(s) == 1 for s in styles.values()), styles
    assert len({next(iter(s)) for s in styles.values()}) > 1, styles
