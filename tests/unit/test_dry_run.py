"""The dry run, read as an operator or a change board reads it.

It must follow the KB article's steps in the article's order (checked against the article's own
text, not against the runbook), show what the inventory skips and why, mark destructive steps,
show where each log monitor is armed, open no network connection, and give the exact scripts.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from helpers_engine import EXAMPLE_INVENTORY, REPO, kb_dir, run_cli, syntax_problems

from cmrunbook.filenames import safe_name
from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Planner

CATALOG = Project(REPO)
KB_FILE = "001_a8fbbab674d97a46.txt"

# ---------------------------------------------------------------------------------------------
# Reading the KB article


@dataclass
class KbMethod:
    number: int
    steps: dict[int, str]


@cache
def kb_methods() -> dict[int, KbMethod]:
    """Methods 1-4 of the multicast article, step number -> text, from the article itself."""
    folder = kb_dir()
    if folder is None:
        pytest.skip(
            f"the source article {KB_FILE} is not next to the repository (CMRUNBOOK_KB_DIR)"
        )
    text = (folder / KB_FILE).read_text("utf-8")
    methods: dict[int, KbMethod] = {}
    current: KbMethod | None = None
    last: int | None = None
    for line in text.splitlines():
        header = re.fullmatch(r"Method (\d+)", line.strip())
        if header:
            current = KbMethod(int(header.group(1)), {})
            methods[current.number] = current
            last = None
            continue
        if current is None:
            continue
        if line.startswith("For more information") or line.startswith("Note "):
            current = None
            continue
        step = re.match(r"^\s+(\d+)\.\s+(.*)$", line)
        if step:
            last = int(step.group(1))
            current.steps[last] = step.group(2).strip()
        elif last is not None and line.startswith("    ") and line.strip():
            current.steps[last] += " " + line.strip()  # a step wrapped onto the next line
    return methods


def test_kb_reader_finds_the_four_methods() -> None:
    """The reader itself: 3, 5, 12 and 12 steps, numbered from 1 without gaps."""
    methods = kb_methods()
    assert sorted(methods) == [1, 2, 3, 4]
    assert {n: len(m.steps) for n, m in methods.items()} == {1: 3, 2: 5, 3: 12, 4: 12}
    for m in methods.values():
        assert sorted(m.steps) == list(range(1, len(m.steps) + 1))
    assert methods[4].steps[1] == "Follow steps 1 to step 6 of Method 3."


# ---------------------------------------------------------------------------------------------
# Reading the dry run


@dataclass
class Entry:
    number: int
    citation: str
    title: str
    details: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.details)

    @property
    def skipped(self) -> bool:
        return any(d.strip().startswith("skipped:") for d in self.details)

    def own_range(self, method: int) -> tuple[int, int]:
        """The KB steps of `method` this entry cites first, e.g. 'Method 4, steps 2-3'."""
        m = re.match(rf"Method {method}, steps? (\d+)(?:-(\d+))?", self.citation)
        assert m, f"entry {self.number} cites {self.citation!r}, not Method {method}"
        return int(m.group(1)), int(m.group(2) or m.group(1))

    def included_range(self) -> tuple[int, int, int] | None:
        """(method, first, last) of an '(= Method 3, steps 1-4)' citation."""
        m = re.search(r"\(= Method (\d+), steps? (\d+)(?:-(\d+))?\)", self.citation)
        if not m:
            return None
        return int(m.group(1)), int(m.group(2)), int(m.group(3) or m.group(2))


@dataclass
class Stage:
    title: str
    entries: list[Entry] = field(default_factory=list)


@dataclass
class HostSection:
    name: str
    header: str
    stages: list[Stage] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def stage(self, title: str) -> Stage:
        found = [s for s in self.stages if s.title == title]
        assert len(found) == 1, f"{self.name}: stage {title!r} in {[s.title for s in self.stages]}"
        return found[0]

    @property
    def entries(self) -> list[Entry]:
        return [e for s in self.stages for e in s.entries]


def parse_dry_run(stdout: str) -> dict[str, HostSection]:
    """Host name -> its stages and numbered entries, from the dry run's text."""
    hosts: dict[str, HostSection] = {}
    host: HostSection | None = None
    entry: Entry | None = None
    in_script = False
    for line in stdout.splitlines():
        head = re.match(r"^== (\S+) \(", line)
        if head:
            host = HostSection(head.group(1), line)
            hosts[host.name] = host
            entry = None
            continue
        if host is None:
            continue
        host.lines.append(line)
        if line.strip() == "---- PowerShell ----":
            in_script = True
            continue
        if in_script and line.startswith("       |"):
            continue
        in_script = False
        stage = re.match(r"^  -- (.*) --$", line)
        if stage:
            host.stages.append(Stage(stage.group(1)))
            entry = None
            continue
        numbered = re.match(r"^\s*(\d+)\. \[(.*?)\] (.*)$", line)
        if numbered and host.stages:
            entry = Entry(int(numbered.group(1)), numbered.group(2), numbered.group(3))
            host.stages[-1].entries.append(entry)
            continue
        if entry is not None and line.startswith("       "):
            entry.details.append(line)
        elif line and not line.startswith("       "):
            entry = None
    return hosts


@cache
def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    """`invoke remediate multicast ARGS --dry-run`, once per distinct command line."""
    result = run_cli("remediate", "multicast", "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DRY RUN: multicast"), result.stdout[:200]
    return result


def hosts_of(*args: str) -> dict[str, HostSection]:
    return parse_dry_run(dry_run(*args).stdout)


def kb_sequence(entries: list[Entry], method: int) -> list[int]:
    """The KB step numbers the entries cover, in the order shown, repeats of one step merged."""
    seq: list[int] = []
    for e in entries:
        first, last = e.own_range(method)
        for n in range(first, last + 1):
            if not seq or seq[-1] != n:
                seq.append(n)
    return seq


# ---------------------------------------------------------------------------------------------
# (a) The article's order


@pytest.mark.parametrize("method", [1, 2, 3, 4])
def test_method_steps_follow_the_article(method: int) -> None:
    """Every KB step of the method appears, once, in the article's order (cm07-dp01)."""
    kb = kb_methods()[method]
    host = hosts_of("--method", str(method), "--hosts", "cm07-dp01")["cm07-dp01"]
    entries = host.stage(f"Method {method}").entries
    assert entries, "the method has no steps in the dry run"
    assert kb_sequence(entries, method) == sorted(kb.steps), [e.citation for e in entries]
    assert not [e for e in entries if e.skipped], (
        "cm07-dp01 is a PXE service point: nothing skipped"
    )


def test_method_4_reuses_method_3_as_the_article_says() -> None:
    """Method 4 step 1 = Method 3 steps 1-6; step 12 = Method 3 steps 7-12, erratum shown."""
    kb = kb_methods()
    assert re.search(r"steps? 1 to step 6 of Method 3", kb[4].steps[1])
    assert re.search(r"steps? 7 to step 13 of Method 3", kb[4].steps[12])
    assert max(kb[3].steps) == 12, "the erratum: Method 3 has no step 13"
    entries = (
        hosts_of("--method", "4", "--hosts", "cm07-dp01")["cm07-dp01"].stage("Method 4").entries
    )

    def covered(own: int) -> list[int]:
        out: list[int] = []
        for e in entries:
            if e.own_range(4) == (own, own):
                inc = e.included_range()
                assert inc is not None and inc[0] == 3, e.citation
                out += range(inc[1], inc[2] + 1)
        return out

    assert covered(1) == [1, 2, 3, 4, 5, 6]
    assert covered(12) == [7, 8, 9, 10, 11, 12]
    step12 = [e for e in entries if e.own_range(4) == (12, 12)]
    for e in step12:
        assert "steps 7 to step 13" in e.text and "this runs steps 7-12" in e.text, e.text


def pxe_skips(method: KbMethod) -> set[int]:
    """KB steps a non-PXE server skips, from the article's 'go to step N of this method'."""
    skipped: set[int] = set()
    for number, text in method.steps.items():
        m = re.search(r"not a PXE Service Point, go to step (\d+)", text)
        if m:
            skipped |= set(range(number, int(m.group(1))))
    return skipped


def test_pxe_steps_are_shown_skipped_for_a_dp_without_pxe() -> None:
    """cm07-dp02 is no PXE service point: Method 4 steps 2-4 and 8-11 show as skipped."""
    skips = pxe_skips(kb_methods()[4])
    assert skips == {2, 3, 4, 8, 9, 10, 11}
    hosts = hosts_of("--method", "4")
    assert "PXE service point" in hosts["cm07-dp01"].header
    assert "PXE service point" not in hosts["cm07-dp02"].header
    with_pxe = hosts["cm07-dp01"].stage("Method 4").entries
    without = hosts["cm07-dp02"].stage("Method 4").entries
    assert [e.citation for e in with_pxe] == [e.citation for e in without], (
        "skipped steps are listed"
    )
    for e in without:
        first, last = e.own_range(4)
        kb_steps = set(range(first, last + 1))
        if kb_steps <= skips:
            assert e.skipped, f"{e.citation} {e.title} should be skipped on cm07-dp02"
            assert "target.pxe" in e.text and "cm07-dp02" in e.text
        else:
            assert not kb_steps & skips, f"{e.citation} mixes PXE and non-PXE KB steps"
            assert not e.skipped, f"{e.citation} {e.title} must run on cm07-dp02"
    assert not [e for e in with_pxe if e.skipped]


def test_a_skipped_step_does_not_claim_to_run() -> None:
    """A skipped step says why and where it would have run, never 'runs on'; the others say
    where they would run."""
    for host, section in hosts_of("--method", "4").items():
        for e in section.entries:
            first = e.details[0].strip()
            if e.skipped:
                assert first.startswith("skipped:"), (host, e.details)
                assert re.search(r"\((script|manual|wait_log|reboot) on \S+", first), e.details
            else:
                assert first.startswith("would run on "), (host, e.details)
            assert not [d for d in e.details if d.strip().startswith("runs on")], e.details


def test_auto_verifies_before_and_after_each_method_in_order() -> None:
    """`--method auto`: verification first, then methods 1, 2, 3, 4 each followed by one."""
    result = dry_run("--method", "auto")
    assert "auto: verification runs first and after each method" in result.stdout
    expected = ["Pre-checks", "Is it still broken?"]
    for n in (1, 2, 3, 4):
        expected += [f"Method {n}", f"Verify after Method {n}"]
    for name, host in parse_dry_run(result.stdout).items():
        assert [s.title for s in host.stages] == expected, name
        for stage in host.stages:
            if stage.title.startswith(("Verify", "Is it")):
                assert [e.title for e in stage.entries] == [
                    "Verify multicast on the DP (WDS running, multicast key present)"
                ]
            if stage.title.startswith("Method "):
                method = int(stage.title.split()[1])
                assert kb_sequence(stage.entries, method) == sorted(kb_methods()[method].steps)


def planned(method: str, host: str) -> list[object]:
    loaded = CATALOG.load("multicast")
    plan = Planner(CATALOG, loaded, load_inventory(EXAMPLE_INVENTORY)).plan(
        method=method, hosts=host
    )
    return plan.hosts[0].all_steps()  # type: ignore[return-value]


@pytest.mark.parametrize("host", ["cm07-dp01", "cm07-dp02"])
def test_destructive_steps_are_marked(host: str) -> None:
    """Exactly the steps the runbook calls destructive say DESTRUCTIVE on their line."""
    entries = hosts_of("--method", "auto")[host].entries
    steps = planned("auto", host)
    assert [e.title for e in entries] == [ps.step.title for ps in steps]  # type: ignore[attr-defined]
    marked = [e.title for e in entries if "DESTRUCTIVE" in e.details[0]]
    expected = [ps.step.title for ps in steps if ps.step.destructive]  # type: ignore[attr-defined]
    assert marked == expected
    assert len(expected) >= 6, "removing multicast, PXE and WDS are destructive"


@pytest.mark.parametrize("host", ["cm07-dp01", "cm07-dp02"])
def test_log_monitors_are_armed_before_their_trigger(host: str) -> None:
    """Each log wait is armed on the step that makes the log write, which comes before it."""
    entries = hosts_of("--method", "auto")[host].entries
    steps = planned("auto", host)
    waits = 0
    for i, ps in enumerate(steps):
        if not ps.step.wait:  # type: ignore[attr-defined]
            continue
        waits += 1
        stage = ps.key.split("/")[0]  # type: ignore[attr-defined]
        trigger = f"{stage}/{ps.step.wait.armed_before}"  # type: ignore[attr-defined]
        where = [j for j, s in enumerate(steps) if s.key == trigger]  # type: ignore[attr-defined]
        assert len(where) == 1 and where[0] < i, f"{trigger} must come before {ps.key}"  # type: ignore[attr-defined]
        arm_line = f"arms log monitor of {ps.key} before this step"  # type: ignore[attr-defined]
        assert arm_line in entries[where[0]].text, entries[where[0]].text
        assert "waits for" in entries[i].text
        armed_elsewhere = [e.number for e in entries if arm_line in e.text]
        assert armed_elsewhere == [entries[where[0]].number]
    assert waits == 6, "MCS remove/install in Methods 3 and 4, PXE remove/install in Method 4"


# ---------------------------------------------------------------------------------------------
# (b) No network


SITECUSTOMIZE = textwrap.dedent(
    """
    # Installed by the dry-run test: records and refuses every outgoing connection.
    import os
    import socket

    _LOG = os.environ["NETGUARD_LOG"]
    with open(os.environ["NETGUARD_LOADED"], "a", encoding="utf-8") as _f:
        _f.write(str(os.getpid()) + "\\n")


    def _refuse(what, *args):
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(what + " " + repr(args) + "\\n")
        raise OSError("network access refused by the dry-run test: " + what)


    def _connect(self, address):
        _refuse("socket.connect", address)


    def _connect_ex(self, address):
        _refuse("socket.connect_ex", address)


    def _create_connection(address, *args, **kwargs):
        _refuse("socket.create_connection", address)


    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.create_connection = _create_connection
    """
)


@pytest.fixture
def netguard(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """Environment that loads the guard in every Python started with it; its two log files."""
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log, loaded = tmp_path / "connections.log", tmp_path / "loaded.log"
    import os

    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "NETGUARD_LOG": str(log), "NETGUARD_LOADED": str(loaded)}
    return env, log, loaded


def test_guard_catches_a_connection(netguard: tuple[dict[str, str], Path, Path]) -> None:
    """Positive control: under the guard, a script that connects is recorded and refused."""
    env, log, loaded = netguard
    import os

    code = (
        "import socket\n"
        "for go in (lambda: socket.create_connection(('127.0.0.1', 9), timeout=1),\n"
        "           lambda: socket.socket().connect(('127.0.0.1', 9)),\n"
        "           lambda: socket.socket().connect_ex(('127.0.0.1', 9))):\n"
        "    try:\n"
        "        go()\n"
        "    except OSError as exc:\n"
        "        assert 'refused by the dry-run test' in str(exc), exc\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert loaded.read_text("utf-8").strip(), "sitecustomize was not loaded"
    recorded = log.read_text("utf-8").splitlines()
    assert [r.split()[0] for r in recorded] == [
        "socket.create_connection",
        "socket.connect",
        "socket.connect_ex",
    ]


def test_dry_run_opens_no_connection(
    netguard: tuple[dict[str, str], Path, Path], tmp_path: Path
) -> None:
    """A full dry run (auto, every script, files written) never connects anywhere."""
    env, log, loaded = netguard
    result = run_cli(
        "remediate",
        "multicast",
        "--method",
        "auto",
        "--dry-run",
        "--show-scripts",
        "--out",
        str(tmp_path / "out"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing will be changed and no host will be contacted" in result.stdout
    assert loaded.read_text("utf-8").strip(), "the guard was not active in the CLI process"
    assert not log.exists() or log.read_text("utf-8") == "", log.read_text("utf-8")


# ---------------------------------------------------------------------------------------------
# (c) Scripts


@pytest.fixture(scope="module")
def scripts_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("out")
    result = run_cli(
        "remediate", "multicast", "--method", "4", "--dry-run", "--show-scripts", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, out


def printed_scripts(stdout: str) -> list[str]:
    """The PowerShell blocks `--show-scripts` prints, without their '       | ' margin."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.strip() == "---- PowerShell ----":
            current = []
            blocks.append("")
            continue
        if current is not None and line.startswith("       |"):
            current.append(line[len("       | ") :])
            blocks[-1] = "\n".join(current) + "\n"
            continue
        current = None
    return blocks


def test_show_scripts_prints_powershell(scripts_run: tuple[str, Path]) -> None:
    """Every printed block is a whole script: header, prelude, result line; and it parses."""
    stdout, _ = scripts_run
    blocks = printed_scripts(stdout)
    assert len(blocks) >= 20
    for block in blocks:
        assert block.startswith("# cmrunbook multicast | ")
        assert "Set-StrictMode -Version 2.0" in block
        assert "$ErrorActionPreference = 'Stop'" in block
        assert "CMRB-RESULT " in block
        assert syntax_problems(block) == [], block.splitlines()[0]


def test_out_writes_one_file_per_host_and_step(scripts_run: tuple[str, Path]) -> None:
    """--out: a folder per target host, one .ps1 per probe and per script step it runs."""
    stdout, out = scripts_run
    files = sorted(out.rglob("*.ps1"))
    assert f"Wrote {len(files)} script(s) under {out}" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["cm07-dp01", "cm07-dp02"]
    for host in ("cm07-dp01", "cm07-dp02"):
        steps = planned("4", host)
        numbered = [
            f"{n:02d}-{ps.key}"  # type: ignore[attr-defined]
            for n, ps in enumerate(steps, 1)
            if ps.step.template and not ps.skip_reason  # type: ignore[attr-defined]
        ]
        expected = {safe_name(name) + ".ps1" for name in numbered}
        expected |= {
            f"probe-{p}.ps1"
            for p in ("multicast-images", "large-multicast-image", "pxe-boot-images")
        }
        assert {p.name for p in (out / host).iterdir()} == expected, host
    # The printed scripts and the written files are the same texts.
    written = sorted(p.read_text("utf-8") for p in files)
    assert sorted(printed_scripts(stdout)) == written


def test_skipped_steps_write_no_script(scripts_run: tuple[str, Path]) -> None:
    """cm07-dp02 (no PXE) gets no PXE role or boot-image script; cm07-dp01 gets them."""
    _, out = scripts_run
    dp01 = " ".join(p.name for p in (out / "cm07-dp01").iterdir())
    dp02 = " ".join(p.name for p in (out / "cm07-dp02").iterdir())
    for step in ("m4.remove-pxe-boot-images", "m4.uninstall-pxe-role", "m4.install-pxe-role"):
        assert step in dp01 and step not in dp02


# ---------------------------------------------------------------------------------------------
# (d) Discoverability


def test_list_shows_the_tasks() -> None:
    result = run_cli("--list")
    assert result.returncode == 0, result.stderr
    names = re.findall(r"^\s{2}(\S+)", result.stdout, re.M)
    assert {"remediate", "validate", "schema"} <= set(names), result.stdout


HELP_OPTIONS = {
    "--method": "auto",
    "--dry-run": "touch nothing",
    "--show-scripts": "PowerShell",
    "--out": ".ps1",
    "--hosts": "group:NAME",
    "--set": "name=value",
    "--inventory": "Inventory",
}


def assert_explains_options(text: str) -> None:
    flat = " ".join(text.split())
    for option, words in HELP_OPTIONS.items():
        assert re.search(rf"{re.escape(option)}\b", flat), f"{option} is not in the help:\n{text}"
        near = rf"{re.escape(option)}\b.{{0,160}}?{re.escape(words)}"
        assert re.search(near, flat), f"{option}: its help should mention {words!r}:\n{text}"


def test_help_before_the_task_explains_the_options() -> None:
    """`invoke --help remediate` works today and explains each option."""
    result = run_cli("--help", "remediate")
    assert result.returncode == 0, result.stderr
    assert_explains_options(result.stdout)


def test_remediate_help_explains_the_options() -> None:
    """`invoke remediate --help`, as the README tells users to type it.

    invoke's parser hands `--help` to a pending positional argument (here the runbook), so this
    form needs the task's own care; it must not look for a runbook called '--help'.
    """
    result = run_cli("remediate", "--help")
    assert result.returncode == 0, result.stderr
    assert_explains_options(result.stdout)


def test_dry_run_marks_the_steps_that_change_site_wide_state() -> None:
    """Method 3 steps 1-4 and 9-12 change the OS images of the whole site, not the DP."""
    result = run_cli("remediate", "multicast", "--dry-run", "--method", "3", "--hosts", "cm07-dp02")
    assert result.returncode == 0, result.stderr
    marked = re.findall(
        r"\[(Method 3, steps [\d-]+)\].*\n.*SITE-WIDE (\w+) of image-multicast", result.stdout
    )
    assert marked == [("Method 3, steps 1-4", "change"), ("Method 3, steps 9-12", "restore")]
