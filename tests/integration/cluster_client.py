"""A client run inside one node's network namespace (tests/integration/test_cluster.py runs it
with `nsenter -n`): the official openai SDK, or a plain GET, against that node's gateway on its
loopback. Prints one JSON document on stdout.

    cluster_client.py chat URL KEY PLAN    PLAN: a JSON list of {"model", "stream", "max_tokens",
                                           "abandon"}, sent all at once; one result per request,
                                           in order (`abandon`: leave after the first chunk)
    cluster_client.py get URL KEY PATH     the status and the body (JSON) of a GET
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import openai


async def _one(client: openai.AsyncOpenAI, item: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    messages: Any = [{"role": "user", "content": "say something"}]
    out: dict[str, Any] = {"model": item["model"], "stream": bool(item.get("stream"))}
    try:
        if item.get("stream"):
            # ignore_eos (vLLM's, the emulator's): the reply runs to max_tokens, not to its own end
            extra = {"ignore_eos": True} if item.get("ignore_eos") else None
            stream = await client.chat.completions.create(
                model=item["model"],
                messages=messages,
                max_tokens=item.get("max_tokens", 8),
                stream=True,
                extra_body=extra,
            )
            chunks: list[str] = []
            if item.get("abandon"):  # read one chunk, then go away: the connection closes
                async for _ in stream:
                    break
                await stream.close()
                out.update(ok=True, abandoned=True)
                out["seconds"] = round(time.monotonic() - t0, 3)
                return out
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    chunks.append(chunk.choices[0].delta.content)
                out.setdefault("first_chunk_s", round(time.monotonic() - t0, 3))
            out.update(ok=True, chunks=len(chunks), content="".join(chunks))
        else:
            reply = await client.chat.completions.create(
                model=item["model"], messages=messages, max_tokens=item.get("max_tokens", 8)
            )
            out.update(
                ok=True,
                served_by=reply.model,
                completion_tokens=reply.usage.completion_tokens if reply.usage else None,
                content=reply.choices[0].message.content,
            )
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        error = body.get("error", body) if isinstance(body, dict) else {}
        out.update(ok=False, status=e.status_code, code=error.get("code"), message=error.get("message"))
    except openai.APIError as e:  # an error event in a stream, a cut connection
        out.update(ok=False, status=None, code=getattr(e, "code", None), message=str(e))
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


async def chat(url: str, key: str, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    async with client:
        return list(await asyncio.gather(*(_one(client, item) for item in plan)))


def get(url: str, key: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = body.decode("utf-8", "replace")
    return {"status": status, "body": data}


def main() -> None:
    mode, url, key, arg = sys.argv[1:5]
    if mode == "chat":
        print(json.dumps(asyncio.run(chat(url, key, json.loads(arg)))))
    else:
        print(json.dumps(get(url, key, arg)))


if __name__ == "__main__":
    main()
