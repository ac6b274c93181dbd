"""The `sparkctl` command line (click + rich).

Data goes to stdout (tables, or JSON with --json), messages and errors to stderr as `error: …`.
Exit codes: 0 ok, 1 failure, 2 usage; a SparkError's exit code comes from its ErrorCode, mapped in
cli/app.py and nowhere else. Commands import what they drive lazily, so `sparkctl --help` and the
commands units run at every start (`preflight`) stay quick. The operator commands that act on a
running stack (`ps`, `start`, `stop`) are clients of the daemon's admin API; the catalog and key
commands work on files.
"""

from __future__ import annotations

from sparkctl.cli import catalog, engine, host, keys, ops
from sparkctl.cli.app import cli

for _module in (catalog, ops, host, keys, engine):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(standalone_mode=True)


__all__ = ["cli", "main"]
