"""`sparkctl keys add|list|revoke` (BRIEF §4.4): edit the key file named by `gateway.api_keys_file`.

They work on the file directly, not through the daemon, which notices the change within a second
(apikeys.KeyFile); a running demo's file when they reach the demo (`admin_command`). apikeys is
loaded only when a keys command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sparkctl.cli.app import admin_command
from sparkctl.cli.output import emit_json, print_table
from sparkctl.errors import InvalidKeyNameError

if TYPE_CHECKING:
    from sparkctl.cli.app import Context


def _name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # A malformed name is a usage error (exit 2), caught before anything is read or written.
    from sparkctl.apikeys import check_name

    try:
        return check_name(value)
    except InvalidKeyNameError as e:
        raise click.BadParameter(e.message) from None


@click.group("keys")
def keys() -> None:
    """API keys for the gateway (the daemon picks up changes by itself)."""


@keys.command("add")
@click.argument("name", callback=_name)
@click.option("--admin", is_flag=True, help="Also allow the admin API (/api/v1/…).")
@click.pass_obj
@admin_command
def keys_add(ctx: Context, name: str, admin: bool) -> None:
    """Create a key named NAME and print it: the only time it is shown."""
    from sparkctl.apikeys import edit

    path = ctx.settings.gateway.api_keys_file
    with edit(path, create_dir=True) as store:
        key = store.add(name, admin=admin)
    # The key alone on stdout, so `KEY=$(sparkctl keys add NAME)` captures exactly it.
    click.echo(key)
    scope = "admin key" if admin else "key"
    click.echo(
        f"created {scope} {name!r} in {path}; it is stored hashed and will not be shown again", err=True
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array on stdout.")
@click.pass_obj
@admin_command
def keys_list(ctx: Context, as_json: bool) -> None:
    """Every key's name, scope and creation time (the keys themselves are not stored)."""
    from sparkctl.apikeys import KeyStore

    rows = [
        {"name": e.name, "scope": e.scope, "created": e.created}
        for e in KeyStore.load(ctx.settings.gateway.api_keys_file).entries()
    ]
    if as_json:
        emit_json(rows)
        return
    print_table(["NAME", "SCOPE", "CREATED"], [[r["name"], r["scope"], r["created"]] for r in rows])


@keys.command("revoke")
@click.argument("name", callback=_name)
@click.pass_obj
@admin_command
def keys_revoke(ctx: Context, name: str) -> None:
    """Delete the key named NAME (the daemon refuses it within a second)."""
    from sparkctl.apikeys import edit

    path = ctx.settings.gateway.api_keys_file
    with edit(path) as store:
        store.revoke(name)
    click.echo(f"revoked key {name!r} in {path}", err=True)


COMMANDS: list[click.Command] = [keys]
