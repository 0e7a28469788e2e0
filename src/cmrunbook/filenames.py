r"""File names made from inventory host names and step names, which are not file names.

An inventory may name a host `corp/dp01`, `..\dp01`, `..` or `CON`; used as they are, such names
would put a saved script or a lock file outside its folder, or open a Windows device. Sanitising
alone is not enough: `corp/dp` and `corp dp` would both become `corp_dp`, and `DP01` and `dp01`
are one file on a case-insensitive file system (Windows, macOS), so one host's lock or scripts
would be another's. A name is therefore kept as it is only when it is already a plain,
lower-case, short file name; any other gets a short hash of the original name.
"""

from __future__ import annotations

import hashlib
import re

#: Longest name kept before the hash; with the hash and a suffix such as `.lock` or `.ps1` the
#: component stays far below the 255-byte limit of common file systems.
MAX_STEM = 80

#: Device names Windows opens instead of a file, whatever the extension (`CON.lock`, `nul.ps1`).
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$")

#: What this module appends; a name that already ends like this is hashed too, so that a host
#: literally named like another's hashed name cannot take its file.
_HASHED = re.compile(r"-[0-9a-f]{12}$")


def safe_name(name: str) -> str:
    """One path component, distinct for distinct names (also when case is folded).

    Each run of characters other than letters, digits, `.`, `_` and `-` becomes `_`, a name of
    dots only gets a leading `_`, as does a Windows device name, and the result is cut to
    `MAX_STEM`. When that changed the name, or the name has upper-case letters, ends in a dot, or
    looks like a hashed name, the lower-cased result gets `-` and 12 hex digits of the
    original's SHA-256.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    if not safe.strip("."):
        safe = "_" + safe
    if _RESERVED.match(safe.lower()):
        safe = "_" + safe  # `AUX.txt-…` would still open the device: its stem must change
    safe = safe[:MAX_STEM]
    plain = (
        safe == name
        and name == name.lower()
        and not name.endswith(".")
        and not _HASHED.search(name)
    )
    if plain:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe.lower()}-{digest}"
