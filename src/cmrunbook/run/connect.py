"""From an inventory host to a WinRM connection: endpoint, credentials, and the host object.

The inventory never holds a password; its ``credentials`` block only says where one comes from.
Every command that reaches hosts (`diagnose --host`, the executor) builds its connections here,
so that the lookup order and its error messages are the same everywhere:

1. the environment variables the inventory names (``CMRUNBOOK_USER`` / ``CMRUNBOOK_PASSWORD``
   by default): what a scheduled job uses;
2. the OS keyring, if the ``keyring`` package is installed, under the inventory's
   ``keyring_service`` and the user name from the inventory or the user variable;
3. an interactive prompt, only when stdin is a terminal and the command is not
   ``--non-interactive``.

The configured ``source`` is tried first, then the others in this order. No message here ever
contains a password; `Credentials` keeps it out of its ``repr``.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping

from cmrunbook.errors import Interrupted, UsageError
from cmrunbook.load.inventory import HostView, Inventory, WinRM, default_codepage
from cmrunbook.remote.winrm.host import Credentials, Endpoint, WinRMHost

__all__ = ["credentials_for", "endpoint_for", "open_host"]

Prompt = Callable[[str], str]


def endpoint_for(host: HostView, inv: Inventory) -> Endpoint:
    """The host's WinRM endpoint: inventory defaults overlaid with the host's own settings."""
    return _endpoint(host, _winrm(host, inv))


def _winrm(host: HostView, inv: Inventory) -> WinRM:
    """The host's merged WinRM settings; a host marked `winrm: false` is refused with the why."""
    if not host.has_winrm:
        raise UsageError(
            f"host {host.name} has no WinRM (winrm: false in {inv.path}); "
            "read its logs on the machine or through the site server"
        )
    return host.winrm(inv)


def _endpoint(host: HostView, w: WinRM) -> Endpoint:
    """The endpoint of merged settings (HostView.winrm), which leave only address unset."""
    return Endpoint(
        host=host.name,
        address=w.address or host.address,
        port=int(w.port),  # type: ignore[arg-type]
        scheme=str(w.scheme),
        path=str(w.path),
        auth=str(w.auth),
        cert_validation=bool(w.cert_validation),
        ca_bundle=w.ca_bundle,
        allow_unencrypted=bool(w.allow_unencrypted),
    )


def credentials_for(
    inv: Inventory,
    *,
    interactive: bool = True,
    env: Mapping[str, str] | None = None,
    prompt: Prompt | None = None,
    ask_user: Prompt | None = None,
    keyring_get: Callable[[str, str], str | None] | None = None,
    tty: bool | None = None,
) -> Credentials:
    """The WinRM credentials for an inventory's hosts, from the first source that has them.

    The keyword arguments exist for tests (and for a caller with its own prompt); by default the
    real environment, ``keyring`` and ``getpass`` are used.
    """
    spec = inv.file.credentials
    env = os.environ if env is None else env
    tty = sys.stdin.isatty() if tty is None else tty
    order = [spec.source, *[s for s in ("env", "keyring", "prompt") if s != spec.source]]
    username = env.get(spec.username_env) or spec.username
    tried: list[str] = []
    for source in order:
        if source == "env":
            password = env.get(spec.password_env)
            if username and password:
                return Credentials(username, password)
            tried.append(f"environment ({spec.username_env}, {spec.password_env}) not set")
        elif source == "keyring":
            get = keyring_get or _keyring_getter()
            if get is None:
                tried.append("keyring not installed (pip install keyring)")
            elif not username:
                tried.append(
                    f"keyring needs a user name ({spec.username_env} or credentials.username)"
                )
            else:
                password = _keyring_lookup(get, spec.keyring_service, username)
                if password:
                    return Credentials(username, password)
                tried.append(
                    f"keyring has no password for {username} in service {spec.keyring_service!r}"
                )
        elif source == "prompt":
            if not interactive:
                tried.append("no prompt (--non-interactive)")
            elif not tty:
                tried.append("no prompt (stdin is not a terminal)")
            else:
                try:
                    user = username or (ask_user or input)("WinRM user name: ").strip()
                    password = (prompt or getpass.getpass)(f"WinRM password for {user}: ")
                except KeyboardInterrupt:
                    why = "interrupted at the credentials prompt; nothing was changed"
                    raise Interrupted(why) from None
                if user and password:
                    return Credentials(user, password)
                tried.append("prompt: no user name or password given")
    raise UsageError("no WinRM credentials: " + "; ".join(tried))


def open_host(host: HostView, inv: Inventory, credentials: Credentials) -> WinRMHost:
    """A WinRM host object with the inventory's timeouts; it connects on its first run."""
    w = _winrm(host, inv)
    return WinRMHost(
        _endpoint(host, w),
        credentials,
        operation_timeout=float(w.operation_timeout),  # type: ignore[arg-type]
        read_timeout=float(w.read_timeout),  # type: ignore[arg-type]
        codepage=w.codepage or default_codepage(host.os.version),
        max_reply=int(w.max_reply_mb) * 2**20,  # type: ignore[arg-type]
    )


def _keyring_getter() -> Callable[[str, str], str | None] | None:
    try:
        import keyring  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return keyring.get_password


def _keyring_lookup(
    get: Callable[[str, str], str | None], service: str, username: str
) -> str | None:
    """A keyring lookup that never fails the run: a locked or absent backend means 'not there'."""
    try:
        return get(service, username)
    except Exception:  # keyring backends raise their own error types
        return None
