"""The JSON on the wire: reading a request's fields as vLLM's pydantic models read them, the error
bodies vLLM answers with, and the JSON helpers every answer goes through.

vLLM refuses a request in two ways, and clients see both:
- a body its pydantic model rejects (a wrong type, a missing field) never reaches a handler:
  FastAPI's validation handler answers 400 with type "Bad Request", the offending field as
  `param` ("body.max_tokens") and pydantic's error in the message (`invalid` here);
- a handler's own refusal (an unknown model, a context overflow) is a typed error:
  "BadRequestError", "NotFoundError" (`bad`, `ApiError`).

The readers coerce as pydantic's lax mode does ("5" is an integer, "yes" a boolean), because a
request vLLM accepts must not be refused here.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

JSON_TYPE = "application/json"
Loc = tuple[str | int, ...]

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INPUT_CHARS = 200  # how much of an offending value vLLM echoes back


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        return {"error": error}

    def response(self) -> web.Response:
        return json_response(self.body(), self.status)


def bad(message: str, param: str | None = None) -> ApiError:
    """A handler's refusal: vLLM's create_error_response."""
    return ApiError(400, "BadRequestError", message, param)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NotFoundError", message)


def invalid(loc: Loc, kind: str, msg: str, value: Any) -> ApiError:
    """A body vLLM's pydantic model rejects, as FastAPI's validation handler reports it."""
    where = ".".join(str(p) for p in ("body", *loc))
    detail = {"type": kind, "loc": where, "msg": msg, "input": _summary(value)}
    return ApiError(400, "Bad Request", f"1 validation error:\n  {detail!r}", where)


def _summary(value: Any) -> str:
    # vLLM describes containers instead of echoing them (a big body would echo megabytes).
    if isinstance(value, (list, dict)):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:_INPUT_CHARS] + "...[truncated]" if len(text) > _INPUT_CHARS else text


def missing(body: dict[str, Any], loc: Loc) -> ApiError:
    return invalid(loc, "missing", "Field required", body)


def opt_int(obj: dict[str, Any], key: str, loc: Loc = ()) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int):  # a bool too, as pydantic's lax mode takes it
        return int(value)
    where = (*loc, key)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        msg = "Input should be a valid integer, got a number with a fractional part"
        raise invalid(where, "int_from_float", msg, value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            msg = "Input should be a valid integer, unable to parse string as an integer"
            raise invalid(where, "int_parsing", msg, value) from None
    raise invalid(where, "int_type", "Input should be a valid integer", value)


def opt_float(obj: dict[str, Any], key: str, loc: Loc = ()) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            msg = "Input should be a valid number, unable to parse string as a number"
            raise invalid((*loc, key), "float_parsing", msg, value) from None
    raise invalid((*loc, key), "float_type", "Input should be a valid number", value)


def opt_bool(obj: dict[str, Any], key: str, loc: Loc = ()) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    msg = "Input should be a valid boolean"
    if isinstance(value, (str, int, float)):
        raise invalid((*loc, key), "bool_parsing", f"{msg}, unable to interpret input", value)
    raise invalid((*loc, key), "bool_type", msg, value)


def flag(obj: dict[str, Any], key: str, loc: Loc = ()) -> bool:
    return opt_bool(obj, key, loc) or False


def opt_str(obj: dict[str, Any], key: str, loc: Loc = ()) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise invalid((*loc, key), "string_type", "Input should be a valid string", value)


def req_str(obj: dict[str, Any], key: str, loc: Loc = ()) -> str:
    value = opt_str(obj, key, loc)
    if value is None:
        raise missing(obj, (*loc, key))
    return value


def opt_list(obj: dict[str, Any], key: str, loc: Loc = ()) -> list[Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, list):
        return value
    raise invalid((*loc, key), "list_type", "Input should be a valid list", value)


def opt_dict(obj: dict[str, Any], key: str, loc: Loc = ()) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise invalid((*loc, key), "dict_type", "Input should be a valid dictionary", value)


def as_dict(value: Any, loc: Loc) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    msg = "Input should be a valid dictionary or object to extract fields from"
    raise invalid(loc, "model_attributes_type", msg, value)


def str_list(obj: dict[str, Any], key: str, loc: Loc = ()) -> list[str]:
    """A list of strings (vLLM's `stop` also takes one string)."""
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid((*loc, key, i), "string_type", "Input should be a valid string", item)
        return value
    raise invalid((*loc, key), "list_type", "Input should be a valid list", value)


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise invalid((0,), "json_invalid", "JSON decode error", str(exc)) from None
    return as_dict(body, ())


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type=JSON_TYPE)


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One named server-sent event, as vLLM frames the Responses and Messages streams."""
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def value_error(message: str, value: Any, loc: Loc = ()) -> ApiError:
    """A model validator's refusal (pydantic reports it as a `value_error` at the body's root)."""
    return invalid(loc, "value_error", f"Value error, {message}", value)
