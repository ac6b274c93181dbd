"""Which model a request is for: the JSON body's `model`, a multipart form's `model` field, the
reference stack's `/v1/<model>/<route>` path form, or the model whose own port it came in on.

Validation happens before anything is scheduled: a model name that could not be a catalog name
(path tricks, control characters, absurd length) is refused outright, an unknown one is a 404, a
disabled one a 400 that carries its reason.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from dataclasses import dataclass
from typing import Any

from sparkctl.catalog import Catalog, Model
from sparkctl.errors import (
    InvalidJSONError,
    InvalidModelNameError,
    MissingModelError,
    ModelDisabledError,
    RouteNotSupportedError,
    UnknownModelError,
)

# Everything a catalog id or alias can be (ids are stricter; aliases allow ':' and capitals).
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

# OpenAI-style routes routed by model (BRIEF §4.5); the path form /v1/<model>/<route> maps to these.
MODEL_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/rerank",
    "/v1/score",
    "/v1/messages",
    "/tokenize",
    "/detokenize",
)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A request body understood enough to route it."""

    json: dict[str, Any] | None  # the parsed JSON object, when the body is JSON
    name: str | None  # the model name the client gave, if any


def parse_body(body: bytes, content_type: str) -> Parsed:
    """Find the model name in a JSON or multipart body. Other bodies carry none."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        return Parsed(None, _multipart_model(body, content_type))
    if not body.strip():
        return Parsed(None, None)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidJSONError(f"The request body is not valid JSON: {e}") from None
    except RecursionError:  # the parser recurses per level: 200,000 nested arrays end here
        raise InvalidJSONError("The request body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise InvalidJSONError("The request body must be a JSON object.")
    name = data.get("model")
    if name is not None and not isinstance(name, str):
        raise InvalidModelNameError("'model' must be a string.")
    return Parsed(data, name)


def _multipart_model(body: bytes, content_type: str) -> str | None:
    """The `model` field of a multipart form (audio transcription uploads)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    try:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    except Exception:  # the email package raises a variety of errors on garbage
        raise InvalidJSONError("The multipart form could not be parsed.") from None
    if not message.is_multipart():
        raise InvalidJSONError("The multipart form could not be parsed.")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "model":
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                return None
            try:
                return payload.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InvalidModelNameError("The 'model' form field is not valid UTF-8.") from None
    return None


def resolve(catalog: Catalog, name: str | None) -> Model:
    """The catalog model a client's name means, or the error that says why there is none."""
    if name is None or name == "":
        raise MissingModelError("The request names no model: set 'model'.")
    if not MODEL_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise InvalidModelNameError(f"{shown!r} is not a valid model name.")
    model = catalog.resolve(name)  # UnknownModelError → 404
    if not model.spec.enabled:
        raise ModelDisabledError(f"The model '{model.id}' is disabled: {model.spec.disabled_reason}")
    return model


# What a model must be able to do (catalog `capabilities`, any one of them) to serve a route.
# vLLM and SGLang both serve the generative routes, Responses and Anthropic Messages included; a
# pooling model (embeddings) serves only the pooling routes, a speech model only audio. Routes
# not listed (tokenize, detokenize) every model serves.
ROUTE_NEEDS: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("chat", "code"),
    "/v1/completions": ("chat", "code"),
    "/v1/responses": ("chat", "code"),
    "/v1/messages": ("chat", "code"),
    "/v1/embeddings": ("embeddings",),
    "/v1/rerank": ("embeddings",),
    "/v1/score": ("embeddings",),
    "/v1/audio/transcriptions": ("audio",),
    "/v1/audio/translations": ("audio",),
}


def check_route(catalog: Catalog, model: Model, route: str) -> None:
    """Refuse a route the model cannot serve before anything is scheduled: a swap (minutes on a
    Spark) must not be the price of an engine's 404."""
    needs = ROUTE_NEEDS.get(route)
    capabilities = model.spec.capabilities
    if needs is None or any(c in capabilities for c in needs):
        return
    able = [m.id for m in catalog.enabled if any(c in m.spec.capabilities for c in needs)]
    hint = f" Models that do: {', '.join(able[:5])}{' …' if len(able) > 5 else ''}." if able else ""
    raise RouteNotSupportedError(
        f"The model '{model.id}' does not serve {route}: that needs the capability "
        f"{' or '.join(repr(c) for c in needs)}, and it has {', '.join(capabilities) or 'none'}.{hint}"
    )


def split_path_form(path: str) -> tuple[str, str] | None:
    """`/v1/<model>/<route>` (the reference stack's form) → (model, `/v1/<route>`), or None."""
    if not path.startswith("/v1/"):
        return None
    rest = path[4:]
    name, sep, route = rest.partition("/")
    if not sep or not route:
        return None
    target = "/v1/" + route
    if target in MODEL_ROUTES:
        return name, target
    return None


__all__ = [
    "MODEL_ROUTES",
    "ROUTE_NEEDS",
    "Parsed",
    "UnknownModelError",
    "check_route",
    "parse_body",
    "resolve",
    "split_path_form",
]
