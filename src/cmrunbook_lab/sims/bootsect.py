"""The bootsect-downgrade runbook's scripts (templates/bootsect/) in the lab.

Files are the host's simulated binaries (version, size, SHA-256, PE machine, read-only flag):
a copy carries all of them, so the hashes the scripts compare are the ones the copies really
have, and a replacement that is too new, of the wrong architecture or missing is refused as the
script refuses it. The file operations inside the loops (Set-CmrbWritable, Copy-Item, the
read-only flag) are applied in the order the script has them.
"""

from __future__ import annotations

import re
from typing import Any

from cmrunbook_lab import psfiles as pf
from cmrunbook_lab.hosts import FileSystem
from cmrunbook_lab.psexpr import block_at
from cmrunbook_lab.scripts import Context, Operations, PSError, Script, Unrecognized

OPERATIONS = Operations()

_REPLACEMENT_LIB = (
    "if ([version]$facts.version -ge [version]$MaxVersion)",
    "if ($facts.machine -ne $Arch)",
    "$facts.sha256 -ne $Sha256.ToUpperInvariant()",
    "if ([string]$copy -eq $Path)",
)


def _check_replacement(ctx: Context, copies: list[str]) -> dict[str, Any]:
    """Test-CmrbBootsectReplacement."""
    s, fs = ctx.script, ctx.host.fs
    if not s.has("function Test-CmrbBootsectReplacement", *_REPLACEMENT_LIB):
        raise Unrecognized("Test-CmrbBootsectReplacement is not the check the lab simulates")
    pf.require(s, pf.FILES_LIB, "Get-CmrbFileVersion", "Get-CmrbSha256", "Get-CmrbPeInfo")
    path = str(s.input("replacementPath") or "")
    max_version = pf.version_tuple(str(s.input("maxVersion"))) or (0,)
    expected = str(s.input("expectedSha256") or "")
    arch = str(s.input("targetArch"))
    problems: list[str] = []
    facts = None
    if not path:
        problems.append(
            "replacement_path is required: copy bootsect.exe from an earlier WinPE (Windows AIK "
            "3.1 / Windows 7 SP1, or Windows 8.0 media, \\boot\\bootsect.exe) onto the site server "
            "and run with --set replacement_path=<that file>."
        )
    elif pf.leaf(fs, path) is None:
        problems.append(f"replacement_path {path} does not exist on this site server.")
    else:
        facts = pf.file_facts(fs, path)
        if pf.text_key(facts["version"]) >= pf.version_key(max_version):
            problems.append(
                f"the replacement {path} is version {facts['version']}; it must be older than "
                f"{s.input('maxVersion')} (the ADK 8.1 bootsect.exe is the one that fails on "
                "Windows XP)."
            )
        if facts["machine"] != arch:
            code = pf.pe_info(fs, path)["machine_code"]
            problems.append(
                f"the replacement {path} is a {facts['machine']} ({code}) executable; the "
                f"Windows XP targets are {arch}."
            )
        if expected and facts["sha256"] != expected.upper():
            problems.append(
                f"the replacement {path} has SHA-256 {facts['sha256']}, not the expected "
                f"{expected.upper()} (replacement_sha256)."
            )
        problems += [
            f"the replacement {path} is one of the bootsect.exe copies to be replaced: put it in "
            "a folder of its own."
            for copy in copies
            if copy.lower() == path.lower()
        ]
    return {"problems": problems, "facts": facts}


def _candidates(ctx: Context) -> dict[str, list[str]]:
    s = ctx.script
    pf.require(s, pf.FILES_LIB, "Expand-CmrbPath", "Resolve-CmrbCandidates")
    return pf.resolve_candidates(
        ctx.host.fs, list(s.input("paths")), str(s.input("installDir") or "")
    )


def _none_found(copies: dict[str, list[str]], hint: str) -> PSError:
    return PSError(f"No bootsect.exe found in any of: {'; '.join(copies['absent'])} ({hint})")


@OPERATIONS.add(
    "bootsect/check_replacement",
    lambda s: (
        s.has("$check = Test-CmrbBootsectReplacement -Path $replacementPath")
        and s.has("'The replacement bootsect.exe is refused: '")
        and not s.has("Copy-Item")
    ),
)
def check_replacement(ctx: Context) -> None:
    copies = _candidates(ctx)
    check = _check_replacement(ctx, copies["found"])
    s = ctx.script
    ctx.result.data = {
        "replacement": check["facts"],
        "max_version": s.input("maxVersion"),
        "sha256_expected": s.input("expectedSha256"),
    }
    if check["problems"]:
        ctx.result.ok = False
        ctx.result.message = "The replacement bootsect.exe is refused: " + " ".join(
            check["problems"]
        )
    else:
        f = check["facts"]
        ctx.result.message = (
            f"Replacement {s.input('replacementPath')} is bootsect.exe {f['version']} "
            f"({f['machine']}), SHA-256 {f['sha256']}."
        )


@OPERATIONS.add("bootsect/locate", lambda s: s.has("$facts.is_replacement = ", "$copies.found"))
def locate(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    copies = _candidates(ctx)
    replacement = str(s.input("replacementPath") or "")
    rhash = pf.sha256(fs, replacement) if replacement and pf.leaf(fs, replacement) else ""
    found = []
    for path in copies["found"]:
        facts = pf.file_facts(fs, path)
        facts["is_replacement"] = bool(rhash) and facts["sha256"] == rhash
        found.append(facts)
    ctx.result.data = {"copies": found, "not_found": copies["absent"]}
    if not found:
        raise _none_found(copies, "set bootsect_paths to the copies this site uses")
    already = sum(1 for f in found if f["is_replacement"])
    ctx.result.message = (
        f"{len(found)} bootsect.exe copy(ies) found, {already} already the replacement; "
        f"not present: {'; '.join(copies['absent'])}"
    )


def _backup_libs(s: Script) -> None:
    pf.require(s, pf.FILES_LIB, "Get-CmrbSha256")
    pf.require(
        s, pf.BACKUP_LIB, "Read-CmrbManifest", "Find-CmrbManifestEntry", "Test-CmrbBackupEntry"
    )


@OPERATIONS.add(
    "bootsect/backup",
    lambda s: s.has("$name = Get-CmrbBackupName -Path $path", "Write-CmrbManifest -BackupDir"),
)
def backup(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    _backup_libs(s)
    pf.require(s, pf.BACKUP_LIB, "Get-CmrbBackupName", "Write-CmrbManifest")
    pf.require(s, pf.FILES_LIB, "Get-CmrbFileVersion", "Get-CmrbPeInfo")
    copies = _candidates(ctx)
    backup_dir = str(s.input("backupDir"))
    if not copies["found"]:
        raise _none_found(copies, "set bootsect_paths")
    if not fs.is_dir(backup_dir) and s.has("New-Item -ItemType Directory -Path $backupDir"):
        fs.mkdir(backup_dir)
    replacement_hash = pf.sha256(fs, str(s.input("replacementPath") or ""))
    manifest = pf.read_manifest(fs, backup_dir)
    rows = list(manifest)
    report = []
    for path in copies["found"]:
        entry = pf.find_entry(manifest, path)
        if entry is not None:
            problem = pf.entry_problem(fs, entry, backup_dir)
            if problem is not None:
                raise PSError("The existing backup is not intact, nothing was changed: " + problem)
            report.append(
                {
                    "path": path,
                    "backup": pf.join(backup_dir, entry["BackupFile"]),
                    "sha256": entry["Sha256"],
                    "version": entry["Version"],
                    "action": "kept",
                }
            )
            continue
        name = pf.backup_name(path)
        target = pf.join(backup_dir, name)
        if fs.exists(target):
            raise PSError(
                f"{target} exists but is not in {pf.join(backup_dir, 'manifest.csv')}: it is not "
                "overwritten. Move it away or restore the manifest row, then run again."
            )
        facts = pf.file_facts(fs, path)
        if facts["sha256"] == replacement_hash:
            raise PSError(
                f"{path} is already the replacement bootsect.exe and no backup of its original "
                f"exists in {backup_dir}: restore the original first (ADK or ConfigMgr repair), "
                "so that a rollback has something to go back to."
            )
        _apply_file_ops(
            fs,
            _loop_block(s, "foreach ($path in $copies.found)"),
            {"$path": path, "$target": target},
            stop="$copied = ",
        )
        copied = pf.sha256(fs, target)
        if copied != facts["sha256"]:
            raise PSError(
                f"The backup copy {target} has SHA-256 {copied}, the original {facts['sha256']}"
            )
        _apply_file_ops(
            fs,
            _loop_block(s, "foreach ($path in $copies.found)"),
            {"$path": path, "$target": target},
            start="$copied = ",
        )
        stamp = ctx.lab.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(
            {
                "Path": path,
                "BackupFile": name,
                "Sha256": facts["sha256"],
                "Version": facts["version"],
                "Length": str(facts["length"]),
                "BackedUpUtc": stamp,
            }
        )
        pf.write_manifest(fs, backup_dir, rows)
        ctx.result.changed = True
        report.append(
            {
                "path": path,
                "backup": target,
                "sha256": facts["sha256"],
                "version": facts["version"],
                "action": "backed up",
            }
        )
    ctx.result.data = {
        "backup_dir": backup_dir,
        "manifest": pf.join(backup_dir, "manifest.csv"),
        "copies": report,
    }
    ctx.result.message = (
        f"Originals backed up in {backup_dir} ({len(report)} file(s), manifest.csv)."
    )


def _loop_block(s: Script, head: str) -> str:
    """The body of the last loop that starts with `head` (the one that changes files)."""
    at = s.body.rfind(head)
    if at < 0:
        raise Unrecognized(f"no {head!r}")
    return block_at(s.body, s.body.index("{", at))


_COPY = re.compile(
    r"Copy-Item -LiteralPath "
    r"(?P<src>\$\w+|\(Join-Path \$backupDir \(\[string\]\$entry\.BackupFile\)\))"
    r" -Destination (?P<dst>\$\w+)(?P<force> -Force)?"
)
_STATEMENTS = re.compile(
    r"^\s*(?:(?P<writable>Set-CmrbWritable -Path (?P<wvar>\$\w+))"
    r"|(?P<copy>Copy-Item [^\n]+)"
    r"|\(Get-Item -LiteralPath (?P<rovar>\$\w+)\)\.IsReadOnly = (?P<ro>\$true|\$false))\s*$",
    re.M,
)


def _apply_file_ops(
    fs: FileSystem, block: str, env: dict[str, str], start: str = "", stop: str = ""
) -> None:
    """Set-CmrbWritable, Copy-Item and the read-only flag in the order the loop has them."""
    lo = block.find(start) if start else 0
    hi = block.find(stop) if stop else len(block)
    if lo < 0 or hi < 0:
        raise Unrecognized(f"the loop has no {start or stop!r}")
    for m in _STATEMENTS.finditer(block[lo:hi]):
        if m["writable"]:
            pf.set_writable(fs, _var(env, m["wvar"]))
        elif m["copy"]:
            c = _COPY.fullmatch(m["copy"].strip())
            if c is None:
                raise Unrecognized(f"a Copy-Item the lab cannot follow: {m['copy'].strip()}")
            src = env["$backupFile"] if c["src"].startswith("(") else _var(env, c["src"])
            pf.copy_item(fs, src, _var(env, c["dst"]), bool(c["force"]))
        else:
            file = pf.get_item(fs, _var(env, m["rovar"]))
            file.read_only = m["ro"] == "$true"


def _var(env: dict[str, str], name: str) -> str:
    if name not in env:
        raise Unrecognized(f"{name} is not a path the lab knows in this loop")
    return env[name]


@OPERATIONS.add(
    "bootsect/replace",
    lambda s: (
        s.has("Test-CmrbBootsectReplacement -Path $replacementPath")
        and s.has("Copy-Item -LiteralPath $replacementPath")
    ),
)
def replace(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    _backup_libs(s)
    pf.require(s, pf.BACKUP_LIB, "Set-CmrbWritable")
    copies = _candidates(ctx)
    backup_dir = str(s.input("backupDir"))
    if not copies["found"]:
        raise _none_found(copies, "set bootsect_paths")
    check = _check_replacement(ctx, copies["found"])
    if check["problems"]:
        raise PSError(
            "The replacement bootsect.exe is refused, nothing was changed: "
            + " ".join(check["problems"])
        )
    manifest = pf.read_manifest(fs, backup_dir)
    for path in copies["found"]:
        entry = pf.find_entry(manifest, path)
        if entry is None:
            raise PSError(
                f"No backup of {path} in {backup_dir}, nothing was changed: run the backup step "
                "first."
            )
        problem = pf.entry_problem(fs, entry, backup_dir)
        if problem is not None:
            raise PSError("The backup is not intact, nothing was changed: " + problem)
    facts = check["facts"]
    block = _loop_block(s, "foreach ($path in $copies.found)")
    report = []
    for path in copies["found"]:
        before = pf.sha256(fs, path)
        if before == facts["sha256"]:
            report.append(
                {
                    "path": path,
                    "sha256_before": before,
                    "sha256_after": before,
                    "action": "already the replacement",
                }
            )
            continue
        env = {"$path": path, "$replacementPath": str(s.input("replacementPath"))}
        _apply_file_ops(fs, block, env)
        ctx.result.changed = True
        report.append(
            {
                "path": path,
                "sha256_before": before,
                "sha256_after": pf.sha256(fs, path),
                "action": "replaced",
            }
        )
    ctx.result.data = {"replacement": facts, "copies": report}
    ctx.result.message = (
        f"bootsect.exe {facts['version']} put in place of {len(report)} copy(ies); originals in "
        f"{backup_dir}."
    )


@OPERATIONS.add("bootsect/verify", lambda s: s.has("$expect = ", "foreach ($want in $wanted)"))
def verify(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    pf.require(s, pf.FILES_LIB, "Get-CmrbSha256", "Get-CmrbFileVersion")
    pf.require(s, pf.BACKUP_LIB, "Read-CmrbManifest")
    expect = str(s.input("expect"))
    backup_dir = str(s.input("backupDir"))
    wanted: list[dict[str, str]] = []
    if expect == "replacement":
        copies = _candidates(ctx)
        rhash = pf.sha256(fs, str(s.input("replacementPath") or ""))
        wanted = [{"path": p, "sha256": rhash} for p in copies["found"]]
    else:
        wanted = [
            {"path": str(e["Path"]), "sha256": str(e["Sha256"]).upper()}
            for e in pf.read_manifest(fs, backup_dir)
        ]
    if not wanted:
        raise PSError(f"Nothing to verify: no bootsect.exe copy found ({expect})")
    report, wrong = [], []
    for want in wanted:
        have, version = "", ""
        if pf.leaf(fs, want["path"]) is not None:
            have = pf.sha256(fs, want["path"])
            version = pf.vstr(pf.parts_version(pf.get_item(fs, want["path"])))
        if have != want["sha256"]:
            wrong.append(f"{want['path']} has SHA-256 {have}, expected {want['sha256']}")
        report.append(
            {"path": want["path"], "sha256": have, "expected": want["sha256"], "version": version}
        )
    ctx.result.data = {"expect": expect, "copies": report}
    if wrong:
        ctx.result.ok = False
        ctx.result.message = f"bootsect.exe is not the {expect} everywhere: " + "; ".join(wrong)
    else:
        ctx.result.message = f"Every bootsect.exe copy ({len(report)}) is the {expect}."


@OPERATIONS.add(
    "bootsect/check_backup",
    lambda s: (
        s.has("$manifest = @(Read-CmrbManifest -BackupDir $backupDir)")
        and s.has("'The backup cannot be trusted, nothing will be restored: '")
    ),
)
def check_backup(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    _backup_libs(s)
    backup_dir = str(s.input("backupDir"))
    manifest = pf.read_manifest(fs, backup_dir)
    if not manifest:
        raise PSError(
            f"No manifest.csv in {backup_dir}: there is no backup to restore (set backup_dir to "
            "the folder used by the downgrade)."
        )
    problems, report = [], []
    for entry in manifest:
        problem = pf.entry_problem(fs, entry, backup_dir)
        if problem is not None:
            problems.append(problem)
        report.append(
            {
                "path": entry.get("Path"),
                "backup": pf.join(backup_dir, str(entry.get("BackupFile"))),
                "sha256": entry.get("Sha256"),
                "version": entry.get("Version"),
                "intact": problem is None,
            }
        )
    ctx.result.data = {"backup_dir": backup_dir, "entries": report}
    if problems:
        ctx.result.ok = False
        ctx.result.message = (
            "The backup cannot be trusted, nothing will be restored: "
            + "; ".join(problems)
            + ". Reinstall the originals from the ADK 8.1 / ConfigMgr media instead."
        )
    else:
        ctx.result.message = f"{len(report)} original(s) in {backup_dir} match the manifest."


@OPERATIONS.add(
    "bootsect/restore",
    lambda s: s.has(
        "Copy-Item -LiteralPath (Join-Path $backupDir ([string]$entry.BackupFile)) -Destination"
    ),
)
def restore(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    _backup_libs(s)
    pf.require(s, pf.BACKUP_LIB, "Set-CmrbWritable")
    backup_dir = str(s.input("backupDir"))
    manifest = pf.read_manifest(fs, backup_dir)
    if not manifest:
        raise PSError(f"No manifest.csv in {backup_dir}: there is no backup to restore.")
    for entry in manifest:
        problem = pf.entry_problem(fs, entry, backup_dir)
        if problem is not None:
            raise PSError("The backup is not intact, nothing was restored: " + problem)
    block = _loop_block(s, "foreach ($entry in $manifest)")
    report: list[dict[str, str | None]] = []
    for entry in manifest:
        path, original = str(entry["Path"]), str(entry["Sha256"]).upper()
        before = pf.sha256(fs, path) if pf.leaf(fs, path) is not None else ""
        if before == original:
            report.append({"path": path, "sha256": before, "action": "already the original"})
            continue
        env = {"$path": path, "$backupFile": pf.join(backup_dir, str(entry["BackupFile"]))}
        _apply_file_ops(fs, block, env)
        ctx.result.changed = True
        report.append(
            {
                "path": path,
                "sha256_before": before,
                "sha256": pf.sha256(fs, path),
                "version": entry.get("Version"),
                "action": "restored",
            }
        )
    ctx.result.data = {"backup_dir": backup_dir, "copies": report}
    ctx.result.message = (
        f"{len(report)} original bootsect.exe copy(ies) in place again; the backup is kept in "
        f"{backup_dir}."
    )
