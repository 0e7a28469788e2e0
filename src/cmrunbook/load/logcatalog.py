"""The one editable catalog of site-system logs and the lines that mean success or failure.

Several of these strings are inferred rather than documented (kb/FACTS.md marks them
UNCONFIRMED); keeping them in `runbooks/_logs.yaml` lets an operator correct one without
touching a template. Every pattern says where it was seen: a real log sample it matches
(`seen_in`, checked by the tests against the sample), or `unconfirmed` with what would confirm
it; `invoke log-check` judges a site's own saved log with the same rules before a real run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cmrunbook.errors import ConfigError
from cmrunbook.load.runbook import Confidence, Strict
from cmrunbook.load.sourcemap import load_yaml
from cmrunbook.load.validation import parse

PATTERN_KINDS = ("failure", "reboot", "success")  # the order a line is judged in


class Pattern(Strict):
    """One line shape and the evidence for it."""

    re: str = Field(description="Python regular expression, searched in each log message.")
    seen_in: str | None = Field(
        None,
        description="A real log sample (shared/logs/<file>) with a line it matches, and what "
        "that sample is (an analogue of this log, or this log itself).",
    )
    unconfirmed: str | None = Field(
        None, description="No real log shows it: what line, from which log, would confirm it."
    )

    @model_validator(mode="after")
    def _one_kind_of_evidence(self) -> Pattern:
        if (self.seen_in is None) == (self.unconfirmed is None):
            raise ValueError("give exactly one of seen_in (a real sample) or unconfirmed")
        return self


class Expectation(Strict):
    """The lines that end a wait: the first failure, reboot or success line wins."""

    success: list[Pattern]
    failure: list[Pattern] = Field(default_factory=list)
    reboot: list[Pattern] = Field(
        default_factory=list, description="Success that asks for a restart."
    )
    required: bool = Field(
        True,
        description="False: the wait does not need this log's success (it may not be written "
        "at all); a failure line in it still ends the wait.",
    )
    confirm: Literal["distribution-status"] | None = Field(
        None,
        description="A second signal the wait also needs after the log's success: "
        "distribution-status = every DP of the package installed at a newer version.",
    )
    confidence: Confidence
    provenance: str


class LogDef(Strict):
    role: str
    what: str
    expect: dict[str, Expectation]


class LogCatalog(Strict):
    """The catalog file's format."""

    dirs: list[str] = Field(
        description="Candidate log folders; a log absent at arm time is watched in all of them."
    )
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
            for kind in PATTERN_KINDS:
                for i, pat in enumerate(getattr(exp, kind)):
                    try:
                        re.compile(pat.re)
                    except re.error as exc:
                        where = ("logs", log, "expect", name, kind, i, "re")
                        problems.append(smap.problem(where, f"bad regular expression: {exc}"))
    if problems:
        raise ConfigError(problems)
    return cat
