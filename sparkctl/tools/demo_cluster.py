"""`sparkctl demo --nodes N`: a cluster of sandboxed Sparks on a machine without one (#15).

N sandboxes, each a real systemd in its own network namespace, joined by veth pairs that stand
for the QSFP link (10.77.9.0/24, inside those namespaces only), each with sparkctl installed and
configured as docs/cluster.md tells an owner. Every node has an emulated model of its own, and
`demo-span` spans them all in vLLM's native multi-node form (`sparkctl emulate` standing in for
vLLM): its head on spark-a, a worker on every other node. The first request asks spark-a for
`demo-span`, which evicts nothing yet, reserves every other node, starts the workers and then
the head, and answers once all have joined.

spark-a's gateway is reached from this machine's 127.0.0.1:PORT through systemd-socket-proxyd,
started in spark-a's network namespace on a socket bound here first (the systemd socket-proxy
pattern): the link and the nodes' own addresses never appear on this machine's network.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sparkctl.errors import DemoError
from sparkctl.sandbox import cluster as sandbox_cluster
from sparkctl.sandbox.cluster import Cluster, Node
from sparkctl.sandbox.weights import write_placeholder
from sparkctl.tools import demo_locator
from sparkctl.tools.demo_catalog import catalog_entry

NAMES = ("spark-a", "spark-b", "spark-c", "spark-d")
SPAN = "demo-span"
PROXYD = ("/usr/lib/systemd/systemd-socket-proxyd", "/lib/systemd/systemd-socket-proxyd")


def _entry(model_id: str, description: str, port: int, sparkctl: str, serve: tuple[str, ...] = ()) -> str:
    """An exclusive emulated model run as a plain service (no image to import into every node)."""
    spec: dict[str, object] = {
        "description": description,
        "capabilities": ["chat"],
        "process": True,
        "fraction": 0.85,
        "load": 2.0,
        "exclusive": True,
    }
    return catalog_entry(model_id, spec, port, sparkctl, serve)


def _models(count: int, port: int) -> Callable[[Node], None]:
    def write(node: Node) -> None:
        own = f"demo-{node.name.removeprefix('spark-')}"
        (node.catalog / f"{own}.toml").write_text(
            _entry(own, f"An emulated model of {node.name}'s own", port + 100, node.sparkctl)
        )
        serve = (f"nodes = {count}", 'multinode = "native"', 'owner = "spark-a"')
        (node.catalog / f"{SPAN}.toml").write_text(
            _entry(SPAN, f"An emulated model spanning {count} Sparks", port + 101, node.sparkctl, serve)
        )
        for model_id in (own, SPAN):  # emulated engines need no weights, but their starts check
            write_placeholder(node.hf_cache, f"sparkctl-demo/{model_id}")

    return write


def expose(node: Node, port: int) -> subprocess.Popen[bytes]:
    """This machine's 127.0.0.1:PORT forwarded to the node's own 127.0.0.1:PORT."""
    proxyd = next((p for p in PROXYD if Path(p).exists()), None) or shutil.which("systemd-socket-proxyd")
    if proxyd is None:
        raise DemoError("systemd-socket-proxyd is not installed (Debian's systemd package has it)")
    listener = socket.socket()
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError as e:
        listener.close()
        raise DemoError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
    fd = listener.fileno()
    # sd_listen_fds(): the socket as fd 3, for this very process (nsenter -n execs, not forks).
    script = f'exec 3<&{fd}; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@"'
    try:
        return subprocess.Popen(
            node.netns("sh", "-c", script, proxyd, f"127.0.0.1:{port}"),
            pass_fds=(fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        listener.close()  # the proxy holds it now


def first_request(url: str, key: str, nodes: int, say: Callable[[str], None]) -> None:
    import openai

    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=180)
    listed = client.models.list().data
    say("models: " + ", ".join(f"{m.id} ({getattr(m, 'node', '?')})" for m in listed))
    t0 = time.monotonic()
    reply = client.chat.completions.create(
        model=SPAN,
        messages=[{"role": "user", "content": "Say hello to the DGX Sparks."}],
        max_tokens=12,
    )
    took = time.monotonic() - t0
    say(
        f"{SPAN} (spanning {nodes} nodes) answered after a cold start in {took:.1f}s: "
        f"{reply.choices[0].message.content!r}"
    )


def run(port: int, nodes: int, *, once: bool, say: Callable[[str], None], wait: Callable[[], None]) -> int:
    if not 2 <= nodes <= len(NAMES):
        raise DemoError(f"--nodes must be 1 to {len(NAMES)}, got {nodes}")
    running = demo_locator.read()
    if running is not None:
        raise DemoError(
            f"a demo already runs at {running.url} (pid {running.pid})",
            hint="use it (root's sparkctl commands reach it), or stop it first (Ctrl-C where it runs)",
        )
    say(f"booting {nodes} sandboxes (systemd 252, D-Bus), each a Spark, linked as by a QSFP cable …")
    say("installing sparkctl on each (`sparkctl install`) and giving each an admin key of the others' …")
    cluster: Cluster = sandbox_cluster.up(
        NAMES[:nodes], boxes="demo-node", port=port, models=_models(nodes, port), prefix="10.77.9"
    )
    head = cluster[0]
    proxy: subprocess.Popen[bytes] | None = None
    here: demo_locator.Demo | None = None
    try:
        proxy = expose(head, port)
        here = demo_locator.this_demo(f"127.0.0.1:{port}", head.config, head.box.path, Path(head.sparkctl))
        demo_locator.write(here)
        url = f"http://127.0.0.1:{port}/v1"
        first_request(url, head.key, nodes, say)
        command = sys.argv[0] if Path(sys.argv[0]).name == "sparkctl" else head.sparkctl
        say(
            f"\n{nodes} sandboxed Sparks serve emulated models; spark-a's endpoint is\n  {url}\n"
            f"with the API key\n  {head.key}\nTry:\n"
            f"  curl {url}/models -H 'Authorization: Bearer {head.key}'        (every node's models)\n"
            f"  curl {url}/chat/completions -H 'Authorization: Bearer {head.key}' \\\n"
            "       -H 'Content-Type: application/json' \\\n"
            '       -d \'{"model": "demo-b", "messages": [{"role": "user", "content": "hi"}]}\'\n'
            f"  {command} ps -a          (spark-a's daemon; NODE says where each model runs)\n"
            + "".join(
                f"  {n.box.path}/bin/systemctl list-units 'sparkctl*'    ({n.name})\n" for n in cluster.nodes
            )
        )
        if not once:
            wait()
    finally:
        if here is not None:
            demo_locator.remove(here)
        if proxy is not None:
            proxy.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proxy.wait(5)
        say("tearing the sandboxes down …")
        cluster.down()
    return 0
