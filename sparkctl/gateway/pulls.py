"""Pulls another node asks of this one (#15): a model that spans nodes needs its weights on every
node it spans, so `sparkctl pull ID` on one node asks each other node's daemon to fetch them.

    POST /api/v1/models/{model}/pull    fetch the weights here; a stream of progress (NDJSON)
    GET  /api/v1/images                 the images this node's catalog needs, and whether they are here

Both are admin API (an admin key: a peer's). Nothing in the request but the model's name is
used: the repository, the revision and the cache are this node's own catalog's and settings'.
The download runs in a child process (`python -m sparkctl.tools.pull`), one per model at a time:
a second POST for a model being pulled follows the same pull (its lines from the start), and a
client that goes away does not stop it — the pull goes on to the end, so a caller that lost its
connection finds the weights there (or the pull still running) when it asks again. A stopping
daemon ends its pulls (SIGTERM); what they finished stays in the cache and a new pull resumes.

Images are not pulled here: the daemon has no access to Podman's root API (a gateway that can
run containers is the reference stack's read-write Docker socket), so a missing image is
reported, with the command to run on this node; one it cannot check (`podman image exists` as
the daemon's user has no store to ask) is said in a line, not reported missing.

Each line of the stream is a `PullEvent`: `line` events (progress, as the pull says it), then
one `done` (the weights are here; `missing` is what the model still lacks here, as its preflight
says it: an image, say) or `failed` (the error and what to do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from sparkctl.api import ImageStatus, PullEvent, PullLack
from sparkctl.catalog import Model
from sparkctl.core.preflight import lacks
from sparkctl.errors import PullError, SparkError
from sparkctl.gateway.context import GATEWAY, Gateway
from sparkctl.gateway.span import catalog_model

log = logging.getLogger("sparkctl.gateway")

CHILD = [sys.executable, "-m", "sparkctl.tools.pull"]
NDJSON = "application/x-ndjson"
MAX_LINE = 64 * 1024  # bytes: a longer progress line from the child is cut
STOP_GRACE = 5.0  # seconds a pull gets to end after SIGTERM before it is killed


@dataclass
class PullJob:
    """One model's pull on this node; its lines kept for every follower."""

    model: str
    lines: list[str] = field(default_factory=list)
    outcome: PullEvent | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)
        self._wake()

    def finish(self, outcome: PullEvent) -> None:
        self.outcome = outcome
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[PullEvent]:
        """Every line from the first, then the outcome."""
        sent = 0
        while True:
            changed = self.changed
            while sent < len(self.lines):
                yield PullEvent(event="line", text=self.lines[sent])
                sent += 1
            if self.outcome is not None:
                yield self.outcome
                return
            await changed.wait()


class Pulls:
    """This node's running pulls, by model (owned by the gateway app; ended at its cleanup)."""

    def __init__(self) -> None:
        self.jobs: dict[str, PullJob] = {}

    def start(self, gw: Gateway, model: Model) -> PullJob:
        job = self.jobs.get(model.id)
        if job is not None and job.outcome is None:
            return job  # a pull of it runs: follow that one
        job = PullJob(model.id)
        self.jobs[model.id] = job
        job.task = asyncio.create_task(_run(gw, model, job), name=f"sparkctl-pull-{model.id}")
        return job

    async def close(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _failed(gw: Gateway, model: str, error: SparkError) -> PullEvent:
    return PullEvent(
        event="failed",
        node=gw.settings.cluster.node,
        model=model,
        message=error.message,
        hint=error.hint,
    )


def _argv(gw: Gateway, model: Model) -> list[str]:
    source = model.spec.source
    argv = [
        *CHILD,
        # NAME=VALUE: a value is never read as an option, whatever it begins with.
        f"--model={model.id}",
        f"--hf-cache={gw.settings.runtime.hf_cache}",
        f"--repo={source.hf_repo}",
        f"--revision={source.revision}",
    ]
    argv += [f"--extra={repo}" for repo in model.extra_repos]
    return argv


def _writable(hf_cache: Path) -> bool:
    """The cache (its hub/, or the nearest directory it is to be made in) is writable here."""
    path = hf_cache / "hub"
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK | os.X_OK)


async def _run(gw: Gateway, model: Model, job: PullJob) -> None:
    node, cache = gw.settings.cluster.node, gw.settings.runtime.hf_cache
    spec = model.spec
    try:
        if spec.source.hf_repo.startswith("/"):
            job.say(f"{model.id} serves the local directory {spec.source.hf_repo}: nothing to fetch")
        elif not await asyncio.to_thread(_writable, cache):
            raise PullError(
                f"the daemon on {node} cannot write its Hugging Face cache {cache}",
                hint=f"run `sudo sparkctl install` on {node} again (it gives the cache to the daemon's "
                f"group), or `sudo sparkctl pull {model.id}` there",
            )
        else:
            await _child(gw, model, job)
        missing = [
            PullLack(what=lack.what, message=lack.message)
            for lack in await asyncio.to_thread(
                lacks, model.id, cache, spec.source.hf_repo, spec.source.revision, None, model.extra_repos
            )
        ]
        if spec.engine.runtime == "container" and spec.engine.image:
            missing += await _image_lack(model, spec.engine.image, job)
        job.finish(PullEvent(event="done", node=node, model=model.id, missing=missing))
    except SparkError as e:
        job.finish(_failed(gw, model.id, e))
    except asyncio.CancelledError:
        job.finish(_failed(gw, model.id, PullError(f"the daemon on {node} stopped during the pull")))
        raise
    except Exception as e:  # a child that cannot even start, say: the caller hears why
        log.exception("pull of %s", model.id)
        job.finish(_failed(gw, model.id, PullError(f"the pull on {node} failed: {e}")))


async def _image_lack(model: Model, image: str, job: PullJob) -> list[PullLack]:
    """The image, if this node surely lacks it. Whether it is there is Podman's root store's to
    say, which the daemon may not be able to ask (its user has no Podman of its own): then the
    caller is told it could not be checked, not that it is missing."""
    state, note = await asyncio.to_thread(_image_state, image)
    if state == "missing":
        todo = (
            f"sparkctl images build {image}"
            if image.startswith("localhost/")
            else f"sparkctl pull {model.id}"
        )
        return [PullLack(what="image", message=f"image {image} is not on this host: run {todo}")]
    if state == "unknown":
        check = f"sudo podman image exists {image}"
        job.say(f"cannot tell whether image {image} is here ({note}): check with `{check}`")
    return []


async def _child(gw: Gateway, model: Model, job: PullJob) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_argv(gw, model),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=MAX_LINE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async for raw in _lines(proc.stderr):
            text = raw.decode("utf-8", "replace").rstrip()
            if text:
                log.info("pull %s: %s", model.id, text)
                job.say(text)
        result = await proc.stdout.read()
        code = await proc.wait()
    except asyncio.CancelledError:
        await _end(proc)
        raise
    try:
        answer = json.loads(result.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    if code == 0 and answer.get("ok") is True:
        return
    if isinstance(answer.get("message"), str):
        raise PullError(answer["message"], hint=answer.get("hint"))
    raise PullError(f"the pull of {model.id} on {gw.settings.cluster.node} ended with status {code}")


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line past MAX_LINE: what there is of it
            raw = await stream.read(MAX_LINE)
        if not raw:
            return
        yield raw


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def pull(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    model = catalog_model(gw, request.match_info["model"])
    job = request.app[PULLS].start(gw, model)
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
    await response.prepare(request)
    try:
        async for event in job.follow():
            await response.write(event.model_dump_json(exclude_none=True).encode() + b"\n")
        await response.write_eof()
    except ConnectionError:
        pass  # the caller went away; the pull goes on (a new request follows it)
    return response


def _image_state(image: str) -> tuple[str, str]:
    """(state, note) of one image as `podman image exists` says it (blocking)."""
    import subprocess

    if shutil.which("podman") is None:
        return "unknown", "podman is not installed"
    proc = subprocess.run(["podman", "image", "exists", image], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return "present", ""
    if proc.returncode == 1:
        return "missing", ""
    said = (proc.stderr or proc.stdout).strip().splitlines()
    return "unknown", said[-1] if said else f"`podman image exists` ended with status {proc.returncode}"


def _images(gw: Gateway) -> list[ImageStatus]:
    wanted: dict[str, list[str]] = {}
    for model in gw.catalog.models.values():
        engine = model.spec.engine
        if model.spec.enabled and engine.runtime == "container" and engine.image:
            wanted.setdefault(engine.image, []).append(model.id)
    out = []
    for image, models in sorted(wanted.items()):
        state, note = _image_state(image)
        node = gw.settings.cluster.node
        out.append(ImageStatus(node=node, image=image, state=state, models=models, note=note))
    return out


async def images(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    rows = await asyncio.to_thread(_images, gw)
    return web.json_response([r.model_dump(mode="json") for r in rows])


async def pulls_ctx(app: web.Application) -> AsyncIterator[None]:
    """A stopping gateway ends the pulls it runs."""
    yield
    await app[PULLS].close()


PULLS = web.AppKey("sparkctl-pulls", Pulls)


def register(app: web.Application) -> None:
    app[PULLS] = Pulls()
    app.router.add_post("/api/v1/models/{model}/pull", pull)
    app.router.add_get("/api/v1/images", images)
    app.cleanup_ctx.append(pulls_ctx)
