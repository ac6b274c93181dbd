"""The commands the units and the tests run rather than people: `probe` (every model unit's
readiness step; normally reached without click, see sparkctl/__main__.py) and `emulate` (the vLLM
stand-in)."""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def probe(args: tuple[str, ...]) -> None:
    """Wait until URL answers 200 (the readiness step of every model unit):
    `sparkctl probe [--interval 10ms] [--timeout D] URL`."""
    from sparkctl import probe as readiness

    readiness.run(list(args))


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulate(args: tuple[str, ...]) -> None:
    """A vLLM stand-in: `sparkctl emulate [serve] MODEL [vLLM flags]` (see docs)."""
    from sparkctl import emulator

    sys.exit(emulator.main(list(args)))


COMMANDS: list[click.Command] = [probe, emulate]
