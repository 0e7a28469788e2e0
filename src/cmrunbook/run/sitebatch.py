"""Client checks read once per site: `invoke check client-hotfix --via site|auto`.

A step whose `vars:` name a `site_template` checks one client on its site's SMS Provider; the
site template answers the same question for every client of the site in one command. The first
target to reach such a step runs the site script on that site server; every target of the site
then takes its own verdict from that one answer, and is journaled as if it had run the step
itself, so the journal, tally and reports are those of a per-client run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from cmrunbook.load.project import Project
from cmrunbook.load.runbook import Runbook, is_read_only_check
from cmrunbook.plan.planner import HostPlan, Plan, PlannedStep
from cmrunbook.render.baseline import baseline_unique_id
from cmrunbook.render.result import ScriptResult
from cmrunbook.render.steps import Scripts, script_header, step_context

#: `--via`: direct (each client's own step), site (every client from its site), auto (clients
#: with WinRM directly, the rest from their site).
VIA_CHOICES = ("auto", "direct", "site")

SITE_TEMPLATE = "site_template"
#: The runbook parameter naming the CI_UniqueID of the compliance states a site reading reads.
COMPLIANCE_ID_PARAM = "compliance_ci_unique_id"


def reads_from_site(rb: Runbook, via: str) -> bool:
    """Whether a run reads clients from their site at all: only a read-only check does (a
    runbook that changes anything, or that a run must set back, is always run on each host
    and each host locked, whatever --via says)."""
    return via != "direct" and is_read_only_check(rb)


def batched(rb: Runbook, ps: PlannedStep, via: str) -> bool:
    """Whether this step is answered from its site's one reading rather than run itself."""
    return reads_from_site(rb, via) and SITE_TEMPLATE in ps.step.vars


def replaced_by_site(rb: Runbook, ps: PlannedStep, hp: HostPlan, via: str) -> bool:
    """With --via site, a client's direct check is left to its site: the step is a script step
    on the target itself in a read-only check whose other step reads the site."""
    if via != "site" or not reads_from_site(rb, via):
        return False
    if SITE_TEMPLATE in ps.step.vars or ps.run_on != hp.target.name:
        return False
    return any(SITE_TEMPLATE in other.step.vars for other in hp.all_steps())


def contacted(rb: Runbook, hp: HostPlan, via: str) -> bool:
    """Whether a step may run on the target itself: a client read only from its site is never
    contacted, so a run holds no lock on it (a run over 50,000 clients could not hold one
    lock file for each)."""
    if not reads_from_site(rb, via):
        return True
    return any(
        ps.run_on == hp.target.name and not replaced_by_site(rb, ps, hp, via) and not ps.skip_reason
        for ps in hp.all_steps()
    )


def netbios(name: str) -> str:
    """SMS_R_System.Name is the NetBIOS name: an inventory name written as an FQDN is cut at
    its first dot (an IP address is kept), as client_tscore_inventory does."""
    parts = name.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return name
    return parts[0]


def compliance_identity(rb: Runbook, params: Mapping[str, Any]) -> str:
    """The CI_UniqueID whose compliance states a site reading reads: the runbook's
    `compliance_ci_unique_id` when set, else that of the baseline `invoke publish` makes for the
    check (which of the baseline's identities the state rows carry is UNCONFIRMED); '' when the
    runbook publishes nothing (no state is read)."""
    return str(params.get(COMPLIANCE_ID_PARAM) or "") or baseline_unique_id(rb, params) or ""


def client_rows(site: ScriptResult) -> dict[str, list[str | None]]:
    """Each client's [state, version, path, client version, decided by, baseline state] from
    the site script's groups (the same, then the names one a line); an empty text is None. A
    malformed group is left out, so its clients are unknown."""
    data = site.data if isinstance(site.data, dict) else {}
    rows: dict[str, list[str | None]] = {}
    for group in data.get("groups") or []:
        if not isinstance(group, list) or len(group) != 7:
            continue
        row: list[str | None] = [str(v) if v else None for v in group[:6]]
        for name in str(group[6] or "").split("\n"):
            if name:
                rows[name.lower()] = row
    return rows


#: Who decided a client's verdict, as the site script says it.
BY_BASELINE = "baseline compliance state"
BY_INVENTORY = "software inventory"


def verdict(
    site: ScriptResult, rows: dict[str, list[str | None]], client: str, required: str
) -> ScriptResult:
    """One client's result from its site's reading, worded as the per-client step words it,
    and saying which source decided: the inventory, or a non-compliant baseline state (a
    compliant state never decides: the published item cannot show the file was found)."""
    data = site.data if isinstance(site.data, dict) else {}
    file_name = str(data.get("file") or "the file")
    code = str(data.get("site") or "")
    name = netbios(client)
    row = rows.get(name.lower())
    out: dict[str, Any] = {
        "compliance": "unknown",
        "client": name,
        "site": code,
        "file": file_name,
        "required": required,
        "source": f"{BY_INVENTORY} (one reading of the site)",
        "decided_by": None,
        "baseline": data.get("baseline") or None,
        "baseline_state": None,
        "path": None,
        "version": None,
        "client_version": None,
    }
    if row is None:
        message = (
            f"No SMS_R_System record named {name} in site {code}: the client is not "
            "discovered there, or has another name."
        )
        return ScriptResult(True, False, False, message, out)
    state, version, path, client_version, decided_by, baseline_state = row
    out.update(
        compliance=state,
        version=version,
        path=path,
        client_version=client_version,
        decided_by=decided_by,
        baseline_state=baseline_state,
    )
    if decided_by == BY_BASELINE:
        out["source"] = f"{BY_BASELINE} (one reading of the site)"
    about = f" (client version {client_version})"
    inventory = f"inventoried {file_name} is {version} ({path})" if version else ""
    if decided_by == BY_BASELINE and state == "non-compliant":
        seen = f"; {inventory}" if inventory else f"; {file_name} is not in the inventory"
        message = (
            f"{name}: non-compliant by the {BY_BASELINE} reported for {out['baseline']}"
            f"{seen}{about}. Install the KB2910552 client update on this client."
        )
    elif state == "compliant" and version:
        message = (
            f"{name}: {inventory}, at least {required}: the KB2910552 client update is "
            f"installed{about}; decided by the {BY_INVENTORY}."
        )
    elif state == "non-compliant":
        message = (
            f"{name}: {inventory}, older than {required}: install the KB2910552 client update "
            f"on this client{about}; decided by the {BY_INVENTORY}."
        )
    else:
        state = out["compliance"] = "unknown"
        message = (
            f"{name}: {file_name} is not in the site's software inventory, or has no "
            f"readable file version{about}; the client version alone cannot prove the "
            f"KB2910552 client update. Inventory {file_name} or enable WinRM on the client."
        )
        if baseline_state == "compliant":
            message += (
                f" The baseline reports compliant, which alone cannot show {file_name} was "
                "found (its File parts have no rule that the file exists)."
            )
    return ScriptResult(state != "non-compliant", False, False, message, out)


class SiteReadings:
    """Each site's one reading per step, made by the first target that needs it; the others
    wait for it. A reading that failed fails every target of the site with the same error."""

    def __init__(self, catalog: Project, plan: Plan, scripts: Scripts | None = None) -> None:
        self._plan = plan
        self._scripts = scripts or Scripts(catalog)
        self._guard = threading.Lock()
        self._cells: dict[tuple[str, str], tuple[threading.Lock, list[Any]]] = {}

    def script(self, hp: HostPlan, ps: PlannedStep) -> str:
        """The site script, for the site server this step runs on: made once per distinct value
        of what the template reads (`render.steps.Scripts`), since its 50,000 clients would
        otherwise render it again each, only to find the same script."""
        header = script_header(
            self._plan, ps.key, ps.citation, f"clients of site {hp.target.site_code}", ps.run_on
        )
        context = step_context(self._plan, hp, ps)
        context["baseline_unique_id"] = compliance_identity(self._plan.runbook, hp.params)
        return self._scripts.script(str(ps.step.vars[SITE_TEMPLATE]), context, header)

    def reading(
        self, hp: HostPlan, ps: PlannedStep, run: Callable[[str], ScriptResult]
    ) -> tuple[ScriptResult, dict[str, list[str | None]]]:
        """The site's reading for this step and its clients' rows: `run` sends the script,
        once per site server."""
        # Keyed by the script itself: clients whose own values (a host's or group's
        # tscore_version, another site code on the same provider) make another script get
        # their own reading, never a neighbour's.
        script = self.script(hp, ps)
        key = (ps.run_on, script)
        with self._guard:
            lock, cell = self._cells.setdefault(key, (threading.Lock(), []))
        with lock:
            if not cell:
                try:
                    result = run(script)
                    cell.append((result, client_rows(result)))
                except Exception as exc:
                    cell.append(exc)
            got = cell[0]
        if isinstance(got, Exception):
            raise got
        return got
