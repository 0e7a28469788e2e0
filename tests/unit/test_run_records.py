"""What a run leaves for the record and for --resume, as an operator relies on it: every event
before a remote call on disk when the call is made (a kill there loses nothing the resumed run
needs), each host's script found again whole from the journal and the report, and a fleet of
alike hosts written as a few files, not a folder and a file per host."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeSite, ManualClock, result_line
from test_execute import DP, HEALTHY, IMAGES, METHOD_1

from cmrunbook.cli.common import build_plan
from cmrunbook.record.journal import ResumeState
from cmrunbook.record.journal_read import JOURNAL_NAME, read_events, sent_script
from cmrunbook.record.reports import write_reports
from cmrunbook.remote import CommandResult
from cmrunbook.run.console import TextConsole
from cmrunbook.run.execute import Options
from cmrunbook.run.orchestrate import EXIT_OK, execute_plan

ROOT = Path(__file__).resolve().parents[2]
UNATTENDED = Options(yes=True, non_interactive=True, assume_manual_done=True, forks=8)


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMRUNBOOK_ROOT", str(ROOT))
    monkeypatch.chdir(ROOT)


class KilledAtEachCall(FakeSite):
    """A site whose every remote call first copies the journal as it is on disk then: what a
    kill of the jump host at that call would leave behind."""

    def __init__(self, runs: Path, synced: list[int]) -> None:
        super().__init__(clock=ManualClock())
        self.runs = runs
        self.synced = synced
        self.on_disk: list[tuple[str, str]] = []  # (script sent, journal text on disk)

    def answer(self, host: str, text: str) -> CommandResult:
        (journal,) = self.runs.glob(f"*/{JOURNAL_NAME}")
        written = journal.read_text(encoding="utf-8")
        self.on_disk.append((text, written))
        # A step's start (it may change the host) is on the disk itself, not only written.
        raw = journal.read_bytes()
        start = raw.rfind(b'"event": "step-start"')
        assert start == -1 or self.synced[-1] > raw.index(b"\n", start)
        return super().answer(host, text)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of the file at each fsync of the run."""
    sizes = [0]
    fsync = os.fsync

    def counting(fd: int) -> None:
        fsync(fd)
        sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", counting)
    return sizes


def multicast(fake: FakeSite, runs: Path, resume: Path | None = None) -> int:
    fake.on("multicast-images", result_line(data=IMAGES))
    fake.on("large-multicast-image", result_line(data=False))
    fake.on("verify.multicast", HEALTHY)
    catalog, plan = build_plan("multicast", inventory=None, method="1", hosts=DP, overrides=[])
    return execute_plan(
        catalog,
        plan,
        UNATTENDED,
        runs_dir=runs,
        connect=fake.connect,
        resume=ResumeState.load(resume) if resume else None,
        console=TextConsole(io.StringIO(), interactive=False),
        clock=fake.clock,
    )


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_run_killed_at_any_remote_call_resumes_from_the_step_it_was_sending(
    tmp_path: Path, synced: list[int]
) -> None:
    runs = tmp_path / "runs"
    fake = KilledAtEachCall(runs, synced)
    assert multicast(fake, runs) == EXIT_OK
    (run,) = runs.iterdir()
    whole = _events((run / JOURNAL_NAME).read_text(encoding="utf-8"))
    for text, on_disk in fake.on_disk:
        events = _events(on_disk)
        # Everything the host journaled before the call is on disk, the script being sent last.
        assert events == whole[: len(events)]
        assert events[-1]["event"] == "script"
        assert sent_script(run, events[-1]) == text
    # Killed while the WDS removal was being sent: the resumed run sends it again and goes on,
    # and runs nothing the killed run had finished.
    index = next(i for i, c in enumerate(fake.calls) if c.key == "method:1/m1.uninstall-wds")
    killed = tmp_path / "killed" / run.name
    shutil.copytree(run, killed)
    (killed / JOURNAL_NAME).write_text(fake.on_disk[index][1], encoding="utf-8")
    again = FakeSite(clock=ManualClock())
    assert multicast(again, killed.parent, resume=killed) == EXIT_OK
    rest = METHOD_1[METHOD_1.index("method:1/m1.uninstall-wds") :]
    assert again.sent() == [*rest, "verify:1/verify.multicast"]


CLIENT = """  xp{n:04d}:
    site: P12
    roles: [client]
    os: {{version: xp, arch: x86}}
"""


def fleet(tmp_path: Path, clients: int) -> Path:
    """A site with `clients` alike XP clients that have WinRM."""
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "credentials: {source: env}\n"
        "winrm: {port: 5985, scheme: http, auth: ntlm}\n"
        "sites:\n  P12: {version: 2012r2, release: CU1, provider: cm12-site01}\n"
        "hosts:\n  cm12-site01:\n    site: P12\n    roles: [site_server]\n"
        "    os: {version: 2012r2, arch: x64}\n"
        + "".join(CLIENT.format(n=n) for n in range(clients)),
        encoding="utf-8",
    )
    return path


class Recording(FakeSite):
    """A site that keeps each script exactly as it was sent, by host."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}

    def answer(self, host: str, text: str) -> CommandResult:
        self.texts[host] = text
        return super().answer(host, text)


def check(tmp_path: Path, clients: int) -> tuple[Recording, Path, Any]:
    fake = Recording()
    runs = tmp_path / "runs"
    catalog, plan = build_plan(
        "client-hotfix-check",
        inventory=str(fleet(tmp_path, clients)),
        method=None,
        hosts=None,
        overrides=[],
    )
    code = execute_plan(
        catalog,
        plan,
        UNATTENDED,
        runs_dir=runs,
        connect=fake.connect,
        console=TextConsole(io.StringIO(), interactive=False),
    )
    assert code == EXIT_OK
    (run,) = runs.iterdir()
    return fake, run, (catalog, plan)


def test_each_hosts_script_is_found_whole_from_the_journal_and_the_report(
    tmp_path: Path,
) -> None:
    fake, run, (catalog, plan) = check(tmp_path, 5)
    sent = fake.texts
    assert len(sent) == 5
    recorded = [e for e in read_events(run / JOURNAL_NAME)[0] if e["event"] == "script"]
    assert {e["host"]: sent_script(run, e) for e in recorded} == sent
    write_reports(run, catalog, plan)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    for host in report["hosts"]:
        (step,) = [s for s in host["steps"] if s["status"] == "ok"]
        (file,) = step["scripts"]
        header, _, rest = sent[host["name"]].partition("\n")
        assert f"| target {host['name']} |" in header
        assert (run / file).read_text(encoding="utf-8") == rest


def test_a_thousand_alike_hosts_leave_a_few_files(tmp_path: Path, synced: list[int]) -> None:
    """... and wait for the disk once, at the end: a read-only check changes nothing that its
    steps' starts would have to be on the disk before."""
    fake, run, _ = check(tmp_path, 1000)
    assert len(synced) - 1 <= 2, len(synced)
    assert len({c.host for c in fake.calls}) == 1000
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    scripts = [f for f in files if f.startswith("scripts/")]
    assert len(scripts) == 1, scripts  # one body; each host's first line is in the journal
    assert len(files) <= 5, files


def test_a_script_framed_from_the_wrapper_rendered_once_is_the_wrapper_rendered_for_it(
    tmp_path: Path,
) -> None:
    """Every step's script as `Scripts` makes it (one body per alike context, the wrapper cut
    once) is what rendering the template and the wrapper for that host gives; an admin's
    wrapper that places the header twice is rendered per script, and still right."""
    from cmrunbook.render import pwsh
    from cmrunbook.render.steps import Scripts, render_step, script_header, step_context
    from cmrunbook.render.templates import Renderer

    catalog, plan = build_plan("multicast", inventory=None, method="4", hosts=None, overrides=[])
    overlay = tmp_path / "templates"
    overlay.mkdir()
    wrapper = (ROOT / "templates" / "_script.ps1.j2").read_text(encoding="utf-8")
    (overlay / "_script.ps1.j2").write_text(
        wrapper + "# again: {{ header | raw }}\n", encoding="utf-8"
    )
    for renderer in (catalog.renderer, Renderer([overlay, *catalog.renderer.templates_dirs])):
        catalog.renderer = renderer
        scripts = Scripts(catalog)
        made = 0
        for hp in plan.hosts:
            for ps in hp.all_steps():
                if ps.step.template is None or ps.step.for_each:
                    continue
                header = script_header(plan, ps.key, ps.citation, hp.target.name, ps.run_on)
                expected = renderer.env.get_template("_script.ps1.j2").render(
                    header=pwsh.comment_safe(header),
                    body=pwsh.Raw(renderer.body(ps.step.template, step_context(plan, hp, ps))),
                )
                assert render_step(catalog, plan, hp, ps, scripts=scripts) == expected
                made += 1
        assert made > 10
