"""`invoke list`: the runbooks there are, with their KB, methods and the command that runs each.

`invoke --list` names the tasks; this names what they act on, so that nobody has to read
runbooks/ to find the id to type.
"""

from __future__ import annotations

import sys
from typing import Any

from cmrunbook.cli.common import cli_task


@cli_task(name="list")
def list_runbooks(c: Any) -> None:
    """List the runbooks: id, KB, methods and the command that runs each.

    A runbook that does not load is named on stderr; `invoke validate` says what is wrong."""
    from cmrunbook.load.project import Project
    from cmrunbook.load.runbook import CHECK_SUFFIXES

    loaded, problems = Project.find().load_all()
    rows = [("RUNBOOK", "KB", "METHODS", "COMMAND", "TITLE")]
    for lr in sorted(loaded, key=lambda lr: lr.runbook.id):
        rb = lr.runbook
        check = next((rb.id.removesuffix(s) for s in CHECK_SUFFIXES if rb.id.endswith(s)), None)
        methods = ", ".join([m.id for m in rb.methods] + (["auto"] if rb.methods else []))
        command = f"invoke check {check}" if check else f"invoke remediate {rb.id}"
        rows.append((rb.id, rb.source.kb, methods or "-", command, rb.title))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]))
    broken = sorted({str(p.file) for p in problems})
    if broken:
        print(f"warning: not listed, see `invoke validate`: {', '.join(broken)}", file=sys.stderr)
