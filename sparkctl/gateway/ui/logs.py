"""`GET /ui/api/logs/{model}`: a model's journal — its unit's last lines, then new ones as they come
— as server-sent `line` events, from `journalctl -f -o json` run as a child of the daemon.

The daemon is not root: it reads the journal through its supplementary group `systemd-journal`
(units/sparkctl.service), as it does for a failed start's last line (core/host.py). Should it
not be allowed, journalctl's own complaint comes through as a line, so the page says why it
shows nothing. Every key may tail a model's log, as the issue asks: engines' logs are not
secret by default, but an engine told to log its requests (vLLM `--enable-log-requests`) shows
them here too (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from sparkctl.errors import QueueFullError, SparkError
from sparkctl.gateway.context import GATEWAY
from sparkctl.gateway.errors import sse_error_event
from sparkctl.gateway.holds import HOLD
from sparkctl.gateway.routing import resolve
from sparkctl.gateway.ui.pages import secured
from sparkctl.units.names import service_name

LOGS = "/ui/api/logs/{model}"
BACKLOG = 200  # lines of history a new tail starts with
MAX_TAILS = 16  # journalctl processes at once, all pages together
MAX_MESSAGE = 4000  # characters of one line shown; an engine's traceback line can be huge
PING = 15.0  # seconds between comments on a quiet log, so a page that left is noticed
_TAILS = web.AppKey("ui_log_tails", set[asyncio.subprocess.Process])


def journal_argv(unit: str, *, user: bool, backlog: int = BACKLOG) -> list[str]:
    argv = ["journalctl", "--no-pager", "-o", "json", "-n", str(backlog), "-f", "-u", unit]
    if user:
        argv.insert(1, "--user")
    return argv


def line_event(entry: dict[str, Any]) -> dict[str, Any] | None:
    """One journal entry as the page shows it: time (µs since the epoch), priority, who said it
    (the engine, or systemd about the unit), and the message; None for an entry without one."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald's JSON gives a non-UTF-8 message as its bytes
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
    if not isinstance(message, str):
        return None
    try:
        when = int(entry.get("__REALTIME_TIMESTAMP", 0))
        priority = int(entry.get("PRIORITY", 6))
    except (TypeError, ValueError):
        when, priority = 0, 6
    return {
        "time": when,
        "priority": priority,
        # systemd's own lines about the unit (PID 1, or a user's manager) set apart from the engine's
        "source": "systemd" if entry.get("_PID") == "1" or entry.get("_COMM") == "systemd" else "engine",
        "message": message[:MAX_MESSAGE],
    }


async def tail(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    model = resolve(gw.catalog, request.match_info["model"])
    tails = request.app[_TAILS]
    if len(tails) >= MAX_TAILS:
        raise QueueFullError(f"{MAX_TAILS} log tails are open already; close one.", retry_after=5)
    argv = journal_argv(service_name(model.id), user=gw.settings.systemd.bus == "user")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    secured(response)
    await response.prepare(request)
    ended: list[SparkError] = []
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,  # its complaints (no permission) are lines too
            limit=1024 * 1024,
        )
    except OSError as e:
        await _write_line(response, {"time": 0, "priority": 3, "source": "sparkctl", "message": str(e)})
        await response.write_eof()
        return response
    tails.add(proc)

    def end(error: SparkError) -> None:  # its key was revoked: an error event, and the end
        ended.append(error)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()

    try:
        if (held := request.get(HOLD)) is not None:
            held.on_end(end)
        await _relay(proc, response)
        if ended:
            await response.write(b"event: error\n" + sse_error_event(ended[0]))
        await response.write_eof()
    except ConnectionError:
        pass  # the page went away
    finally:
        tails.discard(proc)
        await _stop(proc)
    return response


async def _relay(proc: asyncio.subprocess.Process, response: web.StreamResponse) -> None:
    assert proc.stdout is not None
    while True:
        try:
            raw = await asyncio.wait_for(proc.stdout.readline(), PING)
        except TimeoutError:
            await response.write(b": ping\n\n")
            continue
        except ValueError:  # a line beyond the limit: skip it, keep following
            continue
        if not raw:
            return
        text = raw.decode("utf-8", "replace").strip()
        try:
            entry = json.loads(text)
        except ValueError:  # journalctl's own words ("No journal files were found", a hint)
            if text:
                await _write_line(
                    response, {"time": 0, "priority": 4, "source": "journalctl", "message": text}
                )
            continue
        if isinstance(entry, dict) and (event := line_event(entry)) is not None:
            await _write_line(response, event)


async def _write_line(response: web.StreamResponse, event: dict[str, Any]) -> None:
    data = json.dumps(event, separators=(",", ":"))
    await response.write(f"event: line\ndata: {data}\n\n".encode())


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def register(app: web.Application) -> None:
    app[_TAILS] = set()
    app.router.add_get(LOGS, tail)
