"""The inventory: sites, hosts with their roles, WinRM settings, and where credentials come from.

No credential is ever stored here; `credentials` only names the source (environment variables,
the OS keyring, or an interactive prompt).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cmrunbook.errors import ConfigError, UsageError
from cmrunbook.load.runbook import ConfigMgrVersion, Role, Strict
from cmrunbook.load.sourcemap import SourceMap, collector_paused, load_yaml
from cmrunbook.load.validation import parse

WindowsVersion = Literal[
    "nt4",
    "2000",
    "xp",
    "2003",
    "vista",
    "2008",
    "7",
    "2008r2",
    "8",
    "2012",
    "8.1",
    "2012r2",
    "10",
    "2016",
    "2019",
    "2022",
]
SERVER_WITH_SERVERMANAGERCMD = {"2008"}
SERVER_WITH_ADD_WINDOWSFEATURE = {"2008r2"}


class CredentialSource(Strict):
    """Where the WinRM password comes from. Never the password itself."""

    source: Literal["env", "keyring", "prompt"] = "env"
    username_env: str = "CMRUNBOOK_USER"
    password_env: str = "CMRUNBOOK_PASSWORD"
    username: str | None = Field(None, description="For keyring and prompt sources.")
    keyring_service: str = "cmrunbook"


class WinRM(Strict):
    """How to reach a host's WinRM listener; per-host values override the inventory's defaults."""

    address: str | None = Field(
        None,
        description="Connect here instead of the host's address (which stays the name ConfigMgr "
        "knows the host by, used in its site control file and NAL paths).",
    )
    port: int | None = Field(None, ge=1, le=65535)
    scheme: Literal["http", "https"] | None = None
    auth: Literal["ntlm", "kerberos", "credssp", "basic"] | None = None
    path: str | None = None
    cert_validation: bool | None = None
    ca_bundle: str | None = None
    allow_unencrypted: bool | None = Field(
        None,
        description="Allow Basic over plain http: the password and every message travel in "
        "clear text. Refused without it; warned about on every run.",
    )
    insecure: bool | None = Field(
        None, description="Old name of allow_unencrypted: refused, with the new name."
    )
    operation_timeout: int | None = Field(None, ge=1)
    read_timeout: int | None = Field(None, ge=2)
    max_reply_mb: int | None = Field(
        None, ge=1, description="Largest reply body accepted from a host, in MB (default 64)."
    )
    codepage: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="WinRS shell code page. Default: 437 where the OS predates UTF-8 shells "
        "(xp, 2003, vista, 2008 and older), else 65001.",
    )

    @field_validator("insecure")
    @classmethod
    def _renamed(cls, value: bool | None) -> bool | None:
        """The old key must not silently keep or lose its meaning: say what it is called now."""
        if value is not None:
            raise ValueError(
                "`insecure` is now `allow_unencrypted` (it allows Basic over plain http, "
                "password in clear text); rename the key"
            )
        return value


#: What a host's WinRM settings are when neither the host nor the inventory says. The port is
#: not here: it follows the scheme (5985 for http, 5986 for https) unless one is given.
WINRM_DEFAULTS = WinRM(
    scheme="http",
    auth="ntlm",
    path="/wsman",
    cert_validation=True,
    allow_unencrypted=False,
    operation_timeout=20,
    read_timeout=30,
    max_reply_mb=64,
)

#: Windows versions whose WinRS shells break with code page 65001 (UTF-8): commands return at
#: once with no output. Sources (fidelity F9): WinRb/WinRM #232 ("broken on any windows version
#: prior to 2008R2/win 7 ... older OS's do not know how to UTF-8"), chef/knife-windows PR #400,
#: ansible #21915 (Server 2008 non-R2), WinRb/WinRM #173 (XP), hashicorp/packer #12605 (XP/Vista).
OS_WITHOUT_UTF8_SHELL = {"nt4", "2000", "xp", "2003", "vista", "2008"}


def default_codepage(os_version: str) -> int:
    """The WinRS code page for an OS: 437 (OEM US) where 65001 is not safe, else UTF-8.

    The engine's output is ASCII either way (its JSON writer escapes everything over 0x7E) and
    the script travels as UTF-8 bytes on stdin, which the bootstrap decodes itself.
    """
    return 437 if os_version in OS_WITHOUT_UTF8_SHELL else 65001


class Site(Strict):
    """A ConfigMgr site: its version decides which mechanism each template uses."""

    version: ConfigMgrVersion
    release: str = Field("", description="Service pack / release, e.g. 'SP1 R2', 'SP2', 'CU1'.")
    provider: str = Field(description="Inventory name of the site server hosting the SMS Provider.")
    install_dir: str = r"C:\Program Files\Microsoft Configuration Manager"


class OS(Strict):
    version: WindowsVersion
    arch: Literal["x86", "x64"] = "x64"


class DP(Strict):
    multicast: bool = False
    pxe: bool = False


class Host(Strict):
    """One machine. `winrm: false` marks a host with no WinRM (NT 4.0, most XP clients)."""

    address: str | None = Field(None, description="DNS name or IP; defaults to the host's name.")
    site: str
    roles: list[Role]
    os: OS
    dp: DP | None = None
    winrm: WinRM | bool = True
    groups: list[str] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)


class Group(Strict):
    hosts: list[str] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)


class InventoryFile(Strict):
    """The inventory file's format."""

    credentials: CredentialSource = CredentialSource()
    winrm: WinRM = WinRM()
    vars: dict[str, Any] = Field(default_factory=dict)
    sites: dict[str, Site]
    groups: dict[str, Group] = Field(default_factory=dict)
    hosts: dict[str, Host]

    @model_validator(mode="after")
    def _has_hosts(self) -> InventoryFile:
        if not self.hosts:
            raise ValueError("an inventory needs at least one host")
        return self


class HostView:
    """A host as templates and conditions see it: its own fields plus derived facts."""

    def __init__(self, name: str, host: Host, inv: Inventory) -> None:
        self.name = name
        self.spec = host
        self.address = host.address or name
        self.site_code = host.site
        self.site = inv.file.sites[host.site]
        self.roles = list(host.roles)
        self.os = host.os
        self.multicast = bool(host.dp and host.dp.multicast)
        self.pxe = bool(host.dp and host.dp.pxe)
        self.has_winrm = host.winrm is not False
        self.groups = inv.groups_of(name)
        self.vars = inv.vars_for(name)
        self._context: dict[str, Any] | None = None

    @property
    def is_site_server(self) -> bool:
        return "site_server" in self.roles

    @property
    def is_dp(self) -> bool:
        return "distribution_point" in self.roles

    @property
    def is_client(self) -> bool:
        return "client" in self.roles

    @property
    def feature_tool(self) -> str:
        """Which Windows feature mechanism this OS has: the templates branch on it."""
        if self.os.version in SERVER_WITH_SERVERMANAGERCMD:
            return "servermanagercmd"
        if self.os.version in SERVER_WITH_ADD_WINDOWSFEATURE:
            return "add-windowsfeature"
        if self.os.version == "2003":
            return "sysocmgr"
        return "install-windowsfeature"

    def winrm(self, inv: Inventory) -> WinRM:
        """Inventory defaults overlaid with this host's own WinRM settings; only `address` and
        `ca_bundle` may be left unset."""
        merged = WINRM_DEFAULTS.model_dump()
        merged.update({k: v for k, v in inv.file.winrm.model_dump().items() if v is not None})
        if isinstance(self.spec.winrm, WinRM):
            merged.update({k: v for k, v in self.spec.winrm.model_dump().items() if v is not None})
        if merged["port"] is None:
            merged["port"] = 5986 if merged["scheme"] == "https" else 5985
        return WinRM(**merged)

    @property
    def context(self) -> Mapping[str, Any]:
        """as_context(), made once and shared: for readers only (a plan's conditions read it
        for every runbook and every host)."""
        if self._context is None:
            self._context = self.as_context()
        return self._context

    def as_context(self) -> dict[str, Any]:
        """Plain values for Jinja2: every field a template may read, nothing else."""
        return {
            "name": self.name,
            "address": self.address,
            "site_code": self.site_code,
            "configmgr": self.site.version,
            "release": self.site.release,
            "install_dir": self.site.install_dir,
            "roles": self.roles,
            "os": self.os.version,
            "arch": self.os.arch,
            "multicast": self.multicast,
            "pxe": self.pxe,
            "winrm": self.has_winrm,
            "groups": self.groups,
            "feature_tool": self.feature_tool,
            "is_site_server": self.is_site_server,
            "is_dp": self.is_dp,
            "is_client": self.is_client,
        }


class Inventory:
    """A loaded, cross-checked inventory."""

    def __init__(self, file: InventoryFile, path: str, smap: SourceMap) -> None:
        self.file = file
        self.path = path
        self.smap = smap
        # Which groups list each host, indexed once: scanning every group's host list per host
        # made loading quadratic (10,000 hosts in 100 fleet groups: about 3 s instead of 0.1 s).
        self._listed_in: dict[str, set[str]] = {}
        for group, spec in file.groups.items():
            for member in spec.hosts:
                self._listed_in.setdefault(member, set()).add(group)
        self.hosts = {name: HostView(name, h, self) for name, h in file.hosts.items()}

    def groups_of(self, name: str) -> list[str]:
        spec = self.file.hosts[name]
        return sorted(set(spec.groups) | self._listed_in.get(name, set()))

    def var_layers(self, name: str) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        """Where a host's vars come from, lowest precedence first, each with its path in the file:
        the inventory's vars, then each group's, then the host's own (the later wins)."""
        layers: list[tuple[tuple[str, ...], dict[str, Any]]] = [(("vars",), self.file.vars)]
        layers += [(("groups", g, "vars"), self.file.groups[g].vars) for g in self.groups_of(name)]
        layers.append((("hosts", name, "vars"), self.file.hosts[name].vars))
        return layers

    def vars_for(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _, layer in self.var_layers(name):
            out.update(layer)
        return out

    def var_path(self, host: str, var: str) -> tuple[str, ...]:
        """Where in the file the value of `var` that `host` sees is written (for error lines)."""
        for path, layer in reversed(self.var_layers(host)):
            if var in layer:
                return (*path, var)
        return ("vars", var)

    def provider_of(self, host: HostView) -> HostView:
        return self.hosts[self.file.sites[host.site_code].provider]

    def select(self, patterns: str | None) -> list[HostView]:
        """Hosts matching a comma-separated list of name globs, roles, `group:NAME` or `site:CODE`.

        A leading `!` excludes. No pattern means every host.
        """
        hosts = list(self.hosts.values())
        if not patterns:
            return hosts
        include: list[str] = []
        exclude: list[str] = []
        for raw in (p.strip() for p in patterns.split(",")):
            if raw:
                (exclude if raw.startswith("!") else include).append(raw.lstrip("!"))

        def matches(h: HostView, pat: str) -> bool:
            if pat.startswith("group:"):
                return pat[6:] in h.groups
            if pat.startswith("site:"):
                return h.site_code == pat[5:]
            if pat.startswith("role:"):
                return pat[5:] in h.roles
            return fnmatch.fnmatchcase(h.name, pat) or pat in h.roles or pat in h.groups

        chosen = [h for h in hosts if not include or any(matches(h, p) for p in include)]
        chosen = [h for h in chosen if not any(matches(h, p) for p in exclude)]
        if not chosen:
            raise UsageError(f"--hosts {patterns!r} matches no host in {self.path}")
        return chosen


def load_inventory(path: Path) -> Inventory:
    """Load and cross-check an inventory, reporting every problem with its file:line:column."""
    # 10,000 hosts are 100,000 new values: paused once for YAML, validation and host views, so
    # that the collector's one deferred pass over them comes once, at the end.
    with collector_paused():
        return _load_inventory(path)


def _load_inventory(path: Path) -> Inventory:
    """load_inventory's work, with the collector paused."""
    data, smap = load_yaml(path)
    inv_file = parse(InventoryFile, data, smap)
    problems = []
    for code, site in inv_file.sites.items():
        prov = inv_file.hosts.get(site.provider)
        if prov is None:
            problems.append(
                smap.problem(
                    ("sites", code, "provider"), f"provider '{site.provider}' is not a host"
                )
            )
        elif "site_server" not in prov.roles:
            problems.append(
                smap.problem(
                    ("sites", code, "provider"),
                    f"provider '{site.provider}' must have the role site_server",
                )
            )
    for name, host in inv_file.hosts.items():
        if host.site not in inv_file.sites:
            known = ", ".join(sorted(inv_file.sites))
            problems.append(
                smap.problem(("hosts", name, "site"), f"unknown site '{host.site}'; known: {known}")
            )
        if host.dp and "distribution_point" not in host.roles:
            problems.append(
                smap.problem(("hosts", name, "dp"), "dp settings need the role distribution_point")
            )
        problems.extend(
            smap.problem(("hosts", name, "groups"), f"unknown group '{g}'")
            for g in host.groups
            if g not in inv_file.groups
        )
    for g, grp in inv_file.groups.items():
        problems.extend(
            smap.problem(("groups", g, "hosts", i), f"group '{g}' names unknown host '{h}'")
            for i, h in enumerate(grp.hosts)
            if h not in inv_file.hosts
        )
    if problems:
        raise ConfigError(problems)
    return Inventory(inv_file, str(path), smap)


def insecure_warnings(inv: Inventory, names: list[str]) -> list[str]:
    """One line per insecure setting the named hosts use, naming the hosts; [] when none.

    Printed on every run and dry run and kept in the journal and report.json (attack 6f, 6g):
    a setting that lets anyone on the path read the password or pose as the host must not
    pass silently, however long ago someone chose it.
    """
    found: dict[str, list[str]] = {}
    for name in names:
        host = inv.hosts[name]
        if not host.has_winrm:
            continue
        w = host.winrm(inv)
        if w.scheme == "https" and not w.cert_validation:
            found.setdefault(
                "cert_validation: false: the host's TLS certificate is not checked, so anyone on "
                "the path can pose as the host and receive the login",
                [],
            ).append(name)
        if w.auth == "basic" and w.scheme == "http":
            found.setdefault(
                "Basic over plain http (allow_unencrypted: true): the password and every "
                "message travel in clear text",
                [],
            ).append(name)
        elif w.auth == "basic":
            found.setdefault(
                "auth: basic: the password itself goes to the host (base64), protected only by TLS",
                [],
            ).append(name)
    return [f"insecure: {what} ({', '.join(hosts)})" for what, hosts in found.items()]
