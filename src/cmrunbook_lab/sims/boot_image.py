"""Boot image scripts (templates/boot-image) in the lab: the probe, the pre-checks, the update
(RefreshPkgSource, or the cmdlet path that needs a console the lab's site servers do not have)
and the distribution status, all answered from the site's SMS Provider classes (`lab.wmi`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cmrunbook_lab import psfiles as pf
from cmrunbook_lab import wmi
from cmrunbook_lab.scripts import Context, Operations, PSError, Unrecognized
from cmrunbook_lab.sims.provider import PACKAGE_ID, check_package_id, provider_site

OPERATIONS = Operations()


@OPERATIONS.add(
    "boot-image/update",
    lambda s: (
        s.has("-Class SMS_BootImagePackage -Filter", "$before = [string]$image.SourceVersion")
        and s.any("$image.RefreshPkgSource()", "Update-CMDistributionPoint -BootImageId $packageId")
    ),
)
def boot_image_update(ctx: Context) -> None:
    s = ctx.script
    site = provider_site(ctx)
    package_id = check_package_id(ctx)
    image = site.boot_images.get(package_id)
    if image is None:
        raise PSError(f"Boot image {package_id} was not found on site {site.code}")
    before = str(image["SourceVersion"])
    if not s.has("$refresh = $image.RefreshPkgSource()"):
        # The cmdlet path: the lab's site servers have no ConfigMgr console installed.
        raise PSError(
            "The ConfigMgr console is not installed on this host (SMS_ADMIN_UI_PATH is not set): "
            "run with --set mechanism=wmi."
        )
    ctx.lab.refresh_boot_image(site, package_id)
    prefix = str(ctx.result.message)
    if s.has("mechanism=cmdlet asked for, but ConfigMgr 2007 has no cmdlets"):
        prefix = "mechanism=cmdlet asked for, but ConfigMgr 2007 has no cmdlets: used WMI. "
    ctx.result.changed = True
    ctx.result.message = (
        f"{prefix}Update Distribution Points requested for {package_id} ({image['Name']}) by wmi; "
        "distmgr.log shows when it is processed."
    )
    ctx.result.data = {
        "PackageID": package_id,
        "Name": image["Name"],
        "mechanism": "wmi",
        "source_version_before": before,
    }


# -- boot image selection (lib/boot_images.ps1.j2) ------------------------------------------------

_SELECTION_LIB = (
    "function Get-CmrbBootImageSelection",
    "if ($wanted.Count -gt 0 -and -not ($wanted -contains $packageId)) { continue }",
    "DPCount = $dps.Count",
    "function Get-CmrbWmiValue",
    "if ($Object.PSObject.Properties.Match($Name).Count -eq 0) { return '' }",
)


def _wmi_date(text: str) -> datetime | None:
    """ConvertFrom-CmrbWmiDate: the first 14 digits of a WMI datetime."""
    if not text or len(text) < 14:
        return None
    return datetime.strptime(text[:14], "%Y%m%d%H%M%S")


def boot_image_selection(ctx: Context, ids: list[Any]) -> dict[str, Any]:
    """Get-CmrbBootImageSelection: the images (with DPCount) and the Ids not found."""
    s = ctx.script
    if not s.has(*_SELECTION_LIB):
        raise Unrecognized("Get-CmrbBootImageSelection is not the function the lab simulates")
    site = provider_site(ctx)
    wanted = []
    for raw in ids:
        if not PACKAGE_ID.match(str(raw)):
            raise PSError(f"Not a ConfigMgr package ID: {raw}")
        wanted.append(str(raw).upper())
    fn = s.body.find("function Get-CmrbBootImageSelection")
    calls = [c for c in wmi.wmi_calls(s) if c[0] > fn][:2]
    if len(calls) < 2:
        raise Unrecognized("Get-CmrbBootImageSelection without its two WMI queries")
    images, seen = [], []
    for image in wmi.run_call(ctx.lab, site, s, calls[0], {}):
        package_id = str(image.get("PackageID", "")).upper()
        if wanted and package_id not in wanted:
            continue
        dps = wmi.run_call(ctx.lab, site, s, calls[1], {"$packageId": package_id})
        refreshed = _wmi_date(str(image.get("LastRefreshTime") or ""))
        images.append(
            {
                "PackageID": package_id,
                "Name": str(image.get("Name", "")),
                "ImageOSVersion": str(image.get("ImageOSVersion", "")),
                "Architecture": str(image.get("Architecture", "")),
                "DPCount": len(dps),
                "SourceVersion": str(image.get("SourceVersion", "")),
                "LastRefreshTime": refreshed.strftime("%Y-%m-%d %H:%M:%S") if refreshed else "",
                "Refreshed": refreshed,
            }
        )
        seen.append(package_id)
    return {"images": images, "missing": [i for i in wanted if i not in seen]}


def _public(image: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: image[k] for k in keys}


@OPERATIONS.add(
    "boot-image/probe_images",
    lambda s: s.has("$selection = Get-CmrbBootImageSelection -Ids $bootImages", "$since = "),
)
def probe_images(ctx: Context) -> None:
    s = ctx.script
    after = str(s.input("refreshedAfter") or "")
    since = None
    if after:
        try:
            since = datetime.fromisoformat(after.strip())
        except ValueError as exc:
            raise PSError(
                'Exception calling "Parse" with "2" argument(s): "String was not recognized as a '
                'valid DateTime."'
            ) from exc
    selection = boot_image_selection(ctx, list(s.input("bootImages") or []))
    if selection["missing"]:
        raise PSError(
            f"No boot image with PackageID {', '.join(selection['missing'])} on site "
            f"{s.input('CmrbSiteCode')}"
        )
    items, skipped = [], []
    for image in sorted(selection["images"], key=lambda i: i["PackageID"]):
        if image["DPCount"] == 0:
            skipped.append(f"{image['PackageID']} (not distributed)")
        elif since is not None and image["Refreshed"] is not None and image["Refreshed"] > since:
            skipped.append(f"{image['PackageID']} (refreshed {image['LastRefreshTime']})")
        else:
            items.append(
                _public(image, "PackageID", "Name", "Architecture", "ImageOSVersion", "DPCount")
            )
    ctx.result.data = items
    ctx.result.message = f"{len(items)} boot image(s) to update; skipped: " + ", ".join(skipped)


@OPERATIONS.add(
    "boot-image/check_tscore",
    lambda s: (
        s.has("$required = [version]", "$version = Get-CmrbFileVersion -Path $path")
        and s.has("'TSCore.dll was not found in any of: '")
        # The lines that decide, as the verdict below decides: a flipped test is not this check.
        and s.has(
            "if ($version -lt $required) { $old += ($path + ' is ' + $version)",
            "if ($old.Count -gt 0) { $CmrbResult.ok = $false",
        )
    ),
)
def check_tscore(ctx: Context) -> None:
    s, fs = ctx.script, ctx.host.fs
    pf.require(s, pf.FILES_LIB, "Expand-CmrbPath", "Get-CmrbFileVersion")
    paths = [str(p) for p in s.input("paths")]
    install_dir = str(s.input("installDir") or "")
    required = pf.version_tuple(str(s.input("required"))) or (0,)
    copies, old = [], []
    for candidate in paths:
        path = pf.expand_path(candidate, install_dir)
        file = fs.get(path)
        if file is None:
            continue
        version = pf.parts_version(file)
        copies.append({"path": path, "version": pf.vstr(version)})
        if pf.version_key(version) < pf.version_key(required):
            old.append(f"{path} is {pf.vstr(version)}")
    ctx.result.data = {"required": pf.vstr(required), "copies": copies, "searched": paths}
    if not copies:
        raise PSError(
            "TSCore.dll was not found in any of: "
            + "; ".join(paths)
            + " (set tscore_paths to where this site server keeps it)"
        )
    if old:
        ctx.result.ok = False
        ctx.result.message = (
            "The KB2910552 hotfix is not on this site server: "
            + "; ".join(old)
            + f", older than {pf.vstr(required)}. Install the hotfix (or 2012 R2 CU1) on the site "
            "server first, then run this runbook again."
        )
    else:
        ctx.result.message = (
            f"TSCore.dll {pf.vstr(required)} or later in every copy found ({len(copies)})."
        )


def _winpe_ok(image_os_version: str, wanted: str) -> bool:
    """Test-CmrbWinPeVersion: the same major.minor.build ([version] leaves a missing part -1)."""
    have = pf.version_tuple(image_os_version.split(" ")[0]) if image_os_version else None
    want = pf.version_tuple(wanted)
    if have is None or want is None:
        return False
    return [*have, -1, -1][:3] == [*want, -1, -1][:3]


@OPERATIONS.add(
    "boot-image/check_images",
    lambda s: (
        s.has("$selection = Get-CmrbBootImageSelection -Ids $bootImages")
        and s.has("Test-CmrbWinPeVersion -ImageOSVersion $image.ImageOSVersion")
    ),
)
def check_images(ctx: Context) -> None:
    """The pre-check as the script computes it from what the SMS Provider holds: an image named
    in xpBootImages that breaks the WinPE/architecture rule is refused, any other is a warning."""
    s = ctx.script
    if not s.has(
        "return ($have.Major -eq $want.Major -and $have.Minor -eq $want.Minor -and "
        "$have.Build -eq $want.Build)",
        "if ($image.Architecture -ne $targetArch)",
        "if ($broken.Count -gt 0 -and $usedByXp)",
    ):
        raise Unrecognized("the WinPE/architecture tests are not the ones the lab simulates")
    ids = list(s.input("bootImages") or [])
    arch = str(s.input("targetArch"))
    winpe = s.input("winpeVersion")
    xp_ids = []
    for raw in list(s.input("xpBootImages") or []):
        if not PACKAGE_ID.match(str(raw)):
            raise PSError(f"Not a ConfigMgr package ID: {raw}")
        xp_ids.append(str(raw).upper())
    selection = boot_image_selection(ctx, ids)
    problems, warnings, report = [], [], []
    site_code = s.input("CmrbSiteCode")
    for missing in selection["missing"]:
        problems.append(
            f"{missing}: no boot image with this PackageID on site {site_code}; check boot_images."
        )
    selected = [i["PackageID"] for i in selection["images"]]
    for xp in xp_ids:
        if xp not in selected:
            problems.append(
                f"{xp} (xp_boot_images) is not among the boot images this run updates: no such "
                f"boot image on site {site_code}, or left out of boot_images. The boot image of "
                "the Windows XP task sequences must be updated; check xp_boot_images and "
                "boot_images."
            )
    for image in selection["images"]:
        label = f"{image['PackageID']} ({image['Name']})"
        used_by_xp = image["PackageID"] in xp_ids
        verdict = "ok"
        if image["DPCount"] == 0:
            verdict = "not distributed"
            if ids:
                problems.append(
                    f"{label} is on no distribution point: Update Distribution Points only "
                    "refreshes copies already distributed; distribute it first (Distribute "
                    "Content) or leave it out of boot_images."
                )
        if image["DPCount"] > 0 or used_by_xp:
            broken = []
            if winpe not in (None, "") and not _winpe_ok(image["ImageOSVersion"], str(winpe)):
                broken.append(f"OS version {image['ImageOSVersion']}, not WinPE 3.1 ({winpe})")
            if image["Architecture"].lower() != arch.lower():
                broken.append(f"{image['Architecture']}, not the Windows XP architecture ({arch})")
            if broken and used_by_xp:
                verdict = "refused"
                problems.append(
                    f"{label}, a boot image of the Windows XP task sequences (xp_boot_images), "
                    f"is {' and '.join(broken)}: the XP task sequences need a WinPE 3.1 boot "
                    "image of the XP architecture. Import one (boot.wim of the Windows AIK for "
                    "Windows 7 SP1 supplement), use it in the XP task sequences and name it in "
                    "xp_boot_images; set target_arch if the targets really are "
                    f"{image['Architecture']}."
                )
            elif broken:
                verdict = "warning"
                warnings.append(f"{label} is {' and '.join(broken)}")
        report.append(
            {
                **_public(
                    image,
                    "PackageID",
                    "Name",
                    "ImageOSVersion",
                    "Architecture",
                    "DPCount",
                    "LastRefreshTime",
                ),
                "xp": used_by_xp,
                "verdict": verdict,
            }
        )
    ctx.result.data = {
        "target_arch": arch,
        "winpe_version": winpe,
        "xp_boot_images": xp_ids,
        "images": report,
        "warnings": warnings,
    }
    if problems:
        ctx.result.ok = False
        ctx.result.message = f"Boot images refused ({len(problems)}): " + " | ".join(problems)
        return
    distributed = [r for r in report if r["DPCount"] > 0]
    message = f"{len(distributed)} distributed boot image(s) pass the checks."
    if warnings:
        message += (
            " Warning: " + "; ".join(warnings) + ". They are updated too; no Windows XP task "
            "sequence may use them (Windows XP needs a WinPE 3.1 boot image of its architecture)."
        )
    if not xp_ids:
        message += (
            " xp_boot_images is empty: no image was checked as the Windows XP task sequences' "
            "boot image; name them to have them checked."
        )
    ctx.result.message = message


@OPERATIONS.add(
    "boot-image/status",
    lambda s: (
        s.has("$selection = Get-CmrbBootImageSelection -Ids $bootImages")
        and s.has("$state = [int]$dp.State")
    ),
)
def status(ctx: Context) -> None:
    s = ctx.script
    if not s.has(
        "if ($state -eq 0) { $installed += 1 } elseif ($state -eq 3) "
        "{ $errors += [string]$dp.ServerNALPath } else { $waiting += 1 }"
    ):
        raise Unrecognized("the State test is not the one the lab simulates")
    site = provider_site(ctx)
    selection = boot_image_selection(ctx, list(s.input("bootImages") or []))
    call = wmi.call_after(s, "foreach ($image in @($selection.images")
    report, failed, pending = [], [], 0
    for image in [i for i in selection["images"] if i["DPCount"] > 0]:
        installed, waiting, errors = 0, 0, []
        for dp in wmi.run_call(ctx.lab, site, s, call, {"$image.PackageID": image["PackageID"]}):
            state = int(dp.get("State") or 0)
            if state == 0:
                installed += 1
            elif state == 3:
                errors.append(str(dp.get("ServerNALPath")))
            else:
                waiting += 1
        if errors:
            failed.append(f"{image['PackageID']} on {', '.join(errors)}")
        pending += waiting
        report.append(
            {
                **_public(image, "PackageID", "Name", "SourceVersion", "LastRefreshTime"),
                "installed": installed,
                "in_progress": waiting,
                "failed": errors,
            }
        )
    ctx.result.data = report
    if failed:
        ctx.result.ok = False
        ctx.result.message = (
            "Boot image update failed on: " + "; ".join(failed) + ". See distmgr.log on the site "
            "server and PkgXferMgr.log / distmgr.log on those DPs, then update the image again."
        )
    else:
        ctx.result.message = (
            f"{len(report)} boot image(s): no DP failed; {pending} DP copy(ies) still in progress "
            "(Monitoring > Distribution Status > Content Status)."
        )
