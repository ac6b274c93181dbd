"""The doctor's check of the models that span Sparks (#15): every other node each one spans has
its weights and its image, and the same catalog entry as this node — what the owner asks of
every node before a start (`GET /api/v1/models/{model}/preflight`), asked ahead of time.

The models check (service.py) covers this node's own weights and images; the peers check
(peers.py) covers whether each peer answers at all and runs the same sparkctl.
"""

from __future__ import annotations

import json

from sparkctl.catalog import load_catalog, span
from sparkctl.errors import SparkError
from sparkctl.settings import PeerSettings, Settings
from sparkctl.tools.doctor.check import Check
from sparkctl.tools.doctor.host import Host
from sparkctl.tools.doctor.peers import ask

FIX = "sparkctl pull ID on the node named (or copy the same catalog file to it); docs/cluster.md"


def check_spanning(host: Host, settings: Settings) -> Check:
    name = "spanning models"
    cluster = settings.cluster
    if not cluster.peers:
        return Check(name, "pass", "no peers configured: no model spans Sparks here")
    try:
        catalog = load_catalog(settings)
    except SparkError:
        return Check(name, "pass", "the catalog does not load (see the models check)")
    peers = {p.name: p for p in cluster.peers}
    checked: list[str] = []
    problems: list[str] = []
    for model in catalog.enabled:
        spec = model.spec
        if spec.serve.nodes == 1:
            continue
        part = span.part(spec, cluster)
        if part is None:
            continue  # it spans other nodes only
        mine = span.fingerprint(spec)
        for node in part.nodes:
            if node == cluster.node:
                continue
            problem = _on(host, peers[node], model.id, mine)
            if problem:
                problems.append(f"{model.id} on {node}: {problem}")
        checked.append(f"{model.id} ({', '.join(part.nodes)})")
    if not checked:
        return Check(name, "pass", "no enabled model spans this node and others")
    if problems:
        return Check(name, "warn", "; ".join(problems), FIX)
    return Check(name, "pass", "every node has what each needs, and the same entry: " + ", ".join(checked))


def _on(host: Host, peer: PeerSettings, model: str, fingerprint: str) -> str | None:
    """What `model` lacks on `peer`, or how its entry there differs; None when it is ready."""
    answer = ask(host, peer, f"/api/v1/models/{model}/preflight")
    if isinstance(answer, str):
        return answer
    status, body = answer
    if status == 404:
        return "not in its catalog"
    if status != 200:
        return f"answers HTTP {status} to its preflight"
    try:
        data = json.loads(body)
        missing = [str(m) for m in data["missing"]]
        theirs = data.get("catalog_sha256")
    except (ValueError, KeyError, TypeError):
        return "does not answer as sparkctl does"
    if missing:
        return "; ".join(missing)
    if theirs is not None and theirs != fingerprint:
        return "its catalog entry differs from this node's"
    return None
