"""The WS-Management vocabulary of the lab's WinRM service: SOAP envelopes, requests, faults.

Namespaces, action URIs and Windows' error codes as pywinrm 0.5.0 and a Windows host exchange
them; parsing a request envelope into a :class:`Request` and building reply envelopes and
:class:`WSManFault` bodies. Pure functions over XML: no state, no I/O.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

ACTIONS: tuple[str, ...] = ("Create", "Command", "Send", "Receive", "Signal", "Delete")

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
_SHELL_NS = NS["rsp"]
CMD_RESOURCE = f"{_SHELL_NS}/cmd"
_TRANSFER = NS["x"]
_ACTION_URIS = {
    f"{_TRANSFER}/Create": "Create",
    f"{_TRANSFER}/Delete": "Delete",
    f"{_SHELL_NS}/Command": "Command",
    f"{_SHELL_NS}/Send": "Send",
    f"{_SHELL_NS}/Receive": "Receive",
    f"{_SHELL_NS}/Signal": "Signal",
}
RESPONSE_ACTIONS = {
    "Create": f"{_TRANSFER}/CreateResponse",
    "Delete": f"{_TRANSFER}/DeleteResponse",
    "Command": f"{_SHELL_NS}/CommandResponse",
    "Send": f"{_SHELL_NS}/SendResponse",
    "Receive": f"{_SHELL_NS}/ReceiveResponse",
    "Signal": f"{_SHELL_NS}/SignalResponse",
}
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
STATE_DONE = f"{_SHELL_NS}/CommandState/Done"
STATE_RUNNING = f"{_SHELL_NS}/CommandState/Running"

# Windows error codes the lab reports (winerror.h, ERROR_WSMAN_*).
CODE_OPERATION_TIMEOUT = 2150858793
CODE_SHELL_NOT_FOUND = 2150858843
CODE_QUOTA_MAX_SHELLS = 2150859173
CODE_QUOTA_MAX_OPERATIONS = 2150859174
CODE_UNSPECIFIED = 2147500037  # E_FAIL
CODE_FILE_NOT_FOUND = 2147942402  # HRESULT of ERROR_FILE_NOT_FOUND, as WinRS reports it
CODE_FILENAME_TOO_LONG = 206  # ERROR_FILENAME_EXCED_RANGE, CreateProcess past 32,767 chars

CMD_LINE_LIMIT = 8191  # cmd.exe
CREATE_PROCESS_LIMIT = 32767  # WINRS_SKIP_CMD_SHELL=TRUE goes straight to CreateProcess
TIMED_OUT_TEXT = (
    "The WS-Management service cannot complete the operation within the time specified in "
    "OperationTimeout.  "
)


class WSManFault(Exception):
    """A SOAP fault as Windows' WinRM service sends it (always with HTTP status 500)."""

    def __init__(
        self, subcode: str, reason: str, code: int | None = None, sender: bool = False
    ) -> None:
        super().__init__(reason)
        self.subcode = subcode
        self.reason = reason
        self.code = code
        self.sender = sender

    def body(self, machine: str) -> str:
        """The ``s:Fault`` element."""
        code_attr = f" Code={quoteattr(str(self.code))}" if self.code is not None else ""
        return (
            f"<s:Fault><s:Code><s:Value>s:{'Sender' if self.sender else 'Receiver'}</s:Value>"
            f"<s:Subcode><s:Value>{escape(self.subcode)}</s:Value></s:Subcode></s:Code>"
            f'<s:Reason><s:Text xml:lang="en-US">{escape(self.reason)}</s:Text></s:Reason>'
            f"<s:Detail><f:WSManFault{code_attr} Machine={quoteattr(machine)}>"
            f"<f:Message>{escape(self.reason)}</f:Message></f:WSManFault></s:Detail></s:Fault>"
        )


def envelope(action: str, relates_to: str | None, body: str) -> str:
    """A reply envelope as Windows sends it: every namespace declared, a fresh MessageID."""
    namespaces = " ".join(f"xmlns:{prefix}={quoteattr(uri)}" for prefix, uri in NS.items())
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    return (
        f'<s:Envelope xml:lang="en-US" {namespaces}><s:Header>'
        f"<a:Action>{escape(action)}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"{relates}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


_DURATION = re.compile(r"^PT(?:(\d+(?:\.\d*)?)H)?(?:(\d+(?:\.\d*)?)M)?(?:(\d+(?:\.\d*)?)S)?$")


def _parse_duration(text: str | None, default: float) -> float:
    """Seconds in an xs:duration such as ``PT60.000S``; ``default`` if absent or unreadable."""
    match = _DURATION.match((text or "").strip())
    if not text or not match:
        return default
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def codec(codepage: int) -> str:
    """The Python codec of a shell's WINRS_CODEPAGE (65001 is UTF-8)."""
    return "utf-8" if codepage == 65001 else f"cp{codepage}"


@dataclass
class Request:
    """One WS-Man request, reduced to what the shell operations read from it."""

    action: str  # one of ACTIONS
    message_id: str
    resource_uri: str
    shell_id: str | None
    options: dict[str, str]
    operation_timeout: float
    max_envelope: int
    body: ET.Element


def parse_request(data: bytes) -> Request:
    """The request in a plain SOAP envelope; WSManFault (a Sender fault) if it is not one."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WSManFault(
            "w:SchemaValidationError", f"The request is not XML: {exc}", sender=True
        ) from exc
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise WSManFault("w:SchemaValidationError", "The SOAP envelope is incomplete.", sender=True)
    action_uri = (header.findtext("a:Action", "", NS) or "").strip()
    action = _ACTION_URIS.get(action_uri)
    if action is None:
        raise WSManFault(
            "a:ActionNotSupported",
            f"The action {action_uri!r} is not supported by the service.",
            sender=True,
        )
    selector = header.find("w:SelectorSet/w:Selector[@Name='ShellId']", NS)
    options = {
        option.get("Name", ""): (option.text or "").strip()
        for option in header.findall("w:OptionSet/w:Option", NS)
    }
    try:
        max_envelope = int(header.findtext("w:MaxEnvelopeSize", "153600", NS) or 153600)
    except ValueError:
        max_envelope = 153600
    return Request(
        action=action,
        message_id=(header.findtext("a:MessageID", "", NS) or "").strip(),
        resource_uri=(header.findtext("w:ResourceURI", "", NS) or "").strip(),
        shell_id=selector.text.strip() if selector is not None and selector.text else None,
        options=options,
        operation_timeout=_parse_duration(header.findtext("w:OperationTimeout", None, NS), 60.0),
        max_envelope=max_envelope,
        body=body,
    )


def quota_fault(action: str) -> WSManFault:
    """Windows' w:QuotaLimit fault: too many shells on Create, too many operations otherwise."""
    if action == "Create":
        return WSManFault(
            "w:QuotaLimit",
            "The WS-Management service cannot process the request. This user is allowed a "
            "maximum number of 30 concurrent shells, which has been exceeded. Close existing "
            "shells or raise the quota for this user.",
            CODE_QUOTA_MAX_SHELLS,
        )
    return WSManFault(
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. This user is allowed a maximum "
        "number of 25 concurrent operations, which has been exceeded. Close existing operations "
        "for this user, or raise the quota for this user.",
        CODE_QUOTA_MAX_OPERATIONS,
    )
