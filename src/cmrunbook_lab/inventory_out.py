"""An inventory for a running lab: the lab's sites and hosts, every one reached on 127.0.0.1.

The WS-Management server routes by URL path (`/wsman/<hostname>`), so one port serves every
host. The written file is a normal inventory (`cmrunbook.load.inventory`), loaded and validated like
any other before it is returned, so a lab and the engine can never disagree on its format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cmrunbook.load.inventory import Inventory, load_inventory
from cmrunbook_lab.world import Lab


def inventory_data(
    lab: Lab, endpoint_for: Callable[[str], tuple[int, str]], address: str = "127.0.0.1"
) -> dict[str, Any]:
    """The inventory as plain data; `endpoint_for(host)` gives (port, WS-Man path)."""
    sites = {
        code: {
            "version": s.version,
            "release": s.spec.release,
            "provider": s.server,
            "install_dir": s.install_dir,
        }
        for code, s in lab.sites.items()
    }
    hosts: dict[str, Any] = {}
    for name, h in lab.hosts.items():
        entry: dict[str, Any] = {
            "address": h.address,
            "site": h.site_code,
            "roles": list(h.roles),
            "os": {"version": h.os_version, "arch": h.arch},
        }
        if h.spec.dp is not None:
            entry["dp"] = {"multicast": h.spec.dp.multicast, "pxe": h.spec.dp.pxe}
        if h.has_winrm:
            port, path = endpoint_for(name)
            entry["winrm"] = {
                "address": address,
                "port": port,
                "path": path,
                "scheme": "http",
                "auth": "ntlm",
            }
        else:
            entry["winrm"] = False
        hosts[name] = entry
    return {
        "credentials": {
            "source": "env",
            "username_env": "CMRUNBOOK_USER",
            "password_env": "CMRUNBOOK_PASSWORD",
        },
        "winrm": {"scheme": "http", "auth": "ntlm"},
        "sites": sites,
        "hosts": hosts,
    }


def write_inventory(
    lab: Lab, path: Path, endpoint_for: Callable[[str], tuple[int, str]], address: str = "127.0.0.1"
) -> Inventory:
    """Write the lab's inventory to `path` and return it loaded (validated)."""
    header = (
        "# Inventory of a running cmrunbook lab (written by the lab; regenerated on each start).\n"
    )
    text = yaml.safe_dump(
        inventory_data(lab, endpoint_for, address), sort_keys=False, allow_unicode=True
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + text, encoding="utf-8")
    return load_inventory(path)
