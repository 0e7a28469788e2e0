"""Which known failure is in this log, and which runbook fixes it.

The knowledge lives in the runbooks' ``symptoms:`` blocks, never here: this module only reads
logs (through :mod:`cmrunbook.logs.cmtrace`, so every log shape gives the same answer) and matches
each record's message against the signatures. A signature is found when one of its ``any``
patterns matches a record (if it has any), each of its ``all`` patterns matches some record of
the same file and none of its ``none`` patterns matches any. Files are streamed; only the
matching records are kept, a few per pattern, so a 200 MB log costs what one chunk of it costs.

Logs reach an operator through blogs, forums and viewers as often as from the disk: a message
is matched as such a copy renders it (typographic quotes as ASCII ones, HTML entities such as
`&nbsp;` and `&quot;` decoded, Markdown backslash escapes removed; Markdown's `> ` quoting needs
nothing, since no signature is anchored), and a space in a signature matches any run of white
space or none, since copies lose spaces between tokens and lines. The evidence shows the lines
as they are in the file.

One finding per KB: when several runbooks fix the same failure (KB2910552: the hotfix's boot
image update, or the bootsect.exe workaround), the finding names them all.

Exit codes follow grep, so that a scheduled job can alert: 0 nothing known found, 1 a known
failure found, 2 a file could not be read (missing, binary, or a host could not be reached).
"""

from __future__ import annotations

import html
import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, TextIO

from cmrunbook.errors import ConfigError
from cmrunbook.load.project import Project
from cmrunbook.load.runbook import CHECK_SUFFIXES, Runbook, Symptom
from cmrunbook.load.sourcemap import load_yaml
from cmrunbook.load.validation import parse
from cmrunbook.logs.cmtrace import LogFormatError, LogReader, Record
from cmrunbook.text import printable_stream

EXIT_CLEAN, EXIT_FOUND, EXIT_UNREADABLE = 0, 1, 2

#: Matching records kept per pattern: enough to show the failure, bounded for huge logs.
KEEP_PER_PATTERN = 5
#: Evidence lines printed per finding.
SHOW_LINES = 12
#: Characters of a message printed per evidence line.
SHOW_CHARS = 240

_ROLLED = re.compile(r"\.lo_$", re.IGNORECASE)
# ConfigMgr keeps earlier task sequence logs as smsts-20131031-094927.log.
_DATED = re.compile(r"-\d{8}-\d{6}(?=\.log$)", re.IGNORECASE)
#: What joins a known log's name to the rest of a saved copy's name (smsts-PC042.log).
_SEPARATORS = frozenset("-_ .(")


@dataclass(frozen=True)
class Signature:
    """One runbook symptom with its patterns compiled, and the runbook it points to."""

    runbook: Runbook
    symptom: Symptom
    any: tuple[re.Pattern[str], ...]
    all: tuple[re.Pattern[str], ...]
    none: tuple[re.Pattern[str], ...] = ()
    inventory: str | None = None  # the one `diagnose --inventory` was given, for the command

    @property
    def logs(self) -> frozenset[str]:
        return frozenset(name.lower() for name in self.symptom.logs)

    @property
    def kb(self) -> str:
        return self.symptom.kb or self.runbook.source.kb

    @property
    def command(self) -> str | None:
        """The command that fixes it, as README teaches it: `invoke check <name>` for a read-only
        check runbook (`site-hotfix` for site-hotfix-check), else `invoke remediate <runbook>`;
        then the symptom's options and the inventory the diagnosis was given, so that it can be
        copied as it is. None when no runbook fixes it (the symptom gives the KB's `remedy`)."""
        if self.symptom.remedy is not None:
            return None
        words = ["invoke", "remediate", self.runbook.id]
        for suffix in CHECK_SUFFIXES:
            if self.runbook.id.endswith(suffix):
                words = ["invoke", "check", self.runbook.id.removesuffix(suffix)]
        if self.symptom.fix.strip():
            words.append(self.symptom.fix.strip())
        if self.inventory:
            words += ["--inventory", shlex.quote(self.inventory)]
        return " ".join(words)


@dataclass
class Evidence:
    """One matching record, as a person looks it up in the file."""

    line: int
    last_line: int
    when: str
    timestamp: str | None
    component: str | None
    thread: int | None
    type: int
    message: str
    patterns: list[str] = field(default_factory=list)


@dataclass
class Fix:
    """One runbook that fixes a finding, with the command that runs it."""

    runbook: str
    title: str
    symptom: str
    command: str


@dataclass
class Finding:
    """A known failure (one KB) found in one file, and every runbook that fixes it.

    `fixes` is empty when no runbook fixes it; `remedy` then says what the KB prescribes.
    """

    kb: str
    title: str
    cause: str
    fixes: list[Fix]
    remedy: str | None
    evidence: list[Evidence]
    matches: int

    @property
    def runbooks(self) -> list[str]:
        return [f.runbook for f in self.fixes]


@dataclass
class FileReport:
    """What one file gave: its format, how much was read, and what was found or went wrong."""

    name: str
    format: str | None = None
    encoding: str | None = None
    lines: int = 0
    records: int = 0
    known_name: bool = True
    signatures: int = 0
    note: str | None = None
    error: str | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Diagnosis:
    files: list[FileReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(f.error for f in self.files):
            return EXIT_UNREADABLE
        if any(f.findings for f in self.files):
            return EXIT_FOUND
        return EXIT_CLEAN

    def as_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "found": sum(len(f.findings) for f in self.files),
            "warnings": self.warnings,
            "files": [asdict(f) for f in self.files],
        }


# -- signatures ------------------------------------------------------------------------------


def load_signatures(
    catalog: Project, inventory: str | None = None
) -> tuple[list[Signature], list[str]]:
    """Every runbook's symptoms, compiled; and warnings for runbooks that had problems.
    `inventory` goes into the fixing commands.

    A runbook that fails the full check (say a template another change has not added yet) still
    contributes its symptoms when its file parses as a runbook: `diagnose` needs only those, and
    losing a signature because of an unrelated template would hide a known failure.
    """
    loaded, problems = catalog.load_all()
    runbooks = {lr.path.resolve(): lr.runbook for lr in loaded}
    warnings: list[str] = []
    for path in catalog.runbook_paths():
        if path.resolve() in runbooks:
            continue
        mine = [p for p in problems if Path(p.file).name == path.name]
        try:
            data, smap = load_yaml(path, display=str(path))
            runbooks[path.resolve()] = parse(Runbook, data, smap)
            first = f": {mine[0]}" if mine else ""
            warnings.append(
                f"runbook {path.stem} has problems; its symptoms are used anyway{first}"
            )
        except ConfigError as exc:
            first = str(exc.problems[0]) if exc.problems else "invalid"
            warnings.append(
                f"runbook {path.stem} is not readable; its symptoms are skipped: {first}"
            )
    sigs: list[Signature] = []
    for rb in runbooks.values():
        for sym in rb.symptoms:
            try:
                sigs.append(
                    Signature(
                        rb,
                        sym,
                        tuple(compile_signature(p) for p in sym.any),
                        tuple(compile_signature(p) for p in sym.all),
                        tuple(compile_signature(p) for p in sym.none),
                        inventory,
                    )
                )
            except re.error as exc:
                warnings.append(f"runbook {rb.id}, symptom {sym.id}: bad regular expression: {exc}")
    sigs.sort(key=lambda s: (s.runbook.id, s.symptom.id))
    return sigs, warnings


#: What copies of a log put in place of its characters: typographic quotes, no-break spaces.
_AS_TYPED = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00a0": " ",
    }
)
#: Markdown backslash escapes of characters a ConfigMgr log path never has after a backslash
#: (`\<MP>`, `\*lpv...`, `\-----`, `Code\(0x...\)`); `\_` and `\.` are left alone:
#: `C:\_SMSTaskSequence` and `\\.\PhysicalDrive0` are real paths.
_MD_ESCAPE = re.compile(r"\\([<>*`#|()-])")
_BLANKS = re.compile(r"[ \t]+")


def as_rendered(message: str) -> str:
    """The message as the log says it, from a copy of it: what the signatures are matched on."""
    text = html.unescape(message) if "&" in message else message
    text = text.translate(_AS_TYPED)
    if "\\" in text:
        text = _MD_ESCAPE.sub(r"\1", text)
    return _BLANKS.sub(" ", text)


def compile_signature(pattern: str) -> re.Pattern[str]:
    """A signature's regex with its spaces (a literal space, `\\s+`) matching any white space
    or none: copies of a log lose the space between tokens (`failed.Code(...)`) and the line
    break between lines. A space before a quantifier and character classes are kept."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            pair = pattern[i : i + 2]
            if not in_class and pair == "\\s" and pattern[i + 2 : i + 3] == "+":
                out.append("\\s*")
                i += 3
                continue
            out.append(pair)
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # a class that starts with ']'
                out.append("[]")
                i += 2
                continue
        elif ch == " ":
            j = i
            while j < n and pattern[j] == " ":
                j += 1
            if pattern[j : j + 1] not in ("*", "+", "?", "{"):
                out.append("\\s*")
                i = j
                continue
        out.append(ch)
        i += 1
    return re.compile("".join(out), re.MULTILINE)


def log_name(name: str) -> str:
    """The log's canonical base name: `smsts-20131031-094927.log` and `smsts.lo_` are smsts.log."""
    base = PureWindowsPath(name).name if "\\" in name else PurePosixPath(name).name
    base = _ROLLED.sub(".log", base)
    return _DATED.sub("", base).lower()


def named_after(base: str, known: set[str]) -> str:
    """The known log a saved copy is named after: `smsts-PC042.log`, `PC042_smsts.log` and
    `smsts (2).log` are smsts.log; any other name is returned as it is."""
    if base in known:
        return base
    stem = base.rpartition(".")[0] or base
    for log in sorted(known):
        log_stem = log.rpartition(".")[0] or log
        if stem.startswith(log_stem) and stem[len(log_stem) : len(log_stem) + 1] in _SEPARATORS:
            return log
        if stem.endswith(log_stem) and stem[-len(log_stem) - 1 : -len(log_stem)] in _SEPARATORS:
            return log
    return base


# -- matching --------------------------------------------------------------------------------


class _Match:
    """Running state of one signature over one file."""

    def __init__(self, sig: Signature) -> None:
        self.sig = sig
        self.any_hit = not sig.any
        self.all_hits = [0] * len(sig.all)
        self.none_hit = False
        self.kept: dict[int, tuple[Record, set[str]]] = {}
        self.per_pattern: dict[str, int] = {}
        self.count = 0

    def feed(self, rec: Record, text: str) -> None:
        """One record; `text` is its message as matched (see `as_rendered`)."""
        if not self.none_hit and any(pat.search(text) for pat in self.sig.none):
            self.none_hit = True
        hit: set[str] = set()
        for pat in self.sig.any:
            if pat.search(text):
                self.any_hit = True
                hit.add(pat.pattern)
        for i, pat in enumerate(self.sig.all):
            if pat.search(text):
                self.all_hits[i] += 1
                hit.add(pat.pattern)
        if not hit:
            return
        self.count += 1
        keep = False
        for p in hit:
            n = self.per_pattern.get(p, 0)
            if n < KEEP_PER_PATTERN:
                keep = True
            self.per_pattern[p] = n + 1
        if keep:
            self.kept[rec.first_line] = (rec, hit)

    @property
    def found(self) -> bool:
        return self.any_hit and all(self.all_hits) and not self.none_hit


def _evidence(kept: dict[int, tuple[Record, set[str]]]) -> list[Evidence]:
    out = []
    for _, (rec, pats) in sorted(kept.items()):
        ts = rec.timestamp
        out.append(
            Evidence(
                line=rec.first_line,
                last_line=rec.last_line,
                when=rec.when,
                timestamp=ts.isoformat() if ts else None,
                component=rec.component,
                thread=rec.thread,
                type=rec.type,
                message=rec.message,
                patterns=sorted(pats),
            )
        )
    return out


def _findings(found: list[_Match]) -> list[Finding]:
    """One finding per KB, in signature order: its first symptom gives the title and cause,
    each runbook that fixes it is named, and the evidence is the union of the matched lines."""
    by_kb: dict[str, list[_Match]] = {}
    for m in found:
        by_kb.setdefault(m.sig.kb, []).append(m)
    findings = []
    for kb, matches in by_kb.items():
        first = matches[0].sig.symptom
        kept: dict[int, tuple[Record, set[str]]] = {}
        for m in matches:
            for line, (rec, pats) in m.kept.items():
                kept.setdefault(line, (rec, set()))[1].update(pats)
        fixes = []
        for m in matches:
            command = m.sig.command
            if command is not None:
                rb = m.sig.runbook
                fixes.append(Fix(rb.id, rb.title, m.sig.symptom.id, command))
        remedy = next((m.sig.symptom.remedy for m in matches if m.sig.symptom.remedy), None)
        findings.append(
            Finding(
                kb=kb,
                title=first.title,
                cause=" ".join(first.cause.split()),
                fixes=fixes,
                remedy=" ".join(remedy.split()) if remedy else None,
                evidence=_evidence(kept),
                # Records matched by the signature that matched most: the same lines count once.
                matches=max(m.count for m in matches),
            )
        )
    return findings


def diagnose_stream(
    stream: BinaryIO, name: str, signatures: list[Signature], *, note: str | None = None
) -> FileReport:
    """Read one log from a binary stream and match the signatures that apply to its name."""
    report = FileReport(name=name, note=note)
    base = named_after(log_name(name), {log for s in signatures for log in s.logs})
    chosen = [s for s in signatures if base in s.logs]
    if not chosen:
        report.known_name = False
        chosen = list(signatures)
    report.signatures = len(chosen)
    try:
        reader = LogReader(stream, name)
        report.format, report.encoding = reader.format, reader.encoding
        matches = [_Match(s) for s in chosen]
        for rec in reader:
            text = as_rendered(rec.message)
            for m in matches:
                m.feed(rec, text)
    except LogFormatError as exc:
        report.error = f"{exc}"
        return report
    except OSError as exc:
        report.error = f"cannot read: {exc.strerror or exc}"
        return report
    report.lines, report.records = reader.lines, reader.records
    report.findings = _findings([m for m in matches if m.found])
    return report


def diagnose_file(path: Path, signatures: list[Signature]) -> FileReport:
    try:
        f = path.open("rb")
    except OSError as exc:
        return FileReport(name=str(path), error=f"cannot read: {exc.strerror or exc}")
    if path.is_dir():
        f.close()
        return FileReport(name=str(path), error="is a folder, not a log")
    with f:
        return diagnose_stream(f, str(path), signatures)


# -- output ----------------------------------------------------------------------------------

_TYPES = {1: "", 2: "warning", 3: "error"}


def _one_line(text: str, limit: int = SHOW_CHARS) -> str:
    flat = " | ".join(part.strip() for part in text.splitlines() if part.strip()) or text.strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def print_report(diag: Diagnosis, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
    """The human-readable result: per known failure its KB, lines, cause and command. The log
    lines are the host's: shown as text, never as terminal controls."""
    out, err = printable_stream(out), printable_stream(err)
    for w in diag.warnings:
        print(f"warning: {w}", file=err)
    for f in diag.files:
        if f.error:
            print(f"error: {f.name}: {f.error}", file=err)
            continue
        fmt = f"{f.format} format, {f.encoding}"
        header = f"{f.name}: {f.lines} lines, {f.records} records ({fmt})"
        print(header, file=out)
        if f.note:
            print(f"  note: {f.note}", file=out)
        if not f.known_name:
            print(
                f"  note: no runbook symptom names {log_name(f.name)!r}; "
                f"all {f.signatures} signatures were tried",
                file=out,
            )
        if not f.findings:
            print(
                f"  no known failure found ({f.signatures} signature(s) tried on "
                f"{f.records} records)",
                file=out,
            )
            continue
        for fi in f.findings:
            print(f"\n  {fi.kb}  {fi.title}", file=out)
            if fi.fixes:
                named = ", ".join(f"{x.runbook} ({x.title})" for x in fi.fixes)
                print(f"  runbook{'s' if len(fi.fixes) > 1 else ''}: {named}", file=out)
            else:
                print("  runbook: none fixes it", file=out)
            print(f"  matching lines ({fi.matches}):", file=out)
            for ev in fi.evidence[:SHOW_LINES]:
                where = f"{ev.line}" if ev.line == ev.last_line else f"{ev.line}-{ev.last_line}"
                when = ev.when or "-"
                who = ev.component or "-"
                kind = _TYPES.get(ev.type, "")
                kind = f" [{kind}]" if kind else ""
                print(
                    f"    line {where:<7} {when:<26} {who:<12}{kind} {_one_line(ev.message)}",
                    file=out,
                )
            more = fi.matches - min(len(fi.evidence), SHOW_LINES)
            if more > 0:
                print(f"    ... and {more} more matching record(s)", file=out)
            print(f"  cause: {fi.cause}", file=out)
            for i, x in enumerate(fi.fixes):
                print(f"  {'fix:' if i == 0 else 'or:':<6} {x.command}", file=out)
            if fi.remedy:
                label = "or:" if fi.fixes else "fix:"
                print(f"  {label:<6} {fi.remedy} (no runbook to run)", file=out)
        print("", file=out)
    found = sum(len(f.findings) for f in diag.files)
    read = [f for f in diag.files if not f.error]
    lines = sum(f.lines for f in read)
    records = sum(f.records for f in read)
    if found:
        print(f"{found} known failure(s) found in {len(read)} file(s).", file=out)
    else:
        print(
            f"No known failure found: {len(read)} file(s), {lines} lines, {records} records read.",
            file=out,
        )


def print_json(diag: Diagnosis, out: TextIO = sys.stdout) -> None:
    json.dump(diag.as_json(), out, indent=2)
    out.write("\n")


# -- logs from a host ------------------------------------------------------------------------

#: Where the task sequence and OSD logs are, in the order a failure most likely left them.
SMSTS_CANDIDATES: tuple[str, ...] = (
    r"C:\_SMSTaskSequence\Logs\Smstslog\smsts.log",
    r"%windir%\CCM\Logs\smsts.log",
    r"%windir%\System32\CCM\Logs\SMSTSLog\smsts.log",
    r"%windir%\CCM\Logs\SMSTSLog\smsts.log",
    r"X:\Windows\Temp\SMSTSLog\smsts.log",
)
#: KB930011: staged OSD files log to C:\StageNT\SMSOSD\OSDLogs; the 2007 client log folder.
OSDLAUNCH_CANDIDATES: tuple[str, ...] = (
    r"C:\StageNT\SMSOSD\OSDLogs\OSDLaunch.log",
    r"%windir%\System32\CCM\Logs\OSDLaunch.log",
)
#: Seconds one fetch may take over WinRM (16 MB of base64 is ~22 MB on the wire).
FETCH_DEADLINE = 300.0


@dataclass(frozen=True)
class FetchedLog:
    """One log as it came back from a host."""

    host: str
    path: str
    data: bytes
    truncated: bool

    @property
    def name(self) -> str:
        return f"{self.host}:{self.path}"


def decode_fetch(host: str, result_data: Any, max_bytes: int) -> list[FetchedLog]:
    """The script's `data` ({path: base64}) as fetched logs; malformed entries are refused."""
    import base64
    import binascii

    if result_data is None:
        return []
    if not isinstance(result_data, dict):
        raise ValueError("the fetch script returned no {path: content} map")
    logs: list[FetchedLog] = []
    for path, b64 in sorted(result_data.items()):
        try:
            data = base64.b64decode(str(b64), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"content of {path} is not base64: {exc}") from exc
        logs.append(FetchedLog(host, str(path), data, truncated=len(data) >= max_bytes - 1))
    return logs


def diagnose_fetched(log: FetchedLog, signatures: list[Signature]) -> FileReport:
    import io

    note = None
    if log.truncated:
        note = (
            f"only the last {len(log.data) >> 20} MB were fetched; "
            "line numbers count from the start of that part"
        )
    name = log.name
    report = diagnose_stream(io.BytesIO(log.data), name, signatures, note=note)
    return report
