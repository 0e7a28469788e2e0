"""The project: where runbooks/, templates/, schema/ and inventory/ are, and the loaded catalog.

One object answers every "where is ..." question, so that a checkout, an installed wheel and an
admin's own folder are found the same way by every command. The base root is, first found:

1. `CMRUNBOOK_ROOT`: a whole project folder (runbooks/ at least) chosen explicitly;
2. the nearest folder from the working folder upwards holding runbooks/ and templates/ (a
   checkout, or a copy an admin keeps);
3. the shipped files: `cmrunbook/_shipped/` in an installed wheel (copied there at build time
   from the top-level folders), or the checkout this package is imported from (`pip install -e`).

On top of the base, `CMRUNBOOK_OVERLAY` may name a folder whose `runbooks/<id>.yaml` shadows the
base runbook of the same id (or adds one) and whose `templates/` shadow templates by name, so an
admin edits one runbook without copying the catalog.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from cmrunbook.errors import ConfigError, Problem, UsageError
from cmrunbook.load.catalog import LOG_CATALOG, Loaded, runbook_problems
from cmrunbook.load.logcatalog import LogCatalog, load_log_catalog
from cmrunbook.load.runbook import Runbook
from cmrunbook.load.sourcemap import load_yaml
from cmrunbook.load.validation import parse
from cmrunbook.render.templates import Renderer

ROOT_ENV = "CMRUNBOOK_ROOT"
OVERLAY_ENV = "CMRUNBOOK_OVERLAY"
DEFAULT_INVENTORY = Path("inventory") / "example.yaml"
_PACKAGE = Path(__file__).resolve().parents[1]


def shipped_root() -> Path:
    """The runbooks, templates, schemas and example inventory that came with this package.

    A wheel carries them as `cmrunbook/_shipped/`; an editable install or a checkout on the path
    reads the top-level folders of the checkout (src/cmrunbook/../..).
    """
    packaged = _PACKAGE / "_shipped"
    if (packaged / "runbooks").is_dir():
        return packaged
    checkout = _PACKAGE.parents[1]
    if (checkout / "runbooks").is_dir() and (checkout / "templates").is_dir():
        return checkout
    raise UsageError(
        f"this cmrunbook has no shipped runbooks ({packaged} is missing); reinstall it, "
        f"or set {ROOT_ENV} to a folder holding runbooks/ and templates/"
    )


class Project:
    """The folders a command reads, and the runbook catalog loaded from them (cached).

    `root` is the base project folder; `overlay` an optional admin folder that shadows it by
    runbook id and template name; `work_dir` where run folders go by default (the chosen project
    folder, or the working folder when the shipped files are used: never inside the package).
    """

    def __init__(
        self, root: Path, *, work_dir: Path | None = None, overlay: Path | None = None
    ) -> None:
        self.root = root
        self.work_dir = work_dir or root
        self.overlay = overlay

    @classmethod
    def find(cls) -> Project:
        """The project for this process, by the precedence in the module docstring."""
        overlay = _overlay()
        env = os.environ.get(ROOT_ENV)
        if env:
            root = Path(env)
            if not (root / "runbooks").is_dir():
                raise UsageError(f"{ROOT_ENV}={env} has no runbooks/ folder")
            return cls(root, overlay=overlay)
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            if (folder / "runbooks").is_dir() and (folder / "templates").is_dir():
                return cls(folder, overlay=overlay)
        return cls(shipped_root(), work_dir=here, overlay=overlay)

    # ------------------------------------------------------------ folders

    @property
    def layers(self) -> list[Path]:
        """The folders searched, the one that wins first."""
        return [self.overlay, self.root] if self.overlay else [self.root]

    @property
    def runbooks_dir(self) -> Path:
        return self.root / "runbooks"

    @property
    def schema_dir(self) -> Path:
        return self.root / "schema"

    def templates_dir(self, kind: str = "") -> Path:
        """templates/KIND of the first layer that has it (the base's when none has)."""
        for layer in self.layers:
            if (layer / "templates" / kind).is_dir():
                return layer / "templates" / kind
        return self.root / "templates" / kind

    def inventory(self, given: str | None) -> Path:
        """The inventory a command uses: the one given, else the project's example."""
        path = Path(given) if given else self.root / DEFAULT_INVENTORY
        if not path.is_file():
            raise UsageError(
                f"inventory {path} does not exist; create it from {self.root / DEFAULT_INVENTORY} "
                "with your sites and hosts (the format: schema/inventory.schema.json)"
            )
        return path

    def inventories(self) -> list[Path]:
        """Every inventory file of the project (what `validate` checks by default)."""
        return sorted((self.root / "inventory").glob("*.yaml"))

    # ------------------------------------------------------------ the catalog

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer([layer / "templates" for layer in self.layers])

    def runbook_paths(self) -> list[Path]:
        """One file per runbook id, the overlay's where it has one."""
        chosen: dict[str, Path] = {}
        for layer in reversed(self.layers):
            for path in (layer / "runbooks").glob("*.yaml"):
                if not path.name.startswith("_"):
                    chosen[path.stem] = path
        return [chosen[k] for k in sorted(chosen)]

    def ids(self) -> list[str]:
        return [p.stem for p in self.runbook_paths()]

    @cached_property
    def logs(self) -> LogCatalog:
        path = next(
            (p for p in (layer / "runbooks" / LOG_CATALOG for layer in self.layers) if p.is_file()),
            self.runbooks_dir / LOG_CATALOG,
        )
        return load_log_catalog(path, self._display(path))

    def load(self, runbook_id: str) -> Loaded:
        """One runbook by id (its file name), fully checked."""
        path = next((p for p in self.runbook_paths() if p.stem == runbook_id), None)
        if path is None:
            known = ", ".join(self.ids())
            where = " or ".join(str(layer / "runbooks") for layer in self.layers)
            raise UsageError(f"no runbook '{runbook_id}' in {where}; known: {known}")
        return self.load_path(path)

    def load_path(self, path: Path) -> Loaded:
        data, smap = load_yaml(path, display=self._display(path))
        rb = parse(Runbook, data, smap)
        problems = runbook_problems(rb, smap, path, self)
        if problems:
            raise ConfigError(problems)
        return Loaded(rb, path, smap)

    def load_all(self) -> tuple[list[Loaded], list[Problem]]:
        """Every runbook, with all problems of all files collected (for `invoke validate`)."""
        loaded: list[Loaded] = []
        problems: list[Problem] = []
        try:
            _ = self.logs
        except ConfigError as exc:
            problems.extend(exc.problems)
        for path in self.runbook_paths():
            try:
                loaded.append(self.load_path(path))
            except ConfigError as exc:
                problems.extend(exc.problems)
        return loaded, problems

    def _display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)


def _overlay() -> Path | None:
    """CMRUNBOOK_OVERLAY, checked: a folder with runbooks/ or templates/ (else a typo)."""
    env = os.environ.get(OVERLAY_ENV)
    if not env:
        return None
    folder = Path(env)
    if not any((folder / sub).is_dir() for sub in ("runbooks", "templates")):
        raise UsageError(f"{OVERLAY_ENV}={env} has no runbooks/ or templates/ folder")
    return folder
