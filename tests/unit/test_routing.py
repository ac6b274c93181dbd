"""What the gateway decides from the catalog alone, before anything is scheduled: whether the
model can serve the route, what an unknown name probably meant, and the words a waiting stream
hears."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sparkctl.catalog import Catalog, load_catalog
from sparkctl.core.estimate import Eta
from sparkctl.core.states import ModelState
from sparkctl.errors import RouteNotSupportedError, UnknownModelError
from sparkctl.gateway.routing import MODEL_ROUTES, ROUTE_NEEDS, check_route
from sparkctl.gateway.waiting import waiting_comment
from sparkctl.settings import Settings
from tests.helpers import write_model


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    write_model(tmp_path, "qwen-chat", capabilities=["chat", "tools"], aliases=["qwen"])
    write_model(tmp_path, "bge-embed", capabilities=["embeddings"])
    write_model(tmp_path, "whisper", capabilities=["audio"])
    write_model(tmp_path, "coder", capabilities=["code"])
    return load_catalog(Settings(), [tmp_path])


@pytest.mark.parametrize(
    ("model", "route", "served"),
    [
        ("qwen-chat", "/v1/chat/completions", True),
        ("qwen-chat", "/v1/responses", True),
        ("qwen-chat", "/v1/messages", True),
        ("coder", "/v1/completions", True),
        ("qwen-chat", "/v1/embeddings", False),
        ("qwen-chat", "/v1/audio/transcriptions", False),
        ("bge-embed", "/v1/embeddings", True),
        ("bge-embed", "/v1/rerank", True),
        ("bge-embed", "/v1/chat/completions", False),
        ("bge-embed", "/v1/messages", False),
        ("whisper", "/v1/audio/translations", True),
        ("whisper", "/v1/responses", False),
        ("whisper", "/tokenize", True),
    ],
)
def test_a_route_is_checked_against_the_models_capabilities(
    catalog: Catalog, model: str, route: str, served: bool
) -> None:
    if served:
        check_route(catalog, catalog.models[model], route)
        return
    with pytest.raises(RouteNotSupportedError) as refused:
        check_route(catalog, catalog.models[model], route)
    assert refused.value.code.value == "route_not_supported" and refused.value.code.status == 400
    assert f"'{model}' does not serve {route}" in refused.value.message
    assert "Models that do:" in refused.value.message  # each route has a model that serves it here


def test_every_model_route_is_either_open_to_all_or_has_its_needs() -> None:
    assert set(ROUTE_NEEDS) <= set(MODEL_ROUTES)
    assert set(MODEL_ROUTES) - set(ROUTE_NEEDS) == {"/tokenize", "/detokenize"}


@pytest.mark.parametrize(
    ("asked", "suggested"),
    [("qwen-chta", "'qwen-chat'"), ("Qwen", "'qwen'"), ("bge-embd", "'bge-embed'"), ("whispr", "'whisper'")],
)
def test_an_unknown_name_suggests_the_close_ones(catalog: Catalog, asked: str, suggested: str) -> None:
    with pytest.raises(UnknownModelError) as unknown:
        catalog.resolve(asked)
    assert f"The model '{asked}' does not exist. Did you mean {suggested}" in unknown.value.message


def test_a_name_like_none_suggests_nothing(catalog: Catalog) -> None:
    with pytest.raises(UnknownModelError) as unknown:
        catalog.resolve("llama-405b")
    assert unknown.value.message == "The model 'llama-405b' does not exist."


@dataclass
class _View:
    state: ModelState


class _Supervisor:
    def __init__(self, state: ModelState, ahead: int, eta: float | None) -> None:
        self._state, self._ahead, self._eta = state, ahead, eta

    def eta(self, model: str) -> Eta | None:
        return Eta(self._eta, guess=False) if self._eta is not None else None

    def view(self, model: str) -> _View:
        return _View(self._state)

    def ahead_of(self, model: str) -> int:
        return self._ahead


@dataclass
class _Gateway:
    supervisor: _Supervisor


@pytest.mark.parametrize(
    ("state", "ahead", "eta", "said"),
    [
        (ModelState.STOPPED, 2, None, "(queued, 2 ahead)"),
        (ModelState.QUEUED, 0, None, "(queued)"),
        (ModelState.STARTING, 0, None, "(starting)"),
        (ModelState.STARTING, 0, 41.6, "(starting, eta=42s)"),
        (ModelState.FAILED, 1, 90.0, "(queued, 1 ahead, eta=90s)"),
    ],
)
def test_a_waiting_stream_hears_where_it_stands(
    catalog: Catalog, state: ModelState, ahead: int, eta: float | None, said: str
) -> None:
    gw = _Gateway(_Supervisor(state, ahead, eta))
    comment = waiting_comment(gw, catalog.models["qwen-chat"])  # type: ignore[arg-type]
    assert comment == f": sparkctl: waiting for qwen-chat {said}\n\n".encode()
