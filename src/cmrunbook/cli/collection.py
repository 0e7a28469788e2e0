"""The task collection that `invoke` (through tasks.py) and `cmrunbook` both run.

A new task module adds its import and its task (or sub-collection, e.g. `inventory` for
`invoke inventory from-site`) here, and nowhere else.
"""

from __future__ import annotations

from invoke.collection import Collection

from cmrunbook.cli.diagnose import diagnose
from cmrunbook.cli.documents import checklist, report
from cmrunbook.cli.inventory import inventory
from cmrunbook.cli.lab import lab
from cmrunbook.cli.logcheck import log_check
from cmrunbook.cli.publish import publish
from cmrunbook.cli.remediate import check, remediate
from cmrunbook.cli.runbooks import list_runbooks
from cmrunbook.cli.schedule import schedule
from cmrunbook.cli.validate import schema, validate

ns = Collection(
    remediate,
    check,
    checklist,
    diagnose,
    report,
    schedule,
    validate,
    schema,
    lab,
    log_check,
    list_runbooks,
    publish,
)
ns.add_task(inventory)
