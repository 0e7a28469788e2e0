"""What the file helpers of templates/lib (files, version, backup) do, over a host's files.

The lab cannot run the helpers, so each is done here as its PowerShell does it, and only when
the script really defines it that way (`require`): a helper that reads the version from another
field, hashes another way or tests another PE machine code is not taken for the real one. The
errors are the .NET and provider messages PowerShell shows for a missing file or folder.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from cmrunbook_lab.hosts import File, FileSystem, parent_of
from cmrunbook_lab.scripts import PSError, Script, Unrecognized

#: Lines of lib/files.ps1.j2 whose behaviour the lab reproduces.
FILES_LIB = {
    "Get-CmrbFileVersion": "return New-Object System.Version ($info.FileMajorPart, "
    "$info.FileMinorPart, $info.FileBuildPart, $info.FilePrivatePart)",
    "Get-CmrbSha256": "$bytes = $algorithm.ComputeHash($stream)",
    "Get-CmrbPeInfo": "if ($machineCode -eq 0x014C) { $machine = 'x86' } "
    "elseif ($machineCode -eq 0x8664) { $machine = 'x64' }",
    "Expand-CmrbPath": "return $Path.Replace('{install_dir}', $InstallDir)",
    "Resolve-CmrbCandidates": "if (Test-Path -LiteralPath $path -PathType Leaf) "
    "{ $found += $path }",
}
#: Lines of lib/version.ps1.j2.
VERSION_LIB = {
    "ConvertTo-CmrbVersion": r"if ($Text -match '^\s*(\d+(\s*[.,]\s*\d+){1,3})')",
    "Read-CmrbFileVersion": "$version = ConvertTo-CmrbVersion ([string]$info.FileVersion)",
    "Test-CmrbVersionAtLeast": "return ([version]$Version -ge $Required)",
    "Test-CmrbFileVersion": "if (-not (Test-Path -LiteralPath $Path -PathType Leaf))",
    "Expand-CmrbParamPath": "return [Environment]::ExpandEnvironmentVariables($expanded)",
}
#: Lines of lib/backup.ps1.j2.
BACKUP_LIB = {
    "Get-CmrbBackupName": "return ($Path -replace '[:\\\\/ ]+', '_').Trim('_')",
    "Read-CmrbManifest": "return @(Import-Csv -LiteralPath $file)",
    "Write-CmrbManifest": "Export-Csv -LiteralPath $file -NoTypeInformation -Encoding UTF8",
    "Find-CmrbManifestEntry": "if ([string]$row.Path -eq $Path)",
    "Test-CmrbBackupEntry": "if ($hash -ne ([string]$Entry.Sha256).ToUpperInvariant())",
    "Set-CmrbWritable": "if ($item.IsReadOnly) { $item.IsReadOnly = $false }",
}
MACHINE_CODES = {"x86": 0x014C, "x64": 0x8664, "other": 0x01C4}
MANIFEST_FIELDS = ["Path", "BackupFile", "Sha256", "Version", "Length", "BackedUpUtc"]


def require(s: Script, lib: dict[str, str], *names: str) -> None:
    """The script defines each named helper as the lab knows it, or the lab cannot follow it."""
    for name in names:
        if not s.has(f"function {name}", lib[name]):
            raise Unrecognized(f"{name} is not the helper the lab simulates")


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """ConvertTo-CmrbVersion: the leading dotted (or comma) number, as [version] parts."""
    if text is None:
        return None
    m = re.match(r"^\s*(\d+(\s*[.,]\s*\d+){1,3})", text)
    if m is None:
        return None
    return tuple(int(p) for p in re.split(r"[.,]", re.sub(r"\s", "", m[1])))


def vstr(parts: tuple[int, ...]) -> str:
    """[version].ToString()."""
    return ".".join(str(p) for p in parts)


def parts_version(file: File) -> tuple[int, int, int, int]:
    """Get-CmrbFileVersion: the four binary version fields (0.0.0.0 for a file without any)."""
    got = version_tuple(file.version) or ()
    return tuple([*got, 0, 0, 0, 0][:4])  # type: ignore[return-value]


def leaf(fs: FileSystem, path: str) -> File | None:
    """Test-Path -LiteralPath -PathType Leaf."""
    return fs.get(path) if path else None


def get_item(fs: FileSystem, path: str) -> File:
    file = fs.get(path)
    if file is None:
        raise PSError(f"Cannot find path '{path}' because it does not exist.")
    return file


def open_stream(fs: FileSystem, path: str) -> File:
    """New-Object System.IO.FileStream (path, Open, Read, ...)."""
    if not path:
        raise PSError(
            'Exception calling ".ctor" with "4" argument(s): "Empty path name is not legal."'
        )
    file = fs.get(path)
    if file is None:
        where = "file" if fs.is_dir(parent_of(path)) else "a part of the path"
        raise PSError(
            f'Exception calling ".ctor" with "4" argument(s): "Could not find {where} \'{path}\'."'
        )
    return file


def sha256(fs: FileSystem, path: str) -> str:
    """Get-CmrbSha256."""
    return open_stream(fs, path).content_sha256()


def pe_info(fs: FileSystem, path: str) -> dict[str, str]:
    """Get-CmrbPeInfo: machine and its code; a file that is not a program has no MZ header."""
    file = fs.get(path)
    if file is None:
        raise PSError(
            'Exception calling "ReadAllBytes" with "1" argument(s): '
            f"\"Could not find file '{path}'.\""
        )
    if file.machine is None:
        raise PSError(f"{path} is not a Windows executable (no MZ header)")
    code = MACHINE_CODES.get(file.machine, 0x01C4)
    machine = file.machine if file.machine in ("x86", "x64") else "other"
    return {"machine": machine, "machine_code": f"0x{code:04X}", "subsystem_version": "5.1"}


def file_facts(fs: FileSystem, path: str) -> dict[str, Any]:
    """Get-CmrbFileFacts."""
    file = get_item(fs, path)
    pe = pe_info(fs, path)
    return {
        "path": path,
        "version": vstr(parts_version(file)),
        "sha256": sha256(fs, path),
        "length": file.size,
        "machine": pe["machine"],
        "subsystem_version": pe["subsystem_version"],
    }


def expand_path(candidate: object, install_dir: str) -> str:
    """Expand-CmrbPath: a configured path with {install_dir} filled in."""
    return str(candidate).replace("{install_dir}", install_dir)


def resolve_candidates(fs: FileSystem, paths: list[Any], install_dir: str) -> dict[str, list[str]]:
    """Resolve-CmrbCandidates (with Expand-CmrbPath: {install_dir} only)."""
    found: list[str] = []
    absent: list[str] = []
    for candidate in paths:
        path = expand_path(candidate, install_dir)
        (found if leaf(fs, path) is not None else absent).append(path)
    return {"found": found, "absent": absent}


def test_file_version(fs: FileSystem, path: str, required: tuple[int, ...]) -> dict[str, Any]:
    """Test-CmrbFileVersion: status ok / older / missing / unreadable."""
    out: dict[str, Any] = {
        "path": path,
        "version": None,
        "required": vstr(required),
        "status": "missing",
    }
    file = leaf(fs, path)
    if file is None:
        return out
    version = version_tuple(file.version)  # FileVersion text, then the binary fields
    if version is None and parts_version(file)[0] > 0:
        version = parts_version(file)
    if version is None:
        out["status"] = "unreadable"
        return out
    out["version"] = vstr(version)
    out["status"] = "ok" if version_key(version) >= version_key(required) else "older"
    return out


def version_key(v: tuple[int, ...]) -> tuple[int, ...]:
    """What [version] compares: undefined components count as -1, so 1.2 < 1.2.0."""
    return tuple(list(v) + [-1] * (4 - len(v)))


def text_key(text: str | None) -> tuple[int, ...]:
    """The [version] of a version text as a comparison key; an unreadable text sorts first."""
    return version_key(version_tuple(text) or ())


def at_least(version: str | None, required: tuple[int, ...]) -> bool:
    """Test-CmrbVersionAtLeast."""
    got = version_tuple(version)
    return got is not None and version_key(got) >= version_key(required)


# -- backups ----------------------------------------------------------------------------------


def join(folder: str, name: str) -> str:
    """Join-Path."""
    return folder.rstrip("\\") + "\\" + name.lstrip("\\")


def backup_name(path: str) -> str:
    """Get-CmrbBackupName."""
    return re.sub(r"[:\\/ ]+", "_", path).strip("_")


def read_manifest(fs: FileSystem, backup_dir: str) -> list[dict[str, str]]:
    """Read-CmrbManifest: Import-Csv of manifest.csv, or nothing."""
    file = fs.get(join(backup_dir, "manifest.csv"))
    if file is None:
        return []
    text = bytes(file.data or b"").decode("utf-8-sig")
    return [dict(row) for row in csv.DictReader(io.StringIO(text))]


def write_manifest(fs: FileSystem, backup_dir: str, rows: list[dict[str, str]]) -> None:
    """Write-CmrbManifest: Export-Csv -NoTypeInformation -Encoding UTF8 (BOM, fields quoted)."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, MANIFEST_FIELDS, quoting=csv.QUOTE_ALL, lineterminator="\r\n", extrasaction="ignore"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: str(row.get(k, "")) for k in MANIFEST_FIELDS})
    path = join(backup_dir, "manifest.csv")
    old = fs.get(path)
    if old is not None and old.read_only:
        raise PSError(f"Access to the path '{path}' is denied.")
    fs.put(File(path, data=bytearray(("\ufeff" + buf.getvalue()).encode("utf-8"))))


def entry_problem(fs: FileSystem, entry: dict[str, str], backup_dir: str) -> str | None:
    """Test-CmrbBackupEntry."""
    file = join(backup_dir, str(entry.get("BackupFile") or ""))
    if fs.get(file) is None:
        return f"backup {file} of {entry.get('Path')} is missing"
    digest = sha256(fs, file)
    if digest != str(entry.get("Sha256") or "").upper():
        return (
            f"backup {file} of {entry.get('Path')} has SHA-256 {digest}, "
            f"the manifest says {entry.get('Sha256')}"
        )
    return None


def find_entry(manifest: list[dict[str, str]], path: str) -> dict[str, str] | None:
    """Find-CmrbManifestEntry: PowerShell's -eq on strings ignores case."""
    return next((r for r in manifest if str(r.get("Path", "")).lower() == path.lower()), None)


def copy_item(fs: FileSystem, src: str, dst: str, force: bool) -> None:
    """Copy-Item -LiteralPath src -Destination dst [-Force]: attributes travel with the copy."""
    source = fs.get(src)
    if source is None:
        raise PSError(f"Cannot find path '{src}' because it does not exist.")
    if not fs.is_dir(parent_of(dst)):
        raise PSError(f"Could not find a part of the path '{dst}'.")
    old = fs.get(dst)
    if old is not None and old.read_only and not force:
        raise PSError(f"Access to the path '{dst}' is denied.")
    fs.put(source.copy_to(dst))


def set_writable(fs: FileSystem, path: str) -> None:
    """Set-CmrbWritable."""
    file = fs.get(path)
    if file is not None:
        file.read_only = False
