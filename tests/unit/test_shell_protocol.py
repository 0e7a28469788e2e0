"""ShellProtocol sends the envelopes pywinrm would send, and reads replies as pywinrm does.

Each shell operation is run twice, once through pywinrm's own Protocol and once through
ShellProtocol, with the message id fixed and a canned WinRS reply; the requests must be the same
XML (canonical form) and the results equal. The wire tests run the same class against the lab.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

import pytest
from winrm.protocol import Protocol

from cmrunbook.remote.winrm.shell import ShellProtocol, is_create

MESSAGE_ID = uuid.UUID("0f5e6a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
REPLY = (
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
    ' xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
    ' xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"'
    f' xmlns:rsp="{SHELL_NS}"><s:Header><a:RelatesTo>uuid:{MESSAGE_ID}</a:RelatesTo></s:Header>'
    "<s:Body>{body}</s:Body></s:Envelope>"
)
REPLIES = {
    "Create": '<w:SelectorSet><w:Selector Name="ShellId">SHELL-1</w:Selector></w:SelectorSet>',
    "Command": "<rsp:CommandResponse><rsp:CommandId>CMD-1</rsp:CommandId></rsp:CommandResponse>",
    "Receive": (
        "<rsp:ReceiveResponse>"
        f'<rsp:Stream Name="stdout" CommandId="CMD-1">{base64.b64encode(b"out ").decode()}'
        "</rsp:Stream>"
        f'<rsp:Stream Name="stdout" CommandId="CMD-1">{base64.b64encode(b"more").decode()}'
        "</rsp:Stream>"
        f'<rsp:Stream Name="stderr" CommandId="CMD-1">{base64.b64encode(b"err").decode()}'
        "</rsp:Stream>"
        '<rsp:Stream Name="stdout" CommandId="CMD-1" End="true"></rsp:Stream>'
        f'<rsp:CommandState CommandId="CMD-1" State="{SHELL_NS}/CommandState/Done">'
        "<rsp:ExitCode>3</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>"
    ),
    "Running": (
        f'<rsp:ReceiveResponse><rsp:CommandState CommandId="CMD-1" State="{SHELL_NS}'
        '/CommandState/Running"/></rsp:ReceiveResponse>'
    ),
}


def exchange(
    cls: type[Protocol], call: Callable[[Protocol], Any], reply: str, monkeypatch: Any
) -> tuple[list[str], Any]:
    """(the canonical XML of each request sent, what the call returned)."""
    protocol = cls("http://127.0.0.1:5985/wsman", transport="ntlm", username="u", password="p")
    sent: list[str] = []

    def send(message: str) -> bytes:
        sent.append(ET.canonicalize(message, strip_text=True))
        return REPLY.format(body=REPLIES.get(reply, "")).encode()

    monkeypatch.setattr(protocol, "send_message", send)
    monkeypatch.setattr(protocol.transport, "close_session", lambda: None)
    monkeypatch.setattr(uuid, "uuid4", lambda: MESSAGE_ID)
    return sent, call(protocol)


CALLS: dict[str, tuple[Callable[[Protocol], Any], str]] = {
    "open_shell": (lambda p: p.open_shell(codepage=65001), "Create"),
    "run_command": (
        lambda p: p.run_command(
            "SHELL-1", "powershell.exe", ["-NoProfile", "-Command", "'a<b&c'"], False
        ),
        "Command",
    ),
    "send_command_input": (
        lambda p: p.send_command_input("SHELL-1", "CMD-1", b"Write-Output 1\n", end=True),
        "Send",
    ),
    "receive_done": (lambda p: p.get_command_output_raw("SHELL-1", "CMD-1"), "Receive"),
    "receive_running": (lambda p: p.get_command_output_raw("SHELL-1", "CMD-1"), "Running"),
    "cleanup_command": (lambda p: p.cleanup_command("SHELL-1", "CMD-1"), "Signal"),
    "close_shell": (lambda p: p.close_shell("SHELL-1"), "Delete"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_same_request_and_result_as_pywinrm(name: str, monkeypatch: Any) -> None:
    call, reply = CALLS[name]
    expected = exchange(Protocol, call, reply, monkeypatch)
    assert exchange(ShellProtocol, call, reply, monkeypatch) == expected
    assert len(expected[0]) == 1


def test_a_reply_to_another_request_is_refused(monkeypatch: Any) -> None:
    protocol = ShellProtocol(
        "http://127.0.0.1:5985/wsman", transport="ntlm", username="u", password="p"
    )
    other = REPLY.format(body="").replace(str(MESSAGE_ID), str(uuid.UUID(int=1)))
    monkeypatch.setattr(protocol, "send_message", lambda message: other.encode())
    with pytest.raises(ValueError, match="relates to another request"):
        protocol.cleanup_command("SHELL-1", "CMD-1")


def test_only_the_create_may_ride_ntlms_last_leg() -> None:
    """The Create is the one message a host may get twice without harm; a script that spells
    the Create's action element out is escaped in its Command, never mistaken for one."""
    protocol = ShellProtocol("http://127.0.0.1:5985/wsman", username="u", password="p")
    action = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
    sneaky = f'<a:Action mustUnderstand="true">{action}</a:Action>'
    body = f"<rsp:CommandLine><rsp:Command>{escape(sneaky)}</rsp:Command></rsp:CommandLine>"
    assert is_create(protocol.envelope("create", "<rsp:Shell/>").encode())
    assert not is_create(protocol.envelope("command", body, shell_id="S").encode())
    for action_name in ("send", "receive", "signal", "delete"):
        assert not is_create(protocol.envelope(action_name, "", shell_id="S").encode())
