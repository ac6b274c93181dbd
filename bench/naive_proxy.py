"""The "plain Python" baseline: a reverse proxy written the way one typically is with aiohttp.

One aiohttp server, one shared `ClientSession`; read the client's body, send it upstream with
its content type, and relay the answer: streamed chunk by chunk (`iter_any` → `write`) when it is
an event stream, read whole and returned otherwise. No auth, no routing, no metrics, no logging.
Its only deviation from a copy-paste proxy is the client pool: unlimited instead of aiohttp's
default 100 connections, so that the 512-stream level compares proxies, not pool sizes.

    python -m bench.naive_proxy --port 8080 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web


def make_app(upstream: str) -> web.Application:
    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with request.app["session"].post(upstream + request.path, data=body, headers=headers) as up:
            if up.headers.get("Content-Type", "").startswith("text/event-stream"):
                resp = web.StreamResponse(
                    status=up.status, headers={"Content-Type": up.headers["Content-Type"]}
                )
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            return web.Response(status=up.status, body=await up.read(), content_type=up.content_type)

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    # A deep backlog, like the other servers: the benchmark opens hundreds of connections at once.
    web.run_app(
        make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, backlog=4096, print=None
    )


if __name__ == "__main__":
    main()
