"""The load generator's own health over the writing window: its CPU and how late its event loop wakes.

A gevent process runs on one core. When that core is full, or the machine is busy with other work, the
event loop wakes late: writes are stamped "sent" before they leave and frames wait to be read, so the
latency it measures includes its own queueing. checks.evidence.GeneratorHealth judges these figures.
"""
from __future__ import annotations

import resource
import time

import gevent

STEP_S = 0.05   # the heartbeat's sleep: how late it wakes is the loop's lag
STALL_MS = 100.0   # a heartbeat this late: the loop stood still (a GC pause, a swapped-out process), counted


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class GeneratorProbe:
    def __init__(self, timeline: bool = False):
        self._t0 = self._cpu0 = None
        self._lags: list[float] = []
        self.stalls = 0   # heartbeats at least STALL_MS late
        # (after s, for s): the test hook KALAMDB_LT_TEST_STALL (loadtest.distributed.hooks), set by the plugin
        self.test_stall: tuple | None = None
        self._beat = None
        self.figures: dict | None = None
        # [epoch s, CPU fraction of the last second or None, event-loop lag ms or None], kept for a stepped
        # load's per-step generator figures only (checks.capacity): a lag sample per heartbeat, a CPU sample
        # a second
        self.timeline: list | None = [] if timeline else None

    def start(self) -> None:
        if self._t0 is None:
            self._t0, self._cpu0 = time.perf_counter(), cpu_seconds()
            self._beat = gevent.spawn(self._heartbeat)
            if self.test_stall:
                from ..distributed.hooks import block_loop
                gevent.spawn_later(self.test_stall[0], block_loop, self.test_stall[1])

    def _heartbeat(self) -> None:
        mark, cpu_mark = time.perf_counter(), cpu_seconds()
        while True:
            t = time.perf_counter()
            gevent.sleep(STEP_S)
            now = time.perf_counter()
            lag = max(0.0, now - t - STEP_S) * 1000.0
            self._lags.append(lag)
            if lag >= STALL_MS:
                self.stalls += 1
            if self.timeline is None:
                continue
            self.timeline.append([time.time(), None, round(lag, 2)])
            if now - mark >= 1.0:
                cpu = cpu_seconds()
                self.timeline.append([time.time(), round((cpu - cpu_mark) / (now - mark), 3), None])
                mark, cpu_mark = now, cpu

    def stop(self) -> dict | None:
        """{"cpu_fraction", "loop_lag_p95_ms", "loop_lag_max_ms", "seconds", "samples", "stalls", "stall_ms"},
        the first call fixes them (None when writing never started)."""
        if self.figures is not None or self._t0 is None:
            return self.figures
        if self._beat is not None:
            self._beat.kill(block=False)
        span = max(1e-9, time.perf_counter() - self._t0)
        lags = sorted(self._lags)   # p95: one start-up spike in a short run (a p99 of 80 samples is its max) is not saturation
        self.figures = {
            "cpu_fraction": round((cpu_seconds() - self._cpu0) / span, 3),
            "loop_lag_p95_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.95))], 2) if lags else None,
            "loop_lag_max_ms": round(lags[-1], 2) if lags else None,
            "seconds": round(span, 3), "samples": len(lags),
            "stalls": self.stalls, "stall_ms": STALL_MS}
        return self.figures
