"""Machine locks: many keys on a few descriptors, refused across processes and within one."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from cmrunbook.errors import LockHeld
from cmrunbook.run.locks import SHARDS, HostLocks, key_offset, shard_name

KEYS = 25_000


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _keys(count: int, prefix: str = "machine:h") -> dict[str, str]:
    return {f"{prefix}{i}": f"h{i}" for i in range(count)}


def _try_in_child(folder: str, keys: dict[str, str], queue: multiprocessing.Queue[str]) -> None:
    """Another process's run: report whether it got the locks, or the refusal."""
    try:
        with HostLocks(Path(folder), keys, "run-child"):
            queue.put("locked")
    except LockHeld as exc:
        queue.put(str(exc))


def _other_process(folder: Path, keys: dict[str, str]) -> str:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_try_in_child, args=(str(folder), keys, queue))
    child.start()
    answer = queue.get(timeout=60)
    child.join(timeout=60)
    return answer


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_lock_set_of_25000_keys_holds_with_a_descriptor_per_lock_file(tmp_path: Path) -> None:
    before = _open_descriptors()
    with HostLocks(tmp_path, _keys(KEYS), "run-a"):
        assert _open_descriptors() - before == SHARDS
        # Every one of them is held: the last key, and one in the middle, are refused.
        for key in (f"machine:h{KEYS - 1}", "machine:h12345"):
            with (
                pytest.raises(LockHeld, match=r"is locked by run run-a \(pid "),
                HostLocks(tmp_path, {key: "again"}, "run-b"),
            ):
                pass
        assert _open_descriptors() - before == SHARDS
    assert _open_descriptors() == before
    # The lock files, and no holder file left.
    assert {p.name for p in tmp_path.iterdir()} == {shard_name(n) for n in range(SHARDS)}


@pytest.mark.skipif(sys.platform == "win32", reason="the holder is named on POSIX systems")
def test_another_process_is_refused_and_told_which_run_holds_the_key(tmp_path: Path) -> None:
    with HostLocks(tmp_path, _keys(1000), "run-a"):
        refusal = _other_process(tmp_path, {"machine:x": "x", "machine:h999": "dp999"})
        assert refusal.startswith(f"dp999 is locked by run run-a (pid {os.getpid()})"), refusal
        # The child's own free key was released with its refusal, and ours still hold.
        assert _other_process(tmp_path, {"machine:x": "x"}) == "locked"
    assert _other_process(tmp_path, _keys(1000)) == "locked"


def test_closing_another_descriptor_of_the_file_keeps_the_locks(tmp_path: Path) -> None:
    """POSIX drops a process's record locks when it closes any descriptor of the file: a second
    run in this process on the same file, through another path, must not do that."""
    with HostLocks(tmp_path, {"machine:a": "a"}, "run-a"):
        alias = tmp_path / "alias"
        alias.symlink_to(tmp_path)
        with HostLocks(alias, {"machine:b": "b"}, "run-b"):
            pass
        assert _other_process(tmp_path, {"machine:a": "a"}).startswith("a is locked by run ")


def test_key_offsets_are_stable_and_inside_off_t() -> None:
    offsets = {key_offset(k) for k in _keys(KEYS)}
    assert len(offsets) == KEYS
    assert all(0 <= o < 2**62 for o in offsets)
    assert key_offset("machine:dp01") == 3585871668618526237  # the same in every process
