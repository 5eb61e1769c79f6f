"""What the report files and the live view show of a run: settings, marks, per-listener rows, server series.

Shared by ``loadtest.verdict.files`` (the HTML report) and ``loadtest.view`` (the live page), so both
show the same figures the same way. Each takes a Run (during the run) or a Record (after it).
"""
from __future__ import annotations

import math

from checks.capacity import KEEP_UP, step_windows

MB = 1024 * 1024


def run_monitor(run):
    """The stress monitor of the run (``run.stress.monitor``, a ``loadtest.run.monitor.ServerMonitor``, with
    ``--stress``) when there is one."""
    for holder in (getattr(run, "stress", None), run):
        mon = getattr(holder, "monitor", None) if holder is not None else None
        if mon is not None and hasattr(mon, "samples"):
            return mon
    return None


def monitor_series(mon) -> dict | None:
    """{"t", "rss_mb", "cpu"} from a ServerMonitor's samples."""
    try:
        samples = mon.samples()
    except Exception:  # the monitor is another part's: never let it break the view
        return None
    out = {"t": [], "rss_mb": [], "cpu": [], "source": "monitor"}
    for s in samples:
        rss, cpu = getattr(s, "server_rss_bytes", None), getattr(s, "server_cpu_percent", None)
        if rss is None and cpu is None:
            continue
        out["t"].append(round(s.t, 3))
        out["rss_mb"].append(None if rss is None else round(rss / MB, 2))
        out["cpu"].append(None if cpu is None else round(cpu, 1))
    return out



def listeners_from_report(report: dict, latency_from: str) -> list:
    per: dict = {}
    for s in report.get("subscriptions", []):
        x = per.setdefault(s.get("listener"), {"listener": s.get("listener"), "subscriptions": 0, "received": 0,
                                               "snapshot_rows": 0, "expected": 0, "lost": 0, "duplicated": 0,
                                               "out_of_order": 0, "p50": None, "p95": None, "p99": None,
                                               "vanished": False})
        x["subscriptions"] += 1
        x["received"] += s.get("change_messages", 0)
        x["snapshot_rows"] += s.get("snapshot_rows", 0)
        x["expected"] += s.get("expected", 0)
        x["lost"] += s.get("lost", 0)
        x["duplicated"] += s.get("duplicated", 0)
        x["out_of_order"] += s.get("out_of_order_total", 0)
        x["vanished"] = x["vanished"] or bool(s.get("vanished"))
        lat = (s.get("latency_ms") or {}).get(latency_from) or {}
        # percentiles of a listener with several subscriptions: the worst subscription's (an upper bound)
        for p in ("p50", "p95", "p99"):
            v = lat.get(p)
            if v is not None and (x[p] is None or v > x[p]):
                x[p] = v
    return list(per.values())


def run_settings(run) -> dict:
    """The settings shown in the report and the view (a Run or a Record: both have these names)."""
    o = run.options
    keys = ("workload", "writers", "listeners", "write_rate", "op_mix", "stream_tokens", "payload_bytes",
            "snapshot_batch_size", "reconnect_every", "reconnect_pause", "reconnect_share", "barrier_timeout",
            "drain_timeout", "drain_quiet", "auth_rate", "latency_from", "latency_threshold_ms",
            "latency_quantile", "min_high_frequency", "accept_known", "standin_fault", "num_users",
            "spawn_rate", "run_time", "live_verify_interval")
    out = {"host": run.base_url, "run_id": run.run_id, "namespace": run.namespace, "started_at": run.started_at,
           "writing_started_at": run.writing_started_at, "writing_stopped_at": run.writing_stopped_at}
    for k in keys:
        if hasattr(o, k):
            v = getattr(o, k)
            out[k] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out


def run_marks(run, report: dict | None = None) -> list:
    marks = []
    for name, t in (("writers start", run.writing_started_at),
                    ("writers stop", run.writing_stopped_at)):
        if t:
            marks.append({"name": name, "t": t})
    mon = run_monitor(run)
    if mon is not None:
        try:
            for name, t in mon.marks():
                if name in ("release_start", "release_end"):   # load_start/_end = writers start/stop
                    marks.append({"name": name.replace("_", " "), "t": t})
        except Exception:  # another part's object: never break the view
            pass
    if report is not None:
        t = report.get("run", {}).get("finished_at")
        if t:
            marks.append({"name": "verified", "t": t})
    return marks


def stress_overlay(report: dict | None) -> dict | None:
    """Baseline, leak-fit window and release window of the stress memory verdicts, when the report
    has them (any scenario whose details carry ``baseline_bytes``)."""
    if not report:
        return None
    candidates = dict(report.get("scenarios") or {})
    for key in ("stress", "stress_scenarios"):
        extra = report.get(key)
        if isinstance(extra, dict):
            candidates.update(extra.get("scenarios", extra) if isinstance(extra.get("scenarios", extra), dict) else {})
    out = {}
    for sid, s in candidates.items():
        d = s.get("details") if isinstance(s, dict) else None
        if not isinstance(d, dict) or "baseline_bytes" not in d:
            continue
        if "window" in d and "baseline" not in out:
            out["baseline_mb"] = d["baseline_bytes"] / MB
            out["window"] = d["window"]
            out["growth_id"] = sid
            leak = d.get("leak") or {}
            out["leak"] = {k: leak.get(k) for k in ("leak", "slope_mb_per_min", "stderr_mb_per_min", "reason")}
            out["baseline"] = True
        if "band_bytes" in d and "release" not in out:
            out["release"] = {"id": sid, "band_mb": d["band_bytes"] / MB, "took_s": d.get("took_s"),
                              "threshold": s.get("threshold")}
    marks = (report.get("monitor") or {}).get("marks") or {}
    if "release" in out:
        def first(v):
            return v[0] if isinstance(v, list) and v else v
        start, end = first(marks.get("release_start")), first(marks.get("release_end"))
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            out["release"]["start"], out["release"]["end"] = start, end
    return out or None


def run_health(report: dict) -> dict:
    """The figures of the report's run-health line, from ``figures`` (docs/report-schema.md): what could
    make the verdicts' figures less than they look. The load generator's event-loop lag and CPU
    (``busy``: GEN warned), writes the server rejected or left unanswered (over every table and kind),
    unexpected listener disconnects by close code, the outage if the server went away, reconnects."""
    figures = report.get("figures") or {}
    gen = figures.get("generator") or {}
    cpu = gen.get("cpu_fraction")
    writes = {"total": 0, "rejected": 0, "unknown": 0}
    for kinds in (figures.get("writes") or {}).values():          # {table: {kind: {outcome: n}}}
        for outcomes in (kinds or {}).values():
            for outcome, n in (outcomes or {}).items():
                writes["total"] += n
                if outcome in writes:
                    writes[outcome] += n
    by_code = figures.get("disconnects_unexpected") or {}
    outage = figures.get("outage")
    gen_verdict = ((report.get("scenarios") or {}).get("GEN") or {}).get("verdict")
    return {"generator": {"loop_lag_p95_ms": gen.get("loop_lag_p95_ms"), "loop_lag_max_ms": gen.get("loop_lag_max_ms"),
                          "cpu_pct": None if cpu is None else round(100.0 * cpu, 1), "where": gen.get("where"),
                          "busy": gen_verdict in ("warning", "fail")},
            "writes": writes,
            "disconnects": {"total": sum(by_code.values()), "by_code": by_code},
            "outage": outage,
            "reconnects": {"forced": figures.get("forced_reconnects"), "resumes": figures.get("resumes"),
                           "refused": (outage or {}).get("reconnects_refused", 0)}}


def capacity_view(report: dict | None) -> dict | None:
    """What the report's and the view's capacity section draws: ``report["capacity"]`` with its figure in
    words (``figures.capacity``) and the share of the offered writes a step must get acknowledged
    (checks.capacity.KEEP_UP); None without --step-load."""
    cap = (report or {}).get("capacity")
    if not isinstance(cap, dict):
        return None
    return {**cap, "figure": ((report or {}).get("figures") or {}).get("capacity"), "keep_up": KEEP_UP}


# ---------------------------------------------------------------------------------------- the phase
def run_clock(run, run_time: float | None) -> dict:
    """The run's start, its run time (Locust's ``--run-time`` / the form's, s; None: until stopped) and,
    with --step-load, the steps it goes through: [{"index", "start", "end", "offered"}] (writes/s of all
    writers; the last step's end None: it lasts to the end of the writing). Locust's timer starts with
    the run, so the writing ends at start + run time; the steps count from the writing's start."""
    return {"started_at": run.started_at, "run_time": run_time or None, "steps": planned_steps(run, run_time)}


def planned_steps(run, run_time: float | None) -> list | None:
    schedule, t0 = getattr(run, "step_schedule", None), run.writing_started_at
    if schedule is None or t0 is None:
        return None
    # without a run time the last step lasts until stopped: the schedule's own steps, up to its top
    end = (run.started_at + run_time if run_time and run.started_at
           else t0 + (schedule.last + 1) * schedule.every)
    steps = step_windows(schedule, run.options.writers, t0, max(end, t0 + 1e-3))
    return [{"index": s.index, "start": s.start, "end": None if i == len(steps) - 1 else s.end,
             "offered": s.offered} for i, s in enumerate(steps)]


def rate_text(v: float) -> str:
    """160 → "160", 337.5 → "337.5", 1000 → "1,000" (as charts.js's LT.rate)."""
    s = f"{v:,.1f}"
    return s[:-2] if s.endswith(".0") else s


def step_text(steps: list, now: float) -> str:
    """"step 3 of 5: 160 writes/s offered": the step the writing is in now."""
    cur = steps[0]
    for s in steps:
        if s["start"] <= now:
            cur = s
    return f"step {cur['index'] + 1} of {len(steps)}: {rate_text(cur['offered'])} writes/s offered"


def writing_text(clock: dict, now: float) -> str:
    """"writing: 23 s of 60 s, 37 s left · step 3 of 5: 160 writes/s offered", from ``run_clock`` (the
    page counts on from the same clock between its polls: loadtest/static/verification.html)."""
    elapsed = math.floor(max(0.0, now - (clock["started_at"] or now)))
    total = clock["run_time"]
    if not total:
        text = f"writing: {elapsed} s (no run time: until stopped)"
    elif elapsed >= total:
        text = f"writing: {total:g} s of {total:g} s, run time over: the writers stop"
    else:
        text = f"writing: {elapsed} s of {total:g} s, {total - elapsed:g} s left"
    return text + (f" · {step_text(clock['steps'], now)}" if clock.get("steps") else "")
