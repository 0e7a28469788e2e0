"""The engine's own scripts (templates/engine/): log monitors, boot time, restart, the log fetch
of `diagnose --host`, and one package's distribution status."""

from __future__ import annotations

import base64

from cmrunbook_lab import psfiles as pf
from cmrunbook_lab import wmi
from cmrunbook_lab.logs import lo_name
from cmrunbook_lab.scripts import Context, Operations, PSError, Script, Unrecognized
from cmrunbook_lab.sims.provider import check_package_id, provider_site

OPERATIONS = Operations()


def _is_log_arm(s: Script) -> bool:
    return s.has(
        "foreach ($name in $logs)",
        "foreach ($candidate in $dirs)",
        "(Get-Item -LiteralPath $path).Length",
    )


@OPERATIONS.add("engine/log_arm", _is_log_arm)
def log_arm(ctx: Context) -> None:
    """Each log where it is; a log not written yet: every candidate path, watched until it is."""
    s, fs = ctx.script, ctx.host.fs
    if not s.has("$entry.candidates += $path", ".TrimEnd('\\') + '\\' + $name"):
        raise Unrecognized("the arm loop is not the one the lab simulates")
    names, dirs = s.input("logs"), s.input("dirs")
    install_dir = str(s.input("installDir"))
    found: dict[str, dict[str, object]] = {}
    for name in names:
        entry: dict[str, object] = {"path": None, "size": 0, "exists": False, "candidates": []}
        paths = [pf.expand_path(c, install_dir).rstrip("\\") + "\\" + name for c in dirs]
        present = next((p for p in paths if fs.get(p) is not None), None)
        if present is not None:
            file = fs.get(present)
            assert file is not None
            entry.update(path=present, size=file.size, exists=True)
        else:
            entry["candidates"] = paths
        found[name] = entry
    ctx.result.data = found


def _is_log_read(s: Script) -> bool:
    return s.has(
        "function Read-CmrbBytes", "foreach ($name in $watches.Keys)", "$stream.Seek($Offset"
    )


def _read(ctx: Context, path: str, offset: int, limit: int, log: str) -> tuple[str, int]:
    """Read-CmrbBytes: (base64 of up to `limit` bytes from `offset`, next offset); counted."""
    file = ctx.host.fs.get(path)
    if file is None or file.data is None:
        raise PSError(f"Could not find file '{path}'.")
    length = len(file.data)
    offset = min(offset, length)
    chunk = bytes(file.data[offset : offset + max(0, min(length - offset, limit))])
    ctx.host.stats.log_reads.append(
        {"log": log, "path": path, "offset": offset, "bytes": len(chunk)}
    )
    return base64.b64encode(chunk).decode("ascii"), offset + len(chunk)


@OPERATIONS.add("engine/log_read", _is_log_read)
def log_read(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    watches, max_bytes = s.input("watches"), int(s.input("maxBytes"))
    follows_rollover = s.has("$size -lt $offset", "ChangeExtension($path, '.lo_')")
    out: dict[str, dict[str, object]] = {}
    finds_candidates = s.has("foreach ($candidate in @($watch.candidates))")
    for name, watch in watches.items():
        path, offset = str(watch["path"] or ""), int(watch["offset"])
        entry: dict[str, object] = {
            "chunks": [],
            "offset": offset,
            "size": 0,
            "rolled": False,
            "exists": False,
            "path": None,
        }
        if not path and finds_candidates:
            appeared = [str(c) for c in watch.get("candidates") or [] if fs.get(str(c))]
            if appeared:
                path, offset = appeared[0], 0
                entry["path"] = path
        file = fs.get(path) if path else None
        if file is not None:
            entry["exists"] = True
            entry["size"] = file.size
            chunks: list[str] = []
            if follows_rollover and file.size < offset:
                entry["rolled"] = True
                old = lo_name(path)
                if fs.get(old) is not None:
                    chunks.append(_read(ctx, old, offset, max_bytes, name)[0])
                offset = 0
            data, nxt = _read(ctx, path, offset, max_bytes, name)
            chunks.append(data)
            entry["chunks"] = chunks
            entry["offset"] = nxt
        out[name] = entry
    ctx.result.data = out


@OPERATIONS.add(
    "engine/boot_time",
    lambda s: s.has("Get-WmiObject -Class Win32_OperatingSystem", ".LastBootUpTime"),
)
def boot_time(ctx: Context) -> None:
    ctx.result.data = ctx.host.wmi_boot_time()


@OPERATIONS.add("engine/restart", lambda s: s.any("& shutdown.exe", "Restart-Computer"))
def restart(ctx: Context) -> None:
    s = ctx.script
    m = s.find(r"& shutdown\.exe (?P<args>[^\n]*)")
    if m is None:
        raise Unrecognized("only shutdown.exe restarts are simulated")
    args = m["args"].split()
    if "/r" not in [a.lower() for a in args]:
        raise Unrecognized(f"shutdown.exe {m['args']}: only /r (restart) is simulated")
    grace = 30.0  # shutdown.exe's default /t
    if "/t" in args and args.index("/t") + 1 < len(args):
        grace = float(args[args.index("/t") + 1])
    ctx.lab.restart(ctx.host, grace)
    ctx.result.changed = True


@OPERATIONS.add(
    "engine/fetch_logs",
    lambda s: s.has(
        "foreach ($candidate in $paths)", "[Convert]::ToBase64String($buffer, 0, $read)"
    ),
)
def fetch_logs(ctx: Context) -> None:
    """Each existing candidate log (environment variables expanded), its last maxBytes."""
    s, host = ctx.script, ctx.host
    if not s.has(
        "$path = [Environment]::ExpandEnvironmentVariables([string]$candidate)",
        "$exists = Test-Path -LiteralPath $path -PathType Leaf",
        "if ($offset % 2 -ne 0) {",
        "$offset = $offset + 1",
    ):
        raise Unrecognized("the fetch loop is not the one the lab simulates")
    paths = [str(p) for p in s.input("paths")]
    max_bytes = int(s.input("maxBytes"))
    out: dict[str, str] = {}
    for candidate in paths:
        path = host.expand_env(candidate)
        file = host.fs.get(path)
        if file is None or path in out:
            continue
        data = bytes(file.data) if file.data is not None else b"\0" * file.size
        offset = 0
        if len(data) > max_bytes:
            offset = len(data) - max_bytes
            offset += offset % 2
        host.stats.log_reads.append(
            {"log": file.name, "path": path, "offset": offset, "bytes": len(data) - offset}
        )
        out[path] = base64.b64encode(data[offset:]).decode("ascii")
    ctx.result.message = f"{len(out)} of {len(paths)} candidate log(s) found"
    ctx.result.data = out


@OPERATIONS.add(
    "engine/dist_status",
    lambda s: s.has(
        "$rows += @{ dp = [string]$dp.ServerNALPath; state = [int]$dp.State; "
        "version = [int]$dp.SourceVersion }"
    ),
)
def dist_status(ctx: Context) -> None:
    """One package's SMS_PackageStatusDistPointsSummarizer rows: DP, State, SourceVersion."""
    s = ctx.script
    site = provider_site(ctx)
    package_id = check_package_id(ctx)
    call = wmi.call_after(s, "$rows = @()", "SMS_PackageStatusDistPointsSummarizer")
    ctx.result.data = [
        {
            "dp": str(dp.get("ServerNALPath")),
            "state": int(dp.get("State") or 0),
            "version": int(dp.get("SourceVersion") or 0),
        }
        for dp in wmi.run_call(ctx.lab, site, ctx.script, call, {"$packageId": package_id})
    ]
