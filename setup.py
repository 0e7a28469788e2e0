"""Build step: the wheel carries the top-level runbooks/, templates/, schema/ and inventory/.

They stay top-level in the source tree (where admins expect them) and are copied into
`cmrunbook/_shipped/` of the build, so an installed `cmrunbook` works from any folder
(`cmrunbook.load.project.shipped_root`). An editable install reads them in place instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("runbooks", "templates", "schema", "inventory")
HERE = Path(__file__).resolve().parent


class BuildWithShipped(build_py):
    """build_py, then the project folders copied under cmrunbook/_shipped/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        dest = Path(self.build_lib) / "cmrunbook" / "_shipped"
        shutil.rmtree(dest, ignore_errors=True)  # a file deleted since the last build goes too
        for name in SHIPPED:
            shutil.copytree(
                HERE / name,
                dest / name,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )


setup(cmdclass={"build_py": BuildWithShipped})
