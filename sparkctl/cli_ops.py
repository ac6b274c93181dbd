"""Operator commands: the daemon (`serve`), putting it on a host (`install`, `uninstall`), and
driving it (`ps`, `start`, `stop`, `logs`) — the last as clients of its admin API."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import click

from .clibase import Context, emit_json, fail, pass_ctx, print_table


def _client(ctx: Context) -> Any:
    from .client import Client

    return Client(ctx.settings)


def _ago(wall: float | None) -> str:
    if not wall:
        return "-"
    seconds = time.time() - wall
    return _human(abs(seconds)) + (" ago" if seconds >= 0 else "")


def _until(wall: float | None) -> str:
    if not wall:
        return "-"
    return "in " + _human(max(0.0, wall - time.time()))


def _human(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@click.command()
@pass_ctx
def serve(ctx: Context) -> None:
    """Run the daemon (the supervisor and the gateway); systemd starts it from sparkctl.socket."""
    from . import daemon

    daemon.main(ctx.config)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array on stdout.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Stopped models too.")
@pass_ctx
def ps(ctx: Context, as_json: bool, show_all: bool) -> None:
    """Models the daemon runs: state, since when, requests, when the idle stop comes."""
    status = _client(ctx).status()
    models = [m for m in status["models"] if show_all or m["state"] != "stopped"]
    if as_json:
        emit_json(models)
        return
    rows = [
        [
            m["id"],
            m["state"],
            _ago(m["since"]),
            str(m["in_flight"]),
            str(m["waiting"]),
            _until(m["idle_stop_at"]),
            m["unit"],
        ]
        for m in models
    ]
    print_table(["MODEL", "STATE", "SINCE", "IN-FLIGHT", "WAITING", "IDLE STOP", "UNIT"], rows)
    if not models:
        click.echo("no model is running (sparkctl ps -a lists them all)", err=True)


@click.command()
@click.argument("model_id")
@click.option("--no-wait", is_flag=True, help="Return once the start is queued.")
@pass_ctx
def start(ctx: Context, model_id: str, no_wait: bool) -> None:
    """Start a model now (as a request would), and wait until it is ready."""
    client = _client(ctx)
    model = client.start(model_id)
    if no_wait:
        click.echo(f"{model['id']}: {model['state']}")
        return
    state = _wait(client, model["id"], ("ready",), ("failed", "backoff", "stopped"))
    if state != "ready":
        fail(f"{model['id']} is {state}: see `sparkctl logs {model['id']}`")
    click.echo(f"{model['id']}: ready")


@click.command()
@click.argument("model_id", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Every running model.")
@click.option("--now", is_flag=True, help="Do not wait for in-flight requests: end them with an error.")
@pass_ctx
def stop(ctx: Context, model_id: str | None, stop_all: bool, now: bool) -> None:
    """Stop a model once its in-flight requests are done (the idle path with timeout 0)."""
    if bool(model_id) == stop_all:
        raise click.UsageError("give a MODEL_ID or --all")
    client = _client(ctx)
    targets = (
        [model_id]
        if model_id
        else [m["id"] for m in client.status()["models"] if m["state"] not in ("stopped", "failed")]
    )
    for target in targets:
        assert target is not None
        client.stop(target, now=now)
        state = _wait(client, target, ("stopped", "failed"), ())
        click.echo(f"{target}: {state}")


def _wait(client: Any, model: str, done: tuple[str, ...], failed: tuple[str, ...]) -> str:
    """Follow the model's state on the daemon's event stream until it reaches `done` or `failed`,
    printing each change on stderr."""
    last = ""
    for name, state in client.events():
        if name != model:
            continue
        if state != last:
            click.echo(f"{model}: {state}", err=True)
            last = state
        if state in done or state in failed:
            break
    return last


@click.command()
@click.argument("model_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=100, show_default=True, help="How many lines to show.")
@pass_ctx
def logs(ctx: Context, model_id: str, follow: bool, lines: int) -> None:
    """The model's own output: its unit's journal (journalctl -u sparkctl-ID.service)."""
    model = ctx.catalog().resolve(model_id)
    argv = [
        "journalctl",
        "--no-pager",
        "-o",
        "short-iso",
        "-n",
        str(lines),
        "-u",
        f"sparkctl-{model.id}.service",
    ]
    if ctx.settings.systemd.bus == "user":
        argv.insert(1, "--user")
    if follow:
        argv.append("-f")
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        fail("journalctl is not installed")


@click.command()
@click.option("--user", is_flag=True, help="A rootless stack for this user (systemctl --user).")
@pass_ctx
def install(ctx: Context, user: bool) -> None:
    """Install sparkctl as a service (root): units, user, polkit rule, a key, sockets."""
    from . import install as installer
    from .settings import DEFAULT_CONFIG, load_settings, user_config_path

    report = asyncio.run(installer.install(ctx.config, user=user))
    for line in report.lines:
        click.echo(line, err=True)
    settings = load_settings(ctx.config or (user_config_path() if user else DEFAULT_CONFIG))
    url = installer.api_url(settings)
    if report.new_key:
        click.echo("\nAn admin API key was created. It is shown once; keep it:", err=True)
        click.echo(report.new_key)
        key = report.new_key
    else:
        key = "$SPARKCTL_API_KEY"
    click.echo(
        f"\nsparkctl is installed and listening on {url}. Try:\n"
        f"  curl {url}/models -H 'Authorization: Bearer {key}'\n"
        "  sparkctl ps -a\n"
        "More keys: sparkctl keys add NAME",
        err=True,
    )


@click.command()
@click.option("--user", is_flag=True, help="This user's stack (from install --user).")
@pass_ctx
def uninstall(ctx: Context, user: bool) -> None:
    """Stop sparkctl and remove its units (configuration, keys and caches stay)."""
    from . import install as installer

    report = asyncio.run(installer.uninstall(ctx.config, user=user))
    for line in report.lines:
        click.echo(line, err=True)


@click.command()
@click.option("--port", default=8009, show_default=True, help="Where the demo's gateway listens.")
@click.option("--once", is_flag=True, help="Serve the first request, then tear down (for scripts).")
def demo(port: int, once: bool) -> None:
    """Serve emulated models through the real stack, in a sandbox (root; no Spark needed)."""
    from . import demo as demo_module

    raise SystemExit(demo_module.run(port, once=once, say=lambda line: click.echo(line, err=True)))


COMMANDS = [serve, ps, start, stop, logs, install, uninstall, demo]
