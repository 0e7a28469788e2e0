"""The wire under attack (attack 4d, 4e, 4f, 6f, 6g) and the lockout guard, with the real CLI.

Each test puts a small HTTP/1.1-aware proxy on 127.0.0.1 in front of the lab (or changes only
the inventory), points the inventory at it, and runs `invoke` as an operator would. The proxy
relays every exchange and counts the sealed requests per ``/wsman/<host>``; at the request a
rule names it answers the attacker's reply instead of the host's. Every loop in it is bounded
in count and time, and it stops by itself.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import winrm.protocol
import yaml
from conftest import INVOKE, ROOT, Lab

from cmrunbook.remote.winrm.host import refuse_plain_replies
from cmrunbook.remote.winrm.sealing import EncryptionError

#: A reply action: gets the client socket and the lab's real reply (head, body), which it may
#: send altered or not at all; True to keep relaying on this connection.
Action = Callable[[socket.socket, tuple[bytes, bytes]], bool]
Rule = Callable[[str, int], Action | None]

PROXY_LIFETIME = 90.0  # the proxy closes everything after this many seconds, whatever happens
CHUNK = b"A" * 65536
GIGABYTE = 2**30
PLAIN = b"application/soap+xml;charset=UTF-8"
CHECK = ("check", "client-hotfix", "--hosts", "xp-fleet001", "--non-interactive")


class Proxy:
    """Relays HTTP/1.1 between the CLI and the lab; ``rule(host, n)`` may replace the reply to
    the n-th sealed (or Basic) request of a host. ``sealed`` counts them per host."""

    def __init__(self, upstream_port: int, rule: Rule) -> None:
        self._upstream = upstream_port
        self._rule = rule
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.sealed: dict[str, int] = {}
        self.on_last_leg: set[str] = set()  # hosts whose first sealed request had NTLM's token
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._end = time.monotonic() + PROXY_LIFETIME
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Proxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._end

    def _accept(self) -> None:
        while self.running():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._relay, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, client: socket.socket) -> None:
        client.settimeout(PROXY_LIFETIME)
        with client, socket.create_connection(("127.0.0.1", self._upstream)) as upstream:
            upstream.settimeout(PROXY_LIFETIME)
            from_client, from_lab = client.makefile("rb"), upstream.makefile("rb")
            while self.running():
                request = _read_message(from_client)
                if request is None:
                    return
                head, _ = request
                upstream.sendall(b"".join(request))
                reply = _read_message(from_lab)
                if reply is None:
                    return
                action = self._action(head)
                if action is None:
                    client.sendall(b"".join(reply))
                elif not action(client, reply):
                    return

    def _action(self, head: bytes) -> Action | None:
        """The rule's action for a WS-Man request: sealed, or on Basic (each carries its
        credentials); handshake legs are relayed uncounted."""
        lowered = head.lower()
        if b"multipart/encrypted" not in lowered and b"authorization: basic" not in lowered:
            return None
        host = head.split(b" ")[1].decode().rsplit("/", 1)[-1].lower()
        with self._lock:
            self.sealed[host] = self.sealed.get(host, 0) + 1
            number = self.sealed[host]
            if b"authorization: negotiate" in lowered:
                self.on_last_leg.add(host)
        return self._rule(host, number)

    # -- attacker replies ----------------------------------------------------------------------

    def trickle(self, seconds: float) -> Action:
        """Headers at once, then one body byte per ``seconds`` (never completing)."""

        def act(client: socket.socket, _: tuple[bytes, bytes]) -> bool:
            client.sendall(_head(b"200 OK", PLAIN, b"Content-Length: 4096"))
            for _ in range(4096):
                if not self.running() or self._stop.wait(seconds):
                    break
                try:
                    client.sendall(b"<")
                except OSError:
                    break
            return False

        return act

    def huge(self, *, chunked: bool) -> Action:
        """A 1 GB body streamed from one 64 KB piece (never allocated), until the client quits."""

        def act(client: socket.socket, _: tuple[bytes, bytes]) -> bool:
            framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % GIGABYTE
            client.sendall(_head(b"200 OK", PLAIN, framing))
            piece = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
            for _ in range(GIGABYTE // len(CHUNK)):
                if not self.running():
                    break
                try:
                    client.sendall(piece)
                except OSError:
                    break
            return False

        return act


def _head(status: bytes, content_type: bytes, framing: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nServer: Microsoft-HTTPAPI/2.0\r\n"
        b"Content-Type: " + content_type + b"\r\n" + framing + b"\r\n\r\n"
    )


def _read_message(stream: Any) -> tuple[bytes, bytes] | None:
    """One HTTP message (head, body) with a Content-Length body; None when the peer closed."""
    lines = []
    while True:
        line = stream.readline(65537)
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
        if len(lines) > 200:
            return None
    head = b"".join(lines)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head, stream.read(length) if length else b""


def forged_receive(client: socket.socket, _: tuple[bytes, bytes]) -> bool:
    """A plain, unsigned ReceiveResponse saying the client is compliant (attack 4f)."""
    result = {
        "ok": True,
        "changed": False,
        "message": "TSCore.dll is 5.0.7958.1104: KB2910552 is installed",
        "data": {"compliance": "compliant"},
    }
    stdout = base64.b64encode(f"CMRB-RESULT {json.dumps(result)}\r\n".encode()).decode()
    shell = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
    xml = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        f'xmlns:rsp="{shell}"><s:Header><a:Action>{shell}/ReceiveResponse</a:Action>'
        "</s:Header><s:Body><rsp:ReceiveResponse>"
        f'<rsp:Stream Name="stdout" CommandId="X">{stdout}</rsp:Stream>'
        '<rsp:Stream Name="stdout" CommandId="X" End="true"></rsp:Stream>'
        f'<rsp:CommandState CommandId="X" State="{shell}/CommandState/Done">'
        "<rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"
        "</rsp:ReceiveResponse></s:Body></s:Envelope>"
    ).encode()
    client.sendall(_head(b"200 OK", PLAIN, b"Content-Length: %d" % len(xml)) + xml)
    return True


# -- running the CLI through the proxy ---------------------------------------------------------


def inventory_via(lab: Lab, port: int | None, tmp: Path, **winrm: Any) -> str:
    """The lab's inventory with every host's WinRM port set to ``port`` (the proxy) and the
    inventory-wide winrm settings updated with ``winrm``."""
    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    for host in data["hosts"].values():
        if isinstance(host.get("winrm"), dict) and port is not None:
            host["winrm"]["port"] = port
            host["winrm"].pop("scheme", None)
            host["winrm"].pop("auth", None)
    data["winrm"] = {**data.get("winrm", {}), **winrm}
    path = tmp / f"inventory-{port}-{len(list(tmp.glob('inventory-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


_MEASURED = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'MAXRSS-KB {rss}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def cli(lab: Lab, inventory: str, *args: str, timeout: float = 120) -> tuple[int, str, float, int]:
    """Run `invoke ARGS` on ``inventory``; (exit code, output, seconds, max RSS of the CLI kB)."""
    cmd = [sys.executable, "-c", _MEASURED, INVOKE, *args, "--inventory", inventory]
    cmd += ["--runs", str(lab.runs), "--time-scale", "0.02"]
    started = time.monotonic()
    res = subprocess.run(
        cmd, cwd=ROOT, env=lab.env(), text=True, capture_output=True, timeout=timeout, input=""
    )
    elapsed = time.monotonic() - started
    *rest, last = res.stderr.rstrip("\n").split("\n")
    assert last.startswith("MAXRSS-KB "), res.stderr
    return res.returncode, res.stdout + "\n".join(rest), elapsed, int(last.split()[1])


def last_report(lab: Lab) -> dict[str, Any]:
    run_dir = lab.run_dirs()[-1]
    return json.loads((run_dir / "report.json").read_text(encoding="utf-8"))


@pytest.fixture
def slow_lab(make_lab: Callable[..., Lab]) -> Iterator[Lab]:
    yield make_lab(speed=50.0)


# -- 4f: a forged plain reply is refused, wherever it comes -----------------------------------


def test_attack_4f_baseline_client_is_non_compliant(slow_lab: Lab, tmp_path: Path) -> None:
    """Without the attacker, xp-fleet001 is non-compliant: a forged pass would be a lie."""
    with Proxy(slow_lab.running.server.port, lambda host, n: None) as proxy:
        code, out, _, _ = cli(slow_lab, inventory_via(slow_lab, proxy.port, tmp_path), *CHECK)
    assert code == 1, out
    assert "5.0.7958.1000" in out
    assert proxy.sealed["xp-fleet001"] >= 4  # Create, Command (script inline), Receive..., Delete


@pytest.mark.parametrize("position", [1, 2, 3, 4])
def test_attack_4f_forged_unsealed_reply_refused(
    slow_lab: Lab, tmp_path: Path, position: int
) -> None:
    def rule(host: str, number: int) -> Action | None:
        return forged_receive if host == "xp-fleet001" and number == position else None

    with Proxy(slow_lab.running.server.port, rule) as proxy:
        code, out, _, _ = cli(slow_lab, inventory_via(slow_lab, proxy.port, tmp_path), *CHECK)
    assert proxy.sealed["xp-fleet001"] >= position  # the forged reply was sent
    assert code != 0, out
    assert "KB2910552 is installed" not in out
    report = last_report(slow_lab)
    host = report["hosts"][0]
    assert all((step.get("data") or {}).get("compliance") != "compliant" for step in host["steps"])
    if position == 4:  # the shell's Delete: the honest verdict was read before the forgery
        assert host["status"] == "non-compliant", host
    else:  # a forged reply the check waits on fails the host: never ok, never a verdict
        assert host["status"] in ("failed", "unreachable"), host
        assert "reply not encrypted: refusing it" in out, out


def forged_timeout_fault(client: socket.socket, _: tuple[bytes, bytes]) -> bool:
    """A plain 400 carrying a WS-Man OperationTimeout fault (code 2150858793, as Windows sends
    it in ../shared/recorded/winrs/test_winrs_operation_timeout.yml), the answer a Receive still
    waiting gets (and polls on after): an attacker's way to keep the client polling."""
    xml = (
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        b'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Body><s:Fault><s:Code>'
        b"<s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode>"
        b"</s:Code><s:Reason><s:Text>The WS-Management service cannot complete the operation "
        b"within the time specified in OperationTimeout.</s:Text></s:Reason><s:Detail>"
        b'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        b'Code="2150858793"/></s:Detail></s:Fault></s:Body></s:Envelope>'
    )
    client.sendall(_head(b"400 Bad Request", PLAIN, b"Content-Length: %d" % len(xml)) + xml)
    return True


def test_attack_4f_forged_unsealed_fault_refused(slow_lab: Lab, tmp_path: Path) -> None:
    """An unsealed fault in place of the Receive's reply is not read as the host's fault: the
    host fails saying the reply was not encrypted, never polls on it, never gets a verdict."""

    def rule(host: str, number: int) -> Action | None:
        return forged_timeout_fault if host == "xp-fleet001" and number == 3 else None

    with Proxy(slow_lab.running.server.port, rule) as proxy:
        code, out, _, _ = cli(slow_lab, inventory_via(slow_lab, proxy.port, tmp_path), *CHECK)
    assert proxy.sealed["xp-fleet001"] >= 3
    assert code != 0, out
    assert "reply not encrypted: refusing it (HTTP 400" in out, out
    assert last_report(slow_lab)["hosts"][0]["status"] in ("failed", "unreachable")


def tampered(client: socket.socket, reply: tuple[bytes, bytes]) -> bool:
    """The host's sealed reply with one bit of the sealed bytes flipped (Content-Type kept)."""
    head, body = reply
    end = body.rindex(b"--Encrypted Boundary--")
    spot = end - 3  # inside the sealed message, before the closing boundary's CRLF
    body = body[:spot] + bytes([body[spot] ^ 0x01]) + body[spot + 1 :]
    client.sendall(head + body)
    return True


def test_attack_4f_tampered_sealed_reply_refused(slow_lab: Lab, tmp_path: Path) -> None:
    def rule(host: str, number: int) -> Action | None:
        return tampered if host == "xp-fleet001" and number == 3 else None  # the Receive

    with Proxy(slow_lab.running.server.port, rule) as proxy:
        code, out, _, _ = cli(slow_lab, inventory_via(slow_lab, proxy.port, tmp_path), *CHECK)
    assert proxy.sealed["xp-fleet001"] >= 3
    assert code == 1, out
    assert "untrusted reply" in out and "could not be unsealed" in out, out
    assert last_report(slow_lab)["hosts"][0]["status"] in ("failed", "unreachable")


@pytest.mark.parametrize("attack", [forged_receive, tampered], ids=["unsealed", "tampered"])
def test_attack_4f_reply_to_the_last_leg_refused(
    slow_lab: Lab, tmp_path: Path, attack: Action
) -> None:
    """The shell's Create rides NTLM's AUTHENTICATE leg once a host accepted the credential
    (xp-fleet001, first with --forks 1): its reply is checked like any other."""

    def rule(host: str, number: int) -> Action | None:
        return attack if host == "xp-fleet002" and number == 1 else None

    two = ("check", "client-hotfix", "--hosts", "xp-fleet001,xp-fleet002", "--forks", "1")
    with Proxy(slow_lab.running.server.port, rule) as proxy:
        inventory = inventory_via(slow_lab, proxy.port, tmp_path)
        code, out, _, _ = cli(slow_lab, inventory, *two, "--non-interactive")
    assert proxy.on_last_leg == {"xp-fleet002"}, proxy.on_last_leg
    assert code != 0, out
    assert "KB2910552 is installed" not in out
    hosts = {host["name"]: host for host in last_report(slow_lab)["hosts"]}
    assert hosts["xp-fleet001"]["status"] == "non-compliant", hosts
    assert hosts["xp-fleet002"]["status"] in ("failed", "unreachable"), hosts
    refusal = "reply not encrypted: refusing it" if attack is forged_receive else "unsealed"
    assert refusal in out, out


# -- 4d: a peer that trickles cannot outlast --step-timeout ------------------------------------


def test_attack_4d_trickle_bounded_by_step_timeout(slow_lab: Lab, tmp_path: Path) -> None:
    step_timeout = 4.0

    with Proxy(slow_lab.running.server.port, lambda host, n: None) as proxy:
        trickle = proxy.trickle(1.0)
        proxy._rule = lambda host, n: trickle if host == "xp-fleet001" and n == 3 else None
        code, out, elapsed, _ = cli(
            slow_lab,
            inventory_via(slow_lab, proxy.port, tmp_path),
            *CHECK,
            "--step-timeout",
            str(step_timeout),
        )
    print(f"trickle: CLI ended after {elapsed:.1f} s with --step-timeout {step_timeout:g}")
    assert code == 1, out
    assert "still sending its reply" in out, out
    # the deadline, one second of read-timeout rounding, and the CLI's start-up; the proxy
    # would trickle for PROXY_LIFETIME (90 s)
    assert elapsed < step_timeout + 20, out


# -- 4e: a 1 GB body does not reach memory ---------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_attack_4e_1gb_body_bounded(slow_lab: Lab, tmp_path: Path, chunked: bool) -> None:
    cap_mb = 64
    with Proxy(slow_lab.running.server.port, lambda host, n: None) as proxy:
        code, out, _, baseline = cli(
            slow_lab, inventory_via(slow_lab, proxy.port, tmp_path), *CHECK
        )
        assert code == 1, out  # the honest answer: non-compliant
        huge = proxy.huge(chunked=chunked)
        start = proxy.sealed["xp-fleet001"]
        proxy._rule = lambda host, n: huge if host == "xp-fleet001" and n == start + 3 else None
        code, out, _, attacked = cli(
            slow_lab, inventory_via(slow_lab, proxy.port, tmp_path), *CHECK
        )
    framing = "chunked" if chunked else "Content-Length"
    print(
        f"max RSS of the CLI: {baseline / 1024:.0f} MB honest, {attacked / 1024:.0f} MB "
        f"with a 1 GB {framing} body (cap {cap_mb} MB)"
    )
    assert attacked <= baseline + cap_mb * 1024 + 16 * 1024
    assert code == 1, out
    assert f"over the {cap_mb} MB cap" in out, out


# -- 6f / 6g: insecure settings are loud; Basic over http needs allow_unencrypted --------------


def test_attack_6f_cert_validation_off_is_loud(lab: Lab, tmp_path: Path) -> None:
    inventory = inventory_via(
        lab, lab.running.server.port, tmp_path, scheme="https", cert_validation=False
    )
    dry = lab.cli(*CHECK, "--dry-run", inventory=inventory)
    assert dry.returncode == 0, dry.stderr
    assert "insecure: cert_validation: false" in dry.stderr and "xp-fleet001" in dry.stderr
    code, out, _, _ = cli(lab, inventory, *CHECK)
    assert code == 1, out  # the lab has no TLS: the run fails, but it said what it did first
    assert "warning: insecure: cert_validation: false" in out, out
    warnings = last_report(lab)["run"]["warnings"]
    assert any("cert_validation: false" in w and "xp-fleet001" in w for w in warnings)
    # diagnose --host logs on to the host too: it says so as well.
    fetch = lab.cli("diagnose", "all", "--host", "xp-fleet001", "--inventory", inventory)
    assert "warning: insecure: cert_validation: false" in fetch.stderr, fetch.stderr
    assert "(xp-fleet001)" in fetch.stderr.split("\n")[0], fetch.stderr


def test_attack_6g_basic_over_http_refused(lab: Lab, tmp_path: Path) -> None:
    lab.running.server.allow_basic = True
    port = lab.running.server.port
    old = inventory_via(lab, port, tmp_path, auth="basic", insecure=True)
    code, out, _, _ = cli(lab, old, *CHECK)
    assert code == 2, out
    assert "`insecure` is now `allow_unencrypted`" in out and "inventory-" in out, out
    assert lab.run_dirs() == []

    refused = inventory_via(lab, port, tmp_path, auth="basic")
    code, out, _, _ = cli(lab, refused, *CHECK)
    assert code == 1, out
    assert "clear text" in out and "allow_unencrypted: true" in out, out

    allowed = inventory_via(lab, port, tmp_path, auth="basic", allow_unencrypted=True)
    code, out, _, _ = cli(lab, allowed, *CHECK)
    assert code == 1, out  # it ran: xp-fleet001 is really non-compliant
    assert "5.0.7958.1000" in out, out
    assert "warning: insecure: Basic over plain http" in out, out
    warnings = last_report(lab)["run"]["warnings"]
    assert any("Basic over plain http" in w and "xp-fleet001" in w for w in warnings)


# -- one wrong password never locks the account -------------------------------------------------


def test_lockout_one_401_per_credential(lab: Lab) -> None:
    wrong = lab.env(CMRUNBOOK_PASSWORD="not-the-password-8e1f")
    res = lab.cli("check", "client-hotfix", "--non-interactive", "--forks", "20", env=wrong)
    assert res.returncode == 1, res.stdout + res.stderr
    stats = lab.running.server.stats.snapshot()
    rejected = {host: s.rejected for host, s in stats.items() if s.rejected}
    print(f"failed logons the lab saw: {sum(rejected.values())} ({rejected})")
    assert sum(rejected.values()) == 1, rejected
    (first,) = rejected
    # (the first host may be a target, or the site server a target's check runs on)
    report = last_report(lab)
    by_status: dict[str, list[dict[str, Any]]] = {}
    for host in report["hosts"]:
        by_status.setdefault(host["status"], []).append(host)
    user = lab.running.username
    (tried,) = by_status["unreachable"]
    assert tried["message"].startswith(f"{first}: ")
    assert f"rejected the credentials of {user} (HTTP 401)" in tried["message"]
    assert f"'{user}'" not in res.stdout
    assert len(by_status["not-tried"]) == len(report["hosts"]) - 1
    for host in by_status["not-tried"]:
        assert (
            f"not tried: credentials rejected by {first}" in host["message"]
            or host["message"] == f"{first}: not tried again: it rejected the credentials"
        ), host


# -- fidelity F9: the WinRS code page follows the host's OS, or the inventory ---------------------


def test_fidelity_f9_codepage_per_host_os(lab: Lab, tmp_path: Path) -> None:
    """XP / 2003 / 2008 (non-R2) shells get 437, later ones 65001; `codepage` overrides it."""
    server = lab.running.server
    yes = ("--yes", "--non-interactive", "--assume-manual-done")
    res = lab.cli("remediate", "multicast", "--method", "3", "--hosts", "cm07-dp02", *yes)
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(server.shell_codepages("cm07-dp02")) == {437}  # Server 2008, x86
    assert set(server.shell_codepages("cm07-site01")) == {65001}  # Server 2008 R2

    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    data["hosts"]["xp-fleet001"]["winrm"]["codepage"] = 850
    inventory = tmp_path / "codepage.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    res = lab.cli(
        "check",
        "client-hotfix",
        "--hosts",
        "xp-fleet001,xp-fleet002",
        "--non-interactive",
        inventory=str(inventory),
    )
    assert res.returncode == 1, res.stdout + res.stderr  # both are really non-compliant
    assert "5.0.7958.1000" in res.stdout
    assert set(server.shell_codepages("xp-fleet001")) == {850}
    assert set(server.shell_codepages("xp-fleet002")) == {437}  # Windows XP


def test_attack_4f_pywinrm_transport_refuses_plain_reply(slow_lab: Lab) -> None:
    """pywinrm's transport (kerberos, credssp; here its NTLM, which encrypts the same way)
    reads a plain reply as data once it encrypts; guarded, it refuses it."""

    def rule(host: str, number: int) -> Action | None:
        return forged_receive if host == "xp-fleet001" and number == 3 else None

    running = slow_lab.running
    with Proxy(running.server.port, rule) as proxy:
        protocol = winrm.protocol.Protocol(
            f"http://127.0.0.1:{proxy.port}/wsman/xp-fleet001",
            transport="ntlm",
            username=running.username,
            password=running.password,
            operation_timeout_sec=5,
            read_timeout_sec=10,
        )
        refuse_plain_replies(protocol.transport)
        shell = protocol.open_shell()  # Create: sealed request 1
        command = protocol.run_command(shell, "ipconfig")  # 2
        assert protocol.transport.encryption is not None
        with pytest.raises(EncryptionError, match="reply not encrypted: refusing it"):
            protocol.get_command_output_raw(shell, command)  # 3: the forged Receive
    assert proxy.sealed["xp-fleet001"] == 3


# -- 4g: what the peer sends reaches no terminal raw -----------------------------------------

ESCAPES = (
    b"\x1b]0;PWNED-TITLE\x07\x1b[2K\r\x1b[32mxp-fleet001 OK: all hosts compliant\x1b[0m"
    b"\x1b[8m hidden \r\n\r\n"
)


def escape_reply(client: socket.socket, _: tuple[bytes, bytes]) -> bool:
    """Terminal escapes (title, erase line, fake green line, hidden text) for a status line."""
    client.sendall(ESCAPES + b"\xa5" * 4096)
    return False


def test_attack_4g_wire_escapes_never_reach_the_console(slow_lab: Lab, tmp_path: Path) -> None:
    def rule(host: str, number: int) -> Action | None:
        return escape_reply if host == "xp-fleet001" and number == 3 else None  # the Receive

    with Proxy(slow_lab.running.server.port, rule) as proxy:
        code, out, _, _ = cli(slow_lab, inventory_via(slow_lab, proxy.port, tmp_path), *CHECK)
    assert proxy.sealed["xp-fleet001"] >= 3
    assert code == 1, out
    assert "answered something that is not HTTP" in out, out
    assert "\\x1b]0;PWNED-TITLE\\x07" in out  # shown, as text
    run_dir = slow_lab.run_dirs()[-1]
    written = [out] + [p.read_text("utf-8") for p in sorted(run_dir.iterdir()) if p.is_file()]
    assert all("\x1b" not in text and "\x07" not in text for text in written)
    assert len(out) < 8000  # not the 4 KB of garbage, nor http.client's 64 KB


# -- 4d, 4e on pywinrm's transport (here: Basic on http; Kerberos, CredSSP, https alike) ----------


def test_attack_4d_4e_bounded_on_pywinrm_transport(slow_lab: Lab, tmp_path: Path) -> None:
    slow_lab.running.server.allow_basic = True
    with Proxy(slow_lab.running.server.port, lambda host, n: None) as proxy:
        inventory = inventory_via(
            slow_lab, proxy.port, tmp_path, auth="basic", allow_unencrypted=True
        )
        code, out, _, baseline = cli(slow_lab, inventory, *CHECK)
        assert code == 1 and "5.0.7958.1000" in out, out  # honest: non-compliant
        start = proxy.sealed["xp-fleet001"]
        huge = proxy.huge(chunked=True)
        proxy._rule = lambda host, n: huge if host == "xp-fleet001" and n == start + 3 else None
        code, out, _, attacked = cli(slow_lab, inventory, *CHECK)
        print(f"Basic: max RSS {baseline / 1024:.0f} MB honest, {attacked / 1024:.0f} MB with 1 GB")
        assert attacked <= baseline + 64 * 1024 + 16 * 1024
        assert code == 1 and "over the 64 MB cap" in out, out

        start = proxy.sealed["xp-fleet001"]
        trickle = proxy.trickle(1.0)
        proxy._rule = lambda host, n: trickle if host == "xp-fleet001" and n == start + 3 else None
        code, out, elapsed, _ = cli(slow_lab, inventory, *CHECK, "--step-timeout", "4")
        print(f"Basic: trickle ended after {elapsed:.1f} s with --step-timeout 4")
        assert code == 1 and "still sending its reply" in out, out
        assert elapsed < 4 + 20, out
