"""Every route of `/openapi.json`, fuzzed with schemathesis against the real stack (#13): a real
`sparkctl install` into the sandboxed systemd, the daemon socket-activated, an emulated model,
`gateway.max_body` small.

Each operation gets EXAMPLES requests drawn by Hypothesis (schema-valid and schema-violating,
derandomized: the same requests every run) with a user key, an unknown key or none — the admin
key only where it cannot start anything — and then schemathesis's coverage cases (each input at
its edges, of the wrong type or media type, the route under other methods). Every answer must
be: no 5xx but a 503/504 in the envelope; every error the one JSON envelope, with a known code
of its status; conforming to the document (status, content type, headers, body schema).

No refused request may start a model. The fuzzer cannot name one (the catalog's ids are not in
the document), so a model unit that left `inactive` during that run was started by a refused
request; the next test shows the probe does see a start a valid request makes. The last test
names the model in every proxied request, so the engine's answers and refusals are relayed.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sparkctl.errors import ErrorCode
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.weights import write_placeholder
from tests.helpers import write_model
from tests.integration.conftest import SPARKCTL, emulated, install

Operation = APIOperation[Any, Any, Any, Any]
TheCase = Case[Any]
# Ports 29500-29599 are this module's (other modules use 28xxx).
PORT = 29500
ALPHA_PORT = 29510
MAX_BODY = 1024  # gateway.max_body: small, so generated bodies meet the 413 too
EXAMPLES = 50  # generated requests per operation
MODEL = "fz-alpha"
UNIT = f"sparkctl-{MODEL}.service"
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# What a routed request needs for the emulated engine to serve it, where the fuzzer left it out.
ENGINE_MINIMUM: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    "/v1/completions": {"prompt": "hi", "max_tokens": 4},
    "/v1/embeddings": {"input": "hi"},
}
# Explicit, so that no schemathesis.toml lying around changes the run. The event streams (the admin
# API's, the dashboard's snapshots and log tails) never end by themselves: a first event is enough.
CONFIG = schemathesis.Config.from_dict(
    {
        "operations": [
            {"include-path": path, "max-stream-events": 1}
            for path in ("/api/v1/events", "/ui/api/live", "/ui/api/logs/{model}")
        ]
    }
)
# Routes the admin key may be sent to: neither starts a model, and neither answers forever.
ADMIN_SAFE = frozenset({"GET /api/v1/status", "POST /api/v1/models/{model}/stop"})


@dataclass
class Installed:
    box: Box
    admin_key: str
    user_key: str
    url: str


@pytest.fixture(scope="module")
def installed(box: Box) -> Iterator[Installed]:
    base = box.path / "fuzz"
    cat = base / "models"
    emulated(cat, MODEL, ALPHA_PORT, load_time=0.2, serve={"direct_port": 0, "idle_timeout": "60s"})
    write_model(cat, "fz-off", status="disabled", disabled_reason="never runs")  # listed, as disabled
    for d in (base / "hf", base / "compile"):
        d.mkdir(parents=True, exist_ok=True)
    write_placeholder(base / "hf", "org/model")
    config = base / "sparkctl.toml"
    config.write_text(
        f'[gateway]\nlisten = ["127.0.0.1:{PORT}"]\nmax_body = "{MAX_BODY // 1024}k"\n'
        f'[catalog]\ndirs = ["{cat}"]\n'
        f'[runtime]\ncontainer_network = "host"\nsparkctl = "{SPARKCTL}"\nhf_cache = "{base / "hf"}"\n'
        f'compile_cache = "{base / "compile"}"\n'
    )
    admin = install(box, config)
    user = box.run(SPARKCTL, "--config", str(config), "keys", "add", "fuzzer").stdout.strip()
    assert admin.startswith("sk-spark-") and user.startswith("sk-spark-"), (admin, user)
    yield Installed(box, admin, user, f"http://127.0.0.1:{PORT}")
    box.run(SPARKCTL, "--config", str(config), "uninstall", timeout=120)
    left = box.systemctl(
        "list-units", "--plain", "--no-legend", "--state=active,activating", "sparkctl*"
    ).stdout
    box.systemctl("reset-failed", check=False)
    shutil.rmtree(base, ignore_errors=True)
    assert not left.strip(), f"uninstall left units running: {left}"


@dataclass
class Findings:
    """What a run saw: statuses per operation, and each kind of problem with its first example."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    problems: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def report(self) -> str:
        out = [f"{len(self.problems)} kinds of problem:"]
        for (label, kind), examples in sorted(self.problems.items()):
            out.append(f"{label}: {kind} ({len(examples)}x), first:\n{examples[0]}")
        return "\n\n".join(out)

    def total(self) -> int:
        return sum(self.statuses.values())

    def by_status(self) -> dict[int, int]:
        out: Counter[int] = Counter()
        for (_, status), n in self.statuses.items():
            out[status] += n
        return dict(sorted(out.items()))

    def seen(self, label: str | None = None) -> set[int]:
        return {status for (op, status) in self.statuses if label is None or op == label}


@dataclass
class Fuzzer:
    """Sends generated requests to the live daemon and checks each answer.

    `routed`: every proxied request names the catalog's model (in the path, or as the body's
    `model`, with what the emulated engine needs to answer), so it is relayed to the engine."""

    installed: Installed
    schema: BaseSchema
    session: requests.Session
    routed: bool = False
    found: Findings = field(default_factory=Findings)

    def credentials(self, op: Operation) -> dict[str, dict[str, str]]:
        user = {"Authorization": f"Bearer {self.installed.user_key}"}
        if self.routed:
            return {"user key": user}
        out = {
            "user key": user,
            "user key as X-Api-Key": {"X-Api-Key": self.installed.user_key},
            "unknown key": {"Authorization": "Bearer sk-spark-not-a-key"},
            "no key": {},
        }
        if op.label in ADMIN_SAFE:
            out["admin key"] = {"Authorization": f"Bearer {self.installed.admin_key}"}
        return out

    def generated(self, op: Operation) -> None:
        """EXAMPLES requests drawn by Hypothesis, schema-valid and schema-violating, each with one
        of the credentials."""
        credentials = self.credentials(op)
        modes = [GenerationMode.POSITIVE]
        if any(True for _ in op.iter_parameters()):  # something to get wrong on purpose
            modes.append(GenerationMode.NEGATIVE)
        cases = st.one_of([op.as_strategy(generation_mode=mode) for mode in modes])

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,  # the same requests every run
            database=None,
            phases=[Phase.explicit, Phase.generate],  # problems are collected, not shrunk
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases, who=st.sampled_from(sorted(credentials)))
        def run(case: TheCase, who: str) -> None:
            self.send(op, case, who, credentials[who])

        run()

    def boundaries(self, op: Operation) -> None:
        """schemathesis's coverage cases: each parameter and body at its edges, missing, of the
        wrong type, with the wrong media type, and the route under other methods. Deterministic."""
        who = "admin key" if op.label in ADMIN_SAFE and not self.routed else "user key"
        credentials = self.credentials(op)[who]
        config = self.schema.config.generation_for(operation=op)
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        for case in self.schema.iter_coverage_cases(op, generation_modes=modes, generation_config=config):
            self.send(op, case, who, credentials)

    def send(self, op: Operation, case: TheCase, who: str, credentials: dict[str, str]) -> None:
        # The credentials replace any the case made up, so each request is of one known kind.
        if case.headers is not None:
            for name in [h for h in case.headers if h.lower() in ("authorization", "x-api-key")]:
                del case.headers[name]
        if self.routed:
            _route_to_the_model(op, case)
        response = case.call(
            base_url=self.installed.url, session=self.session, headers=credentials, timeout=30
        )
        label = op.label if case.method.upper() == op.method.upper() else f"{case.method.upper()} {op.path}"
        self.found.statuses[(label, response.status_code)] += 1
        for kind in _problems(case, response, other_method=label != op.label):
            self.found.problems.setdefault((label, kind), []).append(f"({who}) {_example(case, response)}")


def _route_to_the_model(op: Operation, case: TheCase) -> None:
    if case.path_parameters is not None and "model" in case.path_parameters:
        case.path_parameters["model"] = MODEL
    elif isinstance(case.body, dict):
        case.body["model"] = MODEL
    if isinstance(case.body, dict):  # enough for the engine to answer; the rest as generated
        for key, value in ENGINE_MINIMUM.get(op.path.replace("/v1/{model}/", "/v1/"), {}).items():
            case.body.setdefault(key, value)


def test_every_documented_route_holds_to_the_document_under_fuzzing(installed: Installed) -> None:
    t0 = time.monotonic()
    schema = _schema(installed, wait=30)
    loaded = list(schema.get_all_operations())
    operations = [r.ok() for r in loaded if isinstance(r, Ok)]
    assert len(operations) == len(loaded), "an operation of the document failed to load"
    labels = {op.label for op in operations}
    assert {"POST /v1/chat/completions", "POST /api/v1/models/{model}/start", "GET /healthz"} <= labels
    pid = _daemon_pid(installed.box)
    assert _started_since_boot(installed.box) is False  # nothing ran before the fuzzing either

    with requests.Session() as session:
        fuzzer = Fuzzer(installed, schema, session)
        for op in operations:
            fuzzer.generated(op)
            fuzzer.boundaries(op)
    found = fuzzer.found
    elapsed = time.monotonic() - t0

    assert not found.problems, found.report()
    # Every kind of refusal was met, so the checks were not vacuous.
    assert {200, 400, 401, 403, 404, 405, 413, 415} <= found.seen(), sorted(found.statuses.items())
    # the admin key got past the door where it was given
    assert 200 in found.seen("GET /api/v1/status") and 404 in found.seen("POST /api/v1/models/{model}/stop")
    # The daemon neither died nor restarted under it, and no refused request started a model.
    assert _daemon_pid(installed.box) == pid and _restarts(installed.box) == 0
    assert _started_since_boot(installed.box) is False, f"a refused request started {UNIT}"
    print(
        f"\n{found.total()} requests to {len(operations)} operations in {elapsed:.1f}s: {found.by_status()}"
    )


def test_the_start_probe_sees_a_start_and_admin_answers_conform(installed: Installed) -> None:
    """The probe the fuzz relies on does see a start that a valid request makes; the admin API's
    2xx answers and its event stream hold to the document too."""
    schema = _schema(installed)
    user = {"Authorization": f"Bearer {installed.user_key}"}
    admin = {"Authorization": f"Bearer {installed.admin_key}"}
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    chat = schema["/v1/chat/completions"]["POST"].Case(body=body, media_type="application/json")
    _must_conform(chat, chat.call(headers=user, timeout=60), 200)
    assert _started_since_boot(installed.box) is True

    status = schema["/api/v1/status"]["GET"].Case()
    _must_conform(status, status.call(headers=admin, timeout=10), 200)
    stop = schema["/api/v1/models/{model}/stop"]["POST"].Case(
        path_parameters={"model": MODEL}, query={"now": "1"}
    )
    _must_conform(stop, stop.call(headers=admin, timeout=30), 202)

    events = schema["/api/v1/events"]["GET"].Case()
    response = events.call(headers=admin, timeout=10)  # read up to its first event (CONFIG)
    _must_conform(events, response, 200)
    assert response.stream_cut_short and b"event: state\ndata: {" in response.content


def test_requests_for_a_real_model_hold_to_the_document_under_fuzzing(installed: Installed) -> None:
    """The same checks with the catalog's model named in every proxied request: what the gateway
    relays, and how it passes on an engine's refusals. First a request that will not wait for the
    stopped model: 503 `model_loading` with Retry-After."""
    t0 = time.monotonic()
    schema = _schema(installed)
    user = {"Authorization": f"Bearer {installed.user_key}"}
    assert not _started_now(installed.box)  # the previous test stopped it
    body: dict[str, Any] = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    hurry = schema["/v1/completions"]["POST"].Case(
        body=body, media_type="application/json", headers={"Prefer": "wait=0"}
    )
    response = hurry.call(headers=user, timeout=30)
    _must_conform(hurry, response, 503)
    assert _envelope_code(response) is ErrorCode.MODEL_LOADING and response.headers.get("retry-after")

    proxied = [
        op
        for r in schema.get_all_operations()
        if isinstance(r, Ok) and "openai" in ((op := r.ok()).tags or [])
    ]
    assert len(proxied) == 20
    with requests.Session() as session:
        fuzzer = Fuzzer(installed, schema, session, routed=True)
        for op in proxied:
            fuzzer.generated(op)
            fuzzer.boundaries(op)
    found = fuzzer.found
    elapsed = time.monotonic() - t0

    assert not found.problems, found.report()
    served = {label for (label, status) in found.statuses if status == 200}
    assert {"POST /v1/chat/completions", "POST /v1/{model}/completions"} <= served, sorted(
        found.statuses.items()
    )
    assert _restarts(installed.box) == 0
    print(
        f"\n{found.total()} routed requests to {len(proxied)} operations in {elapsed:.1f}s: {found.by_status()}"
    )


# ------------------------------------------------------------------------------------- checks
def _schema(installed: Installed, wait: float | None = None) -> BaseSchema:
    return schemathesis.openapi.from_url(
        f"{installed.url}/openapi.json", config=CONFIG, wait_for_schema=wait, timeout=10
    )


def _problems(case: TheCase, response: Response, *, other_method: bool = False) -> list[str]:
    """What is wrong with one answer: a server error, an error outside the envelope, or a
    departure from the document. A method the document does not name for the path must be
    refused, in the envelope."""
    status = response.status_code
    kinds: list[str] = []
    if status >= 400:
        code = _envelope_code(response)
        if code is None:
            kinds.append(f"HTTP {status} without the JSON error envelope")
        elif not _code_fits(code, status):
            kinds.append(f"HTTP {status} with code {code.value} (which means HTTP {code.status})")
        if status >= 500 and not (status in (503, 504) and code is not None):
            kinds.append(f"server error HTTP {status}")
    if other_method:  # refused, in the envelope (405, or first the key's 401/403, or the path form's 404)
        if not 400 <= status < 500:
            kinds.append(f"HTTP {status} for a method the route does not have")
        return kinds
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        kinds.extend(
            f"{type(f).__name__}: {f.title}: {f.message.splitlines()[0][:200]}" for f in group.exceptions
        )
    return kinds


def _content_type(response: Response) -> str:
    return response.headers.get("content-type", [""])[0]


def _envelope_code(response: Response) -> ErrorCode | None:
    """The code of a well-formed error envelope (BRIEF §4.5), else None."""
    if not _content_type(response).startswith("application/json"):
        return None
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return None
    if not isinstance(error["message"], str) or not isinstance(error["param"], str | None):
        return None
    code = ErrorCode._value2member_map_.get(error["code"])
    if not isinstance(code, ErrorCode) or error["type"] != code.error_type:
        return None
    return code


def _code_fits(code: ErrorCode, status: int) -> bool:
    # An engine's own refusal keeps its 4xx status, with code bad_request (gateway/upstream.py).
    return code.status == status or (code is ErrorCode.BAD_REQUEST and 400 <= status < 500)


def _must_conform(case: TheCase, response: Response, status: int) -> None:
    assert response.status_code == status, _example(case, response)
    assert not _problems(case, response), _example(case, response)


def _example(case: TheCase, response: Response) -> str:
    curl = case.as_curl_command(headers=dict(response.request.headers))
    text = response.content[:400].decode("utf-8", "replace")
    return f"{curl}\n-> HTTP {response.status_code} {_content_type(response)}: {text}"


# ------------------------------------------------------------------------------- the sandbox
def _daemon_pid(box: Box) -> str:
    pid = box.systemctl("show", "-p", "MainPID", "--value", "sparkctl.service").stdout.strip()
    assert pid not in ("", "0"), "sparkctl.service is not running"
    return pid


def _restarts(box: Box) -> int:
    return int(box.systemctl("show", "-p", "NRestarts", "--value", "sparkctl.service").stdout.strip())


def _started_now(box: Box) -> bool:
    return box.systemctl("is-active", UNIT, check=False).stdout.strip() in ("active", "activating")


def _started_since_boot(box: Box) -> bool:
    """Whether the model's unit has ever left `inactive` since it was installed."""
    stamp = box.systemctl("show", "-p", "InactiveExitTimestampMonotonic", "--value", UNIT).stdout.strip()
    return stamp not in ("", "0")
