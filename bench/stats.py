"""Medians, percentiles and spreads: the only statistics the report uses."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linearly interpolated; NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median, the 10th and 90th percentiles, min, max and count of a sample."""
    return {
        "median": median(values),
        "p10": percentile(values, 10),
        "p90": percentile(values, 90),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "n": len(values),
    }


def rotate(items: Sequence[str], by: int) -> list[str]:
    """The targets in round `by`'s order, so that no target always runs first (or last)."""
    k = by % len(items) if items else 0
    return [*items[k:], *items[:k]]
