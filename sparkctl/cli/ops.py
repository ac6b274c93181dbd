"""Operator commands: the daemon (`serve`), putting it on a host (`install`, `uninstall`), and
driving it (`ps`, `start`, `stop`, `logs`) — the last as clients of its admin API, which reach a
running demo by themselves (`admin_command`)."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import click

from sparkctl.cli.app import Context, admin_command, fail, pass_ctx
from sparkctl.cli.output import ago, emit_json, eta, print_table, until
from sparkctl.core.states import ModelState

if TYPE_CHECKING:
    from sparkctl.client import Client


def _client(ctx: Context) -> Client:
    from sparkctl.client import Client

    return Client(ctx.settings)


@click.command()
@pass_ctx
def serve(ctx: Context) -> None:
    """Run the daemon (the supervisor and the gateway); systemd starts it from sparkctl.socket."""
    from sparkctl.daemon import serve as daemon

    daemon.main(ctx.config)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array on stdout.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Stopped models too.")
@pass_ctx
@admin_command
def ps(ctx: Context, as_json: bool, show_all: bool) -> None:
    """Models the daemon runs: state, since when, requests, when the idle stop comes, for a model
    on its way its ETA ("?": guessed from its size on disk, before any start was seen), and in a
    cluster on which node (the other nodes' models as they last listed them)."""
    status = _client(ctx).status()
    models = [m for m in status.models if show_all or m.state is not ModelState.STOPPED]
    remote = [
        (peer.name, m)
        for peer in status.peers
        for m in peer.models
        if show_all or m.state != ModelState.STOPPED.value
    ]
    if as_json:
        rows = [m.model_dump(mode="json") for m in models]
        if status.peers:
            rows = [{**row, "node": status.node} for row in rows]
            rows += [{**m.model_dump(mode="json"), "node": node} for node, m in remote]
        emit_json(rows)
        return
    table = [
        [
            m.id,
            m.state.value,
            ago(m.since),
            str(m.in_flight),
            str(m.waiting),
            eta(m.eta_seconds, m.eta_guess),
            until(m.idle_stop_at),
            m.unit,
        ]
        for m in models
    ]
    headers = ["MODEL", "STATE", "SINCE", "IN-FLIGHT", "WAITING", "ETA", "IDLE STOP", "UNIT"]
    if status.peers:  # a cluster (BRIEF §9): which node serves each; the peers' own details are theirs
        headers.insert(1, "NODE")
        table = [[row[0], status.node or "-", *row[1:]] for row in table]
        table += [[m.id, node, m.state, "-", "-", "-", "-", "-", "-"] for node, m in remote]
    print_table(headers, table, wrap={"UNIT"})
    if not table:
        click.echo("no model is running (sparkctl ps -a lists them all)", err=True)
    for peer in status.peers:
        if not peer.available:
            click.echo(f"node {peer.name} ({peer.url}) does not answer: {peer.error}", err=True)


@click.command()
@click.argument("model_id")
@click.option("--no-wait", is_flag=True, help="Return once the start is queued.")
@pass_ctx
@admin_command
def start(ctx: Context, model_id: str, no_wait: bool) -> None:
    """Start a model now (as a request would), and wait until it is ready."""
    client = _client(ctx)
    model = client.start(model_id)
    if no_wait:
        click.echo(f"{model.id}: {model.state.value}")
        return
    state = _wait(
        client, model.id, {ModelState.READY}, {ModelState.FAILED, ModelState.BACKOFF, ModelState.STOPPED}
    )
    if state is not ModelState.READY:
        fail(f"{model.id} is {state}: see `sparkctl logs {model.id}`")
    click.echo(f"{model.id}: ready")


@click.command()
@click.argument("model_id", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Every running model.")
@click.option("--now", is_flag=True, help="Do not wait for in-flight requests: end them with an error.")
@pass_ctx
@admin_command
def stop(ctx: Context, model_id: str | None, stop_all: bool, now: bool) -> None:
    """Stop a model once its in-flight requests are done (the idle path with timeout 0)."""
    if bool(model_id) == stop_all:
        raise click.UsageError("give a MODEL_ID or --all")
    client = _client(ctx)
    down = (ModelState.STOPPED, ModelState.FAILED)
    targets = [model_id] if model_id else [m.id for m in client.status().models if m.state not in down]
    for target in targets:
        assert target is not None
        client.stop(target, now=now)
        state = _wait(client, target, set(down), set())
        click.echo(f"{target}: {state or ''}")


def _wait(client: Client, model: str, done: set[ModelState], failed: set[ModelState]) -> ModelState | None:
    """Follow the model's state on the daemon's event stream until it reaches `done` or `failed`,
    printing each change on stderr."""
    last: ModelState | None = None
    for event in client.events():
        if event.model != model:
            continue
        if event.state is not last:
            click.echo(f"{model}: {event.state}", err=True)
            last = event.state
        if event.state in done | failed:
            break
    return last


@click.command()
@click.argument("model_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=100, show_default=True, help="How many lines to show.")
@pass_ctx
@admin_command
def logs(ctx: Context, model_id: str, follow: bool, lines: int) -> None:
    """The model's own output: its unit's journal (journalctl -u sparkctl-ID.service)."""
    from sparkctl.units.names import service_name

    model = ctx.catalog().resolve(model_id)
    argv = [
        "journalctl",
        "--no-pager",
        "-o",
        "short-iso",
        "-n",
        str(lines),
        "-u",
        service_name(model.id),
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
    from sparkctl.settings import DEFAULT_CONFIG, load_settings, user_config_path
    from sparkctl.tools import install as installer

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
    from sparkctl.tools import install as installer

    report = asyncio.run(installer.uninstall(ctx.config, user=user))
    for line in report.lines:
        click.echo(line, err=True)


@click.command()
@click.option("--port", default=8009, show_default=True, help="Where the demo's gateway listens.")
@click.option("--once", is_flag=True, help="Serve the first request, then tear down (for scripts).")
@click.option(
    "--nodes",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="Sandboxed Sparks in a cluster, with a model that spans them all.",
)
def demo(port: int, once: bool, nodes: int) -> None:
    """Serve emulated models through the real stack, in a sandbox (root; no Spark needed)."""
    from sparkctl.tools import demo as demo_module

    say = lambda line: click.echo(line, err=True)  # noqa: E731
    raise SystemExit(demo_module.run(port, once=once, say=say, nodes=nodes))


COMMANDS = [serve, ps, start, stop, logs, install, uninstall, demo]
