"""`invoke inventory from-site` and `invoke lab --from-inventory`, the real CLI against the lab.

What an admin checks: the written inventory holds the site's own site systems with the roles
and addresses the site knows them by (compared with the lab's site model), nothing of another
site, loads with the project's loader and drives a dry run; a provider that cannot be reached
or does not serve the site code ends with a clear message, exit code and no file; a lab built
from the written inventory gives the same inventory back.
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import INVOKE, ROOT, Lab, custom_lab_file

from cmrunbook.load.inventory import load_inventory


def from_site(
    lab: Lab, site: str, provider: str, out: Path, *extra: str, inventory: str | None = None
) -> subprocess.CompletedProcess[str]:
    return lab.cli(
        "inventory",
        "from-site",
        "--provider",
        provider,
        "--site",
        site,
        "--out",
        str(out),
        "--inventory",
        inventory or lab.inventory,
        *extra,
    )


def expected_site(lab: Lab, code: str) -> dict[str, dict[str, Any]]:
    """The site's site systems as the lab's own model holds them: the name and address the
    site registered each by, its roles, DP roles, OS."""
    world = lab.world
    site = world.sites[code]
    out: dict[str, dict[str, Any]] = {}
    server = world.hosts[site.server]
    out[server.address.split(".")[0]] = {
        "address": server.address,
        "roles": ["site_server"],
        "os": {"version": server.os_version, "arch": server.arch},
    }
    for host, nal_name in site.dp_servers.items():
        h = world.hosts[host]
        dp = world.dps[host]
        out[nal_name.split(".")[0]] = {
            "address": nal_name,
            "roles": ["distribution_point"],
            "os": {"version": h.os_version, "arch": h.arch},
            "dp": {"multicast": dp.roles["multicast"].installed, "pxe": dp.roles["pxe"].installed},
        }
    return out


def written_hosts(path: Path) -> dict[str, dict[str, Any]]:
    inv = load_inventory(path)  # the project's own loader: validates the file
    out = {}
    for name, h in inv.file.hosts.items():
        entry: dict[str, Any] = {
            "address": h.address,
            "roles": list(h.roles),
            "os": h.os.model_dump(),
        }
        if h.dp is not None:
            entry["dp"] = h.dp.model_dump()
        out[name] = entry
    return out


def test_from_site_2007_site_matches_the_lab_site_model(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "inventory" / "c07.yaml"
    res = from_site(lab, "C07", "cm07-site01", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert written_hosts(out) == expected_site(lab, "C07")
    inv = load_inventory(out)
    assert inv.file.sites["C07"].version == "2007"
    assert inv.file.sites["C07"].provider == "cm07-site01"
    # 2007 registers site systems by NetBIOS name (SMS-PROVIDER.md 3.2): the address written
    # is that name, and the DP whose name contains cm07-dp02 stays a host of its own.
    assert inv.file.hosts["cm07-dp02"].address == "cm07-dp02"
    assert inv.file.hosts["bak-cm07-dp02"].os.version == "2008r2"
    assert inv.file.hosts["cm07-dp02"].os.model_dump() == {"version": "2008", "arch": "x86"}
    # Nothing of the neighbour site P12, no client, no password.
    assert not any(h.site != "C07" for h in inv.file.hosts.values())
    assert not any(name.startswith(("cm12", "xp-", "w7-")) for name in inv.file.hosts)
    text = out.read_text(encoding="utf-8")
    assert lab.running.password not in text
    assert "release and install_dir are not read from the site" in res.stderr


def test_from_site_2012r2_site_matches_the_lab_site_model(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "p12.yaml"
    res = from_site(lab, "P12", "cm12-site01", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert written_hosts(out) == expected_site(lab, "P12")
    inv = load_inventory(out)
    assert inv.file.sites["P12"].version == "2012r2"
    # 2012 R2 sites name their site systems by FQDN (SMS-PROVIDER.md 3.2).
    assert inv.file.hosts["cm12-dp01"].address == "cm12-dp01.corp.example"
    assert not any(h.site != "P12" for h in inv.file.hosts.values())
    assert "version 2012r2 inferred" in res.stderr


def test_written_inventory_drives_a_multicast_dry_run(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "c07.yaml"
    assert from_site(lab, "C07", "cm07-site01", out).returncode == 0
    res = lab.cli("remediate", "multicast", "--method", "3", "--dry-run", inventory=str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    for dp in ("cm07-dp01", "cm07-dp02", "bak-cm07-dp02"):
        assert f"== {dp} (distribution_point" in res.stdout


def test_collection_members_are_written_as_clients(lab: Lab, tmp_path: Path) -> None:
    """C0700020 holds nt4-legacy02 (hardware-inventoried: OS and architecture known) and
    xp-wks003, which has no hardware inventory: its architecture is not guessed."""
    out = tmp_path / "c07.yaml"
    res = from_site(lab, "C07", "cm07-site01", out, "--collection", "C0700020")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "xp-wks003: OS or architecture not known from the site" in res.stderr
    assert "nt4-legacy02" not in res.stderr
    assert not out.exists()
    res = from_site(
        lab, "C07", "cm07-site01", out, "--collection", "C0700020", "--os", "xp-wks003=xp/x86"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    inv = load_inventory(out)
    nt4 = inv.file.hosts["nt4-legacy02"]
    assert nt4.roles == ["client"]
    assert nt4.os.model_dump() == {"version": "nt4", "arch": "x86"}
    assert nt4.winrm is False  # not known from the site: not assumed
    assert inv.file.hosts["xp-wks003"].os.model_dump() == {"version": "xp", "arch": "x86"}
    assert sorted(inv.file.groups["collection-c0700020"].hosts) == ["nt4-legacy02", "xp-wks003"]
    assert "nt4-legacy01" not in inv.file.hosts  # not a member


def test_unknown_site_code_is_refused_and_nothing_written(lab: Lab, tmp_path: Path) -> None:
    for site in ("X99", "P12"):  # no such site; a site whose provider is another server
        out = tmp_path / f"{site}.yaml"
        res = from_site(lab, site, "cm07-site01", out)
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"No SMS Provider for site {site} on this server" in res.stderr
        assert "SMS_ProviderLocation names: C07" in res.stderr
        assert not out.exists()
        assert list(tmp_path.glob(".from-site-*")) == []


def _closed_port_seed(lab: Lab, tmp_path: Path, **winrm: Any) -> Path:
    """The lab's inventory with the provider's WinRM on a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    data["hosts"]["cm07-site01"]["winrm"].update(port=closed, **winrm)
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump(data), encoding="utf-8")
    return seed


def test_unreachable_provider_is_refused_and_nothing_written(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "c07.yaml"
    seed = _closed_port_seed(lab, tmp_path)
    res = from_site(lab, "C07", "cm07-site01", out, inventory=str(seed))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cannot reach the SMS Provider" in res.stderr
    assert "insecure" not in res.stderr
    assert not out.exists()


def test_an_insecure_provider_setting_is_said_before_logging_on(lab: Lab, tmp_path: Path) -> None:
    seed = _closed_port_seed(lab, tmp_path, auth="basic", allow_unencrypted=True)
    res = from_site(lab, "C07", "cm07-site01", tmp_path / "c07.yaml", inventory=str(seed))
    assert "warning: insecure: Basic over plain http" in res.stderr
    assert "(cm07-site01)" in res.stderr


def test_unknown_server_os_stops_unless_stated(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """A DP on Windows Server 2016 reads as "NT Server 10.0" (as 2019 and 2022 do), so the
    site does not say which: the command stops naming it, and --os settles it."""

    def newer(data: dict[str, Any]) -> None:
        data["hosts"]["bak-cm07-dp02"]["os"] = {"version": "2016", "arch": "x64"}

    lab = make_lab(custom_lab_file(tmp_path, newer))
    out = tmp_path / "c07.yaml"
    res = from_site(lab, "C07", "cm07-site01", out)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "bak-cm07-dp02: OS or architecture not known from the site" in res.stderr
    assert not out.exists()
    res = from_site(lab, "C07", "cm07-site01", out, "--os", "bak-cm07-dp02=2016/x64")
    assert res.returncode == 0, res.stdout + res.stderr
    assert load_inventory(out).file.hosts["bak-cm07-dp02"].os.version == "2016"


def _start_lab_cli(state: Path, *args: str) -> subprocess.Popen[str]:
    """`invoke lab ARGS --port 0 --state STATE` until it says it listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMRUNBOOK_")}
    proc = subprocess.Popen(
        [INVOKE, "lab", *args, "--port", "0", "--speed", "50", "--state", str(state)],
        cwd=ROOT,
        env=env,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    end = time.monotonic() + 60
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready and "Lab listening" in proc.stdout.readline():
            return proc
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.kill()
    raise AssertionError("invoke lab did not start")


def _lab_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMRUNBOOK_")}
    text = (state / "credentials.env").read_text(encoding="utf-8")
    env.update(dict(re.findall(r"export (\w+)='([^']*)'", text)))
    return env


def test_lab_from_inventory_round_trip(lab: Lab, tmp_path: Path) -> None:
    """from-site -> `invoke lab --from-inventory` -> from-site gives the same inventory."""
    first = tmp_path / "first.yaml"
    assert from_site(lab, "C07", "cm07-site01", first).returncode == 0
    state = tmp_path / "state"
    proc = _start_lab_cli(state, "--from-inventory", str(first))
    try:
        second = tmp_path / "second.yaml"
        res = subprocess.run(
            [
                INVOKE,
                "inventory",
                "from-site",
                "--provider",
                "cm07-site01",
                "--site",
                "C07",
                "--out",
                str(second),
                "--inventory",
                str(state / "inventory.yaml"),
            ],
            cwd=ROOT,
            env=_lab_env(state),
            text=True,
            capture_output=True,
            timeout=240,
        )
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert yaml.safe_load(second.read_text(encoding="utf-8")) == yaml.safe_load(
        first.read_text(encoding="utf-8")
    )
    # The simulated site is the inventory's: its hosts and nothing of the default lab.
    served = load_inventory(state / "inventory.yaml")
    assert sorted(served.file.hosts) == sorted(load_inventory(first).file.hosts)


def test_a_site_without_site_system_rows_needs_its_version_stated(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """Only an SMS_SystemResourceList row tells the 2007 surface from the 2012 R2 one: a site
    that lists none (here: no DP) is not assumed to be 2007."""

    def no_dps(data: dict[str, Any]) -> None:
        for name in ("cm07-dp01", "cm07-dp02", "bak-cm07-dp02"):
            del data["hosts"][name]
        for image in data["sites"]["C07"]["boot_images"]:
            image["dps"], image["pxe_dps"] = [], []

    lab = make_lab(custom_lab_file(tmp_path, no_dps))
    out = tmp_path / "c07.yaml"
    res = from_site(lab, "C07", "cm07-site01", out)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "site C07: ConfigMgr version not known" in res.stderr
    assert not out.exists()
    res = from_site(lab, "C07", "cm07-site01", out, "--site-version", "2007")
    assert res.returncode == 0, res.stdout + res.stderr
    inv = load_inventory(out)
    assert inv.file.sites["C07"].version == "2007"
    assert sorted(inv.file.hosts) == ["cm07-site01"]
