"""pywinrm's WinRS shell messages, built from string templates instead of xmltodict.

:class:`ShellProtocol` is pywinrm's :class:`~winrm.protocol.Protocol` (same transport, NTLM,
message encryption and fault handling) with the six shell operations the engine uses written
out as templates. pywinrm builds each envelope as nested dicts and serialises them with
xmltodict, which validates every name and escapes through SAX: in a 1,000-host fan-out that was
a twentieth of the client's CPU, for envelopes that differ only in a few ids. The envelopes are
the same XML as pywinrm's (a test compares their canonical forms), and the replies are read the
same way.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

from winrm.protocol import Protocol, xmlns

_SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
_ACTIONS = {
    "create": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
    "delete": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
    "command": f"{_SHELL_NS}/Command",
    "send": f"{_SHELL_NS}/Send",
    "receive": f"{_SHELL_NS}/Receive",
    "signal": f"{_SHELL_NS}/Signal",
}
_ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    f' xmlns:env="{xmlns["soapenv"]}" xmlns:a="{xmlns["soapaddr"]}"'
    ' xmlns:b="http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd"'
    ' xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"'
    ' xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer"'
    ' xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"'
    ' xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"'
    f' xmlns:rsp="{_SHELL_NS}" xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">'
    "<env:Header><a:To>http://windows-host:5985/wsman</a:To><a:ReplyTo>"
    '<a:Address mustUnderstand="true">'
    "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>"
    '<w:MaxEnvelopeSize mustUnderstand="true">153600</w:MaxEnvelopeSize>'
    "<a:MessageID>uuid:{message_id}</a:MessageID>"
    '<w:Locale mustUnderstand="false" xml:lang="en-US"></w:Locale>'
    '<p:DataLocale mustUnderstand="false" xml:lang="en-US"></p:DataLocale>'
    "<w:OperationTimeout>PT{timeout}S</w:OperationTimeout>"
    '<w:ResourceURI mustUnderstand="true">'
    f"{_SHELL_NS}/cmd</w:ResourceURI>"
    '<a:Action mustUnderstand="true">{action}</a:Action>'
    "{selector}{options}</env:Header><env:Body>{body}</env:Body></env:Envelope>"
)


_CREATE = f'<a:Action mustUnderstand="true">{_ACTIONS["create"]}</a:Action>'.encode()


def is_create(message: bytes) -> bool:
    """True for the shell Create envelope :class:`ShellProtocol` builds.

    The one message a host may receive twice without harm (the second shell goes unused and
    the host ends it after its idle timeout), so the one that may ride NTLM's last leg
    (:class:`~cmrunbook.remote.winrm.ntlm_http.LastLeg`). Every value an envelope carries is
    XML-escaped or base64, so no other message can contain this element.
    """
    return _CREATE in message


def _options(options: dict[str, str]) -> str:
    items = "".join(
        f"<w:Option Name={quoteattr(k)}>{escape(v)}</w:Option>" for k, v in options.items()
    )
    return f"<w:OptionSet>{items}</w:OptionSet>"


def _first(root: ET.Element, suffix: str) -> ET.Element:
    """The first such descendant; a reply without one is not the reply WinRS sends."""
    for node in root.iter():
        if node.tag.endswith(suffix):
            return node
    raise ValueError(f"the reply has no {suffix} element")


class ShellProtocol(Protocol):
    """A pywinrm Protocol whose shell operations send template-built envelopes."""

    def envelope(
        self,
        action: str,
        body: str,
        *,
        shell_id: str | None = None,
        options: dict[str, str] | None = None,
        message_id: uuid.UUID | None = None,
    ) -> str:
        """One request envelope; `action` is a key of the shell actions (create, send, ...)."""
        selector = (
            f'<w:SelectorSet><w:Selector Name="ShellId">{escape(shell_id)}</w:Selector>'
            "</w:SelectorSet>"
            if shell_id
            else ""
        )
        return _ENVELOPE.format(
            message_id=message_id or uuid.uuid4(),
            timeout=int(self.operation_timeout_sec),
            action=_ACTIONS[action],
            selector=selector,
            options=_options(options) if options else "",
            body=body,
        )

    def _reply(self, envelope: str) -> ET.Element:
        """Send one envelope; its reply, parsed (faults are raised by send_message)."""
        return ET.fromstring(self.send_message(envelope))

    def _acknowledged(self, action: str, body: str, shell_id: str) -> None:
        """Send, and check that the reply relates to this request (as pywinrm asserts)."""
        message_id = uuid.uuid4()
        root = self._reply(self.envelope(action, body, shell_id=shell_id, message_id=message_id))
        relates_to = _first(root, "RelatesTo").text or ""
        if uuid.UUID(relates_to.replace("uuid:", "")) != message_id:
            raise ValueError(f"the reply to {action} relates to another request")

    def open_shell(  # type: ignore[override]
        self, *, codepage: int = 437, noprofile: bool = False
    ) -> str:
        body = (
            "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams>"
            "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
        )
        options = {"WINRS_NOPROFILE": str(noprofile).upper(), "WINRS_CODEPAGE": str(codepage)}
        root = self._reply(self.envelope("create", body, options=options))
        for node in root.iter():
            if node.get("Name") == "ShellId":
                return str(node.text)
        raise ValueError("the reply to Create has no ShellId")

    def run_command(
        self,
        shell_id: str,
        command: str,
        arguments: Iterable[str | bytes] = (),
        console_mode_stdin: bool = True,
        skip_cmd_shell: bool = False,
    ) -> str:
        args = " ".join(a if isinstance(a, str) else a.decode("utf-8") for a in arguments)
        body = (
            f"<rsp:CommandLine><rsp:Command>{escape(command)}</rsp:Command>"
            + (f"<rsp:Arguments>{escape(args)}</rsp:Arguments>" if args else "")
            + "</rsp:CommandLine>"
        )
        options = {
            "WINRS_CONSOLEMODE_STDIN": str(console_mode_stdin).upper(),
            "WINRS_SKIP_CMD_SHELL": str(skip_cmd_shell).upper(),
        }
        root = self._reply(self.envelope("command", body, shell_id=shell_id, options=options))
        return str(_first(root, "CommandId").text)

    def send_command_input(
        self, shell_id: str, command_id: str, stdin_input: str | bytes, end: bool = False
    ) -> None:
        data = stdin_input.encode("437") if isinstance(stdin_input, str) else stdin_input
        body = (
            f'<rsp:Send><rsp:Stream CommandId={quoteattr(command_id)} Name="stdin"'
            f' End="{str(end).lower()}" xmlns:rsp="{_SHELL_NS}">'
            f"{base64.b64encode(data).decode('ascii')}</rsp:Stream></rsp:Send>"
        )
        self.send_message(self.envelope("send", body, shell_id=shell_id))

    def get_command_output_raw(
        self, shell_id: str, command_id: str
    ) -> tuple[bytes, bytes, int, bool]:
        body = (
            f"<rsp:Receive><rsp:DesiredStream CommandId={quoteattr(command_id)}>"
            "stdout stderr</rsp:DesiredStream></rsp:Receive>"
        )
        root = self._reply(self.envelope("receive", body, shell_id=shell_id))
        # One pass over the reply for the streams, the state and the exit code (as pywinrm
        # reads them: by tag suffix, any element's State attribute).
        streams: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        done = False
        exit_text: str | None = None
        found_exit = False
        for node in root.iter():
            tag = node.tag
            if tag.endswith("Stream"):
                chunks = streams.get(node.get("Name", ""))
                if chunks is not None and node.text:
                    chunks.append(base64.b64decode(node.text))
            elif tag.endswith("ExitCode") and not found_exit:
                found_exit, exit_text = True, node.text
            if not done and node.get("State", "").endswith("CommandState/Done"):
                done = True
        if done and not found_exit:
            raise ValueError("the reply has no ExitCode element")
        exit_code = int(exit_text or -1) if done else -1
        return b"".join(streams["stdout"]), b"".join(streams["stderr"]), exit_code, done

    def cleanup_command(self, shell_id: str, command_id: str) -> None:
        body = (
            f"<rsp:Signal CommandId={quoteattr(command_id)}>"
            f"<rsp:Code>{_SHELL_NS}/signal/terminate</rsp:Code></rsp:Signal>"
        )
        self._acknowledged("signal", body, shell_id)

    def close_shell(self, shell_id: str, close_session: bool = True) -> None:
        try:
            self._acknowledged("delete", "", shell_id)
        finally:
            if close_session:
                self.transport.close_session()
