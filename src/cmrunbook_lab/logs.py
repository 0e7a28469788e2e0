"""Writing site-system logs as ConfigMgr does: CMTrace lines, the older 2007 form, MSI logs,
rollover to `.lo_`, and the line sequences a role setup or a package update produces.

Line shapes follow the real samples in shared/logs (SOURCES.md), harmless failure lines
included; where no sample exists (a multicast role's own MCSSetup.log) the catalog's
UNCONFIRMED pattern is written, so the lab shows what the tool does if the guess is right.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cmrunbook_lab.hosts import File, SimHost

CRLF = "\r\n"


def cmtrace(
    message: str,
    component: str,
    when: datetime,
    *,
    type_: int = 1,
    thread: int = 4856,
    source: str = "",
) -> str:
    """One CMTrace line; `type_` 1 info, 2 warning, 3 error. The bias is minutes (UTC: +000)."""
    time = when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}+000"
    date = when.strftime("%m-%d-%Y")
    return (
        f'<![LOG[{message}]LOG]!><time="{time}" date="{date}" component="{component}" '
        f'context="" type="{type_}" thread="{thread}" file="{source}">'
    )


def sms2007(message: str, component: str, when: datetime, *, thread: int = 4856) -> str:
    """The older server log form: `message  $$<component><date time><thread=n (0xN)>`."""
    stamp = when.strftime("%m-%d-%Y %H:%M:%S.") + f"{when.microsecond // 1000:03d}+000"
    return f"{message}  $$<{component}><{stamp}><thread={thread} (0x{thread:X})>"


def msi(message: str, when: datetime) -> str:
    """A Windows Installer verbose-log line."""
    return (
        f"MSI (s) (A8:5C) [{when.strftime('%H:%M:%S')}:{when.microsecond // 1000:03d}]: {message}"
    )


@dataclass(frozen=True)
class Line:
    """A log line before formatting: what it says and who says it."""

    message: str
    component: str
    type_: int = 1
    source: str = ""


def format_line(line: Line, fmt: str, when: datetime) -> str:
    if fmt == "sms2007":
        return sms2007(line.message, line.component, when)
    if fmt == "msi":
        return msi(line.message, when)
    return cmtrace(line.message, line.component, when, type_=line.type_, source=line.source)


def lo_name(path: str) -> str:
    """`[IO.Path]::ChangeExtension(path, '.lo_')`."""
    head, sep, tail = path.replace("/", "\\").rpartition("\\")
    stem = tail.rsplit(".", 1)[0] if "." in tail else tail
    return f"{head}{sep}{stem}.lo_"


def roll_over(host: SimHost, path: str) -> None:
    """What ConfigMgr does at the size limit: the log becomes `.lo_`, a new log starts empty."""
    if host.fs.get(path) is None:
        return
    host.fs.rename(path, lo_name(path))
    host.fs.put(File(path, data=bytearray()))


def append(host: SimHost, log_name: str, lines: list[Line], when: datetime) -> None:
    """Append lines to a host's log, rolling over first if they would pass the size limit."""
    path = host.log_path(log_name)
    fmt = host.spec.log_format.get(log_name, "cmtrace")
    text = "".join(format_line(line, fmt, when) + CRLF for line in lines).encode("utf-8")
    file = host.fs.get(path)
    if file is None or file.data is None:
        file = host.fs.put(File(path, data=bytearray()))
    if file.size and file.size + len(text) > host.spec.log_max_bytes:
        roll_over(host, path)
        file = host.fs.get(path)
        assert file is not None and file.data is not None
    assert file.data is not None
    file.data += text


# -- what a role setup writes -----------------------------------------------------------------

ROLE_MSI = {"multicast": "mcs.msi", "pxe": "pxe.msi"}
ROLE_SETUP_LOG = {"multicast": "MCSSetup.log", "pxe": "PXESetup.log"}
ROLE_MSI_LOG = {"multicast": "MCSMSI.log", "pxe": "PXEMSI.log"}
ROLE_COMPONENT = {"multicast": "SMS_MULTICAST_SERVICE_POINT", "pxe": "SMS_PXE_SERVICE_POINT"}
ROLE_PRODUCT = {
    "multicast": "ConfigMgr Multicast Service Point",
    "pxe": "ConfigMgr PXE Service Point",
}


REG_QUERY_FAILED = r"RegQueryValueExW failed for Software\Microsoft\SMS\DP, PxeInstalled"


def setup_start(role: str, operation: str) -> list[tuple[str, Line]]:
    """The first lines of a role setup: (log name, line).

    Shapes from real rolesetup and DP setup logs (shared/logs/SOURCES.md): the SUPSetup.log
    sample's "<role> Setup Started....", "Parameters: ...rolesetup.exe /install ...", and the
    harmless failure lines a setup that succeeds writes on the way (the smsdpprov.log sample's
    "RegQueryValueExW failed for ...", "Failed to open WDS service."), as error entries.
    """
    comp = ROLE_COMPONENT[role]
    verb = "Installing" if operation == "install" else "Deinstalling"
    msi_name = ROLE_MSI[role]
    args = "" if operation == "install" else " REMOVE=ALL"
    setup = ROLE_SETUP_LOG[role]
    return [
        (setup, Line(f"********************* {verb} the {comp} *********************", comp)),
        (setup, Line(f"{comp} Setup Started....", comp)),
        (setup, Line(f"Parameters: rolesetup.exe /{operation} {comp} 0", comp)),
        (setup, Line(REG_QUERY_FAILED, comp, 3)),
        (setup, Line("Failed to open WDS service.", comp, 3)),
        (setup, Line(f"Running: msiexec.exe /i {msi_name}{args} /qn /l*v", comp)),
        (ROLE_MSI_LOG[role], Line(f"=== Verbose logging started: {msi_name} ===", "MSI")),
    ]


def setup_end(
    role: str, operation: str, code: int, version: str = "4.00.6221.1000"
) -> list[tuple[str, Line]]:
    """The closing lines: the exit code (0, 3010 or a failure) in both logs."""
    comp = ROLE_COMPONENT[role]
    product = (
        f"Product Name: {ROLE_PRODUCT[role]}. Product Version: {version}. Product Language: 1033. "
        "Manufacturer: Microsoft Corporation."
    )
    if operation == "install":
        msi_line = (
            f"Windows Installer installed the product. {product} "
            f"Installation success or error status: {code}."
        )
    else:
        msi_line = (
            f"Windows Installer removed the product. {product} "
            f"Removal success or error status: {code}."
        )
    ok = code in (0, 3010)
    noun = "Installation" if operation == "install" else "Deinstallation"
    lines = [
        (ROLE_MSI_LOG[role], Line(msi_line, "MSI")),
        (
            ROLE_SETUP_LOG[role],
            Line(f"{ROLE_MSI[role]} exited with return code: {code}", comp, 1 if ok else 3),
        ),
    ]
    if code == 3010:
        lines.append(
            (ROLE_SETUP_LOG[role], Line("A restart is required to complete the setup.", comp, 2))
        )
    lines.append(
        (
            ROLE_SETUP_LOG[role],
            Line(f"{noun} was successful." if ok else f"{noun} failed.", comp, 1 if ok else 3),
        )
    )
    lines.append((ROLE_SETUP_LOG[role], Line("~RoleSetup().", comp)))  # the SUPSetup sample's end
    return lines


# -- distmgr.log ------------------------------------------------------------------------------

DISTMGR = "SMS_DISTRIBUTION_MANAGER"


def statmsg(
    msg_id: int, server: str, site: str, when: datetime, istr: list[str], package_id: str
) -> str:
    """A status message as distmgr.log shows it."""
    strings = " ".join(f'ISTR{i}="{istr[i] if i < len(istr) else ""}"' for i in range(10))
    gmt = when.strftime("%a %b %d %H:%M:%S.") + f"{when.microsecond // 1000:03d} {when.year}"
    return (
        f'STATMSG: ID={msg_id} SEV=I LEV=M SOURCE="SMS Server" COMP="{DISTMGR}" '
        f"SYS={server.upper()} SITE={site} PID=2468 TID=3512 GMTDATE={gmt} {strings} "
        f'NUMATTRS=1 AID0=400 AVAL0="{package_id}"'
    )
