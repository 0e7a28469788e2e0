"""A simulated Windows host: its files, registry, services, features, and whether it is up.

Paths and registry keys are case-insensitive, as on Windows; each keeps the spelling it was
created with, because scripts report paths back and a person reads them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cmrunbook_lab.clock import dmtf
from cmrunbook_lab.labfile import HostSpec


def norm_path(path: str) -> str:
    """The comparison key of a Windows path: backslashes, no trailing separator, lower case."""
    p = path.replace("/", "\\")
    while len(p) > 3 and p.endswith("\\"):
        p = p[:-1]
    return p.lower()


def parent_of(path: str) -> str:
    p = path.replace("/", "\\").rstrip("\\")
    head, _, _ = p.rpartition("\\")
    return head if len(head) > 2 else head + "\\"


def fake_sha256(path: str, version: str | None, size: int) -> str:
    """A stable hash for a simulated binary, from its name, version and size: the same build of
    a file hashes the same wherever it lies (the ADK's bootsect.exe and ConfigMgr's copy of it)."""
    name = path.replace("/", "\\").rsplit("\\", 1)[-1].lower()
    return hashlib.sha256(f"{name}|{version}|{size}".encode()).hexdigest().upper()


def default_machine(path: str) -> str | None:
    """The PE machine of a simulated binary given without one: by its folder, else x86."""
    lowered = path.lower().replace("/", "\\")
    if not lowered.endswith((".exe", ".dll", ".sys")):
        return None
    if any(part in lowered for part in ("\\x64\\", "\\amd64\\")):
        return "x64"
    return "x86"


@dataclass
class File:
    """A file: logs and backups carry bytes; binaries carry a version, a size, a hash and the
    machine type of their PE header ("x86", "x64", "other"; None: not an executable)."""

    path: str
    data: bytearray | None = None
    version: str | None = None
    declared_size: int = 0
    sha256: str = ""
    obj: Any = None  # what Export-Clixml serialised, for Import-Clixml
    machine: str | None = None
    read_only: bool = False

    def copy_to(self, path: str) -> File:
        """What Copy-Item makes: the same bytes, version, hash, machine and attributes."""
        return File(
            path,
            data=bytearray(self.data) if self.data is not None else None,
            version=self.version,
            declared_size=self.declared_size,
            sha256=self.sha256 or fake_sha256(self.path, self.version, self.size),
            obj=self.obj,
            machine=self.machine,
            read_only=self.read_only,
        )

    def content_sha256(self) -> str:
        """SHA-256 as a hash over the file would give: of the bytes when it has any."""
        if self.data is not None:
            return hashlib.sha256(bytes(self.data)).hexdigest().upper()
        return self.sha256

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.declared_size

    @property
    def name(self) -> str:
        return self.path.replace("/", "\\").rsplit("\\", 1)[-1]


class FileSystem:
    """Files and folders of one host."""

    def __init__(self) -> None:
        self.files: dict[str, File] = {}
        self.dirs: dict[str, str] = {}

    def mkdir(self, path: str) -> None:
        p = path.replace("/", "\\").rstrip("\\")
        while p and len(p) > 2 and norm_path(p) not in self.dirs:
            self.dirs[norm_path(p)] = p
            p = parent_of(p).rstrip("\\")

    def is_dir(self, path: str) -> bool:
        key = norm_path(path)
        return key in self.dirs or (len(key) <= 3 and key[1:2] == ":")

    def exists(self, path: str) -> bool:
        return norm_path(path) in self.files or self.is_dir(path)

    def get(self, path: str) -> File | None:
        return self.files.get(norm_path(path))

    def put(self, file: File) -> File:
        self.mkdir(parent_of(file.path))
        if not file.sha256:
            file.sha256 = fake_sha256(file.path, file.version, file.size)
        self.files[norm_path(file.path)] = file
        return file

    def remove(self, path: str) -> File | None:
        return self.files.pop(norm_path(path), None)

    def rename(self, old: str, new: str) -> None:
        file = self.files.pop(norm_path(old))
        self.files.pop(norm_path(new), None)
        file.path = new
        self.files[norm_path(new)] = file

    def list(self, folder: str, pattern: str = "*") -> list[File]:
        """Files directly in `folder` whose name matches a wildcard, like Get-ChildItem -Filter."""
        base = norm_path(folder)
        out = [
            f
            for key, f in self.files.items()
            if norm_path(parent_of(key)) == base
            and fnmatch.fnmatch(f.name.lower(), pattern.lower())
        ]
        return sorted(out, key=lambda f: f.name.lower())


_HIVES = {"hkey_local_machine": "HKLM:", "hklm": "HKLM:", "hklm:": "HKLM:"}


def norm_key(key: str) -> str:
    head, _, rest = key.replace("/", "\\").partition("\\")
    hive = _HIVES.get(head.lower(), head)
    return (hive + "\\" + rest.strip("\\")).lower()


class Registry:
    """Keys and their values; a key exists even with no values (Test-Path answers for keys)."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, Any]] = {}

    def key_exists(self, key: str) -> bool:
        return norm_key(key) in self._keys

    def values(self, key: str) -> dict[str, Any] | None:
        return self._keys.get(norm_key(key))

    def set(self, key: str, name: str | None = None, value: Any = None) -> None:
        values = self._keys.setdefault(norm_key(key), {})
        if name is not None:
            values[name] = value

    def get(self, key: str, name: str) -> Any:
        values = self.values(key) or {}
        lowered = {k.lower(): v for k, v in values.items()}
        return lowered.get(name.lower())

    def delete_value(self, key: str, name: str) -> None:
        values = self.values(key)
        if values is not None:
            for k in [k for k in values if k.lower() == name.lower()]:
                del values[k]

    def delete_key(self, key: str) -> None:
        self._keys.pop(norm_key(key), None)


@dataclass
class HostStats:
    """What the engine made this host do, for assertions and benchmarks."""

    commands: int = 0
    log_reads: list[dict[str, Any]] = field(default_factory=list)


CBS_REBOOT_KEY = (
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending"
)
WU_REBOOT_KEY = (
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired"
)
SESSION_MANAGER_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager"
SMS_KEY = r"HKLM:\SOFTWARE\Microsoft\SMS"
WOW64_SOFTWARE = r"HKLM:\SOFTWARE\Wow6432Node"


#: %windir% by Windows version: upper case on the releases whose setup wrote it so.
WINDIR = {"nt4": r"C:\WINNT", "2000": r"C:\WINNT", "xp": r"C:\WINDOWS", "2003": r"C:\WINDOWS"}


class SimHost:
    """One Windows machine of the lab."""

    def __init__(
        self,
        name: str,
        spec: HostSpec,
        install_dir: str,
        boot_time: datetime,
        configmgr_32bit: bool = False,
    ) -> None:
        self.name = name
        #: A 32-bit ConfigMgr (2007) on this x64 host: its SMS keys are in the 32-bit view.
        self.sms_wow64 = configmgr_32bit and spec.os.arch == "x64"
        self.spec = spec
        self.address = spec.address or name
        self.site_code = spec.site
        self.roles = list(spec.roles)
        self.os_version = spec.os.version
        self.arch = spec.os.arch
        self.install_dir = install_dir
        self.fs = FileSystem()
        self.registry = Registry()
        self.services: dict[str, str] = {}
        self.features: set[str] = set()
        self.up = True
        self.boot_time = boot_time
        self.stats = HostStats()
        self.log_dir = spec.log_dir or (install_dir + r"\Logs")
        self.fs.mkdir(self.log_dir)
        for d in spec.dirs:
            self.fs.mkdir(d)
        for path, f in spec.files.items():
            self.fs.put(
                File(
                    path,
                    version=f.version,
                    declared_size=f.size,
                    sha256=(f.sha256 or "").upper(),
                    machine=f.arch or default_machine(path),
                    read_only=f.read_only,
                )
            )
        self.env = {
            "windir": WINDIR.get(self.os_version, r"C:\Windows"),
            "SystemRoot": WINDIR.get(self.os_version, r"C:\Windows"),
            "SystemDrive": "C:",
            "ProgramFiles": r"C:\Program Files",
        }
        for key, values in spec.registry.items():
            self.registry.set(key)
            for k, v in values.items():
                self.registry.set(key, k, v)
        if spec.pending_reboot:
            self.registry.set(CBS_REBOOT_KEY)

    @property
    def has_winrm(self) -> bool:
        return self.spec.winrm

    def expand_env(self, text: str) -> str:
        """[Environment]::ExpandEnvironmentVariables: %NAME% of a set variable, others left."""
        lowered = {k.lower(): v for k, v in self.env.items()}

        def one(m: re.Match[str]) -> str:
            return lowered.get(m[1].lower(), m[0])

        return re.sub(r"%([^%]+)%", one, text)

    def sms_key(self, key: str) -> str:
        """Where ConfigMgr's own code writes `key` (under HKLM\\SOFTWARE\\Microsoft\\SMS).

        ConfigMgr 2007 is 32-bit: on x64 WOW64 redirects its HKLM\\SOFTWARE writes to
        Wow6432Node, and the 64-bit view does not have them (SMS-PROVIDER.md 10.1: KB896459;
        "all of ConfigMgr 2007 itself is a 32-bit application"). 2012 and later are 64-bit.
        """
        if self.sms_wow64 and key.lower().startswith(SMS_KEY.lower()):
            return WOW64_SOFTWARE + key[len(r"HKLM:\SOFTWARE") :]
        return key

    def log_path(self, log_name: str) -> str:
        return self.log_dir.rstrip("\\") + "\\" + log_name

    def pending_reboot(self) -> bool:
        return (
            self.registry.key_exists(CBS_REBOOT_KEY)
            or self.registry.key_exists(WU_REBOOT_KEY)
            or self.registry.get(SESSION_MANAGER_KEY, "PendingFileRenameOperations") is not None
        )

    def request_reboot(self, how: str = "cbs") -> None:
        """Leave the marks Windows leaves when a change needs a restart."""
        if how == "cbs":
            self.registry.set(CBS_REBOOT_KEY)
        else:
            self.registry.set(
                SESSION_MANAGER_KEY,
                "PendingFileRenameOperations",
                [r"\??\C:\Windows\Temp\lab.tmp", ""],
            )

    def clear_reboot_marks(self) -> None:
        self.registry.delete_key(CBS_REBOOT_KEY)
        self.registry.delete_key(WU_REBOOT_KEY)
        self.registry.delete_value(SESSION_MANAGER_KEY, "PendingFileRenameOperations")

    def wmi_boot_time(self) -> str:
        """Win32_OperatingSystem.LastBootUpTime as WMI's DMTF datetime string (UTC host)."""
        return dmtf(self.boot_time)
