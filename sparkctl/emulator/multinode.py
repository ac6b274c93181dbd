"""vLLM's multi-node start, emulated (BRIEF §9, #15): `--nnodes N --node-rank R --master-addr A
--master-port P`, as vLLM's own multi-node mode takes them (rank 0 the head, the others headless
workers).

What sparkctl depends on is the order and the failures, so that is what is emulated:

- the head (rank 0), once loaded, waits on `A:P` for every worker to join, and only then listens
  for clients: a head that answers health means the whole model is up;
- a worker, once loaded, connects to the head (again and again until it is there) and joins;
- each side sends a heartbeat every HEARTBEAT seconds; one that hears nothing from the other for
  `--heartbeat-timeout` seconds (a peer killed, a cable pulled: no FIN ever comes) or sees the
  connection close has lost it. A worker that loses its head exits non-zero (`--exit-code`), as
  vLLM's do; so does a head that loses a worker, since the model cannot go on without it.

The wire is one line per message: a worker sends `join rank=R nnodes=N model=M`, the head answers
`ok` or `refused REASON`, then both send `ping` lines until the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sparkctl.emulator.config import Config
from sparkctl.emulator.log import say

HEARTBEAT = 0.5  # seconds between pings
RETRY = 0.2  # seconds between a worker's attempts to reach its head
MAX_LINE = 256


@dataclass
class Group:
    """The head's workers. Heartbeats run from the moment each joins (a worker would otherwise
    take the head's silence while others are still loading for a lost head): one lost before
    every worker has joined just leaves, and may join again; one lost once the head serves is
    reported to `serving`."""

    wanted: set[int]
    links: dict[int, asyncio.StreamWriter] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    serving: Callable[[str], None] | None = None

    def lost(self, rank: int, why: str) -> None:
        if self.serving is not None:
            self.serving(why)
            return
        self.links.pop(rank, None)
        say(f"multinode: {why}, before every worker joined")

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.links.values():
            writer.close()


async def gather_workers(cfg: Config, stop: asyncio.Event) -> tuple[Group, asyncio.Server] | None:
    """The head: wait on the master address until every worker has joined; None if stopped first."""
    wanted = set(range(1, cfg.nnodes))
    group = Group(wanted)
    everyone = asyncio.Event()

    async def joined(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(cfg.heartbeat_timeout):
                line = (await reader.readline())[:MAX_LINE].decode("utf-8", "replace").split()
        except (TimeoutError, ConnectionError):
            writer.close()
            return
        fields = dict(part.split("=", 1) for part in line[1:] if "=" in part)
        rank = int(fields["rank"]) if fields.get("rank", "").isdigit() else -1
        refusal = _refusal(line, fields, rank, wanted, group, cfg)
        if refusal is not None:
            say(f"multinode: refused a worker: {refusal}")
            with contextlib.suppress(ConnectionError):
                writer.write(f"refused {refusal}\n".encode())
                await writer.drain()
            writer.close()
            return
        writer.write(b"ok\n")
        group.links[rank] = writer
        group.tasks.append(
            asyncio.ensure_future(
                _beat(reader, writer, cfg, f"worker rank={rank}", lambda why: group.lost(rank, why))
            )
        )
        say(f"multinode: worker rank={rank} joined ({len(group.links)}/{cfg.nnodes - 1})")
        if set(group.links) == wanted:
            everyone.set()

    server = await asyncio.start_server(joined, cfg.master_addr, cfg.master_port, reuse_address=True)
    say(f"multinode: head waiting for {cfg.nnodes - 1} workers on {cfg.master_addr}:{cfg.master_port}")
    waiting = {asyncio.ensure_future(everyone.wait()), asyncio.ensure_future(stop.wait())}
    _, pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if not everyone.is_set():
        server.close()
        await group.close()
        return None
    say(f"multinode: all {cfg.nnodes} nodes joined")
    return group, server


def _refusal(
    line: list[str], fields: dict[str, str], rank: int, wanted: set[int], group: Group, cfg: Config
) -> str | None:
    if not line or line[0] != "join":
        return "not a join"
    if fields.get("nnodes") != str(cfg.nnodes):
        return f"nnodes={fields.get('nnodes')} but the head has {cfg.nnodes}"
    if rank not in wanted:
        return f"rank={fields.get('rank')} is not a worker's rank of {cfg.nnodes} nodes"
    if rank in group.links:
        return f"rank={rank} has joined already"
    return None


def watch(group: Group, lost: Callable[[str], None]) -> None:
    """The head, serving: `lost` when a worker is lost (at once if one left meanwhile)."""
    group.serving = lost
    if missing := sorted(group.wanted - set(group.links)):
        lost(f"worker rank={missing[0]} (it left before the head served)")


async def work(cfg: Config, stop: asyncio.Event) -> int:
    """A headless worker: join the head, then stay until stopped (0) or the head is lost (the
    exit code). Nothing listens for clients."""
    link = await _join(cfg, stop)
    if link is None:
        return 0 if stop.is_set() else cfg.exit_code
    reader, writer = link
    say(f"multinode: worker rank={cfg.node_rank} joined the head at {cfg.master_addr}:{cfg.master_port}")
    lost: list[str] = []
    beating = asyncio.ensure_future(_beat(reader, writer, cfg, "the head", lost.append))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({beating, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in (beating, stopping):
        task.cancel()
    await asyncio.gather(beating, stopping, return_exceptions=True)
    writer.close()
    if lost and not stop.is_set():
        say(f"multinode: lost {lost[0]}: exiting exit_code={cfg.exit_code}")
        return cfg.exit_code
    return 0


async def _join(cfg: Config, stop: asyncio.Event) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect to the head until it is there (it may still be loading) and join; None if stopped
    or refused."""
    hello = f"join rank={cfg.node_rank} nnodes={cfg.nnodes} model={cfg.model}\n".encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(cfg.master_addr, cfg.master_port)
        except OSError:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY)
            continue
        try:
            writer.write(hello)
            async with asyncio.timeout(cfg.heartbeat_timeout):
                answer = (await reader.readline()).decode("utf-8", "replace").strip()
        except (TimeoutError, ConnectionError):
            writer.close()
            continue
        if answer == "ok":
            return reader, writer
        writer.close()
        say(f"multinode: the head {answer or 'closed the connection'}")
        return None
    return None


async def _beat(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    cfg: Config,
    other: str,
    lost: Callable[[str], None],
) -> None:
    """Ping the other side every HEARTBEAT; call `lost` when it closes or falls silent."""

    async def send() -> None:
        while True:
            writer.write(b"ping\n")
            await writer.drain()
            await asyncio.sleep(HEARTBEAT)

    sending = asyncio.ensure_future(send())
    try:
        while True:
            async with asyncio.timeout(cfg.heartbeat_timeout):
                line = await reader.readline()
            if not line:
                lost(f"{other} (its connection closed)")
                return
    except TimeoutError:
        lost(f"{other} (silent for {cfg.heartbeat_timeout:g}s)")
    except ConnectionError as e:
        lost(f"{other} ({e})")
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
