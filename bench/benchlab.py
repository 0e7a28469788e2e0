"""What the benchmarks share: a lab backend that answers every engine script, generated
inventories, and the PowerShell literal reader the backend needs.

The backend does not execute PowerShell. Like the lab, it reads what the engine really sent: the
header line (``# cmrunbook <runbook> | <key> | ...``) says which step or probe a script is, and the
literals a script assigns (``$watches = [ordered]@{ ... }``) are its inputs. It answers with the
result line every rendered script ends with, so the engine runs its full procedure: probes
return one item, log monitors arm and then read a success line, checks report compliant.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cmrunbook.render.result import RESULT_MARKER

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "labadmin", "B3nch-pa55!"

# One success line per log and outcome, written as CMTrace records. Checked against the log
# catalog at start-up (check_log_lines), so a changed catalog pattern fails loudly, not silently.
SUCCESS_LINES: dict[str, list[str]] = {
    "MCSSetup.log": ["mcs.msi exited with return code: 0", "Installation was successful"],
    "MCSMSI.log": [
        "Windows Installer installed the product. Product Name: Multicast Service Point. "
        "Installation success or error status: 0.",
        "Windows Installer removed the product. Product Name: Multicast Service Point. "
        "Removal success or error status: 0.",
    ],
    "PXESetup.log": ["pxe.msi exited with return code: 0", "Installation was successful"],
    "distmgr.log": [
        'STATMSG: ID=2301 SEV=I LEV=M SOURCE="SMS Server" COMP="SMS_DISTRIBUTION_MANAGER" '
        'SYS=bench SITE=S00 PID=1 TID=1 ISTR0="BENCH001"'
    ],
}
BENCH_ITEM = {"PackageID": "BENCH001"}


# -- PowerShell literals (the grammar cmrunbook.render.pwsh.literal writes, nothing more) ----------


class _Literal:
    _TOKEN = re.compile(r"\s*(?:(\[ordered\])?@\{|@\(|\}|\)|;|,|=|'(?:[^']|'')*'|\$\w+|-?\d+)")

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def _next(self) -> str:
        match = self._TOKEN.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"not a literal at {self.text[self.pos : self.pos + 30]!r}")
        self.pos = match.end()
        return match.group(0).strip()

    def _peek(self) -> str:
        saved = self.pos
        try:
            return self._next()
        finally:
            self.pos = saved

    def value(self) -> Any:
        token = self._next()
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if token.endswith("@{"):
            table: dict[str, Any] = {}
            while self._peek() != "}":
                key = self.value()
                if self._next() != "=":
                    raise ValueError("expected '='")
                table[str(key)] = self.value()
                if self._peek() == ";":
                    self._next()
            self._next()
            return table
        if token == "@(":
            items: list[Any] = []
            while self._peek() != ")":
                items.append(self.value())
                if self._peek() == ",":
                    self._next()
            self._next()
            return items
        named = {"$true": True, "$false": False, "$null": None}
        if token in named:
            return named[token]
        return int(token)


def script_input(script: str, name: str) -> Any:
    """The literal a script assigns to ``$name`` on a line of its own."""
    match = re.search(rf"(?m)^\${name} = (.+)$", script)
    if match is None:
        raise ValueError(f"the script assigns no ${name}")
    return _Literal(match.group(1)).value()


def header_of(script: str) -> tuple[str, str]:
    """(runbook id, key) from the script's first line ``# cmrunbook <runbook> | <key> | ...``."""
    first = script.split("\n", 1)[0]
    match = re.match(r"#\s*cmrunbook (\S+) \| (\S+) \|", first)
    if match is None:
        raise ValueError(f"not a cmrunbook script: {first[:80]!r}")
    return match.group(1), match.group(2)


def cmtrace(message: str) -> str:
    return (
        f'<![LOG[{message}]LOG]!><time="10:00:00.000+000" date="01-01-2024" component="bench" '
        'context="" type="1" thread="1" file="">\r\n'
    )


def result_line(data: Any = None, *, ok: bool = True, message: str = "") -> str:
    body = {"ok": ok, "changed": False, "reboot_required": False, "message": message, "data": data}
    return RESULT_MARKER + json.dumps(body) + "\r\n"


# -- the backend ----------------------------------------------------------------------------

Handler = Callable[[str, str, str], Any]  # (runbook, key, script) -> data


class RunbookBackend:
    """Answers each engine script with a valid result, by what its header says it is.

    ``delays`` maps a regular expression over ``<runbook> <key>`` to seconds the script "runs"
    on the host; ``handlers`` maps a key prefix to a function returning the script's data (the
    default ones cover probes, log arming and reading, boot times). Requests and connections
    are counted by the lab server itself (``server.stats``).
    """

    def __init__(
        self,
        catalog: Any,
        *,
        delays: dict[str, float] | None = None,
        handlers: dict[str, Handler] | None = None,
    ) -> None:
        from cmrunbook_lab.winrm.commands import FunctionBackend

        self.catalog = catalog
        self.delays = [(re.compile(p), s) for p, s in (delays or {}).items()]
        self.handlers: dict[str, Handler] = {
            "probe/": self._probe,
            "engine/log-arm": self._log_arm,
            "engine/log-read": self._log_read,
            "engine/boot-time": self._boot_time,
            "engine/dist-status": self._dist_status,
            **(handlers or {}),
        }
        self._lock = threading.Lock()
        self._boots = 0
        self._versions = 0
        self.backend = FunctionBackend(self._command)

    def _command(self, command: str, arguments: list[str], io: Any) -> int:
        """The script is on the command line (``-EncodedCommand``) unless that is the bootstrap
        that reads it from stdin, as on a real host."""
        from cmrunbook_lab.winrm.commands import script_of

        script = script_of(command, arguments, io)
        runbook, key = header_of(script)
        for pattern, seconds in self.delays:
            if pattern.search(f"{runbook} {key}"):
                io.sleep(seconds)
        io.write_stdout(self.answer(script))
        return 0

    def answer(self, script: str) -> str:
        """The script's output: its result line, with the data its header's handler gives."""
        runbook, key = header_of(script)
        handler = next((h for p, h in self.handlers.items() if key.startswith(p)), None)
        return result_line(handler(runbook, key, script) if handler else None)

    def _boot_time(self, runbook: str, key: str, script: str) -> str:
        """A new boot time on every call, so that a restart step sees the host come back."""
        with self._lock:
            self._boots += 1
            return f"20240101{self._boots:06d}.000000+000"

    def _dist_status(self, runbook: str, key: str, script: str) -> Any:
        """One DP holding the package at a newer version on every call: the wait's baseline
        (taken when it is armed) is always behind the next poll's row."""
        with self._lock:
            self._versions += 1
            return [{"dp": "\\\\BENCH-DP\\", "state": 0, "version": self._versions}]

    def _probe(self, runbook: str, key: str, script: str) -> Any:
        probe = self.catalog.load(runbook).runbook.probe(key.removeprefix("probe/"))
        if probe.returns == "bool":
            return True
        if probe.returns == "list":
            return [{f: BENCH_ITEM.get(f, f"bench {f}") for f in probe.fields}]
        return "bench"

    @staticmethod
    def _log_arm(runbook: str, key: str, script: str) -> Any:
        logs = script_input(script, "logs")
        return {
            name: {"path": f"C:\\SMS\\Logs\\{name}", "size": 0, "exists": True} for name in logs
        }

    @staticmethod
    def _log_read(runbook: str, key: str, script: str) -> Any:
        watches = script_input(script, "watches")
        out = {}
        for name, watch in watches.items():
            text = "".join(cmtrace(line) for line in SUCCESS_LINES.get(name, ["done"]))
            raw = text.encode("utf-8")
            out[name] = {
                "chunks": [base64.b64encode(raw).decode("ascii")],
                "offset": int(watch["offset"]) + len(raw),
                "size": int(watch["offset"]) + len(raw),
                "rolled": False,
                "exists": True,
            }
        return out


def check_log_lines(catalog: Any) -> None:
    """Fail unless every awaited (log, expectation) finds a success line in SUCCESS_LINES."""
    from cmrunbook.run.monitor import compile_expectation

    for name, log in catalog.logs.logs.items():
        for expect, exp in log.expect.items():
            lines = SUCCESS_LINES.get(name)
            if lines is None:
                continue
            success, failure, _ = compile_expectation(exp, BENCH_ITEM)
            hits = [ln for ln in lines if any(p.search(ln) for p in success)]
            bad = [ln for ln in lines if any(p.search(ln) for p in failure)]
            if not hits or bad:
                raise SystemExit(f"bench: SUCCESS_LINES[{name!r}] does not fit '{expect}'")


# -- generated inventories ------------------------------------------------------------------


def inventory_yaml(
    *,
    sites: int,
    dps_per_site: int,
    clients_per_site: int,
    port: int = 5985,
    lab_ports: tuple[int, ...] = (),
    lab_routing: bool = True,
    clients_without_winrm: float = 0.5,
    versions: tuple[str, ...] = ("2012r2", "2007"),
) -> str:
    """An inventory in the project's format: each site has a site server, DPs (alternately with
    multicast, PXE, both, neither) and XP clients, some without WinRM. With ``lab_routing`` every
    WinRM host (named ``<name>.bench.example``) is reached at 127.0.0.1 on ``port`` under
    ``/wsman/<name>``; with ``lab_ports`` the WinRM hosts take those ports in turn (one lab
    process each). Sites cycle through
    ``versions`` (2007 sites are SP2, so that every runbook of the catalog has targets)."""
    lines = [
        "credentials: {source: env}",
        f"winrm: {{port: {port}, scheme: http, auth: ntlm}}",
        "vars: {}",
        "sites:",
    ]
    hosts: list[str] = ["hosts:"]
    groups: list[str] = ["groups:"]
    every = round(1 / clients_without_winrm) if clients_without_winrm else 0
    routed = 0

    def host(name: str, site: str, roles: str, os_: str, extra: str = "", winrm: bool = True):
        nonlocal routed
        route = ""
        if winrm and lab_routing:
            # Each host its own name (the machine a lock is taken on); WinRM goes to the lab.
            to = f", port: {lab_ports[routed % len(lab_ports)]}" if lab_ports else ""
            routed += 1
            route = (
                f"\n    address: {name}.bench.example"
                f"\n    winrm: {{address: 127.0.0.1{to}, path: /wsman/{name}}}"
            )
        elif not winrm:
            route = "\n    winrm: false"
        hosts.append(
            f"  {name}:\n    site: {site}\n    roles: [{roles}]\n    os: {os_}{route}{extra}"
        )

    for s in range(sites):
        code = f"S{s:02d}" if sites <= 100 else f"S{s:03d}"
        server = f"{code.lower()}-site01"
        version = versions[s % len(versions)]
        release = "SP2" if version == "2007" else "CU1"
        lines += [
            f"  {code}:",
            f"    version: '{version}'",
            f"    release: {release}",
            f"    provider: {server}",
        ]
        host(server, code, "site_server", "{version: 2012r2, arch: x64}")
        for d in range(dps_per_site):
            flags = (d % 2 == 0, d % 4 < 2)
            host(
                f"{code.lower()}-dp{d:02d}",
                code,
                "distribution_point",
                "{version: 2012r2, arch: x64}",
                f"\n    dp: {{multicast: {str(flags[0]).lower()}, pxe: {str(flags[1]).lower()}}}",
            )
        names = [f"{code.lower()}-xp{c:04d}" for c in range(clients_per_site)]
        for c, name in enumerate(names):
            winrm = not (every and c % every == 0)
            host(name, code, "client", "{version: xp, arch: x86}", "", winrm)
        if names:  # a group per site listing its clients, as inventories list fleets
            groups.append(f"  {code.lower()}-fleet:\n    hosts: [{', '.join(names)}]")
    return "\n".join(lines + (groups if len(groups) > 1 else []) + hosts) + "\n"


# -- running the engine against the lab -----------------------------------------------------


class QuietConsole:
    """The engine's console, counting lines instead of printing them."""

    def __init__(self) -> None:
        self.lines = 0
        self.stopping = threading.Event()  # the engine's Ctrl-C flag; a bench never sets it

    def step(self, host: str, text: str) -> None:
        self.lines += 1

    def progress(self, host: str, text: str) -> None:
        pass

    def confirm(self, question: str) -> bool:
        return True

    def print(self, text: str = "") -> None:
        self.lines += 1

    def summary(
        self, text: str, outcomes: list[tuple[str, str, str]], notes: list[str], *, check: bool
    ) -> None:
        self.lines += len(text.splitlines())


def lab_connect(inventory: Any, **timeouts: float) -> Callable[[str], Any]:
    """The engine's ``connect``: a WinRMHost per host name, at the address the inventory gives."""
    from cmrunbook.remote.winrm.host import Credentials, WinRMHost
    from cmrunbook.run.connect import endpoint_for

    credentials = Credentials(USER, PASSWORD)

    def connect(name: str) -> Any:
        endpoint = endpoint_for(inventory.hosts[name], inventory)
        if endpoint.address != "127.0.0.1":
            raise SystemExit(f"bench: {name} is not a lab host ({endpoint.address})")
        return WinRMHost(endpoint, credentials, **timeouts)

    return connect


class NullRemote:
    """A Remote that answers each script at once, in this process, as RunbookBackend would:
    with it a run costs only the engine's own bookkeeping (plan, scripts, journal, console),
    no transport and no lab."""

    def __init__(self, backend: RunbookBackend) -> None:
        self.backend = backend

    def run(self, script: str, *, deadline: float) -> Any:
        from cmrunbook.remote import CommandResult

        return CommandResult(self.backend.answer(script), "", 0, 0)

    def close(self) -> None:
        pass


RUN_PS_HOST = "runps"


@contextmanager
def lab_server(backend: Any) -> Iterator[Any]:
    """A LabServer on 127.0.0.1 serving ``backend`` for every host name; plain ``/wsman`` (all
    that pywinrm's ``Session`` can address) is an echo host named RUN_PS_HOST."""
    from cmrunbook_lab.winrm.commands import EchoBackend
    from cmrunbook_lab.winrm.server import LabServer

    echo = EchoBackend()

    def resolve(name: str) -> Any:
        return echo if name == RUN_PS_HOST else backend

    with LabServer(resolve, {USER: PASSWORD}, host="127.0.0.1", default_host=RUN_PS_HOST) as server:
        yield server


#: What stands behind the hosts in these benches, printed with their figures.
HOSTS = (
    "the lab's WS-Man server (NTLM, message encryption) with RunbookBackend, which answers "
    "each script by its header after the set delay (the lab's host-state simulation is not "
    "needed to count requests or to time the engine)"
)


def headline(text: str) -> None:
    sys.stdout.flush()
    print(f"HEADLINE {text}", flush=True)
