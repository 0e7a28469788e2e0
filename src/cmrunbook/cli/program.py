"""The `cmrunbook` command: the same tasks as `invoke` in the project folder, from anywhere.

A jump host's scheduler can call `cmrunbook check client-hotfix ...` without a tasks.py in its
working folder; runbooks/ and templates/ are found as `cmrunbook.load.project` says
(CMRUNBOOK_ROOT, the working folder or above, else the files shipped with the package).
"""

from __future__ import annotations

from invoke.program import Program

from cmrunbook import __version__
from cmrunbook.cli.common import EXIT_PIPE_CLOSED, stop_writing_stdout


class CmrunbookProgram(Program):
    """invoke's Program, with cmrunbook's tasks before invoke's core options in the help, and
    no BrokenPipeError traceback when `--list` or `--help` goes into `head`."""

    def print_help(self) -> None:
        """`cmrunbook` alone or `cmrunbook --help`: what the tool does first, then invoke's core
        options (most people never need them)."""
        print(f"Usage: {self.binary} [--core-opts] <task> [--task-opts] ...")
        print(f"       {self.binary} --help <task>     (or: {self.binary} <task> --help)")
        print("")
        self.list_tasks()
        print("Core options (invoke's):")
        print("")
        self.print_columns(self.initial_context.help_tuples())

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        try:
            super().run(argv, exit)
        except BrokenPipeError:
            stop_writing_stdout()
            raise SystemExit(EXIT_PIPE_CLOSED) from None


def main() -> None:
    from cmrunbook.cli.collection import ns

    CmrunbookProgram(namespace=ns, version=__version__, name="cmrunbook", binary="cmrunbook").run()
