"""`sparkctl models list|show|validate|schema` and `sparkctl render`: the catalog and the units it
renders to. They work without the daemon; `models list` adds live states when it can ask it, and
`models list|show` describe what the daemon serves: a running demo's catalog, when the command
reaches the demo (`admin_command`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sparkctl.cli.app import Context, admin_command, fail, pass_ctx
from sparkctl.cli.output import emit_json, print_table, tokens
from sparkctl.errors import InvalidFilesError, SparkError

if TYPE_CHECKING:
    from sparkctl.catalog import Model


# ---------------------------------------------------------------------------------------- models
@click.group()
def models() -> None:
    """The model catalog (works without the daemon)."""


def _model_row(model: Model) -> dict[str, Any]:
    spec = model.spec
    from sparkctl.units.names import service_name, socket_name

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
        "stop_timeout": _duration(spec.serve.stop_timeout),
        "file": str(model.file),
    }


def _duration(seconds: float) -> str:
    from sparkctl.quantities import format_duration

    return format_duration(seconds)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array on stdout.")
@pass_ctx
@admin_command
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
            tokens(r["context_length"]),
            ", ".join(r["capabilities"]),
            r["disabled_reason"] if r["status"] == "disabled" else r["description"],
        ]
        for r in rows
    ]
    headers = ["MODEL", "STATUS", "GPU", "CONTEXT", "CAPABILITIES", "DESCRIPTION"]
    if live is not None:
        headers.insert(1, "STATE")
        for line, r in zip(table, rows, strict=True):
            line.insert(1, r["state"])
    print_table(headers, table, wrap={"CAPABILITIES", "DESCRIPTION"})


def _live_states(ctx: Context) -> dict[str, str] | None:
    """Model states from the daemon when it can be asked (root, or $SPARKCTL_API_KEY); else None."""
    from sparkctl.client import Client

    client = Client(ctx.settings, timeout=5)
    if client.unix is None and client.key is None:
        return None
    try:
        return {m.id: m.state.value for m in client.status().models}
    except SparkError:
        return None


@models.command("show")
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@pass_ctx
@admin_command
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
    from sparkctl.catalog.spec import json_schema

    emit_json(json_schema())


# ---------------------------------------------------------------------------------------- render
@click.command()
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
    from sparkctl.units import render as rendering
    from sparkctl.units import sync

    settings = ctx.settings
    catalog = ctx.catalog()
    files = rendering.render(catalog, settings)
    dirs = (
        {"quadlet": out, "unit": out}
        if out
        else {"quadlet": settings.systemd.quadlet_dir, "unit": settings.systemd.unit_dir}
    )
    changes = sync.sync(files, dirs)
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
    if out is None and settings.systemd.bus == "system":
        # The daemon may start and stop exactly these units: the rule follows the catalog.
        from sparkctl.paths import POLKIT_RULE
        from sparkctl.units.own import polkit_rule

        if sync.write_if_changed(POLKIT_RULE, polkit_rule(catalog)):
            click.echo(f"changed  {POLKIT_RULE}", err=True)
    if check:
        from sparkctl.units import verify

        report = verify.check(files, dirs, settings)
        for line in report.lines:
            click.echo(line, err=True)
        if not report.ok:
            fail("the rendered units did not pass the checks")


COMMANDS: list[click.Command] = [models, render]
