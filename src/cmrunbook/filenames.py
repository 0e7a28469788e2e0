r"""File names made from inventory host names and step names, which are not file names.

An inventory may name a host `corp/dp01`, `..\dp01` or `..`; used as they are, such names would
put a saved script or a lock file outside its folder.
"""

from __future__ import annotations

import re


def safe_name(name: str) -> str:
    """One path component: each run of characters other than letters, digits, `.`, `_` and `-`
    becomes `_`, and a name of dots only gets a leading `_`, so it is never `.` or `..`."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return "_" + safe if not safe.strip(".") else safe
