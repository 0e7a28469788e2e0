"""Ctrl-C at a question asked before a run starts: an interruption (exit 130), never a crash."""

from __future__ import annotations

import pytest

from cmrunbook.errors import Interrupted
from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import project_root
from cmrunbook.run.connect import credentials_for


def test_ctrl_c_at_the_password_prompt_is_an_interruption() -> None:
    inv = load_inventory(project_root() / "inventory" / "example.yaml")

    def ctrl_c(question: str) -> str:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="credentials prompt; nothing was changed"):
        credentials_for(
            inv, env={}, prompt=ctrl_c, ask_user=lambda q: "admin", keyring_get=lambda s, u: None,
            tty=True,
        )  # fmt: skip
