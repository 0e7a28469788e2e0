"""The argv a simulated host makes of a WS-Man command line, by Windows' quoting rules.

The expected splits are Microsoft's own examples ("Parsing C command-line arguments",
learn.microsoft.com): backslashes count only before a double quote, quotes group spaces. A line
the C runtimes split differently is refused rather than guessed.
"""

from __future__ import annotations

import base64

import pytest
from helpers_lab import sim_lab

from cmrunbook.remote.winrm.host import BOOTSTRAP_ARGUMENTS, POWERSHELL
from cmrunbook_lab.winrm.cmdline import (
    AmbiguousCommandLine,
    command_line,
    encoded_command,
    split_command_line,
)


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ('"abc" d e', ["abc", "d", "e"]),
        ('a\\\\\\b d"e f"g h', ["a\\\\\\b", "de fg", "h"]),
        ('a\\\\\\"b c d', ['a\\"b', "c", "d"]),
        ('a\\\\\\\\"b c" d e', ["a\\\\b c", "d", "e"]),
        ("one\ttwo  three", ["one", "two", "three"]),
        ('"" x', ["", "x"]),
        ('"C:\\Program Files\\x\\\\" y', ["C:\\Program Files\\x\\", "y"]),
        ('-Command "& {Write-Output \\"hi there\\"}"', ["-Command", '& {Write-Output "hi there"}']),
    ],
)
def test_a_tricky_command_line_splits_as_windows_splits_it(line: str, argv: list[str]) -> None:
    assert split_command_line(line) == argv


def test_a_line_the_runtimes_split_differently_is_refused() -> None:
    with pytest.raises(AmbiguousCommandLine):
        split_command_line('a"b"" c d')


def test_the_engines_bootstrap_gives_back_its_script() -> None:
    argv = split_command_line(command_line(POWERSHELL, list(BOOTSTRAP_ARGUMENTS)))
    assert argv[0].lower().endswith("powershell.exe") or argv[0].lower() == "powershell"
    script = encoded_command(argv)
    assert script is not None and "OpenStandardInput" in script


def test_any_abbreviation_of_encodedcommand_is_read() -> None:
    encoded = base64.b64encode("Write-Output 1".encode("utf-16-le")).decode()
    for flag in ("-e", "-ec", "-enc", "/EncodedCommand", "-ENCODEDCOMMAND"):
        assert encoded_command(["powershell.exe", flag, encoded]) == "Write-Output 1"
    assert encoded_command(["powershell.exe", "-Command", encoded]) is None


def test_a_host_refuses_an_ambiguous_command_line_instead_of_guessing() -> None:
    lab, _ = sim_lab()
    host = next(name for name, h in lab.hosts.items() if h.has_winrm)
    backend = lab.backend(host)
    assert backend is not None
    command = backend.start_command(POWERSHELL, ['-Command "a""b" c'])
    out, err, done, code = command.receive(0.01)
    assert done and code == 1 and out == b""
    assert b"cannot tell how this command line is split" in err
