"""The `cmrunbook` command: the same tasks as `invoke` in the project folder, from anywhere.

A jump host's scheduler can call `cmrunbook check client-hotfix ...` without a tasks.py in its
working folder; runbooks/ and templates/ are found from CMRUNBOOK_ROOT or the working folder.
"""

from __future__ import annotations

from invoke.program import Program

from cmrunbook import __version__


def main() -> None:
    from cmrunbook.cli.collection import ns

    Program(namespace=ns, version=__version__, name="cmrunbook", binary="cmrunbook").run()
