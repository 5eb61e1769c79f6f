"""What the load test puts into Locust's own statistics: change deliveries, and the verdict at the end.

* ``DeliveryStats``: deliveries in batches, an adapter to Locust's StatsEntry. It writes the fields
  ``StatsEntry.log`` writes (``tests/test_locust_stats.py`` fails when Locust's statistics change shape),
  so Locust's tables, charts and CSV count every delivery.
* ``report_verdicts``: one ``VERIFY`` request per judged scenario, failed when the scenario failed or is
  inconclusive, so Locust's header ("Failures"), its tables, its CSV and its exit code agree with the
  verdict (before, a run whose verdict was FAIL read "Failures 0%" in green).
"""
from __future__ import annotations

import time
from collections import Counter

import locust.stats as locust_stats

from .compiled import speedups


class DeliveryStats:
    """Change deliveries into Locust's statistics, in batches: ``stats(name, latency_ms)`` per delivery.

    Firing Locust's request event once per delivery was the largest single cost of a listener (a
    profile of bench/harness_bench.py: about a fifth of the receiving process's CPU, at 15,000
    deliveries/s). So samples are kept per name and written into ``environment.stats`` (the entry
    of (name, "WS") and the total) in one go when the wall-clock second changes, after
    ``interval`` s, when no delivery came for a moment (``idle()``, from the reader) or at the end
    (``flush()``). Each flush has a fixed cost (a profile of bench/peers_bench.py: a tenth of the
    receiving process's CPU when ten sessions flushed ten times a second), so batches are a second
    long while deliveries flow: Locust's table refreshes every 2 s. Every delivery is still
    one request with its own response time: counts, min/max/average, the response-time buckets
    (Locust's ``bucket_response_time``) and requests per second come out as with one event per
    delivery. Listeners of ``events.request`` do not see deliveries (the load test has none for them).
    """

    __slots__ = ("environment", "interval", "pending", "first", "last")

    def __init__(self, environment, interval: float = 1.0):
        self.environment = environment
        self.interval = interval
        self.pending: dict = {}   # name -> [latency_ms, ...]
        self.first = 0.0          # time of the oldest pending sample
        self.last = 0.0

    def __call__(self, name: str, latency_ms: float) -> None:
        now = time.time()
        if self.pending:
            if now - self.first >= self.interval or int(now) != int(self.first):
                self.flush()
                self.first = now
        else:
            self.first = now
        self.last = now
        samples = self.pending.get(name)
        if samples is None:
            samples = self.pending[name] = []
        # Locust's statistics cannot hold negative times; the verifier keeps the true (signed) samples.
        samples.append(latency_ms if latency_ms > 0.0 else 0.0)

    # __call__ is compiled where loadtest.run._speedups was built (below); this stays the reference (and the
    # compiled one's way for a latency that is not a float)
    call_python = __call__

    def idle(self, quiet: float = 0.2) -> None:
        """flush() when the newest pending delivery is ``quiet`` s old: the stream paused, and the table must
        not wait for the next delivery."""
        if self.pending and time.time() - self.last >= quiet:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        stats = self.environment.stats
        t = self.last
        everything, k, total_ms, lo, hi = Counter(), 0, 0.0, None, None
        for name, samples in pending.items():
            counted, n, ms, a, b = _buckets(samples), len(samples), sum(samples), min(samples), max(samples)
            _log(stats.get(name, "WS"), t, counted, n, ms, a, b)
            everything.update(counted)
            k, total_ms = k + n, total_ms + ms
            lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
        _log(stats.total, t, everything, k, total_ms, lo, hi)


if speedups is not None:
    # the same samples in the same batches (tests/test_run_inprocess.py runs both), without a Python frame per
    # delivery; ListenerSession's compiled change branch calls it without going through the type's call slot
    DeliveryStats.__call__ = speedups.delivery_method(DeliveryStats)


_STOCK_BUCKET = locust_stats.bucket_response_time


def _buckets(samples: list) -> Counter:
    """``Counter`` of ``bucket_response_time`` over the samples (Locust's rounding; a custom one, set at run
    time, is honoured). Below 99.5 ms Locust's rounding is ``round()``: counted in C, with no Python call
    per sample (a call per sample cost more than the rest of recording a delivery)."""
    bucket = locust_stats.bucket_response_time
    if bucket is _STOCK_BUCKET and max(samples) < 99.5:
        return Counter(map(round, samples))
    return Counter(map(bucket, samples))


def _log(entry, t: float, counted: Counter, k: int, total_ms: float, lo: float, hi: float) -> None:
    """What ``k`` calls of ``StatsEntry.log(sample, 0)`` at time t do, in one go, from the samples' buckets,
    sum, min and max."""
    ti = int(t)
    if entry.use_response_times_cache and entry.last_request_timestamp and ti > int(entry.last_request_timestamp):
        entry._cache_response_times(ti - 1)
    entry.num_requests += k
    entry.num_reqs_per_sec[ti] += k
    entry.last_request_timestamp = t
    entry.total_response_time += total_ms
    entry.min_response_time = lo if entry.min_response_time is None else min(entry.min_response_time, lo)
    entry.max_response_time = max(entry.max_response_time, hi)
    rt = entry.response_times
    for b, c in counted.items():
        rt[b] += c


VERIFY = "VERIFY"   # the request type of the verdict entries


class VerificationFailed(Exception):
    """A scenario's verdict, as the failure of its VERIFY entry: "fail: lost 7 of 1,026 inserts"."""


def report_verdicts(environment, report: dict) -> None:
    """One VERIFY request per judged scenario (skipped ones are not judged), through Locust's request
    event as any request is reported: a failure for ``fail`` and ``inconclusive``."""
    for sid, s in report.get("scenarios", {}).items():
        verdict = s.get("verdict")
        if verdict in (None, "skipped"):
            continue
        failed = verdict in ("fail", "inconclusive")
        environment.events.request.fire(
            request_type=VERIFY, name=f"{sid} {s.get('title', '')}".strip(), response_time=0, response_length=0,
            exception=VerificationFailed(f"{verdict}: {s.get('figure', '')}") if failed else None, context={})
