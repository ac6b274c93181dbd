"""A fake Hugging Face Hub as a process of its own (tests/unit/test_pull.py's FakeHub), for tests
whose pulls run in sandboxed daemons: started inside a box's network namespace, it is reachable
on the boxes' link address (tests/integration/test_cluster_pull.py).

    python -m tests.integration.fake_hub HOST PORT REPO

serves REPO at one commit (test_pull's files), prints `ready` once it listens, and stops on
SIGTERM. Every request is logged on stderr.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from tests.unit.test_pull import COMMIT, MODEL_FILES, FakeHub, FakeRepo


async def main(host: str, port: int, repo: str) -> None:
    hub = FakeHub()
    hub.repos[repo] = FakeRepo(files={COMMIT: dict(MODEL_FILES)}, refs={"main": COMMIT})
    runner = web.AppRunner(hub.app())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    for method, path, _ in hub.log:
        print(method, path, file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
