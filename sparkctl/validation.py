"""Shared pieces of the catalog and configuration schemas: a strict, frozen base model, and the
translation of pydantic's errors into `file: field.path: message` lines that name the allowed values.
"""

from __future__ import annotations

import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sparkctl.errors import Issue

# A catalog model's id (BRIEF §4.1), and a cluster node's name: both become parts of unit names,
# URLs and paths, so both are held to the same narrow pattern.
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class FieldError(ValueError):
    """Raised by a model validator about one of the model's fields: the error is reported at
    that field's path rather than at the model's."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class StrictModel(BaseModel):
    """Frozen, rejects unknown keys, and takes TOML's types as they are (no "1" → 1 coercion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


def read_toml(path: Path) -> tuple[dict[str, Any] | None, list[Issue]]:
    """Parse one TOML file; a syntax error becomes one Issue (TOML reports line and column)."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f), []
    except tomllib.TOMLDecodeError as e:
        return None, [Issue(str(path), "", f"not valid TOML: {e}")]
    except UnicodeDecodeError as e:
        return None, [Issue(str(path), "", f"not valid UTF-8: {e}")]
    except OSError as e:
        return None, [Issue(str(path), "", f"cannot read: {e.strerror or e}")]


def field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that holds the last element of `loc` (to list the keys it allows)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _first_model(field.annotation)
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def issues_from_validation(path: Path | str, root: type[BaseModel], error: ValidationError) -> list[Issue]:
    issues = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        value = err.get("input")
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            holder = _model_at(root, loc)
            allowed = sorted(f.alias or name for name, f in holder.model_fields.items()) if holder else []
            msg = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif kind == "missing":
            msg = "required"
        elif kind in ("literal_error", "enum"):
            expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
            msg = f"must be one of {expected}, got {_describe(value)}"
        elif kind == "value_error":
            cause = ctx.get("error")
            msg = str(cause) if cause is not None else err["msg"]
            if isinstance(cause, FieldError):
                loc = (*loc, *cause.field.split("."))
        elif kind in _TYPE_NAMES:
            msg = f"must be {_TYPE_NAMES[kind]}, got {_describe(value)}"
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[
                kind
            ]
            bound = next(iter(ctx.values()), "?")
            msg = f"must be {op} {bound}, got {_describe(value)}"
        elif kind == "string_pattern_mismatch":
            msg = f"must match {ctx.get('pattern')}, got {_describe(value)}"
        else:
            msg = f"{err['msg']}, got {_describe(value)}"
        issues.append(Issue(str(path), field_path(loc), msg))
    return issues
