"""The `sparkctl` command line (click + rich).

Data goes to stdout (tables, or JSON with --json), messages and errors to stderr as `error: …`.
Exit codes: 0 ok, 1 failure, 2 usage. SparkError → message and exit code happens here and only
here; subcommands import their modules lazily so `sparkctl probe`, which every model unit runs
at start, stays quick.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import InvalidFilesError, SparkError

if TYPE_CHECKING:
    from .catalog import Model


from .clibase import Context, cli, emit_json, fail, pass_ctx, print_table


# ---------------------------------------------------------------------------------------- models
@cli.group()
def models() -> None:
    """The model catalog (works without the daemon)."""


def _model_row(model: Model) -> dict[str, Any]:
    spec = model.spec
    from .render import service_name, socket_name

    return {
        "id": spec.id,
        "description": spec.description,
        "status": spec.status.value,
        "disabled_reason": spec.disabled_reason,
        "aliases": spec.aliases,
        "capabilities": spec.capabilities,
        "context_length": spec.advertised_context,
        "max_model_len": spec.engine.max_model_len,
        "gpu_memory_utilization": spec.engine.gpu_memory_utilization,
        "gpu": spec.serve.gpu,
        "pinned": spec.serve.pinned,
        "preload": spec.serve.preload,
        "runtime": spec.engine.runtime,
        "engine": spec.engine.kind,
        "image": spec.engine.image,
        "hf_repo": spec.source.hf_repo,
        "unit": service_name(spec.id) if spec.enabled else None,
        "socket": socket_name(spec.id) if spec.enabled and model.direct_port else None,
        "host_port": model.host_port if spec.enabled else None,
        "direct_port": model.direct_port if spec.enabled else None,
        "idle_timeout": _duration(model.idle_timeout),
        "start_timeout": _duration(spec.serve.start_timeout),
        "file": str(model.file),
    }


def _duration(seconds: float) -> str:
    from .quantities import format_duration

    return format_duration(seconds)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array on stdout.")
@pass_ctx
def models_list(ctx: Context, as_json: bool) -> None:
    """Every catalog model, with its status, capabilities and (from the daemon) live state."""
    rows = [_model_row(m) for m in ctx.catalog()]
    live = _live_states(ctx)
    for row in rows:
        row["state"] = live.get(row["id"], "stopped") if live is not None else None
    if as_json:
        emit_json(rows)
        return
    table = [
        [
            r["id"],
            r["status"],
            f"{r['gpu_memory_utilization']:.2f}"
            + (" exclusive" if r["gpu"] == "exclusive" else "")
            + (" pinned" if r["pinned"] else ""),
            _tokens(r["context_length"]),
            ",".join(r["capabilities"]),
            r["disabled_reason"] if r["status"] == "disabled" else r["description"],
        ]
        for r in rows
    ]
    headers = ["MODEL", "STATUS", "GPU", "CONTEXT", "CAPABILITIES", "DESCRIPTION"]
    if live is not None:
        headers.insert(1, "STATE")
        for line, r in zip(table, rows, strict=True):
            line.insert(1, r["state"])
    print_table(headers, table)


def _live_states(ctx: Context) -> dict[str, str] | None:
    """Model states from the daemon when it can be asked (root, or $SPARKCTL_API_KEY); else None."""
    from .client import Client

    client = Client(ctx.settings, timeout=5)
    if client.unix is None and client.key is None:
        return None
    try:
        return {m["id"]: m["state"] for m in client.status()["models"]}
    except SparkError:
        return None


def _tokens(n: int) -> str:
    """Context sizes as people say them: 131072 → 128k, 128000 → 128k, 240000 → 240k."""
    if n % 1000 == 0:
        return f"{n // 1000}k"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


@models.command("show")
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@pass_ctx
def models_show(ctx: Context, model_id: str, as_json: bool) -> None:
    """One model: its settings and the units it renders to."""
    model = ctx.catalog().resolve(model_id)
    row = _model_row(model)
    row["spec"] = model.spec.model_dump(mode="json")
    if as_json:
        emit_json(row)
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        if key == "spec":
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else ("-" if value is None else value)
        click.echo(f"{key:<{width}}  {shown}")
    if model.spec.notes:
        click.echo(f"\n{model.spec.notes.strip()}")


@models.command("validate")
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path, file_okay=False))
@pass_ctx
def models_validate(ctx: Context, dirs: tuple[Path, ...]) -> None:
    """Check catalog directories (default: the configured ones); one `path: field: message` line
    per error."""
    try:
        catalog = ctx.catalog(list(dirs) if dirs else None)
    except InvalidFilesError as e:
        for issue in e.issues:
            click.echo(str(issue), err=True)
        fail(f"{len(e.issues)} error{'s' if len(e.issues) != 1 else ''} in the catalog")
    enabled = len(catalog.enabled)
    click.echo(f"{len(catalog)} models valid ({enabled} enabled, {len(catalog) - enabled} disabled)")


@models.command("schema")
def models_schema() -> None:
    """The JSON schema of a catalog file (docs/catalog.schema.json is this output)."""
    from .catalog.spec import json_schema

    emit_json(json_schema())


# ---------------------------------------------------------------------------------------- render
@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write every unit here (default: the configured quadlet and unit dirs).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Run the real Quadlet generator (dry run) and systemd-analyze verify on the result.",
)
@click.option("-v", "--verbose", is_flag=True, help="List every file written, not only changes.")
@pass_ctx
def render(ctx: Context, out: Path | None, check: bool, verbose: bool) -> None:
    """Render the units of every enabled model."""
    from . import render as rendering
    from . import units

    settings = ctx.settings
    catalog = ctx.catalog()
    files = rendering.render(catalog, settings)
    dirs = (
        {"quadlet": out, "unit": out}
        if out
        else {"quadlet": settings.systemd.quadlet_dir, "unit": settings.systemd.unit_dir}
    )
    changes = units.sync(files, dirs)
    # A first render adds everything; what changed later is what an operator wants to see.
    shown = [("changed", changes.changed), ("removed", changes.removed)]
    if verbose:
        shown.insert(0, ("added", changes.added))
    for label, paths in shown:
        for p in paths:
            click.echo(f"{label:8} {p}", err=True)
    click.echo(
        f"{len(files)} unit files for {len(catalog.enabled)} models "
        f"({len(changes.added)} added, {len(changes.changed)} changed, {len(changes.removed)} removed)"
    )
    if check:
        from . import verify

        report = verify.check(files, dirs, settings)
        for line in report.lines:
            click.echo(line, err=True)
        if not report.ok:
            fail("the rendered units did not pass the checks")


# ---------------------------------------------------------------------------------------- keys
from .cli_keys import keys  # noqa: E402  (the groups live in their own modules)
from .cli_ops import COMMANDS  # noqa: E402
from .cli_spark import COMMANDS as SPARK_COMMANDS  # noqa: E402

cli.add_command(keys)
for command in [*COMMANDS, *SPARK_COMMANDS]:
    cli.add_command(command)


# ---------------------------------------------------------------------------------------- helpers
@cli.command()
@click.argument("url")
@click.option("--interval", default="10ms", show_default=True, help="Time between probes.")
@click.option("--timeout", default=None, help="Give up after this long (default: never; systemd bounds it).")
def probe(url: str, interval: str, timeout: str | None) -> None:
    """Wait until URL answers 200 (the readiness step of every model unit)."""
    from .probe import EngineExitedError, wait_ready
    from .quantities import parse_duration

    # systemd tells ExecStartPost= the unit's main process; without it (by hand) nothing is watched.
    main_pid = os.environ.get("MAINPID")
    try:
        ok = wait_ready(
            url,
            interval=parse_duration(interval),
            timeout=parse_duration(timeout) if timeout else None,
            main_pid=int(main_pid) if main_pid and main_pid.isdigit() else None,
        )
    except ValueError as e:
        fail(str(e), 2)
    except EngineExitedError as e:
        fail(str(e))
    if not ok:
        fail(f"{url} was not ready within {timeout}")
    # Ready: every millisecond from here to systemd's "active" is a client waiting on a cold
    # start, and an orderly interpreter shutdown costs ~20 of them. Nothing is left to clean up.
    sys.stderr.flush()
    os._exit(0)


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulate(args: tuple[str, ...]) -> None:
    """A vLLM stand-in: `sparkctl emulate [serve] MODEL [vLLM flags]` (see docs)."""
    from . import emulator

    sys.exit(emulator.main(list(args)))


def main() -> None:
    cli(standalone_mode=True)
