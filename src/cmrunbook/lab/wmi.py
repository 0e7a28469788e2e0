"""The SMS Provider's WMI classes as the lab's sites hold them, and the WQL the scripts send.

A script's query is read from the script (its class, its WHERE properties), its variable parts
filled with the values the script assigns, then answered here as WMI would: an unknown class is
`Invalid class "X"`, an unknown property `Invalid query`, so a template that names the wrong class
or property fails the way it would on a real site instead of being answered anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cmrunbook.lab.scripts import PSError, Script, Unrecognized
from cmrunbook.lab.site import wql_like

if TYPE_CHECKING:
    from cmrunbook.lab.site import SiteState
    from cmrunbook.lab.world import Lab

#: Each simulated class and the properties its instances have (what a WHERE may name).
CLASSES: dict[str, tuple[str, ...]] = {
    "SMS_R_System": (
        "ResourceId", "Name", "NetbiosName", "ClientVersion", "OperatingSystemNameandVersion",
        "Client", "Active", "Obsolete",
    ),
    "SMS_G_System_SoftwareFile": ("ResourceID", "FileName", "FilePath", "FileVersion", "FileSize"),
    "SMS_G_System_OPERATING_SYSTEM": ("ResourceID", "BuildNumber", "Caption", "Version"),
    "SMS_G_System_LastSoftwareScan": ("ResourceID", "LastUpdateDate"),
    "SMS_Collection": ("CollectionID", "Name", "MemberCount"),
    "SMS_FullCollectionMembership": ("CollectionID", "ResourceID", "Name"),
    "SMS_BootImagePackage": (
        "PackageID", "Name", "ImageOSVersion", "Architecture", "SourceVersion", "LastRefreshTime",
    ),
    "SMS_DistributionPoint": ("PackageID", "ServerNALPath", "SiteCode", "SiteName", "Status"),
    "SMS_PackageStatusDistPointsSummarizer": (
        "PackageID", "ServerNALPath", "SiteCode", "State", "SourceVersion", "SummaryDate",
    ),
    "SMS_ImagePackage": ("PackageID", "Name", "PkgFlags", "PackageSize"),
    "SMS_SystemResourceList": ("RoleName", "NALPath", "SiteCode", "ServerName"),
}  # fmt: skip

_SELECT = re.compile(
    r"^\s*SELECT\s+\*\s+FROM\s+(?P<cls>\w+)(?:\s+WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_COND = re.compile(
    r"\s*(?P<prop>\w+)\s*(?P<op>=|LIKE)\s*(?P<val>'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|-?\d+)\s*",
    re.IGNORECASE,
)


def _unquote(text: str) -> str | int:
    if text[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return int(text)


def instances(lab: Lab, site: SiteState, cls: str) -> list[dict[str, Any]]:
    """Every instance of a class on the site's provider; `Invalid class` for any other class."""
    name = next((c for c in CLASSES if c.lower() == cls.lower()), None)
    if name is None:
        raise PSError(f'Invalid class "{cls}"')
    return site.wmi_instances(name, lab)


def query(lab: Lab, site: SiteState, wql: str) -> list[dict[str, Any]]:
    """Answer `SELECT * FROM Class [WHERE p = v AND p LIKE 'x' ...]` as WMI would."""
    m = _SELECT.match(wql)
    if m is None:
        raise PSError("Invalid query")
    rows = instances(lab, site, m["cls"])
    props = {
        p.lower(): p for p in CLASSES[next(c for c in CLASSES if c.lower() == m["cls"].lower())]
    }
    conds: list[tuple[str, str, str | int]] = []
    where = m["where"] or ""
    pos = 0
    while where and pos < len(where):
        c = _COND.match(where, pos)
        if c is None:
            raise PSError("Invalid query")
        if c["prop"].lower() not in props:
            raise PSError("Invalid query")
        conds.append((props[c["prop"].lower()], c["op"].upper(), _unquote(c["val"])))
        pos = c.end()
        if pos < len(where):
            conj = re.match(r"AND\s+", where[pos:], re.IGNORECASE)
            if conj is None:
                raise PSError("Invalid query")
            pos += conj.end()
    return [r for r in rows if all(_test(r.get(p), op, v) for p, op, v in conds)]


def _test(have: Any, op: str, want: str | int) -> bool:
    if have is None:
        return False
    if op == "LIKE":
        return wql_like(str(have), str(want))
    if isinstance(want, int) or isinstance(have, int):
        try:
            return int(have) == int(want)
        except (TypeError, ValueError):
            return False
    return str(have).lower() == str(want).lower()


def filter_query(cls: str, where: str | None) -> str:
    """The WQL of `Get-WmiObject -Class cls [-Filter where]`."""
    return f"SELECT * FROM {cls}" + (f" WHERE {where}" if where else "")


# -- reading a query out of the script -------------------------------------------------------


def balanced(text: str, start: int) -> str:
    """The text of the parenthesised group opening at `start`, without its parentheses."""
    depth = 0
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    raise Unrecognized("unbalanced parentheses")


_TERM = re.compile(
    r"\s*(?:(?P<dq>\"[^\"$`]*\")|(?P<sq>'(?:[^']|'')*')"
    r"|(?P<wql>\(ConvertTo-CmrbWql\s+(?P<wqlarg>\$\w+(?:\.\w+)?)\))"
    r"|(?P<cast>\[string\]\[uint32\]|\[string\])?(?P<var>\$\w+(?:\.\w+)?))\s*"
)


def concat(expr: str, env: Mapping[str, Any]) -> str:
    """Evaluate a PowerShell string concatenation of literals, `$vars` and `ConvertTo-CmrbWql`."""
    text = expr.strip()
    while text.startswith("(") and balanced(text, 0) == text[1:-1]:
        text = text[1:-1].strip()
    lowered = {k.lower(): v for k, v in env.items()}
    out: list[str] = []
    pos = 0
    while True:
        m = _TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise Unrecognized(f"cannot read the string expression {expr!r}")
        if m["dq"]:
            out.append(m["dq"][1:-1])
        elif m["sq"]:
            out.append(m["sq"][1:-1].replace("''", "'"))
        else:
            name = (m["wqlarg"] or m["var"]).lower()
            if name not in lowered:
                raise Unrecognized(f"{name} has no value the lab knows")
            value = "" if lowered[name] is None else str(lowered[name])
            if m["wql"]:
                value = value.replace("\\", "\\\\").replace("'", "\\'")
            out.append(value)
        pos = m.end()
        if pos >= len(text):
            return "".join(out)
        if text[pos] != "+":
            raise Unrecognized(f"cannot read the string expression {expr!r}")
        pos += 1


_CALL = re.compile(
    r"Get-WmiObject -Namespace \$CmrbNamespace "
    r"(?:-Class (?P<cls>\w+)(?: -Filter (?P<filter>[($]))?|-Query (?P<query>[($]))"
)


def wmi_calls(s: Script) -> list[tuple[int, str | None, str | None]]:
    """Each Get-WmiObject on the provider: (offset, class of -Class, -Filter/-Query expression).

    The expression is a parenthesised string expression or a `$variable`."""
    out: list[tuple[int, str | None, str | None]] = []
    for m in _CALL.finditer(s.body):
        opening = m["filter"] or m["query"]
        expr = None
        if opening == "(":
            expr = "(" + balanced(s.body, m.end() - 1) + ")"
        elif opening == "$":
            var = re.match(r"\$\w+", s.body[m.end() - 1 :])
            assert var is not None
            expr = var.group()
        out.append((m.start(), m["cls"], expr))
    return out


def run_call(
    lab: Lab, site: SiteState, s: Script, call: tuple[int, str | None, str | None],
    env: Mapping[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """Answer one of `wmi_calls`, with `env` the script's variables at that point."""
    offset, cls, expr = call
    text = _evaluate(s, offset, expr, env) if expr else None
    if cls is not None:
        return query(lab, site, filter_query(cls, text))
    assert text is not None
    return query(lab, site, text)


def _evaluate(s: Script, offset: int, expr: str, env: Mapping[str, Any]) -> str:
    """The string a -Filter/-Query expression holds at `offset`: a `$variable` from `env` or
    from its last assignment before that point, or a concatenation evaluated with `env`."""
    if not expr.startswith("$"):
        return concat(expr, env)
    lowered = {k.lower(): v for k, v in env.items()}
    if expr.lower() in lowered:
        return str(lowered[expr.lower()])
    found = [
        m
        for m in re.finditer(rf"^\s*{re.escape(expr)} = (?P<e>[^\n]+)$", s.body, re.M)
        if m.start() < offset
    ]
    if not found:
        raise Unrecognized(f"{expr} is not assigned")
    return concat(found[-1]["e"], env)


def call_after(
    s: Script, snippet: str, cls: str | None = None
) -> tuple[int, str | None, str | None]:
    """The first provider call after `snippet` in the body (optionally of a -Class)."""
    anchor = s.body.find(snippet)
    if anchor < 0:
        raise Unrecognized(f"no {snippet!r} in the script")
    for call in wmi_calls(s):
        if call[0] > anchor and (cls is None or call[1] == cls):
            return call
    raise Unrecognized(f"no Get-WmiObject after {snippet!r}")


def assigned(s: Script, var: str, after: str = "") -> str:
    """The right-hand side of the first `$var = ...` line after `after`."""
    start = s.body.find(after) if after else 0
    if start < 0:
        raise Unrecognized(f"no {after!r} in the script")
    m = re.compile(rf"^\s*\${var} = (?P<e>[^\n]+)$", re.M).search(s.body, start)
    if m is None:
        raise Unrecognized(f"${var} is not assigned")
    return m["e"]
