"""The command line a WS-Man Command request starts, and the argv powershell.exe makes of it.

Backends need argv (for example to find ``-EncodedCommand``), but pywinrm sends all arguments as
one space-joined string, so the split has to follow Windows' quoting rules, not POSIX ones.
mslex implements them: backslashes count only before a double quote (2n backslashes and a quote:
n backslashes and a delimiter; 2n+1: n backslashes and a literal quote), spaces and tabs separate
arguments outside quotes (learn.microsoft.com, "Parsing C command-line arguments").

The one rule the C runtimes disagree on is a doubled quote inside a quoted argument: for
``a"b"" c d`` mslex's legacy-msvcrt rule gives ``ab"``, ``c``, ``d`` (the split Microsoft's page
shows) and its UCRT rule gives ``ab" c d``. Which one powershell.exe's startup follows is
UNCONFIRMED, so a command line on which the two disagree is refused
(:class:`AmbiguousCommandLine`) instead of guessed; the engine's own command lines contain no
doubled quote. cmd.exe's rewriting (``^``, ``%VAR%``) happens before, and the lab does not
simulate it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import mslex

__all__ = ["AmbiguousCommandLine", "command_line", "encoded_command", "split_command_line"]


class AmbiguousCommandLine(ValueError):
    """The C runtimes split this command line differently; the lab will not guess which."""


def command_line(command: str, arguments: Sequence[str]) -> str:
    """The command line Windows builds from a Command request: command and arguments joined."""
    return " ".join([command, *arguments]) if arguments else command


def split_command_line(line: str) -> list[str]:
    """Split a Windows command line into argv as a C program's startup code does.

    Raises AmbiguousCommandLine when the runtimes' rules for a doubled quote inside quotes give
    different argv for ``line``.
    """
    try:
        return mslex.split(line, like_cmd=False, check=False, ucrt=None)
    except ValueError as exc:
        raise AmbiguousCommandLine(str(exc)) from exc


_ENCODED_COMMAND_NAMES = {"e", "ec", *("encodedcommand"[:n] for n in range(2, 15))}


def encoded_command(argv: Sequence[str]) -> str | None:
    """The script passed to ``powershell.exe -EncodedCommand`` (any accepted abbreviation), or None.

    A simulated host has to read what the engine really sent; for a one-liner that is the
    base64 UTF-16LE text after ``-EncodedCommand``.
    """
    for index, arg in enumerate(argv[:-1]):
        if arg[:1] in "-/" and arg[1:].lower() in _ENCODED_COMMAND_NAMES:
            try:
                return base64.b64decode(argv[index + 1], validate=True).decode("utf-16-le")
            except (ValueError, UnicodeDecodeError):
                return None
    return None
