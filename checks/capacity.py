"""Capacity: a stepped load's steps, which of them held, and who set the limit (server or generator).

Pure functions over values (a history goes in, a figure comes out):

    schedule = StepSchedule(base=10, factor=2, every=10, top=80)    # writes/s per writer, step by step
    schedule.rate_at(elapsed_s)                                     # what a writer offers now
    steps = step_windows(schedule, writers, t0, t_end)              # [Step(k, start, end, offered/s), ...]
    result = capacity(steps, Evidence(...), threshold_ms=50, quantile=99)
    # {"steps": [...], "knee": {...} | None, "limited_by": "server" | "generator" | None, "broke": [...]}

A step **held** when, over its window: nothing it wrote was lost, the delivery latency quantile is within
the threshold, no write was rate-limited (429) or failed, no listener disconnected unexpectedly, and the
acknowledged writes kept up with the offered ones (at least KEEP_UP of them: the writers wait for each
answer, so a server past its capacity shows first as writes that cannot be sent at the offered rate).
The **knee** is the highest step that held (None when none did); the step after it is what broke, and it
names the limit (a lower step that broke while a higher one held is listed in ``broke_below_knee``): the **generator** when the load generator itself was
saturated during it (its CPU or event-loop lag, checks.evidence.GeneratorHealth's rule) — then what broke
is not the server's capacity — else the **server**. No step broke: ``limited_by`` is None (the load never
went past capacity).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .evidence import GeneratorHealth
from .histogram import LatencyHistogram

KEEP_UP = 0.9   # acknowledged writes/s at least this share of the offered ones


@dataclass(frozen=True)
class StepSchedule:
    """Writes/s per writer: ``base`` × ``factor``^k in step k (every ``every`` s), up to ``top``; the step
    that reaches ``top`` lasts to the end of the writing."""
    base: float
    factor: float
    every: float
    top: float

    @property
    def last(self) -> int:
        """The index of the first step at the top rate."""
        if self.top <= self.base:
            return 0
        return max(0, math.ceil(math.log(self.top / self.base) / math.log(self.factor) - 1e-9))

    def rate(self, k: int) -> float:
        return min(self.base * self.factor ** min(k, self.last), self.top)

    def index_at(self, elapsed: float) -> int:
        return min(self.last, max(0, int(elapsed // self.every)))

    def rate_at(self, elapsed: float) -> float:
        return self.rate(self.index_at(elapsed))


@dataclass(frozen=True)
class Step:
    index: int
    start: float      # epoch s
    end: float
    offered: float    # writes/s, all writers


def step_windows(schedule: StepSchedule, writers: int, t0: float, t_end: float) -> list:
    """The steps the writing window [t0, t_end) went through (a step cut short by the end is kept: its
    figures are per second)."""
    steps = []
    k = 0
    while True:
        start = t0 + k * schedule.every
        if start >= t_end:
            break
        end = t_end if k >= schedule.last else min(t_end, start + schedule.every)
        steps.append(Step(k, start, end, round(schedule.rate(k) * writers, 3)))
        if end >= t_end:
            break
        k += 1
    return steps


@dataclass
class Evidence:
    """Everything timed that a step's figures come from, per whole second (epoch s, one clock).

    sent / acked / rejected / failed: write statements by the second they were sent (rejected: the server
    answered no, a 429 or an error; failed: no answer); deliveries: change arrivals by the second they
    arrived; latency: {second: LatencyHistogram} of those arrivals, from the run's start point; lost: lost
    (write, subscription) pairs by the second the write was sent; disconnects: t of every unexpected
    disconnect; listeners: (t_ready, t_closed or None) per listener; server: (t, cpu_pct, rss_mb) samples;
    generator: (t, cpu_fraction, loop_lag_ms, process) samples of the generator processes (each worker's)."""
    sent: Mapping = field(default_factory=dict)
    acked: Mapping = field(default_factory=dict)
    rejected: Mapping = field(default_factory=dict)
    failed: Mapping = field(default_factory=dict)
    deliveries: Mapping = field(default_factory=dict)
    latency: Mapping = field(default_factory=dict)
    lost: Mapping = field(default_factory=dict)
    disconnects: Sequence = ()
    listeners: Sequence = ()
    server: Sequence = ()
    generator: Sequence = ()


def _sum(per_second: Mapping, seconds: range) -> int:
    return sum(per_second.get(s, 0) for s in seconds)


def step_figures(step: Step, ev: Evidence, quantile: float) -> dict:
    """A step's figures over the whole seconds inside it (a second that straddles two steps is neither's:
    its counts would mix two rates)."""
    seconds = range(math.ceil(step.start), math.floor(step.end))
    span = max(1, len(seconds))
    hist = LatencyHistogram()
    for s in seconds:
        h = ev.latency.get(s)
        if h is not None:
            hist.merge(h)
    lat = {f"latency_p{p:g}_ms": (None if not hist.count else round(hist.percentile(p) * 1000.0, 2))
           for p in sorted({50.0, 95.0, 99.0, quantile})}
    delivered, lost = _sum(ev.deliveries, seconds), _sum(ev.lost, seconds)
    listeners = sum(1 for ready, closed in ev.listeners
                    if ready is not None and ready < step.end and (closed is None or closed > step.start))
    server = [x for x in ev.server if step.start <= x[0] < step.end]
    cpu, lag = _busiest([x for x in ev.generator if step.start <= x[0] < step.end])
    return {
        "index": step.index, "start": round(step.start, 3), "seconds": span,
        "offered_writes_per_s": step.offered,
        "sent_writes_per_s": round(_sum(ev.sent, seconds) / span, 1),
        "acked_writes_per_s": round(_sum(ev.acked, seconds) / span, 1),
        "deliveries_per_s": round(delivered / span, 1), "listeners": listeners,
        "lost": lost, "delivery_ratio": round(delivered / (delivered + lost), 6) if delivered + lost else None,
        **lat, "latency_samples": hist.count,
        "rejected": _sum(ev.rejected, seconds), "failed": _sum(ev.failed, seconds),
        "disconnects": sum(1 for t in ev.disconnects if step.start <= t < step.end),
        "server_cpu_pct": _mean([x[1] for x in server]), "server_rss_mb": _max([x[2] for x in server]),
        "generator_cpu_pct": None if cpu is None else round(cpu * 100.0, 1),
        "generator_lag_p95_ms": lag,
    }


def _busiest(samples: Sequence) -> tuple:
    """(CPU fraction, event-loop lag p95 ms) of the busiest generator process over the samples: each
    process's mean CPU and lag p95, the highest of them (GeneratorHealth's rule, per step)."""
    by: dict = {}
    for t, cpu, lag, who in samples:
        by.setdefault(who, ([], []))
        if cpu is not None:
            by[who][0].append(cpu)
        if lag is not None:
            by[who][1].append(lag)
    cpus = [sum(c) / len(c) for c, _ in by.values() if c]
    lags = []
    for _, ls in by.values():
        if ls:
            ls = sorted(ls)
            lags.append(ls[min(len(ls) - 1, int(len(ls) * 0.95))])
    return (max(cpus) if cpus else None), (round(max(lags), 2) if lags else None)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 1) if xs else None


def _max(xs):
    xs = [x for x in xs if x is not None]
    return round(max(xs), 1) if xs else None


def broke(fig: dict, threshold_ms: float, quantile: float) -> list:
    """Why a step did not hold (empty: it held)."""
    why = []
    if fig["lost"]:
        why.append(f"{fig['lost']} change(s) lost")
    p = fig.get(f"latency_p{quantile:g}_ms")
    if p is not None and p > threshold_ms:
        why.append(f"p{quantile:g} {p:g} ms > {threshold_ms:g} ms")
    if fig["rejected"]:
        why.append(f"{fig['rejected']} write(s) rejected (rate limit or error)")
    if fig["failed"]:
        why.append(f"{fig['failed']} write(s) failed")
    if fig["disconnects"]:
        why.append(f"{fig['disconnects']} unexpected disconnect(s)")
    if fig["acked_writes_per_s"] < KEEP_UP * fig["offered_writes_per_s"]:
        why.append(f"acknowledged {fig['acked_writes_per_s']:g} of {fig['offered_writes_per_s']:g} writes/s offered")
    return why


def generator_saturated(fig: dict) -> bool:
    return GeneratorHealth(cpu_fraction=None if fig["generator_cpu_pct"] is None else fig["generator_cpu_pct"] / 100.0,
                           loop_lag_p95_ms=fig["generator_lag_p95_ms"]).saturated


def capacity(steps: Sequence, ev: Evidence, threshold_ms: float, quantile: float = 99.0) -> dict:
    figs = []
    for st in steps:
        fig = step_figures(st, ev, quantile)
        fig["broke"] = broke(fig, threshold_ms, quantile)
        fig["held"] = not fig["broke"]
        fig["generator_saturated"] = generator_saturated(fig)
        figs.append(fig)
    held = [f["index"] for f in figs if f["held"]]
    knee = held[-1] if held else None
    # what broke is the step after the knee (the first when none held); a lower step that broke while a
    # higher one held is a wobble at the edge (a latency quantile on a busy machine), named, not the limit
    after = 0 if knee is None else knee + 1
    first_broken = after if after < len(figs) else None
    limited_by = None
    if first_broken is not None:
        limited_by = "generator" if figs[first_broken]["generator_saturated"] else "server"
    return {"steps": figs, "knee": knee, "limited_by": limited_by, "first_broken": first_broken,
            "broke_below_knee": [f["index"] for f in figs if knee is not None and f["index"] < knee and not f["held"]],
            "threshold_ms": threshold_ms, "quantile": quantile}


def capacity_text(cap: dict) -> str:
    """The capacity figure in words: "160 writes/s × 6 listeners (960 deliveries/s) held; at 320 writes/s
    offered: acknowledged 201 of 320 writes/s offered (the server's limit)"."""
    steps = cap["steps"]
    if not steps:
        return "no step of the stepped load ran"
    knee = steps[cap["knee"]] if cap["knee"] is not None else None
    out = ("no step held" if knee is None else
           f"{knee['acked_writes_per_s']:,.0f} writes/s × {knee['listeners']} listeners "
           f"({knee['deliveries_per_s']:,.0f} deliveries/s) held (step {knee['index'] + 1} of {len(steps)})")
    if cap["first_broken"] is None:
        return out + "; the load never went past capacity (raise --step-max)"
    if cap.get("broke_below_knee"):
        out += (f" (below it step(s) {', '.join(str(i + 1) for i in cap['broke_below_knee'])} did not hold: "
                + "; ".join(f"{steps[i]['offered_writes_per_s']:,.0f} writes/s: {'; '.join(steps[i]['broke'])}"
                            for i in cap["broke_below_knee"]) + ")")
    b = steps[cap["first_broken"]]
    whose = ("the load generator saturated first: its limit, not the server's (more generator processes: "
             "--processes N)" if cap["limited_by"] == "generator" else "the server's limit")
    return out + f"; at {b['offered_writes_per_s']:,.0f} writes/s offered: {'; '.join(b['broke'])} ({whose})"
