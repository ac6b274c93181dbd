"""A test engine that reports what reached it: the path, the body's length and SHA-256, the
model it names (JSON or multipart) and the headers. Run as a model unit (kind "openai")."""

from __future__ import annotations

import hashlib
import json
import sys

from aiohttp import web


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    model = None
    if request.content_type == "application/json":
        model = json.loads(body).get("model")
    return web.json_response(
        {
            "path": request.path,
            "query": request.rel_url.raw_query_string,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "model": model,
            "headers": dict(request.headers),
            "content_type": request.content_type,
            "body_prefix": body[:200].decode("utf-8", "replace"),
        }
    )


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
