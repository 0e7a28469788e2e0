"""Shared helpers for the engine and catalog tests: the real CLI, temp project roots, PowerShell.

The PowerShell checks use two independent readers on purpose: tree-sitter-pwsh for the shape of
a whole script, and `ps_verbatim_scan`, a transcription of PowerShell's own tokenizer rule for
single-quoted strings. tree-sitter-pwsh does not know that PowerShell also ends a string at the
typographic quotes ‘ ’ ‚ ‛, so on its own it would call `'x’; Remove-Item C:\\'` one string.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import tree_sitter_pwsh
import yaml
from tree_sitter import Language, Node, Parser, Tree

from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Plan
from cmrunbook.render.steps import render_probe, render_step

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_INVENTORY = REPO / "inventory" / "example.yaml"
INVOKE = Path(sys.executable).with_name("invoke")

# PowerShell's tokenizer (CharTraits.IsSingleQuote / IsDoubleQuote) accepts these as quotes.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
PS_DOUBLE_QUOTES = '"\u201c\u201d\u201e'

# Nodes that execute or expand something: a value must never produce one.
CODE_NODE_TYPES = frozenset(
    {
        "command",
        "command_name",
        "command_invocation_operator",
        "sub_expression",
        "expandable_string_literal",
        "expandable_here_string_literal",
        "script_block",
        "script_block_expression",
        "invocation_expression",
        "variable",
        "braced_variable",
    }
)


def kb_dir() -> Path | None:
    """The folder of source KB articles (next to the repository, or CMRUNBOOK_KB_DIR)."""
    for candidate in (
        os.environ.get("CMRUNBOOK_KB_DIR"),
        REPO.parent / "shared" / "kb",
        REPO / "kb",
    ):
        if candidate and Path(candidate, "001_a8fbbab674d97a46.txt").is_file():
            return Path(candidate)
    return None


# ---------------------------------------------------------------------------------------------
# The command line


def run_cli(
    *args: str,
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS` from the repository root, as a user types it; `root` sets CMRUNBOOK_ROOT."""
    full_env = dict(os.environ)
    full_env.pop("CMRUNBOOK_ROOT", None)
    if root is not None:
        full_env["CMRUNBOOK_ROOT"] = str(root)
    full_env.update(env or {})
    return subprocess.run(
        [str(INVOKE), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def run_program(
    *args: str,
    root: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The same command through invoke's Program in this process (about 30 times faster).

    For the many error cases; end-to-end tests use `run_cli`. An exception that escapes the
    task is turned into exit code 1 and a traceback on stderr, as the real CLI would show it.
    """
    from invoke import Program

    from cmrunbook.cli.collection import ns

    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("CMRUNBOOK_ROOT")
    os.environ["CMRUNBOOK_ROOT"] = str(root or REPO)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                Program(namespace=ns, name="invoke", binary="invoke").run(["invoke", *args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:
                traceback.print_exc(file=err)
                code = 1
    finally:
        if saved is None:
            os.environ.pop("CMRUNBOOK_ROOT", None)
        else:
            os.environ["CMRUNBOOK_ROOT"] = saved
    return subprocess.CompletedProcess(["invoke", *args], code, out.getvalue(), err.getvalue())


def make_root(dest: Path, runbooks: Sequence[str] | None = ("multicast",)) -> Path:
    """A copy of the project's runbooks/, templates/, inventory/ and schema/ to edit safely.

    `runbooks` limits the copy to those runbook ids (plus the log catalog), so that a test of
    one runbook is not disturbed by another runbook someone is still writing; None copies all.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for folder in ("templates", "inventory", "schema"):
        shutil.copytree(REPO / folder, dest / folder)
    (dest / "runbooks").mkdir()
    for path in sorted((REPO / "runbooks").glob("*.yaml")):
        if runbooks is None or path.name.startswith("_") or path.stem in runbooks:
            shutil.copy2(path, dest / "runbooks" / path.name)
    return dest


def line_of(path: Path, needle: str, *, after: int = 0) -> int:
    """1-based number of the first line at or after `after` that contains `needle`."""
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if number >= after and needle in line:
            return number
    raise AssertionError(f"{needle!r} not found in {path} after line {after}")


def edit_line(path: Path, number: int, old: str, new: str) -> None:
    """Replace `old` by `new` in line `number` (1-based); the line must contain `old`."""
    lines = path.read_text("utf-8").splitlines(keepends=True)
    assert old in lines[number - 1], f"{path}:{number} does not contain {old!r}"
    lines[number - 1] = lines[number - 1].replace(old, new, 1)
    path.write_text("".join(lines), encoding="utf-8")


def insert_line(path: Path, after: int, text: str) -> int:
    """Insert `text` as a new line after line `after`; returns the new line's number."""
    lines = path.read_text("utf-8").splitlines(keepends=True)
    lines.insert(after, text.rstrip("\n") + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return after + 1


def delete_line(path: Path, number: int) -> str:
    lines = path.read_text("utf-8").splitlines(keepends=True)
    removed = lines.pop(number - 1)
    path.write_text("".join(lines), encoding="utf-8")
    return removed


def load_yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def dump_yaml_file(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# PowerShell


@cache
def pwsh_parser() -> Parser:
    return Parser(Language(tree_sitter_pwsh.language()))


@lru_cache(maxsize=512)
def parse_ps(script: str) -> Tree:
    """The tree-sitter-pwsh tree of a script (cached: many tests parse the same text)."""
    return pwsh_parser().parse(script.encode("utf-8"))


def walk(node: Node) -> Iterator[Node]:
    """Every node under `node` (itself included), depth first, in source order."""
    cursor = node.walk()
    while True:
        yield cursor.node  # type: ignore[misc]
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return


@lru_cache(maxsize=512)
def _syntax_problems(script: str) -> tuple[str, ...]:
    return tuple(_find_syntax_problems(script))


def syntax_problems(script: str) -> list[str]:
    """'line N: <source line>' for every ERROR or MISSING node; empty when the script parses."""
    return list(_syntax_problems(script))


def _find_syntax_problems(script: str) -> list[str]:
    """'line N: <source line>' for every ERROR or MISSING node; empty when the script parses."""
    tree = parse_ps(script)
    lines = script.splitlines()
    out: list[str] = []
    for node in walk(tree.root_node):
        if node.is_error or node.is_missing:
            row = node.start_point[0]
            text = lines[row] if row < len(lines) else ""
            kind = "MISSING " + node.type if node.is_missing else "ERROR"
            out.append(f"line {row + 1}: {kind}: {text.strip()}")
    if tree.root_node.has_error and not out:
        out.append("tree has_error but no ERROR/MISSING node was found")
    return out


def ps_verbatim_scan(text: str) -> tuple[str, int]:
    """PowerShell's reading of the single-quoted string that starts `text`: (value, length).

    Transcribes Tokenizer.ScanStringLiteral: any of ' ‘ ’ ‚ ‛ opens and closes the string, and
    two quote characters in a row stand for the second one. `length` is how many characters the
    string token takes; if it is shorter than the tree-sitter node, PowerShell ends the string
    early and reads the rest as code.
    """
    if not text or text[0] not in PS_SINGLE_QUOTES:
        raise ValueError(f"not a single-quoted string: {text[:20]!r}")
    value: list[str] = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch in PS_SINGLE_QUOTES:
            if i + 1 < len(text) and text[i + 1] in PS_SINGLE_QUOTES:
                value.append(text[i + 1])
                i += 2
                continue
            return "".join(value), i + 1
        value.append(ch)
        i += 1
    raise ValueError(f"unterminated single-quoted string: {text[:40]!r}")


@dataclass(frozen=True)
class Landing:
    """One single-quoted string node of a script, with PowerShell's value for it."""

    node: Node
    text: str
    value: str
    whole: bool  # PowerShell's string token spans the whole node (no early end)


def verbatim_strings(tree: Tree) -> list[Landing]:
    """Every verbatim (single-quoted) string literal in a parsed script."""
    out: list[Landing] = []
    for node in walk(tree.root_node):
        if node.type == "verbatim_string_characters":
            text = node.text.decode("utf-8") if node.text else ""
            value, length = ps_verbatim_scan(text)
            out.append(Landing(node, text, value, length == len(text)))
    return out


def enclosing(node: Node) -> Iterator[Node]:
    current: Node | None = node
    while current is not None:
        yield current
        current = current.parent


def code_nodes(tree: Tree) -> list[Node]:
    return [n for n in walk(tree.root_node) if n.type in CODE_NODE_TYPES]


def shape(tree: Tree) -> list[str]:
    """The node types of a parsed script in source order: its structure without its text."""
    return list(_shape(tree))


@lru_cache(maxsize=512)
def _shape(tree: Tree) -> tuple[str, ...]:
    return tuple(n.type for n in walk(tree.root_node))


# ---------------------------------------------------------------------------------------------
# Plans and their scripts


def render_all(catalog: Project, plan: Plan) -> list[tuple[str, str]]:
    """(label, script) for every probe and every step a run of `plan` would send.

    Steps the inventory skips are left out, as the dry run leaves them out; loop steps get the
    dry run's placeholder item.
    """
    scripts: list[tuple[str, str]] = []
    for hp in plan.hosts:
        steps = hp.all_steps()
        used = {s.step.for_each for s in steps} | {
            s.step.when_probe.probe for s in steps if s.step.when_probe
        }
        for probe in plan.runbook.probes:
            if probe.id in used:
                _, script = render_probe(catalog, plan, hp, probe)
                scripts.append((f"{hp.target.name}/probe-{probe.id} ({probe.template})", script))
        for ps in steps:
            if ps.skip_reason:
                continue
            script = render_step(catalog, plan, hp, ps)
            if script is not None:
                label = f"{hp.target.name}/{ps.key} on {ps.run_on} ({ps.step.template})"
                scripts.append((label, script))
    return scripts
