"""`GET /openapi.json`: an OpenAPI 3.1 document of the gateway's own routes (BRIEF §9, #13), and
`GET /healthz`, the same as `/health`.

The document is built once per app, from what the gateway already knows: the OpenAI routes of
`routing.MODEL_ROUTES`, the admin API's records (`sparkctl.api`, through pydantic), and the error
codes of `ErrorCode` with the status each becomes. It says what the gateway checks itself and no
more: a proxied request is a JSON object with a `model`, the rest is the engine's business and is
forwarded as it came. tests/integration/test_fuzz.py holds the live gateway to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, get_args

from aiohttp import web
from pydantic.json_schema import models_json_schema

from sparkctl import __version__
from sparkctl.api import (
    DaemonStatus,
    EtaEvent,
    ImageStatus,
    ModelStatus,
    PreflightStatus,
    PullEvent,
    ReservationStatus,
    StateEvent,
)
from sparkctl.catalog.spec import Capability, Status
from sparkctl.errors import ErrorCode
from sparkctl.gateway import openai
from sparkctl.gateway.routing import MODEL_ROUTES

DOCUMENT = web.AppKey("openapi_document", bytes)
OPENAPI_PATH = "/openapi.json"

SCHEMAS = "#/components/schemas/"
RESPONSES = "#/components/responses/"
KEYED: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
OPEN: list[dict[str, list[str]]] = []
JSON = "application/json"
SSE = "text/event-stream"
# Statuses the gateway answers with an error it raised itself, each a component response.
ERROR_RESPONSES = {
    "BadRequest": (
        400,
        "The request names no usable model, or is not JSON (or a form), or the model cannot serve "
        "the route (`route_not_supported`: nothing starts); through a proxied route, "
        "also the engine's refusal (`context_length_exceeded`, `bad_request`)",
    ),
    "Unauthorized": (401, "No valid API key"),
    "Forbidden": (
        403,
        'A key without admin rights on the admin API; with `gateway.auth = "none"`, a foreign '
        "`Host` or `Origin`",
    ),
    "NotFound": (404, "No such model (`model_not_found`), or no such route (`not_found`)"),
    "RequestTimeout": (408, "The request body did not arrive within `gateway.body_timeout`"),
    "RequestTooLarge": (413, "The body exceeds `gateway.max_body` (decided from Content-Length first)"),
    "UnsupportedMediaType": (
        415,
        'A Content-Encoding other than gzip or deflate; with `gateway.auth = "none"`, a body that '
        "is not JSON",
    ),
    "Conflict": (
        409,
        "A reservation of this node (#15) refused: another node holds or waits for it, or no worker "
        "part of the model runs here; or a worker part asked for without one",
    ),
    "QueueFull": (429, "Too many requests wait, or the gateway holds too many request bodies"),
    "UpstreamError": (502, "The engine could not be reached, or failed while answering"),
    "ServiceUnavailable": (
        503,
        "The model cannot serve now: `model_loading` (the request said `Prefer: wait=0`), "
        "`model_start_failed`, `model_backoff`; or the cluster node that serves it does not "
        "answer (`peer_unavailable`)",
    ),
    "GatewayTimeout": (504, "The model was not ready in time"),
}
RETRY_AFTER_STATUSES = frozenset({429, 503, 504})


def register(app: web.Application) -> None:
    app[DOCUMENT] = json.dumps(document(), separators=(",", ":")).encode()
    app.router.add_get(OPENAPI_PATH, openapi_json)
    app.router.add_get("/healthz", openai.health)


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCUMENT], content_type=JSON)


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, as a JSON-ready dict."""
    paths: dict[str, dict[str, Any]] = {
        "/health": {"get": _health("health")},
        "/healthz": {"get": _health("healthz")},
        OPENAPI_PATH: {"get": _openapi_operation()},
        "/metrics": {"get": _metrics_operation()},
        "/v1/models": {"get": _list_models()},
        "/v1/models/{model}": {"get": _get_model()},
    }
    for route in MODEL_ROUTES:
        paths[route] = {"post": _proxied(route, path_form=False)}
    for route in MODEL_ROUTES:
        if route.startswith("/v1/"):  # the reference stack's /v1/<model>/<route> (routing.split_path_form)
            paths["/v1/{model}/" + route.removeprefix("/v1/")] = {"post": _proxied(route, path_form=True)}
    paths.update(_admin_paths())
    paths.update(_dashboard_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sparkctl gateway",
            "version": __version__,
            "summary": "Many LLMs behind one OpenAI-compatible endpoint, started on demand.",
            "description": (
                "The gateway's own routes. Every route but `/health`, `/healthz` and `/openapi.json` "
                "takes an API key, as `Authorization: Bearer KEY` or `X-Api-Key: KEY` (`sparkctl keys "
                "add`); `/metrics` needs none from this machine's loopback. The admin API (`/api/v1/`) "
                'takes an admin key. With `gateway.auth = "none"` no key is asked, and requests must '
                "come from this machine (loopback `Host`, no foreign `Origin`, JSON bodies).\n\n"
                "Every error has the one shape of `ErrorEnvelope`; its `code` is stable and "
                "machine-readable. On a model's own port (`serve.direct_port`) the routes are the "
                "same, and a proxied body needs no `model`."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "openai", "description": "OpenAI-compatible routes, routed by `model` to its engine"},
            {"name": "models", "description": "The catalog's models and their live state"},
            {"name": "admin", "description": "The admin API (admin keys only)"},
            {"name": "operations", "description": "Health, metrics and this document"},
            {"name": "dashboard", "description": "The dashboard in the browser (`/ui/`) and its own routes"},
        ],
        "security": KEYED,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `sparkctl keys add`, as OpenAI clients send it.",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": "The same key, as Anthropic clients send it (`/v1/messages`).",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "sparkctl_session",
                    "description": "The dashboard's session (`POST /ui/api/session`), in place of a key.",
                },
            },
            "schemas": _schemas(),
            "responses": _error_responses(),
            "parameters": _parameters(),
        },
    }


# ------------------------------------------------------------------------------------- schemas
def _schemas() -> dict[str, Any]:
    # The admin API's records, as the server and the client share them; their $refs point here.
    _, records = models_json_schema(
        [
            (DaemonStatus, "serialization"),
            (ModelStatus, "serialization"),
            (StateEvent, "serialization"),
            (EtaEvent, "serialization"),
            (ReservationStatus, "serialization"),
            (PreflightStatus, "serialization"),
            (PullEvent, "serialization"),
            (ImageStatus, "serialization"),
        ],
        ref_template=SCHEMAS + "{model}",
    )
    schemas: dict[str, Any] = dict(records["$defs"])
    schemas.update(
        {
            "ErrorCode": {
                "type": "string",
                "enum": [c.value for c in ErrorCode],
                "description": "sparkctl's stable error codes (sparkctl.errors.ErrorCode).",
            },
            "ErrorDetail": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"enum": sorted({c.error_type for c in ErrorCode})},
                    "param": {"type": ["string", "null"]},
                    "code": {"$ref": SCHEMAS + "ErrorCode"},
                },
            },
            "ErrorEnvelope": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"$ref": SCHEMAS + "ErrorDetail"}},
                "description": "Every error the gateway answers, its own and the engines' (BRIEF §4.5).",
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"enum": ["ok", "degraded"]},
                    "reason": {
                        "type": "string",
                        "description": "Why models cannot be started or stopped now.",
                    },
                },
            },
            "Model": _model_schema(),
            "ModelList": {
                "type": "object",
                "required": ["object", "data"],
                "properties": {
                    "object": {"const": "list"},
                    "data": {"type": "array", "items": {"$ref": SCHEMAS + "Model"}},
                },
            },
            "ProxiedEvent": _event(
                {"type": "string"},
                "One event of a relayed stream: `data` is a JSON chunk of the engine's, `[DONE]` at "
                "the end, or an `ErrorEnvelope` when the stream fails after it began.",
            ),
            "AdminEvent": {
                "oneOf": [
                    _event(_json_string("StateEvent"), "A model's new state.", name="state"),
                    _event(_json_string("EtaEvent"), "A new estimate for a model on its way.", name="eta"),
                    _event(
                        _json_string("ErrorEnvelope"), "The stream ends: its key was revoked.", name="error"
                    ),
                ]
            },
            **_dashboard_schemas(),
            "ProxiedRequest": _proxied_body(model_required=True),
            "PathFormRequest": _proxied_body(model_required=False),
            "AudioRequest": {
                "type": "object",
                "required": ["file", "model"],
                "properties": {
                    "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                    "model": {"type": "string", "description": "A catalog id or alias."},
                },
                "additionalProperties": True,
            },
        }
    )
    return schemas


def _model_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A catalog model as `/v1/models` lists it, with its live state.",
        "required": [
            "id",
            "object",
            "created",
            "owned_by",
            "state",
            "capabilities",
            "context_length",
            "status",
            "description",
        ],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"const": "sparkctl"},
            "state": {
                "anyOf": [{"$ref": SCHEMAS + "ModelState"}, {"const": "unavailable"}],
                "description": "`unavailable`: a cluster peer's model while that peer does not answer.",
            },
            "capabilities": {"type": "array", "items": {"enum": list(get_args(Capability))}},
            "context_length": {"type": "integer"},
            "status": {"enum": [s.value for s in Status]},
            "description": {"type": "string"},
            "aliases": {"type": "array", "items": {"type": "string"}},
            "disabled_reason": {"type": "string"},
            "node": {"type": "string", "description": "The node that serves it (a cluster)."},
            "available": {
                "type": "boolean",
                "description": "False while the cluster node that serves it does not answer.",
            },
            "load_time_s": {
                "type": ["number", "null"],
                "description": "Learned time from a request to ready.",
            },
            "load_time_guess_s": {
                "type": ["number", "null"],
                "description": "Before any start: a load time guessed from its size on disk.",
            },
            "memory_bytes": {"type": ["integer", "null"], "description": "Learned footprint."},
        },
    }


def _event(data: dict[str, Any], description: str, *, name: str | None = None) -> dict[str, Any]:
    """One server-sent event, as OpenAPI 3.2 reads a `text/event-stream` body (`itemSchema`):
    an object of its fields, `data` a string."""
    event: dict[str, Any] = {"type": "string"} if name is None else {"const": name}
    return {
        "type": "object",
        "description": description,
        "required": ["data"] if name is None else ["event", "data"],
        "properties": {"event": event, "data": data, "id": {"type": "string"}, "retry": {"type": "integer"}},
    }


def _json_string(schema_name: str) -> dict[str, Any]:
    # A string by SSE's nature; no `type` here, because a reader that decodes the JSON (as
    # schemathesis does) checks the decoded value against the schema around contentSchema too.
    return {"contentMediaType": JSON, "contentSchema": {"$ref": SCHEMAS + schema_name}}


def _proxied_body(*, model_required: bool) -> dict[str, Any]:
    where = "" if model_required else " The path's model wins; this one is rewritten to it."
    return {
        "type": "object",
        "description": (
            "An OpenAI (or Anthropic, for `/v1/messages`) request. The gateway reads only `model` "
            "(and `stream`) and forwards the rest to the engine, shaped by the model's `[request]` "
            "table." + where
        ),
        "required": ["model"] if model_required else [],
        "properties": {
            "model": {"type": "string", "description": "A catalog id or alias."},
            "stream": {"type": "boolean", "description": "Answer as server-sent events."},
        },
        "additionalProperties": True,
    }


# ----------------------------------------------------------------------------------- responses
def _error_schema(codes: Iterable[ErrorCode]) -> dict[str, Any]:
    chosen = sorted(set(codes))
    return {
        "allOf": [
            {"$ref": SCHEMAS + "ErrorEnvelope"},
            {
                "properties": {
                    "error": {
                        "properties": {
                            "code": {"enum": [c.value for c in chosen]},
                            "type": {"enum": sorted({c.error_type for c in chosen})},
                        }
                    }
                }
            },
        ]
    }


def _error_response(description: str, codes: Iterable[ErrorCode], status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _error_schema(codes)}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"const": 'Bearer realm="sparkctl"'}}
        }
    if status in RETRY_AFTER_STATUSES:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds before a retry may succeed (for a start: its learned load time).",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def _error_responses() -> dict[str, Any]:
    out = {
        name: _error_response(text + ".", (c for c in ErrorCode if c.status == status), status)
        for name, (status, text) in ERROR_RESPONSES.items()
    }
    # Through a proxied route an engine's own refusal keeps its status, in the envelope with
    # code `bad_request` (gateway/upstream.py: engine_error).
    out["ProxyNotFound"] = _error_response(
        "No such model, no such route, or the engine has no such route (`bad_request`).",
        [c for c in ErrorCode if c.status == 404] + [ErrorCode.BAD_REQUEST],
        404,
    )
    out["EngineRefused"] = _error_response(
        "The engine refused the request; its own status, in the envelope.", [ErrorCode.BAD_REQUEST], 400
    )
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": RESPONSES + name}


def _keyed_errors(*more: tuple[str, str]) -> dict[str, Any]:
    out = {"401": _ref("Unauthorized"), "403": _ref("Forbidden")}
    out.update({status: _ref(name) for status, name in more})
    return out


def _json_content(schema_name: str) -> dict[str, Any]:
    return {JSON: {"schema": {"$ref": SCHEMAS + schema_name}}}


# ------------------------------------------------------------------------------------- routes
def _parameters() -> dict[str, Any]:
    return {
        "model": {
            "name": "model",
            "in": "path",
            "required": True,
            "description": "A catalog id or alias.",
            "schema": {"type": "string"},
        },
        "Prefer": {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "description": "`wait=0`: answer 503 `model_loading` at once instead of waiting for a start.",
            "schema": {"type": "string"},
        },
        "Content-Encoding": {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "description": (
                "The body is compressed so (inflated by the gateway within `gateway.max_body`; the "
                "engine gets it plain). Others are refused with 415."
            ),
            "schema": {"enum": ["gzip", "x-gzip", "deflate", "identity"]},
        },
        "X-Request-Id": {
            "name": "X-Request-Id",
            "in": "header",
            "required": False,
            "description": "Kept (up to 64 letters, digits, `-`, `_`) and sent back; else one is made.",
            "schema": {"type": "string"},
        },
    }


def _health(name: str) -> dict[str, Any]:
    return {
        "operationId": name,
        "tags": ["operations"],
        "summary": "Whether the daemon serves (`degraded`: it cannot start or stop models now)",
        "security": OPEN,
        "responses": {"200": {"description": "The daemon serves.", "content": _json_content("Health")}},
    }


def _openapi_operation() -> dict[str, Any]:
    return {
        "operationId": "openapi",
        "tags": ["operations"],
        "summary": "This document",
        "security": OPEN,
        "responses": {
            "200": {
                "description": "The OpenAPI 3.1 document of the gateway's own routes.",
                "content": {JSON: {"schema": {"type": "object", "required": ["openapi", "paths"]}}},
            }
        },
    }


def _metrics_operation() -> dict[str, Any]:
    return {
        "operationId": "metrics",
        "tags": ["operations"],
        "summary": "Prometheus metrics",
        "description": "No key from this machine's loopback (`gateway.open_metrics`); a key otherwise.",
        "security": [*KEYED, {}],
        "responses": {
            "200": {
                "description": "The Prometheus text exposition.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **_keyed_errors(),
        },
    }


def _list_models() -> dict[str, Any]:
    return {
        "operationId": "listModels",
        "tags": ["models"],
        "summary": "Every catalog model, with its live state (one model on a model's own port)",
        "responses": {
            "200": {"description": "The catalog.", "content": _json_content("ModelList")},
            **_keyed_errors(),
        },
    }


def _get_model() -> dict[str, Any]:
    return {
        "operationId": "getModel",
        "tags": ["models"],
        "summary": "One model, by id or alias",
        "parameters": [{"$ref": "#/components/parameters/model"}],
        "responses": {
            "200": {"description": "The model.", "content": _json_content("Model")},
            **_keyed_errors(("404", "NotFound")),
        },
    }


def _proxied(route: str, *, path_form: bool) -> dict[str, Any]:
    audio = route.startswith("/v1/audio/")
    body_schema = "AudioRequest" if audio else "PathFormRequest" if path_form else "ProxiedRequest"
    media = "multipart/form-data" if audio else JSON
    parameters: list[dict[str, str]] = [
        {"$ref": "#/components/parameters/Prefer"},
        {"$ref": "#/components/parameters/X-Request-Id"},
        {"$ref": "#/components/parameters/Content-Encoding"},
    ]
    if path_form:
        parameters.insert(0, {"$ref": "#/components/parameters/model"})
    name = route.strip("/").replace("/", "_")
    return {
        "operationId": f"{name}_by_path" if path_form else name,
        "tags": ["openai"],
        "summary": f"`{route}`, with the model named in the path" if path_form else f"`{route}`",
        "description": (
            "Routed by model: the model is started if it is not running (the request waits, bounded "
            "by its timeouts; a streaming one gets SSE comments meanwhile), then the request is "
            "forwarded to its engine and the answer relayed as it comes."
        ),
        "parameters": parameters,
        "requestBody": {"required": True, "content": {media: {"schema": {"$ref": SCHEMAS + body_schema}}}},
        "responses": {
            "200": {
                "description": (
                    "The engine's answer, relayed (an event stream when `stream` is true; its schema "
                    "is each event's)."
                ),
                "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
                "content": {
                    JSON: {"schema": {"type": "object"}},
                    SSE: {"schema": {"$ref": SCHEMAS + "ProxiedEvent"}},
                    "text/plain": {"schema": {"type": "string"}},
                },
            },
            "400": _ref("BadRequest"),
            **_keyed_errors(
                ("404", "ProxyNotFound"),
                ("408", "RequestTimeout"),
                ("413", "RequestTooLarge"),
                ("415", "UnsupportedMediaType"),
                ("429", "QueueFull"),
                ("4XX", "EngineRefused"),
                ("502", "UpstreamError"),
                ("503", "ServiceUnavailable"),
                ("504", "GatewayTimeout"),
            ),
        },
    }


def _admin_paths() -> dict[str, dict[str, Any]]:
    model_param = [{"$ref": "#/components/parameters/model"}]
    accepted = {
        "description": "Done or under way; the model as it is now.",
        "content": _json_content("ModelStatus"),
    }
    by_name = _keyed_errors(("400", "BadRequest"), ("404", "NotFound"))
    return {
        "/api/v1/status": {
            "get": {
                "operationId": "status",
                "tags": ["admin"],
                "summary": "The daemon and every enabled model",
                "responses": {
                    "200": {"description": "The daemon's state.", "content": _json_content("DaemonStatus")},
                    **_keyed_errors(),
                },
            }
        },
        "/api/v1/models/{model}/start": {
            "post": {
                "operationId": "startModel",
                "tags": ["admin"],
                "summary": "Start a model now, without a request",
                "parameters": model_param,
                "responses": {"202": accepted, **by_name},
            }
        },
        "/api/v1/models/{model}/stop": {
            "post": {
                "operationId": "stopModel",
                "tags": ["admin"],
                "summary": "Stop a model: drain its requests first, or at once with `now`",
                "parameters": [
                    *model_param,
                    {
                        "name": "now",
                        "in": "query",
                        "required": False,
                        "description": "`1`, `true` or `yes`: stop at once, ending its requests.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"202": accepted, **by_name},
            }
        },
        "/api/v1/models/{model}/preflight": {
            "get": {
                "operationId": "preflight",
                "tags": ["admin"],
                "summary": "What a model lacks on this node to start: weights, image, and what to run",
                "description": (
                    "The check a model's unit runs before its engine; the node that owns a model "
                    "spanning several asks it of each before anything stops (#15)."
                ),
                "parameters": model_param,
                "responses": {
                    "200": {
                        "description": "Ready, or what is missing.",
                        "content": _json_content("PreflightStatus"),
                    },
                    **by_name,
                },
            }
        },
        "/api/v1/models/{model}/pull": {
            "post": {
                "operationId": "pullModel",
                "tags": ["admin"],
                "summary": "Fetch a model's weights into this node's cache, with its progress",
                "description": (
                    "Asked by `sparkctl pull` on another node of the cluster for a model that spans "
                    "nodes (#15); disabled models too. The repository and revision are this node's "
                    "catalog's. The body is NDJSON, one `PullEvent` a line: `line` events, then "
                    "one `done` (with what the model still lacks here, e.g. its image) or `failed`. "
                    "One pull per model: a second request follows the running one, and a client "
                    "that leaves does not stop it."
                ),
                "parameters": model_param,
                "responses": {
                    "200": {
                        "description": "The pull's progress and outcome; the schema is each line's.",
                        "content": {"application/x-ndjson": {"schema": {"$ref": SCHEMAS + "PullEvent"}}},
                    },
                    **by_name,
                },
            }
        },
        "/api/v1/images": {
            "get": {
                "operationId": "images",
                "tags": ["admin"],
                "summary": "The images this node's enabled models need, and whether they are here",
                "description": "What `sparkctl images list` shows of this node in a cluster (#15).",
                "responses": {
                    "200": {
                        "description": "One entry per image.",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": SCHEMAS + "ImageStatus"}}
                            }
                        },
                    },
                    **_keyed_errors(),
                },
            }
        },
        "/api/v1/reservations/{model}": _reservation_paths(model_param),
        "/api/v1/events": {
            "get": {
                "operationId": "events",
                "tags": ["admin"],
                "summary": "Model state changes, as server-sent events",
                "description": (
                    "`event: state` with `data:` a `StateEvent`: first one per model (a snapshot), "
                    "then one per change; after each change an `event: eta` (`EtaEvent`) for every "
                    "model on its way whose estimate moved; a `: ping` comment every 15 s. It ends "
                    "only with an `event: error` (the key was revoked) or when the client leaves."
                ),
                "responses": {
                    "200": {
                        "description": "The event stream; the schema is each event's.",
                        "content": {SSE: {"schema": {"$ref": SCHEMAS + "AdminEvent"}}},
                    },
                    **_keyed_errors(),
                },
            }
        },
    }


def _reservation_paths(model_param: list[dict[str, str]]) -> dict[str, Any]:
    """Another node's reservation of this one for a spanning model's worker part (#15)."""

    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": True, "description": description, "schema": schema}

    holder = query(
        "holder", "The node that owns the model: one of this node's `cluster.peers`.", {"type": "string"}
    )
    lease = query(
        "lease",
        "Seconds the reservation lasts unless renewed.",
        {"type": "number", "minimum": 1, "maximum": 600},
    )
    errors = _keyed_errors(("400", "BadRequest"), ("404", "NotFound"), ("409", "Conflict"))
    status = {"content": _json_content("ReservationStatus")}
    return {
        "post": {
            "operationId": "reserve",
            "tags": ["admin"],
            "summary": "Reserve this node for the worker part of a model another node owns, or renew",
            "description": (
                "Queued like a local request for an exclusive model (FIFO, drain, memory gate); once "
                "granted, nothing else starts here until it is released or its lease runs out. "
                "Answers at once: ask again within the lease to renew, and to learn when it is held."
            ),
            "parameters": [*model_param, holder, lease],
            "responses": {
                "200": {"description": "The node is held for the holder.", **status},
                "202": {"description": "The reservation waits its turn.", **status},
                **errors,
            },
        },
        "delete": {
            "operationId": "release",
            "tags": ["admin"],
            "summary": "Release a reservation: the worker part stops, the node is free",
            "parameters": [*model_param, holder],
            "responses": {"204": {"description": "Released (or nothing was held for the holder)."}, **errors},
        },
    }


# ------------------------------------------------------------------------------------ dashboard
def _dashboard_schemas() -> dict[str, Any]:
    return {
        "Caller": {
            "type": "object",
            "required": ["auth", "name", "admin"],
            "properties": {
                "auth": {"enum": ["required", "none"]},
                "name": {"type": ["string", "null"], "description": "The key's name (null: no key)."},
                "admin": {"type": "boolean", "description": "Whether it may start and stop models."},
            },
        },
        "SignIn": {
            "type": "object",
            "required": ["key"],
            "properties": {"key": {"type": "string", "description": "An API key."}},
        },
        "LiveStatus": {
            "type": "object",
            "description": (
                "What the dashboard shows: each enabled model's `ModelStatus` with its description, "
                "node, learned footprint and rates; the disabled ones; each node's memory."
            ),
            "required": ["time", "version", "queue_depth", "nodes", "models", "disabled"],
            "properties": {
                "time": {"type": "number"},
                "version": {"type": "string"},
                "queue_depth": {"type": "integer"},
                "memory_budget": {"type": "number"},
                "degraded": {"type": ["string", "null"]},
                "requests_per_s": {"type": "number"},
                "tokens_per_s": {"type": "number"},
                "nodes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "models": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            {"$ref": SCHEMAS + "ModelStatus"},
                            {
                                "type": "object",
                                "required": ["description", "node", "requests_per_s", "tokens_per_s"],
                                "properties": {
                                    "description": {"type": "string"},
                                    "node": {"type": "string"},
                                    "memory_bytes": {"type": ["integer", "null"]},
                                    "requests_per_s": {"type": "number"},
                                    "tokens_per_s": {"type": "number"},
                                },
                            },
                        ]
                    },
                },
                "disabled": {"type": "array", "items": {"type": "object", "required": ["id"]}},
            },
        },
        "LiveEvent": {
            "oneOf": [
                _event(_json_string("LiveStatus"), "A snapshot.", name="status"),
                _event(_json_string("ErrorEnvelope"), "The stream ends: its key was revoked.", name="error"),
            ]
        },
        "LogLine": {
            "type": "object",
            "required": ["time", "priority", "source", "message"],
            "properties": {
                "time": {"type": "integer", "description": "Microseconds since the epoch (0: unknown)."},
                "priority": {"type": "integer", "description": "syslog priority, 0 (emerg) to 7 (debug)."},
                "source": {"enum": ["engine", "systemd", "journalctl", "sparkctl"]},
                "message": {"type": "string"},
            },
        },
        "LogEvent": {
            "oneOf": [
                _event(_json_string("LogLine"), "One line of the model's journal.", name="line"),
                _event(_json_string("ErrorEnvelope"), "The stream ends: its key was revoked.", name="error"),
            ]
        },
    }


def _dashboard_paths() -> dict[str, dict[str, Any]]:
    html = {"text/html": {"schema": {"type": "string"}}}
    caller = {"description": "Who the caller is.", "content": _json_content("Caller")}
    return {
        "/": {
            "get": {
                "operationId": "root",
                "tags": ["dashboard"],
                "summary": "Redirects to the dashboard, `/ui/`",
                "security": OPEN,
                "responses": {
                    "302": {
                        "description": "To `/ui/`.",
                        "headers": {"Location": {"required": True, "schema": {"const": "/ui/"}}},
                    }
                },
            }
        },
        "/ui/": {
            "get": {
                "operationId": "dashboard",
                "tags": ["dashboard"],
                "summary": "The dashboard's page (it holds no data: it asks for a key, or a session)",
                "security": OPEN,
                "responses": {"200": {"description": "The page.", "content": html}},
            }
        },
        "/ui/assets/{name}": {
            "get": {
                "operationId": "dashboardAsset",
                "tags": ["dashboard"],
                "summary": "The page's script, style sheet and icon",
                "security": OPEN,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            t: {"schema": {"type": "string"}}
                            for t in ("text/javascript", "text/css", "image/svg+xml")
                        },
                    },
                    "404": _ref("NotFound"),
                },
            }
        },
        "/ui/api/session": {
            "get": {
                "operationId": "whoami",
                "tags": ["dashboard"],
                "summary": "Who the key or the session cookie is",
                "security": [*KEYED, {"sessionCookie": []}],
                "responses": {"200": caller, **_keyed_errors()},
            },
            "post": {
                "operationId": "signIn",
                "tags": ["dashboard"],
                "summary": "Exchange a key for a session cookie (from the dashboard's own origin only)",
                "description": (
                    "Sets `sparkctl_session` (HttpOnly, SameSite=Strict), which the other routes take in "
                    "place of a key; a request that changes something with it must carry the "
                    "dashboard's own `Origin`. Without that `Origin`: 403."
                ),
                "security": OPEN,
                "requestBody": {"required": True, "content": _json_content("SignIn")},
                "responses": {
                    "200": caller,
                    "400": _ref("BadRequest"),
                    "401": _ref("Unauthorized"),
                    "403": _ref("Forbidden"),
                    "413": _ref("RequestTooLarge"),
                },
            },
            "delete": {
                "operationId": "signOut",
                "tags": ["dashboard"],
                "summary": "End the session (from the dashboard's own origin only)",
                "security": OPEN,
                "responses": {"204": {"description": "Signed out."}, "403": _ref("Forbidden")},
            },
        },
        "/ui/api/live": {
            "get": {
                "operationId": "live",
                "tags": ["dashboard"],
                "summary": "What the dashboard shows, as server-sent snapshots",
                "description": (
                    "`event: status` with `data:` a `LiveStatus`: one at once, one on every model "
                    "state change, and one a second besides. Any key (not only admin keys). It ends "
                    "only with an `event: error` (the key was revoked) or when the client leaves."
                ),
                "security": [*KEYED, {"sessionCookie": []}],
                "responses": {
                    "200": {
                        "description": "The event stream; the schema is each event's.",
                        "content": {SSE: {"schema": {"$ref": SCHEMAS + "LiveEvent"}}},
                    },
                    **_keyed_errors(),
                },
            }
        },
        "/ui/api/logs/{model}": {
            "get": {
                "operationId": "logTail",
                "tags": ["dashboard"],
                "summary": "A model's journal: its last 200 lines, then new ones as they come",
                "security": [*KEYED, {"sessionCookie": []}],
                "parameters": [{"$ref": "#/components/parameters/model"}],
                "responses": {
                    "200": {
                        "description": "The event stream; the schema is each event's.",
                        "content": {SSE: {"schema": {"$ref": SCHEMAS + "LogEvent"}}},
                    },
                    **_keyed_errors(("400", "BadRequest"), ("404", "NotFound"), ("429", "QueueFull")),
                },
            }
        },
    }


__all__ = ["DOCUMENT", "OPENAPI_PATH", "document", "register"]
