"""The input attacks of the attack report (§1b, §1c, §1d, §2c, §3, §4i), replayed with the real CLI.

Each test is named after the report's entry and feeds the attacker's own input to `invoke`: the
tool must refuse it with a one-line `error:` naming the file and line (exit 2), or, for a failure
of the jump host itself (a full disk), with the documented environment exit code 4, and never
with a traceback, a silently changed value, or code run from a runbook.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FAST, Lab, events
from helpers_engine import INVOKE, REPO, edit_line, line_of, make_root, run_cli

from cmrunbook.render.templates import Conditions

#: The condition of attack 1d: reaches os.system through ''.__class__ and runs `id`.
SUBCLASSES_WHEN = (
    "host.multicast and ((''.__class__.__mro__[1].__subclasses__() | selectattr('__name__', "
    "'equalto', '_wrap_close') | first).__init__.__globals__.system('id > {out}') == 0)"
)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The `error:` lines on stderr; the rest of stderr must be empty (no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr
    return lines


def assert_refused_at(
    result: subprocess.CompletedProcess[str], path: Path, line: int, *fragments: str
) -> str:
    """Exit 2, no plan, and an error at `path:line:` carrying every fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout[-800:], result.stderr)
    assert "DRY RUN" not in result.stdout, result.stdout[:500]
    pattern = re.compile(rf"^error: {re.escape(f'{path}:{line}:')}\d+: (.*)$")
    found = [m.group(1) for m in map(pattern.match, error_lines(result)) if m]
    assert found, f"no error at {path}:{line} in:\n{result.stderr}"
    message = next((m for m in found if all(f in m for f in fragments)), None)
    assert message is not None, f"{path}:{line} lacks {fragments}:\n{result.stderr}"
    return message


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An editable copy of the project (runbooks, templates, inventory)."""
    return make_root(tmp_path / "root")


# ---------------------------------------------------------------------------------------------
# 1d: a runbook condition cannot run code


def test_attack_1d_when_subclasses_rejected(root: Path, tmp_path: Path) -> None:
    """The attack's `when:` is refused at its line by the dry run and by `validate`; `id` never
    runs."""
    pwned = tmp_path / "PWNED_when"
    runbook = root / "runbooks" / "multicast.yaml"
    n = line_of(runbook, "when: host.multicast")
    payload = SUBCLASSES_WHEN.format(out=pwned).replace('"', '\\"')
    edit_line(runbook, n, "when: host.multicast", f'when: "{payload}"')
    dry = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root)
    message = assert_refused_at(dry, runbook, n, "condition is refused")
    assert "__class__" in message and "call" in message
    validate = run_cli("validate", root=root)
    assert validate.returncode == 2
    assert f"error: {runbook}:{n}:" in validate.stderr and "condition is refused" in validate.stderr
    assert not pwned.exists()


def test_attack_1d_conditions_run_in_a_sandbox() -> None:
    """Even a condition that skipped the load-time check cannot reach Python's internals."""
    import jinja2.sandbox

    fn = Conditions().compile("''.__class__.__mro__[1].__subclasses__()")
    with pytest.raises(jinja2.sandbox.SecurityError):
        fn()
    assert Conditions().compile("target.pxe and params.x == 'a'")(
        target={"pxe": True}, params={"x": "a"}
    )


# ---------------------------------------------------------------------------------------------
# 3: YAML cannot exhaust the machine

#: Runs the CLI once as its only child and reports the child's wall time and peak memory (its own
#: RUSAGE_CHILDREN sees nothing else). The child's address space is capped, so that without the
#: limits the bomb fails with a MemoryError instead of taking the test machine's memory.
MEASURE = """
import json, resource, subprocess, sys, time
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
start = time.monotonic()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True, preexec_fn=cap, timeout=120)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"code": p.returncode, "stderr": p.stderr, "stdout": p.stdout[-500:],
                  "wall": wall, "rss_mb": rss}))
"""


def measured_cli(*args: str, root: Path) -> dict[str, object]:
    """`invoke ARGS` in a fresh measuring process: exit code, output, wall seconds, peak MB."""
    env = {**os.environ, "CMRUNBOOK_ROOT": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, INVOKE, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return json.loads(out.stdout)


def alias_bomb(levels: int, indent: str = "  ") -> list[str]:
    """The attack's billion laughs: each level ten aliases of the one before (2.6 KB at 8)."""
    lines = [f"{indent}l0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    for i in range(1, levels):
        lines.append(f"{indent}l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return lines


def as_result(m: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """A measured run as subprocess.run would have returned it."""
    return subprocess.CompletedProcess([], int(str(m["code"])), str(m["stdout"]), str(m["stderr"]))


def test_attack_3_alias_bomb_refused(root: Path) -> None:
    """An 8-level bomb in the inventory's vars (2.6 KB, 2.5 GB expanded) is refused at the alias
    that would cross the limit, in well under a second of work and under 100 MB."""
    inventory = root / "inventory" / "example.yaml"
    lines = ["vars:", *alias_bomb(8)]
    text = inventory.read_text("utf-8")
    inventory.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")
    assert len("\n".join(lines)) < 3000
    base = measured_cli("validate", root=make_root(root.parent / "plain"))
    bomb = measured_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root)
    print(
        f"\nalias bomb (8 levels): exit {bomb['code']}, wall {bomb['wall']:.2f} s, "
        f"max RSS {bomb['rss_mb']:.0f} MB; the same CLI on a plain project: wall "
        f"{base['wall']:.2f} s, max RSS {base['rss_mb']:.0f} MB"
    )
    first_alias = len(text.splitlines()) + 1 + 2  # the first line that aliases an alias
    result = as_result(bomb)
    located = re.search(
        rf"^error: {re.escape(str(inventory))}:(\d+):\d+: alias \*a\d would expand the file",
        result.stderr,
        re.M,
    )
    assert result.returncode == 2 and located, (result.returncode, result.stderr)
    assert first_alias <= int(located[1]) < first_alias + 7
    error_lines(result)
    # Generous bounds for a loaded machine: the refusal adds under a second to the CLI's own
    # start, and the process stays under 100 MB (unrefused: 71 s and 2.5 GB).
    assert float(bomb["wall"]) < float(base["wall"]) + 1.0 + 2.0 * float(base["wall"])
    assert float(bomb["rss_mb"]) < 100


def test_attack_3_alias_bomb_in_runbook_and_lab_file(root: Path, tmp_path: Path) -> None:
    """The same bomb under an unknown key of a runbook (validate) and of a lab file: refused at
    the alias, not expanded first and then reported as an unknown key."""
    runbook = root / "runbooks" / "multicast.yaml"
    text = runbook.read_text("utf-8")
    runbook.write_text(text + "x-bomb:\n" + "\n".join(alias_bomb(8)) + "\n", encoding="utf-8")
    result = run_cli("validate", root=root, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert re.search(rf"error: {re.escape(str(runbook))}:\d+:\d+: alias \*a\d", result.stderr)
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text("bomb:\n" + "\n".join(alias_bomb(8)) + "\n", encoding="utf-8")
    result = run_cli("lab", "--lab-file", str(lab_file), "--state", str(tmp_path), timeout=30)
    assert result.returncode == 2, result.stderr
    assert re.search(rf"error: {re.escape(str(lab_file))}:\d+:\d+: alias \*a\d", result.stderr)


def test_attack_3_deep_nesting_refused(root: Path) -> None:
    """5,000 nested brackets: a located error at the level past the limit, no RecursionError."""
    inventory = root / "inventory" / "example.yaml"
    text = inventory.read_text("utf-8")
    inventory.write_text(text + "vars: {deep: " + "[" * 5000 + "]" * 5000 + "}\n", "utf-8")
    n = len(text.splitlines()) + 1
    result = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root)
    assert_refused_at(result, inventory, n, "nested more than 64 levels")


def test_attack_3_file_size_limit(root: Path) -> None:
    """A file beyond the size limit is refused unread (a sparse file: no disk is used)."""
    inventory = root / "inventory" / "example.yaml"
    with inventory.open("r+b") as fh:
        fh.truncate(33 * 1024 * 1024)
    result = run_cli("remediate", "multicast", "--dry-run", "--inventory", str(inventory))
    assert_refused_at(result, inventory, 1, "larger than 32 MB")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("!!python/object/apply:os.system ['id > PWNED']", "!!python/object/apply:os.system"),
        ("!!python/object/new:os.system {args: ['id > PWNED']}", "!!python/object/new:os.system"),
        ("!!binary aGVsbG8nOyBSZW1vdmUtSXRlbQ==", "!!binary"),
        ("!!set {a, b}", "!!set"),
        ("{!!python/name:os.system key: 1}", "!!python/name:os.system"),
    ],
)
def test_attack_3_tags_refused(root: Path, value: str, expected: str) -> None:
    """Tags on sequences and mappings, !!binary and !!set: refused at the value, not dropped or
    turned into a Python repr in a script."""
    inventory = root / "inventory" / "example.yaml"
    text = inventory.read_text("utf-8")
    inventory.write_text(text + f"vars:\n  pxe_share: {value}\n", encoding="utf-8")
    n = len(text.splitlines()) + 2
    result = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root)
    assert_refused_at(result, inventory, n, f"unsupported YAML tag {expected}")


@pytest.mark.parametrize("char", ["\x00", "\x07"])
def test_attack_3_control_character_located(root: Path, char: str) -> None:
    """A raw NUL or BEL is reported at its own line and column, not at 1:1."""
    inventory = root / "inventory" / "example.yaml"
    n = line_of(inventory, "address:")
    column = inventory.read_text("utf-8").splitlines()[n - 1].index("address:") + 1
    edit_line(inventory, n, "address:", f"{char}address:")
    result = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root)
    message = assert_refused_at(result, inventory, n, f"U+{ord(char):04X}")
    assert f"{inventory}:{n}:{column}:" in result.stderr, message


def test_attack_3_latin1_byte_located(root: Path) -> None:
    inventory = root / "inventory" / "example.yaml"
    n = line_of(inventory, "address:")
    data = inventory.read_bytes().splitlines(keepends=True)
    data[n - 1] = data[n - 1].replace(b"address:", b"# caf\xe9\n    address:", 1)
    inventory.write_bytes(b"".join(data))
    result = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root)
    assert_refused_at(result, inventory, n, "not UTF-8", "0xe9")


# ---------------------------------------------------------------------------------------------
# 1b: typed values stay what the user wrote

#: The attack's vars for cm07-dp01 (work/yt/typed.yaml), each with what YAML made of it.
TYPED_VARS = [
    ("pxe_share", "yes", "YAML reads yes as a boolean (True); quote it to keep it: 'yes'"),
    ("backup_dir", "0x10", "YAML reads 0x10 as a number (16)"),
    ("multicast_role", "1.0e+3", "YAML reads 1.0e+3 as a number (1000.0)"),
    ("pxe_role", "null", "is null (null); write the text in quotes, or remove it"),
]
TYPED_LIST = "[on, '12:30', 12:30, 0777, 2024-01-02, ~]"
TYPED_ITEMS = [
    (0, "YAML reads on as a boolean (True)"),
    (2, "YAML reads 12:30 as a number (750)"),
    (3, "YAML reads 0777 as a number (511)"),
    (5, "is null (~)"),
]


def test_attack_1b_typed_values_refused(root: Path) -> None:
    """Every retyped string var is an error at its own line with the hint to quote it; none
    reaches a script as 'True', '16', '1000.0', '750', '511' or 'None'."""
    inventory = root / "inventory" / "example.yaml"
    n = line_of(inventory, "dp: {multicast: true, pxe: true}")
    lines = inventory.read_text("utf-8").splitlines()
    added = ["    vars:", *(f"      {k}: {v}" for k, v, _ in TYPED_VARS)]
    added.append(f"      smswdstp_paths: {TYPED_LIST}")
    lines[n:n] = added
    inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli(
        "remediate",
        "multicast",
        "--method",
        "4",
        "--dry-run",
        "--show-scripts",
        "--hosts",
        "cm07-dp01",
        root=root,
    )
    for i, (name, _, expected) in enumerate(TYPED_VARS):
        assert_refused_at(result, inventory, n + 2 + i, f"{name} {expected}")
    list_line = n + 2 + len(TYPED_VARS)
    for index, expected in TYPED_ITEMS:
        assert_refused_at(result, inventory, list_line, f"smswdstp_paths[{index}] {expected}")
    # The quoted '12:30' and the date (its own text) are not reported.
    assert "smswdstp_paths[1]" not in result.stderr and "smswdstp_paths[4]" not in result.stderr
    assert "'True'" not in result.stdout and "'None'" not in result.stdout
    # `validate` (the editor's and CI's check) reports the same lines before any plan.
    validate = run_cli("validate", root=root)
    assert validate.returncode == 2
    for i, (name, _, expected) in enumerate(TYPED_VARS):
        assert f"error: {inventory}:{n + 2 + i}:" in validate.stderr
        assert f"{name} {expected}" in validate.stderr
    assert f"smswdstp_paths[3] {TYPED_ITEMS[2][1]}" in validate.stderr


def test_attack_1b_quoted_values_are_kept(root: Path) -> None:
    """The fix the hint names works: quoted, the same values reach the scripts as written."""
    inventory = root / "inventory" / "example.yaml"
    n = line_of(inventory, "dp: {multicast: true, pxe: true}")
    lines = inventory.read_text("utf-8").splitlines()
    lines[n:n] = ["    vars:", "      pxe_share: 'yes'", "      backup_dir: '0x10'"]
    inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli(
        "remediate",
        "multicast",
        "--method",
        "4",
        "--dry-run",
        "--show-scripts",
        "--hosts",
        "cm07-dp01",
        root=root,
    )
    assert result.returncode == 0, result.stderr
    assert "$share = 'yes'" in result.stdout and "'0x10'" in result.stdout


def test_attack_1b_string_field_of_the_inventory(root: Path) -> None:
    """A string field of the inventory itself (a host's address) gets the same hint."""
    inventory = root / "inventory" / "example.yaml"
    n = line_of(inventory, "address: cm07-dp01.corp.example")
    edit_line(inventory, n, "cm07-dp01.corp.example", "0x10")
    result = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root)
    assert_refused_at(result, inventory, n, "address YAML reads 0x10 as a number (16)")


def test_attack_1b_runbook_default_typed(root: Path) -> None:
    """A runbook's own default for a string parameter is checked the same way by validate."""
    runbook = root / "runbooks" / "multicast.yaml"
    n = line_of(runbook, "default: WDS", after=line_of(runbook, "parameters:"))
    edit_line(runbook, n, "default: WDS", "default: 0777")
    result = run_cli("validate", root=root)
    assert result.returncode == 2
    assert f"error: {runbook}:{n}:" in result.stderr and "0777 as a number (511)" in result.stderr


# ---------------------------------------------------------------------------------------------
# 1c: text that is not UTF-8


def test_attack_1c_invalid_utf8_set(tmp_path: Path) -> None:
    """`--set $'pxe_share=\\xff\\xfe'`: one error line, exit 2, and no 0-byte script left."""
    out = tmp_path / "surr_out"
    result = run_cli(
        "remediate",
        "multicast",
        "--method",
        "4",
        "--dry-run",
        "--hosts",
        "cm07-dp01",
        "--set",
        os.fsdecode(b"pxe_share=\xff\xfe"),
        "--out",
        str(out),
    )
    assert result.returncode == 2, result.stderr
    message = r"error: the command line argument b'pxe_share=\xff\xfe' is not UTF-8 text"
    assert error_lines(result) == [message]
    assert not out.exists()


def test_attack_1c_lone_surrogate_in_inventory(root: Path) -> None:
    """An inventory value written as a YAML escape of a lone surrogate is refused at its line."""
    inventory = root / "inventory" / "example.yaml"
    n = line_of(inventory, "address: cm07-dp01.corp.example")
    edit_line(inventory, n, "cm07-dp01.corp.example", '"cm07-dp01\\udc80x"')
    result = run_cli("checklist", "multicast", "--method", "4", root=root)
    assert_refused_at(result, inventory, n, "lone surrogate U+DC80")


# ---------------------------------------------------------------------------------------------
# 2c, 4i: failures of the jump host's files are one line and the right exit code

LONG_HOST = "xp-" + "l" * 300


def renamed_inventory(lab: Lab, old: str, new: str) -> Path:
    """A copy of the lab's inventory with host `old` listed as `new` (still the lab's host)."""
    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    data["hosts"] = {(new if k == old else k): v for k, v in data["hosts"].items()}
    for group in data.get("groups", {}).values():
        group["hosts"] = [new if h == old else h for h in group.get("hosts", [])]
    path = lab.tmp / "inventory-renamed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_attack_2c_long_host_name(lab: Lab, tmp_path: Path) -> None:
    """The attack's 303-character host name, run (2c) and dry run to --out (2d): file names made
    of host names are bounded (filenames.safe_name), so both simply work: no traceback, no
    empty run folder. (A path too long for the file system is
    test_attack_2c_path_too_long_leaves_no_run_folder.)"""
    inventory = str(renamed_inventory(lab, "xp-fleet001", LONG_HOST))
    run = lab.cli(
        "check", "client-hotfix", "--hosts", "xp-lll*", "--non-interactive", inventory=inventory
    )
    assert "Traceback" not in run.stderr, run.stderr
    (run_dir,) = lab.run_dirs()
    assert run.returncode == 1, run.stdout + run.stderr  # xp-fleet001 is non-compliant
    assert "run-end" in (run_dir / "journal.jsonl").read_text(encoding="utf-8")
    out = tmp_path / "longout"
    dry = run_cli(
        "check",
        "client-hotfix",
        "--hosts",
        "xp-lll*",
        "--dry-run",
        "--out",
        str(out),
        "--inventory",
        inventory,
    )
    assert "Traceback" not in dry.stderr, dry.stderr
    assert dry.returncode == 0 and list(out.rglob("*.ps1")), dry.stderr


def test_attack_2c_path_too_long_leaves_no_run_folder(lab: Lab) -> None:
    """The error path whatever file names look like: a --runs folder so deep that the run folder
    can be made but not the files in it (PATH_MAX). One line, exit 2, no run folder left."""
    # The run folder's path (runs + "/<stamp>-client-hotfix-check") stays under PATH_MAX
    # (4096 with its NUL); the journal's (its path + "/journal.jsonl") does not.
    runs = lab.tmp / "deep"
    want = 4095 - 1 - len("20261202-130024-client-hotfix-check") - 5
    while len(str(runs)) < want:
        runs = runs / ("d" * min(200, want - len(str(runs)) - 1))
    runs.mkdir(parents=True)
    cmd = [INVOKE, "check", "client-hotfix", "--hosts", "xp-fleet001", "--non-interactive"]
    cmd += ["--inventory", lab.inventory, "--runs", str(runs), "--time-scale", "0.02"]
    result = subprocess.run(cmd, cwd=REPO, env=lab.env(), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "file name too long for the file system" in line and "did not start" in line
    assert list(runs.iterdir()) in ([], [runs / ".locks"]), list(runs.iterdir())


def with_file_size_limit(
    limit: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS` with RLIMIT_FSIZE: a write past `limit` bytes of any file fails with EFBIG,
    as a full disk fails it with ENOSPC (SIGXFSZ ignored, so the write returns the error instead
    of killing the process). No root, no mount: the honest way to fill the disk in a test."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [INVOKE, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limited,
        timeout=240,
    )


def run_with_file_size_limit(lab: Lab, limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """A run against the lab with the file size limit."""
    more = ["--inventory", lab.inventory, "--runs", str(lab.runs), *FAST]
    return with_file_size_limit(limit, *args, *more, env=lab.env())


def test_attack_4i_dry_run_out_disk_full(tmp_path: Path) -> None:
    """A dry run writing scripts to --out on a full disk: exit 4 and the file it could not
    write, one line."""
    out = tmp_path / "out"
    result = with_file_size_limit(4096, "check", "client-hotfix", "--dry-run", "--out", str(out))
    assert result.returncode == 4, result.stderr
    (line,) = error_lines(result)
    assert re.match(rf"error: cannot write {re.escape(str(out))}/\S+\.ps1: File too large", line)


def test_attack_4i_disk_full_exit_code(lab: Lab) -> None:
    """The journal cannot grow past 24 KB in the middle of a 20-fork client check: exit 4 (not 1,
    "non-compliant"), one error line naming the journal and how to continue, no traceback; the
    journal stays resumable and --resume (with room again) finishes every client."""
    check = ["check", "client-hotfix", "--non-interactive", "--forks", "20"]
    full = run_with_file_size_limit(lab, 24 * 1024, *check)
    assert full.returncode == 4, (full.returncode, full.stdout[-500:], full.stderr)
    (line,) = error_lines(full)
    (run_dir,) = lab.run_dirs()
    journal = run_dir / "journal.jsonl"
    assert line.startswith(f"error: cannot write {journal}: File too large")
    assert f"--resume {run_dir}" in line
    assert "run-end" not in journal.read_text(encoding="utf-8", errors="replace")
    resumed = lab.cli("check", "client-hotfix", "--resume", str(run_dir), "--non-interactive")
    assert resumed.returncode == 1, resumed.stderr  # the lab's fleet has non-compliant clients
    names = {e["host"] for e in events(run_dir) if e.get("event") == "host-end"}
    targets = next(e for e in events(run_dir) if e["event"] == "run")["targets"]
    assert names == set(targets) and events(run_dir)[-1]["event"] == "run-end"


def test_attack_6b_non_utf8_argument_refused_before_the_run(lab: Lab) -> None:
    """Bytes that are not UTF-8 anywhere on a real run's command line (here an exclusion that
    matches nothing) are refused before the run: no run folder with an empty journal, no
    traceback from the journal or the reports."""
    hosts = os.fsdecode(b"xp-fleet003,!\xff\xfe")
    result = lab.cli("check", "client-hotfix", "--hosts", hosts, "--non-interactive")
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [
        r"error: the command line argument b'xp-fleet003,!\xff\xfe' is not UTF-8 text"
    ]
    assert not lab.run_dirs()
