"""Shared pieces of the invoke tasks: error-to-exit-code mapping, loading and planning.

Kept apart from tasks.py so the task modules (cli_docs, cli_ops) and tasks.py import them
without importing each other.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.exceptions import Exit

from cmrunbook.errors import (
    EXIT_INTERRUPTED,
    ConfigError,
    EnvironmentFailure,
    Interrupted,
    LockHeld,
    UsageError,
    os_error_text,
)
from cmrunbook.run.console import printable

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_ENVIRONMENT = 0, 1, 2, 3, 4

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
            _check_utf8(sys.argv[1:])
            return fn(*args, **kwargs)
        except ConfigError as exc:
            for p in exc.problems:
                print(f"error: {printable(str(p))}", file=sys.stderr)
            raise Exit(code=EXIT_USAGE) from None
        except UsageError as exc:
            print(f"error: {printable(str(exc))}", file=sys.stderr)
            raise Exit(code=EXIT_USAGE) from None
        except LockHeld as exc:
            print(f"error: {printable(str(exc))}", file=sys.stderr)
            raise Exit(code=EXIT_LOCKED) from None
        except Interrupted as exc:
            print(f"interrupted: {printable(str(exc))}", file=sys.stderr)
            raise Exit(code=EXIT_INTERRUPTED) from None
        except EnvironmentFailure as exc:
            print(f"error: {printable(str(exc))}", file=sys.stderr)
            raise Exit(code=EXIT_ENVIRONMENT) from None
        except OSError as exc:
            # A name too long comes from the inventory (a host name): the operator's to fix.
            print(f"error: {printable(os_error_text(exc))}", file=sys.stderr)
            usage = exc.errno == errno.ENAMETOOLONG
            raise Exit(code=EXIT_USAGE if usage else EXIT_ENVIRONMENT) from None

    return wrapper  # type: ignore[return-value]


def _check_utf8(argv: list[str]) -> None:
    """Refuse a command line whose bytes are not UTF-8 (Python keeps them as lone surrogates):
    in --set they reached the scripts as invalid text, and anywhere they made the journal's run
    event and the reports fail to write, with a traceback (attack 1c, 6b)."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = arg.encode("utf-8", "surrogateescape")
            raise UsageError(f"the command line argument {raw!r} is not UTF-8 text") from None


def help_if_asked(value: str, task_name: str) -> None:
    """`invoke remediate --help`: invoke's parser gives `--help` to a pending positional argument;
    show invoke's own help for the task instead of looking for a runbook called `--help`."""
    if value in ("--help", "-h"):
        os.execvp(sys.argv[0], [sys.argv[0], "--help", task_name])


def setup(runbook: str, inventory: str | None) -> tuple[Any, Any, Any]:
    from cmrunbook.load.catalog import Catalog
    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.load.project import inventory_path, project_root

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
    from cmrunbook.plan.planner import Planner

    catalog, loaded, inv = setup(runbook, inventory)
    plan = Planner(catalog, loaded, inv).plan(
        method=method, hosts=hosts, overrides=overrides, rollback=rollback
    )
    return catalog, plan
