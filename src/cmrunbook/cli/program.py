"""The `cmrunbook` command: the same tasks as `invoke` in the project folder, from anywhere.

A jump host's scheduler can call `cmrunbook check client-hotfix ...` without a tasks.py in its
working folder; runbooks/ and templates/ are found as `cmrunbook.load.project` says
(CMRUNBOOK_ROOT, the working folder or above, else the files shipped with the package).
"""

from __future__ import annotations

from invoke.program import Program

from cmrunbook import __version__


def main() -> None:
    from cmrunbook.cli.tasks import ns

    Program(namespace=ns, version=__version__, name="cmrunbook", binary="cmrunbook").run()
