"""`sparkctl` (and `python -m sparkctl`). The readiness probe every model unit runs at start takes
a short way that loads no command-line framework; everything else goes to the click group."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["probe"] and not {"-h", "--help"} & set(sys.argv[2:]):
        from sparkctl import probe

        probe.run(sys.argv[2:])
    from sparkctl.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
