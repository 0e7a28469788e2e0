"""The input attacks of the attack report (§1b, §1c, §1d, §2c, §3, §4i), replayed with the real CLI.

Each test is named after the report's entry and feeds the attacker's own input to `invoke`: the
tool must refuse it with a one-line `error:` naming the file and line (exit 2), or, for a failure
of the jump host itself (a full disk), with the documented environment exit code 4, and never
with a traceback, a silently changed value, or code run from a runbook.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers_engine import edit_line, line_of, make_root, run_cli

from cmrunbook.render import Conditions

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
