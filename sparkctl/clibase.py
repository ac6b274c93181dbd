"""The root of the `sparkctl` command line, and what every command module shares: the context
(configuration, catalog), JSON and table output, and the one mapping of SparkError to
`error: …` and exit code 1 (usage errors exit 2, as click does)."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .errors import SparkError

if TYPE_CHECKING:
    from .catalog import Catalog
    from .settings import Settings


@dataclass
class Context:
    config: Path | None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from .settings import load_settings

            self._settings = load_settings(self.config)
        return self._settings

    def catalog(self, dirs: list[Path] | None = None) -> Catalog:
        from .catalog import load_catalog

        return load_catalog(self.settings, dirs)


pass_ctx = click.make_pass_decorator(Context)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


class SparkGroup(click.Group):
    """Maps SparkError to `error: …` on stderr and exit 1: the one place the CLI does it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SparkError as e:
            click.echo(f"error: {e.message}", err=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            ctx.exit(1)


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


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Aligned columns like `systemctl list-units`; on a terminal the last column is cut to fit."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    limit = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for i, row in enumerate([headers, *rows]):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1]
        if limit and len(line) > limit:
            line = line[: limit - 1] + "…"
        click.echo(click.style(line, bold=True) if i == 0 and sys.stdout.isatty() else line.rstrip())
