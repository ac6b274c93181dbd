"""The root of the `sparkctl` command line and what every command shares: the context
(configuration, catalog), `fail`, and the one mapping of a SparkError to `error: …` on stderr and
the exit code its `ErrorCode` carries (usage errors exit 2, as click does)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from sparkctl.errors import SparkError

if TYPE_CHECKING:
    from sparkctl.catalog import Catalog
    from sparkctl.settings import Settings


@dataclass
class Context:
    config: Path | None
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


pass_ctx = click.make_pass_decorator(Context)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class SparkGroup(click.Group):
    """Maps SparkError to `error: …` (and its hint) on stderr and its exit code: the one place
    the CLI does it."""

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
    ctx.obj = Context(config=config)
