"""From the run's Record to the report: reconcile every subscription, judge the scenarios, gather figures.

    report = verify(record)      # a dict (docs/report-schema.md); writing it out is loadtest.verdict.files'
"""
from __future__ import annotations

import logging
import resource
import time

from checks.capacity import capacity_text
from checks.evidence import Evidence, GeneratorHealth, find_outage, judge_run
from checks.verifier import Thresholds, reconcile, verdicts

from ..run.stress import STRESS_IDS, TITLES, skipped_verdicts
from . import report as report_mod
from .capacity import capacity_of, listeners_expected

log = logging.getLogger(__name__)


def thresholds_from(options, accepted_known, queue_drops: tuple = (None, "")) -> Thresholds:
    return Thresholds(latency_ms=options.latency_threshold_ms, latency_percentile=options.latency_quantile * 100.0,
                      latency_from=options.latency_from, high_frequency_min=options.min_high_frequency,
                      accepted_known=accepted_known, queue_drops_counted=queue_drops[0],
                      queue_drops_source=queue_drops[1])


FULL_QUEUE_LINE = "Notification channel full"   # KalamDB's (and the stand-in's) warning per dropped notification


def drops_logged(log_path: str) -> int:
    """How many full-queue drops a server's log file names (raises OSError when it cannot be read)."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if FULL_QUEUE_LINE in line)


def queue_drops_counted(run) -> tuple:
    """(count, where from): the server's own count of full-queue drops: its log's warnings when the run
    knows the log (a server it started, or --server-log), else the stand-in's system.stats figure;
    (None, "") when neither is there (the verifier then falls back on the changes counters' deficit)."""
    log_path = (run.server or {}).get("log_path") or getattr(run.options, "server_log", "")
    if log_path:
        try:
            return drops_logged(log_path), f"server log {log_path}"
        except OSError as exc:
            log.warning("server log %s unreadable: %s", log_path, exc)
    value = (run.server_stats_at_end or {}).get("standin_notifications_dropped_queue_full")
    if value is not None:
        return int(float(value)), "the stand-in's system.stats"
    return None, ""


def counters_by_key(sessions, raw: dict | None) -> dict | None:
    """system.live rows keyed (user, subscription id) → the verifier's "listener/subscription_id" keys.
    A subscription listed more than once (a zombie, or a resume the server did not clean up) has no
    single counter to compare, so it is left out and the verifier calls its L7 evidence missing."""
    if raw is None:
        return None
    out = {}
    for s in sessions:
        for sid, st in s.subs.items():
            values = raw.get((s.account.user, sid))
            if values and len(values) == 1:
                out[st.log.info.key] = values[0]
    return out


def reconcile_all(ledgers: dict, sessions) -> list:
    """Every subscription of every session against its table's ledger (one place: the run's end, the
    workers' end, the live verifier)."""
    results = []
    for s in sessions:
        for st in s.subs.values():
            r = reconcile(ledgers[st.spec.table.key], st.log)
            if s.vanished:
                r.vanished = True
            results.append(r)
    return results


def verify(run, series=None) -> dict:
    """``run`` is a Record (loadtest.run.record); ``series`` its TimeSeries when the caller has it (a stepped
    load's capacity reads it; computed here when needed and not given)."""
    t0 = time.time()
    o = run.options
    results = run.results  # distributed: reconciled on the workers
    if results is None:
        results = reconcile_all(run.ledgers, run.sessions)
    counters = counters_by_key(run.sessions, run.counters)
    flags = dict(run.flags)
    missing = [f for f in run.failed_listeners] + [f"{s.account.user}: {s.vanished}" for s in run.sessions if s.vanished]
    never_started = max(0, listeners_expected(run) - len(run.sessions))
    if never_started:
        missing.append(f"{never_started} listener user(s) never started")
    run_flags = {"drain_timed_out": bool(flags.get("drain_timed_out")),
                 "ledger_partial": bool(flags.get("interrupted") or flags.get("setup_error") or flags.get("ledger_partial")),
                 "missing_listeners": missing, "slow_listeners": list(run.slow_listeners)}
    scen = {}
    notes = []
    cap = None
    if not flags.get("setup_error"):
        try:
            cap = capacity_of(run, results, series)
        except Exception as exc:  # a bug in the capacity figures must not lose the report
            log.exception("capacity figures failed")
            notes.append(f"capacity figures failed: {type(exc).__name__}: {exc}")
        v = verdicts(list(run.ledgers.values()), results, counters, run_flags, thresholds_from(o, run.accepted_known, queue_drops_counted(run)))
        scen = {k: x.to_dict() for k, x in v.items()}
        if run.stress is not None:
            try:
                scen.update(run.stress.verdicts(run, results, cap))
            except Exception as exc:  # a bug in the stress evidence must not lose the report
                log.exception("stress verdicts failed")
                for sid in STRESS_IDS:
                    scen[sid] = {"id": sid, "title": TITLES[sid], "verdict": "inconclusive",
                                 "figure": f"stress verdicts failed: {type(exc).__name__}: {exc}", "value": None,
                                 "threshold": None, "details": {}}
        else:
            scen.update(skipped_verdicts())
    if flags.get("barrier_timed_out"):
        notes.append("start barrier timed out: some listeners subscribed after writers started")
    for m in missing if not flags.get("setup_error") else ():   # after a failed set-up, nobody started
        notes.append(f"listener without complete evidence: {m}")
    writes = {}
    for key, led in run.ledgers.items():
        writes[key] = led.counts()
    span = max(1e-9, (run.writing_stopped_at or time.time()) - (run.writing_started_at or run.started_at or time.time()))
    acked = sum(c.get("ack", 0) for t in writes.values() for c in t.values()) if writes else 0
    deliveries = sum(st.received for s in run.sessions for st in s.subs.values())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    figures = {
        "writes": writes,
        "writes_acknowledged_per_second": round(acked / span, 1),
        "change_messages_received": deliveries,
        "change_messages_per_second": round(deliveries / span, 1),
        "writing_seconds": round(span, 3),
        "disconnects_unexpected": _sum_dicts(s.disconnects for s in run.sessions),
        "forced_reconnects": sum(s.forced_reconnects for s in run.sessions),
        "resumes": sum(s.resumes for s in run.sessions),
        "malformed_frames": sum(s.malformed for s in run.sessions),
        "listener_lag_ms": lag_figures([s.lag() for s in run.sessions]),
        "generator": run.generator,
        "generator_cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2),
        "generator_max_rss_mb": round(ru.ru_maxrss / 1024, 1),
        "verification_seconds": None,
    }
    if "SC-054" in scen:
        d = scen["SC-054"].get("details", {})
        figures["latency_ms"] = {k: d[k] for k in ("sent", "ack", "commit") if k in d}
    run_info = {
        "run_id": run.run_id,
        "namespace": run.namespace,
        "host": run.base_url,
        "workload": run.workload,
        "writers": o.writers, "listeners": o.listeners, "write_rate": o.write_rate, "op_mix": o.op_mix,
        "reconnect_every": o.reconnect_every, "latency_from": o.latency_from,
        "accepted_known": sorted(run.accepted_known),
        "started_at": run.started_at, "writing_started_at": run.writing_started_at,
        "writing_stopped_at": run.writing_stopped_at, "finished_at": time.time(),
        "flags": flags,
        "server_stats_at_end": run.server_stats_at_end,
    }
    if run.stress is not None:
        run_info["stress"] = _stress_settings(o)
    if run.server is not None:
        run_info["server"] = run.server
    evidence = evidence_of(run, scen, figures["listener_lag_ms"])
    figures["outage"] = evidence.outage.to_dict() if evidence.outage is not None else None
    if run.distributed is not None:
        _distributed_rules(run, scen, notes)
    judged = judge_run(scen, evidence)
    figures["verification_seconds"] = round(time.time() - t0, 3)
    rep = report_mod.build(run_info, judged.scenarios, figures, [r.to_dict() for r in results],
                           judged.notes + notes, verdict=judged.verdict)
    rep["capacity"] = cap
    if cap is not None:
        rep["figures"]["capacity"] = capacity_text(cap)
    if run.distributed is not None:
        rep["distributed"] = run.distributed
    if run.stress is not None:
        try:
            rep["monitor"] = run.stress.monitor_report()
        except Exception as exc:
            log.exception("monitor report failed")
            rep["monitor"] = {"error": f"{type(exc).__name__}: {exc}"}
    return rep


def evidence_of(run, scen: dict, listener_lag: dict) -> Evidence:
    """What the run itself says about its evidence (checks.evidence judges it): interrupted, set-up,
    lost workers, a server outage, the load generator's health (GEN, in every run), the clocks."""
    o, flags = run.options, run.flags
    t0 = run.writing_started_at or run.started_at
    unexpected = [(d["t"], d.get("code")) for s in run.sessions for d in s.disconnect_log
                  if not d.get("expected") and d.get("t") is not None and d.get("code") in (1006, None, "1006")]
    outage = None
    if not flags.get("setup_error"):
        outage = find_outage(run.write_failures, unexpected, len(run.sessions),
                             reconnects_refused=sum(getattr(s, "reconnects_refused", 0) for s in run.sessions),
                             counters_unreadable=bool(flags.get("counters_error")),
                             stats_unreadable=bool(flags.get("stats_error")),
                             end=run.writing_stopped_at)
    g = run.generator or {}
    health = GeneratorHealth(cpu_fraction=g.get("cpu_fraction"), loop_lag_p95_ms=g.get("loop_lag_p95_ms"),
                             loop_lag_max_ms=g.get("loop_lag_max_ms"), listener_lag_mean_ms=listener_lag.get("mean"),
                             stalls=g.get("stalls"), stall_ms=g.get("stall_ms", GeneratorHealth.stall_ms),
                             where=g.get("where", "this process"))
    saturated = health.figure() + health.cause() if health.saturated else None
    if run.stress is None and not flags.get("setup_error"):
        scen["GEN"] = health.verdict()
    elif scen.get("GEN", {}).get("verdict") == "warning":   # the stress monitor's CPU samples say so too
        saturated = saturated or scen["GEN"]["figure"]
    elif saturated and "GEN" in scen:   # its CPU samples looked fine, its event loop did not: one GEN says so
        monitor = scen["GEN"]
        scen["GEN"] = health.verdict()
        scen["GEN"]["details"]["monitor_cpu"] = {"figure": monitor.get("figure"), "details": monitor.get("details")}
    lost = [f"worker {x['node']} (host {x['hostname']}, pid {x['pid']}) lost: {x['why']}"
            for x in (run.distributed or {}).get("lost_workers", ())]
    bound = None
    bound_ms = run.clock_error_bound_ms or {}
    if o.latency_from in bound_ms:
        if "SC-054" in scen:
            scen["SC-054"].setdefault("details", {})["clock_error_bound_ms"] = bound_ms
        if bound_ms[o.latency_from] > o.latency_threshold_ms:
            bound = (f"latency from {o.latency_from} compares clocks of different machines known only to "
                     f"±{bound_ms[o.latency_from]:.1f} ms, more than the {o.latency_threshold_ms:g} ms threshold")
    # a failed set-up also ends the run early ("interrupted"): its note is the set-up's own
    return Evidence(interrupted=bool(flags.get("interrupted")) and not flags.get("setup_error"),
                    setup_error=flags.get("setup_error"),
                    workers_lost=lost, outage=outage, generator_saturated=saturated,
                    clock_bound_exceeded=bound, t0=t0)


def _distributed_rules(run, scen: dict, notes: list) -> None:
    """What a distributed run's report says about its clocks."""
    if run.options.latency_from == "commit":
        notes.append("latency from commit compares the server's _seq time with listener clocks put on the "
                     "master's clock: it assumes the server's clock is the master's")


STRESS_OPTIONS = ("readers", "reader_rate", "monitor_interval", "warmup", "baseline_window", "release_window",
                  "memory_growth_pct", "memory_release_pct", "leak_slope_mb_per_min", "rows_per_writer",
                  "sustained_min_duration", "cpu_threshold_pct", "cpu_cores", "target_write_rate", "query_p95_ms",
                  "flush_every", "stall_seconds", "storage_bound_mb", "uptime_min_notifications", "uptime_min",
                  "leak_probe", "leak_grace")


def _stress_settings(o) -> dict:
    return {k: getattr(o, k, None) for k in STRESS_OPTIONS}


def lag_figures(lags) -> dict:
    """{"frames", "mean", "max"} (ms) from sessions' (frames, lag sum s, lag max s): how long frames waited
    in the generator between arrival and record. Latency excludes it (arrivals carry the kernel's stamp);
    a growing lag says the generator is falling behind."""
    frames = sum(f for f, _, _ in lags)
    total = sum(x for _, x, _ in lags)
    return {"frames": frames, "mean": round(1000.0 * total / frames, 3) if frames else None,
            "max": round(1000.0 * max((m for _, _, m in lags), default=0.0), 3) if frames else None}


def _sum_dicts(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[str(k)] = out.get(str(k), 0) + v
    return out
