"""A stepped load's capacity from the run's Record: the timed evidence gathered, checks.capacity judges it.

    cap = capacity_of(record, results, series)   # report["capacity"], or None without --step-load
"""
from __future__ import annotations

from collections import Counter

from checks.capacity import Evidence, capacity, step_windows
from checks.model import OUTCOME_ACK, OUTCOME_REJECTED

from ..options import step_schedule
from .display import monitor_series, run_monitor
from .timeseries import TimeSeries, series_of


def statements(ledgers: dict) -> tuple:
    """Write statements by the second they were sent: (sent, acked, rejected, failed) Counters. The rows of
    one multi-row INSERT (--rows-per-insert) share their writer and send time: one statement."""
    seen = {}
    for led in ledgers.values():
        v = led.view()
        for i in range(v.n):
            seen.setdefault((v.writer[i], v.t_sent[i]), v.outcome[i])
    sent, acked, rejected, failed = Counter(), Counter(), Counter(), Counter()
    for (_, t), outcome in seen.items():
        if t != t:   # never sent
            continue
        s = int(t)
        sent[s] += 1
        (acked if outcome == OUTCOME_ACK else rejected if outcome == OUTCOME_REJECTED else failed)[s] += 1
    return sent, acked, rejected, failed


def evidence(run, results, ts: TimeSeries) -> Evidence:
    sent, acked, rejected, failed = statements(run.ledgers)
    lost = Counter(int(t) for r in results for t in getattr(r, "lost_sent", ()))
    disconnects = [d["t"] for s in run.sessions for d in s.disconnect_log
                   if not d.get("expected") and d.get("t") is not None]
    listeners = [(s.first_ready_at, s.closed_at) for s in run.sessions]
    server = []
    mon = run_monitor(run)
    got = monitor_series(mon) if mon is not None else None
    if got:
        server = list(zip(got["t"], got["cpu"], got["rss_mb"]))
    return Evidence(sent=sent, acked=acked, rejected=rejected, failed=failed, deliveries=ts.deliveries,
                    latency=ts.latency, lost=lost, disconnects=disconnects, listeners=listeners, server=server,
                    generator=list(run.generator_timeline))


def listeners_expected(run) -> int:
    """The listeners the run should have: --listeners, and --step-listeners more for each step after the
    first that started before the writing ended (a later step's listeners never joined)."""
    o = run.options
    schedule = step_schedule(o)
    n = getattr(o, "step_listeners", 0) or 0
    if schedule is None or not n or run.writing_started_at is None:
        return o.listeners
    steps = step_windows(schedule, o.writers, run.writing_started_at, run.writing_stopped_at or run.writing_started_at)
    return o.listeners + n * max(0, len(steps) - 1)


def capacity_of(run, results, series: TimeSeries | None = None) -> dict | None:
    """report["capacity"] of a --step-load run (docs/report-schema.md), or None; ``series``: the run's
    TimeSeries when the caller has it (else computed here)."""
    o = run.options
    schedule = step_schedule(o)
    if schedule is None or run.writing_started_at is None:
        return None
    steps = step_windows(schedule, o.writers, run.writing_started_at, run.writing_stopped_at or run.writing_started_at)
    ts = series if series is not None else series_of(run)
    cap = capacity(steps, evidence(run, results, ts), o.latency_threshold_ms, o.latency_quantile * 100.0)
    cap["schedule"] = {"from_per_writer": schedule.base, "factor": schedule.factor, "every_s": schedule.every,
                       "max_per_writer": schedule.top, "writers": o.writers}
    return cap
