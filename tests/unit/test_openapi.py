"""`GET /openapi.json` (BRIEF §9): a valid OpenAPI 3.1 document that names every route the gateway
registers and no other, whose error schemas accept the envelopes the gateway really builds, served
without a key like `/health` and `/healthz`. tests/integration/test_fuzz.py holds the live daemon
to it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from schemathesis import Response
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sparkctl.apikeys import KeyFile
from sparkctl.catalog import load_catalog
from sparkctl.core.supervisor import Supervisor
from sparkctl.errors import ErrorCode
from sparkctl.gateway.app import build_app
from sparkctl.gateway.errors import envelope
from sparkctl.gateway.openapi import document
from sparkctl.gateway.routing import split_path_form
from sparkctl.settings import Settings
from tests.helpers import write_model

METHODS = ("get", "post", "put", "patch", "delete")
SSE = "text/event-stream"
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)  # the OpenAPI 3.1 meta-schema, chosen from the `openapi` field
    assert doc["openapi"] == "3.1.0"
    # pydantic's own `#/$defs/…` would dangle once the records sit under components/schemas
    assert "#/$defs" not in json.dumps(doc)


def test_every_ref_points_into_the_document(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    assert "#/components/schemas/ModelStatus" in refs  # the admin records' own cross-references
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
            node = node[part]


def test_open_routes_ask_no_key_and_the_rest_do(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"]["name"] == "X-Api-Key"
    open_ops = {
        (m.upper(), p)
        for p, item in doc["paths"].items()
        for m, op in item.items()
        if op.get("security") == []
    }
    assert open_ops == {
        ("GET", "/health"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        # the dashboard's page and assets hold no data; signing in and out check key and origin
        ("GET", "/"),
        ("GET", "/ui/"),
        ("GET", "/ui/assets/{name}"),
        ("POST", "/ui/api/session"),
        ("DELETE", "/ui/api/session"),
    }


# 405 answers a method the document does not name for a path: there is no operation to carry it.
HTTP_CODES = [c for c in ErrorCode if c.status != 500 and c is not ErrorCode.METHOD_NOT_ALLOWED]


@pytest.mark.parametrize("code", HTTP_CODES, ids=str)
def test_every_envelope_the_gateway_builds_fits_the_documented_response(
    doc: dict[str, Any], code: ErrorCode
) -> None:
    """An envelope from gateway/errors.py, for each code with an HTTP status, is accepted by the
    response documented for that status; with another code in it, it is not."""
    responses = [r for r in doc["components"]["responses"].values() if _status_of(r, doc) == code.status]
    assert responses, f"no response documented for HTTP {code.status} ({code})"
    body = envelope("something went wrong", code)
    for response in responses:
        schema = response["content"]["application/json"]["schema"]
        assert not list(_validator(doc, schema).iter_errors(body)), (code, response["description"])
    wrong = envelope("x", ErrorCode.INTERNAL_ERROR)
    assert list(_validator(doc, responses[0]["content"]["application/json"]["schema"]).iter_errors(wrong))


def test_the_admin_records_come_from_the_api_models(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    status = doc["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]
    assert status["schema"] == {"$ref": "#/components/schemas/DaemonStatus"}
    assert schemas["DaemonStatus"]["properties"]["models"]["items"] == {
        "$ref": "#/components/schemas/ModelStatus"
    }
    assert set(schemas["ModelState"]["enum"]) >= {"stopped", "starting", "ready"}


def test_a_proxied_body_needs_only_a_model(doc: dict[str, Any]) -> None:
    body = doc["components"]["schemas"]["ProxiedRequest"]
    validator = _validator(doc, body)
    assert validator.is_valid({"model": "m", "messages": [], "anything": {"else": 1}})
    assert not validator.is_valid({"messages": []})
    assert not validator.is_valid({"model": 3})


def _answer(status: int, body: Any, ctype: str = "application/json", **headers: str) -> tuple[Any, ...]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return status, ctype, raw, {k.replace("_", "-"): v for k, v in headers.items()}


STATE = {"model": "m", "state": "ready", "time": 1.5}
MODEL = {
    "id": "m",
    "object": "model",
    "created": 1,
    "owned_by": "sparkctl",
    "state": "stopped",
    "capabilities": ["chat"],
    "context_length": 4096,
    "status": "validated",
    "description": "d",
}
DAEMON = {"version": "0", "started": 1.0, "queue_depth": 0, "memory_budget": 0.9, "models": []}
CHAT = ("/v1/chat/completions", "POST")
ANSWERS = [
    # (route, answer, conforms)
    (CHAT, _answer(404, envelope("x", ErrorCode.MODEL_NOT_FOUND)), True),
    (CHAT, _answer(404, envelope("x", ErrorCode.UNAUTHORIZED)), False),  # a code of another status
    (CHAT, _answer(422, envelope("x", ErrorCode.BAD_REQUEST)), True),  # an engine's own refusal
    (CHAT, _answer(500, envelope("x", ErrorCode.INTERNAL_ERROR)), False),  # undocumented
    (CHAT, _answer(404, b"404: Not Found", "text/plain"), False),  # not the envelope
    (CHAT, _answer(503, envelope("x", ErrorCode.MODEL_LOADING), Retry_After="3"), True),
    (CHAT, _answer(503, {"error": "loading"}), False),
    (CHAT, _answer(200, b'data: {"id":"c"}\n\ndata: [DONE]\n\n', "text/event-stream"), True),
    (CHAT, _answer(200, [1, 2]), False),
    (("/v1/models", "GET"), _answer(200, {"object": "list", "data": [MODEL]}), True),
    (("/v1/models", "GET"), _answer(200, {"object": "list", "data": [{**MODEL, "state": "asleep"}]}), False),
    (("/v1/models", "GET"), _answer(401, envelope("x", ErrorCode.UNAUTHORIZED)), False),  # no challenge
    (
        ("/v1/models", "GET"),
        _answer(401, envelope("x", ErrorCode.UNAUTHORIZED), WWW_Authenticate='Bearer realm="sparkctl"'),
        True,
    ),
    (("/healthz", "GET"), _answer(200, {"status": "ok"}), True),
    (("/healthz", "GET"), _answer(200, {"status": "fine"}), False),
    (("/api/v1/status", "GET"), _answer(200, DAEMON), True),
    (("/api/v1/status", "GET"), _answer(200, {**DAEMON, "models": [{"id": "m"}]}), False),
    (
        ("/api/v1/events", "GET"),
        _answer(200, b"event: state\ndata: " + json.dumps(STATE).encode() + b"\n\n", SSE),
        True,
    ),
    (("/api/v1/events", "GET"), _answer(200, b'event: state\ndata: {"model": "m"}\n\n', SSE), False),
]


@pytest.mark.parametrize(("route", "answer", "conforms"), ANSWERS)
def test_the_document_tells_a_conforming_answer_from_a_wrong_one(
    doc: dict[str, Any], route: tuple[str, str], answer: tuple[Any, ...], conforms: bool
) -> None:
    """What the fuzz's conformance checks read from the document: they do catch a wrong answer."""
    (path, method), (status, ctype, raw, headers) = route, answer
    case = schemathesis.openapi.from_dict(doc)[path][method].Case()
    request = requests.Request(method, f"http://gateway{path}").prepare()
    response = Response(
        status_code=status,
        headers={"content-type": [ctype], **{k: [v] for k, v in headers.items()}},
        content=raw,
        request=request,
        elapsed=0.0,
        verify=True,
    )
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as failures:
        assert not conforms, failures
    else:
        assert conforms, "a wrong answer passed"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    settings = Settings.model_validate({"gateway": {"api_keys_file": str(tmp_path / "api-keys")}})
    write_model(tmp_path / "models", "m-one")
    catalog = load_catalog(settings, [tmp_path / "models"])
    keys = await asyncio.to_thread(KeyFile, tmp_path / "api-keys")  # no file: no key is valid
    yield build_app(settings, catalog, Supervisor(catalog, settings), keys=keys)


async def test_every_route_of_the_app_is_documented_and_nothing_else(
    app: web.Application, doc: dict[str, Any]
) -> None:
    registered = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    documented: set[tuple[str, str]] = set()
    for path, item in doc["paths"].items():
        for method in (m for m in METHODS if m in item):
            concrete = re.sub(r"\{[^}]+\}", "some-model", path)
            match = await app.router.resolve(make_mocked_request(method.upper(), concrete))
            assert match.http_exception is None, f"{method.upper()} {path} is documented but not served"
            resource = match.route.resource
            assert resource is not None
            documented.add((method.upper(), resource.canonical))
            if resource.canonical == "/v1/{model}/{route}":
                assert split_path_form(concrete) is not None, f"{path}: the path form refuses it"
    assert registered - documented == set(), "routes the document does not describe"
    assert documented == registered


async def test_the_document_and_healthz_are_served_without_a_key(app: web.Application) -> None:
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/openapi.json")
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == document()
        health = await client.get("/health")
        healthz = await client.get("/healthz")
        assert healthz.status == health.status == 200
        assert await healthz.json() == await health.json() == {"status": "ok"}
        refused = await client.get("/v1/models")  # the same gateway asks a key elsewhere
        assert refused.status == 401
        assert (await refused.json())["error"]["code"] == "unauthorized"


# ------------------------------------------------------------------------------------- helpers
def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator of OpenAPI 3.1's schema dialect for a schema of the document: its
    `#/components/…` refs resolve against a root that carries the document's components (a
    keyword JSON Schema ignores)."""
    return OAS31Validator({**schema, "components": doc["components"]})


def _status_of(response: dict[str, Any], doc: dict[str, Any]) -> int | None:
    """The HTTP status a component response is used under (the key of its first use)."""
    name = next(n for n, r in doc["components"]["responses"].items() if r is response)
    for item in doc["paths"].values():
        for op in item.values():
            for status, used in op.get("responses", {}).items():
                if used == {"$ref": f"#/components/responses/{name}"} and status.isdigit():
                    return int(status)
    return None
