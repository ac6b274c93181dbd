"""The root of the `sparkctl` command line and what every command shares: the context
(configuration, catalog), `fail`, `admin_command` (which daemon an admin command describes: this
host's, or a running demo's), and the one mapping of a SparkError to `error: …` on stderr and the
exit code its `ErrorCode` carries (usage errors exit 2, as click does)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from sparkctl.errors import SparkError

if TYPE_CHECKING:
    from sparkctl.catalog import Catalog
    from sparkctl.settings import Settings


# Where the root group keeps the command line as it was given (after the program's name).
ARGV_KEY = "sparkctl.argv"


@dataclass
class Context:
    config: Path | None
    argv: list[str] = field(default_factory=list)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from sparkctl.settings import load_settings

            self._settings = load_settings(self.config)
        return self._settings

    def catalog(self, dirs: list[Path] | None = None) -> Catalog:
        from sparkctl.catalog import load_catalog

        return load_catalog(self.settings, dirs)

    @property
    def in_demo(self) -> str | None:
        """The demo's URL when this command runs inside a demo's sandbox (`reach_daemon` sent it)."""
        from sparkctl.tools.demo_locator import INSIDE_ENV

        return os.environ.get(INSIDE_ENV) or None

    def reach_daemon(self) -> None:
        """Before an admin command: when the daemon it describes is a running demo's (the rules
        are in tools/demo_locator.py), say which on stderr and run this same command line inside
        the demo's sandbox, then exit with its status. Otherwise return: this host's daemon."""
        from sparkctl.tools import demo_locator

        choice = demo_locator.find(self.config)
        if choice.note:
            click.echo(choice.note, err=True)
        if choice.demo is not None:
            raise click.exceptions.Exit(demo_locator.run_inside(choice.demo, self.argv))


P = ParamSpec("P")
R = TypeVar("R")


def admin_command(command: Callable[P, R]) -> Callable[P, R]:
    """Marks a command that acts on or describes the daemon (`ps`, `logs`, `models list`, `keys`,
    `doctor`, …): it reaches a running demo by itself (BRIEF §9). Put it under `pass_ctx`."""

    @functools.wraps(command)
    def reaching(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = click.get_current_context().find_object(Context)
        if ctx is not None:
            ctx.reach_daemon()
        return command(*args, **kwargs)

    return reaching


pass_ctx = click.make_pass_decorator(Context)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class SparkGroup(click.Group):
    """Maps SparkError to `error: …` (and its hint) on stderr and its exit code: the one place
    the CLI does it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = list(args)  # to run the same command inside a demo (reach_daemon)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SparkError as e:
            click.echo(f"error: {e.message}", err=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            ctx.exit(e.code.exit_code)


@click.group(cls=SparkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Configuration file (default: $SPARKCTL_CONFIG, else /etc/sparkctl/sparkctl.toml).",
)
@click.version_option(package_name="sparkctl")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Many LLMs behind one OpenAI-compatible endpoint, each a systemd unit started on demand."""
    ctx.obj = Context(config=config, argv=ctx.meta.get(ARGV_KEY, []))
