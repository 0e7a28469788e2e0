"""Scheduled runs from the jump host: a systemd timer, a cron line, or a Windows scheduled task.

A schedule is one command, `invoke remediate RUNBOOK --non-interactive ...` (or `invoke check`),
run from the project folder with the project's own invoke (or, for an installed tool outside a
project folder, its `cmrunbook` command), so that the job sees the same runbooks, templates and
inventory as the person who scheduled it. The job gets credentials
only from its environment (systemd: ``EnvironmentFile=``, cron: a sourced file) or, on Windows,
from the service account's keyring: no password is ever written into a unit, a crontab or a
task, and none is printed here.

``--every`` is one small language, turned into each scheduler's own spelling:

    15m  30m  (minutes dividing an hour)      -> *:00/15:00       */15 * * * *
    1h  6h  hourly  (hours dividing a day)    -> *-*-* 00/6:00:00  0 */6 * * *
    daily  daily@02:30                        -> *-*-* 02:30:00    30 2 * * *
    weekly  weekly@sun 03:00                  -> Sun *-*-* 03:00:00  0 3 * * 0
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Literal, TextIO

from cmrunbook.errors import UsageError
from cmrunbook.load.inventory import CredentialSource

Format = Literal["systemd", "cron", "windows"]
FORMATS: tuple[Format, ...] = ("systemd", "cron", "windows")
#: Environment variable naming the crontab command (tests point it at a fake).
CRONTAB_ENV = "CMRUNBOOK_CRONTAB"
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
#: The task XML's declared encoding, and the bytes written (with a byte order mark), as Task
#: Scheduler exports tasks.
TASK_ENCODING = "utf-16"
#: The optional dependency the Windows path needs: its credentials are in the account's keyring.
KEYRING_EXTRA = "keyring"

_DAYS = {
    "mon": ("Mon", 1, "Monday"),
    "tue": ("Tue", 2, "Tuesday"),
    "wed": ("Wed", 3, "Wednesday"),
    "thu": ("Thu", 4, "Thursday"),
    "fri": ("Fri", 5, "Friday"),
    "sat": ("Sat", 6, "Saturday"),
    "sun": ("Sun", 0, "Sunday"),
}
_EVERY_HELP = "use 15m, 1h, hourly, daily, daily@02:30, weekly or weekly@sun 03:00"


class InstallError(Exception):
    """Installing the schedule failed (crontab refused it, a folder is not writable)."""


@dataclass(frozen=True)
class Every:
    """A parsed --every: a repetition (minutes/hours) or a calendar time (daily/weekly)."""

    text: str
    minutes: int = 0
    hours: int = 0
    hour: int = 0
    minute: int = 0
    weekday: str | None = None  # key of _DAYS, for weekly

    @property
    def kind(self) -> Literal["minutes", "hours", "daily", "weekly"]:
        if self.minutes:
            return "minutes"
        if self.hours:
            return "hours"
        return "weekly" if self.weekday else "daily"

    def on_calendar(self) -> str:
        """systemd OnCalendar= (see systemd.time(7))."""
        if self.minutes:
            return f"*-*-* *:00/{self.minutes}:00"
        if self.hours:
            return f"*-*-* 00/{self.hours}:00:00" if self.hours > 1 else "*-*-* *:00:00"
        at = f"{self.hour:02d}:{self.minute:02d}:00"
        if self.weekday:
            return f"{_DAYS[self.weekday][0]} *-*-* {at}"
        return f"*-*-* {at}"

    def cron(self) -> str:
        """The five cron time fields."""
        if self.minutes:
            return f"*/{self.minutes} * * * *"
        if self.hours:
            return f"0 */{self.hours} * * *" if self.hours > 1 else "0 * * * *"
        if self.weekday:
            return f"{self.minute} {self.hour} * * {_DAYS[self.weekday][1]}"
        return f"{self.minute} {self.hour} * * *"


def parse_every(text: str) -> Every:
    """Parse --every; a UsageError says what is accepted."""
    raw = " ".join(text.strip().lower().split())
    m = re.fullmatch(r"(\d+)\s*(m|min|mins|minutes?|h|hours?)", raw)
    if m:
        n, unit = int(m.group(1)), m.group(2)[0]
        if unit == "m":
            if n == 60:
                return Every(text, hours=1)
            if n < 1 or 60 % n:
                raise UsageError(
                    f"--every {text!r}: minutes must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, "
                    f"20, 30), so that every scheduler runs at the same times; {_EVERY_HELP}"
                )
            return Every(text, minutes=n)
        if n == 24:
            return Every(text, hour=0, minute=0)
        if n < 1 or 24 % n:
            raise UsageError(
                f"--every {text!r}: hours must divide a day (1, 2, 3, 4, 6, 8, 12); {_EVERY_HELP}"
            )
        return Every(text, hours=n)
    if raw == "hourly":
        return Every(text, hours=1)
    m = re.fullmatch(r"daily(?:\s*@\s*(\S+))?", raw)
    if m:
        hour, minute = _clock(m.group(1) or "00:00", text)
        return Every(text, hour=hour, minute=minute)
    m = re.fullmatch(r"weekly(?:\s*@\s*([a-z]+)?[\s@]*(\d{1,2}:\d{2})?)?", raw)
    if m:
        day = (m.group(1) or "mon")[:3]
        if day not in _DAYS:
            raise UsageError(f"--every {text!r}: unknown day {m.group(1)!r}; use mon..sun")
        hour, minute = _clock(m.group(2) or "00:00", text)
        return Every(text, hour=hour, minute=minute, weekday=day)
    raise UsageError(f"--every {text!r} is not understood; {_EVERY_HELP}")


def _clock(value: str, text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise UsageError(f"--every {text!r}: time {value!r} must be HH:MM (00:00 to 23:59)")
    return int(m.group(1)), int(m.group(2))


def default_format() -> Format:
    return "windows" if os.name == "nt" else "systemd"


def job_program(root: Path) -> Path:
    """The running environment's command a job must use (the project's venv, or the tool's).

    `invoke` finds its tasks through tasks.py in the working folder or above, which a project
    folder has; an installed tool run from any other folder has none, so the job runs the
    `cmrunbook` command (the same tasks) instead.
    """
    scripts = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")
    exe = ".exe" if os.name == "nt" else ""
    has_tasks = any((folder / "tasks.py").is_file() for folder in (root, *root.parents))
    return scripts / (f"invoke{exe}" if has_tasks else f"cmrunbook{exe}")


@dataclass(frozen=True)
class Job:
    """One scheduled command and where it runs."""

    name: str
    runbook: str
    every: Every
    root: Path
    argv: tuple[str, ...]
    env_file: Path
    run_as: str | None

    @classmethod
    def build(
        cls,
        *,
        root: Path,
        runbook: str,
        every: str,
        action: str = "remediate",
        inventory: str | None = None,
        hosts: str | None = None,
        method: str | None = None,
        reports: str | None = None,
        env_file: str | None = None,
        run_as: str | None = None,
        name: str | None = None,
        invoke: Path | None = None,
    ) -> Job:
        if action not in ("remediate", "check"):
            raise UsageError(f"--action {action!r}: use remediate or check")
        if method and action != "remediate":
            raise UsageError("--method applies to --action remediate only")
        _refuse_control_characters(
            {
                "runbook": runbook,
                "--every": every,
                "--inventory": inventory,
                "--hosts": hosts,
                "--method": method,
                "--reports": reports,
                "--env-file": env_file,
                "--run-as": run_as,
                "--name": name,
                "the project folder": str(root),
            }
        )
        parsed = parse_every(every)
        root = root.resolve()
        argv = [str(invoke or job_program(root)), action, runbook, "--non-interactive"]
        argv += ["--reports", str(_absolute(reports or "reports", root))]
        if inventory:
            argv += ["--inventory", str(_absolute(inventory, root))]
        if hosts:
            argv += ["--hosts", hosts]
        if method:
            argv += ["--method", method]
        job_name = name or f"cmrunbook-{action}-{runbook}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", job_name):
            raise UsageError(f"--name {job_name!r}: use letters, digits, '.', '_' and '-'")
        env = Path(env_file).expanduser() if env_file else default_env_file()
        return cls(job_name, runbook, parsed, root, tuple(argv), env, run_as)

    @property
    def inventory(self) -> Path | None:
        """The inventory the job names (None: the project's default)."""
        if "--inventory" not in self.argv:
            return None
        return Path(self.argv[self.argv.index("--inventory") + 1])

    @property
    def reports(self) -> Path:
        """The folder the job writes its reports to (and, with cron, its log)."""
        return Path(self.argv[self.argv.index("--reports") + 1])

    @property
    def command(self) -> str:
        """The command as a person would type it (POSIX shell quoting)."""
        return " ".join(shlex.quote(a) for a in self.argv)


#: Characters that end or bend a line in some scheduler's file: C0/C1 controls (newline, CR,
#: ESC, NEL) and the Unicode line and paragraph separators.
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _refuse_control_characters(values: dict[str, str | None]) -> None:
    """A newline in a value would start a new crontab entry or unit directive: no quoting of any
    of the three formats can hold one, so such a value is refused, not quoted."""
    for option, value in values.items():
        m = _LINE_BREAKERS.search(value or "")
        if m:
            raise UsageError(
                f"{option} {value!r} has a control character ({m.group()!r}); "
                "a schedule takes none. Nothing was written."
            )


def _absolute(path: str, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def default_env_file() -> Path:
    return Path("~/.config/cmrunbook/credentials.env").expanduser()


# -- before anything is written: will the job work the first night? ---------------------------

#: systemd's own unit folders: units there belong to the system manager, not a user's.
_SYSTEM_UNIT_DIRS = (Path("/etc/systemd/system"), Path("/usr/lib/systemd/system"))


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use {', '.join(FORMATS)}")


def user_units(fmt: str, unit_dir: str | None) -> bool:
    """Whether the schedule is a `systemctl --user` timer (the default unit folder is)."""
    if fmt != "systemd":
        return False
    folder = Path(unit_dir or "~/.config/systemd/user").expanduser().resolve()
    return not any(folder.is_relative_to(d) for d in _SYSTEM_UNIT_DIRS)


def credentials_howto(job: Job, creds: CredentialSource) -> str:
    """How to create the job's credentials file, with the variables the inventory names."""
    env = shlex.quote(str(job.env_file))
    return (
        f"create it with the lines {creds.username_env}=... and {creds.password_env}=... "
        f"(the variables the inventory names): install -D -m 600 /dev/null {env} && "
        f"editor {env}"
    )


def prepare(
    job: Job,
    fmt: str,
    *,
    install: bool,
    unit_dir: str | None,
    creds: CredentialSource,
    inventory_given: bool,
    err: TextIO,
) -> None:
    """Refuse a schedule that cannot work (UsageError: nothing written), say what else it needs
    (warnings on `err`), and create the reports folder the job and its log write to.

    A job runs with no terminal: credentials that come from a prompt are refused. A systemd or
    cron job reads them from `job.env_file`; systemd refuses to start a unit whose
    EnvironmentFile= is missing and the cron line stops at `. FILE`, so --install needs the file
    to exist, and a print names it. A `--user` timer runs only while its user is logged in unless
    lingering is enabled (loginctl(1); Red Hat, "Enable systemd services": "To enable users to
    start a service at system start and persist over logouts: loginctl enable-linger").
    """
    check_format(fmt)
    if creds.source == "prompt":
        raise UsageError(
            "the inventory's credentials come from a prompt, which a scheduled job cannot answer; "
            "use `credentials: {source: env}` (systemd, cron) or `{source: keyring}` (windows). "
            "Nothing was written."
        )
    if fmt in ("systemd", "cron"):
        if not job.env_file.is_file():
            howto = credentials_howto(job, creds)
            if install:
                raise UsageError(
                    f"credentials file {job.env_file} does not exist; {howto}. Nothing was written."
                )
            print(f"warning: credentials file {job.env_file} does not exist; {howto}", file=err)
        elif job.env_file.stat().st_mode & 0o077:
            print(
                f"warning: {job.env_file} is readable by others; "
                f"chmod 600 {shlex.quote(str(job.env_file))}",
                file=err,
            )
        if creds.source != "env":
            print(
                f"warning: the inventory's credentials come from {creds.source}, not from the "
                f"environment file the job reads",
                file=err,
            )
    elif creds.source != "keyring":
        print(
            "warning: a Windows task reads credentials from the account's keyring; set "
            "`credentials: {source: keyring, username: <winrm user>}` in the inventory",
            file=err,
        )
    if not inventory_given:
        print(
            "warning: no --inventory: the job uses the project's example inventory; give yours",
            file=err,
        )
    if user_units(fmt, unit_dir):
        user = os.environ.get("USER") or "<user>"
        print(
            "warning: a --user timer runs only while its user is logged in; on a jump host "
            f"enable lingering once: sudo loginctl enable-linger {user}",
            file=err,
        )
    if fmt != "windows" or os.name == "nt":
        reports = job.reports
        if not reports.is_dir():
            try:
                reports.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot create the reports folder {reports}: {exc.strerror or exc}"
                ) from exc
            print(f"created {reports} (the job's reports and log)", file=err)


# -- systemd ---------------------------------------------------------------------------------


def systemd_quote(arg: str) -> str:
    """One ExecStart= argument: `%` is a specifier and `$` expands, so both are doubled;
    anything with spaces or quotes is double-quoted with C escapes."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r'[\s"\'\\;]', arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_units(job: Job) -> dict[str, str]:
    """The service and timer unit texts, by file name."""
    exec_start = " ".join(systemd_quote(a) for a in job.argv)
    what = f"{job.argv[1]} {job.runbook}".replace("%", "%%")  # `%` starts a specifier
    every = job.every.text.replace("%", "%%")
    service = f"""[Unit]
Description=cmrunbook: {what} ({every})
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={systemd_quote(str(job.root))}
# WinRM credentials (CMRUNBOOK_USER, CMRUNBOOK_PASSWORD): only in this file, mode 0600.
EnvironmentFile={systemd_quote(str(job.env_file))}
ExecStart={exec_start}
"""
    timer = f"""[Unit]
Description=cmrunbook: {what} every {every}

[Timer]
OnCalendar={job.every.on_calendar()}
Persistent=true
RandomizedDelaySec=30

[Install]
WantedBy=timers.target
"""
    return {f"{job.name}.service": service, f"{job.name}.timer": timer}


def _env_note(job: Job, out: TextIO) -> None:
    print(
        f"# Credentials: create {job.env_file} with the lines CMRUNBOOK_USER=... and\n"
        "# CMRUNBOOK_PASSWORD=... (the variables your inventory names), readable only by\n"
        f"# the account the job runs as: chmod 600 {shlex.quote(str(job.env_file))}.\n"
        "# For a system unit (/etc/systemd/system) use a root-owned 0600 file such as\n"
        "# /etc/cmrunbook/credentials.env.",
        file=out,
    )


# -- cron ------------------------------------------------------------------------------------


def cron_line(job: Job) -> str:
    """One crontab line: source the env file (exported), cd to the project, run, log."""
    log = job.reports / f"{job.name}.cron.log"
    env = shlex.quote(str(job.env_file))
    shell = (
        f"set -a && . {env} && set +a && cd {shlex.quote(str(job.root))} && "
        f"{job.command} >> {shlex.quote(str(log))} 2>&1"
    )
    # In a crontab line an unescaped % ends the command and starts its stdin.
    shell = shell.replace("%", "\\%")
    return f"{job.every.cron()} {shell} # cmrunbook:{job.name}"


def crontab_command() -> list[str]:
    return shlex.split(os.environ.get(CRONTAB_ENV) or "crontab")


#: All that `crontab` needs from the environment. The shell that schedules a job has often
#: sourced the credentials file (CMRUNBOOK_PASSWORD, or whatever variable the inventory names),
#: and a child process must not inherit a password it has no use for.
_CRONTAB_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def crontab_env() -> dict[str, str]:
    """The environment of the `crontab` child: `_CRONTAB_ENV_KEEP` only."""
    return {k: os.environ[k] for k in _CRONTAB_ENV_KEEP if k in os.environ}


def install_cron(job: Job) -> str:
    """Replace this job's line (by its marker) in the user's crontab, keeping every other line."""
    cmd = crontab_command()
    try:
        current = subprocess.run(
            [*cmd, "-l"], capture_output=True, text=True, check=False, env=crontab_env()
        )
    except OSError as exc:
        raise InstallError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from exc
    if current.returncode == 0:
        lines = current.stdout.splitlines()
    elif "no crontab" in (current.stderr or "").lower():
        lines = []
    else:
        raise InstallError(f"{' '.join(cmd)} -l failed: {current.stderr.strip()}")
    marker = f"# cmrunbook:{job.name}"
    kept = [ln for ln in lines if not ln.rstrip().endswith(marker)]
    line = cron_line(job)
    text = "\n".join([*kept, line]) + "\n"
    done = subprocess.run(
        [*cmd, "-"], input=text, capture_output=True, text=True, check=False, env=crontab_env()
    )
    if done.returncode != 0:
        raise InstallError(f"{' '.join(cmd)} - failed: {done.stderr.strip()}")
    return line


# -- Windows Task Scheduler ------------------------------------------------------------------


def task_xml(job: Job) -> str:
    """A Task Scheduler 1.2 task (schtasks /Create /XML): trigger, principal, action."""
    ET.register_namespace("", TASK_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        el = ET.SubElement(parent, f"{{{TASK_NS}}}{tag}")
        if text is not None:
            el.text = text
        return el

    task = ET.Element(f"{{{TASK_NS}}}Task", {"version": "1.2"})
    info = sub(task, "RegistrationInfo")
    sub(info, "Description", f"cmrunbook: {job.argv[1]} {job.runbook} every {job.every.text}")
    sub(info, "URI", f"\\cmrunbook\\{job.name}")
    triggers = sub(task, "Triggers")
    ev = job.every
    start = f"2000-01-01T{ev.hour:02d}:{ev.minute:02d}:00"
    if ev.kind in ("minutes", "hours"):
        trig = sub(triggers, "CalendarTrigger")
        rep = sub(trig, "Repetition")
        sub(rep, "Interval", f"PT{ev.minutes}M" if ev.minutes else f"PT{ev.hours}H")
        sub(rep, "Duration", "P1D")
        sub(rep, "StopAtDurationEnd", "false")
        sub(trig, "StartBoundary", start)
        sub(trig, "Enabled", "true")
        sub(sub(trig, "ScheduleByDay"), "DaysInterval", "1")
    elif ev.kind == "daily":
        trig = sub(triggers, "CalendarTrigger")
        sub(trig, "StartBoundary", start)
        sub(trig, "Enabled", "true")
        sub(sub(trig, "ScheduleByDay"), "DaysInterval", "1")
    else:
        trig = sub(triggers, "CalendarTrigger")
        sub(trig, "StartBoundary", start)
        sub(trig, "Enabled", "true")
        week = sub(trig, "ScheduleByWeek")
        sub(week, "WeeksInterval", "1")
        sub(sub(week, "DaysOfWeek"), _DAYS[ev.weekday or "mon"][2])
    principal = sub(sub(task, "Principals"), "Principal", None)
    principal.set("id", "Author")
    if job.run_as:
        sub(principal, "UserId", job.run_as)
    # Password logon: the password is typed into schtasks (/RP *) once, never stored here.
    sub(principal, "LogonType", "Password")
    sub(principal, "RunLevel", "LeastPrivilege")
    settings = sub(task, "Settings")
    sub(settings, "MultipleInstancesPolicy", "IgnoreNew")
    sub(settings, "StartWhenAvailable", "true")
    sub(settings, "ExecutionTimeLimit", "PT12H")
    sub(settings, "Enabled", "true")
    actions = sub(task, "Actions", None)
    actions.set("Context", "Author")
    exe = sub(actions, "Exec")
    sub(exe, "Command", _windows_invoke(job))
    sub(exe, "Arguments", _windows_args(job))
    sub(exe, "WorkingDirectory", _windows_root(job))
    ET.indent(task, space="  ")
    body = ET.tostring(task, encoding="unicode")
    return f'<?xml version="1.0" encoding="{TASK_ENCODING.upper()}"?>\n' + body + "\n"


#: Written on another system, the task finds the project through this machine variable.
WINDOWS_ROOT = "%CMRUNBOOK_ROOT%"


def _windows_root(job: Job) -> str:
    return str(job.root) if os.name == "nt" else WINDOWS_ROOT


def _windows_invoke(job: Job) -> str:
    if os.name == "nt":
        return job.argv[0]
    return str(PureWindowsPath(WINDOWS_ROOT, ".venv", "Scripts", "invoke.exe"))


def _windows_args(job: Job) -> str:
    """Arguments quoted as CommandLineToArgvW splits them; project paths made relative when the
    XML is written on another system (the task runs in the project folder).

    Task Scheduler expands `%NAME%` in an action's arguments and has no escape for `%`, so a
    value with one is refused rather than left to expand."""
    args = []
    for a in job.argv[1:]:
        if "%" in a:
            raise UsageError(
                f"{a!r}: a Windows scheduled task would expand the % in it; "
                "the task takes no value with %. Nothing was written."
            )
        p = Path(a)
        if os.name != "nt" and p.is_absolute() and p.is_relative_to(job.root):
            a = str(PureWindowsPath(*p.relative_to(job.root).parts))
        args.append(a)
    return subprocess.list2cmdline(args)


# -- output ----------------------------------------------------------------------------------


def emit(
    job: Job,
    fmt: str,
    *,
    install: bool = False,
    unit_dir: str | None = None,
    out: TextIO,
    err: TextIO,
) -> list[Path]:
    """Print (and with `install`, install) the schedule in one format; returns files written.

    The Windows task goes to `out` alone, as bytes in the UTF-16 its declaration names, so that
    `... --format windows > task.xml` is a file schtasks reads; what to do with it goes to `err`.
    """
    check_format(fmt)
    written: list[Path] = []
    if fmt == "systemd":
        units = systemd_units(job)
        if install:
            folder = Path(unit_dir or "~/.config/systemd/user").expanduser()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                for fname, text in units.items():
                    (folder / fname).write_text(text, encoding="utf-8")
                    written.append(folder / fname)
            except OSError as exc:
                raise InstallError(
                    f"cannot write units to {folder}: {exc.strerror or exc}"
                ) from exc
            for path in written:
                print(f"wrote {path}", file=out)
            print("# Enable and start the timer (as the user who owns the units):", file=out)
            print("systemctl --user daemon-reload", file=out)
            print(f"systemctl --user enable --now {job.name}.timer", file=out)
        else:
            for fname, text in units.items():
                print(f"# ---- {fname}", file=out)
                print(text, file=out)
            print(
                "# Install: invoke schedule ... --install, or copy both files to "
                "~/.config/systemd/user/ and run:",
                file=out,
            )
            print(
                "#   systemctl --user daemon-reload && "
                f"systemctl --user enable --now {job.name}.timer",
                file=out,
            )
        _env_note(job, out)
    elif fmt == "cron":
        if install:
            line = install_cron(job)
            print(f"installed in the crontab of this user:\n{line}", file=out)
        else:
            print(cron_line(job), file=out)
            print(
                "# Add with: crontab -e (or invoke schedule ... --format cron --install)", file=out
            )
        _env_note(job, out)
    else:
        xml = task_xml(job)
        if install:
            folder = Path(unit_dir or ".").expanduser()
            path = folder / f"{job.name}.xml"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_text(xml, encoding=TASK_ENCODING)
            except OSError as exc:
                raise InstallError(f"cannot write {path}: {exc.strerror or exc}") from exc
            written.append(path)
            print(f"wrote {path}", file=err)
        else:
            out.flush()
            out.buffer.write(xml.encode(TASK_ENCODING))
            out.buffer.flush()
        user = job.run_as or "DOMAIN\\svc-cmrunbook"
        if os.name != "nt":
            print(
                "# Written off Windows: set the machine variable CMRUNBOOK_ROOT to the project\n"
                "# folder on the jump host (setx /M CMRUNBOOK_ROOT C:\\cmrunbook).",
                file=err,
            )
        print(
            "# Register on the Windows jump host (schtasks asks for the service account's\n"
            "# password and stores it with the task, not in the XML):\n"
            f'#   schtasks /Create /TN "cmrunbook\\{job.name}" /XML {job.name}.xml '
            f"/RU {user} /RP *\n"
            "# The job reads WinRM credentials from that account's keyring: run once as it\n"
            "#   keyring set cmrunbook <winrm user>\n"
            "# and set `credentials: {source: keyring, username: <winrm user>}` in the inventory.\n"
            f"# The keyring needs the {KEYRING_EXTRA!r} extra there: pip install "
            f"'cmrunbook[{KEYRING_EXTRA}]' (or: pipx inject cmrunbook keyring).",
            file=err,
        )
    return written
