"""Bootstrap intervals: how sure an accuracy is, and whether two candidates really differ.

Items are resampled with replacement (a percentile bootstrap, seeded, so a report is
reproducible); an item's value is already its mean over seeds.  Two candidates are compared on
the items both have, resampling the same items for both (a paired bootstrap of the difference):
they are called different only when the difference's interval excludes zero.  With 30 items an
interval is about ±15 points wide: the report prints it so nobody ranks on noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    n: int

    def as_json(self) -> dict[str, float | int]:
        return {
            "value": round(self.value, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "n": self.n,
        }

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def _bounds(samples: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def interval(values: Mapping[str, float], seed: int = 0) -> Interval | None:
    """The mean over items and its bootstrap interval; None without items."""
    if not values:
        return None
    data = np.fromiter(values.values(), dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=(RESAMPLES, len(data)))
    low, high = _bounds(data[picks].mean(axis=1))
    return Interval(float(data.mean()), low, high, len(data))


def difference(a: Mapping[str, float], b: Mapping[str, float], seed: int = 0) -> Interval | None:
    """b − a on the items both have, with a paired bootstrap interval; None if none shared."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    delta = np.array([b[i] - a[i] for i in shared], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(delta), size=(RESAMPLES, len(delta)))
    low, high = _bounds(delta[picks].mean(axis=1))
    return Interval(float(delta.mean()), low, high, len(delta))
