"""Pydantic validation with errors turned into file:line:column problems a person can act on."""

from __future__ import annotations

import datetime
import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from cmrunbook.errors import ConfigError, Problem
from cmrunbook.load.sourcemap import SourceMap

M = TypeVar("M", bound=BaseModel)


def _strip(tp: Any) -> Any:
    """`tp` without `Annotated[...]` wrappers and without `None` in an optional union."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if _is_union(tp):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _labels(member: Any) -> set[str]:
    """The names pydantic puts in an error path for one branch of a union (its tag, its class)."""
    names: set[str] = set()
    while get_origin(member) is Annotated:
        names |= {m.tag for m in get_args(member)[1:] if isinstance(m, Tag)}
        member = get_args(member)[0]
    names.add(getattr(member, "__name__", str(member)))
    return names


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow `loc` through the model's annotations: (the keys of the file, the owner type).

    The owner is the type the last key was looked up in. Pydantic's error paths mix three kinds
    of part: field names of a model, list indexes and dict keys (the data's own keys, which are
    no field names), and the label of the union branch it tried (`<step>`, `<include>` for the
    tagged Step|Include of a method's steps, which the `include` key decides; a class name for a
    plain union such as `WinRM | bool`). Labels are not keys in the file and are dropped.
    """
    keys: list[Any] = []
    current: Any = model
    owner: Any = None
    for part in loc:
        current = _strip(current)
        if _is_union(current):
            chosen = [m for m in get_args(current) if str(part) in _labels(m)]
            if chosen:
                current = chosen[0]
                continue
            models = [
                m
                for m in map(_strip, get_args(current))
                if isinstance(m, type) and issubclass(m, BaseModel)
            ]
            current = models[0] if len(models) == 1 else None
        keys.append(part)
        owner = current
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int):
            current = get_args(current)[0] if get_args(current) else None
        elif origin in (dict, Mapping):
            current = get_args(current)[1] if get_args(current) else None
        else:
            current = None
    return tuple(keys), owner


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last key of `loc` (pydantic's raw path), to list its keys."""
    owner = _strip(_walk(model, loc)[1])
    return owner if isinstance(owner, type) and issubclass(owner, BaseModel) else None


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch and tagged-union labels, which are not keys in the file."""
    return tuple(
        p for p in loc if isinstance(p, int) or not (str(p).startswith("<") or "[" in str(p))
    )


def _kind(value: Any) -> str:
    """What YAML made of a plain scalar, in words."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, datetime.date):
        return "a date"
    return f"a {type(value).__name__}"


def quote_hint(value: Any, path: Sequence[str | int], smap: SourceMap) -> str:
    """Why a string field did not get the text the file has at `path`, and how to write it."""
    written = smap.written.get(tuple(path))
    if value is None:
        shown = f" ({written})" if written else ""
        return f"is null{shown}; write the text in quotes, or remove it to use the default"
    if written is None:
        return f"is {_kind(value)} ({value!r}), not text; write it in quotes"
    return f"YAML reads {written} as {_kind(value)} ({value!r}); quote it to keep it: '{written}'"


def text_problems(
    what: str, value: Any, path: Sequence[str | int], smap: SourceMap, *, listed: bool
) -> list[Problem]:
    """Problems of a value that must be text (`listed`: a text or a list of texts) but that
    YAML's implicit typing read as something else: `yes`, `0x10`, `12:30`, `0777` or `null`
    would otherwise become 'True', '16', '750', '511' or 'None' without a word (attack 1b).

    A number written as it reads back (`3`, `1.5`) or a date (`2024-01-02`) is its own text, so
    it is kept; anything else is refused at its line with the hint to quote it.
    """
    items = list(enumerate(value)) if listed and isinstance(value, list) else [(None, value)]
    out: list[Problem] = []
    for index, item in items:
        where = (*path, index) if index is not None else tuple(path)
        if isinstance(item, str):
            continue
        if item is not None and smap.written.get(where) == str(item):
            continue
        label = what if index is None else f"{what}[{index}]"
        out.append(smap.problem(where, f"{label} {quote_hint(item, where, smap)}"))
    return out


def problems_from(exc: ValidationError, model: type[BaseModel], smap: SourceMap) -> list[Problem]:
    """One problem per distinct location, worded as what was expected there."""
    seen: set[tuple[int, int, str]] = set()
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        raw = tuple(err["loc"])
        loc = _clean_loc(_walk(model, raw)[0])
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, raw)
            allowed = sorted(owner.model_fields) if owner else []
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = f"unknown key '{loc[-1]}'"
            msg += f" (did you mean '{hint[0]}'?)" if hint else ""
            if allowed:
                msg += f"; expected one of: {', '.join(allowed)}"
            problem = smap.problem(loc, msg, key=True)
        elif kind == "missing":
            problem = smap.problem(loc[:-1], f"missing required key '{loc[-1]}'")
        elif kind == "string_type" and not isinstance(err["input"], dict | list):
            where = ".".join(str(p) for p in loc)
            problem = smap.problem(loc, f"{where} {quote_hint(err['input'], loc, smap)}")
        else:
            where = ".".join(str(p) for p in loc) or "document"
            problem = smap.problem(loc, f"{where}: {err['msg']}")
        sig = (problem.line, problem.column, problem.message)
        if sig not in seen:
            seen.add(sig)
            out.append(problem)
    return out


def parse(model: type[M], data: Any, smap: SourceMap) -> M:
    """Validate `data` as `model`, or raise ConfigError naming every bad place in the file."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, model, smap)) from exc
