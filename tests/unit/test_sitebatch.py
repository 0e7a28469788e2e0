"""A site's one reading turned into each client's result (run/sitebatch.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cmrunbook.load.project import Project
from cmrunbook.render.result import ScriptResult
from cmrunbook.render.templates import Renderer
from cmrunbook.run import sitebatch
from cmrunbook.run.sitebatch import SiteReadings, client_rows, netbios, reads_from_site, verdict

READING = ScriptResult(
    True,
    False,
    False,
    "site P12: 3 clients read from the SMS Provider",
    {
        "site": "P12",
        "file": "TSCore.dll",
        "required": "5.0.7958.1104",
        "baseline": "ScopeId_X/Baseline_y",
        "groups": [
            [
                "compliant",
                "5.0.7958.1104",
                r"C:\WINDOWS\CCM\TSCore.dll",
                "5.00.7958.1000",
                "software inventory",
                "",
                "xp-a",
            ],
            [
                "non-compliant",
                "5.0.7958.1000",
                r"C:\WINDOWS\CCM\TSCore.dll",
                "5.0",
                "software inventory",
                "",
                "xp-b\nxp-d",
            ],
            ["unknown", "", "", "5.00.7958.1000", "software inventory", "", "xp-c"],
            [
                "non-compliant",
                "5.0.7958.1104",
                r"C:\WINDOWS\CCM\TSCore.dll",
                "5.00.7958.1000",
                "baseline compliance state",
                "non-compliant",
                "xp-e",
            ],
            ["unknown", "", "", "5.00.7958.1000", "software inventory", "compliant", "xp-f"],
            ["compliant", "", "", "5.00.7958.1000", "software inventory", "compliant", "xp-g"],
        ],
    },
)
ROWS = client_rows(READING)


def test_each_state_maps_to_the_result_of_a_per_client_step() -> None:
    ok = verdict(READING, ROWS, "xp-a.corp.example", "5.0.7958.1104")
    assert (ok.ok, ok.data["compliance"], ok.data["version"]) == (
        True,
        "compliant",
        "5.0.7958.1104",
    )
    bad = verdict(READING, ROWS, "XP-B", "5.0.7958.1104")
    assert (bad.ok, bad.data["compliance"]) == (False, "non-compliant")
    assert "install the KB2910552 client update" in bad.message
    assert bad.data["decided_by"] == "software inventory"
    assert "decided by the software inventory" in bad.message


def test_the_source_that_decided_is_said() -> None:
    """A baseline's state that decided is named in the message and the data, with what the
    inventory says beside it."""
    state = verdict(READING, ROWS, "xp-e", "5.0.7958.1104")
    assert (state.ok, state.data["compliance"]) == (False, "non-compliant")
    assert state.data["decided_by"] == "baseline compliance state"
    assert state.data["baseline_state"] == "non-compliant"
    assert "non-compliant by the baseline compliance state reported for ScopeId_X/Baseline_y" in (
        state.message
    )
    assert "inventoried TSCore.dll is 5.0.7958.1104" in state.message


def test_a_compliant_state_never_makes_a_client_fine() -> None:
    """The baseline says compliant but TSCore.dll is not inventoried: unknown, saying why the
    state alone cannot tell. A row that claims compliant with no inventoried version (a reading
    gone wrong) is unknown too, never ok."""
    for client in ("xp-f", "xp-g"):
        unsure = verdict(READING, ROWS, client, "5.0.7958.1104")
        assert unsure.data["compliance"] == "unknown", client
        assert "cannot prove the KB2910552 client update" in unsure.message
        assert "The baseline reports compliant, which alone cannot show" in unsure.message


def test_no_data_is_unknown_never_fine() -> None:
    none = verdict(READING, ROWS, "xp-c", "5.0.7958.1104")
    assert (none.ok, none.data["compliance"]) == (True, "unknown")
    assert "not in the site's software inventory" in none.message
    absent = verdict(READING, ROWS, "xp-z", "5.0.7958.1104")
    assert absent.data["compliance"] == "unknown"
    assert "No SMS_R_System record named xp-z in site P12" in absent.message
    broken = ScriptResult(True, False, False, "", {"groups": [["compliant", "xp-a"]]})
    assert client_rows(broken) == {}
    assert verdict(broken, {}, "xp-a", "5.0.7958.1104").data["compliance"] == "unknown"


def test_every_name_of_a_group_has_its_row() -> None:
    inventory = "software inventory"
    assert ROWS["xp-b"] == ROWS["xp-d"]
    assert ROWS["xp-b"] == [
        "non-compliant",
        "5.0.7958.1000",
        ROWS["xp-b"][2],
        "5.0",
        inventory,
        None,
    ]
    assert ROWS["xp-c"] == ["unknown", None, None, "5.00.7958.1000", inventory, None]


def test_netbios_name_of_an_inventory_name() -> None:
    assert netbios("xp-a.corp.example") == "xp-a"
    assert netbios("10.0.0.5") == "10.0.0.5"


def test_a_site_is_read_once_however_many_targets_ask() -> None:
    readings = SiteReadings(None, None)  # type: ignore[arg-type]
    readings.script = lambda hp, ps: "script"  # type: ignore[method-assign]
    calls: list[str] = []

    class Step:
        run_on, key = "cm12-site01", "steps/client.tscore-inventory"

    def run(script: str) -> ScriptResult:
        calls.append(script)
        return READING

    threads = [
        threading.Thread(target=readings.reading, args=(None, Step(), run)) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["script"]
    assert readings.reading(None, Step(), run)[1] == ROWS  # type: ignore[arg-type]


def test_clients_whose_values_make_another_script_get_their_own_reading() -> None:
    """A host's or group's own tscore_version (or another site code on the same provider)
    renders another site script: its clients are never judged by a neighbour's reading."""
    readings = SiteReadings(None, None)  # type: ignore[arg-type]
    readings.script = lambda hp, ps: f"required {hp}"  # type: ignore[method-assign]
    calls: list[str] = []

    class Step:
        run_on, key = "cm12-site01", "steps/client.tscore-inventory"

    def run(script: str) -> ScriptResult:
        calls.append(script)
        return READING

    for required in ("5.0.7958.1104", "5.0.7958.1104", "5.0.7958.1200"):
        readings.reading(required, Step(), run)  # type: ignore[arg-type]
    assert calls == ["required 5.0.7958.1104", "required 5.0.7958.1200"]


def test_only_a_read_only_check_reads_clients_from_their_site() -> None:
    """A runbook that changes anything is run on each host, and each host locked, whatever
    --via says: only a read-only check may leave a client to its site's reading."""
    project = Project(Path(__file__).resolve().parents[2])
    check = project.load("client-hotfix-check").runbook
    multicast = project.load("multicast").runbook
    assert reads_from_site(check, "auto") and reads_from_site(check, "site")
    assert not reads_from_site(check, "direct")
    assert not reads_from_site(multicast, "auto") and not reads_from_site(multicast, "site")


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_site_script_is_made_once_per_value_it_reads(
    monkeypatch: pytest.MonkeyPatch, dynamic: bool
) -> None:
    """Clients that differ only in what the site template does not read (their own name)
    share one made script; a client whose parameters differ gets its own. A template that
    includes one named only when rendered may read anything: made for each client."""
    made: list[dict[str, Any]] = []

    class Renderer:
        def references(self, template: str) -> Any:
            return SimpleNamespace(names={"params": template, "site": template}, dynamic=dynamic)

        def body(self, template: str, context: dict[str, Any]) -> str:
            made.append(context)
            return str(context["params"]["tscore_version"])

        def framed(self, body: str, header: str) -> str:
            return f"{header} {body}"

    def context(plan: Any, hp: Any, ps: Any) -> dict[str, Any]:
        return {"target": {"name": hp.name}, "site": {"code": "P12"}, "params": hp.params}

    monkeypatch.setattr(sitebatch, "step_context", context)
    plan = SimpleNamespace(runbook=SimpleNamespace(id="client-hotfix-check", publish=None))
    readings = SiteReadings(SimpleNamespace(renderer=Renderer()), plan)  # type: ignore[arg-type]
    ps = SimpleNamespace(
        key="steps/site",
        citation="KB2910552",
        run_on="cm12-site01",
        step=SimpleNamespace(vars={"site_template": "checks/client_tscore_site.ps1.j2"}),
    )
    scripts = []
    for name, version in (("xp-a", "5.0.7958.1104"), ("xp-b", "5.0.7958.1104"), ("xp-c", "5.1")):
        hp = SimpleNamespace(
            name=name, params={"tscore_version": version}, target=SimpleNamespace(site_code="P12")
        )
        scripts.append(readings.script(hp, ps))  # type: ignore[arg-type]
    assert len(made) == (3 if dynamic else 2)
    assert scripts[0] == scripts[1] != scripts[2]


def test_a_template_that_names_its_include_when_rendered_is_said_to(tmp_path: Path) -> None:
    """`references` cannot list what a template named only when rendered reads, so it says so
    (`dynamic`); one with only named includes is not."""
    (tmp_path / "fixed.ps1.j2").write_text("{% include 'part.ps1.j2' %}", encoding="utf-8")
    (tmp_path / "chosen.ps1.j2").write_text("{% include which %}", encoding="utf-8")
    (tmp_path / "part.ps1.j2").write_text("{{ params.x }}", encoding="utf-8")
    renderer = Renderer([tmp_path])
    assert not renderer.references("fixed.ps1.j2").dynamic
    assert "params" in renderer.references("fixed.ps1.j2").names
    assert renderer.references("chosen.ps1.j2").dynamic
