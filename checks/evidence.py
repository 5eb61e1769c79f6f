"""Is the evidence complete? The run's own health, and the one rule that turns scenario verdicts into the run's.

Pure functions over values (a history goes in, a verdict comes out):

    outage  = find_outage(write_failures, disconnects, listeners, ...)   # the server went away, or None
    health  = GeneratorHealth(cpu_fraction, loop_lag_p95_ms, ...)        # was the load generator saturated?
    judged  = judge_run(scenarios, Evidence(...))                        # scenarios, verdict, exit code, notes

The scenario verdicts (checks.verifier, checks.stress) judge what arrived against what was sent. They
cannot see that the run itself went wrong: a Ctrl-C, a lost worker, a server that crashed, a run that
exercised nothing, a generator too busy to measure latency. ``judge_run`` is where that is decided, once:
a pass needs complete evidence; on incomplete evidence only a proven violation (loss, duplicate,
corruption, order, a security breach, a crashed server) still fails, and everything else is inconclusive.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

PASS, FAIL, INCONCLUSIVE, SKIPPED, WARNING = "pass", "fail", "inconclusive", "skipped", "warning"

# what a scenario proves when it fails: a change lost, duplicated, corrupted, reordered, or delivered to
# the wrong user (L1-L6, L8-L10: a count against the ledger). A fail stands on incomplete evidence only
# here: the changes that did arrive were wrong whatever happened afterwards
DELIVERY = ("L1", "L2", "L3", "L4", "L5", "L6", "L8", "L9", "L10")
# server-health scenarios whose failure an outage itself proves (S10: "server crashed at T"; S2: dropped
# connections) or that measure the server whatever the run's end (S4 zombies)
OUTAGE_PROVES = ("S2", "S10")
LATENCY = "SC-054"

MASS_SHARE = 0.5     # this share of the listeners (and at least 2) ...
MASS_WINDOW_S = 2.0  # ... disconnected unexpectedly within this many seconds: the server went away


@dataclass(frozen=True)
class Outage:
    """The server was unreachable: from ``start`` (epoch s) for ``seconds`` (None: until the run's end)."""
    start: float
    seconds: float | None
    writes_refused: int = 0          # connection refused: nothing was sent
    writes_unknown: int = 0          # sent, no answer: the server may have committed
    listeners_disconnected: int = 0  # unexpected disconnects inside the outage
    reconnects_refused: int = 0      # resume attempts that could not connect
    counters_unreadable: bool = False
    stats_unreadable: bool = False

    def to_dict(self) -> dict:
        return {"start": self.start, "seconds": self.seconds, "writes_refused": self.writes_refused,
                "writes_unknown": self.writes_unknown, "listeners_disconnected": self.listeners_disconnected,
                "reconnects_refused": self.reconnects_refused, "counters_unreadable": self.counters_unreadable,
                "stats_unreadable": self.stats_unreadable}

    def text(self, t0: float | None) -> str:
        at = f"{self.start - t0:.1f} s into the run" if t0 is not None else f"t={self.start:.3f}"
        span = f"for {self.seconds:.1f} s" if self.seconds is not None else "until the end of the run"
        parts = [f"{self.writes_refused} write(s) refused", f"{self.writes_unknown} with unknown outcome",
                 f"{self.listeners_disconnected} listener(s) disconnected"]
        if self.reconnects_refused:
            parts.append(f"{self.reconnects_refused} reconnect(s) refused")
        if self.counters_unreadable:
            parts.append("system.live counters unreadable")
        if self.stats_unreadable:
            parts.append("system.stats unreadable")
        return f"server unreachable from {at} {span}: " + ", ".join(parts)


def find_outage(write_failures: Sequence[tuple], disconnects: Sequence[tuple], listeners: int, *,
                reconnects_refused: int = 0, counters_unreadable: bool = False, stats_unreadable: bool = False,
                end: float | None = None) -> Outage | None:
    """write_failures: (t, "refused" | "unknown") for each write that could not reach the server or got
    no answer. disconnects: (t, close code) of each unexpected listener disconnect. An outage is any
    refused write, a reconnect refused, the end-of-run reads failing, or a mass disconnect
    (≥ MASS_SHARE of the listeners, ≥ 2, within MASS_WINDOW_S): one listener dropped alone is not, nor
    are writes that timed out while the server kept accepting connections."""
    times = sorted(t for t, _ in write_failures)
    mass_at = _mass_disconnect(sorted(t for t, _ in disconnects), listeners)
    refused = any(k == "refused" for _, k in write_failures)
    # writes without an answer alone are a slow server (timeouts), not a missing one
    if not refused and mass_at is None and not reconnects_refused and not counters_unreadable and not stats_unreadable:
        return None
    starts = ([times[0]] if times else []) + ([mass_at] if mass_at is not None else [])
    start = min(starts) if starts else (end or 0.0)
    last = max([times[-1]] if times else [start])
    # refused writes are made until the server answers again: the outage ends with the last failure,
    # unless the end-of-run reads failed too (then it lasted to the end)
    seconds = None if (counters_unreadable or stats_unreadable or end is None) else max(0.0, last - start)
    return Outage(start=start, seconds=seconds,
                  writes_refused=sum(1 for _, k in write_failures if k == "refused"),
                  writes_unknown=sum(1 for _, k in write_failures if k == "unknown"),
                  listeners_disconnected=sum(1 for t, _ in disconnects if t >= start - MASS_WINDOW_S),
                  reconnects_refused=reconnects_refused, counters_unreadable=counters_unreadable,
                  stats_unreadable=stats_unreadable)


def _mass_disconnect(times: list, listeners: int) -> float | None:
    need = max(2, int(listeners * MASS_SHARE + 0.999))
    for i in range(len(times) - need + 1):
        if times[i + need - 1] - times[i] <= MASS_WINDOW_S:
            return times[i]
    return None


@dataclass(frozen=True)
class GeneratorHealth:
    """The load generator's own figures over the writing window. Saturated: its one core busy
    (``cpu_fraction`` ≥ CPU_LIMIT) or its event loop waking late (``loop_lag_p95_ms`` > LAG_LIMIT_MS,
    which is what a machine busy with other work looks like from inside). Either way the latency it
    measures includes its own queueing: SC-054 cannot be judged."""
    cpu_fraction: float | None = None
    loop_lag_p95_ms: float | None = None
    loop_lag_max_ms: float | None = None
    listener_lag_mean_ms: float | None = None
    stalls: int | None = None           # times its event loop stood still for at least stall_ms
    stall_ms: float = 100.0
    where: str = "this process"
    CPU_LIMIT = 0.9
    LAG_LIMIT_MS = 10.0

    @property
    def saturated(self) -> bool:
        return ((self.cpu_fraction is not None and self.cpu_fraction >= self.CPU_LIMIT)
                or (self.loop_lag_p95_ms is not None and self.loop_lag_p95_ms > self.LAG_LIMIT_MS))

    def cause(self) -> str:
        if self.cpu_fraction is not None and self.cpu_fraction < self.CPU_LIMIT:
            return " (its event loop woke late while it used little CPU: the machine is busy with other work)"
        return " (its core is full)" if self.cpu_fraction is not None else ""

    def figure(self) -> str:
        parts = []
        if self.cpu_fraction is not None:
            parts.append(f"CPU {self.cpu_fraction * 100:.0f} % of a core")
        if self.loop_lag_p95_ms is not None:
            parts.append(f"event-loop lag p95 {self.loop_lag_p95_ms:.1f} ms, max {self.loop_lag_max_ms or 0:.1f} ms")
        if self.stalls:
            # named, not judged: its writers (same loop) stand still too, so few changes are in flight to be
            # read late, and those carry the kernel's arrival stamp (tests/test_honest_verdicts.py)
            parts.append(f"it stood still (≥ {self.stall_ms:g} ms) {self.stalls} time(s)")
        if self.listener_lag_mean_ms is not None:
            parts.append(f"frames waited {self.listener_lag_mean_ms:.2f} ms on average")
        return f"{self.where}: " + ("; ".join(parts) if parts else "no figures")

    def verdict(self) -> dict:
        """GEN, in every run: a warning (never a fail: it is not the server's doing) when saturated."""
        thr = f"CPU < {self.CPU_LIMIT * 100:g} % of a core and event-loop lag p95 ≤ {self.LAG_LIMIT_MS:g} ms"
        if self.cpu_fraction is None and self.loop_lag_p95_ms is None:
            v, fig = SKIPPED, "no generator figures"
        elif self.saturated:
            v, fig = WARNING, self.figure() + ": the load generator was saturated" + self.cause()
        else:
            v, fig = PASS, self.figure()
        return {"id": "GEN", "title": "load generator not saturated", "verdict": v, "figure": fig,
                "value": self.cpu_fraction, "threshold": thr,
                "details": {"cpu_fraction": self.cpu_fraction, "loop_lag_p95_ms": self.loop_lag_p95_ms,
                            "loop_lag_max_ms": self.loop_lag_max_ms,
                            "listener_lag_mean_ms": self.listener_lag_mean_ms, "stalls": self.stalls,
                            "where": self.where,
                            "saturated": self.saturated}}


@dataclass(frozen=True)
class Evidence:
    """What the run itself says about its evidence."""
    interrupted: bool = False
    setup_error: str | None = None
    workers_lost: Sequence[str] = ()          # one text per lost worker, naming it
    outage: Outage | None = None
    generator_saturated: str | None = None    # the reason and figures, when the generator was saturated
    clock_bound_exceeded: str | None = None   # distributed: SC-054's clocks known too loosely to judge it
    t0: float | None = None                   # the writing start, for the notes' times


@dataclass
class Judged:
    scenarios: dict
    verdict: str
    exit_code: int
    notes: list = field(default_factory=list)   # headlines first: why the run is what it is


def judge_run(scenarios: Mapping[str, dict], ev: Evidence) -> Judged:
    """The run's verdict from its scenarios and its evidence (the scenarios are copied, never changed).

    - set-up failed, interrupted, a worker lost, or a server outage: the evidence is incomplete; no
      scenario passes, and a fail stands only where it is proven by what arrived (DELIVERY; with an
      outage also OUTAGE_PROVES); the run is fail when such a fail stands, else inconclusive.
    - a saturated generator (or clocks too loosely known): SC-054 is inconclusive, with the reason.
    - no scenario exercised (every one skipped): inconclusive, never pass.
    - otherwise: any fail → fail; any inconclusive → inconclusive; else pass (warnings do not fail)."""
    scen = {k: dict(v) for k, v in scenarios.items()}
    notes: list[str] = []
    incomplete: list[str] = []
    if ev.setup_error:
        incomplete.append(f"set-up failed: {ev.setup_error}")
    if ev.interrupted:
        incomplete.append("run interrupted (Ctrl-C / SIGTERM): evidence is partial")
    for w in ev.workers_lost:
        incomplete.append(f"{w} — its evidence is missing, no scenario can pass")
    if ev.outage is not None:
        incomplete.append(ev.outage.text(ev.t0))
    notes.extend(incomplete)
    latency = scen.get(LATENCY, {}).get("verdict")
    if ev.generator_saturated and latency in (PASS, FAIL):   # what it leaves unjudged; else GEN's row says it
        notes.append(f"the load generator was saturated ({ev.generator_saturated}): delivery latency (SC-054) "
                     "includes its own queueing and is not judged — not the server's doing")
        _not_judged(scen, LATENCY, f"load generator saturated: {ev.generator_saturated}")
    if ev.generator_saturated:
        _queue_drops_of_a_busy_generator(scen, ev.generator_saturated, notes)
    if ev.clock_bound_exceeded:
        notes.append(f"SC-054 not judged: {ev.clock_bound_exceeded}")
        _not_judged(scen, LATENCY, ev.clock_bound_exceeded)
    if incomplete:
        proven = DELIVERY + (OUTAGE_PROVES if ev.outage is not None else ())
        why = "; ".join(_short(x) for x in incomplete)
        for sid, x in scen.items():
            if sid == "GEN":   # the generator's own health: true whatever happened to the server
                continue
            if x["verdict"] == PASS or (x["verdict"] == FAIL and sid not in proven):
                was = x["verdict"]
                x["verdict"] = INCONCLUSIVE
                x["figure"] = f"{x.get('figure', '')} ({'would fail' if was == FAIL else 'unproven'}: {why})"
    verdicts = [x["verdict"] for x in scen.values()]
    if FAIL in verdicts:
        verdict = FAIL
    elif incomplete or INCONCLUSIVE in verdicts:
        verdict = INCONCLUSIVE
    elif not any(x["verdict"] == PASS for sid, x in scen.items() if sid != "GEN"):
        verdict = INCONCLUSIVE
        notes.append("no scenario was exercised (every one skipped): nothing was verified")
    else:
        verdict = PASS
    return Judged(scen, verdict, 0 if verdict == PASS else 1, notes)


def _not_judged(scen: dict, sid: str, why: str) -> None:
    x = scen.get(sid)
    if x is not None and x["verdict"] in (PASS, FAIL):
        x["details"] = dict(x.get("details") or {}, not_judged=why, would_be=x["verdict"])
        x["verdict"] = INCONCLUSIVE
        x["figure"] = f"{x.get('figure', '')} — not judged: {why}"


def _queue_drops_of_a_busy_generator(scen: dict, why: str, notes: list) -> None:
    """A loss that is all the server's own full-queue drops (counted by the server), in a run whose load
    generator was saturated: its listeners read too slowly, so the drops say how slow the generator was,
    not what the server does for its consumers. Not judged (inconclusive), and named as the generator's."""
    dropped = 0
    for sid in DELIVERY:
        x = scen.get(sid)
        if x is None or x["verdict"] != FAIL:
            continue
        d = x.get("details") or {}
        qd = (d.get("known_behaviours") or {}).get("queue-drops") or {}
        lost = (d.get("failing") or {}).get("lost", 0)
        only_loss = set(d.get("failing") or {}) <= {"lost", "known:queue-drops"}
        counted = qd.get("server_count") is not None and qd["server_count"] >= qd.get("count", 0)
        if only_loss and counted and lost and qd.get("count") == d.get("lost"):
            dropped = max(dropped, qd["count"])
            _not_judged(scen, sid, f"load generator saturated: its listeners read too slowly ({why})")
    # the stress scenarios that fail on the same loss alone (S2: "lost", S10: "lost_acked")
    for sid, key in (("S2", "lost"), ("S10", "lost_acked")):
        x = scen.get(sid)
        d = (x or {}).get("details") or {}
        if dropped and x is not None and x["verdict"] == FAIL and d.get("failures") == [key] \
                and 0 < (d.get(key) or 0) <= dropped:
            _not_judged(scen, sid, f"load generator saturated: its listeners read too slowly ({why})")
    if dropped:
        notes.append(f"{dropped:,} changes were dropped by the server at full connection queues while the load "
                     f"generator was saturated: its listeners read too slowly, so that loss is not judged; run "
                     "with --processes N or fewer listeners per process")


def _short(text: str) -> str:
    return text.split(":")[0]
