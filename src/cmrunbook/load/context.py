"""What runbook conditions and templates see of a host and its site: the context objects.

`HostView.as_context` gives `host` and `target`; `site_context` gives `site`. `context_attrs`
lists their attributes, so that loading a runbook (the catalog's checks) and running it (the
planner's conditions, the scripts' templates) can never disagree on what a name means.
"""

from __future__ import annotations

import functools
from typing import Any

from cmrunbook.load.inventory import HostView, Inventory, InventoryFile
from cmrunbook.load.sourcemap import SourceMap


def site_context(host: HostView) -> dict[str, Any]:
    """What conditions and templates see as `site`: the target's site."""
    return {
        "code": host.site_code,
        "version": host.site.version,
        "release": host.site.release,
        "provider": host.site.provider,
        "install_dir": host.site.install_dir,
    }


@functools.cache
def context_attrs() -> dict[str, frozenset[str]]:
    """The attributes a condition or template may read of `host`, `target` and `site`.

    Taken from the code that builds those contexts (`HostView.as_context`, `site_context`)
    applied to a minimal example host, so the load-time check of runbooks can never disagree with
    what a run really provides. The keys do not depend on the host's values.
    """
    example = InventoryFile.model_validate(
        {
            "sites": {"X": {"version": "cb", "provider": "h"}},
            "hosts": {"h": {"site": "X", "roles": ["site_server"], "os": {"version": "2019"}}},
        }
    )
    host = Inventory(example, "<example>", SourceMap("<example>")).hosts["h"]
    keys = frozenset(host.as_context())
    return {"host": keys, "target": keys, "site": frozenset(site_context(host))}
