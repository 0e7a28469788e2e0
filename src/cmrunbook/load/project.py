"""Finding the project folders (runbooks/, templates/, inventory/) and the default inventory."""

from __future__ import annotations

import os
from pathlib import Path

from cmrunbook.errors import UsageError

DEFAULT_INVENTORY = Path("inventory") / "example.yaml"


def project_root() -> Path:
    """CMRUNBOOK_ROOT, else the nearest folder upwards holding runbooks/ and templates/."""
    env = os.environ.get("CMRUNBOOK_ROOT")
    if env:
        root = Path(env)
        if not (root / "runbooks").is_dir():
            raise UsageError(f"CMRUNBOOK_ROOT={env} has no runbooks/ folder")
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "runbooks").is_dir() and (folder / "templates").is_dir():
            return folder
    raise UsageError("no runbooks/ and templates/ here or above; run from the cmrunbook folder")


def inventory_path(root: Path, given: str | None) -> Path:
    path = Path(given) if given else root / DEFAULT_INVENTORY
    if not path.is_file():
        raise UsageError(f"inventory {path} does not exist")
    return path
