"""Boot image and fleet scripts (templates/boot-image, templates/checks) in the lab.

Covered so far: boot-image/update (RefreshPkgSource, or the cmdlet path that needs a console
the lab's site servers do not have). The other check templates are not simulated yet: they
fail visibly as unrecognised scripts.
"""

from __future__ import annotations

from cmrunbook.lab.ops_multicast import check_package_id, provider_site
from cmrunbook.lab.scripts import Context, PSError, operation


@operation(
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
