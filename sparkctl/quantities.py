"""Durations and sizes as written in the catalog and the configuration (BRIEF §4.1, §4.2).

Durations are strings "<n>ms|s|m|h"; `idle_timeout` also takes "0" (stop as soon as idle) and
"never". Sizes are strings like "16g". Parsed values are floats (seconds) and ints (bytes); the
pydantic annotations below keep the string form in JSON schema and serialisation.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_RE = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
IDLE_PATTERN = r"^(0|never|[0-9]+(\.[0-9]+)?(ms|s|m|h))$"

_SIZE_RE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[bkmgt]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
SIZE_PATTERN = r"^[0-9]+[bkmgtBKMGT]?$"

NEVER = math.inf


def parse_duration(value: object) -> float:
    """Seconds from "<n>ms|s|m|h". Raises ValueError with the accepted forms."""
    if isinstance(value, str):
        m = _DURATION_RE.fullmatch(value)
        if m:
            return float(m["n"]) * _DURATION_UNITS[m["unit"]]
    raise ValueError(f'must be a duration like "30s", "20m", "500ms" or "1h", got {value!r}')


def parse_idle(value: object) -> float:
    """Like parse_duration, plus "0" (stop as soon as idle) and "never" (math.inf)."""
    if value == "never":
        return NEVER
    if value == "0":
        return 0.0
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f'must be "0", "never" or a duration like "20m", got {value!r}') from None


def parse_size(value: object) -> int:
    """Bytes from "<n>[b|k|m|g|t]" (binary multiples, as podman reads them)."""
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m:
            return int(m["n"]) * _SIZE_UNITS[m["unit"].lower()]
    raise ValueError(f'must be a size like "16g", "512m" or "64k", got {value!r}')


def format_duration(seconds: float) -> str:
    """The shortest exact catalog form of a duration ("never" for infinity)."""
    if math.isinf(seconds):
        return "never"
    if seconds == 0:
        return "0"
    ms = round(seconds * 1000)
    for unit, factor in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


def format_size(n: int) -> str:
    for unit, factor in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if n % factor == 0 and n >= factor:
            return f"{n // factor}{unit}"
    return str(n)


def systemd_seconds(seconds: float) -> str:
    """A time span as systemd reads it ("infinity", "1800s", "250ms")."""
    if math.isinf(seconds):
        return "infinity"
    ms = round(seconds * 1000)
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _schema(pattern: str, description: str) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string", "pattern": pattern, "description": description}
    return WithJsonSchema(schema)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    _schema(DURATION_PATTERN, 'a duration: "<n>ms", "<n>s", "<n>m" or "<n>h"'),
]
IdleTimeout = Annotated[
    float,
    BeforeValidator(parse_idle),
    PlainSerializer(format_duration, return_type=str),
    _schema(IDLE_PATTERN, 'a duration, "0" (stop as soon as idle) or "never"'),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    _schema(SIZE_PATTERN, 'a size: "<n>", "<n>k", "<n>m", "<n>g" or "<n>t" (binary multiples)'),
]
