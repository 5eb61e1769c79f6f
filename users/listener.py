"""ListenerUser: one WebSocket with live subscriptions; every arrival is recorded by its session."""
from __future__ import annotations

import time

import locust.stats as locust_stats
from locust import User, constant, task

from loadtest.plugin import current_run


class DeliveryStats:
    """Change deliveries into Locust's statistics, in batches: ``stats(name, latency_ms)`` per delivery.

    Firing Locust's request event once per delivery was the largest single cost of a listener (a
    profile of bench/harness_bench.py: about a fifth of the receiving process's CPU, at 15,000
    deliveries/s). So samples are kept per name and written into ``environment.stats`` (the entry
    of (name, "WS") and the total) in one go when the wall-clock second changes, after
    ``interval`` s, or when the reader finds nothing waiting (``flush()``). Every delivery is still
    one request with its own response time: counts, min/max/average, the response-time buckets
    (Locust's ``bucket_response_time``) and requests per second come out as with one event per
    delivery. Listeners of ``events.request`` do not see deliveries (the load test has none for them).
    """

    __slots__ = ("environment", "interval", "pending", "first", "last")

    def __init__(self, environment, interval: float = 0.1):
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

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        stats = self.environment.stats
        t, total, everything = self.last, stats.total, []
        for name, samples in pending.items():
            _log_many(stats.get(name, "WS"), samples, t)
            everything += samples
        _log_many(total, everything, t)


def _log_many(entry, samples: list, t: float) -> None:
    """What ``len(samples)`` calls of ``StatsEntry.log(sample, 0)`` at time t do, in one go."""
    ti = int(t)
    if entry.use_response_times_cache and entry.last_request_timestamp and ti > int(entry.last_request_timestamp):
        entry._cache_response_times(ti - 1)
    k = len(samples)
    entry.num_requests += k
    entry.num_reqs_per_sec[ti] += k
    entry.last_request_timestamp = t
    entry.total_response_time += sum(samples)
    lo, hi = min(samples), max(samples)
    entry.min_response_time = lo if entry.min_response_time is None else min(entry.min_response_time, lo)
    entry.max_response_time = max(entry.max_response_time, hi)
    rt = entry.response_times
    for b in map(locust_stats.bucket_response_time, samples):
        rt[b] += 1


class ListenerUser(User):
    fixed_count = 20  # set from --listeners at start-up
    wait_time = constant(0.5)

    def on_start(self):
        self.run = current_run(self.environment)
        self.account = self.run.claim_listener() if self.run else None
        self.session = None
        if self.account is None:
            return
        o = self.environment.parsed_options
        index = self.run.prov.listeners.index(self.account)
        every = max(1, round(1 / o.reconnect_share)) if o.reconnect_share > 0 else 0
        self.reconnect_every = o.reconnect_every if (o.reconnect_every > 0 and every and index % every == 0) else 0
        self.next_reconnect = time.time() + self.reconnect_every
        self.deliveries = DeliveryStats(self.environment)
        self.session = self.run.new_listener_session(self.account, on_delivery=self.deliveries)
        start = time.perf_counter()
        exc = None
        try:
            self.session.start(timeout=o.barrier_timeout)
            self.run.listener_ready(self.account)
        except Exception as e:  # reported, and the verdict for its subscriptions is inconclusive
            exc = e
            self.session.vanished = f"could not subscribe: {e}"
            self.run.listener_failed(self.account, str(e))
        self.environment.events.request.fire(
            request_type="WS", name="subscribe (until ready)", response_time=(time.perf_counter() - start) * 1000.0,
            response_length=0, exception=exc, context={})
        self.next_reconnect = time.time() + self.reconnect_every

    @task
    def keep_listening(self):
        # Reading happens in the session's own greenlet. This task only forces the periodic reconnect (L9).
        if self.session is None or not self.reconnect_every or self.run.finished:
            return
        if time.time() >= self.next_reconnect and self.run.writers_may_start.is_set():
            self.next_reconnect = time.time() + self.reconnect_every
            self.session.force_reconnect()

    def on_stop(self):
        # The session stays open: the run drains and reads the server's counters before closing it.
        pass
