"""Quoting for systemd unit files and Quadlet files.

Catalog strings end up in command lines and assignments that systemd (and Quadlet before it)
splits into words, unescapes, and expands `%` specifiers and `$VARIABLES` in. Each helper here
produces a value that reads back as exactly the original string; the catalog already refuses
control characters, so every value fits on one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Characters after which a word must be quoted: whitespace, quotes, backslash, and `;` (a lone
# `;` separates commands in ExecStart=).
_NEEDS_QUOTES = re.compile(r"[\s\"'\\;]")


def _specifiers(value: str) -> str:
    """`%` starts a specifier (%n, %i…) in almost every setting: say it twice for a literal one."""
    return value.replace("%", "%%")


def quote_word(word: str) -> str:
    """One word of an Exec*= command line: quoted when needed, `%` and `$` made literal."""
    word = _specifiers(word).replace("$", "$$")
    if word == "" or _NEEDS_QUOTES.search(word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def command_line(argv: Iterable[str]) -> str:
    return " ".join(quote_word(w) for w in argv)


def environment(key: str, value: str) -> str:
    """The value of an Environment= line for one variable ("KEY=value", quoted when needed).

    Environment= expands specifiers but not `$`, and unquotes C-style inside quotes."""
    assignment = _specifiers(f"{key}={value}")
    if _NEEDS_QUOTES.search(assignment):
        return '"' + assignment.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return assignment


def quadlet_environment(key: str, value: str) -> str:
    """An Environment= line of a Quadlet file. Quadlet turns it into `--env` words of the
    generated ExecStart=, where systemd expands `$VARIABLES`: `$` must be said twice there."""
    return environment(key, value.replace("$", "$$"))


def plain(value: str) -> str:
    """A free-text value such as Description=: only specifiers need escaping. A trailing
    backslash cannot be said at all (systemd would continue the line with the next one); the
    catalog refuses it, and this refuses it again."""
    if value.endswith("\\"):
        raise ValueError(f"a unit file value cannot end with a backslash: {value!r}")
    return _specifiers(value)
