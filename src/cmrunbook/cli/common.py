"""Shared pieces of the invoke tasks: error-to-exit-code mapping, loading and planning.

Kept apart from the task modules (remediate, documents, diagnose, ...) so that they import
it without importing each other.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from invoke.exceptions import Exit
from invoke.tasks import Task, task

from cmrunbook.errors import (
    EXIT_INTERRUPTED,
    ConfigError,
    EnvironmentFailure,
    Interrupted,
    LockHeld,
    UsageError,
    os_error_text,
)
from cmrunbook.text import printable

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_ENVIRONMENT = 0, 1, 2, 3, 4
#: The reader of stdout went away (`| head`): the status a shell gives a command killed by
#: SIGPIPE (128 + 13), which Python turns into BrokenPipeError instead.
EXIT_PIPE_CLOSED = 141
HELP_FLAGS = ("--help", "-h")

COMMON_HELP = {
    "inventory": "Inventory YAML (default: inventory/example.yaml).",
    "hosts": "Comma-separated host globs, roles, group:NAME or site:CODE; !x excludes.",
    "set": "Override a runbook parameter: --set name=value (repeatable).",
}


def cli_task(
    *,
    name: str | None = None,
    positional: Sequence[str] = (),
    iterable: Sequence[str] = (),
    help: dict[str, str] | None = None,
) -> Callable[[F], Task[Any]]:
    """Every task's decorator, so that every task behaves alike on the command line.

    Long options only (invoke's automatic short flags collided: `--=STRING` in a help), `-h` or
    `--help` in place of a positional argument shows the task's help, invoke's `--dry` is
    refused, a closed output pipe ends quietly, and engine errors become the documented exit
    codes (`guarded`)."""

    def make(fn: F) -> Task[Any]:
        made: list[Task[Any]] = []  # the task, once made: its own help is shown from it
        body = guarded(fn, tuple(positional), name, lambda: made[0])
        made.append(
            task(
                name=name,
                positional=list(positional),
                iterable=list(iterable),
                help=help or {},
                auto_shortflags=False,
            )(body)
        )
        return made[0]

    return make


def guarded(
    fn: F,
    positional: tuple[str, ...],
    task_name: str | None,
    the_task: Callable[[], Task[Any]],
) -> F:
    """Checks before a task's body and the exit code after it.

    Before: a command line that is not UTF-8, a help flag the parser gave to a positional
    argument, and invoke's `--dry`/`-R` (its help says "echo commands instead of running", but
    no task runs a shell command, so the flag would silently run for real: #12). After: engine
    errors become a clear message on stderr and the documented exit code, and a reader that
    closed the pipe (`| head`) ends the task without a traceback."""

    @functools.wraps(fn)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        name = task_name or fn.__name__.replace("_", "-")
        try:
            _check_utf8(sys.argv[1:])
            if any(kwargs.get(arg) in HELP_FLAGS for arg in positional):
                show_task_help(the_task(), name)
                return None
            _refuse_dry(c, name, "dry_run" in inspect.signature(fn).parameters)
            result = fn(c, *args, **kwargs)
            sys.stdout.flush()
            return result
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
        except BrokenPipeError:
            stop_writing_stdout()
            raise Exit(code=EXIT_PIPE_CLOSED) from None
        except OSError as exc:
            # A name too long comes from the inventory (a host name): the operator's to fix.
            print(f"error: {printable(os_error_text(exc))}", file=sys.stderr)
            usage = exc.errno == errno.ENAMETOOLONG
            raise Exit(code=EXIT_USAGE if usage else EXIT_ENVIRONMENT) from None

    return wrapper  # type: ignore[return-value]


def stop_writing_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null, so that Python's own
    flush at exit does not print a second BrokenPipeError (Python's documented remedy)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return  # not a file (a test's StringIO): nothing to flush at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _refuse_dry(c: Any, name: str, has_dry_run: bool) -> None:
    """Refuse invoke's core `--dry` (`-R`, or `run.dry` in an invoke config file): it only
    changes invoke's own `c.run()`, which no task uses, so honouring it silently would mean
    running for real. Nothing has been read, planned or contacted when this refuses."""
    config = getattr(c, "config", None)
    if not (config and config.get("run", {}).get("dry")):
        return
    instead = (
        f"for a dry run that contacts no host use `{name} --dry-run`"
        if has_dry_run
        else f"{name} has no dry run"
    )
    raise UsageError(
        f"--dry (-R) is invoke's option to echo shell commands, and {name} runs none: "
        f"refused, nothing was done; {instead}"
    )


def show_task_help(shown: Task[Any], name: str) -> None:
    """Print a task's help as `--help NAME` does, under the command that was run."""
    from invoke.collection import Collection
    from invoke.program import Program

    binary = Path(sys.argv[0]).name if sys.argv else "invoke"
    if binary != "cmrunbook":
        binary = "inv[oke]"
    program = Program(namespace=Collection(shown), binary=binary)
    program.run([binary, "--help", name], exit=False)


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


def setup(runbook: str, inventory: str | None) -> tuple[Any, Any, Any]:
    from cmrunbook.load.inventory import load_inventory
    from cmrunbook.load.project import Project

    project = Project.find()
    loaded = project.load(runbook)
    inv = load_inventory(project.inventory(inventory))
    return project, loaded, inv


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
