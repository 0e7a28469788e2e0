"""`invoke diagnose`: the KB's log lines, in every shape a log takes, give the same diagnosis.

The signatures come from the committed runbooks, as `invoke diagnose` loads them.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Lab
from helpers_engine import edit_line, line_of, make_root, run_cli, run_program
from test_cmtrace import cmtrace_line, sms2007_line

from cmrunbook.load.project import Project
from cmrunbook.logs import diagnose as dx
from cmrunbook.logs.cmtrace import open_log
from cmrunbook.render.fetch import fetch_script

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
INVOKE = Path(sys.executable).with_name("invoke")

# (data file, log name it is saved as, runbook expected, KB expected)
CASES = [
    ("kb2910552_smsts.log", "smsts.log", "boot-image-update", "KB2910552"),
    ("forum_smsts.log", "smsts.log", "boot-image-update", "KB2910552"),
    ("kb2586709_smsts.log", "smsts.log", "site-hotfix-check", "KB2586709"),
    ("kb930011_OSDLaunch.log", "OSDLaunch.log", "nt4-precheck", "KB930011"),
]


def signatures(root: Path = ROOT) -> list[dx.Signature]:
    sigs, _ = dx.load_signatures(Project(root))
    return sigs


def runbooks_found(report: dx.FileReport) -> set[str]:
    return {rb for f in report.findings for rb in f.runbooks}


def kbs_found(report: dx.FileReport) -> list[str]:
    return [f.kb for f in report.findings]


def write_forms(src: Path, name: str, folder: Path) -> dict[str, Path]:
    """The KB's lines as quoted (viewer/plain), and rebuilt as CMTrace and as a 2007 log."""
    records = list(open_log(src))
    forms = {"kb": folder / "kb" / name, "cmtrace": folder / "cmtrace" / name}
    forms["sms2007"] = folder / "sms2007" / name
    for p in forms.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, forms["kb"])
    forms["cmtrace"].write_text("\n".join(cmtrace_line(r) for r in records) + "\n", newline="\r\n")
    forms["sms2007"].write_text("\n".join(sms2007_line(r) for r in records) + "\n")
    return forms


@pytest.mark.parametrize(("src", "name", "runbook", "kb"), CASES)
def test_every_form_gives_the_same_diagnosis(
    tmp_path: Path, src: str, name: str, runbook: str, kb: str
) -> None:
    sigs = signatures()
    results = {}
    lines = {}
    for form, path in write_forms(DATA / src, name, tmp_path).items():
        report = dx.diagnose_file(path, sigs)
        assert report.error is None
        assert report.known_name
        results[form] = {
            (f.kb, tuple(x.command for x in f.fixes), tuple(e.message for e in f.evidence))
            for f in report.findings
        }
        lines[form] = [[(e.line, e.last_line) for e in f.evidence] for f in report.findings]
        assert runbook in runbooks_found(report), (form, results[form])
        assert all(f.kb == kb for f in report.findings)
    assert results["kb"] == results["cmtrace"] == results["sms2007"]
    # CMTrace keeps the physical lines of multi-line messages; a 2007 log folds them with '~'.
    assert lines["kb"] == lines["cmtrace"]


def test_the_osdlaunch_signature_applies_to_osdlaunch_only(tmp_path: Path) -> None:
    path = tmp_path / "smsts.log"
    shutil.copyfile(DATA / "kb930011_OSDLaunch.log", path)
    assert dx.diagnose_file(path, signatures()).findings == []


def test_unknown_file_name_tries_every_signature_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "capture.txt"
    shutil.copyfile(DATA / "kb930011_OSDLaunch.log", path)
    report = dx.diagnose_file(path, signatures())
    # a name no runbook's log is in...
    assert not report.known_name
    assert report.signatures == len(signatures())
    assert "nt4-precheck" in runbooks_found(report)


def test_rolled_over_and_dated_logs_count_as_the_log() -> None:
    assert dx.log_name(r"C:\Windows\CCM\Logs\smsts.lo_") == "smsts.log"
    assert dx.log_name("/tmp/SMSTS-20131031-094927.log") == "smsts.log"
    assert dx.log_name(r"host:C:\StageNT\SMSOSD\OSDLogs\OSDLaunch.log") == "osdlaunch.log"


def test_evidence_has_line_numbers_and_timestamps(tmp_path: Path) -> None:
    forms = write_forms(DATA / "kb2910552_smsts.log", "smsts.log", tmp_path)
    report = dx.diagnose_file(forms["cmtrace"], signatures())
    finding = next(f for f in report.findings if "boot-image-update" in f.runbooks)
    lines = {e.line: e for e in finding.evidence}
    assert 6 in lines and lines[6].timestamp == "2013-10-31T09:49:27.353000-07:00"
    assert lines[9].last_line == 10
    assert finding.fixes[0].command.startswith("invoke remediate boot-image-update")


# -- multicast (KB971413): realistic smsts.log lines --------------------------------------------


def test_multicast_failure_found_with_committed_signature(tmp_path: Path) -> None:
    path = tmp_path / "smsts.log"
    shutil.copyfile(DATA / "multicast_smsts.log", path)
    assert "multicast" in runbooks_found(dx.diagnose_file(path, signatures()))


def test_multicast_evidence_command_and_a_clean_log(tmp_path: Path) -> None:
    """The shipped multicast signature: its evidence lines, its command, no false alarm."""
    sigs = signatures()
    bad = tmp_path / "bad" / "smsts.log"
    good = tmp_path / "good" / "smsts.log"
    for src, dst in (("multicast_smsts.log", bad), ("multicast_ok_smsts.log", good)):
        dst.parent.mkdir()
        shutil.copyfile(DATA / src, dst)
    report = dx.diagnose_file(bad, sigs)
    finding = next(f for f in report.findings if "multicast" in f.runbooks)
    assert finding.kb == "KB971413"
    assert {e.line for e in finding.evidence} >= {9, 10, 11}
    assert [x.command for x in finding.fixes] == ["invoke remediate multicast --method auto"]
    assert dx.diagnose_file(good, sigs).findings == []
    # ... and the same in the 2007 form
    forms = write_forms(bad, "smsts.log", tmp_path / "forms")
    assert "multicast" in runbooks_found(dx.diagnose_file(forms["sms2007"], sigs))


# -- real samples (tests/data/real, see its SOURCES.md) and the variants copies of them take ------

REAL = DATA / "real"
BOOT_IMAGE = ("KB2910552", ("boot-image-update", "bootsect-downgrade"))
#: sample -> (KB, runbooks that fix it) found in it, or None: an unrelated failure stays unknown.
REAL_SAMPLES: dict[str, tuple[str, tuple[str, ...]] | None] = {
    "smsts-xp-bootsect-0x800700c1-kb2910552-viewer.log": BOOT_IMAGE,
    "smsts-multicast-hash-over4gb-kb2000470.log": ("KB971413", ("multicast",)),
    "smsts-prestaged-winpe-kb2586709.log": ("KB2586709", ("site-hotfix-check",)),
    "osdlaunch-nt4-kb930011.log": ("KB930011", ("nt4-precheck",)),
    "smsts-unrelated-0x80004005-winhttp-80072f8f-kb4551033.log": None,
    "smsts-unrelated-0x80070005-setup-hook-kb4509131.log": None,
    "smsts-unrelated-0x80070057-driver-package-kb4096313.log": None,
    "smsts-unrelated-0x80070002-preprovision-bitlocker-tpm.log": None,
}


def found(report: dx.FileReport) -> list[tuple[str, tuple[str, ...]]]:
    return [(f.kb, tuple(f.runbooks)) for f in report.findings]


def expected(sample: str) -> list[tuple[str, tuple[str, ...]]]:
    want = REAL_SAMPLES[sample]
    return [want] if want else []


def typographic(text: str) -> str:
    """As a blog or word processor shows it: curly double and single quotes."""
    out, opening = [], True
    for ch in text:
        if ch == '"':
            out.append("\u201c" if opening else "\u201d")
            opening = not opening
        else:
            out.append("\u2019" if ch == "'" else ch)
    return "".join(out)


def markdown_quoted(text: str) -> str:
    """As a Markdown answer quotes it (the real Markdown samples do so): `> ` before each line,
    a hard break after, punctuation Markdown would act on escaped with a backslash."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"([<*()])", r"\\\1", line)
        lines.append(f"> {line}  ")
    return "\n".join(lines) + "\n"


def html_escaped(text: str) -> str:
    """As the source of an HTML page (a blog re-post) has it: quotes and `<`, `>`, `&` as
    entities, runs of spaces as `&nbsp;`."""
    return html.escape(text, quote=True).replace("  ", " &nbsp;")


def spaces_lost(text: str) -> str:
    """As a copy that lost spaces shows it: none after '.', ':' or ';' and none before '('."""
    return re.sub(r" \(", "(", re.sub(r"([.:;]) ", r"\1", text))


VARIANTS = {
    "typographic": typographic,
    "markdown": markdown_quoted,
    "html": html_escaped,
    "spaces-lost": spaces_lost,
}


def saved_as(folder: Path, sample: str, text: str | None = None) -> Path:
    """The sample (or `text`) saved under the log name its file name starts with."""
    name = "OSDLaunch.log" if sample.startswith("osdlaunch") else "smsts.log"
    path = folder / sample / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        shutil.copyfile(REAL / sample, path)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("sample", sorted(REAL_SAMPLES))
def test_real_sample_gives_its_kb_and_unrelated_ones_stay_unknown(
    tmp_path: Path, sample: str
) -> None:
    report = dx.diagnose_file(saved_as(tmp_path, sample), signatures())
    assert report.error is None and report.known_name
    assert found(report) == expected(sample)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("sample", sorted(REAL_SAMPLES))
def test_variant_of_a_real_sample_gives_the_same_diagnosis(
    tmp_path: Path, sample: str, variant: str
) -> None:
    """Each real sample as blogs, forums and viewers pass it on: the same KB, or still none."""
    text = VARIANTS[variant]((REAL / sample).read_text(encoding="utf-8"))
    if text == (REAL / sample).read_text(encoding="utf-8"):
        pytest.skip(f"{sample} has nothing the {variant} variant changes")
    report = dx.diagnose_file(saved_as(tmp_path, sample, text), signatures())
    assert report.error is None
    assert found(report) == expected(sample), (sample, variant)


def test_variants_change_what_the_signatures_look_at() -> None:
    """The variants are not no-ops for the matched lines (else the test above proves nothing)."""
    viewer = (REAL / "smsts-xp-bootsect-0x800700c1-kb2910552-viewer.log").read_text()
    assert "\u201cC:\\_SMSTaskSequence\\WinPE\\SMS\\bin\\i386\\bootsect.exe\u201d" in (
        typographic(viewer)
    )
    assert "CreateProcess failed.Code(0x800700C1)" in spaces_lost(viewer)
    assert "(Error:800700C1;Source:Windows)" in spaces_lost(viewer)
    assert "> Failed to install boot image CCR00004.  " in markdown_quoted(viewer)
    assert "CreateProcess failed. Code\\(0x800700C1\\)" in markdown_quoted(viewer)
    assert "bootsect.exe&quot; /NT60 SYS /MBR" in html_escaped(viewer)
    kb2000470 = (REAL / "smsts-multicast-hash-over4gb-kb2000470.log").read_text()
    assert "Original ContentHash = \\<Hash_From_DB>" in markdown_quoted(kb2000470)


def test_one_finding_per_kb_names_every_runbook_that_fixes_it(tmp_path: Path) -> None:
    path = saved_as(tmp_path, "smsts-xp-bootsect-0x800700c1-kb2910552-viewer.log")
    (finding,) = dx.diagnose_file(path, signatures()).findings
    assert finding.kb == "KB2910552" and finding.remedy is None
    assert [(x.runbook, x.command) for x in finding.fixes] == [
        ("boot-image-update", "invoke remediate boot-image-update --set target_arch=x86"),
        (
            "bootsect-downgrade",
            "invoke remediate bootsect-downgrade --set replacement_path=<bootsect.exe of "
            "Windows AIK 3.1 or Windows 8.0 media, on the site server>",
        ),
    ]
    done = run_invoke("diagnose", str(path))
    assert done.returncode == 1, done.stderr
    assert re.findall(r"^  (KB\d+)  ", done.stdout, re.M) == ["KB2910552"]
    assert "runbooks: boot-image-update (Update the boot images" in done.stdout
    assert "bootsect-downgrade (Replace the bootsect.exe" in done.stdout
    assert "  fix:   invoke remediate boot-image-update --set target_arch=x86" in done.stdout
    assert "  or:    invoke remediate bootsect-downgrade --set replacement_path=" in done.stdout
    assert "1 known failure(s) found in 1 file(s)." in done.stdout


def test_kb2709963_sparse_wim_is_told_apart_from_kb971413(tmp_path: Path) -> None:
    """The same hash-mismatch lines, plus 'Found sparse part of the file': KB2709963, whose
    only fix is unicast; without that line (KB2000470's sample) it is KB971413."""
    sparse = tmp_path / "sparse" / "smsts.log"
    sparse.parent.mkdir()
    shutil.copyfile(DATA / "kb2709963_smsts.log", sparse)
    (finding,) = dx.diagnose_file(sparse, signatures()).findings
    assert finding.kb == "KB2709963" and finding.fixes == []
    assert finding.remedy is not None and "unicast" in finding.remedy
    assert "sparse" in finding.cause
    # KB2000470's real lines with the sparse line before them: KB2709963, not KB971413.
    over4gb = (REAL / "smsts-multicast-hash-over4gb-kb2000470.log").read_text()
    both = saved_as(tmp_path, "mixed", "Found sparse part of the file: 5236588544 8192\n" + over4gb)
    assert kbs_found(dx.diagnose_file(both, signatures())) == ["KB2709963"]
    done = run_invoke("diagnose", str(sparse))
    assert done.returncode == 1, done.stderr
    assert "KB2709963" in done.stdout and "KB971413" not in done.stdout
    assert "runbook: none fixes it" in done.stdout
    assert re.search(r"fix: +Deploy the image by unicast.*\(no runbook to run\)", done.stdout)
    assert "invoke remediate" not in done.stdout


@pytest.mark.parametrize(
    ("name", "sample", "kb"),
    [
        ("smsts-PC042.log", "smsts-prestaged-winpe-kb2586709.log", "KB2586709"),
        ("PC042_smsts.log", "smsts-multicast-hash-over4gb-kb2000470.log", "KB971413"),
        ("smsts (2).log", "smsts-xp-bootsect-0x800700c1-kb2910552-viewer.log", "KB2910552"),
        ("OSDLaunch-PC042.log", "osdlaunch-nt4-kb930011.log", "KB930011"),
        # an OSDLaunch.log failure saved under an smsts name is not an smsts.log failure
        ("smsts-PC042.log", "osdlaunch-nt4-kb930011.log", None),
    ],
)
def test_any_file_name_after_the_log_counts_as_that_log(
    tmp_path: Path, name: str, sample: str, kb: str | None
) -> None:
    path = tmp_path / name
    shutil.copyfile(REAL / sample, path)
    report = dx.diagnose_file(path, signatures())
    assert report.known_name
    assert kbs_found(report) == ([kb] if kb else [])


def test_a_symptom_with_a_remedy_and_a_command_is_refused_at_its_line(tmp_path: Path) -> None:
    """`remedy` means no runbook fixes it: a `fix` beside it is a contradiction, exit 2."""
    root = make_root(tmp_path / "root")
    runbook = root / "runbooks" / "multicast.yaml"
    n = line_of(runbook, "    kb: KB2709963")
    edit_line(runbook, n, "    kb: KB2709963", "    kb: KB2709963\n    fix: --method auto")
    done = run_program("validate", root=root)
    assert done.returncode == 2
    assert re.search(
        rf"^error: {re.escape(str(runbook))}:\d+:\d+: .*names its 'kb' and has no 'fix'",
        done.stderr + done.stdout,
        re.M,
    ), done.stderr + done.stdout


# -- the command line ---------------------------------------------------------------------------


def run_invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, root=ROOT, env=env, timeout=120)


def test_cli_names_the_kb_lines_cause_and_command(tmp_path: Path) -> None:
    forms = write_forms(DATA / "kb2910552_smsts.log", "smsts.log", tmp_path)
    done = run_invoke("diagnose", str(forms["cmtrace"]))
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert "KB2910552" in out and "boot-image-update" in out
    assert re.search(r"line 6\s+10-31-2013 09:49:27\.353\+420\s+TSManager.*bootsect\.exe", out)
    assert "line 9-10" in out
    assert "cause: The bootsect.exe" in out
    assert "fix:   invoke remediate boot-image-update --set target_arch=x86" in out


def test_cli_exit_0_when_nothing_known_with_the_count(tmp_path: Path) -> None:
    path = tmp_path / "smsts.log"
    shutil.copyfile(DATA / "multicast_ok_smsts.log", path)
    done = run_invoke("diagnose", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No known failure found: 1 file(s), 10 lines, 10 records read." in done.stdout


def test_cli_several_files_after_double_dash_and_json(tmp_path: Path) -> None:
    a = tmp_path / "a" / "smsts.log"
    b = tmp_path / "b" / "OSDLaunch.log"
    for src, dst in (("kb2586709_smsts.log", a), ("kb930011_OSDLaunch.log", b)):
        dst.parent.mkdir()
        shutil.copyfile(DATA / src, dst)
    done = run_invoke("diagnose", "--json", str(a), "--", str(b))
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["exit_code"] == 1
    by_file = {Path(f["name"]).name: f for f in result["files"]}
    assert [f["kb"] for f in by_file["smsts.log"]["findings"]] == ["KB2586709"]
    (finding,) = by_file["OSDLaunch.log"]["findings"]
    assert [x["runbook"] for x in finding["fixes"]] == ["nt4-precheck"]
    ev = by_file["OSDLaunch.log"]["findings"][0]["evidence"][0]
    assert ev["line"] == 2 and "800700B7" in ev["message"]


def test_cli_binary_file_is_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "smsts.log"
    path.write_bytes(bytes(range(256)) * 64)
    done = run_invoke("diagnose", str(path))
    assert done.returncode == 2
    assert f"error: {path}: content is binary" in done.stderr


def test_cli_missing_file_is_exit_2(tmp_path: Path) -> None:
    done = run_invoke("diagnose", str(tmp_path / "nope.log"))
    assert done.returncode == 2
    assert "cannot read" in done.stderr


# -- --host: the logs come over WinRM (a lab host that answers the fetch script) ----------------


def test_cli_host_fetches_the_logs_over_winrm(tmp_path: Path) -> None:
    import base64

    from cmrunbook.render.result import RESULT_MARKER
    from cmrunbook_lab.winrm.commands import CommandIO, FunctionBackend, script_of
    from cmrunbook_lab.winrm.server import LabServer

    smsts = r"C:\_SMSTaskSequence\Logs\Smstslog\smsts.log"
    seen: list[str] = []

    def host(command: str, arguments: list[str], io: CommandIO) -> int:
        seen.append(script_of(command, arguments, io))
        data = {smsts: base64.b64encode((DATA / "kb2910552_smsts.log").read_bytes()).decode()}
        result = {"ok": True, "changed": False, "message": "1 of 7", "data": data}
        io.write_stdout(RESULT_MARKER + json.dumps(result) + "\r\n")
        return 0

    inventory = tmp_path / "inv.yaml"
    with LabServer(lambda name: FunctionBackend(host), {"labuser": "labpass"}) as lab:
        inventory.write_text(
            "sites: {P12: {version: 2012r2, provider: xp-wks001}}\n"
            "winrm: {operation_timeout: 2, read_timeout: 5}\n"
            "hosts:\n"
            "  xp-wks001:\n"
            "    address: 127.0.0.1\n"
            "    site: P12\n"
            "    roles: [site_server, client]\n"
            "    os: {version: xp, arch: x86}\n"
            f"    winrm: {{port: {lab.port}, path: /wsman/xp-wks001}}\n"
        )
        env = {"CMRUNBOOK_USER": "labuser", "CMRUNBOOK_PASSWORD": "labpass"}
        done = run_invoke(
            "diagnose",
            "all",
            "--host",
            "xp-wks001",
            "--inventory",
            str(inventory),
            "--non-interactive",
            env=env,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"xp-wks001:{smsts}: 17 lines" in done.stdout
    assert "KB2910552" in done.stdout
    assert "labpass" not in done.stdout + done.stderr
    (script,) = seen
    assert "'C:\\StageNT\\SMSOSD\\OSDLogs\\OSDLaunch.log'" in script
    assert "FileShare]::ReadWrite" in script


def test_cli_host_without_credentials_is_exit_2(tmp_path: Path) -> None:
    env = {"CMRUNBOOK_USER": "", "CMRUNBOOK_PASSWORD": ""}
    done = run_invoke("diagnose", "all", "--host", "cm07-dp01", "--non-interactive", env=env)
    assert done.returncode == 2
    assert "no WinRM credentials" in done.stderr and "--non-interactive" in done.stderr


def test_fetch_script_is_valid_powershell() -> None:
    tree_sitter = pytest.importorskip("tree_sitter")
    pwsh = pytest.importorskip("tree_sitter_pwsh")
    script = fetch_script(
        Project(ROOT).renderer, "h", [*dx.SMSTS_CANDIDATES, *dx.OSDLAUNCH_CANDIDATES], 1 << 24
    )
    tree = tree_sitter.Parser(tree_sitter.Language(pwsh.language())).parse(script.encode())
    assert not tree.root_node.has_error
    assert "'%windir%\\System32\\CCM\\Logs\\SMSTSLog\\smsts.log'" in script


# -- fidelity F12: base64 needs no escaping, and the default fetch fits WinRM 2.0's quota -------


def _json_string_branch(prelude: str) -> str:
    """The string part of the prelude's ConvertTo-CmrbJson: what follows the last collection."""
    func = prelude[prelude.index("function ConvertTo-CmrbJson") :]
    func = func[: func.index("\ntry {")]
    return func[func.rindex("return '[' + ($parts -join ',') + ']'") :]


def test_prelude_writes_base64_without_the_per_character_loop() -> None:
    """A string that needs no escaping is returned before the loop; the test holds the
    fast path's regex to the loop's own rule (escape `"`, `\\`, controls and non-ASCII)."""
    import base64
    import os

    prelude = Project(ROOT).renderer.script(
        "engine/fetch_logs.ps1.j2", {"paths": [], "max_bytes": 1}, header="h"
    )
    branch = _json_string_branch(prelude)
    fast = re.search(
        r"if \(\$text -cmatch '(?P<re>[^']+)'\) \{\s*(?:#[^\n]*\n\s*)*"
        r"return '\"' \+ \$text \+ '\"'\s*\}",
        branch,
    )
    assert fast is not None, branch
    assert fast.start() < branch.index(".ToCharArray()")
    # .NET and Python agree on this class and anchors; \z is Python's \Z.
    pattern = re.compile(fast["re"].replace(r"\z", r"\Z"))
    for size in (0, 1, 2, 3, 1000):
        assert pattern.match(base64.b64encode(os.urandom(size)).decode())
    for needs_escaping in ('a"b', "a\\b", "abc\n", "a\tb", "\x01", "caf\u00e9", "a b\u2019"):
        assert not pattern.match(needs_escaping), needs_escaping


def test_cli_host_default_fetch_is_the_tail_that_fits_winrm_2_quota(lab: Lab) -> None:
    """A 6 MB smsts.log on an XP client: the default fetch brings its last 4 MB, where the
    failure is, and diagnoses it; WinRM 2.0's 150 MB shell quota would not hold 16 MB."""
    host = lab.world.host("xp-wks002")
    log = host.fs.get(r"C:\WINDOWS\CCM\Logs\smsts.log")
    padding = b"".join(
        f'<![LOG[Step {i} done]LOG]!><time="09:00:00.000+420" date="10-31-2013" '
        f'component="TSManager" context="" type="1" thread="3048" file="x">\r\n'.encode()
        for i in range(60000)
    )
    assert len(padding) > 6 << 20
    log.data = bytearray(padding + bytes(log.data))
    done = lab.cli(
        "diagnose", "all", "--host", "xp-wks002", "--inventory", lab.inventory, "--non-interactive"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "KB2910552" in done.stdout
    assert "note: only the last 4 MB were fetched" in done.stdout
    (read,) = [r for r in host.stats.log_reads if r["log"] == "smsts.log"]
    assert read["bytes"] == 4 << 20


def test_fix_command_is_the_one_readme_teaches_with_the_inventory_given() -> None:
    """A check runbook's fix is `invoke check <name>`, not `invoke remediate <id>-check`; with
    --inventory the command carries it, and (placeholder filled in) it runs as printed."""
    log = str(DATA / "kb2586709_smsts.log")
    done = run_invoke("diagnose", log, "--inventory", "inventory/example.yaml")
    assert done.returncode == 1, done.stderr
    want = "invoke check site-hotfix --hosts site:<site code> --inventory inventory/example.yaml"
    assert f"  fix:   {want}\n" in done.stdout
    assert "remediate site-hotfix-check" not in done.stdout
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("  fix:")]
    command = line.split("fix:", 1)[1].replace("<site code>", "C07").split()
    assert command[:3] == ["invoke", "check", "site-hotfix"]
    ran = run_invoke(*command[1:], "--dry-run")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "site-hotfix-check" in ran.stdout
    without = run_invoke("diagnose", log)
    assert "  fix:   invoke check site-hotfix --hosts site:<site code>\n" in without.stdout
    assert "--inventory" not in without.stdout
