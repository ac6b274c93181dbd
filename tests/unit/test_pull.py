"""`sparkctl pull` and `weights_present`, without the network: a small Hugging Face Hub in this
process (aiohttp) serves the parts of the Hub API that huggingface_hub's snapshot_download uses —
model info at a revision, the file tree, and file resolution with ETag, Content-Length and Range —
and huggingface_hub itself is pointed at it with HF_ENDPOINT."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from sparkctl.cli import cli
from sparkctl.core.weights import check_weights, repo_dir, weights_present
from sparkctl.errors import PullError
from sparkctl.tools.pull import Token, find_token, pull_weights
from tests.helpers import write_model

TOKEN = "hf_test_secret_token"
COMMIT = "a" * 40
COMMIT_V2 = "b" * 40


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, dict[str, bytes]]  # commit → path → content
    refs: dict[str, str]  # branch or tag → commit
    gated: bool = False


@dataclass
class FakeHub:
    """The Hub's behaviour for the requests snapshot_download makes; `log` records them."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    cut_once: set[str] = field(default_factory=set)  # files whose first GET breaks off halfway
    broken: set[str] = field(default_factory=set)  # files whose GET answers 500
    hold: set[str] = field(default_factory=set)  # files whose GET waits until release()
    gate: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)  # a held file was asked for
    url: str = ""

    def release(self) -> None:
        self.gate.set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self.info)
        app.router.add_get("/api/models/{org}/{name}/tree/{rev}", self.tree)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self.resolve)
        return app

    def _repo(self, request: web.Request) -> tuple[str, FakeRepo] | web.Response:
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return web.Response(status=401, headers={"X-Error-Code": "RepoNotFound"}, text="not found")
        return repo_id, repo

    def _commit(self, repo: FakeRepo, rev: str) -> str | None:
        commit = repo.refs.get(rev, rev)
        return commit if commit in repo.files else None

    @staticmethod
    def _no_revision() -> web.Response:
        return web.Response(
            status=404,
            headers={"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"},
            text="Invalid rev id",
        )

    async def info(self, request: web.Request) -> web.StreamResponse:
        self.log.append(("GET", request.path, None))
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        repo_id, repo = found
        commit = self._commit(repo, request.match_info["rev"])
        if commit is None:
            return self._no_revision()
        siblings = [
            {
                "rfilename": p,
                "size": len(d),
                "blobId": _sha(d)[:40],
                "lfs": {"size": len(d), "sha256": _sha(d), "pointerSize": 134},
            }
            for p, d in sorted(repo.files[commit].items())
        ]
        # Like the Hub, a gated repo's metadata is public; its files are not.
        return web.json_response(
            {
                "id": repo_id,
                "sha": commit,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "siblings": siblings,
            }
        )

    async def tree(self, request: web.Request) -> web.StreamResponse:
        self.log.append(("GET", request.path, None))
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        _, repo = found
        commit = self._commit(repo, request.match_info["rev"])
        if commit is None:
            return self._no_revision()
        return web.json_response(
            [
                {
                    "type": "file",
                    "path": p,
                    "size": len(d),
                    "oid": _sha(d)[:40],
                    "lfs": {"oid": _sha(d), "size": len(d), "pointerSize": 134},
                }
                for p, d in sorted(repo.files[commit].items())
            ]
        )

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.log.append((request.method, request.path, request.headers.get("Range")))
        found = self._repo(request)
        if isinstance(found, web.Response):
            return found
        _, repo = found
        commit = self._commit(repo, request.match_info["rev"])
        if commit is None:
            return self._no_revision()
        if repo.gated and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(
                status=401,
                headers={
                    "X-Error-Code": "GatedRepo",
                    "X-Error-Message": "Access to this model is restricted.",
                },
                text="gated",
            )
        data = repo.files[commit].get(path)
        if data is None:
            return web.Response(
                status=404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            )
        headers = {"X-Repo-Commit": commit, "ETag": f'"{_sha(data)}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(data))})
        if path in self.broken:
            return web.Response(status=500, text="internal error")
        if path in self.hold:
            self.held.set()
            await asyncio.to_thread(self.gate.wait, 30)
        start = 0
        if request.headers.get("Range", "").startswith("bytes="):
            start = int(request.headers["Range"][6:].split("-")[0])
        body = data[start:]
        response = web.StreamResponse(status=206 if start else 200, headers=headers)
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response.content_length = len(body)
        await response.prepare(request)
        if path in self.cut_once and not start:
            self.cut_once.discard(path)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops halfway through the file
            return response
        await response.write(body)
        await response.write_eof()
        return response

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of every GET of `path`."""
        return [r for m, p, r in self.log if m == "GET" and p.endswith(f"/{path}")]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(fake.app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    for name in ("HF_TOKEN", "HF_TOKEN_FILE", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


MODEL_FILES = {
    "config.json": b'{"model_type": "test"}',
    "model-00001-of-00002.safetensors": bytes(range(256)) * 4096,  # 1 MiB
    "model-00002-of-00002.safetensors": b"\x07" * 300_000,
    "model.safetensors.index.json": json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    ).encode(),
}


def _model(hub: FakeHub, repo: str = "org/model", *, gated: bool = False) -> None:
    hub.repos[repo] = FakeRepo(
        files={COMMIT: dict(MODEL_FILES), COMMIT_V2: {**MODEL_FILES, "config.json": b'{"v": 2}'}},
        refs={"main": COMMIT, "v2": COMMIT_V2},
        gated=gated,
    )


def _pull(
    hub: FakeHub, cache: Path, repo: str = "org/model", revision: str = "main", token: Token | None = None
) -> Any:
    lines: list[str] = []
    result = pull_weights(repo, revision, cache, model_id="m", token=token, say=lines.append)
    return result, lines


# ------------------------------------------------------------------------------------------ pulls
def test_pull_fills_the_cache_as_containers_see_it_and_pins_the_revision(
    hub: FakeHub, tmp_path: Path
) -> None:
    _model(hub)
    assert not weights_present(tmp_path, "org/model", "main")
    result, lines = _pull(hub, tmp_path)
    assert result.commit == COMMIT and result.downloaded == sum(len(d) for d in MODEL_FILES.values())
    base = repo_dir(tmp_path, "org/model")
    assert base == tmp_path / "hub" / "models--org--model"  # HF_HOME=hf_cache → hub/ under it
    assert (base / "refs" / "main").read_text() == COMMIT
    snapshot = base / "snapshots" / COMMIT
    assert {p.name for p in snapshot.iterdir()} == set(MODEL_FILES)
    assert all((snapshot / n).read_bytes() == d for n, d in MODEL_FILES.items())
    assert lines[0].startswith(f"org/model@main is commit {COMMIT[:12]}: 4 files")
    assert weights_present(tmp_path, "org/model", "main") and weights_present(tmp_path, "org/model", COMMIT)
    assert not weights_present(tmp_path, "org/model", "v2")  # another revision is another snapshot

    # A second pull downloads nothing.
    before = len(hub.gets("config.json"))
    result, _ = _pull(hub, tmp_path)
    assert result.downloaded == 0 and len(hub.gets("config.json")) == before

    # A pinned tag resolves to its own commit.
    result, _ = _pull(hub, tmp_path, revision="v2")
    assert result.commit == COMMIT_V2 and weights_present(tmp_path, "org/model", "v2")
    assert (base / "snapshots" / COMMIT_V2 / "config.json").read_bytes() == b'{"v": 2}'


def test_a_connection_dropped_mid_file_resumes_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    # huggingface_hub hands on data in 10 MiB chunks, and resumes from the last whole chunk.
    big = bytes(range(251)) * (24 * 1024 * 1024 // 251)
    hub.repos["org/big"] = FakeRepo(files={COMMIT: {"weights.safetensors": big}}, refs={"main": COMMIT})
    hub.cut_once.add("weights.safetensors")
    _pull(hub, tmp_path, repo="org/big")
    ranges = hub.gets("weights.safetensors")
    assert len(ranges) == 2 and ranges[0] is None, ranges
    assert (
        ranges[1] is not None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) >= 10 * 1024 * 1024
    )
    assert (repo_dir(tmp_path, "org/big") / "snapshots" / COMMIT / "weights.safetensors").read_bytes() == big
    assert weights_present(tmp_path, "org/big")


def test_an_interrupted_pull_keeps_what_it_finished_and_the_next_one_fetches_only_the_rest(
    hub: FakeHub, tmp_path: Path
) -> None:
    _model(hub)
    shard = "model-00002-of-00002.safetensors"
    hub.broken.add(shard)
    with pytest.raises(PullError) as failed:
        _pull(hub, tmp_path)
    assert "run the same pull again to continue" in (failed.value.hint or "")
    assert not weights_present(tmp_path, "org/model")
    assert "is missing" in check_weights(tmp_path, "org/model").reason
    fetched = {n: len(hub.gets(n)) for n in MODEL_FILES if n != shard}
    assert all(count == 1 for count in fetched.values()), fetched

    hub.broken.clear()
    result, lines = _pull(hub, tmp_path)
    assert result.downloaded == len(MODEL_FILES[shard])
    assert f"{len(MODEL_FILES[shard]) / 1000:.1f} kB to download" in lines[0]
    assert {n: len(hub.gets(n)) for n in fetched} == fetched  # nothing finished was fetched again
    assert weights_present(tmp_path, "org/model")


def test_a_gated_repo_needs_the_token_file(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _model(hub, "org/gated", gated=True)
    with pytest.raises(PullError) as denied:
        _pull(hub, tmp_path / "cache", repo="org/gated", token=find_token({}, tmp_path / "absent"))
    assert (
        "org/gated is gated" in denied.value.message
        and "https://huggingface.co/org/gated" in denied.value.message
    )

    token_file = tmp_path / "hf-token"
    token_file.write_text(TOKEN + "\n")
    token = find_token({"HF_TOKEN_FILE": str(token_file)}, tmp_path / "absent")
    assert token == Token(TOKEN, f"$HF_TOKEN_FILE ({token_file})")
    _pull(hub, tmp_path / "cache", repo="org/gated", token=token)
    assert weights_present(tmp_path / "cache", "org/gated")

    wrong = Token("hf_wrong", "test")
    with pytest.raises(PullError) as refused:
        _pull(hub, tmp_path / "other", repo="org/gated", token=wrong)
    assert "the token from test was refused" in refused.value.message


def test_token_sources_in_order(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hf-token").write_text("from-credential\n")
    default = tmp_path / "etc-hf-token"
    default.write_text("from-etc")
    explicit = tmp_path / "explicit"
    explicit.write_text("from-env-file")
    env = {"HF_TOKEN_FILE": str(explicit), "CREDENTIALS_DIRECTORY": str(creds), "HF_TOKEN": "from-env"}
    assert find_token(env, default) == Token("from-env-file", f"$HF_TOKEN_FILE ({explicit})")
    del env["HF_TOKEN_FILE"]
    assert find_token(env, default) == Token(
        "from-credential", f"systemd credential hf-token ({creds / 'hf-token'})"
    )
    del env["CREDENTIALS_DIRECTORY"]
    assert find_token(env, default) == Token("from-etc", f"{default} ({default})")
    default.unlink()
    assert find_token(env, default) == Token("from-env", "$HF_TOKEN")
    assert find_token({}, default) is None
    with pytest.raises(PullError, match="does not exist"):
        find_token({"HF_TOKEN_FILE": str(tmp_path / "nope")}, default)


def test_a_missing_revision_or_repo_is_a_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    _model(hub)
    with pytest.raises(PullError) as no_rev:
        _pull(hub, tmp_path, revision="no-such-branch")
    assert no_rev.value.message == "revision 'no-such-branch' does not exist in org/model"
    assert "source.revision of m" in (no_rev.value.hint or "")
    with pytest.raises(PullError) as no_repo:
        _pull(hub, tmp_path, repo="org/absent")
    assert no_repo.value.message.startswith(f"org/absent was not found on {hub.url}")


def test_an_unreachable_hub_says_so_and_that_a_rerun_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(PullError) as failed:
        pull_weights("org/model", "main", tmp_path, model_id="m", token=None)
    assert failed.value.message.startswith(f"could not fetch org/model@main from http://127.0.0.1:{port}: ")
    assert "run the same pull again" in (failed.value.hint or "")


# ------------------------------------------------------------------------------------ the cache
def test_weights_present_reads_only_the_cache_layout(hub: FakeHub, tmp_path: Path) -> None:
    _model(hub)
    _pull(hub, tmp_path)
    base = repo_dir(tmp_path, "org/model")
    snapshot = base / "snapshots" / COMMIT
    shard = snapshot / "model-00002-of-00002.safetensors"
    blob = shard.resolve()

    # With the file listing (trees/COMMIT.json): every listed file, at its size.
    blob.write_bytes(b"short")
    assert "has 5 bytes" in check_weights(tmp_path, "org/model").reason
    blob.unlink()
    assert not weights_present(tmp_path, "org/model")
    blob.write_bytes(MODEL_FILES[shard.name])
    assert weights_present(tmp_path, "org/model")

    # Without a listing (a cache another tool wrote): shards named by the index, no .incomplete blob.
    for listing in (base / "trees").iterdir():
        listing.unlink()
    assert check_weights(tmp_path, "org/model").reason.endswith("(no file listing; checked shards)")
    (blob.parent / "deadbeef.incomplete").write_bytes(b"x")
    assert "unfinished" in check_weights(tmp_path, "org/model").reason
    (blob.parent / "deadbeef.incomplete").unlink()
    shard.unlink()
    assert "shard model-00002-of-00002.safetensors" in check_weights(tmp_path, "org/model").reason

    assert not weights_present(tmp_path, "org/other")
    (base / "refs" / "main").write_text("not-a-commit")
    assert "never downloaded" in check_weights(tmp_path, "org/model").reason
    local = tmp_path / "local-model"
    local.mkdir()
    assert not weights_present(tmp_path, str(local))
    (local / "config.json").write_text("{}")
    assert weights_present(tmp_path, str(local))


# ------------------------------------------------------------------------------------- the CLI
def _config(tmp_path: Path, catalog: Path) -> Path:
    config = tmp_path / "sparkctl.toml"
    config.write_text(f'[catalog]\ndirs = ["{catalog}"]\n[runtime]\nhf_cache = "{tmp_path / "hf"}"\n')
    return config


def test_pull_and_preflight_commands(hub: FakeHub, tmp_path: Path) -> None:
    _model(hub, "org/pulled")
    write_model(tmp_path / "models", "pulled-model", source={"hf_repo": "org/pulled", "revision": "v2"})
    config = _config(tmp_path, tmp_path / "models")
    runner = CliRunner()
    preflight = [
        "preflight",
        "--model",
        "pulled-model",
        "--hf-cache",
        str(tmp_path / "hf"),
        "--repo",
        "org/pulled",
        "--revision",
        "v2",
    ]

    before = runner.invoke(cli, preflight)
    assert before.exit_code == 1
    assert before.stderr.splitlines()[-1] == (
        f"error: weights for org/pulled@v2 are not in {tmp_path / 'hf'}: run sparkctl pull pulled-model"
    )

    result = runner.invoke(cli, ["--config", str(config), "pull", "--no-image", "pulled-model"])
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout == "pulled-model: ready\n"
    assert f"org/pulled@v2 is commit {COMMIT_V2[:12]}" in result.stderr
    assert weights_present(tmp_path / "hf", "org/pulled", "v2")

    after = runner.invoke(cli, preflight)
    assert after.exit_code == 0 and after.stderr == ""
    missing_extra = runner.invoke(cli, [*preflight, "--require", "Qwen/Qwen3.5-0.8B"])
    assert missing_extra.exit_code == 1
    assert "weights for Qwen/Qwen3.5-0.8B@main are not in" in missing_extra.stderr

    unknown = runner.invoke(cli, ["--config", str(config), "pull", "nope"])
    assert unknown.exit_code == 1 and "error: The model 'nope' does not exist." in unknown.stderr
