"""Errors that point at a place in a file, so an operator can fix the file and not guess."""

from __future__ import annotations

from dataclasses import dataclass


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
