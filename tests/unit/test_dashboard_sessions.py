"""The dashboard's sessions (gateway/sessions.py): a token stands for its key as the key file has it
now, expires, is bounded in number, and a cookie-borne change must come from the page's own origin."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from sparkctl.apikeys import KeyStore
from sparkctl.errors import ForbiddenError
from sparkctl.gateway import sessions
from sparkctl.gateway.sessions import IDLE, LIFETIME, Sessions, same_origin


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store() -> KeyStore:
    s = KeyStore()
    s.add("ops", admin=True)
    s.add("app")
    return s


def test_a_token_stands_for_its_key_and_only_its_digest_is_kept(store: KeyStore) -> None:
    sess = Sessions()
    ops = store.entries()[0]
    token = sess.open(ops)
    assert sess.entry(token, store) == ops
    assert token not in repr(sess._by_token)  # only digests are kept
    assert sess.entry(token + "x", store) is None
    assert sess.entry(None, store) is None and sess.entry("", store) is None


def test_revoking_the_key_ends_its_sessions_and_a_scope_change_applies_at_once(store: KeyStore) -> None:
    sess = Sessions()
    ops, app = store.entries()
    t_ops, t_app = sess.open(ops), sess.open(app)
    store.revoke("app")
    assert sess.entry(t_app, store) is None
    assert len(sess) == 1  # forgotten, not kept for later
    demoted = KeyStore([type(ops)(ops.name, "user", ops.sha256, ops.created)])
    entry = sess.entry(t_ops, demoted)
    assert entry is not None and not entry.admin  # the key's rights now, not at sign-in


def test_sessions_expire_when_idle_and_after_their_lifetime(store: KeyStore) -> None:
    clock = Clock()
    sess = Sessions(clock)
    ops = store.entries()[0]
    idle = sess.open(ops)
    clock.t += IDLE + 1
    assert sess.entry(idle, store) is None
    busy = sess.open(ops)
    while clock.t < 1000 + IDLE + 1 + LIFETIME - IDLE / 2:
        clock.t += IDLE / 2
        assert sess.entry(busy, store) is not None  # used: kept alive
    clock.t += IDLE / 2 + 2
    assert sess.entry(busy, store) is None  # but never past its lifetime


def test_signing_in_in_a_loop_cannot_grow_the_daemon(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    sess = Sessions()
    ops = store.entries()[0]
    tokens = [sess.open(ops) for _ in range(5)]
    assert len(sess) == 3
    assert sess.entry(tokens[0], store) is None and sess.entry(tokens[-1], store) is not None


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"Origin": "http://127.0.0.1:8009"}, True),
        ({"Origin": "http://127.0.0.1:8009", "Sec-Fetch-Site": "same-origin"}, True),
        ({}, False),  # a browser always sends Origin on POST and DELETE
        ({"Origin": "null"}, False),  # a sandboxed frame, a file: page
        ({"Origin": "http://evil.example"}, False),
        ({"Origin": "http://127.0.0.1:8010"}, False),  # another port is another origin
        ({"Origin": "http://127.0.0.1:8009.evil.example"}, False),
        ({"Origin": "ftp://127.0.0.1:8009"}, False),
        ({"Origin": "http://127.0.0.1:8009", "Sec-Fetch-Site": "cross-site"}, False),
        ({"Origin": "http://127.0.0.1:8009", "Sec-Fetch-Site": "same-site"}, False),
    ],
)
def test_a_cookie_borne_change_must_come_from_the_pages_own_origin(headers: dict[str, str], ok: bool) -> None:
    request = make_mocked_request(
        "POST", "/api/v1/models/m/stop", headers={"Host": "127.0.0.1:8009", **headers}
    )
    if ok:
        same_origin(request)
    else:
        with pytest.raises(ForbiddenError):
            same_origin(request)
