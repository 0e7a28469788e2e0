"""The printable checklist: content in Markdown and HTML, and the HTML printed by headless Chromium.

Chromium and poppler-utils come from `tests/install-system-deps.sh`; the print tests skip when
they are missing. Nothing here touches the network: the page has no external reference.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke.context import Context
from invoke.exceptions import Exit

from cmrunbook.cli.common import build_plan
from cmrunbook.cli.documents import checklist as checklist_task
from cmrunbook.docs.checklist import (
    build_checklist,
    readable_pattern,
    render_checklist,
)
from cmrunbook.load.runbook import is_read_only_check
from cmrunbook.record.journal_read import load_journal
from cmrunbook.render.steps import render_probe, render_step

ROOT = Path(__file__).resolve().parents[2]
JOURNALS = Path(__file__).resolve().parents[1] / "data" / "journals"
COMPLETE = JOURNALS / "20261121-061000-multicast"


@pytest.fixture(autouse=True)
def _root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMRUNBOOK_ROOT", str(ROOT))
    monkeypatch.chdir(ROOT)


def _plan(method: str = "4", hosts: str | None = None) -> tuple[Any, Any]:
    return build_plan("multicast", inventory=None, method=method, hosts=hosts, overrides=[])


def _render(fmt: str, method: str = "4", paper: str = "a4", journal: Any = None) -> str:
    catalog, plan = _plan(method)
    doc = build_checklist(catalog, plan, journal=journal, paper=paper)
    return render_checklist(doc, fmt, ROOT / "templates")


def _host_part(text: str, host: str, next_marker: str) -> str:
    start = text.index(host + "\n") if host + "\n" in text else text.index(host)
    end = text.index(next_marker, start + 1)
    return text[start:end]


def _dp01_steps() -> list[Any]:
    _, plan = _plan("4")
    hp = next(h for h in plan.hosts if h.target.name == "cm07-dp01")
    return hp.all_steps()


def _in_order(text: str, needles: list[str]) -> None:
    pos = 0
    for needle in needles:
        found = text.find(needle, pos)
        assert found >= 0, f"{needle!r} missing or out of order"
        pos = found + len(needle)


def test_markdown_lists_every_method_4_step_of_dp01_in_kb_order() -> None:
    md = _render("md")
    part = _host_part(md, "## cm07-dp01", "## cm07-dp02")
    steps = _dp01_steps()
    assert len(steps) == 20  # with the manual PXE certificate check (fidelity F7)
    _in_order(part, [f"**{n}. " for n in range(1, len(steps) + 1)])
    for n, ps in enumerate(steps, 1):
        line = next(ln for ln in part.splitlines() if ln.startswith(f"- [ ] **{n}. "))
        assert ("DESTRUCTIVE" in line) == ps.step.destructive, line
        assert ("MANUAL" in line) == (ps.step.kind == "manual"), line
    assert "**Console:** Site Settings \\> Site Systems" not in part  # '>' is left readable
    assert "**Console:** Site Settings > Site Systems > \\<DP>" in part
    assert "*Method 4, step 1 (= Method 3, step 5)*" in part


def test_markdown_header_signoff_unconfirmed_and_appendix() -> None:
    md = _render("md")
    assert md.startswith("# KB971413: ")
    assert "Multicast of an OS WIM file larger than 4 GB fails in ConfigMgr 2007 SP1 R2" in md
    assert "`001_a8fbbab674d97a46.txt`" in md
    assert "Workaround while this is open" in md
    for field in ("Performed by", "Reviewed by", "Change number"):
        assert md.count(f"| {field} |") == 2  # one sign-off per host
    assert "| `pxe_share` | `SMSPXEIMAGES$` |" in md
    assert "**UNCONFIRMED parameters" in md
    assert md.count("```powershell") >= 20
    assert "Set-StrictMode" in md
    # dp02 is not a PXE service point: the PXE steps are there, marked not applicable
    dp02 = md[md.index("## cm07-dp02") :]
    assert "**Not applicable:** condition 'target.pxe' is false for cm07-dp02" in dp02
    assert "**Only if:** a restart is pending" in md
    assert '**Only if:** "Is any multicast OS image over the 4 GB limit?" answers yes' in md
    assert "- **Wait for** MCSSetup.log (uninstall), at most 30 min" in md
    assert "`mcs.msi exited with return code: 0`" in md


def test_markdown_auto_says_where_to_stop() -> None:
    md = _render("md", method="auto")
    part = _host_part(md, "## cm07-dp01", "## cm07-dp02")
    _in_order(
        part,
        [
            "### Is it still broken?",
            "stop here: nothing needs fixing",
            "### Method 1",
            "### Verify after Method 1",
            "If verification passes, stop here. Otherwise go on with Method 2",
            "### Method 2",
            "### Verify after Method 2",
            "### Method 3",
            "### Verify after Method 3",
            "### Method 4",
            "### Verify after Method 4",
            "no method is left",
        ],
    )


def test_markdown_wait_for_patterns_are_one_bullet_a_line() -> None:
    md = _render("md", method="3")
    assert not re.search(r"\S {4}- ", md)  # no bullet glued to the end of another line
    lines = md.splitlines()
    start = lines.index(
        "  - **Wait for** MCSSetup.log (uninstall), at most 30 min, a line such as:"
    )
    assert lines[start + 1].startswith("    - `mcs.msi exited with return code: 0` (regex ")
    assert lines[start + 2] == (
        "    - `De/Uninstallation was successful` (regex `(De\\|Un)installation was successful`)"
    )
    assert lines[start + 3].startswith("    - **Stop if:** ")


def _body(script: str) -> str:
    """A script's own lines: what `templates/_script.ps1.j2` puts between its try and catch."""
    return script.split("\ntry {\n", 1)[1].rsplit("\n}\ncatch {\n", 1)[0]


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_appendix_prints_the_shared_wrapper_once_and_every_step_its_own_lines(
    fmt: str, scripts: list[str]
) -> None:
    page = _render(fmt)
    text = html.unescape(page) if fmt == "html" else page
    assert len(scripts) > 20
    for marker in ("Set-StrictMode -Version 2.0", "function ConvertTo-CmrbJson", "exit 1\n"):
        assert text.count(marker) == 1, marker
    assert text.count("Wrapper of every script") == 1
    for script in scripts:
        header = script.splitlines()[0]
        assert f"{header}\n{_body(script)}" in text, header


def test_a_script_with_another_wrapper_is_printed_whole() -> None:
    from cmrunbook.docs.checklist import ScriptView, _shared_wrapper

    same = "# one\nSet-StrictMode\ntry {\n$a = 1\n}\ncatch {\n$b\n}\nexit 1"
    other = "# two\nSet-StrictMode -Off\ntry {\n$a = 2\n}\ncatch {\n$b\n}\nexit 1"
    views = [ScriptView("a", "a", "h", same), ScriptView("b", "b", "h", other)]
    assert _shared_wrapper(views) is None
    assert [v.script for v in views] == [same, other]
    views = [
        ScriptView("a", "a", "h", same),
        ScriptView("c", "c", "h", same.replace("1\n}", "3\n}")),
    ]
    wrapper = _shared_wrapper(views)
    assert wrapper is not None and wrapper.prelude == "Set-StrictMode\ntry {"
    assert [v.script for v in views] == ["# one\n$a = 1", "# one\n$a = 3"]


def test_no_scripts_leaves_the_powershell_appendix_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("md", "html"):
        checklist_task(Context(), "multicast", method="3", format=fmt, scripts=False)
        page = capsys.readouterr().out
        assert "KB971413" in page and "Disable multicast on the distribution point" in page
        for gone in ("Appendix: PowerShell", "Set-StrictMode", "appendix, step"):
            assert gone not in page, (fmt, gone)
        checklist_task(Context(), "multicast", method="3", format=fmt)
        page = capsys.readouterr().out
        for kept in ("Appendix: PowerShell", "Set-StrictMode", "appendix, step"):
            assert kept in page, (fmt, kept)


def _fleet_inventory(tmp: Path, clients: int = 50) -> Path:
    """The example inventory and `clients` more Windows XP clients, half of them with WinRM."""
    data = yaml.safe_load((ROOT / "inventory" / "example.yaml").read_text("utf-8"))
    for n in range(clients):
        data["hosts"][f"xp-fleet{n:03d}"] = {
            "site": "P12",
            "roles": ["client"],
            "os": {"version": "xp", "arch": "x86"},
            "winrm": n % 2 == 0,
        }
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _check_page(tmp: Path, fmt: str, scripts: bool = False) -> str:
    catalog, plan = build_plan(
        "client-hotfix-check",
        inventory=str(_fleet_inventory(tmp)),
        method=None,
        hosts=None,
        overrides=[],
    )
    assert len(plan.hosts) == 52 and is_read_only_check(plan.runbook)
    doc = build_checklist(catalog, plan, scripts=scripts)
    return render_checklist(doc, fmt, ROOT / "templates")


def test_a_read_only_check_is_its_steps_once_and_one_row_per_host(tmp_path: Path) -> None:
    md = _check_page(tmp_path, "md")
    assert md.count("| Performed by |") == 1  # one sign-off, not one per client
    assert md.count("- **1. Read TSCore.dll") == 1 and md.count("- **2. Look up") == 1
    rows = [ln for ln in md.splitlines() if ln.startswith("| [ ] | ")]
    assert len(rows) == 52
    # Each row: the step that applies to that client, and where it is checked.
    assert "xp-fleet000 | P12 · xp x86 | 1 | xp-fleet000 | ☐ yes ☐ no ☐ unknown |" in md
    assert "xp-fleet001 | P12 · xp x86 | 2 | cm12-site01 | ☐ yes ☐ no ☐ unknown |" in md
    page = _check_page(tmp_path, "html")
    assert page.count("<th>Performed by</th>") == 1
    assert len(re.findall(r'<tr id="xp-[^"]+"><td class="t-box">☐</td>', page)) == 52
    assert '<section class="host"' not in page


def test_a_check_that_could_change_something_keeps_a_sign_off_per_host() -> None:
    _, plan = build_plan(
        "client-hotfix-check", inventory=None, method=None, hosts=None, overrides=[]
    )
    rb = plan.runbook
    assert is_read_only_check(rb)
    for change in (
        {"steps": [rb.steps[0].model_copy(update={"destructive": True}), *rb.steps[1:]]},
        {"steps": [rb.steps[0].model_copy(update={"reboot": "always"}), *rb.steps[1:]]},
        {"id": "client-hotfix"},
    ):
        assert not is_read_only_check(rb.model_copy(update=change))
    # Procedures (multicast, a change) are never printed as a check table.
    assert not is_read_only_check(_plan("auto")[1].runbook)


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_html_content_and_no_external_reference() -> None:
    page = _render("html")
    assert page.startswith("<!DOCTYPE html>")
    assert re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I) is None
    assert "@import" not in page and "url(" not in page and "<script" not in page.lower()
    assert "break-before: page" in page and "break-inside: avoid" in page
    assert "white-space: pre-wrap" in page and "overflow-wrap: anywhere" in page
    assert "@page { size: A4;" in page
    text = " ".join(_text(page).split())
    assert "KB971413" in text and "001_a8fbbab674d97a46.txt" in text
    steps = _dp01_steps()
    dp01 = text[text.index("cm07-dp01 distribution_point") : text.index("Sign-off: cm07-dp01")]
    _in_order(dp01, [f"{n}. {' '.join(ps.step.title.split())}" for n, ps in enumerate(steps, 1)])
    for ps in steps:
        if ps.step.click_path:
            assert " ".join(ps.step.click_path.split()) in dp01
        if ps.step.expect:
            assert " ".join(ps.step.expect.split()) in dp01
    destructive = re.findall(r'<article class="step is-destructive', page)
    n_destructive = sum(1 for ps in steps if ps.step.destructive)
    assert len(destructive) == 2 * n_destructive  # both hosts list them (dp02: not applicable)
    assert "Performed by" in text and "Change number" in text
    assert "Appendix: PowerShell" in text and "$ErrorActionPreference" in text


def test_html_escapes_values() -> None:
    page = _render("html")
    assert "&lt;DP&gt;" in page and "<DP>" not in page


def test_readable_patterns() -> None:
    assert (
        readable_pattern(r"mcs\.msi exited with return code: 0\b")
        == "mcs.msi exited with return code: 0"
    )
    assert (
        readable_pattern(r"mcs\.msi exited with return code: (?!0\b|3010\b)\d+")
        == "mcs.msi exited with return code: <a number other than 0, 3010>"
    )
    assert readable_pattern(r"(De|Un)installation failed") == "De/Uninstallation failed"
    assert readable_pattern(r"STATMSG: ID=2301\b") == "STATMSG: ID=2301"


def test_from_run_fills_in_results() -> None:
    journal = load_journal(COMPLETE)
    md = _render("md", method="3", journal=journal)
    assert "**Run record** of `20261121-061000-multicast`" in md
    assert "| Run by | ops," in md
    dp02 = md[md.index("## cm07-dp02") : md.index("## Appendix")]
    assert "**Result: FAILED**" in dp02
    assert "mcs.msi exited with return code: 1603" in dp02
    assert "- [x] **1. Confirm the site reset" in dp02
    assert "Not run in `20261121-061000-multicast`" in dp02
    page = _render("html", method="3", journal=journal)
    assert "st-failed" in page and "return code: 1603" in page


def test_task_writes_file_and_rejects_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "cl.md"
    checklist_task(Context(), "multicast", method="4", format="md", hosts="cm07-dp01", out=str(out))
    text = out.read_text("utf-8")
    assert "## cm07-dp01" in text and "## cm07-dp02" not in text
    with pytest.raises(Exit) as exc:
        checklist_task(Context(), "multicast", format="pdf")
    assert exc.value.code == 2
    with pytest.raises(Exit) as exc:
        checklist_task(Context(), "multicast", paper="a3")
    assert exc.value.code == 2
    with pytest.raises(Exit) as exc:
        checklist_task(Context(), "multicast", rollback=True)  # multicast has no rollback
    assert exc.value.code == 2
    run_out = tmp_path / "run.html"
    checklist_task(Context(), "multicast", from_run=str(COMPLETE), out=str(run_out))
    assert "20261121-061000-multicast" in run_out.read_text("utf-8")


# ---------------------------------------------------------------- headless Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
POPPLER = shutil.which("pdfinfo") and shutil.which("pdftotext")
needs_print = pytest.mark.skipif(
    not (CHROMIUM and POPPLER),
    reason="needs chromium and poppler-utils (tests/install-system-deps.sh)",
)


def _chromium(tmp: Path, *args: str) -> None:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def scripts() -> Iterator[list[str]]:
    catalog, plan = _plan("4")
    out: list[str] = []
    for hp in plan.hosts:
        for probe in plan.runbook.probes:
            out.append(render_probe(catalog, plan, hp, probe)[1])
        for ps in hp.all_steps():
            if not ps.skip_reason:
                script = render_step(catalog, plan, hp, ps)
                if script:
                    out.append(script)
    yield out


@needs_print
@pytest.mark.parametrize(("paper", "size"), [("a4", "A4"), ("letter", "letter")])
def test_prints_to_pdf(tmp_path: Path, paper: str, size: str, scripts: list[str]) -> None:
    page = tmp_path / f"checklist-{paper}.html"
    page.write_text(_render("html", paper=paper), encoding="utf-8")
    pdf = tmp_path / f"checklist-{paper}.pdf"
    _chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri())
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    assert re.search(rf"Page size:.*\({size}\)", info), info
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))  # type: ignore[union-attr]
    assert pages > 2 + 1  # two hosts, each from a new page, then the appendix
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout
    flat = " ".join(text.split())
    assert "KB971413" in flat
    for ps in _dp01_steps():
        assert " ".join(ps.step.title.split()) in flat, ps.step.title
    # The longest PowerShell line wraps but is not cut: its last words are on the page.
    longest = max((ln for s in scripts for ln in s.splitlines()), key=len)
    assert len(longest) > 100
    tail = "".join(longest.split()[-3:])[-40:]
    assert tail in "".join(text.split()), tail


@needs_print
def test_screenshot(tmp_path: Path) -> None:
    page = tmp_path / "checklist.html"
    page.write_text(_render("html"), encoding="utf-8")
    png = tmp_path / "checklist.png"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,1800", page.as_uri())
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def _pdf_pages(tmp: Path, name: str, page: str) -> tuple[int, str]:
    """Print `page` with headless Chromium: its page count and its text."""
    source = tmp / f"{name}.html"
    source.write_text(page, encoding="utf-8")
    pdf = tmp / f"{name}.pdf"
    _chromium(tmp, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", source.as_uri())
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True)
    return int(re.search(r"Pages:\s+(\d+)", info).group(1)), text.stdout  # type: ignore[union-attr]


@needs_print
def test_printed_without_scripts_is_the_steps_only(tmp_path: Path) -> None:
    catalog, plan = _plan("auto")
    pages = {}
    for scripts in (True, False):
        doc = build_checklist(catalog, plan, scripts=scripts)
        page = render_checklist(doc, "html", ROOT / "templates")
        pages[scripts], text = _pdf_pages(tmp_path, f"scripts-{scripts}", page)
        assert ("Appendix: PowerShell" in text) == scripts
        assert text.count("Set-StrictMode") == (1 if scripts else 0)
    print(f"multicast --method auto, all hosts: {pages[True]} pages, --no-scripts {pages[False]}")
    assert pages[False] < pages[True] / 2


@needs_print
def test_a_52_client_check_prints_on_a_few_pages_and_page_1_is_used(tmp_path: Path) -> None:
    pages, text = _pdf_pages(tmp_path, "check", _check_page(tmp_path, "html"))
    flat = " ".join(text.split())
    print(f"client-hotfix-check over 52 clients, --no-scripts: {pages} A4 pages")
    assert pages <= 4  # 269 with a page and a sign-off per client and every script
    assert all(f"xp-fleet{n:03d}" in flat for n in range(50))
    # A procedure: the first host starts under the header, not on a page of its own.
    catalog, plan = build_plan(
        "boot-image-update", inventory=None, method=None, hosts=None, overrides=[]
    )
    doc = build_checklist(catalog, plan)
    page = render_checklist(doc, "html", ROOT / "templates")
    first = tmp_path / "procedure"
    first.mkdir()
    _, text = _pdf_pages(first, "procedure", page)
    page_1 = " ".join(text.split("\f")[0].split())
    assert "Guidance" in page_1 and doc.hosts[0].facts in page_1  # the host's own section


def test_a_run_record_speaks_kb_words_and_dates_and_shows_found_faults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The record of a real `--method auto` run (tests/data/journals): ids and WMI times out."""
    run = JOURNALS / "20261202-164351-multicast-auto"
    checklist_task(Context(), "multicast", from_run=str(run), format="md", scripts=False)
    md = capsys.readouterr().out
    assert not re.search(r"\b(?:verify|method):\d|precheck/|\d{14}\.\d+[+-]\d{3}", md)
    assert "Restarts: on cm07-dp02: booted 2026-12-01 10:43:51 UTC, up since 2026-12-02" in md
    assert "restarted (Method 1, step 3 asked for a restart); back up since 2026-12-02" in md
    results = re.findall(r"- \*\*Result: ([^*]+)\*\*", md)
    assert results.count("FAULT FOUND, AS EXPECTED BEFORE ESCALATING") == 3
    assert "FAILED" not in results
