"""Bytes a log monitor reads on the host per poll, while it waits on a 100 MB log.

A real 100 MB CMTrace log is written in a temporary folder; a writer thread appends lines to it
while cmrunbook.run.monitor.wait_for_logs waits for a success line. Every poll renders the engine's
templates/engine/log_read.ps1.j2 and runs it over WinRM (WinRMHost, NTLM) against a lab host on
127.0.0.1; the host's backend does what the script says with the inputs the script really carries
($watches: path and offset; $maxBytes) on the real file, and counts the bytes it read.

Target: per poll, bytes read <= bytes appended since the last poll + 4 KiB (Ansible's
win_wait_for re-reads the whole file on every poll).

    python bench/log_reads.py
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlab import (
    HOSTS,
    PASSWORD,
    ROOT,
    USER,
    RunbookBackend,
    cmtrace,
    headline,
    lab_server,
    script_input,
)

from cmrunbook.load.project import Project
from cmrunbook.remote.winrm.host import Credentials, Endpoint, WinRMHost
from cmrunbook.render.result import parse_result
from cmrunbook.run.monitor import READ_LIMIT, Watch, compile_expectation, wait_for_logs

LOG_SIZE = 100 * 1024 * 1024
SLACK = 4096
POLL = 0.1  # seconds between polls
WRITE_SECONDS = 3.0  # the writer appends for this long, then writes the success line
LINE_EVERY = 0.002  # seconds between appended lines
TIMEOUT = 60.0
HOST = "dp-logs"
LOG = "MCSSetup.log"
SUCCESS = "mcs.msi exited with return code: 0"


class HostLogReader:
    """The host side of log_read.ps1.j2 on a real file, counting every byte it reads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.polls: list[tuple[int, int]] = []  # (bytes read, file size seen) per poll

    def __call__(self, runbook: str, key: str, script: str) -> Any:
        watches = script_input(script, "watches")
        max_bytes = int(script_input(script, "maxBytes"))
        out: dict[str, Any] = {}
        read_total, size_seen = 0, 0
        for name, watch in watches.items():
            path, offset = Path(watch["path"]), int(watch["offset"])
            entry: dict[str, Any] = {"chunks": [], "offset": offset, "size": 0, "exists": False}
            if path.is_file():
                with path.open("rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    offset = min(offset, size)  # (a rollover to .lo_ is not part of this bench)
                    fh.seek(offset)
                    data = fh.read(min(size - offset, max_bytes))
                entry.update(exists=True, size=size, offset=offset + len(data))
                entry["chunks"] = [base64.b64encode(data).decode("ascii")]
                read_total += len(data)
                size_seen = size
            out[name] = entry
        with self.lock:
            self.polls.append((read_total, size_seen))
        return out


def write_log(path: Path) -> None:
    """A 100 MB CMTrace log of ordinary lines."""
    line = cmtrace("Checking for multicast settings; nothing to do").encode("utf-8")
    block = line * (1024 * 1024 // len(line))
    with path.open("wb") as fh:
        while fh.tell() + len(block) <= LOG_SIZE:
            fh.write(block)
        fh.write(line * ((LOG_SIZE - fh.tell()) // len(line)))


def writer(path: Path, appended: list[int], stop: threading.Event) -> None:
    """Append log lines for WRITE_SECONDS, then the success line, as a role setup would."""
    end = time.monotonic() + WRITE_SECONDS
    n = 0
    with path.open("ab", buffering=0) as fh:
        while time.monotonic() < end and not stop.is_set():
            n += 1
            appended[0] += fh.write(cmtrace(f"Installing multicast component {n}").encode())
            time.sleep(LINE_EVERY)
        appended[0] += fh.write(cmtrace(SUCCESS).encode())
        # Real logs go on after the line that matters.
        appended[0] += fh.write(cmtrace("Setup finished").encode())


def main() -> None:
    catalog = Project(ROOT)
    reader = HostLogReader()
    backend = RunbookBackend(catalog, handlers={"engine/log-read": reader})
    print(f"hosts: {HOSTS}; log_read inputs interpreted on a real file")
    with tempfile.TemporaryDirectory() as tmp, lab_server(backend.backend) as server:
        path = Path(tmp) / LOG
        started = time.perf_counter()
        write_log(path)
        armed_size = path.stat().st_size
        print(f"log: {armed_size:,} bytes written in {time.perf_counter() - started:.1f}s")
        endpoint = Endpoint(HOST, "127.0.0.1", port=server.port, path=f"/wsman/{HOST}")
        host = WinRMHost(endpoint, Credentials(USER, PASSWORD))
        header = f"cmrunbook bench | engine/log-read | read-only | target {HOST} | on {HOST}"

        def read(request: dict[str, dict[str, Any]]) -> dict[str, Any]:
            script = catalog.renderer.script(
                "engine/log_read.ps1.j2", {"watches": request, "max_bytes": READ_LIMIT}, header
            )
            result = parse_result(host.run(script, deadline=30).stdout)
            assert result is not None and result.ok, result
            return dict(result.data or {})

        success, failure, reboot = compile_expectation(
            catalog.logs.expectation(LOG, "install"), None
        )
        watch = Watch(LOG, str(path), armed_size, success, failure, reboot)
        appended = [0]
        stop = threading.Event()
        thread = threading.Thread(target=writer, args=(path, appended, stop), daemon=True)
        t0 = time.perf_counter()
        thread.start()
        try:
            outcome = wait_for_logs([watch], read, timeout=TIMEOUT, poll=POLL)
        finally:
            stop.set()
            thread.join(timeout=10)
            host.close()
        wall = time.perf_counter() - t0

    previous = armed_size
    excess: list[int] = []
    for got, size in reader.polls:
        excess.append(got - (size - previous))
        previous = size
    total_read = sum(got for got, _ in reader.polls)
    polls = len(reader.polls)
    whole_file = sum(size for _, size in reader.polls)
    print(f"wait outcome: {outcome.status} after {polls} polls in {wall:.1f}s: {outcome.message}")
    print(f"appended by the writer: {appended[0]:,} bytes; read on the host: {total_read:,} bytes")
    print(
        f"per poll: max read {max(g for g, _ in reader.polls):,} bytes, "
        f"max (read - appended since last poll) = {max(excess):,} bytes (target <= {SLACK:,})"
    )
    print(f"file size at the end: {reader.polls[-1][1]:,} bytes")
    print(
        f"a whole-file reader (win_wait_for) would read {whole_file:,} bytes in the same "
        f"{polls} polls (computed: the file's size at each poll): "
        f"{whole_file / max(total_read, 1):,.0f} x as much"
    )
    ok = max(excess) <= SLACK and outcome.status == "ok" and total_read <= appended[0]
    headline(
        f"read_minus_appended_per_poll_max={max(excess)} bytes (target <= {SLACK}), "
        f"read_total={total_read} of file {reader.polls[-1][1]} "
        f"({whole_file / max(total_read, 1):.0f}x less than whole-file polling) "
        f"{'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
