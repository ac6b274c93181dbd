"""A request for a model that another node of the cluster serves, relayed to that node (#15).

The entry node has already authenticated the client (auth_middleware runs before any route) and
read the body within its limits; what goes to the peer is the client's request as it came — the
same path and query, the same body (decompressed, as for an engine), the same headers but the
credentials — with the peer's admin key and the relay marker. What comes back passes through
unchanged: status, headers, an error envelope as the peer made it, an event stream chunk by
chunk as it arrives. A client that goes away cancels the relay, which closes the connection to
the peer, so the peer's own request ends and its lease is released.

A peer that refuses, times out connecting, or is already known to be down is 503
`peer_unavailable` at once. One that goes away mid-answer (or is found down by a poll while it
answers, a hung peer included) ends the client's stream with that error as an event; a body
that is not a stream is cut, as the local relay does, so the client sees it incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from sparkctl.errors import PeerUnavailableError, SparkError, UnknownModelError
from sparkctl.gateway.context import Gateway
from sparkctl.gateway.errors import sse_error_event
from sparkctl.gateway.holds import HOLD
from sparkctl.gateway.peers import RELAYED, Remote
from sparkctl.gateway.upstream import downstream_headers, upstream_headers
from sparkctl.gateway.waiting import CLIENT_CLOSED

BUFFER_LIMIT = 1024 * 1024  # an answer this small (with a length) is relayed in one piece
SSE = "text/event-stream"


async def locate(gw: Gateway, request: web.Request, name: str | None, unknown: UnknownModelError) -> Remote:
    """The peer that serves `name`, which this node's catalog does not have; else `unknown`
    (404), or 503 when a peer that might serve it has never answered. A request that was relayed
    here already is never relayed again: that is what keeps requests from going round."""
    peers = gw.peers
    if peers is None or name is None or RELAYED in request.headers:
        raise unknown
    remote = await peers.locate(name)
    if remote is not None:
        return remote
    silent = peers.never_listed()
    if silent:
        names = ", ".join(s.peer.name for s in silent)
        peers.wake()
        raise PeerUnavailableError(
            f"The model '{name}' is not in this node's catalog, and the node{'s' if len(silent) > 1 else ''} "
            f"{names}, which may serve it, do{'es' if len(silent) == 1 else ''} not answer.",
            retry_after=5,
        )
    raise unknown


def owner(gw: Gateway, request: web.Request, model: str) -> Remote | None:
    """The node that owns `model`, where this node runs only a worker part of it: the owner
    serves it, so the request goes there (None: this node serves `model` itself). A request
    relayed here already stays, and is refused by the scheduler (409): it never goes round."""
    node = gw.owners.get(model)
    if node is None or gw.peers is None or RELAYED in request.headers:
        return None
    return gw.peers.at(node, model)


async def relay(
    request: web.Request, gw: Gateway, remote: Remote, body: bytes, request_id: str
) -> web.StreamResponse:
    """Send the request to the peer that serves the model and its answer back to the client."""
    assert gw.peers is not None
    peers, state = gw.peers, remote.state
    t0 = time.monotonic()
    status = 503
    try:
        if state.unreachable:
            peers.wake()  # it may be back: a poll now, rather than at the next interval
            raise state.unavailable(remote.model_id)
        response = await _exchange(request, gw, remote, body, request_id)
        status = response.status
        return response
    except (asyncio.CancelledError, ConnectionError):
        if gw.client_left(request.transport):
            status = CLIENT_CLOSED  # the client went away before its answer was whole
        raise
    finally:
        gw.metrics.relayed(remote.peer.name, remote.model_id, status, time.monotonic() - t0)


async def _exchange(
    request: web.Request, gw: Gateway, remote: Remote, body: bytes, request_id: str
) -> web.StreamResponse:
    assert gw.peers is not None
    peers, state, peer = gw.peers, remote.state, remote.peer
    # The client's path and query byte for byte (encoded=True: yarl would re-quote them).
    url = URL(str(peer.url) + request.rel_url.raw_path_qs, encoded=True)
    headers = upstream_headers(request.headers, request_id, request.remote, f"Bearer {peer.key}")
    headers[RELAYED] = gw.settings.cluster.node
    # Sent from a task of its own, so that it can be ended before the peer has answered at all:
    # on a kept-alive connection to a peer whose cable was just pulled no error would ever come.
    sending = asyncio.ensure_future(_send(peers.session, request.method, url, body, headers))
    answered: list[aiohttp.ClientResponse] = []
    ended: list[SparkError] = []

    def end(error: SparkError) -> None:  # the peer is unreachable, or the client's key was revoked
        ended.append(error)
        if answered:
            answered[0].close()
        else:
            sending.cancel()

    state.relays.add(end)
    if (held := request.get(HOLD)) is not None:
        held.on_end(end)
    try:
        try:
            upstream = await sending
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not ended or (task is not None and task.cancelling()):
                raise  # the client went away: its cancellation reached the send too
            raise ended[0] from None  # `end` cancelled the send
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            peers.failed(state, e)
            raise state.unavailable(remote.model_id) from None
        answered.append(upstream)
        try:
            return await _pass_back(request, upstream, ended, remote)
        finally:
            if upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()
    finally:
        state.relays.discard(end)


async def _send(
    session: aiohttp.ClientSession, method: str, url: URL, body: bytes, headers: CIMultiDict[str]
) -> aiohttp.ClientResponse:
    """The request, sent once more if the connection closed before any answer: most often a
    kept-alive connection the peer had just closed (a restarting daemon closes its idle ones),
    which never carried the request to it; a fresh connection then will."""
    try:
        return await session.request(method, url, data=body, headers=headers)
    except aiohttp.ServerDisconnectedError:
        return await session.request(method, url, data=body, headers=headers)


async def _pass_back(
    request: web.Request, upstream: aiohttp.ClientResponse, ended: list[SparkError], remote: Remote
) -> web.StreamResponse:
    headers = downstream_headers(upstream.headers)
    is_sse = upstream.headers.get("Content-Type", "").startswith(SSE)
    length = upstream.content_length
    if not is_sse and length is not None and length <= BUFFER_LIMIT:
        try:
            data = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise (ended[0] if ended else remote.state.unavailable(remote.model_id)) from e
        if ended:
            raise ended[0]
        return web.Response(status=upstream.status, body=data, headers=headers)
    out = web.StreamResponse(status=upstream.status, headers=headers)
    await out.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
        cut = bool(ended)  # closed under the loop by `end`: it may read as a plain end
    except (aiohttp.ClientError, TimeoutError):
        cut = True
    if cut:
        error = ended[0] if ended else remote.state.unavailable(remote.model_id)
        if is_sse:
            with contextlib.suppress(ConnectionError):
                await out.write(sse_error_event(error))
        elif request.transport is not None:
            # A body cut short cannot carry an error: without its last chunk the client knows
            # it is incomplete, rather than waiting for more.
            request.transport.close()
            return out
    with contextlib.suppress(ConnectionError):
        await out.write_eof()
    return out
