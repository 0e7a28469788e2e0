"""The script `invoke diagnose --host` sends: read candidate logs on a host, base64 in the result.

Which logs are candidates, and what is made of what comes back, is `logs.diagnose`'s business;
the PowerShell is made here, like every other script, with the same prelude and result line.
"""

from __future__ import annotations

from collections.abc import Iterable

from cmrunbook.render.templates import Renderer

FETCH_TEMPLATE = "engine/fetch_logs.ps1.j2"


def fetch_script(renderer: Renderer, host: str, paths: Iterable[str], max_bytes: int) -> str:
    """The PowerShell that reads the candidate logs on a host (rendered like every step)."""
    return renderer.script(
        FETCH_TEMPLATE,
        {"paths": list(paths), "max_bytes": int(max_bytes)},
        header=f"cmrunbook diagnose: fetch logs from {host}",
    )
