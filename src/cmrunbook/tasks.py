"""The invoke collection: `invoke remediate`, `check`, `validate`, `schema`, and the rest.

Each task is thin: it parses options, calls the engine, and turns engine errors into the
documented exit codes (0 ok, 1 failed or non-compliant, 2 usage or configuration error,
3 a host's lock is held).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from cmrunbook.errors import ConfigError, LockHeld, UsageError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3

COMMON_HELP = {
    "inventory": "Inventory YAML (default: inventory/example.yaml).",
    "hosts": "Comma-separated host globs, roles, group:NAME or site:CODE; !x excludes.",
    "set": "Override a runbook parameter: --set name=value (repeatable).",
}


def cli_errors(fn: F) -> F:
    """Turn engine errors into a clear message on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            for p in exc.problems:
                print(f"error: {p}", file=sys.stderr)
            raise Exit(code=EXIT_USAGE) from None
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=EXIT_USAGE) from None
        except LockHeld as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=EXIT_LOCKED) from None

    return wrapper  # type: ignore[return-value]


def _setup(runbook: str, inventory: str | None) -> tuple[Any, Any, Any]:
    from cmrunbook.catalog import Catalog
    from cmrunbook.inventory import load_inventory
    from cmrunbook.project import inventory_path, project_root

    root = project_root()
    catalog = Catalog(root)
    loaded = catalog.load(runbook)
    inv = load_inventory(inventory_path(root, inventory))
    return catalog, loaded, inv


def build_plan(
    runbook: str,
    *,
    inventory: str | None,
    method: str | None,
    hosts: str | None,
    overrides: list[str],
    rollback: bool = False,
) -> tuple[Any, Any]:
    """Load, validate and plan: everything before a host is touched."""
    from cmrunbook.plan import Planner

    catalog, loaded, inv = _setup(runbook, inventory)
    plan = Planner(catalog, loaded, inv).plan(
        method=method, hosts=hosts, overrides=overrides, rollback=rollback
    )
    return catalog, plan


REMEDIATE_HELP = {
    **COMMON_HELP,
    "runbook": "Runbook id (see `invoke validate` or runbooks/).",
    "method": "Method of the KB article: 1, 2, 3, 4 or auto (escalates, verifying after each).",
    "dry_run": "Show every step and condition; touch nothing, contact no host.",
    "show_scripts": "With --dry-run: print the full PowerShell of every step.",
    "out": "With --dry-run: write one .ps1 file per host and step under this folder.",
    "rollback": "Run the runbook's rollback steps instead of the procedure.",
}


@task(positional=["runbook"], iterable=["set"], help=REMEDIATE_HELP)
@cli_errors
def remediate(
    c: Any,
    runbook: str,
    method: str | None = None,
    inventory: str | None = None,
    hosts: str | None = None,
    set: list[str] | None = None,  # noqa: A002 - the option is --set
    dry_run: bool = False,
    show_scripts: bool = False,
    out: str | None = None,
    rollback: bool = False,
) -> None:
    """Fix a known OSD failure with a runbook: dry run, or run over WinRM on the inventory."""
    catalog, plan = build_plan(
        runbook,
        inventory=inventory,
        method=method,
        hosts=hosts,
        overrides=list(set or []),
        rollback=rollback,
    )
    if dry_run:
        from cmrunbook.dryrun import print_dry_run

        print_dry_run(
            plan, catalog, sys.stdout, show_scripts=show_scripts, out_dir=Path(out) if out else None
        )
        return
    raise UsageError("this build runs only with --dry-run")


@task(help={"inventory": "Also check this inventory (default: every file under inventory/)."})
@cli_errors
def validate(c: Any, inventory: str | None = None) -> None:
    """Check every runbook, the log catalog and the inventories; list all errors, exit 2 if any."""
    from cmrunbook.catalog import Catalog
    from cmrunbook.inventory import load_inventory
    from cmrunbook.project import project_root
    from cmrunbook.schema import stale_schemas

    root = project_root()
    catalog = Catalog(root)
    loaded, problems = catalog.load_all()
    inventories = [Path(inventory)] if inventory else sorted((root / "inventory").glob("*.yaml"))
    for path in inventories:
        try:
            load_inventory(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
    for name in stale_schemas(root / "schema"):
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


@task
@cli_errors
def schema(c: Any) -> None:
    """Regenerate schema/*.schema.json from the runbook and inventory models."""
    from cmrunbook.project import project_root
    from cmrunbook.schema import write_schemas

    for path in write_schemas(project_root() / "schema"):
        print(f"wrote {path}")


ns = Collection(remediate, validate, schema)
