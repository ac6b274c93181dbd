"""The emulator's messages: one line each on stdout, prefixed `sparkctl-emulate: `.

Tests and benchmarks parse them (the `ready exec_to_ready_ms=… port=…` line above all), so their
words are part of the emulator's contract. Writing one never fails the emulator.
"""

from __future__ import annotations

import sys


def say(message: str, *, flush: bool = True) -> None:
    try:
        sys.stdout.write(f"sparkctl-emulate: {message}\n")
        if flush:
            sys.stdout.flush()
    except (OSError, ValueError):
        pass  # nobody is listening any more; the emulator's job is unaffected
