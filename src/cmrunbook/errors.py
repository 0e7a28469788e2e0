"""Errors that point at a place in a file, so an operator can fix the file and not guess."""

from __future__ import annotations

import errno
from dataclasses import dataclass

#: A write that failed because the jump host has no room: a full disk, a file size limit
#: (EFBIG), a quota. All three are the same failure to the operator.
NO_ROOM = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a runbook, inventory or lab file, with where it is."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ConfigError(Exception):
    """Bad input: every problem found, not just the first, so one edit fixes them all.

    Raised before anything touches a host; the command line turns it into exit code 2.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(Exception):
    """A command-line mistake (unknown runbook, bad option value): exit code 2."""


class LockHeld(Exception):
    """Another run holds a host's lock: exit code 3, and nothing was changed."""


#: The exit code of a command ended by Ctrl-C, as a shell reports it.
EXIT_INTERRUPTED = 130


class Interrupted(Exception):
    """Ctrl-C at a question asked before the run started: exit code 130, nothing was changed."""


class EnvironmentFailure(Exception):
    """The jump host failed the tool (its disk is full, a file cannot be written): exit code 4.

    Not exit 1: a scheduled check must tell a crash of its own machine from a non-compliant
    host. The message says what failed, where, and how to continue.
    """


def naming(exc: OSError, path: object) -> OSError:
    """`exc` with the file it is about: a failed write() or flush() does not say which."""
    if exc.filename:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def os_error_text(exc: OSError) -> str:
    """One line saying what an operating-system error was and which file it was about."""
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    if exc.errno in NO_ROOM:
        return f"cannot write{where}: {what} (the jump host has no room for it)"
    if exc.errno == errno.ENAMETOOLONG:
        return f"file name too long for the file system:{where}"
    return f"{what}:{where}" if where else what
