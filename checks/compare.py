"""Two verdict reports in, what changed between them out: the checker behind ``python3 -m loadtest compare``.

    compare(a, b, tolerance_pct=10.0) -> comparison   # a, b: verdict reports (docs/report-schema.md)

Pure: no I/O, no Locust. A is the earlier run (the baseline: the KalamDB before an upgrade, the old config),
B the later one. For every scenario in either report: the verdict and figure text of both, and the figures
that matter, read from its ``details`` (loss, duplicates, order, latency percentiles, memory growth and
slope, CPU, rates) with their direction (lower or higher is better).

What is worse (a regression, ``comparison["verdict"] == "worse"``, exit code 1):

* a verdict that went from ``pass`` to ``fail`` or ``inconclusive`` (a scenario's, or the run's own
  ``summary.verdict``: a run in which nothing could be judged is not as good as one that passed);
* a figure of a scenario judged in both runs (neither skipped) that moved the wrong way by more than its
  slack. The slack is ``tolerance_pct`` % of A's value, but at least the unit's floor (``SLACK_FLOOR``):
  0 for counts, loss shares and rates, so that 0 lost → 1 lost is worse whatever the tolerance; 1 ms for
  latencies (the resolution a p99 of a few thousand samples has); 1 percentage point for CPU and memory
  percentages; 0.5 MB/min for memory slopes (the specification's smallest leak: a fit's error on a short
  run is about that); 1 s for times measured by the monitor's samples; 1 MB for memory sizes.

Not worse, only reported:

* a scenario skipped (or absent) in one run and judged in the other: ``not comparable``; skipped in both:
  ``skipped``. Its figures are not compared;
* the run's own rates (``figures.writes_acknowledged_per_second``, ``change_messages_per_second``): they
  follow the settings (``--write-rate``) more than the server; S3 judges the write rate a server reached;
* settings that differ (writers, write rate, workload, server version, ...): listed in
  ``run.settings_differ``, so that a reader sees when two runs did not do the same thing. Counts (lost,
  duplicated) are compared as counts: compare runs of the same profile and length.

The comparison (``schema`` ``kalamdb-loadtest/comparison/v1``)::

    {"schema", "tolerance_pct",
     "a": {"run_id", "verdict", "workload", "started_at"}, "b": {...},
     "run": {"a": verdict, "b": verdict, "regressed": bool, "figures": [figure, ...], "settings_differ":
             [{"name", "a", "b"}, ...]},
     "scenarios": {sid: {"title", "a": {"verdict", "figure"} | None, "b": ... | None,
                         "status": "worse" | "better" | "same" | "not comparable" | "skipped",
                         "regressed": bool, "why": [text, ...], "figures": [figure, ...]}},
     "regressions": [{"scenario": sid or "run", "what": text}, ...],
     "verdict": "worse" | "same-or-better", "exit_code": 1 | 0}

    figure = {"name", "unit", "better": "lower" | "higher", "a", "b", "change": b - a | None,
              "change_pct": 100 (b - a) / |a| | None (A is 0 or a side has no value), "slack", "gates": bool,
              "status": "worse" | "better" | "within tolerance" | "same" | "not comparable"}

A figure is listed when at least one report has it; ``gates`` is false for the run's rates. ``why`` says
what made a scenario worse (or not comparable), in the words ``regressions`` uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SCHEMA = "kalamdb-loadtest/comparison/v1"
PASS = "pass"
FAILING = ("fail", "inconclusive")
SKIPPED = "skipped"
MB = 1024 * 1024

# the least a figure of each unit may move the wrong way before it is worse (see the module's docstring)
SLACK_FLOOR = {"": 0.0, "% lost": 0.0, "writes/s": 0.0, "changes/s": 0.0, "ms": 1.0, "%": 1.0,
               "MB/min": 0.5, "s": 1.0, "MB": 1.0}


@dataclass(frozen=True)
class Figure:
    """One comparable figure: its name, unit, direction and how to read it from a scenario (and the report)."""
    name: str
    unit: str
    lower_is_better: bool
    read: Callable[[dict, dict], float | None]


def _dig(x, path: tuple):
    """x[path[0]][path[1]]..., or None where a step is missing."""
    for key in path:
        x = x.get(key) if isinstance(x, dict) else None
    return x


def _at(*path) -> Callable[[dict, dict], float | None]:
    """Reads the number at scenario[path...] (or None)."""
    return lambda scenario, _report: _number(_dig(scenario, path))


def _length_at(*path) -> Callable[[dict, dict], float | None]:
    """How many items the list (or dict) at scenario[path...] has."""
    def read(scenario: dict, _report: dict):
        x = _dig(scenario, path)
        return float(len(x)) if isinstance(x, (list, dict)) else None
    return read


def _number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
        return None
    return float(x)


def _lost_pct(scenario: dict, _report: dict):
    d = scenario.get("details") or {}
    lost, expected = _number(d.get("lost")), _number(d.get("expected"))
    return None if lost is None or not expected else 100.0 * lost / expected


def _counters_not_equal(scenario: dict, _report: dict):
    d = scenario.get("details") or {}
    compared, equal = _number(d.get("compared")), _number(d.get("equal"))
    return None if compared is None or equal is None else compared - equal


def _latency(quantile: str) -> Callable[[dict, dict], float | None]:
    """SC-054's percentile from the start it was judged from (``run.latency_from``)."""
    def read(scenario: dict, report: dict):
        start = (report.get("run") or {}).get("latency_from") or "sent"
        return _at("details", start, quantile)(scenario, report)
    return read


def _megabytes(*path) -> Callable[[dict, dict], float | None]:
    def read(scenario: dict, report: dict):
        x = _at(*path)(scenario, report)
        return None if x is None else x / MB
    return read


def _sum_of(*path) -> Callable[[dict, dict], float | None]:
    """The sum of the dict of counts at scenario[path...] (e.g. S10's errors by status)."""
    def read(scenario: dict, _report: dict):
        x = _dig(scenario, path)
        return float(sum(v for v in x.values() if _number(v) is not None)) if isinstance(x, dict) else None
    return read


def _lower(name: str, unit: str, read) -> Figure:
    return Figure(name, unit, True, read)


def _higher(name: str, unit: str, read) -> Figure:
    return Figure(name, unit, False, read)


DELIVERY = (
    _lower("lost", "", _at("details", "lost")),
    _lower("lost share", "% lost", _lost_pct),
    _lower("duplicated", "", _at("details", "duplicated")),
    _lower("wrong values", "", _at("details", "wrong_values")),
    _lower("foreign rows", "", _at("details", "foreign")),
    _lower("out of order", "", _at("details", "out_of_order")),
)

# The figures of each scenario, in the order they are shown. A figure a report lacks reads None.
FIGURES: dict[str, tuple[Figure, ...]] = {
    **{sid: DELIVERY for sid in ("L1", "L2", "L3", "L4", "L5", "L8", "L9", "L10")},
    "L6": (_lower("ordering anomalies", "", _at("value")),),
    "L7": (_lower("counters not equal", "", _counters_not_equal),),
    "SC-054": (_lower("p50", "ms", _latency("p50")), _lower("p95", "ms", _latency("p95")),
               _lower("p99", "ms", _latency("p99"))),
    "S1": (_lower("memory growth", "%", _at("details", "peak_pct")),
           _lower("memory slope", "MB/min", _at("details", "leak", "slope_mb_per_min"))),
    "S2": (_lower("unexpected disconnects", "", _at("details", "unexpected_disconnects")),
           _lower("lost", "", _at("details", "lost"))),
    "S3": (_lower("server CPU", "%", _at("details", "avg_percent")),
           _higher("write rate", "writes/s", _at("details", "achieved_rate")),
           _lower("queries failed", "", _at("details", "queries_failed"))),
    "S4": (_lower("zombie subscriptions", "", _length_at("details", "zombies")),),
    "S5": (_lower("memory kept", "%", _at("details", "last_pct")),
           _lower("release time", "s", _at("details", "took_s"))),
    "S6": (_lower("SELECT p95", "ms", _at("value")), _lower("SELECTs failed", "", _at("details", "failed"))),
    "S7": (_lower("memory growth across flushes", "%", _at("details", "growth_pct")),
           _lower("post-flush slope", "MB/min", _at("details", "slope_mb_per_min"))),
    "S8": (_lower("stalls", "", _length_at("details", "stalls")),
           _lower("counter drifts", "", _length_at("details", "drifts"))),
    "S9": (_lower("storage memory peak", "MB", _megabytes("details", "peak_bytes")),),
    "S10": (_lower("errors", "", _sum_of("details", "errors")),
            _lower("acknowledged writes lost", "", _at("details", "lost_acked")),
            _lower("listeners disconnected at once", "", _at("details", "max_disconnected_at_once"))),
    "SC-057": (_lower("unexpected disconnects", "", _at("details", "unexpected")),
               _lower("downtime", "s", _at("details", "downtime_s"))),
}

# The run's own rates (report["figures"]): shown, never gating
RUN_FIGURES = (
    _higher("writes acknowledged", "writes/s", _at("writes_acknowledged_per_second")),
    _higher("changes received", "changes/s", _at("change_messages_per_second")),
)

# What a run did, from report["run"]: when these differ the two runs are not the same test
RUN_SETTINGS = ("workload", "writers", "listeners", "write_rate", "op_mix", "reconnect_every", "latency_from",
                "accepted_known")


def compare(a: dict, b: dict, tolerance_pct: float = 10.0) -> dict:
    """A (the earlier run) against B: see the module's docstring for the rules and the result's shape."""
    tolerance = tolerance_pct / 100.0
    scen_a, scen_b = a.get("scenarios") or {}, b.get("scenarios") or {}
    scenarios = {sid: _scenario(sid, scen_a.get(sid), scen_b.get(sid), a, b, tolerance)
                 for sid in list(scen_a) + [s for s in scen_b if s not in scen_a]}
    run = _run(a, b, tolerance)
    regressions = ([{"scenario": "run", "what": w} for w in run.pop("why")]
                   + [{"scenario": sid, "what": w} for sid, s in scenarios.items() if s["regressed"]
                      for w in s["why"]])
    worse = bool(regressions)
    return {"schema": SCHEMA, "tolerance_pct": tolerance_pct, "a": _identity(a), "b": _identity(b),
            "run": run, "scenarios": scenarios, "regressions": regressions,
            "verdict": "worse" if worse else "same-or-better", "exit_code": 1 if worse else 0}


def _identity(report: dict) -> dict:
    run = report.get("run") or {}
    return {"run_id": run.get("run_id"), "verdict": (report.get("summary") or {}).get("verdict"),
            "workload": run.get("workload"), "started_at": run.get("started_at")}


def _verdict_regressed(was: str | None, now: str | None) -> bool:
    return was == PASS and now in FAILING


def _run(a: dict, b: dict, tolerance: float) -> dict:
    was, now = (_identity(r)["verdict"] for r in (a, b))
    why = [f"run verdict {was} → {now}"] if _verdict_regressed(was, now) else []
    figures = [_figure(f, f.read(a.get("figures") or {}, a), f.read(b.get("figures") or {}, b), tolerance,
                       gates=False)
               for f in RUN_FIGURES]
    return {"a": was, "b": now, "regressed": bool(why), "why": why,
            "figures": [f for f in figures if f["a"] is not None or f["b"] is not None],
            "settings_differ": _settings_differ(a, b)}


def _settings(report: dict, with_stress: bool) -> dict:
    run = report.get("run") or {}
    out = {k: run.get(k) for k in RUN_SETTINGS}
    out["stress"] = "on" if run.get("stress") else "off"
    if with_stress:   # the stress thresholds, when both runs had them
        out.update({f"stress.{k}": v for k, v in run["stress"].items()})
    out["server"] = (run.get("server") or {}).get("kind")
    out["server version"] = (run.get("server_stats_at_end") or {}).get("server_version")
    return out


def _settings_differ(a: dict, b: dict) -> list:
    with_stress = all(isinstance((r.get("run") or {}).get("stress"), dict) for r in (a, b))
    sa, sb = _settings(a, with_stress), _settings(b, with_stress)
    return [{"name": k, "a": sa.get(k), "b": sb.get(k)} for k in list(sa) + [k for k in sb if k not in sa]
            if sa.get(k) != sb.get(k)]


def _side(s: dict | None) -> dict | None:
    return None if s is None else {"verdict": s.get("verdict"), "figure": s.get("figure", "")}


def _scenario(sid: str, sa: dict | None, sb: dict | None, a: dict, b: dict, tolerance: float) -> dict:
    title = (sb or sa or {}).get("title", "")
    out = {"title": title, "a": _side(sa), "b": _side(sb), "status": "same", "regressed": False, "why": [],
           "figures": []}
    va, vb = (None if s is None else s.get("verdict") for s in (sa, sb))
    if va == SKIPPED and vb == SKIPPED:
        out["status"] = "skipped"
        return out
    if va in (None, SKIPPED) or vb in (None, SKIPPED):
        out["status"] = "not comparable"
        out["why"] = [f"{'absent' if v is None else 'skipped'} in {side}"
                      for side, v in (("A", va), ("B", vb)) if v in (None, SKIPPED)]
        return out
    figures = [_figure(f, f.read(sa, a), f.read(sb, b), tolerance, gates=True) for f in FIGURES.get(sid, ())]
    out["figures"] = [f for f in figures if f["a"] is not None or f["b"] is not None]
    why = [f"verdict {va} → {vb}"] if _verdict_regressed(va, vb) else []
    why += [_figure_text(f) for f in out["figures"] if f["status"] == "worse"]
    better = (va in FAILING and vb == PASS) or any(f["status"] == "better" for f in out["figures"])
    out.update(regressed=bool(why), why=why, status="worse" if why else ("better" if better else "same"))
    return out


def _figure(f: Figure, a: float | None, b: float | None, tolerance: float, *, gates: bool) -> dict:
    out = {"name": f.name, "unit": f.unit, "better": "lower" if f.lower_is_better else "higher", "a": a, "b": b,
           "change": None, "change_pct": None, "slack": None, "gates": gates, "status": "not comparable"}
    if a is None or b is None:
        return out
    change = b - a
    slack = max(tolerance * abs(a), SLACK_FLOOR.get(f.unit, 0.0))
    wrong_way = change if f.lower_is_better else -change
    if change == 0:
        status = "same"
    elif wrong_way > slack:
        status = "worse"
    elif wrong_way < -slack:
        status = "better"
    else:
        status = "within tolerance"
    out.update(change=change, change_pct=100.0 * change / abs(a) if a else None, slack=slack, status=status)
    return out


def _figure_text(f: dict) -> str:
    unit = f" {f['unit']}" if f["unit"] else ""
    return f"{f['name']} {format_number(f['a'])} → {format_number(f['b'])}{unit}"


def format_number(x: float | None) -> str:
    """A figure as people read it: whole numbers with thousands separators, others to 3 significant digits
    (one decimal from 100 on)."""
    if x is None:
        return "–"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.3g}" if abs(x) >= 0.001 else f"{x:.2g}"
