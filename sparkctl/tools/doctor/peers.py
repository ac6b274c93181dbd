"""The doctor's check of a cluster's peers (#15; the direct link is cluster.py's): every peer
answering, with the key this node holds for it, under the name this node gives it, and running
the same sparkctl (a relay between versions is not something to find out about mid-request).

A peer is asked its admin status (`/api/v1/status`) with the key in its `api_key_file`, as the
daemon does; nothing is asked of a peer when no cluster is configured.
"""

from __future__ import annotations

import grp
import json
import stat

from sparkctl import __version__
from sparkctl.settings import PeerSettings, Settings
from sparkctl.tools.doctor.check import Check
from sparkctl.tools.doctor.host import Host
from sparkctl.tools.pull import TOKEN_FILE

DAEMON_GROUP = "sparkctl"
SILENT = "does not answer"


def check_peers(host: Host, settings: Settings) -> Check:
    name = "cluster peers"
    cluster = settings.cluster
    if not cluster.peers:
        return Check(name, "pass", "no peers configured: this Spark serves alone")
    problems: list[str] = []
    answering = []
    for peer in cluster.peers:
        if (problem := _peer(host, peer, cluster.node)) is None:
            answering.append(peer.name)
        else:
            problems.append(problem)
    detail = f"node {cluster.node}; peers answering: {', '.join(answering) or 'none'}"
    if problems:
        return Check(name, "warn", f"{detail}; " + "; ".join(problems), "docs/cluster.md: what happens when…")
    return Check(name, "pass", detail + f", each on sparkctl {__version__}")


def ask(host: Host, peer: PeerSettings, path: str) -> tuple[int, bytes] | str:
    """A peer's answer to GET `path` (status, body), asked with the key this node holds for it,
    as the daemon asks; else what kept it from answering."""
    try:  # (a path the settings found on this host: read as the daemon reads it)
        key = peer.api_key_file.read_text().strip()
    except OSError:
        key = ""
    if not key:
        return f"cannot read the key file {peer.api_key_file} (sudo sparkctl doctor)"
    answer = host.fetch(f"{peer.url}{path}", {"Authorization": f"Bearer {key}"})
    return SILENT if answer is None else answer


def _peer(host: Host, peer: PeerSettings, node: str) -> str | None:
    """What is wrong with a peer, if anything."""
    answer = ask(host, peer, "/api/v1/status")
    if answer == SILENT:
        return f"{peer.name} at {peer.url} does not answer"
    if isinstance(answer, str):
        return f"{peer.name}: {answer}"
    status, body = answer
    if status in (401, 403):
        return f"{peer.name} refuses the key in {peer.api_key_file} (an admin key of {peer.name}'s is needed)"
    if status != 200:
        return f"{peer.name} answers HTTP {status} to its admin status"
    try:
        data = json.loads(body)
        version, named = str(data["version"]), str(data.get("node", ""))
    except (ValueError, KeyError, TypeError):
        return f"{peer.name} at {peer.url} does not answer as sparkctl does"
    if named and named != peer.name:
        return f"{peer.url} calls itself {named!r}, not {peer.name!r} (cluster.node there)"
    if named == node:
        return f"{peer.url} is this node itself"
    if version != __version__:
        return f"{peer.name} runs sparkctl {version}, this node {__version__} (upgrade both alike)"
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_cluster_pulls(host: Host, settings: Settings) -> Check:
    """In a cluster, the other nodes' `sparkctl pull` of a spanning model has this node's daemon
    fetch into runtime.hf_cache: the cache must be its group's to write, and the Hugging Face
    token (if there is one) its group's to read (`sparkctl install` makes both so)."""
    name = "cluster pulls"
    if not settings.cluster.peers:
        return Check(name, "pass", "no peers configured: only this node pulls here")
    if settings.systemd.bus == "user":
        return Check(name, "pass", "a user's daemon writes its own cache")
    cache = settings.runtime.hf_cache
    problems = []
    try:
        st = host.path(cache).stat()
    except OSError:
        problems.append(f"{cache} does not exist")
    else:
        group, mode = _group_name(st.st_gid), stat.S_IMODE(st.st_mode)
        if group != DAEMON_GROUP or mode & 0o070 != 0o070 or not mode & stat.S_ISGID:
            problems.append(
                f"{cache} is {group}'s, mode {mode:04o}: the daemon (group {DAEMON_GROUP}) cannot write it"
            )
    try:
        token = host.path(TOKEN_FILE).stat()
    except OSError:
        token = None
    if token is not None and (_group_name(token.st_gid) != DAEMON_GROUP or not token.st_mode & stat.S_IRGRP):
        problems.append(f"the daemon cannot read {TOKEN_FILE}: gated models cannot be pulled here")
    if problems:
        return Check(
            name,
            "warn",
            "other nodes' `sparkctl pull` of a model that spans this one fails here: " + "; ".join(problems),
            "sudo sparkctl install (it gives the cache and the token to the daemon's group)",
        )
    return Check(name, "pass", f"the daemon may fetch into {cache} for the other nodes")
