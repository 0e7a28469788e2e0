"""`invoke schedule`: one --every in three schedulers' spellings, credentials only by reference."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers_engine import run_cli

from cmrunbook.cli import scheduling as sched
from cmrunbook.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).with_name("invoke")
NS = {"t": sched.TASK_NS}
SECRET = "S3cret-Pa55!"


@pytest.mark.parametrize(
    ("every", "on_calendar", "cron"),
    [
        ("15m", "*-*-* *:00/15:00", "*/15 * * * *"),
        ("5min", "*-*-* *:00/5:00", "*/5 * * * *"),
        ("1h", "*-*-* *:00:00", "0 * * * *"),
        ("hourly", "*-*-* *:00:00", "0 * * * *"),
        ("6h", "*-*-* 00/6:00:00", "0 */6 * * *"),
        ("daily", "*-*-* 00:00:00", "0 0 * * *"),
        ("daily@02:30", "*-*-* 02:30:00", "30 2 * * *"),
        ("weekly", "Mon *-*-* 00:00:00", "0 0 * * 1"),
        ("weekly@sun 03:00", "Sun *-*-* 03:00:00", "0 3 * * 0"),
        ("weekly@Friday@22:15", "Fri *-*-* 22:15:00", "15 22 * * 5"),
    ],
)
def test_every_forms(every: str, on_calendar: str, cron: str) -> None:
    parsed = sched.parse_every(every)
    assert parsed.on_calendar() == on_calendar
    assert parsed.cron() == cron
    analyze = shutil.which("systemd-analyze")
    if analyze:
        done = subprocess.run([analyze, "calendar", on_calendar], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("every", "says"),
    [
        ("7m", "minutes must divide an hour"),
        ("5h", "hours must divide a day"),
        ("daily@25:00", "must be HH:MM"),
        ("weekly@someday 03:00", "unknown day"),
        ("fortnightly", "not understood"),
        ("", "not understood"),
    ],
)
def test_bad_every(every: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        sched.parse_every(every)


def job(tmp_path: Path, **kw: str) -> sched.Job:
    args: dict[str, str] = {
        "every": "daily@02:30",
        "inventory": "inventory/example.yaml",
        "hosts": "cm07-dp01",
        "method": "auto",
        "env_file": str(tmp_path / "creds.env"),
    }
    args.update(kw)
    return sched.Job.build(root=ROOT, runbook="multicast", **args)  # type: ignore[arg-type]


def test_systemd_units(tmp_path: Path) -> None:
    units = sched.systemd_units(job(tmp_path))
    service, timer = (
        units["cmrunbook-remediate-multicast.service"],
        units["cmrunbook-remediate-multicast.timer"],
    )
    assert f"EnvironmentFile={tmp_path / 'creds.env'}" in service
    assert f"WorkingDirectory={ROOT}" in service
    exec_start = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.startswith(f"ExecStart={INVOKE} remediate multicast --non-interactive")
    assert f"--reports {ROOT / 'reports'}" in exec_start
    assert f"--inventory {ROOT / 'inventory' / 'example.yaml'}" in exec_start
    assert "--hosts cm07-dp01 --method auto" in exec_start
    assert "OnCalendar=*-*-* 02:30:00" in timer
    assert "WantedBy=timers.target" in timer


def test_systemd_quoting_of_specifiers_and_spaces() -> None:
    assert sched.systemd_quote("a b") == '"a b"'
    assert sched.systemd_quote("100%") == "100%%"
    assert sched.systemd_quote("$HOME") == "$$HOME"


def test_systemd_install_writes_units_and_prints_enable(tmp_path: Path) -> None:
    out = io.StringIO()
    written = sched.emit(
        job(tmp_path),
        "systemd",
        install=True,
        unit_dir=str(tmp_path / "u"),
        out=out,
        err=io.StringIO(),
    )
    assert sorted(p.name for p in written) == [
        "cmrunbook-remediate-multicast.service",
        "cmrunbook-remediate-multicast.timer",
    ]
    assert "systemctl --user enable --now cmrunbook-remediate-multicast.timer" in out.getvalue()
    assert "chmod 600" in out.getvalue()


def test_cron_line_sources_env_and_escapes_percent(tmp_path: Path) -> None:
    line = sched.cron_line(job(tmp_path, every="15m", hosts="100%"))
    assert line.startswith("*/15 * * * * set -a && . ")
    assert f"cd {ROOT} &&" in line
    assert "100\\%" in line and "100%" not in line.replace("100\\%", "")
    assert line.endswith("# cmrunbook:cmrunbook-remediate-multicast")


def fake_crontab(tmp_path: Path) -> tuple[str, Path]:
    store = tmp_path / "crontab.txt"
    store.write_text("MAILTO=ops@example.com\n0 1 * * * other-job\n")
    script = tmp_path / "fake-crontab"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-l" ]; then cat {store}; exit 0; fi\n'
        f'if [ "$1" = "-" ]; then cat > {store}; exit 0; fi\n'
        "exit 2\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), store


def test_cron_install_replaces_own_line_and_keeps_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cmd, store = fake_crontab(tmp_path)
    monkeypatch.setenv(sched.CRONTAB_ENV, cmd)
    sched.install_cron(job(tmp_path, every="1h"))
    sched.install_cron(job(tmp_path, every="daily"))
    lines = store.read_text().splitlines()
    assert lines[:2] == ["MAILTO=ops@example.com", "0 1 * * * other-job"]
    assert len(lines) == 3 and lines[2].startswith("0 0 * * * ")


@pytest.mark.parametrize(
    ("every", "check"),
    [
        ("15m", ".//t:CalendarTrigger/t:Repetition/t:Interval"),
        ("daily@02:30", ".//t:CalendarTrigger/t:ScheduleByDay/t:DaysInterval"),
        ("weekly@sun 03:00", ".//t:CalendarTrigger/t:ScheduleByWeek/t:DaysOfWeek/t:Sunday"),
    ],
)
def test_windows_task_xml_is_well_formed(tmp_path: Path, every: str, check: str) -> None:
    xml = sched.task_xml(job(tmp_path, every=every, run_as="CORP\\svc-cmrb"))
    assert xml.startswith('<?xml version="1.0" encoding="UTF-16"?>')
    root = ET.fromstring(xml.split("\n", 1)[1])
    assert root.find(check, NS) is not None
    start = root.find(".//t:StartBoundary", NS)
    assert start is not None and start.text and start.text.startswith("2000-01-01T")
    exe = root.find(".//t:Actions/t:Exec", NS)
    assert exe is not None
    command = exe.find("t:Command", NS)
    arguments = exe.find("t:Arguments", NS)
    assert command is not None and command.text and command.text.endswith("invoke.exe")
    assert arguments is not None and arguments.text
    assert arguments.text.startswith("remediate multicast --non-interactive --reports reports")
    user = root.find(".//t:Principal/t:UserId", NS)
    assert user is not None and user.text == "CORP\\svc-cmrb"


def test_windows_install_writes_utf16(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    (path,) = sched.emit(
        job(tmp_path), "windows", install=True, unit_dir=str(tmp_path), out=out, err=err
    )
    assert path.read_bytes()[:2] == b"\xff\xfe"
    assert "schtasks /Create" in err.getvalue()
    assert out.getvalue() == ""


# -- the command line ---------------------------------------------------------------------------


def run_schedule(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`invoke schedule ARGS` with credentials in the environment and a 0600 credentials file."""
    creds = tmp_path / "creds.env"
    if not creds.exists():
        creds.write_text("CMRUNBOOK_USER=CORP\\svc-cmrb\n", "utf-8")
        creds.chmod(0o600)
    if "--env-file" not in args:
        args = (*args, "--env-file", str(creds))
    env = {
        "CMRUNBOOK_USER": "CORP\\svc-cmrb",
        "CMRUNBOOK_PASSWORD": SECRET,
        sched.CRONTAB_ENV: str(tmp_path / "no-such-crontab"),
    }
    return run_cli("schedule", *args, root=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("fmt", ["systemd", "cron"])
def test_cli_prints_each_format_and_never_a_password(tmp_path: Path, fmt: str) -> None:
    done = run_schedule(tmp_path, "multicast", "--every", "weekly@sun 03:00", "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "remediate multicast --non-interactive" in done.stdout


def test_cli_install_systemd_into_a_unit_dir(tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    done = run_schedule(
        tmp_path, "multicast", "--every", "1h", "--install", "--unit-dir", str(unit_dir)
    )
    assert done.returncode == 0, done.stderr
    assert (unit_dir / "cmrunbook-remediate-multicast.timer").is_file()
    assert "systemctl --user enable --now" in done.stdout
    text = "".join(p.read_text() for p in unit_dir.iterdir())
    assert SECRET not in text + done.stdout + done.stderr


def test_cli_bad_every_is_exit_2(tmp_path: Path) -> None:
    done = run_schedule(tmp_path, "multicast", "--every", "7m")
    assert done.returncode == 2
    assert "error: --every '7m': minutes must divide an hour" in done.stderr


def test_cli_unknown_runbook_is_exit_2(tmp_path: Path) -> None:
    done = run_schedule(tmp_path, "no-such-runbook", "--every", "daily")
    assert done.returncode == 2
    assert "no runbook 'no-such-runbook'" in done.stderr


def test_cli_cron_install_failure_is_exit_2(tmp_path: Path) -> None:
    done = run_schedule(tmp_path, "multicast", "--every", "daily", "--format", "cron", "--install")
    assert done.returncode == 2
    assert "error: cannot run" in done.stderr


# -- attack 1g / 6d: a value cannot add an entry; the crontab child gets no password -----------

INJECTED = {
    "cron": "xp-fleet001\n* * * * * touch /tmp/PWNED_cron #",
    "systemd": "xp-fleet001\nExecStartPre=/bin/touch /tmp/PWNED_systemd",
    "windows": "xp-fleet001\r\n</Arguments><Command>calc.exe</Command>",
}


@pytest.mark.parametrize("fmt", ["cron", "systemd", "windows"])
@pytest.mark.parametrize("option", ["--hosts", "--every", "--run-as"])
def test_attack_1g_schedule_newline_refused(tmp_path: Path, fmt: str, option: str) -> None:
    cmd, store = fake_crontab(tmp_path)
    before = store.read_text()
    units = tmp_path / "units"
    value = INJECTED[fmt] if option != "--every" else "daily@02:30\nExecStartPre=/bin/true"
    args = {"--hosts": "xp-fleet001", "--every": "daily@02:30", "--run-as": "CORP\\svc"}
    args[option] = value
    done = run_cli(
        "schedule",
        "client-hotfix-check",
        "--format",
        fmt,
        "--install",
        "--unit-dir",
        str(units),
        *(a for kv in args.items() for a in kv),
        root=ROOT,
        env={sched.CRONTAB_ENV: cmd},
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: {option} " in done.stderr and "control character" in done.stderr
    assert store.read_text() == before  # the crontab was not touched
    assert not units.exists()


def test_attack_1g_windows_task_refuses_percent(tmp_path: Path) -> None:
    done = run_schedule(
        tmp_path,
        "client-hotfix-check",
        "--every",
        "daily",
        "--format",
        "windows",
        "--hosts",
        "%COMSPEC%",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "would expand the %" in done.stderr


def test_attack_6d_crontab_child_env(tmp_path: Path) -> None:
    cmd, store = fake_crontab(tmp_path)
    seen = tmp_path / "environ.txt"
    recorder = tmp_path / "recording-crontab"
    recorder.write_text(f'#!/bin/sh\nenv >> {seen}\nexec {cmd} "$@"\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    env = {
        "CMRUNBOOK_USER": "CORP\\svc-cmrb",
        "CMRUNBOOK_PASSWORD": SECRET,  # as after `. lab-state/credentials.env`
        "OTHER_PASSWORD": SECRET,  # a variable an inventory's password_env may name
        sched.CRONTAB_ENV: str(recorder),
    }
    creds = tmp_path / "creds.env"
    creds.write_text("CMRUNBOOK_USER=CORP\\svc-cmrb\n", "utf-8")
    creds.chmod(0o600)
    done = run_cli(
        "schedule",
        "client-hotfix-check",
        "--every",
        "daily@02:30",
        "--format",
        "cron",
        "--install",
        "--env-file",
        str(creds),
        root=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = seen.read_text()
    assert "PATH=" in recorded  # the recorder ran, twice (-l and -)
    assert SECRET not in recorded
    assert SECRET not in store.read_text()
    assert "cmrunbook:cmrunbook-check-client-hotfix-check" in store.read_text()


# -- a schedule that works the first night ------------------------------------------------------


def schedule_bytes(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`invoke schedule ARGS` with stdout kept as bytes (the Windows task is UTF-16)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CMRUNBOOK_")}
    full["CMRUNBOOK_ROOT"] = str(ROOT)
    full.update(env or {})
    return subprocess.run(
        [str(INVOKE), "schedule", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_cli_windows_task_is_utf16_xml_on_stdout_alone(tmp_path: Path) -> None:
    done = schedule_bytes(
        ROOT,
        "multicast",
        "--every",
        "weekly@sun 03:00",
        "--format",
        "windows",
        env={"CMRUNBOOK_PASSWORD": SECRET},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout[:2] == b"\xff\xfe"  # the byte order mark of the UTF-16 it declares
    text = done.stdout.decode("utf-16")
    declaration, body = text.split("\n", 1)
    assert declaration == '<?xml version="1.0" encoding="UTF-16"?>'
    root = ET.fromstring(done.stdout)  # the parser reads the bytes by their declaration
    assert root.tag == f"{{{sched.TASK_NS}}}Task"
    assert body.rstrip().endswith("</Task>")  # no comment lines after the task
    exe = root.find(".//t:Actions/t:Exec/t:Arguments", NS)
    assert exe is not None and exe.text
    assert exe.text.startswith("remediate multicast --non-interactive")
    err = done.stderr.decode("utf-8")
    assert "schtasks /Create" in err
    assert "pip install 'cmrunbook[keyring]'" in err  # the extra the Windows path needs
    assert SECRET.encode() not in done.stdout + done.stderr


def test_install_refuses_a_missing_credentials_file_and_says_how_to_create_it(
    tmp_path: Path,
) -> None:
    units = tmp_path / "units"
    missing = tmp_path / "nope" / "creds.env"
    reports = tmp_path / "reports"
    done = schedule_bytes(
        ROOT,
        "client-hotfix-check",
        "--every",
        "daily@02:30",
        "--install",
        "--unit-dir",
        str(units),
        "--env-file",
        str(missing),
        "--reports",
        str(reports),
        "--inventory",
        str(ROOT / "inventory" / "example.yaml"),
    )
    err = done.stderr.decode("utf-8")
    assert done.returncode == 2, err
    assert f"error: credentials file {missing} does not exist" in err
    assert "CMRUNBOOK_USER=... and CMRUNBOOK_PASSWORD=..." in err
    assert f"install -D -m 600 /dev/null {missing}" in err
    assert not units.exists() and not reports.exists()  # nothing written


def test_print_warns_of_a_missing_credentials_file(tmp_path: Path) -> None:
    missing = tmp_path / "creds.env"
    done = schedule_bytes(
        ROOT,
        "client-hotfix-check",
        "--every",
        "daily",
        "--format",
        "cron",
        "--env-file",
        str(missing),
        "--reports",
        str(tmp_path / "r"),
    )
    err = done.stderr.decode("utf-8")
    assert done.returncode == 0, err
    assert f"warning: credentials file {missing} does not exist" in err
    assert "warning: no --inventory: the job uses the project's example inventory" in err


def test_missing_inventory_is_refused_with_how_to_create_it(tmp_path: Path) -> None:
    done = run_schedule(
        tmp_path,
        "client-hotfix-check",
        "--every",
        "daily",
        "--inventory",
        str(tmp_path / "prod.yaml"),
        "--reports",
        str(tmp_path / "r"),
    )
    assert done.returncode == 2, done.stderr
    assert f"inventory {tmp_path / 'prod.yaml'} does not exist" in done.stderr
    assert "create it from" in done.stderr and "example.yaml" in done.stderr
    assert done.stdout == "" and not (tmp_path / "r").exists()


def test_prompt_credentials_are_refused(tmp_path: Path) -> None:
    inv = tmp_path / "prompt.yaml"
    text = (ROOT / "inventory" / "example.yaml").read_text("utf-8")
    inv.write_text(text.replace("  source: env\n", "  source: prompt\n", 1), "utf-8")
    done = run_schedule(
        tmp_path, "client-hotfix-check", "--every", "daily", "--inventory", str(inv)
    )
    assert done.returncode == 2, done.stderr
    assert "credentials come from a prompt, which a scheduled job cannot answer" in done.stderr
    assert done.stdout == ""


def test_reports_folder_is_created_and_user_timer_warns_about_linger(tmp_path: Path) -> None:
    reports = tmp_path / "deep" / "reports"
    done = run_schedule(
        tmp_path,
        "client-hotfix-check",
        "--every",
        "daily",
        "--format",
        "systemd",
        "--reports",
        str(reports),
    )
    assert done.returncode == 0, done.stderr
    assert reports.is_dir()
    assert f"created {reports}" in done.stderr
    assert "sudo loginctl enable-linger" in done.stderr
    cron = run_schedule(
        tmp_path,
        "client-hotfix-check",
        "--every",
        "daily",
        "--format",
        "cron",
        "--reports",
        str(reports),
    )
    assert cron.returncode == 0, cron.stderr
    assert "enable-linger" not in cron.stderr  # cron needs no user manager


def test_system_unit_dir_needs_no_linger() -> None:
    assert sched.user_units("systemd", None)
    assert sched.user_units("systemd", "~/.config/systemd/user")
    assert not sched.user_units("systemd", "/etc/systemd/system")
    assert not sched.user_units("cron", None)


def test_credentials_file_readable_by_others_is_warned(tmp_path: Path) -> None:
    creds = tmp_path / "creds.env"
    creds.write_text("CMRUNBOOK_USER=x\n", "utf-8")
    creds.chmod(0o644)
    done = run_schedule(
        tmp_path,
        "client-hotfix-check",
        "--every",
        "daily",
        "--format",
        "cron",
        "--env-file",
        str(creds),
        "--reports",
        str(tmp_path / "r"),
    )
    assert done.returncode == 0, done.stderr
    assert f"warning: {creds} is readable by others; chmod 600 {creds}" in done.stderr
