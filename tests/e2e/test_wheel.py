"""The built wheel is a tool: installed (not editable), `cmrunbook` works from an empty folder.

The wheel is built from a copy of the source tree (so the checkout's build/ is not reused), then
installed without dependencies into a fresh venv that borrows the test venv's installed
packages through a path line. A path line in a .pth does not run the .pth files of that folder,
so the checkout's editable install (src/ on the path) stays out and only the wheel's cmrunbook
is importable: exactly what an admin gets from `pipx install`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = ("src", "runbooks", "templates", "schema", "inventory")
SOURCE_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


def _run(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the installed `cmrunbook` script, the environment to run it in)."""
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "tree"
    for name in SOURCE:
        shutil.copytree(
            REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    for name in SOURCE_FILES:
        shutil.copy2(REPO / name, tree / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CMRUNBOOK_", "PYTHON"))}
    dist = base / "dist"
    pip = [sys.executable, "-m", "pip"]
    built = _run(
        *pip,
        "wheel",
        tree,
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        dist,
        cwd=base,
        env=env,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("cmrunbook-*.whl"))
    venv = base / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base, env=env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(
        _run(
            python,
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
            cwd=base,
            env=env,
        ).stdout.strip()
    )
    (site / "borrowed-deps.pth").write_text(sysconfig.get_path("purelib") + "\n", "utf-8")
    done = _run(
        *pip,
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        wheel,
        cwd=base,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    where = _run(python, "-c", "import cmrunbook; print(cmrunbook.__file__)", cwd=base, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    return venv / "bin" / "cmrunbook", env


def test_dry_run_and_checklist_from_an_empty_folder(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    script, env = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    dry = _run(script, "remediate", "multicast", "--method", "4", "--dry-run", cwd=empty, env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("DRY RUN: multicast (method 4)"), dry.stdout[:500]
    shipped = Path(script).parents[1]  # the venv: the wheel's own copy, not the checkout's
    inventory = next(ln for ln in dry.stdout.splitlines() if ln.startswith("Inventory: "))
    assert Path(inventory.removeprefix("Inventory: ")).is_relative_to(shipped), inventory
    assert inventory.endswith(str(Path("cmrunbook", "_shipped", "inventory", "example.yaml")))
    assert "== cm07-dp01 " in dry.stdout
    checklist = _run(
        script, "checklist", "multicast", "--method", "4", "--format", "md", cwd=empty, env=env
    )
    assert checklist.returncode == 0, checklist.stderr
    assert "## cm07-dp01" in checklist.stdout
    assert list(empty.iterdir()) == []  # a dry run and a checklist leave the folder as it was


def test_installed_tool_lists_shipped_runbooks_and_validates_them(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    script, env = installed
    known = _run(script, "check", "no-such-check", cwd=tmp_path, env=env)
    assert known.returncode == 2
    assert "client-hotfix-check" in known.stderr  # the shipped catalog, not an empty folder's
    valid = _run(script, "validate", cwd=tmp_path, env=env)
    assert valid.returncode == 0, valid.stderr
    assert "ok  multicast" in valid.stdout


def test_schedule_from_the_installed_tool_runs_the_cmrunbook_command(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A folder with no tasks.py: `invoke` would find no tasks at 02:30, `cmrunbook` does."""
    script, env = installed
    creds = tmp_path / "creds.env"
    creds.write_text("CMRUNBOOK_USER=x\n", "utf-8")
    creds.chmod(0o600)
    done = _run(
        script,
        "schedule",
        "client-hotfix-check",
        "--every",
        "daily@02:30",
        "--format",
        "systemd",
        "--env-file",
        creds,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    exec_start = next(ln for ln in done.stdout.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.split()[0] == f"ExecStart={script}"
    assert f"WorkingDirectory={tmp_path}" in done.stdout
    assert (tmp_path / "reports").is_dir()  # created for the job's reports
