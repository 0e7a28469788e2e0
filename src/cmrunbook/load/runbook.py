"""The runbook format: a KB procedure as data (steps, conditions, log waits), never as code.

These models are the single definition of the format: the loader validates against them and
`schema/runbook.schema.json` is generated from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

ConfigMgrVersion = Literal["2003", "2007", "2012r2", "cb"]
Role = Literal["site_server", "distribution_point", "client"]
Confidence = Literal["seed", "docs", "community", "UNCONFIRMED"]
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
#: A runbook whose id ends so is a read-only check, run as `invoke check <id without it>`.
CHECK_SUFFIXES = ("-check", "-precheck")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


class Strict(BaseModel):
    """Base for every format model: unknown keys are errors, not silently ignored typos."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_range(value: str | int) -> tuple[int, int]:
    """'3' or 3 -> (3, 3); '1-6' -> (1, 6). KB step numbers start at 1."""
    m = _RANGE.match(str(value))
    if not m:
        raise ValueError(f"expected a KB step number or range like '1-6', got {value!r}")
    first = int(m.group(1))
    last = int(m.group(2) or first)
    if first < 1 or last < first:
        raise ValueError(f"step range {value!r} must count up from 1")
    return first, last


class Source(Strict):
    """Which document the procedure comes from, so every run can cite it."""

    document: str = Field(description="File name of the source document under shared/kb/.")
    kb: str = Field(description="KB article number, e.g. 'KB2910552'.")
    title: str
    section: str | None = Field(
        None, description="Section of the document, e.g. 'More Information'."
    )


#: Parameter types whose values are text (a list: of texts), which YAML must not have retyped.
TEXT_TYPES = frozenset({"str", "choice", "list"})


class Parameter(Strict):
    """An operator-tunable value: uncertain facts are parameters with provenance, not constants."""

    type: Literal["str", "int", "bool", "choice", "version", "list"]
    default: Any = None
    choices: list[str | int] | None = None
    help: str
    confidence: Confidence = "seed"
    provenance: str | None = Field(
        None, description="Where the default comes from; required when confidence is UNCONFIRMED."
    )


class Symptom(Strict):
    """A log signature that identifies this failure, used by `diagnose`.

    Most symptoms are the failure their runbook fixes. A look-alike failure that no runbook
    fixes (same log lines plus one that tells it apart) is kept next to the signature it must
    not be confused with: it names its own `kb` and gives the KB's fix in words (`remedy`),
    and `diagnose` then offers no command.
    """

    id: str = Field(pattern=ID_PATTERN)
    title: str
    kb: str | None = Field(
        None, description="The KB of this failure when it is not the runbook's own KB."
    )
    logs: list[str] = Field(
        description="Log file names this signature is found in, e.g. smsts.log."
    )
    any: list[str] = Field(default_factory=list, description="Regexes; one match is evidence.")
    all: list[str] = Field(
        default_factory=list, description="Regexes that must all match somewhere in the file."
    )
    none: list[str] = Field(
        default_factory=list,
        description="Regexes none of which may match anywhere in the file: the lines that "
        "tell a look-alike failure apart.",
    )
    cause: str = Field(description="The cause, in one sentence.")
    fix: str = Field("", description="Arguments after `invoke remediate <runbook>` that fix it.")
    remedy: str | None = Field(
        None,
        description="For a failure no runbook fixes: the KB's fix in words (then `fix` is "
        "empty, `kb` is set, and diagnose names no command).",
    )

    @model_validator(mode="after")
    def _fix_or_remedy(self) -> Symptom:
        if self.remedy is None and not self.fix.strip():
            raise ValueError("a symptom needs 'fix' (the runbook's arguments) or 'remedy'")
        if self.remedy is not None and (self.fix.strip() or not self.kb):
            raise ValueError(
                "a symptom with 'remedy' (no runbook fixes it) names its 'kb' and has no 'fix'"
            )
        return self


class LogWait(Strict):
    """Wait for lines in a site-system log, armed (its size recorded) before the triggering step."""

    logs: list[str] = Field(
        description="Log names from the catalog (runbooks/_logs.yaml), e.g. MCSSetup.log."
    )
    expect: str = Field(description="Pattern set from the catalog, e.g. 'uninstall' or 'install'.")
    armed_before: str = Field(description="Id of the step that makes the log write these lines.")
    timeout: int = Field(1800, ge=1, description="Seconds before the wait fails.")
    poll: int = Field(10, ge=1, description="Seconds between reads of the log.")


class ProbeCondition(Strict):
    """A condition only the live system decides: which probe, and the value that runs the step."""

    probe: str
    equals: Any = True


class SiteEffect(Strict):
    """What a step does to a site-wide state (`site_states`), for each loop item.

    change: the item may be left changed from the step's start (write-ahead) until a restore;
    restore: a completed run of the step sets the item back.
    """

    state: str = Field(description="Id of the runbook's site state this step changes.")
    effect: Literal["change", "restore"]


class Step(Strict):
    """One concrete action, citing the KB step it implements."""

    id: str = Field(pattern=ID_PATTERN, description="Stable id; journals and resume key on it.")
    kb_steps: str | int = Field(description="KB step number or range within its section.")
    kb: str = Field(description="Human citation, e.g. 'Method 3, step 5'.")
    title: str
    kind: Literal["script", "manual", "wait_log", "reboot"] = "script"
    on: Literal["target", "site_server"] = Field(
        "target", description="Run on the target host or on its site's SMS Provider."
    )
    click_path: str | None = Field(None, description="What a person clicks in the console.")
    expect: str | None = Field(None, description="The result a person checks off.")
    template: str | None = Field(None, description="PowerShell template under templates/.")
    vars: dict[str, Any] = Field(default_factory=dict)
    when: str | None = Field(None, description="Jinja2 expression over the inventory (host, site).")
    when_probe: ProbeCondition | None = None
    for_each: str | None = Field(None, description="Probe id whose items this step loops over.")
    destructive: bool = False
    wait: LogWait | None = None
    reboot: Literal["if_pending", "always"] | None = None
    settle: int | str = Field(
        0,
        description="Seconds to keep retrying a check that has not passed, or the name of an int "
        "parameter holding them: the site applies some changes asynchronously (a DP rewrites its "
        "multicast key a while after an image changes, and the MP signs it later still).",
    )
    site_state: SiteEffect | None = Field(
        None, description="This step changes or restores a site-wide state (see site_states)."
    )
    note: str | None = None

    @field_validator("kb_steps")
    @classmethod
    def _range(cls, v: str | int) -> str | int:
        parse_range(v)
        return v

    @property
    def kb_range(self) -> tuple[int, int]:
        return parse_range(self.kb_steps)


class IncludeSpec(Strict):
    """Reuse another method's steps by KB step range ("Method 4 step 1 = Method 3 steps 1-6")."""

    method: str
    steps: str
    kb: str = Field(description="This method's own citation, e.g. 'Method 4, step 1'.")
    kb_steps: str | int
    erratum: str | None = Field(
        None, description="Where the source text is wrong, and how it was read."
    )

    @field_validator("steps", "kb_steps")
    @classmethod
    def _range(cls, v: str | int) -> str | int:
        parse_range(v)
        return v


class Include(Strict):
    include: IncludeSpec


def _step_or_include(v: Any) -> str:
    return "<include>" if isinstance(v, dict) and "include" in v else "<step>"


StepItem = Annotated[
    Annotated[Step, Tag("<step>")] | Annotated[Include, Tag("<include>")],
    Discriminator(_step_or_include),
]


class Method(Strict):
    """One of a KB article's alternative methods; `--method auto` escalates through them."""

    id: str
    title: str
    kb: str = Field(description="Section citation, e.g. 'Method 3'.")
    steps: list[StepItem]


class Probe(Strict):
    """A read-only fact gathered from a host at run time; never changes anything."""

    id: str = Field(pattern=ID_PATTERN)
    title: str
    on: Literal["target", "site_server"] = "target"
    template: str
    vars: dict[str, Any] = Field(default_factory=dict)
    returns: Literal["bool", "list", "value"]
    fields: list[str] = Field(default_factory=list, description="Item fields, for list probes.")


class SiteStateSpec(Strict):
    """State shared by every target of a site that some steps change (the site's OS images).

    A run saves it once per site before the first change (the `items` probe, journaled), lets
    one target of a site at a time hold it changed, and when a run stops with items still
    changed (failure, timeout, Ctrl-C; after a kill, on --resume) runs the `restore` step for
    each of them on the site server.
    """

    id: str = Field(pattern=ID_PATTERN)
    title: str
    items: str = Field(
        description="Probe (on: site_server, returns: list) whose items the changing steps loop "
        "over: taken once per site, before the first change."
    )
    read_by: list[str] = Field(
        default_factory=list,
        description="Other site-server probes that read this state: taken once per site too, "
        "before any change, so that no target probes it while another holds it changed.",
    )
    restore: str = Field(description="Id of the step (a restore) that sets one item back.")
    restored: str = Field(
        description="How the summary names what was set back, e.g. 'multicast restored on images'."
    )


class Targets(Strict):
    """Which inventory hosts a run of this runbook works on."""

    role: Role
    when: str | None = Field(None, description="Jinja2 expression over the inventory.")


#: DCM rule operators a published check may use: RuleOperatorType (docs/reference/
#: CONFIGURATION-BASELINES.md 3.6), the comparisons that apply to a file version.
RuleOperator = Literal[
    "Equals", "NotEquals", "GreaterThan", "LessThan", "GreaterEquals", "LessEquals"
]
_WILDCARDS = re.compile(r"[*?\\/]")


class PublishFolder(Strict):
    """A folder the file may be in: one File part of the configuration item."""

    path: str = Field(min_length=1, description="Folder on the client; %windir% is allowed.")
    only_64bit: bool = Field(
        False,
        description="The folder exists on 64-bit Windows only (the File part's Is64Bit, "
        "CONFIGURATION-BASELINES.md 3.3).",
    )


class PublishRule(Strict):
    """The rule the file must meet: a file property compared with a runbook parameter."""

    property: Literal["Version"] = Field(
        "Version", description="File property (FilePropertiesType Version, 3.5)."
    )
    operator: RuleOperator
    parameter: str = Field(description="Runbook parameter (type version) holding the operand.")


class PublishPlatform(Strict):
    """The operating system the configuration item applies to (OSInfoType, 3.2)."""

    major_version: int = Field(ge=0)
    minor_version: int = Field(ge=0)
    build_version: int = Field(ge=0)


class Publish(Strict):
    """How the check becomes a configuration item and baseline (`invoke publish`).

    A runbook that declares this block can be published to a site; the definition is built by
    cmrunbook (render/baseline.py), never written by hand in the runbook.
    """

    name: str = Field(min_length=1, description="Display name of the item and the baseline.")
    description: str = ""
    file: str = Field(min_length=1, description="File name, without folder or wildcards.")
    folders: list[PublishFolder] = Field(min_length=1)
    rule: PublishRule
    platform: PublishPlatform

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # A filter without wildcards needs Depth Base (SearchDepthType, 3.4), which is what the
        # definition uses: a wildcard would silently change the search.
        if _WILDCARDS.search(v):
            raise ValueError(f"{v!r}: a file name without folder or wildcards (* ? \\ /)")
        return v


class Runbook(Strict):
    """A KB procedure: identity, symptoms, parameters and ordered steps."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="cmrunbook runbook")

    id: str = Field(pattern=ID_PATTERN)
    title: str
    summary: str
    source: Source
    applies_to: list[ConfigMgrVersion]
    targets: Targets
    guidance: list[str] = Field(
        default_factory=list, description="Advice printed before the steps."
    )
    symptoms: list[Symptom] = Field(default_factory=list)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    probes: list[Probe] = Field(default_factory=list)
    prechecks: list[Step] = Field(default_factory=list)
    methods: list[Method] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    verify: list[Step] = Field(default_factory=list, description="Run after each method.")
    rollback: list[Step] = Field(default_factory=list)
    site_states: list[SiteStateSpec] = Field(
        default_factory=list, description="Site-wide state that steps change and restore."
    )
    publish: Publish | None = Field(
        None, description="The check as a configuration baseline (`invoke publish`)."
    )

    def probe(self, probe_id: str) -> Probe | None:
        return next((p for p in self.probes if p.id == probe_id), None)

    def method(self, method_id: str) -> Method | None:
        return next((m for m in self.methods if m.id == method_id), None)

    def site_state(self, state_id: str) -> SiteStateSpec | None:
        return next((s for s in self.site_states if s.id == state_id), None)


def is_read_only_check(rb: Runbook) -> bool:
    """A check that reads and changes nothing: named as one, and with nothing a person signs
    off per host (no method, rollback, site-wide state, destructive, manual, restart or log-wait
    step). Both, since a script step's name cannot say whether it writes."""
    steps = [*rb.prechecks, *rb.steps]
    return (
        rb.id.endswith(CHECK_SUFFIXES)
        and not (rb.methods or rb.rollback or rb.site_states)
        and all(
            s.kind == "script" and not s.destructive and s.reboot is None and s.site_state is None
            for s in steps
        )
    )
