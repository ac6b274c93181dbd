"""API keys: the key file (hashes only, strict reading), the daemon's reloading view of it, the
header parsing the gateway uses, and `sparkctl keys` — all on real files."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from multidict import CIMultiDict

from sparkctl.apikeys import KeyEntry, KeyFile, KeyStore, edit, hash_key, presented_key
from sparkctl.apikeys import store as key_store
from sparkctl.cli import cli
from sparkctl.errors import InvalidKeyNameError, KeyExistsError, KeyFileError, KeyNotFoundError

KEY_RE = re.compile(r"^sk-spark-[A-Za-z0-9_-]{43}$")
DIGEST = "0" * 64


def _file(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _entry(name: str = "a", **over: Any) -> dict[str, Any]:
    return {"name": name, "scope": "user", "sha256": DIGEST, "created": "2025-01-01T00:00:00Z", **over}


# ------------------------------------------------------------------------------------- the store


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    store = KeyStore.load(path)
    assert store.entries() == ()  # a missing file holds no keys
    k1, k2 = store.add("alice"), store.add("ops.admin", admin=True)
    assert KEY_RE.match(k1) and KEY_RE.match(k2) and k1 != k2
    store.save(path)
    again = KeyStore.load(path)
    assert again.entries() == store.entries()
    assert [(e.name, e.scope, e.admin) for e in again.entries()] == [
        ("alice", "user", False),
        ("ops.admin", "admin", True),
    ]
    created = again.entries()[0].created
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", created)


def test_only_digests_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    store = KeyStore()
    key = store.add("alice")
    store.save(path)
    text = path.read_text()
    assert key not in text and key[len("sk-spark-") :] not in text
    data = json.loads(text)
    assert data["version"] == 1
    assert data["keys"] == [
        {"name": "alice", "scope": "user", "sha256": hash_key(key), "created": data["keys"][0]["created"]}
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # No temporary file left behind by the atomic write.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api-keys"]


def test_duplicate_and_invalid_names() -> None:
    store = KeyStore()
    store.add("alice")
    with pytest.raises(KeyExistsError) as exc:
        store.add("alice", admin=True)
    assert exc.value.code == "key_exists" and "'alice' already exists" in exc.value.message
    for bad in ("", "-x", ".x", "a b", "a/b", "x" * 65, "é", "a\n"):
        with pytest.raises(InvalidKeyNameError):
            store.add(bad)
    store.add("x" * 64)
    assert [e.name for e in store.entries()] == ["alice", "x" * 64]


def test_revoke(tmp_path: Path) -> None:
    store = KeyStore()
    key = store.add("alice")
    store.add("bob")
    assert store.revoke("alice").name == "alice"
    assert [e.name for e in store.entries()] == ["bob"]
    assert store.authenticate(key) is None
    with pytest.raises(KeyNotFoundError) as exc:
        store.revoke("alice")
    assert exc.value.code == "key_not_found"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "{not json",
            ["not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"],
        ),
        ("", ["empty file (delete it to have no keys)"]),
        ([], ['must be a JSON object with "version" and "keys"']),
        ({"version": 2, "keys": []}, ["version: must be 1 (got 2)"]),
        ({"version": True, "keys": []}, ["version: must be 1 (got true)"]),
        ({"keys": []}, ["version: must be 1 (missing)"]),
        ({"version": 1}, ["keys: must be a list (missing)"]),
        ({"version": 1, "keys": {}}, ["keys: must be a list (got an object)"]),
        ({"version": 1, "keys": [], "extra": 1}, ["extra: unknown key (allowed: keys, version)"]),
        (
            {"version": 1, "keys": [_entry(scope="root")]},
            ['keys[0].scope: must be "admin" or "user" (got "root")'],
        ),
        (
            {"version": 1, "keys": [_entry("a"), _entry("b", sha256="1" * 64), _entry("a", sha256="2" * 64)]},
            ["keys[2].name: duplicate name 'a' (also keys[0])"],
        ),
        (
            {"version": 1, "keys": [_entry("a"), _entry("b")]},
            ["keys[1].sha256: same digest as keys[0] (one key twice)"],
        ),
        ({"version": 1, "keys": [_entry(sha256="ABC")]}, ["keys[0].sha256: must be 64 lowercase hex digits"]),
        (
            {"version": 1, "keys": [_entry(sha256=DIGEST + "\n")]},
            ["keys[0].sha256: must be 64 lowercase hex digits"],
        ),
        (
            {"version": 1, "keys": [_entry(created="yesterday")]},
            ['keys[0].created: must be an ISO-8601 time (got "yesterday")'],
        ),
        (
            {"version": 1, "keys": [_entry(name="a b")]},
            ['keys[0].name: invalid name "a b" (A-Z a-z 0-9 . _ -, ≤ 64)'],
        ),
        ({"version": 1, "keys": ["a"]}, ["keys[0]: must be an object (got a string)"]),
        (
            {"version": 1, "keys": [{"name": "a", "key": "sk-spark-x"}]},
            [
                "keys[0].key: unknown key (allowed: name, scope, sha256, created)",
                "keys[0].scope: missing",
                "keys[0].sha256: missing",
                "keys[0].created: missing",
            ],
        ),
    ],
)
def test_malformed_files_are_precise_errors(tmp_path: Path, content: Any, expected: list[str]) -> None:
    path = _file(tmp_path / "api-keys", content)
    with pytest.raises(KeyFileError) as exc:
        KeyStore.load(path)
    assert exc.value.code == "api_keys_invalid"
    assert [str(i) for i in exc.value.issues] == [f"{path}: {e}" for e in expected]
    assert str(path) in str(exc.value)


def test_unreadable_file_is_an_error_not_no_keys(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    path.mkdir()  # reading a directory fails even as root
    with pytest.raises(KeyFileError) as exc:
        KeyStore.load(path)
    assert str(exc.value.issues[0]).startswith(f"{path}: cannot read: ")


def test_authenticate() -> None:
    store = KeyStore()
    user, admin = store.add("u"), store.add("root", admin=True)
    assert store.authenticate(user) == store.get("u")
    entry = store.authenticate(admin)
    assert isinstance(entry, KeyEntry) and entry.admin and entry.name == "root"
    for bad in (None, "", user + "x", user[:-1], "sk-spark-" + "A" * 43, "\udcff"):
        assert store.authenticate(bad) is None
    store.revoke("u")
    assert store.authenticate(user) is None and store.authenticate(admin) is not None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer sk-1"}, "sk-1"),
        ({"authorization": "bearer   sk-1  "}, "sk-1"),
        ({"AUTHORIZATION": "BEARER sk-1"}, "sk-1"),
        ({"x-api-key": "sk-2"}, "sk-2"),
        ({"X-Api-Key": " sk-2 "}, "sk-2"),
        ({"Authorization": "Bearer sk-1", "x-api-key": "sk-2"}, "sk-1"),
        ({"Authorization": "Basic dXNlcjpwYXNz", "x-api-key": "sk-2"}, "sk-2"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "Bearer   "}, None),
        ({"x-api-key": "  "}, None),
        ({}, None),
    ],
)
def test_presented_key(headers: dict[str, str], expected: str | None) -> None:
    assert presented_key(headers) == expected
    assert presented_key(CIMultiDict(headers)) == expected  # what aiohttp hands the gateway


# ------------------------------------------------------------------------------------ the watcher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keyfile_picks_up_add_and_revoke(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    clock = Clock()
    kf = KeyFile(path, clock=clock)  # no file yet: no keys
    assert kf.authenticate("anything") is None

    with edit(path) as store:
        k1 = store.add("alice")
    assert kf.authenticate(k1) is None  # within the interval the file is not looked at
    clock.now += 1.0
    assert kf.authenticate(k1) == KeyEntry("alice", "user", hash_key(k1), kf.store.entries()[0].created)

    with edit(path) as store:
        k2 = store.add("bob", admin=True)
        store.revoke("alice")
    clock.now += 0.5
    assert kf.authenticate(k1) is not None and kf.authenticate(k2) is None
    clock.now += 0.5
    assert kf.authenticate(k1) is None
    entry = kf.authenticate(k2)
    assert entry is not None and entry.admin
    assert not kf.refresh(force=True)  # unchanged: not re-read

    path.unlink()  # a deleted file holds no keys
    assert kf.refresh(force=True) and kf.authenticate(k2) is None


def test_keyfile_keeps_last_good_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "api-keys"
    with edit(path) as store:
        key = store.add("alice")
    clock = Clock()
    kf = KeyFile(path, clock=clock)
    path.write_text('{"version": 1, "keys": [')
    clock.now += 1.0
    with caplog.at_level(logging.ERROR, logger="sparkctl.keys"):
        assert kf.authenticate(key) is not None
        clock.now += 5.0
        assert kf.authenticate(key) is not None
    errors = [r for r in caplog.records if r.name == "sparkctl.keys" and r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per change of the file, not once a second
    assert f"{path}: not valid JSON" in errors[0].getMessage()
    assert "keeping the 1 keys loaded before" in errors[0].getMessage()

    # Once the file is valid again, its content is what counts.
    fixed = KeyStore()
    other = fixed.add("bob")
    fixed.save(path)
    clock.now += 1.0
    assert kf.authenticate(other) is not None and kf.authenticate(key) is None


def test_keyfile_invalid_at_start_is_an_error(tmp_path: Path) -> None:
    path = _file(tmp_path / "api-keys", {"version": 1, "keys": [_entry(scope="root")]})
    with pytest.raises(KeyFileError):
        KeyFile(path)


def test_edits_are_serialized(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"

    def add(i: int) -> None:
        with edit(path) as store:
            store.add(f"k{i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.name for e in KeyStore.load(path).entries()) == sorted(f"k{i}" for i in range(16))


def test_failed_edit_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    with edit(path) as store:
        store.add("alice")
    before = path.stat()
    with pytest.raises(KeyExistsError), edit(path) as store:
        store.add("bob")
        store.add("alice")
    assert path.stat().st_ino == before.st_ino
    assert [e.name for e in KeyStore.load(path).entries()] == ["alice"]


# ----------------------------------------------------------------------------- mode and ownership


def test_mode_preserved_across_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    with edit(path) as store:
        store.add("a")
    os.chmod(path, 0o600)
    with edit(path) as store:
        store.add("b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_owner_and_group_preserved_and_new_file_goes_to_daemon_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "api-keys"
    with edit(path) as store:
        store.add("a")
    os.chown(path, 12345, 23456)
    os.chmod(path, 0o640)
    with edit(path) as store:
        store.add("b")
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (12345, 23456, 0o640)

    monkeypatch.setattr(key_store, "DAEMON_GROUP", "nogroup")
    import grp

    fresh = tmp_path / "fresh" / "api-keys"
    with edit(fresh, create_dir=True) as store:
        store.add("a")
    assert fresh.stat().st_gid == grp.getgrnam("nogroup").gr_gid


# ----------------------------------------------------------------------------------------- the CLI


@pytest.fixture
def config(tmp_path: Path) -> tuple[Path, Path]:
    keyfile = tmp_path / "etc" / "sparkctl" / "api-keys"  # its directory does not exist yet
    cfg = tmp_path / "sparkctl.toml"
    cfg.write_text(f"[gateway]\napi_keys_file = {json.dumps(str(keyfile))}\n")
    return cfg, keyfile


def _run(cfg: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(cfg), "keys", *args])


def test_cli_add_list_revoke(config: tuple[Path, Path]) -> None:
    cfg, keyfile = config
    r = _run(cfg, "add", "alice")
    assert r.exit_code == 0, r.output
    key = r.stdout.removesuffix("\n")
    assert KEY_RE.match(key) and r.stdout == key + "\n"
    assert "will not be shown again" in r.stderr and r.stderr.count("\n") == 1
    assert key not in keyfile.read_text()
    assert KeyStore.load(keyfile).authenticate(key) is not None

    r = _run(cfg, "add", "--admin", "ops")
    assert r.exit_code == 0 and KEY_RE.match(r.stdout.strip())

    r = _run(cfg, "list", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert [(x["name"], x["scope"]) for x in rows] == [("alice", "user"), ("ops", "admin")]
    assert all(set(x) == {"name", "scope", "created"} for x in rows)

    r = _run(cfg, "list")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCOPE", "CREATED"]
    assert [ln.split()[:2] for ln in lines[1:]] == [["alice", "user"], ["ops", "admin"]]
    assert hash_key(key) not in r.stdout

    r = _run(cfg, "revoke", "alice")
    assert r.exit_code == 0 and r.stdout == ""
    assert [e.name for e in KeyStore.load(keyfile).entries()] == ["ops"]


def test_cli_errors_and_exit_codes(config: tuple[Path, Path]) -> None:
    cfg, keyfile = config
    r = _run(cfg, "revoke", "nobody")  # no file, no directory: nothing is created
    assert r.exit_code == 1 and r.stderr.startswith("error: no key named 'nobody'")
    assert not keyfile.parent.exists()

    assert _run(cfg, "list", "--json").stdout.strip() == "[]"

    assert _run(cfg, "add", "alice").exit_code == 0
    before = keyfile.read_text()
    r = _run(cfg, "add", "alice", "--admin")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith("error: a key named 'alice' already exists")
    assert keyfile.read_text() == before

    for args in (["add"], ["add", "bad name"], ["add", "-x"], ["revoke"], ["add", "a", "--bogus"]):
        r = _run(cfg, *args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stdout == ""
    assert keyfile.read_text() == before

    keyfile.write_text("{}")
    r = _run(cfg, "list")
    assert r.exit_code == 1
    assert r.stderr.startswith(
        f"error: invalid API key file: 1 error\n{keyfile}: version: must be 1 (missing)"
    )
