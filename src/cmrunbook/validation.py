"""Pydantic validation with errors turned into file:line:column problems a person can act on."""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cmrunbook.errors import ConfigError, Problem
from cmrunbook.sourcemap import SourceMap

M = TypeVar("M", bound=BaseModel)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last key of `loc`, to list the keys it accepts."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        args = getattr(current, "__args__", None)
        if args:
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            current = models[0] if len(models) == 1 else current
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch and tagged-union labels, which are not keys in the file."""
    return tuple(
        p for p in loc if isinstance(p, int) or not (str(p).startswith("<") or "[" in str(p))
    )


def problems_from(exc: ValidationError, model: type[BaseModel], smap: SourceMap) -> list[Problem]:
    """One problem per distinct location, worded as what was expected there."""
    seen: set[tuple[int, int, str]] = set()
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]))
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc)
            allowed = sorted(owner.model_fields) if owner else []
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = f"unknown key '{loc[-1]}'"
            msg += f" (did you mean '{hint[0]}'?)" if hint else ""
            if allowed:
                msg += f"; expected one of: {', '.join(allowed)}"
            problem = smap.problem(loc, msg, key=True)
        elif kind == "missing":
            problem = smap.problem(loc[:-1], f"missing required key '{loc[-1]}'")
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
