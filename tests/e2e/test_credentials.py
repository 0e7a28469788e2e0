"""The WinRM password never lands anywhere: not in run folders, reports, scripts or the console.

The lab's password is a sentinel; several runbooks run for real with it (one succeeding, one
failing, a fleet check with a client down, a log fetch, a dry run writing its scripts), and one
more with a wrong sentinel password (401). Then every byte written under the test's folder and
every console line is searched for either sentinel, raw and encoded as a script or a protocol
would carry it (UTF-16LE, base64 of UTF-8 or UTF-16LE at any alignment, URL, hex), and as its
NTLM hashes.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Lab
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

SENTINEL = "Sentinel-Pa55-4c7e!"
WRONG = "Wrong-Sentinel-9b1d?"
SPEED = 500.0
SCALE = "0.005"


def _b64_fragments(data: bytes) -> Iterator[bytes]:
    """What base64 of `data` looks like inside any longer base64 text, at each alignment."""
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data + b"\0\0\0")
        yield encoded[4 if offset else 0 : -8]


def forms(secret: str) -> dict[str, bytes]:
    utf8, utf16 = secret.encode(), secret.encode("utf-16-le")
    out = {
        "raw": utf8,
        "utf-16le": utf16,
        "url": urllib.parse.quote(secret, safe="").encode(),
        "url-plus": urllib.parse.quote_plus(secret).encode(),
        "hex": utf8.hex().encode(),
        "HEX": utf8.hex().upper().encode(),
        # The NTLM one-way hashes are as good as the password, and the client keeps them.
        "nt-hash": ntowfv1(secret).hex().encode(),
        "NT-HASH": ntowfv1(secret).hex().upper().encode(),
        "lm-hash": lmowfv1(secret).hex().encode(),
        "LM-HASH": lmowfv1(secret).hex().upper().encode(),
    }
    for name, data in (("utf-8", utf8), ("utf-16le", utf16)):
        for i, fragment in enumerate(_b64_fragments(data)):
            out[f"base64({name})@{i}"] = fragment
    return out


def leaks(blob: bytes, secret: str) -> list[str]:
    return [name for name, pattern in forms(secret).items() if pattern in blob]


def test_encoded_forms_are_found() -> None:
    """The search itself works: each form is found in text that carries it."""
    wrapped = base64.b64encode(b"xy" + SENTINEL.encode("utf-16-le") + b"z")
    assert leaks(wrapped, SENTINEL)
    assert leaks(("pw=" + SENTINEL).encode("utf-16-le"), SENTINEL) == ["utf-16le"]
    assert leaks(b"nothing here", SENTINEL) == []


@pytest.fixture
def console(make_lab: Callable[..., Lab], tmp_path: Path) -> tuple[Lab, list[str]]:
    """Run the runbooks against a lab whose password is SENTINEL; their console output."""
    lab = make_lab(speed=SPEED, password=SENTINEL)
    assert lab.running.password == SENTINEL
    out: list[str] = []

    def run(*args: str, expect: int, **kw: object) -> None:
        res = lab.cli(*args, time_scale=SCALE, **kw)  # type: ignore[arg-type]
        assert res.returncode == expect, res.stdout + res.stderr
        out.extend([res.stdout, res.stderr])

    yes = ("--yes", "--non-interactive", "--assume-manual-done")
    run("remediate", "multicast", "--method", "3", "--hosts", "cm07-dp02", *yes, expect=0)
    run("remediate", "boot-image-update", *yes, expect=1)  # the site server lacks the hotfix
    lab.running.server.faults.set("xp-fleet001", "refuse", count=None)
    lab.running.server.faults.set("xp-fleet002", "http500", count=None)
    run(
        "check",
        "client-hotfix",
        "--non-interactive",
        "--reports",
        str(tmp_path / "reports"),
        expect=1,
    )
    run(
        "remediate",
        "multicast",
        "--method",
        "3",
        "--hosts",
        "cm07-dp02",
        *yes,
        env=lab.env(CMRUNBOOK_PASSWORD=WRONG),
        expect=1,
    )
    run(
        "diagnose",
        "all",
        "--host",
        "xp-wks002",
        "--inventory",
        lab.inventory,
        "--non-interactive",
        expect=1,
    )
    run(
        "remediate",
        "multicast",
        "--method",
        "4",
        "--dry-run",
        "--show-scripts",
        "--out",
        str(tmp_path / "scripts"),
        expect=0,
    )
    return lab, out


def test_the_password_is_nowhere(console: tuple[Lab, list[str]], tmp_path: Path) -> None:
    lab, out = console
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    # The runs really happened and wrote what an operator keeps.
    assert len(lab.run_dirs()) == 4
    assert any(p.suffix == ".ps1" and "scripts" in p.parts for p in files)
    assert any(p.name == "report.json" and "reports" in p.parts for p in files)
    assert "rejected the credentials" in "".join(out)
    found = []
    for secret in (SENTINEL, WRONG):
        for path in files:
            hits = leaks(path.read_bytes(), secret)
            if hits:
                found.append(f"{path.relative_to(tmp_path)}: {secret} as {hits}")
        for i, text in enumerate(out):
            hits = leaks(text.encode(), secret)
            if hits:
                found.append(f"console output #{i}: {secret} as {hits}")
    assert found == []
