"""How the lab's code is laid out: simulators named after the template folders they answer.

A reader looking for the lab's answer to ``templates/<folder>/<name>.ps1.j2`` opens
``cmrunbook_lab/sims/<folder>.py``; these tests keep that promise true as templates move.
"""

from __future__ import annotations

from pathlib import Path

from cmrunbook_lab import interpreter
from cmrunbook_lab.sims import boot_image, bootsect, checks, engine, multicast

REPO = Path(__file__).resolve().parents[2]
SIMULATORS = {
    "boot-image": boot_image,
    "bootsect": bootsect,
    "checks": checks,
    "engine": engine,
    "multicast": multicast,
}


def test_each_simulator_answers_only_templates_of_its_own_folder() -> None:
    for folder, module in SIMULATORS.items():
        assert module.__name__.rsplit(".", 1)[-1] == folder.replace("-", "_")
        names = [op.name for op in module.OPERATIONS]
        assert names, f"{module.__name__} declares no operation"
        for name in names:
            assert name.split("/", 1)[0] == folder, f"{module.__name__} answers {name}"
            assert (REPO / "templates" / f"{name}.ps1.j2").is_file(), f"no template for {name}"


def test_the_interpreter_tries_every_simulator_operation_once() -> None:
    declared = [op.name for module in SIMULATORS.values() for op in module.OPERATIONS]
    tried = [op.name for op in interpreter.OPERATIONS]
    assert sorted(tried) == sorted(declared)
    assert len(set(tried)) == len(tried)
