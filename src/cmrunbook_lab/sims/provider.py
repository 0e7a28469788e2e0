"""What every SMS Provider script starts with: the site namespace it opens, the package it names.

Shared by the simulators of several template folders (boot-image, checks, multicast), which all
reach the site through ``root\\sms\\site_<code>`` on the host the script runs on.
"""

from __future__ import annotations

import re

from cmrunbook_lab.scripts import Context, PSError
from cmrunbook_lab.site import SiteState

PACKAGE_ID = re.compile(r"^[A-Za-z0-9]{8}$")


def provider_site(ctx: Context) -> SiteState:
    """The site whose SMS Provider namespace the script uses; it must live on this host."""
    code = str(ctx.script.input("CmrbSiteCode"))
    site = ctx.lab.sites.get(code.upper())
    if site is None or site.server != ctx.host.name:
        raise PSError(f'Invalid namespace "root\\sms\\site_{code}"')
    return site


def check_package_id(ctx: Context, var: str = "packageId") -> str:
    value = str(ctx.script.input(var))
    if ctx.script.has(f"Assert-CmrbPackageId ${var}") and not PACKAGE_ID.match(value):
        raise PSError(f"Not a ConfigMgr package ID: {value}")
    return value.upper()
