"""The JSON Schemas for runbooks and inventories, generated from the models and committed.

Editors (VS Code's YAML extension and others) complete and check runbooks as they are typed
from `schema/runbook.schema.json`; a test fails when the committed file is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmrunbook.load.inventory import InventoryFile
from cmrunbook.load.runbook import Runbook

SCHEMAS: dict[str, type] = {
    "runbook.schema.json": Runbook,
    "inventory.schema.json": InventoryFile,
}


def schema_text(model: type) -> str:
    schema: dict[str, Any] = model.model_json_schema()  # type: ignore[attr-defined]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMAS.items():
        path = folder / name
        path.write_text(schema_text(model), encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(folder: Path) -> list[str]:
    return [
        name
        for name, model in SCHEMAS.items()
        if not (folder / name).is_file() or (folder / name).read_text("utf-8") != schema_text(model)
    ]
