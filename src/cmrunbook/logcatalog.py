"""The one editable catalog of site-system logs and the lines that mean success or failure.

Several of these strings are inferred rather than documented (kb/FACTS.md marks them
UNCONFIRMED); keeping them in `runbooks/_logs.yaml` lets an operator correct one without
touching a template.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from cmrunbook.errors import ConfigError
from cmrunbook.runbook import Confidence, Strict
from cmrunbook.sourcemap import load_yaml
from cmrunbook.validation import parse


class Expectation(Strict):
    """The lines that end a wait: the first success or failure line wins."""

    success: list[str]
    failure: list[str] = Field(default_factory=list)
    reboot: list[str] = Field(default_factory=list, description="Success that asks for a restart.")
    confidence: Confidence
    provenance: str


class LogDef(Strict):
    role: str
    what: str
    expect: dict[str, Expectation]


class LogCatalog(Strict):
    """The catalog file's format."""

    dirs: list[str] = Field(description="Candidate log folders, first existing one wins.")
    dirs_confidence: Confidence
    dirs_provenance: str
    logs: dict[str, LogDef]

    def expectation(self, log: str, expect: str) -> Expectation:
        return self.logs[log].expect[expect]


def load_log_catalog(path: Path, display: str | None = None) -> LogCatalog:
    data, smap = load_yaml(path, display)
    cat = parse(LogCatalog, data, smap)
    problems = []
    for log, d in cat.logs.items():
        for name, exp in d.expect.items():
            for kind in ("success", "failure", "reboot"):
                for i, pat in enumerate(getattr(exp, kind)):
                    try:
                        re.compile(pat)
                    except re.error as exc:
                        where = ("logs", log, "expect", name, kind, i)
                        problems.append(smap.problem(where, f"bad regular expression: {exc}"))
    if problems:
        raise ConfigError(problems)
    return cat
