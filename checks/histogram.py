"""LatencyHistogram: compact, mergeable, log-linear, signed.

A sample (seconds, any sign, never clamped) is filed under the top 20 bits of its IEEE-754 double:
sign, 11 exponent bits and 8 mantissa bits. That is a log-linear histogram with 256 linear
sub-buckets per power of two, i.e. bucket width <= 1/256 of the value: reporting a bucket's midpoint
is within 0.2 % of any sample in it. Bucketing is numpy's (the doubles' bits shifted, np.unique): a third of
reconcile()'s time went into it when it was Python's C loops (map, Counter: an int object per sample).

Histograms merge by adding counts (across subscriptions and across processes: to_dict/from_dict).
"""

from __future__ import annotations

import struct
from array import array
from collections import Counter
from typing import Iterable, Optional

import numpy as np

_SHIFT = 44                      # 64 - (1 sign + 11 exponent + 8 mantissa) bits kept
_HALF = 1 << (_SHIFT - 1)        # midpoint of a bucket's dropped bits


def _bucket_value(b: int) -> float:
    """Midpoint value of bucket b (seconds)."""
    return struct.unpack("<d", struct.pack("<Q", (b << _SHIFT) | _HALF))[0] if b & 0x7FF00 else (
        struct.unpack("<d", struct.pack("<Q", b << _SHIFT))[0])


class LatencyHistogram:
    __slots__ = ("buckets", "count", "min", "max")

    def __init__(self):
        self.buckets: Counter = Counter()
        self.count = 0
        self.min: Optional[float] = None
        self.max: Optional[float] = None

    def add_many(self, seconds: Iterable[float]) -> None:
        """File many samples (a numpy array, an ``array("d")`` or any iterable of floats; no NaN)."""
        if isinstance(seconds, np.ndarray):
            values = np.ascontiguousarray(seconds, dtype=np.float64)
        elif isinstance(seconds, array) and seconds.typecode == "d":
            values = np.frombuffer(seconds, dtype=np.float64) if len(seconds) else np.empty(0)
        else:
            values = np.fromiter(seconds, dtype=np.float64)
        if not values.size:
            return
        buckets, counts = np.unique(values.view(np.uint64) >> np.uint64(_SHIFT), return_counts=True)
        self.buckets.update(dict(zip(buckets.tolist(), counts.tolist())))
        self.count += int(values.size)
        lo, hi = float(values.min()), float(values.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def add(self, seconds: float) -> None:
        self.add_many((seconds,))

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        self.buckets.update(other.buckets)
        self.count += other.count
        for attr, pick in (("min", min), ("max", max)):
            o = getattr(other, attr)
            if o is not None:
                s = getattr(self, attr)
                setattr(self, attr, o if s is None else pick(s, o))
        return self

    def _sorted(self) -> list:
        return sorted((_bucket_value(b), c) for b, c in self.buckets.items())

    def percentile(self, p: float) -> Optional[float]:
        """The p-th percentile (nearest rank), seconds; exact min/max at p=0/100."""
        if not self.count:
            return None
        if p <= 0:
            return self.min
        if p >= 100:
            return self.max
        rank = max(1, -(-self.count * p // 100))   # ceil(count * p / 100)
        seen = 0
        for value, c in self._sorted():
            seen += c
            if seen >= rank:
                return min(max(value, self.min), self.max)
        return self.max

    def count_at_most(self, seconds: float) -> int:
        """Samples <= seconds (to the histogram's 0.2 % resolution)."""
        return sum(c for v, c in self._sorted() if v <= seconds)

    def count_negative(self) -> int:
        return sum(c for b, c in self.buckets.items() if b >> 19 and _bucket_value(b) < 0)

    def summary_ms(self, threshold_ms: Optional[float] = None) -> dict:
        """{"count", "min", "p50", "p95", "p99", "max", "negative", ["within", "share_within"]} in ms."""
        def ms(x):
            return None if x is None else round(x * 1000.0, 3)
        out = {"count": self.count, "min": ms(self.min), "p50": ms(self.percentile(50)),
               "p95": ms(self.percentile(95)), "p99": ms(self.percentile(99)), "max": ms(self.max),
               "negative": self.count_negative()}
        if threshold_ms is not None:
            within = self.count_at_most(threshold_ms / 1000.0)
            out["within"] = within
            out["share_within"] = (within / self.count) if self.count else None
        return out

    def to_dict(self) -> dict:
        return {"count": self.count, "min": self.min, "max": self.max,
                "buckets": sorted(self.buckets.items())}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyHistogram":
        h = cls()
        h.buckets.update({int(b): int(c) for b, c in d["buckets"]})
        h.count, h.min, h.max = d["count"], d["min"], d["max"]
        return h
