"""The questions asked before a run starts: what they list on --resume, and Ctrl-C at them
(an interruption, exit 130, never a crash)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmrunbook.cli.common import build_plan
from cmrunbook.errors import Interrupted
from cmrunbook.load.inventory import load_inventory
from cmrunbook.load.project import Project
from cmrunbook.record.journal import HostState, ResumeState
from cmrunbook.run.connect import credentials_for
from cmrunbook.run.orchestrate import destructive_steps


def test_ctrl_c_at_the_password_prompt_is_an_interruption() -> None:
    inv = load_inventory(Project.find().inventory(None))

    def ctrl_c(question: str) -> str:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="credentials prompt; nothing was changed"):
        credentials_for(
            inv,
            env={},
            prompt=ctrl_c,
            ask_user=lambda q: "admin",
            keyring_get=lambda s, u: None,
            tty=True,
        )


def test_a_resumed_run_lists_only_the_destructive_steps_still_to_run() -> None:
    """A step the resumed run completed, or a host it finished, is not asked about again."""
    _, plan = build_plan(
        "multicast",
        inventory=str(Project.find().inventory(None)),
        method="3",
        hosts="cm07-dp02",
        overrides=[],
    )
    everything = destructive_steps(plan)
    assert any("Disable multicast" in line for line in everything), everything
    (hp,) = plan.hosts
    disable = next(ps for ps in hp.all_steps() if "Disable multicast" in ps.step.title)
    state = HostState(done={disable.key})
    resume = ResumeState(Path("run"), {}, {hp.target.name: state}, last_seq=0)
    still = destructive_steps(plan, resume)
    assert not any("Disable multicast" in line for line in still)
    assert still == [line for line in everything if "Disable multicast" not in line]
    resume.hosts[hp.target.name] = HostState(finished="ok")  # nothing done, but finished
    assert destructive_steps(plan, resume) == []
