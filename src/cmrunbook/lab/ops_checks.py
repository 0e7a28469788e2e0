"""Read-only checks and fleet probes (templates/checks, templates/boot-image): filled in as
those templates land; see `cmrunbook.lab.scripts` for how an operation is recognised."""

from __future__ import annotations
