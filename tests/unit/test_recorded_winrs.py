"""The transport against real Windows: recorded WinRS replies replayed to a WinRMHost.

tests/data/recorded/*.yml are request/response pairs a real Windows Server 2016 gave over https
(pypsrp's test data, MIT: LICENSE.pypsrp there; copied from ../shared/recorded/winrs). Here a
WinRMHost on https runs a script, and each request it sends is answered, at the HTTP adapter
under pywinrm's requests session, with the recorded response to a request of the same WS-Man
action, in the order recorded. What the host returns (stdout, stderr, exit code) or raises must
be what the recording says Windows produced; the lab is not involved.

Two things are adapted to our requests, as a real server would answer them: the reply's
RelatesTo names the message id of our request (the recording's names pypsrp's), and a fault
comes with HTTP status 500 (the recordings keep bodies only; pywinrm reads a fault from any
error status). The recordings of a cmd shell without a Send take the Send reply of
test_winrs_send.yml (the same server): the transport sends the script over stdin.
"""

from __future__ import annotations

import filecmp
import io
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters
import urllib3
import yaml

from cmrunbook.remote import TransportError
from cmrunbook.remote.winrm.host import INLINE_LIMIT, Credentials, Endpoint, WinRMHost

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests" / "data" / "recorded"
SHARED = REPO.parent / "shared" / "recorded" / "winrs"
SCRIPT = "Write-Output hi"
#: Comment lines that make a script too long to travel on the command line.
LONG = "\n#" * INLINE_LIMIT


def _action(envelope: str) -> str:
    """The WS-Man action of an envelope, by its last part (Create, Command, Receive...)."""
    found = re.search(r"<(?:\w+:)?Action[^>]*>([^<]+)</", envelope)
    assert found, envelope[:200]
    return found.group(1).rsplit("/", 1)[-1]


def _message_id(envelope: str) -> str:
    found = re.search(r"<(?:\w+:)?MessageID>([^<]+)</", envelope)
    assert found, envelope[:200]
    return found.group(1)


def _replies(name: str) -> dict[str, deque[str]]:
    """The recorded responses of one file, by the action of the request they answer."""
    messages = yaml.safe_load((RECORDED / f"{name}.yml").read_text(encoding="utf-8"))["messages"]
    replies: dict[str, deque[str]] = {}
    for message in messages:
        replies.setdefault(_action(message["request"]), deque()).append(message["response"])
    return replies


class Windows:
    """The recorded server: answers each request with the next recorded reply to its action."""

    def __init__(self, name: str) -> None:
        self.replies = _replies(name)
        self.replies.setdefault("Send", _replies("test_winrs_send")["Send"])
        self.sent: list[str] = []

    def send(
        self,
        adapter: requests.adapters.HTTPAdapter,
        request: requests.PreparedRequest,
        *args: Any,
        **kwargs: Any,
    ) -> requests.Response:
        body = request.body.decode("utf-8") if isinstance(request.body, bytes) else request.body
        assert body is not None
        action = _action(body)
        self.sent.append(action)
        queue = self.replies[action]
        reply = queue.popleft() if len(queue) > 1 else queue[0]
        reply = re.sub(r"(<(?:\w+:)?RelatesTo>)[^<]+(</)", rf"\g<1>{_message_id(body)}\g<2>", reply)
        data = reply.encode("utf-8")
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(data),
            headers={
                "Content-Type": "application/soap+xml;charset=UTF-8",
                "Content-Length": str(len(data)),
            },
            status=500 if "<s:Fault>" in reply else 200,
            preload_content=False,
        )
        return adapter.build_response(request, raw)


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A factory: the recorded server of one file, under the host's requests session."""

    def serve(name: str) -> Windows:
        server = Windows(name)

        def send(adapter: requests.adapters.HTTPAdapter, request: Any, *a: Any, **k: Any) -> Any:
            return server.send(adapter, request, *a, **k)

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
        return server

    yield serve


def host() -> WinRMHost:
    """The recordings' server: https on 5986, where Basic is allowed."""
    endpoint = Endpoint(
        host="win2016", address="192.168.56.11", port=5986, scheme="https", auth="basic"
    )
    return WinRMHost(endpoint, Credentials("vagrant", "vagrant"))


def test_the_copies_are_the_shared_recordings() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the copies in {RECORDED} are used as they are")
    for copy in RECORDED.glob("*.yml"):
        assert filecmp.cmp(copy, SHARED / copy.name, shallow=False), copy.name
    assert filecmp.cmp(RECORDED / "LICENSE.pypsrp", SHARED / "LICENSE.pypsrp", shallow=False)


def test_stdout_and_exit_code_0(windows: Any) -> None:
    server = windows("test_winrs_standard")
    with host() as h:
        result = h.run(SCRIPT, deadline=30)
    assert (result.stdout, result.stderr, result.exit_code) == ("hi\r\n", "", 0)
    assert server.sent == ["Create", "Command", "Receive", "Delete"]  # the script is inline
    assert result.requests == 3


def test_a_host_without_powershell_at_the_full_path_gets_scripts_over_stdin(windows: Any) -> None:
    """Windows faults a command it cannot find without cmd.exe (2147942402, recorded for a bare
    powershell.exe): the script goes again through cmd.exe and stdin, and so do later ones."""
    server = windows("test_winrs_no_cmd_shell")
    with host() as h:
        first = h.run(SCRIPT, deadline=30)
        later = h.run(SCRIPT, deadline=30)
    assert (first.stdout, first.exit_code) == ("hi\n", 0)
    first_run = ["Create", "Command", "Command", "Send", "Receive"]  # inline, then stdin
    assert server.sent == [*first_run, "Command", "Send", "Receive", "Delete"]
    assert (first.requests, later.requests) == (5, 3)


def test_stderr_and_a_non_zero_exit_code(windows: Any) -> None:
    windows("test_winrs_stderr_rc")
    with host() as h:
        result = h.run(SCRIPT, deadline=30)
    assert (result.stdout, result.stderr, result.exit_code) == ("out \r\n", "err \r\n", 1)


def test_utf8_output_stays_whole(windows: Any) -> None:
    windows("test_winrs_unicode")
    with host() as h:
        result = h.run(SCRIPT, deadline=30)
    assert (result.stdout, result.exit_code) == ("こんにちは\n", 0)


def test_stdin_is_sent_and_the_output_read(windows: Any) -> None:
    server = windows("test_winrs_send")
    with host() as h:
        result = h.run("Write-Output 'output 1'\nWrite-Output 'output 2'" + LONG, deadline=30)
    assert (result.stdout, result.exit_code) == ("output 1\noutput 2\n", 0)
    assert server.sent.count("Send") == 1  # too long for the command line: one piece of stdin


def test_operation_timeout_faults_are_waited_through(windows: Any) -> None:
    """Windows answers a Receive with nothing new within OperationTimeout with fault
    2150858793; the host asks again, on the same shell, until the command is done."""
    server = windows("test_winrs_operation_timeout")
    with host() as h:
        result = h.run(SCRIPT, deadline=120)
    assert (result.stdout, result.exit_code) == ("hi\nhi again\n", 0)
    assert server.sent == ["Create", "Command", *["Receive"] * 4, "Delete"]


def test_a_bad_command_id_is_a_fault_with_its_code_and_reason(windows: Any) -> None:
    server = windows("test_winrs_bad_cmd_id")
    h = host()
    with pytest.raises(TransportError) as caught:
        h.run(SCRIPT, deadline=30)
    error = caught.value
    assert error.kind == "fault" and error.host == "win2016"
    assert "WS-Man fault 2150858843 (w:InvalidSelectors) from https://192.168.56.11:5986/wsman" in (
        error.message
    )
    assert "request contained invalid selectors for the resource" in error.message
    # A fault comes on a working connection: the shell is kept, and deleted on close.
    h.close()
    assert server.sent == ["Create", "Command", "Receive", "Delete"]
