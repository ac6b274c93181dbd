"""Operator commands across a cluster's nodes (#15): `sparkctl pull ID` for a model that spans
nodes (its weights on every node it spans), and `sparkctl images list` of every node.

This node pulls as `pull` always does (as root, into its own cache); every other node the model
spans is asked, at the same time, to pull into its own cache from the Hugging Face Hub through
its daemon's admin API (`POST /api/v1/models/{model}/pull`, gateway/pulls.py), with the admin
key of that node's this node holds ([cluster] peers). Each node fetches from the Hub itself:
a pull resumes where it stopped on every node (huggingface_hub's own resume, per file and by
HTTP Range), no node writes another's disk, and the daemon takes nothing from the request but
the model's name. (Copying over the direct link instead would fetch from the Internet once;
docs/cluster.md says what that would take.)

A node's pull runs in its daemon to the end even when this command goes away, so an
interrupted `sparkctl pull` is resumed (or followed, while it still runs) by running it again.
Images are checked on every node, not pulled there: a node's daemon cannot run Podman as root,
so a missing one is named with the command to run on that node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparkctl.catalog.span import SpanError, spanned_nodes
from sparkctl.client import PeerClient
from sparkctl.errors import ConfigError, PullError, SparkError
from sparkctl.gateway.peers import read_peers

if TYPE_CHECKING:
    from sparkctl.catalog import Model
    from sparkctl.settings import Settings
    from sparkctl.tools.images.rows import ImageRow

Say = Callable[[str], None]


@dataclass
class NodePull:
    """One other node's pull, as this command follows it."""

    node: str
    problems: list[str] = field(default_factory=list)  # empty once it ended well
    ended: bool = False


def nodes_of(model: Model, settings: Settings) -> tuple[str, ...]:
    """The nodes a model spans (just this one for a model that does not span)."""
    if model.spec.serve.nodes <= 1:
        return (settings.cluster.node,)
    try:
        return spanned_nodes(model.spec, settings.cluster)
    except SpanError as e:
        raise PullError(f"cannot pull {model.id} on the nodes it spans: {e}") from None


def peer_clients(settings: Settings, names: Sequence[str]) -> list[PeerClient]:
    """Clients of the named peers, with the keys this node holds for them."""
    try:
        peers = {p.name: p for p in read_peers(settings.cluster)}
    except ConfigError as e:
        raise PullError(
            "cannot read the peers' keys: " + "; ".join(str(i) for i in e.issues),
            hint="run as root (sudo): the peers' key files are root's and the daemon's",
        ) from None
    return [PeerClient(n, str(peers[n].url), peers[n].key) for n in names]


def follow(peer: PeerClient, model: Model, *, image: bool, say: Say) -> NodePull:
    """Ask `peer` to pull `model` and follow it to its outcome (blocking: run it in a thread)."""
    out = NodePull(peer.name)
    rerun = f"run `sparkctl pull {model.id}` again once it answers: a pull resumes where it stopped"
    try:
        for event in peer.pull(model.id):
            match event.event:
                case "line":
                    say(f"{peer.name}: {event.text}")
                case "done":
                    out.problems = [
                        f"on {peer.name}, {lack.message}"
                        for lack in event.missing or []
                        if image or lack.what != "image"
                    ]
                case "failed":
                    out.problems = [
                        f"on {peer.name}, {event.message}" + (f" ({event.hint})" if event.hint else "")
                    ]
    except SparkError as e:
        out.problems = [f"{e.message}: its weights are not pulled there; {rerun}"]
    out.ended = True
    return out


def pull_everywhere(
    model: Model,
    settings: Settings,
    *,
    local: Callable[[Say], None],
    say: Say,
    image: bool,
) -> list[str]:
    """Pull `model` on every node it spans, this one with `local`, the others through their
    daemons, all at once. Returns what went wrong, one line per node (empty: ready everywhere)."""
    nodes = nodes_of(model, settings)
    here = settings.cluster.node
    others = [n for n in nodes if n != here]
    say(f"{model.id} spans {', '.join(nodes)}: pulling on every one of them")
    peers = peer_clients(settings, others)
    results: list[NodePull] = [NodePull(p.name) for p in peers]
    threads = []
    for i, peer in enumerate(peers):

        def run(i: int = i, peer: PeerClient = peer) -> None:
            results[i] = follow(peer, model, image=image, say=say)

        thread = threading.Thread(target=run, name=f"sparkctl-pull-{peer.name}", daemon=True)
        thread.start()
        threads.append(thread)
    problems: list[str] = []
    if here in nodes:
        try:
            local(lambda line: say(f"{here}: {line}"))
        except SparkError as e:
            problems.append(f"on {here}, {e.message}" + (f" ({e.hint})" if e.hint else ""))
    else:
        say(f"{here}: {model.id} does not span this node; nothing to fetch here")
    for thread in threads:
        thread.join()
    for result in results:
        problems += result.problems
        if result.ended and not result.problems:
            say(f"{result.node}: {model.id} ready")
    return problems


def images_everywhere(settings: Settings, rows: Sequence[ImageRow], *, say: Say) -> list[dict[str, Any]]:
    """This node's image rows, then each peer's as its daemon reports them (`GET /api/v1/images`),
    each with its `node`; a peer that does not answer (or whose key cannot be read) is said."""
    table: list[dict[str, Any]] = [{"node": settings.cluster.node, **r.to_json()} for r in rows]
    try:
        peers = peer_clients(settings, [p.name for p in settings.cluster.peers])
    except SparkError as e:
        say(f"note: the other nodes' images are not listed: {e.message} ({e.hint})")
        return table
    for peer in peers:
        try:
            remote = peer.images()
        except SparkError as e:
            say(f"note: {e.message}: its images are not listed")
            continue
        for image in remote:
            note = image.note
            if image.state == "missing":
                local = image.image.startswith("localhost/")  # built on a node, never pulled
                todo = f"sparkctl images build {image.image}" if local else f"sparkctl pull {image.models[0]}"
                note = f"on {peer.name}: {todo}"
            table.append(
                {
                    "node": peer.name,
                    "image": image.image,
                    "source": "",
                    "state": image.state,
                    "models": image.models,
                    "note": note,
                }
            )
    return table
