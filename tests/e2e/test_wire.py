"""The WinRM wire: the lab's WS-Management server and the engine's transport, end to end.

Every test talks real HTTP on 127.0.0.1 to a real :class:`LabServer`, through the engine's
transport (its own NTLM channel; pywinrm's transport for Basic), with NTLM and message
encryption unless it says otherwise. Each test uses its own host name, so counters
and injected faults of one test never leak into another.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import winrm

from cmrunbook.remote import TransportError
from cmrunbook.remote.winrm import clixml
from cmrunbook.remote.winrm import host as host_module
from cmrunbook.remote.winrm.host import (
    BOOTSTRAP_ARGUMENTS,
    INLINE_LIMIT,
    Credentials,
    Endpoint,
    WinRMHost,
    inline_arguments,
)
from cmrunbook.remote.winrm.ntlm_http import LastLeg, ntlm_hashes
from cmrunbook_lab.winrm.cmdline import encoded_command, split_command_line
from cmrunbook_lab.winrm.commands import (
    CommandIO,
    EchoBackend,
    FunctionBackend,
    HostBackend,
    script_of,
)
from cmrunbook_lab.winrm.server import LabServer

USER = "labadmin"
PASSWORD = "S3cret-pa55!"

CLIXML_STDERR = (
    "#< CLIXML\r\n"
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record">'
    "<AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC>"
    "<T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>"
    "<S S=\"Error\">Image 'Windows 7 x86' not found_x000D__x000A_</S>"
    '<S S="Error">At line:12 char:5_x000D__x000A_</S>'
    '<S S="Error">+     throw "Image \'Windows 7 x86\' not found"_x000D__x000A_</S>'
    '<S S="Error">+     ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~_x000D__x000A_</S>'
    '<S S="Error">    + CategoryInfo          : OperationStopped: (:) [], RuntimeException'
    "_x000D__x000A_</S>"
    '<S S="Error">    + FullyQualifiedErrorId : Image not found_x000D__x000A_</S>'
    '<S S="Error"> _x000D__x000A_</S>'
    '<S S="Error">Write-Error : Grüße_x0009_– ‘quoted’_x000D__x000A_</S>'
    '<S S="Error">    + CategoryInfo          : NotSpecified: (:) [Write-Error], '
    "WriteErrorException_x000D__x000A_</S>"
    '<S S="Error"> _x000D__x000A_</S>'
    '<S S="warning">PXE is still enabled on dp01_x000D__x000A_</S>'
    "</Objs>"
)
CLIXML_TEXT = (
    "Image 'Windows 7 x86' not found (line 12, char 5)\n"
    "Write-Error : Grüße\t– ‘quoted’\n"
    "WARNING: PXE is still enabled on dp01"
)


def _clixml_command(command: str, arguments: list[str], io: CommandIO) -> int:
    script_of(command, arguments, io)  # a bootstrap reads all of stdin before it fails
    io.write_stderr(CLIXML_STDERR)
    return 1


ECHO = EchoBackend()
CLIXML_HOST = FunctionBackend(_clixml_command)


def _resolve(name: str) -> HostBackend | None:
    """Any host name is an echo host, except clixml-* and the deliberately missing one."""
    if name == "missing":
        return None
    return CLIXML_HOST if name.startswith("clixml") else ECHO


@pytest.fixture(scope="module")
def lab() -> Iterator[LabServer]:
    with LabServer(_resolve, {USER: PASSWORD}, default_host="runps") as server:
        yield server


@pytest.fixture(scope="module")
def basic_lab() -> Iterator[LabServer]:
    with LabServer(_resolve, {USER: PASSWORD}, allow_basic=True) as server:
        yield server


def endpoint(server: LabServer, name: str, **options: object) -> Endpoint:
    return Endpoint(
        host=name, address="127.0.0.1", port=server.port, path=f"/wsman/{name}", **options
    )  # type: ignore[arg-type]


def proven(password: str = PASSWORD) -> LastLeg:
    """A run's memory of the last leg in which another host has accepted the credential."""
    last_leg = LastLeg()
    last_leg.proven(last_leg.credential(USER, ntlm_hashes(password)))
    return last_leg


def connect(
    server: LabServer,
    name: str,
    password: str = PASSWORD,
    read_timeout: float = 5,
    last_leg: LastLeg | None = None,
    **options: object,
) -> WinRMHost:
    """A host of a run whose credential another host has accepted, unless ``last_leg`` says."""
    return WinRMHost(
        endpoint(server, name, **options),
        Credentials(USER, password),
        operation_timeout=1,
        read_timeout=read_timeout,
        last_leg=proven(password) if last_leg is None else last_leg,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- scripts go over stdin, byte for byte ----------------------------------------------------


def test_script_comes_back_unchanged_including_non_ascii(lab: LabServer) -> None:
    script = "$x = @{\n  Name = 'Grüße – ‘quoted’'\n}\nWrite-Output $x.Name\n"
    with connect(lab, "echo-text") as host:
        result = host.run(script, deadline=10)
    assert result.stdout == script
    assert result.stderr == ""
    assert result.exit_code == 0


def test_a_50_kb_script_travels_over_stdin_in_one_send(lab: LabServer) -> None:
    line = "Write-Output 'Grüße – ‘quoted’ from a long runbook step'\r\n"
    script = line * (50_000 // len(line.encode()) + 1)
    assert len(script.encode()) > 50_000
    with connect(lab, "echo-50kb") as host:
        result = host.run(script, deadline=10)
    assert result.stdout == script
    assert result.requests == 4  # Create, Command, one Send, Receive
    assert lab.stats.snapshot()["echo-50kb"].requests["Send"] == 1


def test_a_large_script_is_sent_in_chunks_and_reassembled(lab: LabServer) -> None:
    script = "".join(f"# line {i:06d} ä\n" for i in range(12_000))  # about 200 KB
    with connect(lab, "echo-200kb") as host:
        result = host.run(script, deadline=10)
    assert result.stdout == script
    assert lab.stats.snapshot()["echo-200kb"].requests["Send"] == 4


def test_a_script_travels_inline_only_while_the_command_line_fits(lab: LabServer) -> None:
    """The longest script that goes in the Command itself runs (the lab, like cmd.exe, fails a
    command line over 8,191 characters); one character more goes over stdin, in one Send."""
    low, high = 1, INLINE_LIMIT
    while low < high:  # the longest "#...#" that inline_arguments still takes
        middle = (low + high + 1) // 2
        low, high = (middle, high) if inline_arguments("#" * middle) else (low, middle - 1)
    fits, over = "#" * low, "#" * (low + 1)
    assert inline_arguments(over) is None
    with connect(lab, "echo-inline") as host:
        assert host.run(fits, deadline=5).stdout == fits
        assert lab.stats.snapshot()["echo-inline"].requests["Send"] == 0
        assert host.run(over, deadline=5).stdout == over
        assert lab.stats.snapshot()["echo-inline"].requests["Send"] == 1


def test_a_bare_powershell_without_cmd_exe_is_not_found_and_stdin_takes_over(
    lab: LabServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without cmd.exe the lab, like Windows, finds no bare powershell.exe (fault 2147942402);
    the host then sends this and every later script over stdin through cmd.exe."""
    monkeypatch.setattr(host_module, "POWERSHELL_PATH", "powershell.exe")
    with connect(lab, "echo-no-path") as host:
        assert host.run("Write-Output 1", deadline=5).stdout == "Write-Output 1"
        assert host.run("Write-Output 2", deadline=5).requests == 3  # Command, Send, Receive
    requests = lab.stats.snapshot()["echo-no-path"].requests
    assert (requests["Command"], requests["Send"]) == (3, 2)


def test_a_script_that_reads_stdin_or_is_empty_is_not_inline() -> None:
    assert inline_arguments("$input | Write-Output") is None
    assert inline_arguments("[Console]::OpenStandardInput()") is None
    # PowerShell's names are case-insensitive: these read stdin too.
    assert inline_arguments("$Input | Write-Output") is None
    assert inline_arguments("[console]::openstandardinput()") is None
    assert inline_arguments("") is None
    arguments = inline_arguments("Write-Output 'é'")
    assert arguments is not None and arguments[:-1] == BOOTSTRAP_ARGUMENTS[:-1]
    assert encoded_command(["powershell.exe", *arguments]) == "Write-Output 'é'"


def test_the_command_line_is_the_short_bootstrap(lab: LabServer) -> None:
    argv = ["powershell.exe", *split_command_line(" ".join(BOOTSTRAP_ARGUMENTS))]
    bootstrap = encoded_command(argv)
    assert bootstrap is not None and "OpenStandardInput" in bootstrap
    assert "-Command -" not in " ".join(argv)
    assert len(" ".join(argv)) < 1000


def test_exit_codes_and_plain_stderr(lab: LabServer) -> None:
    with connect(lab, "echo-exit") as host:
        assert host.run("Write-Output ok", deadline=5).exit_code == 0
        assert host.run("", deadline=5).stdout == ""  # stdin is closed even when empty
        assert host.run("# lab: exit 3", deadline=5).exit_code == 3
        failed = host.run("# lab: stderr access denied\n# lab: exit 5", deadline=5)
    assert failed.exit_code == 5
    assert failed.stderr == "access denied\r\n"


def test_clixml_stderr_becomes_readable_text(lab: LabServer) -> None:
    with connect(lab, "clixml-1") as host:
        result = host.run("throw 'x'", deadline=5)
    assert result.exit_code == 1
    assert result.stderr == CLIXML_TEXT


def test_clixml_decoder_edge_cases() -> None:
    assert clixml.unescape("a_x000D__x000A_b_x005F_x0041_") == "a\r\nb_x0041_"
    assert clixml.unescape("_xD83D__xDE00_") == "\U0001f600"
    assert clixml.to_text("plain error\r\n") == "plain error\r\n"
    broken = "#< CLIXML\r\n<Objs><S S='Error'>unterminated"
    assert clixml.to_text(broken) == broken
    two = CLIXML_STDERR + "native tool: failed\r\n" + CLIXML_STDERR
    assert clixml.to_text(two) == f"{CLIXML_TEXT}\nnative tool: failed\n{CLIXML_TEXT}"


# -- one shell and one connection per host per run -------------------------------------------


def test_two_requests_per_short_run_after_the_first_and_one_connection(lab: LabServer) -> None:
    """A short script travels in the Command itself: Command and Receive, no Send."""
    with connect(lab, "echo-bench") as host:
        outputs = [host.run(f"Write-Output {i}", deadline=5) for i in range(10)]
        costs = [result.requests for result in outputs]
        assert host.requests == sum(costs)
        assert lab.open_shells("echo-bench") == 1
    assert [result.stdout for result in outputs] == [f"Write-Output {i}" for i in range(10)]
    assert costs == [3] + [2] * 9
    stats = lab.stats.snapshot()["echo-bench"]
    assert stats.connections == 1
    assert dict(stats.requests) == {
        "Create": 1,
        "Command": 10,
        "Send": 0,
        "Receive": 10,
        "Signal": 0,
        "Delete": 1,
    }
    assert lab.open_shells("echo-bench") == 0


def test_the_handshake_is_two_requests_the_second_carrying_the_create(lab: LabServer) -> None:
    with connect(lab, "echo-handshake") as host:
        host.run("Write-Output x", deadline=5)
    stats = lab.stats.snapshot()["echo-handshake"]
    # NEGOTIATE with the first request, AUTHENTICATE with the sealed Create; no anonymous round
    # trip, no empty leg: a one-step check is 5 HTTP requests (+ Command, Receive, Delete)
    assert stats.http_requests - stats.total_requests == 1
    assert stats.http_requests == 5
    assert stats.connections == 1


def test_a_credential_no_host_accepted_yet_logs_on_with_an_empty_leg(lab: LabServer) -> None:
    """A 401 on the combined leg could be the password: the first logon of a run risks one
    failed logon, never two; the hosts after it save the empty leg."""
    run = LastLeg()
    for name in ("echo-first-logon", "echo-second-logon"):
        with connect(lab, name, last_leg=run) as host:
            assert host.run("Write-Output x", deadline=5).stdout == "Write-Output x"
    first, second = (lab.stats.snapshot()[n] for n in ("echo-first-logon", "echo-second-logon"))
    assert (first.http_requests, second.http_requests) == (6, 5)


def test_a_wrong_password_is_one_failed_logon(lab: LabServer) -> None:
    with pytest.raises(TransportError) as caught:
        connect(lab, "echo-lockout", password="not-it-5b1", last_leg=LastLeg()).run(
            "Write-Output x", deadline=5
        )
    assert caught.value.kind == "unauthorized"
    assert lab.stats.snapshot()["echo-lockout"].rejected == 1


def test_a_host_refusing_a_message_on_the_last_leg_is_logged_on_again(lab: LabServer) -> None:
    """OMI before microsoft/omi#577 answered 401: the Create was not run, so it goes again
    after a plain logon, and the endpoint keeps the plain way for the rest of the run."""
    run = proven()
    lab.refuse_body_on_authenticate = True
    try:
        for name in ("echo-omi-first", "echo-omi-second"):
            with connect(lab, name, last_leg=run) as host:
                assert host.run("Write-Output x", deadline=5).stdout == "Write-Output x"
    finally:
        lab.refuse_body_on_authenticate = False
    first, second = (lab.stats.snapshot()[n] for n in ("echo-omi-first", "echo-omi-second"))
    # NEGOTIATE, AUTHENTICATE + Create (401); NEGOTIATE, AUTHENTICATE; Create, Command, Receive,
    # Delete: one extra handshake, on a new connection, and the Create ran once
    assert (first.http_requests, first.connections, first.requests["Create"]) == (8, 2, 1)
    assert (second.http_requests, second.connections) == (6, 1)
    assert first.rejected == second.rejected == 0
    assert lab.open_shells("echo-omi-first") == 0


def test_a_connection_the_host_closed_is_authenticated_again(lab: LabServer) -> None:
    """Windows closes a keep-alive connection idle for 120 s; NTLM keys die with it."""
    with connect(lab, "echo-idle") as host:
        assert host.run("Write-Output before", deadline=5).stdout == "Write-Output before"
        assert lab.close_connections() >= 1
        assert host.run("Write-Output after", deadline=5).stdout == "Write-Output after"
        assert lab.open_shells("echo-idle") == 1  # the shell outlives the connection
    stats = lab.stats.snapshot()["echo-idle"]
    assert stats.connections == 2
    # two handshakes: the first carries the Create on its last leg, the second (before a
    # Command, which must never reach a host twice) has an empty one
    assert stats.http_requests - stats.total_requests == 1 + 2
    assert stats.requests["Create"] == 1


class _KerberosOnly(http.server.BaseHTTPRequestHandler):
    """A listener that refuses NTLM: every request gets a bare Negotiate offer."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(401)
        self.send_header("WWW-Authenticate", "Negotiate")
        self.send_header("WWW-Authenticate", "Kerberos")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_host_without_ntlm_says_so_and_suggests_kerberos() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KerberosOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = Endpoint(host="dc01", address="127.0.0.1", port=server.server_address[1])
        with pytest.raises(TransportError) as caught:
            WinRMHost(target, Credentials(USER, PASSWORD)).run("Write-Output x", deadline=5)
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.kind == "http"
    assert "without a challenge (it offers: Negotiate, Kerberos)" in str(caught.value)
    assert "try auth: kerberos" in str(caught.value)


# -- deadline --------------------------------------------------------------------------------


def test_a_script_past_its_deadline_is_terminated(lab: LabServer) -> None:
    terminated_before = ECHO.terminated
    with connect(lab, "echo-slow") as host:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            host.run("# lab: sleep 30", deadline=1.5)
        elapsed = time.monotonic() - started
        assert caught.value.kind == "timeout"
        assert "1.5 s" in str(caught.value) and "terminated" in str(caught.value)
        assert 1.5 <= elapsed < 1.5 + 1.5
        assert lab.stats.snapshot()["echo-slow"].requests["Signal"] == 1
        assert ECHO.terminated == terminated_before + 1
        assert host.run("Write-Output again", deadline=5).stdout == "Write-Output again"
    assert lab.stats.snapshot()["echo-slow"].requests["Create"] == 1  # the shell survived


def test_the_deadline_also_bounds_a_host_that_never_answers(lab: LabServer) -> None:
    lab.faults.set("echo-hang-create", "hang", actions=["Create"])
    host = connect(lab, "echo-hang-create", read_timeout=30)
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        host.run("Write-Output x", deadline=1)
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 1 + 1.5  # not the 30 s read timeout


# -- failures become TransportErrors of the right kind ---------------------------------------


def test_wrong_password_is_unauthorized_and_never_printed(lab: LabServer) -> None:
    wrong = "not-the-password-123"
    with pytest.raises(TransportError) as caught:
        connect(lab, "echo-auth", password=wrong).run("Write-Output x", deadline=5)
    assert caught.value.kind == "unauthorized"
    assert caught.value.host == "echo-auth"
    for text in (str(caught.value), repr(caught.value), repr(Credentials(USER, wrong))):
        assert wrong not in text and PASSWORD not in text


def test_a_closed_port_is_refused(lab: LabServer) -> None:
    port = free_port()
    target = Endpoint(host="dp01", address="127.0.0.1", port=port)
    with pytest.raises(TransportError) as caught:
        WinRMHost(target, Credentials(USER, PASSWORD)).run("Write-Output x", deadline=5)
    assert caught.value.kind == "refused"
    assert str(caught.value) == (
        f"dp01: connection refused at http://127.0.0.1:{port}/wsman (is WinRM listening?)"
    )


def test_an_unknown_host_is_http_404(lab: LabServer) -> None:
    with pytest.raises(TransportError) as caught:
        connect(lab, "missing").run("Write-Output x", deadline=5)
    assert caught.value.kind == "http"
    assert "HTTP 404" in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "kind", "action"),
    [
        ("refuse", "refused", "Create"),
        ("http500", "fault", "Command"),
        ("hang", "timeout", "Send"),
        ("reset", "reset", "Receive"),
    ],
)
def test_injected_faults(lab: LabServer, fault: str, kind: str, action: str) -> None:
    name = f"echo-fault-{fault}"
    lab.faults.set(name, fault, actions=[action])
    host = connect(lab, name, read_timeout=2)
    # Only a script too long for the command line is sent over stdin, where a Send can hang.
    script = "Write-Output x" + ("\n#" * INLINE_LIMIT if action == "Send" else "")
    with pytest.raises(TransportError) as caught:
        host.run(script, deadline=10)
    assert caught.value.kind == kind, caught.value
    assert lab.faults.pending(name) == {}
    # the same host starts afresh, and so does a new one
    assert host.run("Write-Output same", deadline=5).stdout == "Write-Output same"
    host.close()
    with connect(lab, name) as fresh:
        assert fresh.run("Write-Output fresh", deadline=5).stdout == "Write-Output fresh"


def test_http500_fault_shows_code_and_text(lab: LabServer) -> None:
    lab.faults.set("echo-500", "http500")
    with pytest.raises(TransportError) as caught:
        connect(lab, "echo-500").run("Write-Output x", deadline=5)
    assert "WS-Man fault 2147500037 (w:InternalError)" in str(caught.value)
    assert "internal error" in str(caught.value)


def test_quota_fault_on_create_is_retried_with_a_new_shell(lab: LabServer) -> None:
    lab.faults.set("echo-quota-create", "quota", actions=["Create"])
    with connect(lab, "echo-quota-create") as host:
        assert host.run("Write-Output ok", deadline=5).stdout == "Write-Output ok"
    assert lab.stats.snapshot()["echo-quota-create"].requests["Create"] == 2
    # a WS-Man fault is an answer on a healthy connection: it is kept, not authenticated again
    stats = lab.stats.snapshot()["echo-quota-create"]
    assert stats.connections == 1
    assert stats.http_requests - stats.total_requests == 1  # the NEGOTIATE leg


def test_quota_fault_on_command_recreates_the_shell_once(lab: LabServer) -> None:
    name = "echo-quota-command"
    with connect(lab, name) as host:
        host.run("Write-Output first", deadline=5)
        lab.faults.set(name, "quota", actions=["Command"])
        assert host.run("Write-Output second", deadline=5).stdout == "Write-Output second"
        requests = lab.stats.snapshot()[name].requests
        assert (requests["Create"], requests["Delete"], requests["Command"]) == (2, 1, 3)
        assert lab.open_shells(name) == 1

        lab.faults.set(name, "quota", count=2, actions=["Command"])
        with pytest.raises(TransportError) as caught:
            host.run("Write-Output third", deadline=5)
    assert caught.value.kind == "fault"
    assert "2150859174 (w:QuotaLimit)" in str(caught.value)


# -- Basic authentication --------------------------------------------------------------------


def test_basic_over_http_is_refused_unless_allowed(basic_lab: LabServer) -> None:
    with pytest.raises(TransportError) as caught:
        connect(basic_lab, "echo-basic", auth="basic")
    assert caught.value.kind == "config"
    assert "clear text" in str(caught.value)


def test_basic_works_when_allowed_unencrypted(basic_lab: LabServer, lab: LabServer) -> None:
    with connect(basic_lab, "echo-basic", auth="basic", allow_unencrypted=True) as host:
        assert host.run("Write-Output b", deadline=5).stdout == "Write-Output b"
    with pytest.raises(TransportError) as caught:  # the default lab does not allow Basic
        connect(lab, "echo-basic", auth="basic", allow_unencrypted=True).run("x", deadline=5)
    assert caught.value.kind == "unauthorized"


def test_unauthenticated_requests_get_401_with_the_offers(
    basic_lab: LabServer, lab: LabServer
) -> None:
    plain = requests.post(lab.endpoint("echo-x"), data=b"<x/>", timeout=5)
    assert plain.status_code == 401
    assert plain.headers["WWW-Authenticate"] == "Negotiate"
    offers = requests.post(basic_lab.endpoint("echo-x"), data=b"<x/>", timeout=5)
    assert offers.headers["WWW-Authenticate"] == 'Negotiate, Basic realm="WSMAN"'


# -- what pywinrm's own run_ps does against the lab ------------------------------------------


def test_pywinrm_run_ps_fails_on_a_9000_character_script(lab: LabServer) -> None:
    session = winrm.Session(
        lab.endpoint(), auth=(USER, PASSWORD), transport="ntlm", ca_trust_path=None
    )
    short = session.run_ps("Write-Output 'short'")
    assert (short.status_code, short.std_out) == (0, b"Write-Output 'short'")
    script = "Write-Output 'padding'\n" * (9000 // 23 + 1)
    assert len(script) >= 9000
    failed = session.run_ps(script)
    assert failed.status_code == 1
    assert failed.std_err.strip() == b"The command line is too long."
    with connect(lab, "echo-9000") as host:  # the same script over stdin is fine
        assert host.run(script, deadline=5).stdout == script


# -- the NTLM credential file ----------------------------------------------------------------


def test_each_server_owns_its_ntlm_user_file() -> None:
    first = LabServer(_resolve, {USER: "first-password"}).start()
    second = LabServer(_resolve, {USER: "second-password"}).start()
    try:
        files = [first._credentials.path, second._credentials.path]
        assert all(os.path.exists(path) for path in files)
        for server, password in ((first, "first-password"), (second, "second-password")):
            with connect(server, "echo-users", password=password) as host:
                assert host.run("Write-Output u", deadline=5).exit_code == 0
        with pytest.raises(TransportError) as caught:
            connect(first, "echo-users", password="second-password").run("x", deadline=5)
        assert caught.value.kind == "unauthorized"
    finally:
        first.stop()
        second.stop()
    assert not any(os.path.exists(path) for path in files)
    # handed back: to a server still running (this module's fixtures), or to what it was
    current = os.environ.get("NTLM_USER_FILE")
    assert current not in files
    assert current is None or os.path.exists(current)
