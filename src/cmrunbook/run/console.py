"""What a run prints: one line per step event; on a terminal, a live status line per host.

Unattended runs (no TTY) get plain, timestamped lines only, with wait progress throttled so a
30-minute log wait does not flood the scheduler's mail.

Everything shown passes through `cmrunbook.text.printable`: much of it comes from hosts or from
an inventory.
"""

from __future__ import annotations

import re
import select
import shlex
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TextIO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cmrunbook.text import printable

PROGRESS_EVERY = 30.0


def span(seconds: float) -> str:
    """A wait's time as an operator reads it: "45s", "2m10s", "15m", "1h05m"."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def resume_command(runbook: str, run_dir: Path, *flags: str) -> str:
    """The command that continues a run, quoted so that it works as printed (a run folder
    under a path with spaces or quotes stays one argument)."""
    return shlex.join(["invoke", "remediate", runbook, *flags, "--resume", str(run_dir)])


#: How each result reads on a terminal: the ones to act on stand out, and no two look alike.
STATUS_STYLES = {
    "ok": "green",
    "changed": "cyan",
    "skipped": "dim",
    "manual-confirmed": "green",
    "failed": "bold red",
    "unreachable": "bold red",
    "not-tried": "red",
    "non-compliant": "bold magenta",
    "unknown": "bold yellow",
    "stopped": "yellow",
    "interrupted": "yellow",
}
#: A step's end ("  -> changed: ...") and a host's end ("NON-COMPLIANT: ...") as the run prints.
_STATUS_WORD = re.compile(r"^(?:  -> ([a-z-]+)|([A-Z][A-Z-]+)(?::|$))")
#: The results a check's tally always counts, in this order, even when none had them.
CHECK_TALLY = ("ok", "non-compliant", "unknown", "unreachable")
#: Each host's name in its own style, so that one host of several can be followed down the
#: interleaved lines; none is a result's colour (green, cyan, red, magenta, yellow).
HOST_STYLES = (
    "blue",
    "bright_blue",
    "bold blue",
    "underline blue",
    "bold bright_blue",
    "underline bright_blue",
)
#: The summary table is read in mail and on narrow terminals: never wider than this.
TABLE_WIDTH = 100
#: How many hosts' lines a run prints: beyond them, a fleet's progress lines and summary rows
#: would be more than anyone reads (and printing them took a good part of a 50,000-client
#: check). The tally counts every host; summary.txt and the reports list each.
HOST_LINES = 200


class TextConsole:
    """The one place that prints a run's progress, through rich: on a terminal, colour, lines
    wrapped at its width and a live status line per waiting host; on a pipe plain text, lines
    as long as they are, no cursor movement. NO_COLOR (honoured by rich) drops the colour."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interactive: bool | None = None,
        host_lines: int = HOST_LINES,
    ) -> None:
        """`host_lines`: how many hosts' step lines and summary rows are printed (HOST_LINES)."""
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if interactive is None else interactive
        self.out = Console(
            file=self.stream,
            force_terminal=self.tty,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=not self.tty,
        )
        #: Set when the run is being stopped (Ctrl-C): a question waiting for its answer in a
        #: host's thread gives up, so that the host can stop rather than hold the run open.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._status: dict[str, str] = {}
        self._last_progress: dict[str, float] = {}
        self._live: Live | None = None
        self._host_styles: dict[str, str] = {}
        self.host_lines = host_lines
        #: Hosts whose lines are printed, and those beyond `host_lines` whose lines are not.
        self._shown: set[str] = set()
        self._quiet: set[str] = set()

    def _silent(self, name: str) -> bool:
        """Whether this host's lines are left out (called under the lock): the first
        `host_lines` hosts to print are shown; the first host beyond says so once."""
        if name in self._shown:
            return False
        if name in self._quiet:
            return True
        if len(self._shown) < self.host_lines:
            self._shown.add(name)
            return False
        if not self._quiet:
            self._stop_live()
            self.out.print(
                f"More than {self.host_lines} hosts: their lines are not printed from here on; "
                "the tally at the end counts every host, summary.txt and the reports list each."
            )
        self._quiet.add(name)
        return True

    def step(self, host: str, text: str) -> None:
        with self._lock:
            name = printable(host, lines=False)
            if self._silent(name):
                return
            line = Text(datetime.now().strftime("%H:%M:%S") + " ")
            line.append(f"{name:<16}", style=self._host_style(name))
            line.append(" ")
            line.append_text(_styled(printable(text)))
            self._status.pop(name, None)
            self.out.print(line)
            self._draw()

    def _host_style(self, name: str) -> str:
        """The host's style: given in the order hosts first print, the same for the run."""
        if name not in self._host_styles:
            self._host_styles[name] = HOST_STYLES[len(self._host_styles) % len(HOST_STYLES)]
        return self._host_styles[name]

    def progress(self, host: str, text: str) -> None:
        with self._lock:
            host, text = printable(host, lines=False), printable(text, lines=False)
            if self._silent(host):
                return
            if self.tty:
                self._status[host] = text
                self._draw()
                return
            now = time.monotonic()
            if now - self._last_progress.get(host, 0.0) >= PROGRESS_EVERY:
                self._last_progress[host] = now
                stamp = datetime.now().strftime("%H:%M:%S")
                self.out.print(f"{stamp} {host:<16} ... {text}")

    def confirm(self, question: str) -> bool:
        """Ask on the terminal; only "y" or "yes" is a yes. No answer (end of input, or the
        run stopped while it waited) is a no: the caller checks whether the run is stopping."""
        with self._lock:
            self._stop_live()
            self.out.print(printable(question) + " [y/N] ", end="")
            self.stream.flush()
        answer = self._answer()
        with self._lock:
            if answer is None:
                self.out.print()  # end the question's line
            self._draw()
        if answer is None:
            return False
        return answer.strip().lower() in ("y", "yes")

    def _answer(self) -> str | None:
        """A line from stdin, or None once `stopping` is set. On a terminal it waits in short
        slices, so that Ctrl-C reaches the main thread at once and a host's thread sees the
        stop; a terminal hands over one line per read, so none waits unseen in stdin's buffer.
        Piped answers (several lines may be buffered at once) are read as they come, and so
        is a Windows console (whose select() takes sockets only)."""
        if sys.platform == "win32" or not sys.stdin.isatty():
            return sys.stdin.readline()
        while not self.stopping.is_set():
            if select.select([sys.stdin], [], [], 0.1)[0]:
                return sys.stdin.readline()
        return None

    def _draw(self) -> None:
        """Show each waiting host's status below the printed lines, one row per host cut to
        the terminal's width (a wrapped row would leave stale rows behind); rich's live display
        redraws them in place and prints new lines above them."""
        if not self.tty:
            return
        if not self._status:
            self._stop_live()
            return
        rows = Text("\n").join(
            Text.assemble((h, self._host_style(h)), f": {t}", no_wrap=True, overflow="ellipsis")
            for h, t in sorted(self._status.items())
        )
        if self._live is None:
            self._live = Live(
                rows,
                console=self.out,
                auto_refresh=False,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        self._live.update(rows, refresh=True)

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def print(self, text: str = "") -> None:
        """A line as it is, never wrapped by the tool (a run folder's path stays one piece to
        copy; the terminal folds it for the eye)."""
        with self._lock:
            self.out.print(printable(text), soft_wrap=True)
            self._draw()

    def summary(
        self, text: str, outcomes: list[tuple[str, str, str]], notes: list[str], *, check: bool
    ) -> None:
        """The end of a run: the tally of results, then the table of hosts and the `notes`
        (site-wide changes) below it. On a pipe the plain `text` (summary.txt's) as it is; on
        a terminal rich's table, at most TABLE_WIDTH columns, each message cut to fit.
        `outcomes` are (host, result, message), one line of `text` each after its header;
        beyond `host_lines` hosts, only the first rows are printed."""
        with self._lock:
            self._stop_live()
            self.out.print()
            if outcomes:
                self.out.print(tally([status for _, status, _ in outcomes], check=check))
            more = len(outcomes) - self.host_lines
            cut = f"... {more} more hosts: summary.txt and the reports list every host"
            if more > 0:
                # `text` is a header, a row per host, then the notes: keep the first rows.
                lines = text.split("\n")
                kept = self.host_lines + 1
                text = "\n".join([*lines[:kept], cut, *lines[kept + more :]])
                outcomes = outcomes[: self.host_lines]
            if not self.tty:
                self.out.print(printable(text))
                return
            if outcomes:
                grid = Table(width=min(self.out.width, TABLE_WIDTH), box=box.SIMPLE_HEAD)
                grid.add_column("host", no_wrap=True)
                grid.add_column("result", no_wrap=True)
                grid.add_column("message", no_wrap=True, overflow="ellipsis", ratio=1)
                for host, status, message in outcomes:
                    grid.add_row(
                        printable(host, lines=False),
                        Text(status, style=STATUS_STYLES.get(status, "")),
                        printable(message).split("\n")[0],
                    )
                self.out.print(grid)
            if more > 0:
                self.out.print(cut)
            for line in notes:
                self.out.print(printable(line))


def tally(statuses: list[str], *, check: bool) -> Text:
    """ "3 hosts: 1 ok, 1 non-compliant, 1 unknown, 0 unreachable": a check always counts the
    four results it can have; any other result is counted when some host had it."""
    counts = Counter(statuses)
    order = list(CHECK_TALLY if check else ())
    order += [s for s in STATUS_STYLES if s not in order and counts[s]]
    order += sorted(s for s in counts if s not in order)
    line = Text(f"{len(statuses)} host{'s' if len(statuses) != 1 else ''}: ")
    for i, status in enumerate(order):
        if i:
            line.append(", ")
        line.append(f"{counts[status]} {status}", style=STATUS_STYLES.get(status, ""))
    return line


def _styled(text: str) -> Text:
    """`text` with its result word (a step's or a host's end) in that result's style."""
    line = Text(text)
    m = _STATUS_WORD.match(text)
    if m:
        group = 1 if m.group(1) else 2
        style = STATUS_STYLES.get(m.group(group).lower())
        if style:
            line.stylize(style, m.start(group), m.end(group))
    return line
