"""The lab as a whole: sites and hosts, and the causality between them.

A script changes state on the host it runs on; the consequences elsewhere follow as ConfigMgr's
own components would make them, after configurable delays: a committed site control file makes
the DP install or remove a role and write its setup logs; a refreshed boot image makes
distmgr.log report; a restart takes a host away and brings it back with a new boot time.
Whether multicast works again depends on what really happened, in what order (see `DPState`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from cmrunbook_lab import logs
from cmrunbook_lab.backend import LabBackend
from cmrunbook_lab.clock import Schedule, SiteClock, dmtf
from cmrunbook_lab.faults import FaultBook
from cmrunbook_lab.hosts import File, SimHost
from cmrunbook_lab.labfile import (
    BaselineState,
    ClientGenerator,
    ClientSpec,
    HostSpec,
    LabFile,
    LogFileSpec,
    load_lab_file,
)
from cmrunbook_lab.site import MULTICAST_ROLE, PXE_ROLE, PXE_SHARE, SiteRole, SiteState, nal_path

MCS_KEY = r"HKLM:\SOFTWARE\Microsoft\SMS\MCS"
CLIENT_PROPS_KEY = r"HKLM:\SOFTWARE\Microsoft\SMS\Client\Configuration\Client Properties"
MOBILE_CLIENT_KEY = r"HKLM:\SOFTWARE\Microsoft\SMS\Mobile Client"
NT_CURRENT_KEY = r"HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion"
ROLE_BY_NAME = {MULTICAST_ROLE.lower(): "multicast", PXE_ROLE.lower(): "pxe"}
OS_NAMES = {
    "nt4": ("Microsoft Windows NT Workstation 4.0", "4.0", "1381"),
    "2000": ("Microsoft Windows NT Workstation 5.0", "5.0", "2195"),
    "xp": ("Microsoft Windows NT Workstation 5.1", "5.1", "2600"),
    "7": ("Microsoft Windows NT Workstation 6.1", "6.1", "7601"),
    "10": ("Microsoft Windows NT Workstation 10.0", "6.3", "19045"),
}


@dataclass
class RoleState:
    """A ConfigMgr role on a DP (multicast or PXE service point)."""

    installed: bool
    busy: str | None = None  # "install" / "uninstall" while its setup runs
    removed_cleanly: bool = False  # the last removal finished (its log said so)


@dataclass
class DPState:
    """A distribution point's ConfigMgr and WDS state, and what still breaks multicast.

    `fault` is the lab's cause of broken multicast and what clears it:
    * image-flags: an OS image's multicast bit going from off to on (Methods 1, 2);
    * mcs-key: the multicast role re-added only after its removal had completed (Method 3);
    * wds: WDS removed while neither ConfigMgr role held it, the removal completed (restart if
      asked), then reinstalled with both Deployment and Transport Server (Method 4).
    """

    roles: dict[str, RoleState]
    fault: str
    wds_removal: str | None = None  # "clean" / "dirty": were both roles gone at removal time
    wds_removal_pending: bool = False  # removal waits for a restart
    history: list[str] = field(default_factory=list)


class Lab:
    """Every simulated site and host, with one lock around all state."""

    def __init__(
        self, spec: LabFile, clock: SiteClock | None = None, source: str = "<lab>"
    ) -> None:
        problems = spec.problems()
        if problems:
            raise ValueError(
                f"{source}: " + "; ".join(f"{'.'.join(map(str, w))}: {m}" for w, m in problems)
            )
        self.spec = spec
        self.source = source
        self.clock = clock or SiteClock()
        self.schedule = Schedule(self.clock)
        self.lock = threading.RLock()
        self.speed = spec.speed
        self.faults = FaultBook(spec.faults)
        self.on_host_down: list[Callable[[str], object]] = []
        self.hosts: dict[str, SimHost] = {}
        self.dps: dict[str, DPState] = {}
        # Every change the lab applied, in order (`record_change`); also appended to
        # `changes_path` (<state>/changes.jsonl) once a running lab sets it.
        self.changes: list[dict[str, Any]] = []
        self.changes_path: Path | None = None
        boot = self.clock.wall(0) - _hours(30)
        specs = dict(spec.hosts)
        specs.update(_generated_clients(spec))
        for name, hs in specs.items():
            site = spec.sites[hs.site]
            self.hosts[name] = SimHost(
                name, hs, site.install_dir, boot, configmgr_32bit=site.version == "2007"
            )
        self.sites = {
            code: SiteState(
                code,
                s,
                {
                    n: _nal_name(h, s.version)
                    for n, h in self.hosts.items()
                    if h.site_code == code and h.spec.dp
                },
            )
            for code, s in spec.sites.items()
        }
        for gen in spec.clients:
            if gen.collection:
                collection = self.sites[gen.site].collections[gen.collection.upper()]
                collection["members"] = [*collection["members"], *_generated_names(gen)]
        for state in self.sites.values():
            for image in state.boot_images.values():
                image["LastRefreshTime"] = dmtf(self.clock.wall(0) - timedelta(days=40))
        for host in self.hosts.values():
            self._init_host(host)
        self.changes.clear()  # the starting state is not a change
        self._backends: dict[str, LabBackend] = {}

    @classmethod
    def load(cls, path: Path | None = None, clock: SiteClock | None = None) -> Lab:
        """A lab from a lab file (the packaged default when no path is given)."""
        return cls(load_lab_file(path), clock, str(path or "default-lab.yaml"))

    # -- access ------------------------------------------------------------------------------

    def delay(self, seconds: float) -> float:
        return seconds / self.speed

    def tick(self) -> None:
        """Apply everything that is due."""
        with self.lock:
            self.schedule.run_due()

    def host(self, name: str) -> SimHost:
        return self.hosts[name]

    def find_host(self, name: str) -> SimHost | None:
        lowered = name.lower()
        return next((h for n, h in self.hosts.items() if n.lower() == lowered), None)

    def host_by_server(self, server: str) -> SimHost | None:
        """The host ConfigMgr knows as `server`: the name its site registered it by (NAL
        paths), its address, or its lab name."""
        s = server.strip("\\").lower()
        for h in self.hosts.values():
            names = {h.address.lower(), h.name.lower()}
            site = self.sites.get(h.site_code)
            if site is not None and h.name in site.dp_servers:
                names.add(site.dp_servers[h.name].lower())
            if s in names:
                return h
        return None

    def record_change(self, host: str, what: str, **detail: Any) -> None:
        """One change the lab applied to a simulated host's state: kept in `changes` and
        appended to <state>/changes.jsonl as {"time", "host", "what", ...detail}, so a user can
        see what a run changed, and where. `host` is the host whose state changed (for a site
        control file role: the site system holding the role, not the site server)."""
        entry: dict[str, Any] = {
            "time": self.clock.wall().isoformat(timespec="seconds"),
            "host": host,
            "what": what,
            **detail,
        }
        with self.lock:
            self.changes.append(entry)
            if self.changes_path is not None:
                with self.changes_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, sort_keys=False, default=str) + "\n")

    def site_of(self, host: SimHost) -> SiteState:
        return self.sites[host.site_code]

    def backend(self, name: str) -> LabBackend | None:
        """The HostBackend of a host, or None for an unknown host or one without WinRM."""
        host = self.find_host(name)
        if host is None or not host.has_winrm:
            return None
        with self.lock:
            if host.name not in self._backends:
                self._backends[host.name] = LabBackend(self, host)
            return self._backends[host.name]

    # -- set-up ------------------------------------------------------------------------------

    def _init_host(self, host: SimHost) -> None:
        spec = host.spec
        if host.os_version in OS_NAMES:
            _, ver, build = OS_NAMES[host.os_version]
            host.registry.set(NT_CURRENT_KEY, "CurrentVersion", ver)
            host.registry.set(NT_CURRENT_KEY, "CurrentBuildNumber", build)
        if spec.dp is not None:
            dp = DPState(
                roles={
                    "multicast": RoleState(spec.dp.multicast),
                    "pxe": RoleState(spec.dp.pxe),
                },
                fault=spec.dp.multicast_fault,
            )
            self.dps[host.name] = dp
            host.features = set(spec.dp.wds)
            site = self.sites[host.site_code]
            if spec.dp.multicast:
                site.scf.append(site.role_record(MULTICAST_ROLE, host.name, _MCS_PROPS))
            if spec.dp.pxe:
                remote = {
                    "PropertyName": "Server Remote Name",
                    "Value": 0,
                    "Value1": host.address,
                    "Value2": "",
                }
                site.scf.append(
                    site.role_record(PXE_ROLE, host.name, [remote, *_PXE_PROPS], _PXE_LISTS)
                )
                site.pxe_shares.add(host.name)
            self._seed_role_logs(host)
            self._refresh_dp(host, at_start=True)
        for path, log in spec.log_files.items():
            self._seed_log(host, path, log)
        if spec.client is not None or "client" in host.roles:
            self._init_client(host, spec.client or ClientSpec())
        if "site_server" in host.roles:
            site = self.sites[host.site_code]
            host.fs.mkdir(site.install_dir)
            logs.append(
                host,
                "distmgr.log",
                [logs.Line("SMS_DISTRIBUTION_MANAGER started.", logs.DISTMGR)],
                self.clock.wall(0) - _hours(29),
            )

    def _init_client(self, host: SimHost, c: ClientSpec) -> None:
        site = self.sites[host.site_code]
        if c.client_dir:
            client_dir = c.client_dir
        elif site.version == "2007":
            client_dir = host.env["windir"] + r"\system32\CCM"
        else:
            client_dir = host.env["windir"] + r"\CCM"
        host.registry.set(CLIENT_PROPS_KEY, "Local SMS Path", client_dir + "\\")
        host.registry.set(MOBILE_CLIENT_KEY, "ProductVersion", c.client_version)
        host.fs.mkdir(client_dir)
        if c.tscore_version:
            host.fs.put(
                File(client_dir + r"\TSCore.dll", version=c.tscore_version, declared_size=1_402_880)
            )
        os_name, os_ver, build = OS_NAMES.get(
            host.os_version, (f"Microsoft Windows {host.os_version}", "", "")
        )
        inventoried = c.inventoried_version or c.tscore_version
        scanned = self.clock.wall(0) - _hours(20 + len(site.clients) % 48)
        files = []
        if c.inventoried and inventoried:
            files.append(
                {
                    "FileName": "TSCore.dll",
                    "FilePath": host.expand_env(client_dir).rstrip("\\") + "\\",
                    "FileVersion": _version_text(inventoried),
                    "FileSize": 1_402_880,
                }
            )
        site.clients.append(
            {
                "ResourceId": _resource_id(site),
                "Name": host.name.upper(),
                "NetbiosName": host.name.upper(),
                "ClientVersion": c.client_version,
                "OperatingSystemNameandVersion": os_name,
                "Client": 1,
                "Active": 1,
                "Obsolete": 0,
                "_host": host.name,
                "_files": files,
                "_os": {"BuildNumber": build, "Caption": os_name, "Version": f"{os_ver}.{build}"}
                if c.inventoried and build
                else None,
                "_scan": dmtf(scanned) if c.inventoried else None,
                "_baseline_state": c.baseline_state,
                "_extra": False,
            }
        )
        if c.second_record:
            # The same name discovered again (a reinstalled or reimaged client): its own
            # ResourceId and inventory, no hardware inventory or compliance state of its own.
            site.clients.append(
                {
                    **site.clients[-1],
                    "ResourceId": _resource_id(site),
                    "Obsolete": 1 if c.second_record == "obsolete" else 0,
                    "Active": 0 if c.second_record == "obsolete" else 1,
                    "_files": [
                        {**f, "FileVersion": _version_text(c.second_record_version)} for f in files
                    ],
                    "_os": None,
                    "_baseline_state": None,
                    "_extra": True,
                }
            )

    def _seed_log(self, host: SimHost, path: str, log: LogFileSpec) -> None:
        """A log the host already has, e.g. smsts.log of a task sequence that failed earlier."""
        start = self.clock.wall(0) - _hours(log.hours_ago)
        level = {"info": 1, "warning": 2, "error": 3}
        text = ""
        for i, line in enumerate(log.lines):
            when = start + timedelta(milliseconds=15 * i)
            if log.format == "cmtrace":
                text += logs.cmtrace(
                    line.message, line.component, when, type_=level[line.level], thread=line.thread
                )
            else:
                text += logs.format_line(logs.Line(line.message, line.component), log.format, when)
            text += logs.CRLF
        host.fs.put(File(host.expand_env(path), data=bytearray(text.encode("utf-8"))))

    def _seed_role_logs(self, host: SimHost) -> None:
        """An old, successful install in each role's logs: a monitor that reads from offset 0
        instead of the armed offset finds this and wrongly reports success."""
        dp = self.dps[host.name]
        when = self.clock.wall(0) - _hours(26)
        for role, state in dp.roles.items():
            if state.installed:
                for log_name, line in [
                    *logs.setup_start(role, "install"),
                    *logs.setup_end(role, "install", 0),
                ]:
                    logs.append(host, log_name, [line], when)

    # -- DP health ---------------------------------------------------------------------------

    def mcs_key(self, host: SimHost) -> str:
        """Where this DP keeps its multicast key (the lab file may move it out of reach)."""
        spec = host.spec.dp
        return spec.mcs_key if spec and spec.mcs_key else host.sms_key(MCS_KEY)

    def _refresh_dp(self, host: SimHost, *, at_start: bool = False) -> None:
        """Derive the WDSServer service and the MCS key from features, roles and the fault.

        A key written anew (the role installed, a fault cleared) is signed by the MP only
        `delays.mcs_signing` later: "a couple of minutes or a couple of hours" (retro64.ca).
        """
        dp = self.dps[host.name]
        if "WDS" in host.features or host.features & {"WDS-Deployment", "WDS-Transport"}:
            healthy = (
                "WDS-Transport" in host.features
                and dp.fault != "wds"
                and not dp.wds_removal_pending
            )
            host.services["WDSServer"] = "Running" if healthy else "Stopped"
        else:
            host.services.pop("WDSServer", None)
        mc, key = dp.roles["multicast"], self.mcs_key(host)
        before = (dict(host.registry.values(key) or {}), host.services.get("WDSServer"))
        if not mc.installed or dp.fault in ("mcs-key", "image-flags"):
            self.schedule.cancel(f"mcs-sign:{host.name}")  # nothing (valid) left to sign
        if not mc.installed:
            host.registry.delete_key(key)
        elif dp.fault in ("mcs-key", "image-flags"):
            host.registry.set(key, "SerializedMCSKey", "")
            host.registry.set(key, "SignedSerializedMCSKey", "")
        elif not host.registry.get(key, "SerializedMCSKey"):
            value = "LAB-MCS-" + host.name.upper()
            host.registry.set(key, "SerializedMCSKey", value)
            # A DP that works when the lab starts was signed long ago; a new key waits for the MP.
            host.registry.set(key, "SignedSerializedMCSKey", value + "-SIGNED" if at_start else "")
            if not at_start:
                dp.history.append("multicast key written; waiting for the MP to sign it")
                self.schedule.at(
                    self.clock.now() + self.delay(self.spec.delays.mcs_signing),
                    lambda _t: self._sign_mcs_key(host),
                    f"mcs-sign:{host.name}",
                )
        after = (dict(host.registry.values(key) or {}), host.services.get("WDSServer"))
        if before != after and not at_start:
            self.record_change(
                host.name,
                "multicast state (registry, service)",
                key=key,
                values=after[0],
                wds_server=after[1],
            )

    def _sign_mcs_key(self, host: SimHost) -> None:
        """The MP signs the DP's current multicast key, if it has one."""
        key = self.mcs_key(host)
        value = host.registry.get(key, "SerializedMCSKey")
        if value and not host.registry.get(key, "SignedSerializedMCSKey"):
            host.registry.set(key, "SignedSerializedMCSKey", value + "-SIGNED")
            self.dps[host.name].history.append("multicast key signed by the MP")
            self.record_change(host.name, "multicast key signed by the MP", key=key)

    def multicast_healthy(self, name: str) -> bool:
        """WDSServer runs and the multicast key is written and signed (what multicast needs)."""
        host = self.hosts[name]
        key = self.mcs_key(host)
        signed = bool(host.registry.get(key, "SerializedMCSKey")) and bool(
            host.registry.get(key, "SignedSerializedMCSKey")
        )
        return host.services.get("WDSServer") == "Running" and signed

    # -- causality: site control file -> roles on DPs ---------------------------------------

    def scf_committed(
        self, site: SiteState, removed: list[SiteRole], added: list[SiteRole], step: str
    ) -> None:
        for role_rec, op in [
            *((r, "uninstall") for r in removed),
            *((r, "install") for r in added),
        ]:
            role = ROLE_BY_NAME.get(role_rec.RoleName.lower())
            host = self.host_by_server(role_rec.server())
            self.record_change(
                host.name if host is not None else role_rec.server(),
                f"site control file: role {'removed' if op == 'uninstall' else 'added'}",
                role=role_rec.RoleName,
                nal_path=role_rec.NALPath,
                site=site.code,
                props=role_rec.Props,
                prop_lists=role_rec.PropLists,
                step=step,
            )
            if role is None or host is None or host.name not in self.dps:
                continue
            self._role_change(host, role, op, step)

    def _role_change(self, host: SimHost, role: str, op: str, step: str) -> None:
        dp = self.dps[host.name]
        state = dp.roles[role]
        tag = f"role:{host.name}:{role}"
        clean = False
        if op == "install" and state.busy == "uninstall" and self.schedule.cancel(tag + ":start"):
            # Re-added before site component manager got to the removal: it never runs.
            dp.history.append(f"{role} removal overtaken by re-add")
            state.busy = None
        if op == "install":
            clean = not state.installed and state.removed_cleanly
        delay = (
            self.spec.delays.role_install if op == "install" else self.spec.delays.role_uninstall
        )
        state.busy = op
        at = self.clock.now() + self.delay(delay)
        self.schedule.at(
            at, lambda t: self._role_run(host, role, op, step, clean, t), tag + ":start"
        )

    def _role_run(
        self, host: SimHost, role: str, op: str, step: str, clean: bool, t: float
    ) -> None:
        fault = self.faults.take(
            host.name,
            ["log-failure", "log-hang", "log-rollover"],
            step=step,
            operation=op,
            role=role,
        )
        for log_name, line in logs.setup_start(role, op):
            logs.append(host, log_name, [line], self.clock.wall(t))
        if fault is not None and fault.kind == "log-hang":
            self.dps[host.name].history.append(f"{role} {op} hangs (fault)")
            return
        dp = self.dps[host.name]
        code = 0
        if fault is not None and fault.kind == "log-failure":
            code = 1603
        elif op == "install" and role == "multicast" and "WDS-Transport" not in host.features:
            code = 1603  # mcs.msi needs the WDS Transport Server
        elif op == "install" and role == "pxe" and "WDS-Deployment" not in host.features:
            code = 1603
        elif op == "install" and role == "pxe" and host.spec.dp and host.spec.dp.pxe_install_reboot:
            code = 3010
        step_t = t + self.delay(self.spec.delays.log_line)
        if fault is not None and fault.kind == "log-rollover":
            target = fault.log or logs.ROLE_SETUP_LOG[role]
            self.schedule.at(
                step_t, lambda _t: logs.roll_over(host, host.log_path(target)), "rollover"
            )
            step_t += self.delay(self.spec.delays.log_line)
        self.schedule.at(
            step_t,
            lambda t2: self._role_finish(host, role, op, code, clean, t2),
            f"role:{host.name}:{role}:end",
        )
        dp.history.append(f"{role} {op} started")

    def _role_finish(
        self, host: SimHost, role: str, op: str, code: int, clean: bool, t: float
    ) -> None:
        for log_name, line in logs.setup_end(role, op, code):
            logs.append(host, log_name, [line], self.clock.wall(t))
        dp = self.dps[host.name]
        state = dp.roles[role]
        state.busy = None
        ok = code in (0, 3010)
        dp.history.append(f"{role} {op} {'completed' if ok else 'failed'} ({code})")
        self.record_change(
            host.name, f"{role} role {op} {'completed' if ok else 'failed'}", exit_code=code
        )
        if ok and op == "uninstall":
            state.installed = False
            state.removed_cleanly = True
            if role == "pxe":
                site = self.site_of(host)
                site.pxe_shares.discard(host.name)
                share = nal_path(site.dp_servers[host.name], site.code, PXE_SHARE).lower()
                for r in [r for r in site.dp_records if r["ServerNALPath"].lower() == share]:
                    site.dp_records.remove(r)
                    self.record_change(
                        host.name,
                        "distribution point record removed",
                        package_id=r["PackageID"],
                        nal_path=r["ServerNALPath"],
                    )
        elif ok and op == "install":
            state.installed = True
            state.removed_cleanly = False
            if role == "multicast" and dp.fault == "mcs-key" and clean:
                dp.fault = "none"
                dp.history.append("mcs-key fault cleared: role re-added after a completed removal")
            if role == "pxe":
                self.site_of(host).pxe_shares.add(host.name)
            if code == 3010:
                host.request_reboot("rename")
        self._refresh_dp(host)

    # -- causality: image flags, boot images --------------------------------------------------

    def image_flags_changed(
        self, site: SiteState, package_id: str, before: int, after: int, flag_bit: int
    ) -> None:
        self.record_change(
            site.server,
            "OS image flags changed",
            package_id=package_id,
            before=before,
            after=after,
        )
        multicast_bit = 0x08000000
        if before & multicast_bit or not after & multicast_bit:
            return
        for name, dp in self.dps.items():
            if self.hosts[name].site_code == site.code and dp.fault == "image-flags":
                host = self.hosts[name]

                def fix(_t: float, dp: DPState = dp, host: SimHost = host) -> None:
                    if dp.fault == "image-flags":
                        dp.fault = "none"
                        dp.history.append(f"image-flags fault cleared by {package_id}")
                        self._refresh_dp(host)

                self.schedule.at(
                    self.clock.now() + self.delay(self.spec.delays.image_flags), fix, "image-flags"
                )

    def refresh_boot_image(self, site: SiteState, package_id: str) -> None:
        """RefreshPkgSource(): distmgr.log processes the package on the site server (2376, 2311,
        a transfer job per DP, 2301), then the content reaches each DP later (PkgXferMgr), which
        the distribution status shows. Lines and order: the package-actions sample in
        shared/logs (distmgr-package-update-ok-PS100039), where 2301 follows the transfer jobs.
        """
        image = site.boot_images[package_id.upper()]
        image["SourceVersion"] += 1
        site.refreshes.append(package_id.upper())
        server = self.hosts[site.server]
        records = [r for r in site.dp_records if r["PackageID"] == package_id.upper()]
        for rec in records:
            site.dp_state[(rec["PackageID"], rec["ServerNALPath"].lower())] = 1
        t1 = self.clock.now() + self.delay(self.spec.delays.distmgr)
        t2 = t1 + self.delay(self.spec.delays.distmgr_done)
        t3 = t2 + self.delay(self.spec.delays.distmgr_done)
        dm = logs.DISTMGR

        def updated(t: float) -> None:
            when = self.clock.wall(t)
            version = image["SourceVersion"]

            def stat(msg_id: int, istr: list[str]) -> logs.Line:
                return logs.Line(
                    logs.statmsg(msg_id, server.address, site.code, when, istr, package_id), dm
                )

            lines = [
                logs.Line(f"Start updating the package {package_id}...", dm),
                stat(2376, [package_id]),
                logs.Line(
                    f"The source for package {package_id} has changed or the package "
                    "source needs to be refreshed",
                    dm,
                ),
                logs.Line(f"Successfully created/updated the package {package_id}.", dm),
                stat(2311, [package_id]),
            ]
            for rec in records:
                nal = rec["ServerNALPath"]
                lines += [
                    logs.Line(
                        f"DP Thread: Attempting to add or update package {package_id} on DP {nal}",
                        dm,
                    ),
                    logs.Line(
                        f"Created package transfer job to send package {package_id} to "
                        f"distribution point {nal}.",
                        dm,
                    ),
                ]
            lines += [
                logs.Line(
                    f"All DP threads have completed for package {package_id} processing thread.", dm
                ),
                logs.Line(
                    f"CDistributionSrcSQL::UpdateAvailableVersion PackageID={package_id}, "
                    f"Version={version}, Status=2301",
                    dm,
                ),
            ]
            logs.append(server, "distmgr.log", lines, when)

        def processed(t: float) -> None:
            when = self.clock.wall(t)
            msg = logs.statmsg(
                2301, server.address, site.code, when, [image["Name"], package_id], package_id
            )
            logs.append(server, "distmgr.log", [logs.Line(msg, dm)], when)
            image["LastRefreshTime"] = dmtf(when)
            self._refill_image(site, server, image)

        def delivered(_t: float) -> None:
            for rec in records:
                dp = self.host_by_server(rec["ServerNALPath"].split("\\")[2])
                fault = None
                if dp is not None:
                    fault = self.faults.take(
                        dp.name, ["distribution-failure"], package_id=package_id
                    )
                state = 3 if fault is not None else 0
                site.dp_state[(rec["PackageID"], rec["ServerNALPath"].lower())] = state
                if state == 0:
                    site.dp_version[(rec["PackageID"], rec["ServerNALPath"].lower())] = int(
                        image["SourceVersion"]
                    )

        self.schedule.at(t1, updated, f"distmgr:{package_id}")
        self.schedule.at(t2, processed, f"distmgr:{package_id}")
        self.schedule.at(t3, delivered, f"pkgxfer:{package_id}")

    def _refill_image(self, site: SiteState, server: SimHost, image: dict[str, object]) -> None:
        """An updated boot image takes its SMS\\bin files from the site server's OSD\\bin."""
        files = image.get("Files")
        if not isinstance(files, dict):
            return
        for inside in list(files):
            rel = str(inside)
            if not rel.lower().startswith("sms\\bin\\"):
                continue
            source = server.fs.get(site.install_dir.rstrip("\\") + "\\OSD\\" + rel[4:])
            if source is not None and source.version:
                files[inside] = source.version

    # -- causality: restarts -----------------------------------------------------------------

    def restart(self, host: SimHost, grace: float) -> None:
        """shutdown.exe /r: the host answers for `grace` seconds more, then goes down."""
        g = self.spec.delays.shutdown_grace
        at = self.clock.now() + self.delay(grace if g is None else g)
        self.schedule.at(
            at,
            lambda t: self.go_down(host, self.spec.delays.restart_down, t),
            f"restart:{host.name}",
        )

    def go_down(self, host: SimHost, down_seconds: float, t: float | None = None) -> None:
        """The host stops answering now and boots again `down_seconds` (at speed 1) later."""
        t = self.clock.now() if t is None else t
        host.up = False
        self.record_change(host.name, "host went down (restart)", down_seconds=down_seconds)
        for callback in list(self.on_host_down):
            callback(host.name)
        self.schedule.at(
            t + self.delay(down_seconds), lambda t2: self._boot(host, t2), f"boot:{host.name}"
        )

    def _boot(self, host: SimHost, t: float) -> None:
        host.up = True
        host.boot_time = self.clock.wall(t)
        self.record_change(host.name, "host booted")
        host.clear_reboot_marks()
        dp = self.dps.get(host.name)
        if dp is not None and dp.wds_removal_pending:
            dp.wds_removal_pending = False
            dp.history.append("WDS removal completed by restart")
        if dp is not None:
            self._refresh_dp(host)

    # -- WDS ---------------------------------------------------------------------------------

    def remove_features(self, host: SimHost, names: list[str]) -> tuple[bool, bool]:
        """(changed, restart needed). Removing WDS removes its role services."""
        targets = set(names)
        if "WDS" in targets:
            targets |= {"WDS-Deployment", "WDS-Transport"}
        present = host.features & targets
        if not present:
            return False, False
        host.features -= targets
        self.record_change(host.name, "Windows features removed", features=sorted(present))
        dp = self.dps.get(host.name)
        restart = bool(host.spec.dp and host.spec.dp.wds_uninstall_reboot)
        if dp is not None:
            held = [r for r, s in dp.roles.items() if s.installed or s.busy]
            dp.wds_removal = "dirty" if held else "clean"
            dp.wds_removal_pending = restart
            dp.history.append(
                f"WDS removed ({dp.wds_removal}{', restart pending' if restart else ''})"
            )
        if restart:
            host.request_reboot("cbs")
        if dp is not None:
            self._refresh_dp(host)
        return True, restart

    def add_features(self, host: SimHost, names: list[str]) -> tuple[bool, bool, str | None]:
        """(changed, restart needed, error). Fails while a WDS removal waits for its restart."""
        dp = self.dps.get(host.name)
        if dp is not None and dp.wds_removal_pending:
            return (
                False,
                False,
                "A restart is pending from an earlier removal of Windows Deployment Services.",
            )
        new = {n for n in names if n not in host.features}
        if not new:
            return False, False, None
        host.features |= new
        if new & {"WDS-Deployment", "WDS-Transport"}:
            host.features.add("WDS")
        self.record_change(host.name, "Windows features added", features=sorted(new))
        restart = bool(host.spec.dp and host.spec.dp.wds_install_reboot)
        if restart:
            host.request_reboot("cbs")
        if dp is not None:
            both = {"WDS-Deployment", "WDS-Transport"} <= host.features
            if dp.fault == "wds" and dp.wds_removal == "clean" and both:
                dp.fault = "none"
                dp.history.append("wds fault cleared: clean removal, restart, both role services")
            dp.wds_removal = None
            self._refresh_dp(host)
        return True, restart, None


_MCS_PROPS = [
    {"PropertyName": "Port Range Start", "Value": 64001, "Value1": "", "Value2": ""},
    {"PropertyName": "Port Range End", "Value": 65000, "Value1": "", "Value2": ""},
    {
        "PropertyName": "Multicast Address Range Start",
        "Value": 0,
        "Value1": "239.0.0.1",
        "Value2": "",
    },
]
# The PXE service point's settings as the 2007 SDK creates them (cc144681; BindPolicy cc142960,
# IsActive cc144541, ResponseDelay cc146290); BindExcept is an embedded property list.
_PXE_PROPS = [
    {"PropertyName": "IsActive", "Value": 1, "Value1": "", "Value2": ""},
    {"PropertyName": "BindPolicy", "Value": 1, "Value1": "", "Value2": ""},
    {"PropertyName": "ResponseDelay", "Value": 4, "Value1": "", "Value2": ""},
]
_PXE_LISTS = [{"PropertyListName": "BindExcept", "Values": ["00:15:5D:01:02:03"]}]


def _nal_name(host: SimHost, version: str) -> str:
    """The name a site registered its site system by, as its NAL paths show it: the lab file's
    `dp.nal_name`; else the NetBIOS name on 2007 and the FQDN later (SMS-PROVIDER.md 3.2: 2007
    examples use NetBIOS names, 2012+ examples FQDNs; no rule is documented)."""
    dp = host.spec.dp
    if dp is not None and dp.nal_name:
        return dp.nal_name
    return host.address.split(".")[0] if version == "2007" else host.address


def _hours(n: float) -> timedelta:
    return timedelta(hours=n)


def _resource_id(site: SiteState) -> int:
    """The next client's SMS_R_System.ResourceId on the site."""
    return 16777216 + 4 * len(site.clients) + 4


def _version_text(version: str) -> str:
    """A FileVersion text as software inventory records it: 5.0.7958.1104 -> 5.00.7958.1104."""
    parts = version.split(".")
    if len(parts) == 4 and len(parts[1]) == 1:
        parts[1] = "0" + parts[1]
    return ".".join(parts)


def _generated_clients(spec: LabFile) -> dict[str, HostSpec]:
    """Hosts of each `clients:` generator: versions cycle by weight, WinRM missing every n-th."""
    out: dict[str, HostSpec] = {}
    for gen in spec.clients:
        cycle: list[str | None] = [
            v for v, weight in gen.tscore_versions.items() for _ in range(weight)
        ] or [None]
        states: list[BaselineState | None] = [
            None if s == "none" else s
            for s, weight in gen.baseline_states.items()
            for _ in range(weight)
        ] or [None]
        for i, name in enumerate(_generated_names(gen), start=1):
            second = _second_record(gen, i)
            out[name] = HostSpec(
                site=gen.site,
                roles=["client"],
                os=gen.os,
                winrm=not (gen.no_winrm_every and i % gen.no_winrm_every == 0),
                client=ClientSpec(
                    tscore_version=cycle[(i - 1) % len(cycle)],
                    client_version=gen.client_version,
                    inventoried=not (
                        gen.not_inventoried_every and i % gen.not_inventoried_every == 0
                    ),
                    second_record=second,
                    second_record_version=gen.second_record_version
                    if second == "current"
                    else gen.obsolete_record_version,
                    baseline_state=states[(i - 1) % len(states)],
                ),
            )
    return out


def _generated_names(gen: ClientGenerator) -> list[str]:
    """The names of a generator's clients, in order: the prefix and a zero-padded number."""
    width = max(3, len(str(gen.count)))
    return [f"{gen.prefix}{i:0{width}d}" for i in range(1, gen.count + 1)]


def _second_record(gen: ClientGenerator, i: int) -> Literal["current", "obsolete"] | None:
    """Whether the i-th generated client has a second SMS_R_System record, and which."""
    if gen.second_record_every and i % gen.second_record_every == 0:
        return "current"
    if gen.obsolete_record_every and i % gen.obsolete_record_every == 0:
        return "obsolete"
    return None
