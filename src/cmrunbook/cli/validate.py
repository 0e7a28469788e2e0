"""`invoke validate` and `invoke schema`: check the project's files, regenerate the schemas."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from invoke.exceptions import Exit

from cmrunbook.cli.common import EXIT_USAGE, cli_task
from cmrunbook.errors import ConfigError


@cli_task(help={"inventory": "Also check this inventory (default: every file under inventory/)."})
def validate(c: Any, inventory: str | None = None) -> None:
    """Check every runbook, the log catalog and the inventories; list all errors, exit 2 if any."""
    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.load.project import Project
    from cmrunbook.load.schema import stale_schemas
    from cmrunbook.plan.planner import retyped_vars

    project = Project.find()
    loaded, problems = project.load_all()
    inventories = [Path(inventory)] if inventory else project.inventories()
    for path in inventories:
        try:
            inv = load_inventory(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            problems.extend(retyped_vars(inv, [lr.runbook for lr in loaded]))
    for name in stale_schemas(project.schema_dir):
        print(f"error: schema/{name} is stale: run `invoke schema`", file=sys.stderr)
        problems.append(None)  # type: ignore[arg-type]
    for p in problems:
        if p is not None:
            print(f"error: {p}", file=sys.stderr)
    for lr in loaded:
        rb = lr.runbook
        print(f"ok  {rb.id:<22} {rb.source.kb:<10} {rb.title}")
    print(f"ok  {len(inventories)} inventory file(s)" if not problems else "")
    if problems:
        raise Exit(code=EXIT_USAGE)


@cli_task()
def schema(c: Any) -> None:
    """Regenerate schema/*.schema.json from the runbook and inventory models."""
    from cmrunbook.load.project import Project
    from cmrunbook.load.schema import write_schemas

    for path in write_schemas(Project.find().schema_dir):
        print(f"wrote {path}")
