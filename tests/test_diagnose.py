"""`invoke diagnose`: the KB's log lines, in every shape a log takes, give the same diagnosis.

The signatures come from the committed runbooks, as `invoke diagnose` loads them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Lab
from helpers_engine import run_cli
from test_cmtrace import cmtrace_line, sms2007_line

from cmrunbook import diagnose as dx
from cmrunbook.catalog import Catalog
from cmrunbook.cmtrace import open_log

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
INVOKE = Path(sys.executable).with_name("invoke")

# (data file, log name it is saved as, runbook expected, KB expected)
CASES = [
    ("kb2910552_smsts.log", "smsts.log", "boot-image-update", "KB2910552"),
    ("forum_smsts.log", "smsts.log", "boot-image-update", "KB2910552"),
    ("kb2586709_smsts.log", "smsts.log", "site-hotfix-check", "KB2586709"),
    ("kb930011_OSDLaunch.log", "OSDLaunch.log", "nt4-precheck", "KB930011"),
]


def signatures(root: Path = ROOT) -> list[dx.Signature]:
    sigs, _ = dx.load_signatures(Catalog(root))
    return sigs


def runbooks_found(report: dx.FileReport) -> set[str]:
    return {f.runbook for f in report.findings}


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
            (f.runbook, f.kb, f.symptom, f.command, tuple(e.message for e in f.evidence))
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
    report = dx.diagnose_file(DATA / "kb930011_OSDLaunch.log", signatures())
    # the data file's own name is no log a runbook names...
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
    finding = next(f for f in report.findings if f.runbook == "boot-image-update")
    lines = {e.line: e for e in finding.evidence}
    assert 6 in lines and lines[6].timestamp == "2013-10-31T09:49:27.353000-07:00"
    assert lines[9].last_line == 10
    assert finding.command.startswith("invoke remediate boot-image-update")


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
    finding = next(f for f in report.findings if f.runbook == "multicast")
    assert finding.kb == "KB971413"
    assert {e.line for e in finding.evidence} >= {9, 10, 11}
    assert finding.command == "invoke remediate multicast --method auto"
    assert dx.diagnose_file(good, sigs).findings == []
    # ... and the same in the 2007 form
    forms = write_forms(bad, "smsts.log", tmp_path / "forms")
    assert "multicast" in runbooks_found(dx.diagnose_file(forms["sms2007"], sigs))


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
    assert [f["runbook"] for f in by_file["OSDLaunch.log"]["findings"]] == ["nt4-precheck"]
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

    from cmrunbook.lab.wsman import CommandIO, FunctionBackend, LabServer
    from cmrunbook.render import RESULT_MARKER

    smsts = r"C:\_SMSTaskSequence\Logs\Smstslog\smsts.log"
    seen: list[str] = []

    def host(command: str, arguments: list[str], io: CommandIO) -> int:
        script = io.read_stdin().decode("utf-8")
        seen.append(script)
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
    script = dx.fetch_script(
        Catalog(ROOT).renderer, "h", [*dx.SMSTS_CANDIDATES, *dx.OSDLAUNCH_CANDIDATES], 1 << 24
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

    prelude = Catalog(ROOT).renderer.script("engine/fetch_logs.ps1.j2",
                                            {"paths": [], "max_bytes": 1}, header="h")  # fmt: skip
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
    done = lab.cli("diagnose", "all", "--host", "xp-wks002", "--inventory", lab.inventory,
                   "--non-interactive")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "KB2910552" in done.stdout
    assert "note: only the last 4 MB were fetched" in done.stdout
    (read,) = [r for r in host.stats.log_reads if r["log"] == "smsts.log"]
    assert read["bytes"] == 4 << 20
