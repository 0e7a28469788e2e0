"""Planning: the ordered, concrete steps for each target host, before anything runs.

Resolves the method (or the `auto` escalation 1 -> 2 -> 3 -> 4 with a verification after each),
includes by KB step range, `when` conditions the inventory decides, and which host each step runs
on. What only the live system can decide (probe conditions, loops over discovered items, reboots
"if prompted") stays in the plan as a marked decision for run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jinja2

from cmrunbook.errors import ConfigError, Problem, UsageError
from cmrunbook.load.catalog import Loaded, resolve_include
from cmrunbook.load.context import site_context
from cmrunbook.load.inventory import HostView, Inventory
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import TEXT_TYPES, Parameter, Runbook, Step
from cmrunbook.load.sourcemap import collector_paused
from cmrunbook.load.validation import text_problems


@dataclass(frozen=True)
class PlannedStep:
    """A step placed in one host's plan: where it runs, why, and what decides it."""

    key: str
    step: Step
    citation: str
    run_on: str
    skip_reason: str | None = None
    run_time_condition: str | None = None
    arms: tuple[str, ...] = ()
    note: str | None = None
    settle: int = 0


@dataclass
class Stage:
    """A block of steps: the pre-checks, one method, a verification, or the rollback."""

    name: str
    title: str
    kind: str
    steps: list[PlannedStep]
    method: str | None = None


@dataclass(frozen=True)
class SharedPlan:
    """The stages of one class of alike targets, planned once, for the first of them.

    Targets whose parameters come from the same vars and who read alike in every value the step
    conditions read (bench/plan_scale.py: a 10,000-host fleet is at most a few such classes per
    runbook) get the same steps, decisions and notes; only the names differ: the host a step
    runs on (the target, or its site's provider for a `site_server` step) and the target named
    in a skip reason. Each target's own steps are made from these when first read, so a dry run
    over a fleet never builds 170,000 steps it only prints (docs/dryrun.py prints a class once).
    """

    stages: list[Stage]
    target: str
    provider: str

    def stages_for(self, target: str, provider: str) -> list[Stage]:
        """The stages as `target` (whose site's provider is `provider`) has them: its own
        lists, so that no target's plan can change another's."""
        same = (target, provider) == (self.target, self.provider)
        return [
            Stage(
                st.name,
                st.title,
                st.kind,
                list(st.steps)
                if same
                else [
                    replace(
                        ps,
                        run_on=provider if ps.step.on == "site_server" else target,
                        skip_reason=_skipped(ps.step, target) if ps.skip_reason else None,
                    )
                    for ps in st.steps
                ],
                st.method,
            )
            for st in self.stages
        ]


class HostPlan:
    """One target's plan: its own stages, or those of its class of alike targets (`shared`),
    made for it when first read."""

    def __init__(
        self,
        target: HostView,
        params: dict[str, Any],
        stages: list[Stage] | None = None,
        *,
        shared: SharedPlan | None = None,
        provider: str = "",
    ) -> None:
        if stages is None and shared is None:
            raise ValueError("a host plan needs its stages or a shared plan")
        self.target = target
        self.params = params
        self.shared = shared
        #: The name of the target's site provider (where its `site_server` steps run).
        self.provider = provider
        self._stages = stages

    @property
    def stages(self) -> list[Stage]:
        if self._stages is None:
            assert self.shared is not None  # checked in __init__
            self._stages = self.shared.stages_for(self.target.name, self.provider)
        return self._stages

    def all_steps(self) -> list[PlannedStep]:
        return [s for st in self.stages for s in st.steps]


@dataclass
class Plan:
    loaded: Loaded
    inventory: Inventory
    method: str | None
    rollback: bool
    hosts: list[HostPlan]
    skipped_hosts: list[tuple[str, str]] = field(default_factory=list)
    selected: bool = False

    @property
    def runbook(self) -> Runbook:
        return self.loaded.runbook

    @property
    def escalates(self) -> bool:
        return self.method == "auto"


#: What a conversion of a wrong value raises: int('big') a ValueError, int(float('inf')) an
#: OverflowError, int([1]) a TypeError (YAML gives any of these types).
_CONVERSION_ERRORS = (ValueError, TypeError, OverflowError)


def _convert(p: Parameter, value: Any) -> Any:
    """`value` in the parameter's type; raises one of _CONVERSION_ERRORS when it is not one."""
    if p.type == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)  # int() would quietly drop the fraction
        return int(value)
    if p.type == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ValueError(value)
    if p.type == "list":
        if isinstance(value, list):
            return [str(v) for v in value]
        return [v.strip() for v in str(value).split(",") if v.strip()]
    if p.type == "choice":
        allowed = [str(c) for c in p.choices or []]
        if str(value) not in allowed:
            raise ValueError(value)
        return str(value)
    return str(value)


def _not_a(name: str, p: Parameter, value: Any) -> str:
    expected = f"one of {p.choices}" if p.type == "choice" else f"a {p.type}"
    return f"{name}={value!r} is not {expected}"


def coerce(name: str, p: Parameter, value: Any, origin: str) -> Any:
    """A parameter value from the command line or inventory, in the parameter's own type."""
    try:
        return _convert(p, value)
    except _CONVERSION_ERRORS:
        raise UsageError(f"{origin}: {_not_a(name, p, value)}") from None


def retyped_vars(inv: Inventory, runbooks: Sequence[Runbook]) -> list[Problem]:
    """Every inventory var (top-level, group or host) that is a text parameter of one of the
    runbooks and that YAML typed as something else: what `validate` reports before any plan."""
    text = {
        name: p.type == "list"
        for rb in runbooks
        for name, p in rb.parameters.items()
        if p.type in TEXT_TYPES
    }
    layers: list[tuple[tuple[str, ...], dict[str, Any]]] = [(("vars",), inv.file.vars)]
    layers += [(("groups", g, "vars"), grp.vars) for g, grp in inv.file.groups.items()]
    layers += [(("hosts", h, "vars"), host.vars) for h, host in inv.file.hosts.items()]
    return [
        problem
        for path, layer in layers
        for name, value in layer.items()
        if name in text
        for problem in text_problems(name, value, (*path, name), inv.smap, listed=text[name])
    ]


def resolve_params(
    rb: Runbook,
    host: HostView,
    overrides: Mapping[str, Any],
    inv: Inventory,
    settled: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runbook defaults, then inventory vars (global, group, host), then the command line.

    A wrongly typed inventory var is reported at its line in the inventory, wherever (top-level,
    group or host vars) the value this host sees was written.

    `settled` keeps, for one runbook and one set of overrides, the value of each parameter that
    no inventory var sets: it is the same for every host that has no such var, so a fleet's
    defaults are converted once, not once per host (a list is copied for each host).
    """
    if (
        settled is not None
        and len(settled) == len(rb.parameters)
        and host.vars.keys().isdisjoint(rb.parameters)
    ):  # a host on the defaults (most of a fleet): nothing of its own to check or convert
        return {
            name: value[:] if isinstance(value, list) else value
            for name in rb.parameters
            for value in (settled[name],)
        }
    retyped = [
        problem
        for name, p in rb.parameters.items()
        if name in host.vars and p.type in TEXT_TYPES
        for problem in text_problems(
            name,
            host.vars[name],
            inv.var_path(host.name, name),
            inv.smap,
            listed=p.type == "list",
        )
    ]
    if retyped:
        raise ConfigError(retyped)
    params: dict[str, Any] = {}
    for name, p in rb.parameters.items():
        if settled is not None and name in settled and name not in host.vars:
            value = settled[name]
            params[name] = value[:] if isinstance(value, list) else value
            continue
        value = p.default
        if name in host.vars:
            where = inv.var_path(host.name, name)
            written = host.vars[name]
            try:
                value = _convert(p, written)
            except _CONVERSION_ERRORS:
                message = (
                    f"{_not_a(name, p, written)} "
                    f"(parameter of runbook {rb.id}, for host {host.name})"
                )
                raise ConfigError([inv.smap.problem(where, message)]) from None
        if name in overrides:
            value = coerce(name, p, overrides[name], "--set")
        params[name] = value if value is None else coerce(name, p, value, f"runbook {rb.id}")
        if settled is not None and name not in host.vars:
            value = params[name]
            settled[name] = value[:] if isinstance(value, list) else value
    return params


def parse_overrides(rb: Runbook, pairs: Sequence[str]) -> dict[str, str]:
    """`--set name=value` pairs, each naming a parameter of the runbook."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--set expects name=value, got {pair!r}")
        if name not in rb.parameters:
            raise UsageError(
                f"--set {name}: runbook {rb.id} has no such parameter; "
                f"known: {', '.join(sorted(rb.parameters))}"
            )
        out[name] = value
    return out


class Planner:
    """Builds plans; holds the compiled `when` expressions of one runbook."""

    def __init__(self, catalog: Project, loaded: Loaded, inventory: Inventory) -> None:
        self.catalog = catalog
        self.loaded = loaded
        self.rb = loaded.runbook
        self.inv = inventory
        self._compiled: dict[str, tuple[Any, tuple[tuple[str, str | None], ...]]] = {}
        self._decided: dict[tuple[Any, ...], bool] = {}
        # Conditions only read these, so each host's are built once, not per condition (a
        # 10,000-host plan evaluates tens of thousands of conditions): the host's own with the
        # host (HostView.context), its site's here, once per site.
        self._sites: dict[str, dict[str, Any]] = {}
        # What the step conditions read (None when a class cannot be told, so each target is
        # planned on its own; found at the first target), and the classes planned so far.
        self._step_reads: tuple[tuple[str, str | None], ...] | None = None
        self._reads_found = False

    def _context(self, host: HostView) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """(host.context, site_context(host)): what conditions see as the host and its site."""
        site = self._sites.get(host.site_code)
        if site is None:
            site = self._sites[host.site_code] = site_context(host)
        return host.context, site

    def _compile(self, expr: str) -> tuple[Any, tuple[tuple[str, str | None], ...]]:
        """The compiled condition and what it reads, once per expression."""
        compiled = self._compiled.get(expr)
        if compiled is None:
            conditions = self.catalog.renderer.conditions
            compiled = self._compiled[expr] = (
                conditions.compile(expr),
                _reads(conditions.parse(expr)),
            )
        return compiled

    def condition(
        self, expr: str, host: HostView, target: HostView, params: dict[str, Any]
    ) -> bool:
        fn, reads = self._compile(expr)
        host_ctx, site = self._context(host)
        names = {
            "host": host_ctx,
            "target": self._context(target)[0],
            "site": site,
            "params": params,
        }
        # A condition is a pure function of the values it reads (the sandbox allows no call
        # with effects), and most hosts of a fleet read alike (the same OS, roles, site and
        # parameters): it is evaluated once per distinct set of those values. An evaluation
        # that fails is not kept, so each host that fails reports itself.
        key = _memo_key(expr, reads, names)
        cached = self._decided.get(key) if key is not None else None
        if cached is not None:
            return cached
        try:
            decided = bool(fn(**names))
        except jinja2.TemplateError as exc:  # an undefined name, or the sandbox refusing
            raise ConfigError(
                [self.loaded.smap.problem((), f"condition {expr!r} on host {host.name}: {exc}")]
            ) from exc
        if key is not None:
            self._decided[key] = decided
        return decided

    def plan(
        self,
        *,
        method: str | None,
        hosts: str | None = None,
        overrides: Sequence[str] = (),
        rollback: bool = False,
    ) -> Plan:
        """The plan for the selected hosts that are targets of the runbook.

        The method is the resolved `method` parameter: `--method` (this argument), else
        `--set method=`, else an inventory var, else the runbook's default. It must come out
        the same for every target host, since a run follows one method (or auto) throughout.
        """
        rb = self.rb
        cli = parse_overrides(rb, overrides)
        method = method or None
        if rb.methods:
            if method is not None:
                if method != "auto" and rb.method(method) is None:
                    known = ", ".join([m.id for m in rb.methods] + ["auto"])
                    raise UsageError(f"--method {method}: runbook {rb.id} has methods {known}")
                if "method" in cli and cli["method"].strip() != method:
                    raise UsageError(
                        f"--method {method} and --set method={cli['method']} disagree; give one"
                    )
                cli["method"] = method
        elif method is not None:
            raise UsageError(f"runbook {rb.id} has no methods; drop --method")
        # Planning 10,000 hosts creates hundreds of thousands of objects: see collector_paused.
        with collector_paused():
            return self._plan_hosts(rb, cli, hosts, rollback)

    def _plan_hosts(
        self, rb: Runbook, cli: dict[str, str], hosts: str | None, rollback: bool
    ) -> Plan:
        """The plan of the selected hosts, once the method and overrides are checked."""
        plan = Plan(self.loaded, self.inv, None, rollback, [], selected=bool(hosts))
        targets: list[tuple[HostView, dict[str, Any]]] = []
        settled: dict[str, Any] = {}  # see resolve_params
        role = rb.targets.role
        not_of_role = f"not a {role}"
        for host in self.inv.select(hosts):
            if role not in host.roles:
                # Checked before the parameters: a host of another role is never a target, so
                # its vars are not this runbook's business.
                plan.skipped_hosts.append((host.name, not_of_role))
                continue
            params = resolve_params(rb, host, cli, self.inv, settled)
            reason = self._not_target(host, params)
            if reason:
                plan.skipped_hosts.append((host.name, reason))
                continue
            targets.append((host, params))
        if not targets:
            why = "; ".join(f"{n}: {r}" for n, r in plan.skipped_hosts) or "no hosts"
            raise UsageError(f"runbook {rb.id} has no target among the selected hosts ({why})")
        plan.method = self._one_method(targets) if rb.methods else None
        classes: dict[tuple[Any, ...], SharedPlan] = {}  # of this plan's method and overrides
        for host, params in targets:
            provider = self.inv.provider_of(host).name
            key = self._class_key(host)
            shared = classes.get(key) if key is not None else None
            if shared is None:
                stages = self._stages(host, params, plan.method, rollback)
                shared = SharedPlan(stages, host.name, provider)
                if key is not None:
                    classes[key] = shared
            plan.hosts.append(HostPlan(host, params, shared=shared, provider=provider))
        return plan

    def _class_key(self, target: HostView) -> tuple[Any, ...] | None:
        """What decides a target's steps apart from names, within one plan: the vars that set
        its parameters (the rest of them are the runbook's defaults and the command line's, the
        same for all) and every value the step conditions read of it, of its site's provider and
        of their sites. Targets with equal keys get equal steps (see SharedPlan). None when the
        target must be planned on its own: a condition reads something else, or a value cannot
        be a key."""
        if not self._reads_found:
            self._step_reads, self._reads_found = self._conditions_read(), True
        reads = self._step_reads
        if reads is None:
            return None
        target_ctx, target_site = self._context(target)
        provider_ctx, provider_site = self._context(self.inv.provider_of(target))
        seen = {
            "host": (target_ctx, provider_ctx),
            "target": (target_ctx,),
            "site": (target_site, provider_site),
            "params": (),  # all of them are in the key
        }
        parameters = self.rb.parameters
        values: list[Any] = [
            _frozen(
                {k: v for k, v in target.vars.items() if k in parameters} if target.vars else {}
            )
        ]
        for name, attr in reads:
            for obj in seen[name]:
                values.append(_frozen(obj if attr is None else obj.get(attr, _MISSING)))
        return _hashable(values)

    def _conditions_read(self) -> tuple[tuple[str, str | None], ...] | None:
        """(name, attribute) read by any step condition; None when one reads a name other than
        host, target, site and params (its value could not be told from a class key)."""
        reads: set[tuple[str, str | None]] = set()
        for step in _every_step(self.rb):
            if step.when:
                reads.update(self._compile(step.when)[1])
        if any(name not in ("host", "target", "site", "params") for name, _ in reads):
            return None
        return tuple(sorted(reads, key=lambda r: (r[0], r[1] or "")))

    def _one_method(self, targets: list[tuple[HostView, dict[str, Any]]]) -> str:
        """The method every target resolved to (None as a parameter value means auto)."""
        by_method: dict[str, list[str]] = {}
        for host, params in targets:
            by_method.setdefault(str(params.get("method") or "auto"), []).append(host.name)
        if len(by_method) > 1:
            each = "; ".join(
                f"{m}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                for m, names in sorted(by_method.items())
            )
            raise UsageError(
                f"the target hosts resolve to different methods ({each}); "
                "give --method, or select hosts that share one with --hosts"
            )
        return next(iter(by_method))

    def _not_target(self, host: HostView, params: dict[str, Any]) -> str | None:
        """Why a host of the runbook's role is not a target, or None.

        `targets.when` sees the host's resolved parameters, so `--set` or inventory vars can
        widen or narrow the targets (e.g. `target.os in params.client_os`).
        """
        t = self.rb.targets
        if t.when and not self.condition(t.when, host, host, params):
            return f"targets condition '{t.when}' is false"
        if host.site.version not in self.rb.applies_to:
            versions = ", ".join(self.rb.applies_to)
            site = f"site {host.site_code} is {host.site.version}"
            return f"runbook applies to ConfigMgr {versions}; {site}"
        return None

    def _stages(
        self, target: HostView, params: dict[str, Any], method: str | None, rollback: bool
    ) -> list[Stage]:
        rb = self.rb
        if rollback:
            if not rb.rollback:
                also = (
                    f"; to set back the site-wide changes of a run that stopped: "
                    f"invoke remediate {rb.id} --rollback --resume RUN"
                    if rb.site_states
                    else ""
                )
                raise UsageError(f"runbook {rb.id} has no rollback steps{also}")
            return [self._stage("rollback", "Rollback", "rollback", rb.rollback, target, params)]
        stages: list[Stage] = []
        if rb.prechecks:
            stages.append(
                self._stage("precheck", "Pre-checks", "precheck", rb.prechecks, target, params)
            )
        if not rb.methods:
            stages.append(self._stage("steps", "Procedure", "steps", rb.steps, target, params))
            return stages
        chosen = [m for m in rb.methods if method in ("auto", m.id)]
        if method == "auto" and rb.verify:
            stages.append(
                self._stage("verify:0", "Is it still broken?", "verify", rb.verify, target, params)
            )
        for m in chosen:
            steps: list[tuple[Step, str, str | None]] = []
            for item in m.steps:
                if isinstance(item, Step):
                    steps.append((item, item.kb, None))
                    continue
                inc = item.include
                for s in resolve_include(rb, item):
                    steps.append((s, f"{inc.kb} (= {s.kb})", inc.erratum))
            stage = Stage(f"method:{m.id}", m.title, "method", [], method=m.id)
            stage.steps = self._place(stage.name, steps, target, params)
            stages.append(stage)
            if rb.verify:
                stages.append(
                    self._stage(
                        f"verify:{m.id}",
                        f"Verify after {m.title}",
                        "verify",
                        rb.verify,
                        target,
                        params,
                    )
                )
        return stages

    def _stage(
        self,
        name: str,
        title: str,
        kind: str,
        steps: list[Step],
        target: HostView,
        params: dict[str, Any],
    ) -> Stage:
        placed = self._place(name, [(s, s.kb, None) for s in steps], target, params)
        return Stage(name, title, kind, placed)

    def _place(
        self,
        stage: str,
        steps: list[tuple[Step, str, str | None]],
        target: HostView,
        params: dict[str, Any],
    ) -> list[PlannedStep]:
        arms: dict[str, list[str]] = {}
        for step, _, _ in steps:
            if step.wait:
                arms.setdefault(step.wait.armed_before, []).append(f"{stage}/{step.id}")
        out: list[PlannedStep] = []
        for step, citation, note in steps:
            runner = self.inv.provider_of(target) if step.on == "site_server" else target
            skip = None
            if step.when and not self.condition(step.when, runner, target, params):
                skip = _skipped(step, target.name)
            decided = None
            if step.when_probe:
                decided = (
                    f"decided at run time by probe '{step.when_probe.probe}' "
                    f"(runs if it reports {step.when_probe.equals!r})"
                )
            elif step.reboot == "if_pending":
                decided = (
                    "decided at run time: restarts only if the change before it asked for a "
                    "restart (its RestartNeeded / exit code 3010, or its setup log)"
                )
            # The first "is it still broken?" check is final; settling waits only for a change
            # this run made.
            settle = 0 if stage == "verify:0" else _settle_seconds(step, params)
            notes = [note or step.note, _settle_words(step, settle) if settle else None]
            out.append(
                PlannedStep(
                    key=f"{stage}/{step.id}",
                    step=step,
                    citation=citation,
                    run_on=runner.name,
                    skip_reason=skip,
                    run_time_condition=decided,
                    arms=tuple(arms.get(step.id, ())),
                    note="; ".join(n for n in notes if n) or None,
                    settle=settle,
                )
            )
        return out


def _skipped(step: Step, target: str) -> str:
    """Why a step whose condition the inventory decides is left out for `target`."""
    return f"skipped: '{step.when}' is false for {target} in the inventory"


def _every_step(rb: Runbook) -> list[Step]:
    """Every step of a runbook, in any block (an include stands for steps of a method)."""
    in_methods = [s for m in rb.methods for s in m.steps if isinstance(s, Step)]
    return [*rb.prechecks, *rb.steps, *in_methods, *rb.verify, *rb.rollback]


def _settle_seconds(step: Step, params: dict[str, Any]) -> int:
    """A step's settle time in seconds: its own number, or the value of the parameter it names."""
    return int(params[step.settle]) if isinstance(step.settle, str) else step.settle


def _settle_words(step: Step, seconds: int) -> str:
    """How long a check keeps being repeated before it is judged, and where that figure is set."""
    hours, rest = divmod(seconds, 3600)
    length = f"{hours} h {rest // 60:02d} min" if hours else f"{seconds // 60} min {seconds % 60} s"
    where = f" (parameter {step.settle}={seconds}s)" if isinstance(step.settle, str) else ""
    return f"checks again until it passes, for up to {length}{where}, then judges what it sees"


#: A value a condition reads that is not in its context object (the evaluation then fails).
_MISSING = object()


def _reads(node: jinja2.nodes.Expr) -> tuple[tuple[str, str | None], ...]:
    """What a condition reads: (name, attribute) for each `name.attribute`, and (name, None)
    for a name used otherwise (`target['os']`, `params` alone), which reads all of it."""
    nodes = [node, *node.find_all(jinja2.nodes.Node)]
    attrs = [
        (n.node, n.attr)
        for n in nodes
        if isinstance(n, jinja2.nodes.Getattr) and isinstance(n.node, jinja2.nodes.Name)
    ]
    under_attr = {id(name) for name, _ in attrs}
    bare = {n.name for n in nodes if isinstance(n, jinja2.nodes.Name) and id(n) not in under_attr}
    reads: set[tuple[str, str | None]] = {(name, None) for name in bare}
    reads |= {(name.name, attr) for name, attr in attrs if name.name not in bare}
    return tuple(sorted(reads, key=lambda r: (r[0], r[1] or "")))


def _hashable(values: list[Any]) -> tuple[Any, ...] | None:
    """`values` as a key, or None when one of them cannot be hashed (then nothing is shared)."""
    key = tuple(values)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _frozen(value: Any) -> Any:
    """`value` as a hashable key that tells apart what compares equal but reads differently in a
    condition (True and 1, a list and a text): each scalar with its type."""
    if isinstance(value, list | tuple):
        return (type(value), tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, _frozen(v)) for k, v in value.items()))
    return (type(value), value)


def _memo_key(
    expr: str, reads: tuple[tuple[str, str | None], ...], names: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The key of a condition's result: the expression and every value it reads; None when a
    value cannot be a key (then the condition is evaluated each time)."""
    values: list[Any] = [expr]
    for name, attr in reads:
        obj = names.get(name, _MISSING)
        if attr is not None and isinstance(obj, dict):
            obj = obj.get(attr, _MISSING)
        values.append(_frozen(obj))
    return _hashable(values)
