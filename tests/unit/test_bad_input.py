"""Bad runbooks, inventories and options: a located error, exit code 2, and no plan printed.

An operator fixing a runbook at 2 a.m. needs the file, line and column and what was expected, not
a traceback; and nothing that looks like a plan may be printed, since a half-plan could be taken
for a real one. Each test copies the project into a temp root (CMRUNBOOK_ROOT), edits one line,
runs the real CLI, and checks that the reported line is the edited one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers_engine import (
    delete_line,
    edit_line,
    insert_line,
    line_of,
    make_root,
    run_cli,
    run_program,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the project per module; each test copies it again before editing."""
    return make_root(tmp_path_factory.mktemp("pristine") / "root")


@dataclass
class Root:
    """An editable project copy and its runbook and inventory files."""

    path: Path

    @property
    def runbook(self) -> Path:
        return self.path / "runbooks" / "multicast.yaml"

    @property
    def inventory(self) -> Path:
        return self.path / "inventory" / "example.yaml"

    def template(self, name: str) -> Path:
        return self.path / "templates" / name

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """In-process: the error cases are many; the end-to-end ones below use a subprocess."""
        return run_program(*args, root=self.path)

    def dry_run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("remediate", "multicast", "--method", "4", "--dry-run", *extra)


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Root:
    dest = tmp_path / "root"
    shutil.copytree(pristine, dest)
    return Root(dest)


def col(path: Path, line: int, text: str) -> int:
    """1-based column where `text` starts in line `line` of `path`."""
    found = path.read_text("utf-8").splitlines()[line - 1].find(text)
    assert found >= 0, f"{text!r} not in {path}:{line}"
    return found + 1


def assert_located(
    result: subprocess.CompletedProcess[str],
    path: Path,
    line: int,
    column: int | None,
    *fragments: str,
) -> str:
    """Exit 2, no plan, and an `error: FILE:LINE:COL: ...` line that says what was expected."""
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr)
    assert "DRY RUN" not in result.stdout and "== " not in result.stdout, result.stdout[:500]
    assert "Traceback" not in result.stderr, result.stderr
    where = f"{path}:{line}:{column if column is not None else 'COL'}:"
    column_re = str(column) if column is not None else r"\d+"
    pattern = re.compile(rf"^error: {re.escape(f'{path}:{line}:')}{column_re}: (.*)$", re.M)
    matches = pattern.findall(result.stderr)
    assert matches, f"no error at {where} in:\n{result.stderr}"
    message = next((m for m in matches if all(f in m for f in fragments)), None)
    assert message is not None, f"error at {where} lacks {fragments}:\n{result.stderr}"
    return message


def assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2 with a one-line reason and no plan."""
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr)
    assert result.stdout.strip() == "", result.stdout[:500]
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def step_line(root: Root, step_id: str, needle: str) -> int:
    """The line of `needle` inside the step `step_id` of the runbook."""
    return line_of(root.runbook, needle, after=line_of(root.runbook, f"id: {step_id}"))


def test_pristine_copy_plans(pristine: Path) -> None:
    """Positive control: the unedited copy dry-runs, so every failure below is the edit's."""
    result = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=pristine)
    assert result.returncode == 0, result.stderr
    assert "DRY RUN" in result.stdout


# ---------------------------------------------------------------------------------------------
# Runbooks


def test_unknown_top_level_key_suggests_the_right_one(root: Root) -> None:
    n = line_of(root.runbook, "summary:")
    edit_line(root.runbook, n, "summary:", "sumary:")
    message = assert_located(
        root.dry_run(), root.runbook, n, 1, "unknown key 'sumary'", "did you mean 'summary'?"
    )
    assert "expected one of:" in message and "methods" in message


def test_unknown_key_in_a_step_suggests_the_right_one(root: Root) -> None:
    n = step_line(root, "m3.enable-dp-multicast", "click_path:")
    edit_line(root.runbook, n, "click_path:", "clik_path:")
    message = assert_located(
        root.dry_run(),
        root.runbook,
        n,
        col(root.runbook, n, "clik_path"),
        "unknown key 'clik_path'",
        "did you mean 'click_path'?",
    )
    assert "expected one of:" in message


@pytest.mark.parametrize(
    ("step_id", "needle", "old", "new", "expected"),
    [
        ("m3.wait-mcs-install", "timeout:", "1800", "soon", "integer"),
        ("m3.disable-dp-multicast", "destructive:", "true", "maybe", "boolean"),
        ("m3.disable-dp-multicast", "on:", "site_server", "dp", "'target' or 'site_server'"),
    ],
)
def test_wrong_type(
    root: Root, step_id: str, needle: str, old: str, new: str, expected: str
) -> None:
    n = step_line(root, step_id, needle)
    edit_line(root.runbook, n, old, new)
    assert_located(root.dry_run(), root.runbook, n, col(root.runbook, n, new), expected)


def test_missing_required_key(root: Root) -> None:
    """A step without a title: the error points at the step, naming the key."""
    start = line_of(root.runbook, "id: m3.enable-dp-multicast")
    delete_line(root.runbook, step_line(root, "m3.enable-dp-multicast", "title:"))
    assert_located(
        root.dry_run(),
        root.runbook,
        start,
        col(root.runbook, start, "id:"),
        "missing required key 'title'",
    )


def test_duplicate_step_id(root: Root) -> None:
    first = line_of(root.runbook, "id: m3.disable-dp-multicast")
    n = line_of(root.runbook, "id: m3.enable-dp-multicast")
    edit_line(root.runbook, n, "m3.enable-dp-multicast", "m3.disable-dp-multicast")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        col(root.runbook, n, "m3.disable"),
        "duplicate step id 'm3.disable-dp-multicast'",
        f"(first at line {first})",
    )


def test_duplicate_yaml_key(root: Root) -> None:
    """PyYAML would keep the second `kb:` silently; the loader reports it."""
    after = step_line(root, "m4.uninstall-wds", "kb:")
    n = insert_line(root.runbook, after, "        kb: Method 4, step 5 again")
    assert_located(root.dry_run(), root.runbook, n, 9, "duplicate key 'kb'")


def test_include_of_steps_that_do_not_exist(root: Root) -> None:
    """Method 3 has 12 steps: an include of 7-13 (the article's erratum, taken literally) fails."""
    n = line_of(root.runbook, "steps: 7-12")
    edit_line(root.runbook, n, "7-12", "7-13")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        col(root.runbook, n, "7-13"),
        "7-13",
        "that method has steps 1-12",
    )


def test_site_state_restored_by_a_step_that_does_not_restore(root: Root) -> None:
    """A site state whose restore step clears instead would "set back" by clearing again."""
    n = line_of(root.runbook, "restore: m3.set-image-multicast")
    edit_line(root.runbook, n, "m3.set-image-multicast", "m3.clear-image-multicast")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        col(root.runbook, n, "m3.clear"),
        "'m3.clear-image-multicast' is not a step with site_state",
        "effect: restore",
    )


def test_site_state_change_on_a_step_that_does_not_loop_over_its_items(root: Root) -> None:
    n = step_line(root, "m3.clear-image-multicast", "for_each:")
    edit_line(root.runbook, n, "multicast-images", "pxe-boot-images")
    m = step_line(root, "m3.clear-image-multicast", "site_state:")
    assert_located(
        root.dry_run(),
        root.runbook,
        m,
        None,
        "loops over its items (for_each: multicast-images)",
    )


def test_template_that_does_not_exist(root: Root) -> None:
    n = step_line(root, "verify.multicast", "template:")
    edit_line(root.runbook, n, "verify_dp.ps1.j2", "verify_dq.ps1.j2")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        col(root.runbook, n, "multicast/"),
        "template 'multicast/verify_dq.ps1.j2' not found",
    )


def test_template_variable_that_is_not_defined(root: Root) -> None:
    """`{{ nosuchvar }}` in a template: reported at the step that uses it, naming the template."""
    path = root.template("multicast/verify_dp.ps1.j2")
    path.write_text(path.read_text("utf-8") + "$x = {{ nosuchvar }}\n", encoding="utf-8")
    n = step_line(root, "verify.multicast", "template:")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        None,
        "multicast/verify_dp.ps1.j2",
        "'nosuchvar'",
        "not defined",
    )


def test_template_parameter_that_is_not_defined(root: Root) -> None:
    """`params.nosuch` in a template: the step's line, and the template's own line."""
    path = root.template("multicast/verify_dp.ps1.j2")
    text = path.read_text("utf-8")
    path.write_text(text + "$x = {{ params.nosuch }}\n", encoding="utf-8")
    template_line = len(text.splitlines()) + 1
    n = step_line(root, "verify.multicast", "template:")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        None,
        f"multicast/verify_dp.ps1.j2:{template_line}",
        "params.nosuch",
        "not a parameter",
    )


def test_template_host_attribute_that_is_not_defined(root: Root) -> None:
    """`target.nosuch` in a template is found before any host, like `params.nosuch`."""
    path = root.template("multicast/verify_dp.ps1.j2")
    path.write_text(path.read_text("utf-8") + "$x = {{ target.nosuch }}\n", encoding="utf-8")
    n = step_line(root, "verify.multicast", "template:")
    assert_located(root.dry_run(), root.runbook, n, None, "target.nosuch")


def test_item_in_a_step_without_for_each(root: Root) -> None:
    """The image loop template reads item.PackageID; without for_each that is an error."""
    delete_line(root.runbook, step_line(root, "m3.clear-image-multicast", "for_each:"))
    n = step_line(root, "m3.clear-image-multicast", "template:")
    assert_located(
        root.dry_run(), root.runbook, n, None, "item.PackageID", "the step has no for_each"
    )


def test_when_with_an_unknown_name(root: Root) -> None:
    n = step_line(root, "m4.remove-pxe-boot-images", "when:")
    edit_line(root.runbook, n, "target.pxe", "tagret.pxe")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        col(root.runbook, n, "tagret"),
        "unknown name(s) ['tagret']",
        "expected",
    )


def test_when_with_an_unknown_attribute(root: Root) -> None:
    """A typo in a condition's attribute must not silently skip a destructive step everywhere."""
    n = step_line(root, "m4.uninstall-pxe-role", "when:")
    edit_line(root.runbook, n, "target.pxe", "target.pxee")
    assert_located(root.dry_run(), root.runbook, n, None, "pxee")


def test_bad_regex_in_symptoms(root: Root) -> None:
    n = line_of(root.runbook, "- '(?i)performed multicast download from mcs://'")
    edit_line(root.runbook, n, "mcs://'", "mcs://('")
    assert_located(
        root.dry_run(), root.runbook, n, col(root.runbook, n, "'"), "bad regular expression"
    )


def test_invalid_yaml(root: Root) -> None:
    n = line_of(root.runbook, "    kb: Method 1")
    edit_line(root.runbook, n, "kb: Method 1", "kb: Method 1: first")
    assert_located(
        root.dry_run(),
        root.runbook,
        n,
        col(root.runbook, n, ": first"),
        "not valid YAML",
        "mapping values are not allowed",
    )


def test_end_to_end_located_error(root: Root) -> None:
    """The real `invoke` process: exit 2, the line on stderr, nothing on stdout."""
    n = line_of(root.runbook, "steps: 7-12")
    edit_line(root.runbook, n, "7-12", "7-13")
    result = run_cli("remediate", "multicast", "--method", "4", "--dry-run", root=root.path)
    assert_located(
        result, root.runbook, n, col(root.runbook, n, "7-13"), "that method has steps 1-12"
    )


def test_validate_reports_the_same_located_error(root: Root) -> None:
    """`invoke validate` (the editor's and CI's check) also exits 2 and names the line."""
    n = line_of(root.runbook, "steps: 7-12")
    edit_line(root.runbook, n, "7-12", "7-13")
    result = run_cli("validate", root=root.path)
    assert result.returncode == 2
    assert f"error: {root.runbook}:{n}:" in result.stderr
    assert "ok  multicast" not in result.stdout


# ---------------------------------------------------------------------------------------------
# Inventories


def inventory_case(root: Root, host: str, needle: str) -> int:
    return line_of(root.inventory, needle, after=line_of(root.inventory, f"  {host}:"))


def test_inventory_anchors_and_aliases(root: Root) -> None:
    """An alias plans as the value it names; a bad value is reported where it is used."""
    before = root.dry_run()
    first = inventory_case(root, "cm07-site01", "os: {version: 2008r2")
    edit_line(root.inventory, first, "os: {", "os: &w2008 {")
    used = inventory_case(root, "cm07-dp01", "os: {version: 2008r2")
    edit_line(root.inventory, used, "{version: 2008r2, arch: x64}", "*w2008")
    after = root.dry_run()
    assert (after.returncode, after.stdout) == (0, before.stdout), after.stderr
    edit_line(root.inventory, first, "x64", "x65")
    assert_located(root.dry_run(), root.inventory, used, col(root.inventory, used, "*w2008"))
    edit_line(root.inventory, used, "*w2008", "*w2012")
    assert_located(
        root.dry_run(),
        root.inventory,
        used,
        col(root.inventory, used, "*w2012"),
        "not valid YAML",
        "undefined alias",
    )


def test_host_with_unknown_site(root: Root) -> None:
    n = inventory_case(root, "cm07-dp02", "site: C07")
    edit_line(root.inventory, n, "C07", "C99")
    assert_located(
        root.dry_run(),
        root.inventory,
        n,
        col(root.inventory, n, "C99"),
        "unknown site 'C99'",
        "known: C07, P12",
    )


def test_host_with_unknown_group(root: Root) -> None:
    after = inventory_case(root, "cm07-dp02", "site: C07")
    n = insert_line(root.inventory, after, "    groups: [dp-fleet]")
    assert_located(
        root.dry_run(), root.inventory, n, col(root.inventory, n, "["), "unknown group 'dp-fleet'"
    )


def test_group_naming_an_unknown_host(root: Root) -> None:
    n = line_of(root.inventory, "hosts: [w7-wks101, w7-wks102]")
    edit_line(root.inventory, n, "w7-wks102", "w7-wks103")
    assert_located(
        root.dry_run(),
        root.inventory,
        n,
        col(root.inventory, n, "w7-wks103"),
        "unknown host 'w7-wks103'",
    )


def test_provider_that_is_not_a_site_server(root: Root) -> None:
    n = line_of(root.inventory, "provider: cm07-site01")
    edit_line(root.inventory, n, "cm07-site01", "cm07-dp01")
    assert_located(
        root.dry_run(),
        root.inventory,
        n,
        col(root.inventory, n, "cm07-dp01"),
        "provider 'cm07-dp01' must have the role site_server",
    )


def test_inventory_unknown_key_suggests_the_right_one(root: Root) -> None:
    n = inventory_case(root, "cm07-dp02", "roles:")
    edit_line(root.inventory, n, "roles:", "role:")
    assert_located(
        root.dry_run(),
        root.inventory,
        n,
        col(root.inventory, n, "role:"),
        "unknown key 'role'",
        "did you mean 'roles'?",
    )


def test_inventory_var_of_the_wrong_type_is_located(root: Root) -> None:
    after = inventory_case(root, "cm07-dp02", "site: C07")
    n = insert_line(root.inventory, after, "    vars: {multicast_flag: abc}")
    assert_located(root.dry_run(), root.inventory, n, None, "multicast_flag")


def test_inventory_var_infinite_int_is_a_usage_error(root: Root) -> None:
    after = inventory_case(root, "cm07-dp02", "site: C07")
    insert_line(root.inventory, after, "    vars: {multicast_flag: .inf}")
    assert_usage_error(root.dry_run(), "multicast_flag")


# ---------------------------------------------------------------------------------------------
# Options


OPTION_CASES: dict[str, tuple[list[str], list[str]]] = {
    "set-unknown": (["--set", "nosuch=1"], ["--set nosuch", "no such parameter", "pxe_share"]),
    "set-no-equals": (["--set", "pxe_share"], ["--set expects name=value"]),
    "set-wrong-type": (["--set", "multicast_flag=big"], ["multicast_flag='big' is not a int"]),
    "method-7": (["--method", "7"], ["--method 7", "1, 2, 3, 4, auto"]),
    "hosts-nomatch": (["--hosts", "nomatch"], ["--hosts 'nomatch' matches no host"]),
    "hosts-no-target": (["--hosts", "cm07-site01"], ["no target", "not a distribution_point"]),
    "runbook-unknown": ([], ["no runbook 'multicastt'", "known: multicast"]),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_bad_option(case: str, pristine: Path) -> None:
    args, fragments = OPTION_CASES[case]
    runbook = "multicastt" if case == "runbook-unknown" else "multicast"
    result = run_program("remediate", runbook, "--dry-run", *args, root=pristine)
    assert_usage_error(result, *fragments)


def test_missing_inventory_file(pristine: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run_cli(
        "remediate", "multicast", "--dry-run", "--inventory", str(missing), root=pristine
    )
    assert_usage_error(result, str(missing), "does not exist")
