"""The committed JSON Schemas are what the models generate, and every shipped file satisfies them.

Editors check runbooks against schema/*.schema.json as they are typed; a schema that lags the
models would accept keys the loader refuses (or the reverse), so a stale file fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers_engine import REPO, make_root, run_program

from cmrunbook.load.inventory import InventoryFile
from cmrunbook.load.runbook import Runbook
from cmrunbook.load.schema import SCHEMAS, schema_text
from cmrunbook.load.sourcemap import load_yaml

RUNBOOKS = sorted(p for p in (REPO / "runbooks").glob("*.yaml") if not p.name.startswith("_"))
INVENTORIES = sorted((REPO / "inventory").glob("*.yaml"))


def data_of(path: Path) -> Any:
    """The file as the engine reads it (keys verbatim: `on:` stays the string 'on')."""
    data, _ = load_yaml(path)
    return data


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_is_current(name: str) -> None:
    committed = (REPO / "schema" / name).read_text("utf-8")
    assert committed == schema_text(SCHEMAS[name]), f"schema/{name} is stale: run `invoke schema`"


def test_schemas_cover_both_formats() -> None:
    assert set(SCHEMAS) == {"runbook.schema.json", "inventory.schema.json"}
    assert SCHEMAS["runbook.schema.json"] is Runbook
    assert SCHEMAS["inventory.schema.json"] is InventoryFile
    runbook = json.loads((REPO / "schema" / "runbook.schema.json").read_text("utf-8"))
    assert runbook["additionalProperties"] is False, "unknown top-level keys must be flagged"
    assert {"id", "title", "source", "targets", "methods", "steps"} <= set(runbook["properties"])


def test_validate_flags_a_stale_schema(tmp_path: Path) -> None:
    """The check can fail: an out-of-date schema file makes `invoke validate` exit 2."""
    root = make_root(tmp_path / "root")
    path = root / "schema" / "runbook.schema.json"
    schema = json.loads(path.read_text("utf-8"))
    del schema["properties"]["guidance"]
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    result = run_program("validate", root=root)
    assert result.returncode == 2
    assert "schema/runbook.schema.json is stale: run `invoke schema`" in result.stderr


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.stem)
def test_runbook_satisfies_the_models(path: Path) -> None:
    Runbook.model_validate(data_of(path))


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.stem)
def test_inventory_satisfies_the_models(path: Path) -> None:
    InventoryFile.model_validate(data_of(path))


def validator(name: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "schema" / name).read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.stem)
def test_runbook_satisfies_the_json_schema(path: Path) -> None:
    """What an editor checks against: the committed JSON Schema accepts every shipped runbook."""
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator("runbook.schema.json").iter_errors(data_of(path))
    ]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.stem)
def test_inventory_satisfies_the_json_schema(path: Path) -> None:
    errors = [e.message for e in validator("inventory.schema.json").iter_errors(data_of(path))]
    assert not errors, "\n".join(errors)


def test_json_schema_rejects_a_misspelt_step_key() -> None:
    """Negative control: the editor's schema flags `clik_path` in a step, as the loader does."""
    data = data_of(REPO / "runbooks" / "multicast.yaml")
    step = data["methods"][2]["steps"][0]
    step["clik_path"] = step.pop("click_path")
    errors = list(validator("runbook.schema.json").iter_errors(data))
    assert errors, "a misspelt key inside a step must be an error in the editor too"
