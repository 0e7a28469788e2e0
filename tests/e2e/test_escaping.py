"""Nothing from a host or an inventory reaches a terminal or a report raw (attack 4g, 1f).

The hostile bytes come from the host side honestly: a lab client whose ConfigMgr client version
(read over the sealed WinRM channel) carries an OSC title, an erase-line, a carriage return and
a colour sequence that would paint a fake "OK" line; and an inventory whose host name and
address carry HTML, a table pipe and a link.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import Lab, custom_lab_file
from helpers_engine import run_cli

HOST = "xp-wks002"
#: ESC ] 0 ; title BEL, ESC [ 2K, CR, ESC [ 32m, ESC [ 8m (hidden), a bidi override, a C1 CSI.
HOSTILE = (
    "5.00.7958.1203\x1b]0;PWNED-TITLE\x07\x1b[2K\r\x1b[32mxp-fleet001 OK: all hosts compliant"
    "\x1b[0m\x1b[8m hidden\u202e\x9b2J"
)
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")


def raw_controls(text: str) -> list[str]:
    """Control characters left raw (line ends excepted)."""
    return RAW.findall(text.replace("\r\n", "\n"))


def test_attack_4g_escape_sequences_escaped(make_lab: Callable[..., Lab], tmp_path: Path) -> None:
    def hostile(data: dict[str, Any]) -> None:
        data["hosts"][HOST]["client"]["client_version"] = HOSTILE

    lab = make_lab(lab_file=custom_lab_file(tmp_path, hostile))
    res = lab.cli("check", "client-hotfix", "--hosts", HOST, "--non-interactive")
    assert res.returncode == 0, res.stdout + res.stderr  # xp-wks002 has the update
    assert "PWNED-TITLE" in res.stdout  # the host's text is shown ...
    assert "\\x1b]0;PWNED-TITLE\\x07\\x1b[2K\\x0d\\x1b[32m" in res.stdout  # ... as text
    assert raw_controls(res.stdout + res.stderr) == []
    (run,) = lab.run_dirs()
    files = ("summary.txt", "cmrunbook.log", "report.html", "junit.xml")
    for name in files:
        text = (run / name).read_text(encoding="utf-8")
        assert "PWNED-TITLE" in text, name
        assert raw_controls(text) == [], name
    summary = (run / "summary.txt").read_text(encoding="utf-8")
    assert "\\x0d\\x1b[32mxp-fleet001 OK" in summary  # the CR does not end the cell early
    ET.parse(run / "junit.xml")  # well-formed XML (raw controls are not XML 1.0)
    # The run record as a Markdown checklist: the same text, escaped.
    md = run_cli(
        "checklist",
        "client-hotfix-check",
        "--from-run",
        str(run),
        "--format",
        "md",
    )
    assert md.returncode == 0, md.stderr
    assert "PWNED-TITLE" in md.stdout and raw_controls(md.stdout) == []


NAME = "cm07-dp01<img src=x onerror=alert(1)>|x](javascript:alert(1))"
ADDRESS = "dp<script>alert(2)</script>|`y`"


def outside_code_blocks(md: str) -> str:
    """The Markdown lines outside fenced code blocks."""
    kept, fence = [], ""
    for line in md.splitlines():
        m = re.match(r"^\s*(`{3,})", line)
        if m and (not fence or m.group(1).startswith(fence)):
            fence = "" if fence else m.group(1)
        elif not fence:
            kept.append(line)
    return "\n".join(kept) + "\n"


def test_attack_1f_markdown_checklist_injection(lab: Lab, tmp_path: Path) -> None:
    data = yaml.safe_load(Path(lab.inventory).read_text(encoding="utf-8"))
    host = data["hosts"].pop("cm07-dp01")
    host["address"] = ADDRESS
    data["hosts"][NAME] = host
    inventory = tmp_path / "html.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    res = run_cli(
        "checklist",
        "multicast",
        "--method",
        "4",
        "--format",
        "md",
        "--hosts",
        "cm07-dp*",
        "--inventory",
        str(inventory),
    )
    assert res.returncode == 0, res.stderr
    md = outside_code_blocks(res.stdout)  # a fenced block (the scripts) shows text as text
    assert "onerror" in md and "javascript" in md  # the name is there, as text
    for markup in ("<img", "<script", "](javascript", "|x]"):
        # Every occurrence is backslash-escaped (or inside a code span, where it is text).
        for m in re.finditer(re.escape(markup), md):
            line = md[md.rfind("\n", 0, m.start()) + 1 : md.find("\n", m.start())]
            escaped = md[m.start() - 1] == "\\" or re.search(r"`[^`]*" + re.escape(markup), line)
            assert escaped, line
    # The hosts table keeps its two cells: no unescaped pipe from the name.
    (row,) = [ln for ln in md.splitlines() if ln.startswith("| Hosts |")]
    assert len(re.findall(r"(?<!\\)\|", row)) == 3, row
