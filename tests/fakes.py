"""In-process stand-ins for a run's surroundings: a manual clock and scripted remote hosts.

The executor is driven on these without a lab, a socket or a sleep: a :class:`FakeSite` answers
each script the engine sends by the step key in its header (``# cmrunbook <runbook> | <key> |
...``) with result lines written by :func:`result_line`, the one place the tests write the
result-line protocol that :func:`cmrunbook.render.templates.parse_result` reads. Scripts are
read with the lab's own parser (their inputs, e.g. the logs a log wait reads), and
:class:`FakeLogs` serves log bytes as templates/engine/log_arm and log_read return them.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cmrunbook.remote import CommandResult, TransportError
from cmrunbook.render.result import RESULT_MARKER
from cmrunbook_lab.scripts import Script


class ManualClock:
    """A clock that only moves when something sleeps on it: a wait of hours takes no time.

    A sleep returns at once, the time advanced by what was asked, unless the stop event is
    already set (then the time stays, as a real wait would end at once).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.time

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return True
        with self._lock:
            self.time += seconds
            self.slept.append(seconds)
        return stop is not None and stop.is_set()


def result_line(
    *,
    ok: bool = True,
    changed: bool = False,
    reboot_required: bool = False,
    message: str = "",
    data: Any = None,
) -> str:
    """The line a script's prelude writes last (templates/_script.ps1.j2): its result."""
    payload = {
        "ok": ok,
        "changed": changed,
        "reboot_required": reboot_required,
        "message": message,
        "data": data,
    }
    return RESULT_MARKER + json.dumps(payload, separators=(",", ":"))


#: What a fake host answers to one script: its stdout (a result line, or anything else), a
#: TransportError to raise, or a function of the parsed script giving one of those.
Answer = str | TransportError | Callable[[Script], "str | TransportError"]


@dataclass
class Call:
    """One script a fake host was sent."""

    host: str
    key: str
    script: Script


@dataclass
class _Rule:
    key: str
    host: str | None
    answers: deque[Answer]

    def matches(self, host: str, key: str) -> bool:
        return (self.host is None or self.host == host) and (
            self.key in ("*", key) or key.endswith("/" + self.key)
        )


@dataclass
class FakeSite:
    """Every host of a run, answering scripts as :meth:`on` says; by default ``ok``.

    A rule matches a script by its key (``verify:1/verify.multicast``), by the key's last
    part (``verify.multicast``, ``log-arm``, ``multicast-images`` for a probe), or any script
    (``*``); a rule for a
    host comes before one for any host, a later rule before an earlier one. Its answers are used
    in turn, and the last one again and again.
    """

    clock: ManualClock | None = None
    #: Seconds each remote call takes on the clock.
    cost: float = 0.0
    calls: list[Call] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    _rules: list[_Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, key: str, *answers: Answer, host: str | None = None) -> None:
        self._rules.insert(0, _Rule(key, host, deque(answers)))

    def connect(self, host: str) -> FakeRemote:
        self.connected.append(host)
        return FakeRemote(self, host)

    def sent(self, host: str | None = None) -> list[str]:
        """The keys of the scripts sent (to ``host``), in order."""
        return [c.key for c in self.calls if host is None or c.host == host]

    def answer(self, host: str, text: str) -> CommandResult:
        script = Script.parse(text)
        with self._lock:
            self.calls.append(Call(host, script.step, script))
            rules = [r for r in self._rules if r.matches(host, script.step)]
            rules.sort(key=lambda r: r.host is None)
            if rules and rules[0].answers:
                queue = rules[0].answers
                answer = queue.popleft() if len(queue) > 1 else queue[0]
            else:
                answer = result_line()
        if self.clock is not None and self.cost:
            self.clock.sleep(self.cost)
        if callable(answer) and not isinstance(answer, TransportError):
            answer = answer(script)
        if isinstance(answer, TransportError):
            raise answer
        ok = '"ok":true' in answer
        return CommandResult(
            stdout=answer + "\r\n", stderr="", exit_code=0 if ok else 1, requests=3
        )


class FakeRemote:
    """One host's connection: what :class:`cmrunbook.remote.Remote` promises, on a FakeSite."""

    def __init__(self, site: FakeSite, host: str) -> None:
        self.site = site
        self.host = host

    def run(self, script: str, *, deadline: float) -> CommandResult:
        return self.site.answer(self.host, script)

    def close(self) -> None:
        self.site.closed.append(self.host)


def cmtrace(message: str, type_: int = 1, component: str = "MCSSetup") -> str:
    """One log line in the CMTrace format ConfigMgr writes (shared/logs)."""
    return (
        f'<![LOG[{message}]LOG]!><time="10:00:00.000+000" date="11-21-2026" '
        f'component="{component}" context="" type="{type_}" thread="100" file="setup.cpp:1">\n'
    )


class FakeLogs:
    """Log files on a fake host, armed and read as the engine's log scripts do.

    ``arm`` and ``read`` are FakeSite answers for ``log-arm`` and ``log-read``; ``written``
    says what a log holds after the n-th read (so a test lays out a wait poll by poll).
    """

    FOLDER = "C:\\Program Files\\SMS_CCM\\Logs"

    def __init__(self) -> None:
        self.text: dict[str, bytes] = {}
        self.schedule: dict[int, list[tuple[str, str]]] = {}
        self.reads = 0

    def written(self, after_reads: int, log: str, text: str) -> None:
        self.schedule.setdefault(after_reads, []).append((log, text))

    def _apply(self) -> None:
        for log, text in self.schedule.pop(self.reads, []):
            self.text[log] = self.text.get(log, b"") + text.encode("utf-8")

    def path(self, log: str) -> str:
        return f"{self.FOLDER}\\{log}"

    def arm(self, script: Script) -> str:
        self._apply()
        logs = script.input("logs")
        data = {
            log: {"path": self.path(log), "size": len(self.text.get(log, b"")), "exists": True}
            for log in logs
        }
        return result_line(data=data)

    def read(self, script: Script) -> str:
        self.reads += 1
        self._apply()
        data = {}
        for log, watch in script.input("watches").items():
            content = self.text.get(log, b"")
            offset = int(watch["offset"])
            chunk = content[offset:]
            data[log] = {
                "path": self.path(log),
                "offset": len(content),
                "chunks": [base64.b64encode(chunk).decode("ascii")] if chunk else [],
            }
        return result_line(data=data)
