"""`sparkctl demo`: the real stack on a machine without a Spark.

It boots sparkctl's sandbox (a throwaway systemd with its bus, Podman 5 and Quadlet), installs
sparkctl into it exactly as `sparkctl install` would on a host, with a small catalog of emulated
models (`sparkctl emulate` standing in for vLLM: one as a plain service, two as Quadlet
containers, one of them exclusive), sends a first chat completion with the `openai` client — a
cold start through socket activation, the supervisor and systemd — and then serves until Ctrl-C
(or SIGTERM), when everything is torn down again. Needs root and the sandbox substrate
(./scripts/setup).

While it serves, it leaves a record of where it is (tools/demo_locator.py), so that root's admin
commands (`sparkctl ps`, `models list`, `logs`, `keys`, `doctor`, …) reach it without flags.
"""

from __future__ import annotations

import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sparkctl.errors import DemoError
from sparkctl.sandbox import image
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.weights import write_placeholder
from sparkctl.tools import demo_locator
from sparkctl.tools.demo_catalog import DEMO_MODELS, catalog_entry


def prepare(box: Box, port: int, sparkctl: str) -> Path:
    """Write the demo's catalog and configuration into the box; return the configuration."""
    base = box.path / "demo"
    catalog = base / "models"
    catalog.mkdir(parents=True, exist_ok=True)
    for n, (model_id, spec) in enumerate(DEMO_MODELS.items()):
        (catalog / f"{model_id}.toml").write_text(catalog_entry(model_id, spec, port + 100 + n, sparkctl))
    for d in ("hf", "compile"):
        (base / d).mkdir(exist_ok=True)
    for model_id in DEMO_MODELS:  # emulated engines need no weights, but their starts check
        write_placeholder(base / "hf", f"sparkctl-demo/{model_id}")
    config = base / "sparkctl.toml"
    config.write_text(
        f'[gateway]\nlisten = ["127.0.0.1:{port}"]\n'
        f'[catalog]\ndirs = ["{catalog}"]\n'
        f'[runtime]\ncontainer_network = "host"\nsparkctl = "{sparkctl}"\n'
        f'hf_cache = "{base / "hf"}"\ncompile_cache = "{base / "compile"}"\n'
    )
    return config


def first_request(url: str, key: str, say: Callable[[str], None]) -> None:
    import openai

    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
    names = [m.id for m in client.models.list().data]
    say(f"models: {', '.join(names)}")
    t0 = time.monotonic()
    reply = client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "Say hello to the DGX Spark."}],
        max_tokens=12,
    )
    took = time.monotonic() - t0
    say(f"demo-chat answered after a cold start in {took:.1f}s: {reply.choices[0].message.content!r}")


def dashboard(url: str) -> str:
    """The dashboard's address, once it answers there: `/` redirects to it (BRIEF §9)."""
    try:
        with urllib.request.urlopen(f"{url}/", timeout=10) as r:  # follows the redirect
            if r.headers.get("Content-Type", "").startswith("text/html"):
                return str(r.url)
            raise DemoError(f"the dashboard at {r.url} is not a page: {r.headers.get('Content-Type')}")
    except urllib.error.URLError as e:  # (HTTPError, for a status other than 2xx, is one)
        raise DemoError(f"the dashboard did not answer at {url}/: {e}") from None


def run(port: int, *, once: bool, say: Callable[[str], None], nodes: int = 1) -> int:
    # SIGINT (Ctrl-C; also when started where it is ignored, as in a script's background job)
    # and SIGTERM end the demo alike: the sandbox is torn down and its record removed.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if nodes > 1:
            from sparkctl.tools import demo_cluster

            def wait() -> None:
                _wait_for_signal(lambda: say("Ctrl-C stops the demo and removes the sandboxes."))

            return demo_cluster.run(port, nodes, once=once, say=say, wait=wait)
        return _run(port, once=once, say=say)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(port: int, *, once: bool, say: Callable[[str], None]) -> int:
    sparkctl = str(Path(sys.executable).parent / "sparkctl")
    running = demo_locator.read()
    if running is not None:  # its sandbox has the same name: a second demo would tear it down
        raise DemoError(
            f"a demo already runs at {running.url} (pid {running.pid})",
            hint="use it (root's sparkctl commands reach it), or stop it first (Ctrl-C where it runs)",
        )
    say("booting the sandbox (systemd 252, D-Bus, Podman 5, Quadlet) …")
    box = Box.up(name="demo")
    here: demo_locator.Demo | None = None
    try:
        image.import_into(box)
        config = prepare(box, port, sparkctl)
        say("installing sparkctl into it (`sparkctl install`) …")
        proc = box.run(sparkctl, "--config", str(config), "install", check=False, timeout=300)
        if proc.returncode != 0:
            raise DemoError(f"sparkctl install failed in the sandbox:\n{proc.stderr}")
        key = proc.stdout.strip()
        # From here on root's admin commands find the demo by themselves.
        here = demo_locator.this_demo(f"127.0.0.1:{port}", config, box.path, Path(sparkctl))
        demo_locator.write(here)
        url = f"http://127.0.0.1:{port}/v1"
        command = sys.argv[0] if Path(sys.argv[0]).name == "sparkctl" else sparkctl  # as it was typed
        first_request(url, key, say)
        page = dashboard(f"http://127.0.0.1:{port}")
        say(
            "\nsparkctl is serving emulated models at\n"
            f"  {url}\nwith the API key\n  {key}\n"
            f"and its dashboard (sign in with that key) at\n  {page}\n\nTry:\n"
            f"  curl {url}/models -H 'Authorization: Bearer {key}'\n"
            f"  curl {url}/chat/completions -H 'Authorization: Bearer {key}' \\\n"
            "       -H 'Content-Type: application/json' \\\n"
            '       -d \'{"model": "demo-large", "messages": [{"role": "user", "content": "hi"}]}\'\n'
            f"  {command} ps -a            (root's sparkctl commands find the demo by themselves:\n"
            f"  {command} logs demo-chat    models list|show, start, stop, keys, doctor, …)\n"
            f"  {box.path}/bin/systemctl list-units 'sparkctl*'      (systemd inside the sandbox)\n"
            f"  {box.path}/bin/journalctl -u sparkctl -f\n"
        )
        if not once:
            _wait_for_signal(lambda: say("Ctrl-C stops the demo and removes the sandbox."))
        demo_locator.remove(here)  # no longer serving: the commands stop reaching it
        box.run(sparkctl, "--config", str(config), "uninstall", check=False, timeout=120)
    finally:
        if here is not None:
            demo_locator.remove(here)
        say("tearing the sandbox down …")
        box.down()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_signal(announce: Callable[[], None]) -> None:
    """Say so, then wait until SIGINT or SIGTERM (which `run` turns into KeyboardInterrupt). The
    announcement is inside the wait: a signal sent the moment it is read (a script waiting for
    that line) lands while waiting, not between the two, where it would end the demo as a failure."""
    try:
        announce()
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
