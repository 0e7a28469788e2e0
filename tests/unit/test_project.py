"""Where a command finds runbooks, templates, schemas and the inventory (the Project).

Precedence, as README says: CMRUNBOOK_ROOT, else the nearest project folder from the working
folder upwards, else the shipped files; CMRUNBOOK_OVERLAY shadows a runbook by id and a template
by name on top of whichever base was found.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers_engine import make_root, run_program

from cmrunbook.errors import UsageError
from cmrunbook.load.project import OVERLAY_ENV, ROOT_ENV, Project, shipped_root

REPO = Path(__file__).resolve().parents[2]
TSCORE = "checks/client_tscore.ps1.j2"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.delenv(OVERLAY_ENV, raising=False)


def _retitle(path: Path, title: str) -> None:
    text = path.read_text("utf-8")
    first = text.splitlines()[1]
    assert first.startswith("title: "), first
    path.write_text(text.replace(first, f"title: {title}", 1), "utf-8")


def test_root_env_wins_over_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = make_root(tmp_path / "chosen")
    here = make_root(tmp_path / "here")
    monkeypatch.chdir(here)
    monkeypatch.setenv(ROOT_ENV, str(chosen))
    project = Project.find()
    assert project.root == chosen and project.work_dir == chosen
    assert project.inventory(None) == chosen / "inventory" / "example.yaml"


def test_root_env_without_runbooks_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    with pytest.raises(UsageError, match="has no runbooks/ folder"):
        Project.find()


def test_nearest_project_folder_upwards_wins_over_the_shipped_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_root(tmp_path / "copy")
    _retitle(root / "runbooks" / "multicast.yaml", "the admin's copy")
    deep = root / "inventory" / "sub"
    deep.mkdir()
    monkeypatch.chdir(deep)
    project = Project.find()
    assert project.root == root and project.work_dir == root
    assert project.load("multicast").runbook.title == "the admin's copy"
    assert project.ids() == ["multicast"]  # the copy's catalog, not the shipped one


def test_empty_folder_uses_the_shipped_files_and_runs_go_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = Project.find()
    assert project.root == shipped_root() == REPO  # an editable install reads the checkout
    assert project.work_dir == tmp_path.resolve()  # never runs/ inside the package
    assert "multicast" in project.ids()
    assert project.schema_dir == REPO / "schema"
    assert project.templates_dir("checklist") == REPO / "templates" / "checklist"


def test_overlay_shadows_a_runbook_by_id_and_adds_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlay = tmp_path / "mine"
    (overlay / "runbooks").mkdir(parents=True)
    shutil.copy2(REPO / "runbooks" / "multicast.yaml", overlay / "runbooks" / "multicast.yaml")
    _retitle(overlay / "runbooks" / "multicast.yaml", "multicast, as this site runs it")
    monkeypatch.setenv(ROOT_ENV, str(REPO))
    monkeypatch.setenv(OVERLAY_ENV, str(overlay))
    project = Project.find()
    assert project.layers == [overlay, REPO]
    assert project.load("multicast").path == overlay / "runbooks" / "multicast.yaml"
    assert project.load("multicast").runbook.title == "multicast, as this site runs it"
    assert project.load("client-hotfix-check").path.parent == REPO / "runbooks"
    assert project.ids() == Project(REPO).ids()  # shadowed, not listed twice
    result = run_program("remediate", "multicast", "--method", "4", "--dry-run", root=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "multicast, as this site runs it"


def test_overlay_shadows_a_template_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlay = tmp_path / "mine"
    mine = overlay / "templates" / TSCORE
    mine.parent.mkdir(parents=True)
    text = (REPO / "templates" / TSCORE).read_text("utf-8")
    mine.write_text("# site-specific TSCore check\n" + text, "utf-8")
    monkeypatch.setenv(OVERLAY_ENV, str(overlay))
    result = run_program("check", "client-hotfix", "--dry-run", "--show-scripts", root=REPO)
    assert result.returncode == 0, result.stderr
    assert "# site-specific TSCore check" in result.stdout
    # Every other template still comes from the base project.
    assert Project(REPO, overlay=overlay).renderer.exists("_script.ps1.j2")


def test_overlay_without_runbooks_or_templates_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERLAY_ENV, str(tmp_path / "typo"))
    with pytest.raises(UsageError, match=r"CMRUNBOOK_OVERLAY=.* has no runbooks/ or templates/"):
        Project.find()


def test_unknown_runbook_names_every_folder_searched(tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    project = Project(REPO, overlay=tmp_path)
    with pytest.raises(UsageError) as exc:
        project.load("nope")
    assert str(tmp_path / "runbooks") in str(exc.value)
    assert str(REPO / "runbooks") in str(exc.value)
