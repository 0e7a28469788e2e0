"""Hostile inventory and parameter values stay one inert PowerShell literal.

An inventory is edited by many people and a parameter is typed on a command line; a host name
like `x'; Remove-Item C:\\ -Recurse; '` must reach the host as that text, never as a command.
Each check parses the rendered script, finds where the value landed, and requires that
PowerShell reads it as one single-quoted string whose value is the input exactly, and that the
script has the same structure as with a harmless value. Typographic quotes matter because
PowerShell ends a single-quoted string at ‘ ’ ‚ ‛ too (tree-sitter-pwsh does not, so the value
is re-read with PowerShell's own rule, `ps_verbatim_scan`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from helpers_engine import (
    EXAMPLE_INVENTORY,
    REPO,
    dump_yaml_file,
    load_yaml_file,
    parse_ps,
    ps_verbatim_scan,
    render_all,
    run_cli,
    shape,
    syntax_problems,
    verbatim_strings,
    walk,
)

from cmrunbook.docs.dryrun import print_dry_run
from cmrunbook.load.catalog import Loaded
from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import Project
from cmrunbook.plan.planner import Planner
from cmrunbook.render import pwsh
from cmrunbook.render.steps import render_step

CATALOG = Project(REPO)
MARK = "ZQX"  # every test value starts with it, so each place it lands can be found
BENIGN = MARK + "benign"

PAYLOADS = {
    "apostrophe": "O'Brien'; Remove-Item C:\\ -Recurse; '",
    "double-quote": 'say "$(Remove-Item C:\\ -Recurse)"',
    "subexpression": "$(Remove-Item C:\\ -Recurse)",
    "backtick": "a`'; Remove-Item C:\\ -Recurse`n`$env:PATH",
    "semicolon": "x; Remove-Item C:\\ -Recurse; y",
    "newline": "line1\n'; Remove-Item C:\\ -Recurse\n# '",
    "crlf": "line1\r\nRemove-Item C:\\ -Recurse\r\n",
    "left-single": "\u2018; Remove-Item C:\\ -Recurse; \u2018",
    "right-single": "x\u2019; Remove-Item C:\\ -Recurse; \u2019y",
    "low-and-reversed-single": "\u201a\u201b; Remove-Item C:\\ -Recurse; \u201b\u201a",
    "typographic-double": "\u201c$(Remove-Item C:\\ -Recurse)\u201d\u201e",
    "all-quotes": "'\u2018\u2019\u201a\u201b\"\u201c\u201d\u201e",
    "jinja": "{{ 7 * 7 }}{% raw %}",
}
HOSTILE = {name: MARK + value for name, value in PAYLOADS.items()}


# ---------------------------------------------------------------------------------------------
# The check


def inert_problems(
    script: str, benign: str | None, allowed: Sequence[str]
) -> tuple[list[str], int]:
    """Why `script` lets a marked value act as code; and how many verbatim strings hold one.

    Every occurrence of MARK must sit in a comment, or in a single-quoted string that PowerShell
    reads whole and whose value is one of `allowed`. With `benign` (the same script rendered with
    a harmless value), the two scripts must also have the same syntax tree shape.
    """
    problems = [f"does not parse: {p}" for p in syntax_problems(script)]
    tree = parse_ps(script)
    data = script.encode("utf-8")
    mark = MARK.encode("utf-8")
    start = data.find(mark)
    while start != -1:
        node = tree.root_node.descendant_for_byte_range(start, start + len(mark))
        assert node is not None
        if node.type == "verbatim_string_characters":
            text = node.text.decode("utf-8") if node.text else ""
            value, length = ps_verbatim_scan(text)
            if length != len(text):
                problems.append(f"PowerShell ends the string early: {text!r} at {text[:length]!r}")
            elif value not in allowed:
                problems.append(f"string value {value!r} is not the input")
        elif node.type != "comment":
            line = script[: len(data[:start].decode("utf-8"))].count("\n") + 1
            problems.append(f"value lands in a {node.type} node at line {line}")
        start = data.find(mark, start + 1)
    if benign is not None and shape(tree) != shape(parse_ps(benign)):
        problems.append("the value changed the structure of the script")
    landed = sum(1 for lit in verbatim_strings(tree) if lit.whole and lit.value in allowed)
    return problems, landed


def check_plans(
    inventory_file: Path,
    benign_file: Path,
    allowed: Sequence[str],
    *,
    runbook: str = "multicast",
    method: str | None = "auto",
    overrides: Sequence[str] = (),
    benign_overrides: Sequence[str] = (),
) -> int:
    """Render every script of a run with the hostile and the benign input and compare them."""
    loaded = load_runbook(runbook)
    hostile_inv = load_inventory(inventory_file)
    benign_inv = load_inventory(benign_file)
    hostile_plan = Planner(CATALOG, loaded, hostile_inv).plan(method=method, overrides=overrides)
    benign_plan = Planner(CATALOG, loaded, benign_inv).plan(
        method=method, overrides=benign_overrides
    )
    hostile = render_all(CATALOG, hostile_plan)
    benign = render_all(CATALOG, benign_plan)
    assert len(hostile) == len(benign), "the value changed which scripts are rendered"
    failures: list[str] = []
    landed = 0
    for (label, script), (_, harmless) in zip(hostile, benign, strict=True):
        if script == harmless:
            continue  # the value does not reach this script (its syntax is the matrix's test)
        problems, n = inert_problems(script, harmless, allowed)
        landed += n
        failures += [f"{label}: {p}" for p in problems]
    assert not failures, "\n".join(failures)
    return landed


@cache
def load_runbook(runbook_id: str) -> Loaded:
    return CATALOG.load(runbook_id)


def inventory_with(tmp_path: Path, name: str, edit: Any) -> Path:
    """The example inventory, changed by `edit(data)`, written to tmp_path/name."""
    data = copy.deepcopy(load_yaml_file(EXAMPLE_INVENTORY))
    edit(data)
    path = tmp_path / name
    dump_yaml_file(path, data)
    return path


# ---------------------------------------------------------------------------------------------
# The check can fail


def test_check_catches_an_unescaped_typographic_quote() -> None:
    """Negative control: doubling only ASCII quotes is caught on ’ (tree-sitter misses it)."""
    value = HOSTILE["right-single"]
    naive = "$a = '" + value.replace("'", "''") + "'\n"
    assert not parse_ps(naive).root_node.has_error, "tree-sitter alone sees nothing wrong"
    problems, _ = inert_problems(naive, "$a = 'x'\n", [value])
    assert any("ends the string early" in p for p in problems), problems


def test_check_catches_an_expandable_string() -> None:
    """Negative control: a value put in double quotes expands $(...) and is caught."""
    value = HOSTILE["subexpression"]
    problems, landed = inert_problems(f'$a = "{value}"\n', "$a = 'x'\n", [value])
    assert problems and landed == 0


def test_ps_verbatim_scan_reads_like_powershell() -> None:
    """Doubled quotes of any of the five kinds stand for the second one; a single one ends it."""
    assert ps_verbatim_scan("'a''b'") == ("a'b", 6)
    assert ps_verbatim_scan("'a\u2019\u2019b' + 1") == ("a\u2019b", 6)
    assert ps_verbatim_scan("'a'\u2018b'") == ("a\u2018b", 6)
    assert ps_verbatim_scan("'a\u201bb'") == ("a", 3)


# ---------------------------------------------------------------------------------------------
# Inventory values


@pytest.mark.parametrize("payload", sorted(HOSTILE))
def test_host_address_is_one_literal(payload: str, tmp_path: Path) -> None:
    """A DP's address goes into the site-control-file and WMI scripts as data only."""
    value = HOSTILE[payload]

    def setter(v: str) -> Any:
        return lambda d: d["hosts"]["cm07-dp01"].__setitem__("address", v)

    landed = check_plans(
        inventory_with(tmp_path, "h.yaml", setter(value)),
        inventory_with(tmp_path, "b.yaml", setter(BENIGN)),
        [value],
    )
    assert landed >= 3, "the address should reach the DP multicast, PXE role and PXE probe scripts"


@pytest.mark.parametrize("payload", sorted(HOSTILE))
def test_host_name_is_one_literal_and_a_comment(payload: str, tmp_path: Path) -> None:
    """A host name (also its address when none is given) stays in its comment and its literal."""
    value = HOSTILE[payload]

    def rename(new: str) -> Any:
        def edit(d: dict[str, Any]) -> None:
            spec = d["hosts"].pop("cm07-dp01")
            del spec["address"]
            d["hosts"][new] = spec

        return edit

    landed = check_plans(
        inventory_with(tmp_path, "h.yaml", rename(value)),
        inventory_with(tmp_path, "b.yaml", rename(BENIGN)),
        [value],
    )
    assert landed >= 3


@pytest.mark.parametrize("payload", sorted(HOSTILE))
def test_site_install_dir_is_one_literal(payload: str, tmp_path: Path) -> None:
    """The site's install folder reaches the site's hotfix file check as data only (the
    Smswdstp.dll check no longer reads it: that file is on the DP, fidelity F10)."""
    value = HOSTILE[payload]

    def setter(v: str) -> Any:
        return lambda d: d["sites"]["C07"].__setitem__("install_dir", v)

    landed = check_plans(
        inventory_with(tmp_path, "h.yaml", setter(value)),
        inventory_with(tmp_path, "b.yaml", setter(BENIGN)),
        [value],
        runbook="site-hotfix-check",
        method=None,
    )
    assert landed >= 1, "install_dir should reach the site's hotfix file check"


@pytest.mark.parametrize("level", ["inventory", "group", "host"])
@pytest.mark.parametrize("payload", ["apostrophe", "newline", "right-single", "all-quotes"])
def test_parameters_from_inventory_vars_are_literals(
    payload: str, level: str, tmp_path: Path
) -> None:
    """A string and a list parameter set in inventory, group or host vars stay data."""
    value = HOSTILE[payload]
    second = HOSTILE["subexpression"]

    def setter(text: str, items: list[str]) -> Any:
        def edit(d: dict[str, Any]) -> None:
            vars_ = {"backup_dir": text, "pxe_share": text, "smswdstp_paths": items}
            if level == "inventory":
                d["vars"] = vars_
            elif level == "group":
                d["groups"]["dps"] = {"hosts": ["cm07-dp01", "cm07-dp02"], "vars": vars_}
            else:
                for h in ("cm07-dp01", "cm07-dp02"):
                    d["hosts"][h]["vars"] = vars_

        return edit

    landed = check_plans(
        inventory_with(tmp_path, "h.yaml", setter(value, [value, second])),
        inventory_with(tmp_path, "b.yaml", setter(BENIGN, [BENIGN, BENIGN])),
        [value, second],
    )
    assert landed >= 6


@pytest.mark.parametrize("payload", sorted(HOSTILE))
def test_set_string_parameter_is_one_literal(payload: str) -> None:
    """`--set pxe_share=...` and `--set backup_dir=...` values stay data."""
    value = HOSTILE[payload]
    landed = check_plans(
        EXAMPLE_INVENTORY,
        EXAMPLE_INVENTORY,
        [value],
        overrides=[f"pxe_share={value}", f"backup_dir={value}"],
        benign_overrides=[f"pxe_share={BENIGN}", f"backup_dir={BENIGN}"],
    )
    assert landed >= 6


@pytest.mark.parametrize("payload", sorted(set(HOSTILE) - {"jinja"}))
def test_set_list_parameter_items_are_literals(payload: str) -> None:
    """`--set wds_features=A,B` gives a list of two literals, each the text between commas.

    Items are trimmed of surrounding blanks (as `A, B` is typed), so the input is compared trimmed.
    """
    value = HOSTILE[payload].strip()
    second = HOSTILE["apostrophe"]
    landed = check_plans(
        EXAMPLE_INVENTORY,
        EXAMPLE_INVENTORY,
        [value, second],
        overrides=[
            f"wds_features={value},{second}",
            f"wds_role={second}",
            f"mcs_keys={value},{second}",
        ],
        benign_overrides=[
            f"wds_features={BENIGN},{BENIGN}",
            f"wds_role={BENIGN}",
            f"mcs_keys={BENIGN},{BENIGN}",
        ],
    )
    assert landed >= 4


@pytest.mark.parametrize("runbook_id", CATALOG.ids())
def test_every_string_parameter_of_every_runbook_is_a_literal(runbook_id: str) -> None:
    """Each str/list/version parameter of each runbook, set hostile with --set, stays data."""
    rb = load_runbook(runbook_id).runbook
    names = [n for n, p in rb.parameters.items() if p.type in ("str", "list", "version")]
    if not names:
        pytest.skip(f"{runbook_id} has no string parameter")
    method = "auto" if rb.methods else None
    for payload in ("apostrophe", "newline", "right-single", "subexpression"):
        value = HOSTILE[payload]
        landed = check_plans(
            EXAMPLE_INVENTORY,
            EXAMPLE_INVENTORY,
            [value],
            runbook=runbook_id,
            method=method,
            overrides=[f"{n}={value}" for n in names],
            benign_overrides=[f"{n}={BENIGN}" for n in names],
        )
        # Each parameter reaches at least one script, so the values were checked, not skipped.
        assert landed >= len(names), (runbook_id, payload, landed, names)


@pytest.mark.parametrize("payload", sorted(HOSTILE))
def test_loop_item_from_a_probe_is_one_literal(payload: str) -> None:
    """An image's PackageID as a host reports it (an item of a loop) stays data."""
    value = HOSTILE[payload]
    loaded = CATALOG.load("multicast")
    inv = load_inventory(EXAMPLE_INVENTORY)
    plan = Planner(CATALOG, loaded, inv).plan(method="4", hosts="cm07-dp01")
    hp = plan.hosts[0]
    loops = [ps for ps in hp.all_steps() if ps.step.for_each and not ps.skip_reason]
    assert loops
    for ps in loops:
        item = {"PackageID": value, "Name": value, "SizeMB": 5000}
        script = render_step(CATALOG, plan, hp, ps, item)
        harmless = render_step(CATALOG, plan, hp, ps, {"PackageID": BENIGN, "Name": BENIGN})
        assert script is not None and harmless is not None
        problems, landed = inert_problems(script, harmless, [value])
        assert not problems, f"{ps.key}: {problems}"
        assert landed >= 1


# ---------------------------------------------------------------------------------------------
# End to end through the command line


@pytest.mark.parametrize("payload", ["newline", "right-single", "subexpression"])
def test_cli_set_value_lands_as_one_literal(payload: str, tmp_path: Path) -> None:
    """`invoke remediate ... --set pxe_share=<hostile> --out DIR`: the files hold it inert."""
    value = HOSTILE[payload]
    result = run_cli(
        "remediate",
        "multicast",
        "--method",
        "4",
        "--dry-run",
        "--hosts",
        "cm07-dp01",
        "--set",
        f"pxe_share={value}",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.rglob("*.ps1"))
    assert files
    landed = 0
    for path in files:
        problems, n = inert_problems(path.read_text("utf-8"), None, [value])
        assert not problems, f"{path.name}: {problems}"
        landed += n
    assert landed >= 3, "pxe_share should reach the PXE probe and both boot-image steps"


def test_out_files_stay_in_the_out_folder_whatever_the_host_name(tmp_path: Path) -> None:
    """`--out DIR` writes only under DIR, even for a host named with `..` and slashes."""

    def rename(d: dict[str, Any]) -> None:
        d["hosts"]["../../escaped"] = d["hosts"].pop("cm07-dp01")

    inv_path = inventory_with(tmp_path, "inv.yaml", rename)
    out_dir = tmp_path / "a" / "b" / "out"
    plan = Planner(CATALOG, CATALOG.load("multicast"), load_inventory(inv_path)).plan(method="4")
    with open(tmp_path / "dry-run.txt", "w", encoding="utf-8") as sink:
        written = print_dry_run(plan, CATALOG, sink, out_dir=out_dir)
    assert written > 0
    outside = [
        p for p in tmp_path.rglob("*.ps1") if not p.resolve().is_relative_to(out_dir.resolve())
    ]
    assert outside == [], f"written outside {out_dir}: {outside}"


# ---------------------------------------------------------------------------------------------
# pwsh.literal and the header comment


def parsed_value(literal: str) -> Any:
    """The tree of `$v = <literal>`, which must parse."""
    script = f"$v = {literal}\n"
    assert syntax_problems(script) == [], (literal, syntax_problems(script))
    return parse_ps(script)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (42, "42"),
        (-7, "-7"),
        (134217728, "134217728"),
        (1.5, "1.5"),
        (True, "$true"),
        (False, "$false"),
        (None, "$null"),
        ("", "''"),
        ("C:\\Program Files", "'C:\\Program Files'"),
        ("it's", "'it''s'"),
        ("\u2018x\u2019", "'\u2018\u2018x\u2019\u2019'"),
        ('"$x"', "'\"$x\"'"),
        ([], "@()"),
        ([1, "a'b", True, None], "@(1, 'a''b', $true, $null)"),
        (("x",), "@('x')"),
        ([[1, 2], []], "@(@(1, 2), @())"),
    ],
)
def test_literal_values(value: Any, expected: str) -> None:
    """Each Python value has its PowerShell literal, and that literal parses."""
    assert pwsh.literal(value) == expected
    parsed_value(expected)


def test_bool_is_not_taken_for_an_int() -> None:
    """bool is a subclass of int in Python; $true and 1 mean different things to a cmdlet."""
    assert pwsh.literal(True) != "1" and pwsh.literal(False) != "0"


def test_dict_literal_is_a_hashtable_of_literals() -> None:
    """Keys and values of a mapping are literals too; the result is one hash literal."""
    value = {"path": "C:\\SMS\\Logs\\x'.log", "offset": 10, "it's": [True]}
    text = pwsh.literal(value)
    tree = parsed_value(text)
    kinds = {n.type for n in walk(tree.root_node)}
    assert "hash_literal_expression" in kinds
    strings = {lit.value for lit in verbatim_strings(tree)}
    assert strings == {"path", "C:\\SMS\\Logs\\x'.log", "offset", "it's"}
    assert pwsh.literal({}) == "@{}"


def test_dict_keys_that_differ_only_in_case_are_refused() -> None:
    """PowerShell hashtable keys are case-insensitive: a second 'A' would not even parse."""
    with pytest.raises(ValueError, match="same key"):
        pwsh.literal({"path": 1, "Path": 2})


def test_dict_literal_runs_on_powershell_2() -> None:
    """The log monitor sends {log: {path, offset}} to 2008 DPs: no PowerShell 3.0 syntax."""
    assert "[ordered]" not in pwsh.literal({"MCSSetup.log": {"path": "x", "offset": 0}})
    assert pwsh.literal({"a": {"b": 1}}) == "@{ 'a' = @{ 'b' = 1 } }"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("inf"), "[double]::PositiveInfinity"),
        (float("-inf"), "[double]::NegativeInfinity"),
        (float("nan"), "[double]::NaN"),
    ],
)
def test_non_finite_floats_are_values(value: float, expected: str) -> None:
    """A float with no digits becomes a [double] value expression, never a command."""
    text = pwsh.literal(value)
    assert text == expected
    script = f"$v = {text}\n"
    assert syntax_problems(script) == [], f"{text!r} does not parse"
    tree = parse_ps(script)
    assert not [n for n in walk(tree.root_node) if n.type in ("command", "command_name")], text
    assert text.startswith("[double]::"), text


@pytest.mark.parametrize("value", [1.5, -0.25, 1e100, 1e-7])
def test_finite_floats_are_real_literals(value: float) -> None:
    """Finite floats are number literals PowerShell reads back as the same value."""
    text = pwsh.literal(value)
    tree = parsed_value(text)
    kinds = {n.type for n in walk(tree.root_node)}
    assert "real_literal" in kinds or "integer_literal" in kinds, text
    assert float(text) == value


def test_raw_is_the_explicit_opt_out() -> None:
    """Raw text is placed as it is; everything else is quoted."""
    assert pwsh.literal(pwsh.Raw("$env:TEMP")) == "$env:TEMP"
    assert pwsh.literal("$env:TEMP") == "'$env:TEMP'"


def test_values_without_a_literal_are_refused() -> None:
    """An object with no PowerShell literal fails loudly rather than being str()-ed into code."""
    with pytest.raises(TypeError):
        pwsh.literal({1, 2})
    with pytest.raises(TypeError):
        pwsh.literal(object())


@pytest.mark.parametrize("breaker", ["\n", "\r\n", "\r", "\u2028", "\u0085", "\x0b", "\x0c"])
def test_header_comment_cannot_be_broken(breaker: str) -> None:
    """A line break in a header (a host name, a title) cannot end the comment and start code."""
    header = f"cmrunbook x | target a{breaker}Remove-Item C:\\ -Recurse{breaker}#"
    script = CATALOG.renderer.script("multicast/verify_dp.ps1.j2", _verify_context(), header)
    first = script.split("\n", 1)[0]
    assert first.startswith("# cmrunbook x | target a")
    assert "Remove-Item" in first, "the whole header stays on the comment line"
    tree = parse_ps(script)
    commands = [
        n.text.decode("utf-8")
        for n in walk(tree.root_node)
        if n.type == "command_name" and n.text is not None
    ]
    assert "Remove-Item" not in commands
    assert syntax_problems(script) == []
    assert pwsh.comment_safe(f"a{breaker}b") == "a b"


def _verify_context() -> dict[str, Any]:
    loaded = CATALOG.load("multicast")
    inv = load_inventory(EXAMPLE_INVENTORY)
    plan = Planner(CATALOG, loaded, inv).plan(method="1", hosts="cm07-dp01")
    hp = plan.hosts[0]
    ps = next(s for s in hp.all_steps() if s.step.template == "multicast/verify_dp.ps1.j2")
    from cmrunbook.render.steps import step_context

    return step_context(plan, hp, ps)
