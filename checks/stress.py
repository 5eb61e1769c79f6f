"""Stress, memory and stability verdicts (scenarios S1-S10, SC-056..SC-060): pure functions, no I/O.

Jepsen-checker style: each function takes recorded evidence (time series sampled by
``loadtest.run.monitor.ServerMonitor``, counts from the users, rows read from ``system.live``) and returns
one verdict dict::

    {"id": "S1", "title": ..., "verdict": "pass"|"fail"|"inconclusive"|"skipped",
     "figure": "short human text with the numbers", "value": number|None, "threshold": ..., "details": {...}}

Every threshold is a keyword parameter whose default is the specification's figure.  A verdict is
``inconclusive`` (never ``pass``) when the evidence is insufficient: too few samples, no baseline, the
monitor lost the server for too long, too few notifications.

Data shape.  The monitor records :class:`Sample` records (one per poll, easy to log and to turn into
JSON); the verdict functions take *columnar* series (``times``, ``values``: two equal-length
sequences, epoch seconds and numbers) because that is what least squares and quantiles want and what a
test writes by hand.  :func:`series` turns samples into columns, dropping the polls where the figure
is missing (a gap).

Units.  Memory is in bytes on input; figures print MB = 2**20 bytes (as KalamDB's ``*_mb`` metrics and
``top`` do).  CPU percent is as the process tools report it: 100 = one core fully busy.

Time windows (the choices behind the memory verdicts):

* load window: ``[load_start, load_end]``, marked by the run (``monitor.mark("load_start")`` ...).
* warm-up: the first ``warmup_s`` (30 s) of load, when connections, caches and the first memtables
  fill; it is excluded from everything.
* baseline: the **median** of the samples in ``[load_start + warmup_s, load_start + warmup_s +
  baseline_s]`` (30 s, i.e. 15 polls at 2 s); the median ignores a GC or allocator spike.
* steady part: ``[load_start + warmup_s, load_end]``: where the leak slope is fitted.
* growth: the peak of a rolling median (``smooth_n`` consecutive samples) over the steady part,
  relative to the baseline; the end level (median of the last ``baseline_s`` of load) is reported too.
"""
from __future__ import annotations

import bisect

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

__all__ = [
    "MB", "PASS", "FAIL", "INCONCLUSIVE", "SKIPPED", "Sample", "series", "window", "baseline_level",
    "max_gap", "linear_fit", "leak_estimate", "memory_growth", "memory_release", "cpu_under_load",
    "subscription_leaks", "query_latency", "flush_buildup", "subscription_health", "storage_bound",
    "storage_growth", "memtable_budget", "MEMTABLES", "ROCKSDB_FIGURES",
    "ws_uptime", "degradation", "generator_saturation", "nearest_rank", "sustained_load",
]

MB = 1024 * 1024
PASS, FAIL, INCONCLUSIVE, SKIPPED = "pass", "fail", "inconclusive", "skipped"


# ------------------------------------------------------------------------------------------------
# Samples and series
# ------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Sample:
    """One poll of the server and of the load generator.  ``None`` = not measured in this poll.

    ``server_rss_bytes``/``server_cpu_percent`` come from psutil when the server runs on this machine
    (``source`` contains "psutil"), else from ``system.stats`` (``memory_rss_bytes`` or
    ``memory_usage_bytes``, ``cpu_usage_percent``).  ``source == "gap"`` means the server answered
    nothing this time (``error`` says why).  ``server_alive`` is psutil's word on the server process
    (None when it is not local).  ``storage`` holds the storage-engine figures of ``system.stats``;
    ``stats`` all numeric metrics of that poll."""

    t: float
    server_rss_bytes: float | None = None
    server_cpu_percent: float | None = None
    connections: int | None = None
    subscriptions: int | None = None
    ws_sessions: int | None = None
    storage: dict = field(default_factory=dict)
    generator_cpu_percent: float | None = None
    generator_rss_bytes: float | None = None
    source: str = ""
    server_alive: bool | None = None
    error: str | None = None
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def series(samples: Iterable[Sample], name: str, start: float | None = None,
           end: float | None = None) -> tuple[list[float], list[float]]:
    """Columns ``(times, values)`` of attribute ``name`` (or ``"storage.KEY"`` / ``"stats.KEY"``) of
    the samples in ``[start, end]``, skipping polls where it is missing."""
    times, values = [], []
    group, _, key = name.partition(".")
    for s in samples:
        if (start is not None and s.t < start) or (end is not None and s.t > end):
            continue
        v = getattr(s, group).get(key) if key else getattr(s, name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            times.append(s.t)
            values.append(v)
    return times, values


def window(times: Sequence[float], values: Sequence[float], start: float | None = None,
           end: float | None = None) -> tuple[list[float], list[float]]:
    """The points with ``start <= t <= end`` (None = open), None values dropped."""
    pts = [(t, v) for t, v in zip(times, values)
           if v is not None and (start is None or t >= start) and (end is None or t <= end)]
    return [t for t, _ in pts], [v for _, v in pts]


def baseline_level(times, values, start: float, end: float, min_samples: int = 3) -> float | None:
    """Median of the values in ``[start, end]``; None with fewer than ``min_samples`` samples."""
    _, vals = window(times, values, start, end)
    return statistics.median(vals) if len(vals) >= min_samples else None


def max_gap(times: Sequence[float], start: float, end: float) -> float:
    """Longest stretch of ``[start, end]`` without a sample (edges included)."""
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    return max((b - a for a, b in zip(edges, edges[1:])), default=end - start)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (the value below which a share q of the values lie, as latency
    reports state it): ``sorted(values)[ceil(q*n) - 1]``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _verdict(id: str, title: str, verdict: str, figure: str, value=None, threshold=None,
             details: dict | None = None) -> dict:
    return {"id": id, "title": title, "verdict": verdict, "figure": figure, "value": value,
            "threshold": threshold, "details": details or {}}


def _mb(x: float) -> str:
    return f"{x / MB:.1f} MB"


def _pct(x: float) -> str:
    return f"{x:+.1f} %"


# ------------------------------------------------------------------------------------------------
# Least squares, leak and step
# ------------------------------------------------------------------------------------------------

def linear_fit(times: Sequence[float], values: Sequence[float], autocorrelation: bool = True) -> dict | None:
    """Ordinary least squares of ``values`` (any unit) over ``times`` (seconds).

    Returns ``slope`` (unit/s), ``intercept`` (at ``times[0]``), ``r2``, ``stderr`` of the slope, ``n``,
    ``rho`` (lag-1 autocorrelation of the residuals).  With ``autocorrelation``, the standard error is
    widened by ``sqrt((1+rho)/(1-rho))`` (AR(1) effective sample size, rho capped at 0.9) because memory
    noise is not independent from one poll to the next; without it a wandering but flat series would
    look like a significant slope.  None with fewer than 3 points or no spread in time."""
    n = len(times)
    if n < 3:
        return None
    t0 = times[0]
    x = [t - t0 for t in times]
    if max(x) - min(x) <= 0:
        return None
    slope, intercept = statistics.linear_regression(x, values)
    mean_x, mean_y = statistics.fmean(x), statistics.fmean(values)
    sxx = math.fsum((xi - mean_x) ** 2 for xi in x)
    sst = math.fsum((yi - mean_y) ** 2 for yi in values)
    residuals = [yi - (intercept + slope * xi) for xi, yi in zip(x, values)]
    sse = math.fsum(r * r for r in residuals)
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    stderr = math.sqrt(sse / (n - 2) / sxx)
    rho = 0.0
    if sse > 0:
        rho = math.fsum(a * b for a, b in zip(residuals, residuals[1:])) / sse
    if autocorrelation and rho > 0:
        rho_c = min(rho, 0.97)
        stderr *= math.sqrt((1 + rho_c) / (1 - rho_c))
    return {"slope": slope, "intercept": intercept, "r2": r2, "stderr": stderr, "n": n, "rho": rho,
            "sse": sse}


def _best_step(values: Sequence[float], min_segment: int) -> dict | None:
    """The single breakpoint that best splits ``values`` into two flat levels (least squares).
    O(n) with prefix sums over values centred on their mean (keeps the sums well conditioned)."""
    n = len(values)
    if n < 2 * min_segment:
        return None
    mean = statistics.fmean(values)
    y = [v - mean for v in values]
    s1, s2 = [0.0], [0.0]
    for v in y:
        s1.append(s1[-1] + v)
        s2.append(s2[-1] + v * v)
    best = None
    for i in range(min_segment, n - min_segment + 1):
        left = s2[i] - s1[i] ** 2 / i
        right = (s2[n] - s2[i]) - (s1[n] - s1[i]) ** 2 / (n - i)
        if best is None or left + right < best[0]:
            best = (left + right, i)
    sse, i = best
    before = s1[i] / i + mean
    after = (s1[n] - s1[i]) / (n - i) + mean
    pooled_sd = math.sqrt(max(sse, 0.0) / (n - 2))
    return {"index": i, "sse": sse, "before": before, "after": after, "height": after - before,
            "pooled_sd": pooled_sd}


def leak_estimate(times: Sequence[float], values: Sequence[float], *, k: float = 3.0,
                  min_slope_mb_per_min: float = 0.5, min_points: int = 10,
                  step_k: float = 3.0) -> dict:
    """Is memory (bytes over epoch seconds) leaking over this steady part?

    1. Fit a line (:func:`linear_fit`, AR(1)-widened standard error).
    2. Look for one step: the best two-level split.  It is a step, not a ramp, when the two levels fit
       better than the line and the jump exceeds ``step_k`` pooled standard deviations.  Then only the
       part after the step is judged (a one-time jump followed by flat memory is not a leak).
    3. Leak when the judged slope is significant: ``slope > k * stderr`` **and**
       ``slope >= min_slope_mb_per_min``.  This catches a slow, steady leak long before memory has
       grown 10 %, while noise (wide stderr) and tiny drifts (below the floor) are not called leaks.
    4. A leak keeps going: if the later half of the judged part grows at under half that slope, and
       significantly so (difference > ``k`` of its stderr), memory levelled off: no leak.

    Known limit: memory that wanders like a random walk (strongly autocorrelated noise) can look like
    a slope over a short run; the AR(1) widening and the MB/min floor are the guards, and a longer
    run separates the two (a wander's slope shrinks with time, a leak's does not).

    Returns ``{"leak": True|False|None, "reason", "slope_mb_per_min", "stderr_mb_per_min", "r2", "n",
    "step": None|{...}, "overall": {...}}``; ``leak`` is None when there are too few points (overall
    or after a step)."""
    times, values = window(times, values)
    n = len(times)
    out = {"leak": None, "reason": "", "slope_mb_per_min": None, "stderr_mb_per_min": None, "r2": None,
           "n": n, "step": None, "overall": None, "late_half": None, "k": k, "min_slope_mb_per_min": min_slope_mb_per_min}
    if n < min_points:
        out["reason"] = f"only {n} samples (need {min_points})"
        return out
    mb = [v / MB for v in values]
    per_min = 60.0

    def summary(fit):
        return {"slope_mb_per_min": fit["slope"] * per_min, "stderr_mb_per_min": fit["stderr"] * per_min,
                "r2": fit["r2"], "n": fit["n"], "rho": fit["rho"]}

    overall = linear_fit(times, mb)
    if overall is None:
        out["reason"] = "no time spread"
        return out
    out["overall"] = summary(overall)
    judged = overall

    min_segment = max(3, min_points // 2)
    step = _best_step(mb, min_segment)
    if step is not None and step["sse"] < overall["sse"] and \
            abs(step["height"]) > step_k * max(step["pooled_sd"], 1e-9):
        i = step["index"]
        out["step"] = {"t": times[i], "before_mb": step["before"], "after_mb": step["after"],
                       "height_mb": step["height"]}
        post = linear_fit(times[i:], mb[i:])
        if post is None or post["n"] < min_segment:
            out.update(summary(overall))
            out["reason"] = f"step of {step['height']:+.1f} MB, too few samples after it"
            return out
        judged = post

    out.update(summary(judged))
    slope, stderr = judged["slope"] * per_min, judged["stderr"] * per_min
    significant = slope > k * stderr and slope >= min_slope_mb_per_min
    where = "after the step" if judged is not overall else "steady part"
    if significant:
        # A leak keeps going: the later half must not grow significantly slower (under half the
        # slope) than the whole.  Memory that rose and then levelled off (caches, memtables filling
        # up to their budget) does.
        start = len(times) - judged["n"]
        half = start + judged["n"] // 2
        late = linear_fit(times[half:], mb[half:]) if len(times) - half >= min_segment else None
        if late is not None:
            out["late_half"] = summary(late)
            late_slope, late_err = late["slope"] * per_min, late["stderr"] * per_min
            if late_slope < slope / 2 and slope - late_slope > k * late_err:
                out["leak"] = False
                out["reason"] = (f"{where}: grew {slope:.2f} MB/min, then levelled off (later half "
                                 f"{late_slope:.2f} ± {late_err:.2f} MB/min)")
                return out
    out["leak"] = significant
    if significant:
        out["reason"] = f"{where}: slope {slope:.2f} MB/min > {k:g}×stderr {stderr:.2f} and ≥ {min_slope_mb_per_min:g}"
    elif out["step"] is not None:
        out["reason"] = f"step of {out['step']['height_mb']:+.1f} MB, flat after it"
    else:
        out["reason"] = f"{where}: no significant slope"
    return out


def given_back(leak: dict, release: Mapping | None) -> dict:
    """A rising slope under load is a leak only while the memory is not given back: where the release
    verdict (S5's evidence) saw it back within its band after the load, it was growth under load."""
    if release is None:
        return leak
    took = (release.get("details") or {}).get("took_s")
    back = release.get("verdict") == PASS and took is not None
    out = dict(leak, given_back_s=took if back else None, release_verdict=release.get("verdict"),
               kept_pct=(release.get("details") or {}).get("last_pct"))
    if leak["leak"] and back:
        out["leak"] = False
        out["reason"] = f"rose under load, given back {took:.0f} s after it: growth, not a leak"
    return out


def _leak_text(leak: dict) -> str:
    if leak["slope_mb_per_min"] is None:
        return f"leak not judged ({leak['reason']})"
    text = (f"slope {leak['slope_mb_per_min']:.2f} ± {leak['stderr_mb_per_min']:.2f} MB/min "
            f"(R² {leak['r2']:.2f}, n {leak['n']})")
    if leak["step"] is not None:
        text += f" after a step of {leak['step']['height_mb']:+.1f} MB"
    verdict = {True: "leak", False: "no leak", None: "leak undecided"}[leak["leak"]]
    if leak.get("given_back_s") is not None:
        verdict = f"given back {leak['given_back_s']:.0f} s after the load: {verdict}"
    elif leak.get("release_verdict") == FAIL:
        kept = leak.get("kept_pct")
        verdict = (f"not all given back after the load ({_pct(kept)} over baseline at the end): {verdict}"
                   if kept is not None else f"not given back after the load: {verdict}")
    return f"{text}: {verdict}"


# ------------------------------------------------------------------------------------------------
# S1 / S2 / SC-056: memory growth over baseline
# ------------------------------------------------------------------------------------------------

def memory_growth(times: Sequence[float], values: Sequence[float], *, load_start: float, load_end: float,
                  warmup_s: float = 30.0, baseline_s: float = 30.0, threshold_pct: float = 10.0,
                  smooth_n: int = 5, min_samples: int = 10, max_gap_s: float = 60.0,
                  min_duration_s: float = 0.0, fail_on_leak: bool = True, leak_k: float = 3.0,
                  min_slope_mb_per_min: float = 0.5, server_gone_at: float | None = None,
                  release: Mapping | None = None, id: str = "S1",
                  title: str = "server memory growth under load") -> dict:
    """Memory growth < ``threshold_pct`` over the baseline (see the module doc for the windows), and no
    leak (:func:`leak_estimate` on the steady part) when ``fail_on_leak``.  Use ``id="S2"``/``"SC-056"``
    and ``min_duration_s=300`` for the 5-minute criteria.

    Growth under load and a leak are two findings: memory that rose while loaded but was given back
    after the load (``release``: the :func:`memory_release` verdict, passed) is growth, judged against
    ``threshold_pct``, not a leak, however steep its slope was."""
    steady_from = load_start + warmup_s
    thr = f"< {threshold_pct:g} %"
    if load_end - load_start < min_duration_s:
        return _verdict(id, title, INCONCLUSIVE, f"load ran {load_end - load_start:.0f} s (need "
                        f"{min_duration_s:.0f} s)", None, thr)
    base = baseline_level(times, values, steady_from, steady_from + baseline_s)
    if base is None or base <= 0:
        return _verdict(id, title, INCONCLUSIVE, f"no baseline: fewer than 3 memory samples in the "
                        f"{baseline_s:g} s after a {warmup_s:g} s warm-up", None, thr)
    ts, vs = window(times, values, steady_from, load_end)
    if len(vs) < min_samples:
        return _verdict(id, title, INCONCLUSIVE, f"only {len(vs)} memory samples in the steady part "
                        f"(need {min_samples})", None, thr, {"baseline_bytes": base})
    gap = max_gap(ts, steady_from, load_end)
    if gap > max_gap_s:
        return _verdict(id, title, INCONCLUSIVE, f"monitor lost the server for {gap:.0f} s "
                        f"(> {max_gap_s:g} s)", None, thr, {"baseline_bytes": base, "max_gap_s": gap})
    width = max(1, min(smooth_n, len(vs)))
    smoothed = [statistics.median(vs[i:i + width]) for i in range(len(vs) - width + 1)]
    peak = max(smoothed)
    end_level = baseline_level(ts, vs, load_end - baseline_s, load_end, min_samples=1)
    if end_level is None or (server_gone_at is not None and server_gone_at < load_end):
        # the server went away (or the monitor lost it) before the load ended: no end level to compare
        gone = (f"server gone {server_gone_at - load_start:.1f} s into the load" if server_gone_at is not None
                else f"no memory sample in the last {baseline_s:g} s of the load")
        return _verdict(id, title, INCONCLUSIVE, f"{gone}: growth not measured to the end (peak {_mb(peak)})",
                        None, thr, {"baseline_bytes": base, "peak_bytes": peak, "server_gone_at": server_gone_at})
    peak_pct = (peak - base) / base * 100.0
    end_pct = (end_level - base) / base * 100.0
    leak = given_back(leak_estimate(ts, vs, k=leak_k, min_slope_mb_per_min=min_slope_mb_per_min,
                                    min_points=min_samples), release)
    details = {"baseline_bytes": base, "peak_bytes": peak, "end_bytes": end_level, "peak_pct": peak_pct,
               "end_pct": end_pct, "leak": leak, "samples": len(vs), "max_gap_s": gap,
               "window": [steady_from, load_end]}
    figure = (f"growth under load: peak {_pct(peak_pct)} over baseline {_mb(base)} (end {_pct(end_pct)}; "
              f"threshold {thr}); {_leak_text(leak)}")
    failed = peak_pct >= threshold_pct or (fail_on_leak and leak["leak"] is True)
    return _verdict(id, title, FAIL if failed else PASS, figure, round(peak_pct, 3), thr, details)


# ------------------------------------------------------------------------------------------------
# S2: writers + listeners for 5 minutes
# ------------------------------------------------------------------------------------------------

def sustained_load(memory: Mapping, *, duration_s: float, min_duration_s: float = 300.0,
                   unexpected_disconnects: int = 0, lost: int | None = 0, expected: int | None = None,
                   id: str = "S2", title: str = "writers + listeners sustained: no dropped connection, "
                   "every change delivered") -> dict:
    """S2 combines three facts over the whole load: no unexpected disconnect (``unexpected_disconnects``),
    every change delivered (``lost`` deliveries of acknowledged writes, from the live-query verifier;
    None = unknown), and memory that holds (``memory``: the :func:`memory_growth` verdict with
    ``min_duration_s`` applied, SC-056).  Any of them failing fails S2; a load shorter than
    ``min_duration_s`` or unknown delivery is inconclusive otherwise."""
    thr = (f"≥ {min_duration_s:g} s, 0 unexpected disconnects, 0 lost, memory {memory.get('threshold')}")
    parts = [f"{duration_s:.0f} s of load", f"{unexpected_disconnects} unexpected disconnect(s)",
             "delivery unknown" if lost is None else
             f"{lost:,} lost of {expected:,} expected deliveries" if expected is not None else f"{lost:,} lost",
             f"memory: {memory.get('figure')}"]
    details = {"duration_s": duration_s, "min_duration_s": min_duration_s,
               "unexpected_disconnects": unexpected_disconnects, "lost": lost, "expected": expected,
               "memory": {k: memory.get(k) for k in ("verdict", "value", "details")}}
    figure = "; ".join(parts)
    failures = [name for name, bad in (("disconnects", unexpected_disconnects > 0), ("lost", (lost or 0) > 0),
                                        ("memory", memory.get("verdict") == FAIL)) if bad]
    details["failures"] = failures
    if failures:
        return _verdict(id, title, FAIL, figure, len(failures), thr, details)
    if duration_s < min_duration_s:
        return _verdict(id, title, INCONCLUSIVE, f"load ran {duration_s:.0f} s (need {min_duration_s:g} s); "
                        + figure, None, thr, details)
    if lost is None or memory.get("verdict") != PASS:
        return _verdict(id, title, INCONCLUSIVE, figure, None, thr, details)
    return _verdict(id, title, PASS, figure, 0, thr, details)


# ------------------------------------------------------------------------------------------------
# S5 / SC-059: memory release after the load
# ------------------------------------------------------------------------------------------------

def memory_release(times: Sequence[float], values: Sequence[float], *, baseline: float | None,
                   load_end: float, within_pct: float = 5.0, deadline_s: float = 60.0,
                   until: float | None = None, max_gap_s: float = 30.0, id: str = "S5",
                   title: str = "memory released after the load") -> dict:
    """After ``load_end``, memory is back within ``within_pct`` of ``baseline`` (bytes; normally the
    baseline of :func:`memory_growth`) within ``deadline_s`` and stays there.

    Released at the first sample from which every later sample (up to ``until``) is within the band;
    the time it took is the value.  Released late: fail, unless a hole of more than ``max_gap_s`` in
    the samples before it could hide an earlier return (inconclusive).  Never released: fail if we
    watched at least ``deadline_s``, inconclusive if we stopped watching earlier."""
    thr = f"≤ +{within_pct:g} % within {deadline_s:g} s"
    if baseline is None or baseline <= 0:
        return _verdict(id, title, INCONCLUSIVE, "no baseline", None, thr)
    ts, vs = window(times, values, load_end, until)
    if not vs:
        return _verdict(id, title, INCONCLUSIVE, "no memory sample after the load ended", None, thr)
    band = baseline * (1 + within_pct / 100.0)
    watched = ts[-1] - load_end
    released_at = None
    for i in range(len(vs) - 1, -1, -1):  # walk back while within the band: the last re-entry point
        if vs[i] > band:
            break
        released_at = ts[i]
    last_pct = (vs[-1] - baseline) / baseline * 100.0
    details = {"baseline_bytes": baseline, "band_bytes": band, "watched_s": watched, "last_pct": last_pct,
               "samples": len(vs)}
    if released_at is not None:
        took = released_at - load_end
        details["took_s"] = took
        if took <= deadline_s:
            return _verdict(id, title, PASS, f"back within {within_pct:g} % of baseline {_mb(baseline)} after "
                            f"{took:.0f} s (≤ {deadline_s:g} s)", round(took, 3), thr, details)
        # late: unless a hole in the samples could hide an earlier return
        gap = max_gap(ts, load_end, released_at)
        details["max_gap_s"] = gap
        if gap > max_gap_s:
            return _verdict(id, title, INCONCLUSIVE, f"back within {within_pct:g} % after {took:.0f} s, but the "
                            f"monitor lost the server for {gap:.0f} s before that", None, thr, details)
        return _verdict(id, title, FAIL, f"back within {within_pct:g} % of baseline {_mb(baseline)} after "
                        f"{took:.0f} s (> {deadline_s:g} s)", round(took, 3), thr, details)
    if watched < deadline_s:
        return _verdict(id, title, INCONCLUSIVE, f"watched only {watched:.0f} s after the load; still "
                        f"{_pct(last_pct)} over baseline {_mb(baseline)}", None, thr, details)
    return _verdict(id, title, FAIL, f"not back within {within_pct:g} % of baseline {_mb(baseline)} in "
                    f"{watched:.0f} s watched; last {_pct(last_pct)}", None, thr, details)


# ------------------------------------------------------------------------------------------------
# S3: CPU at the target write rate, still answering queries
# ------------------------------------------------------------------------------------------------

def cpu_under_load(times: Sequence[float], cpu_percent: Sequence[float], *, start: float, end: float,
                   threshold_pct: float = 80.0, cores: int = 1, achieved_rate: float | None = None,
                   target_rate: float = 1000.0, rate_tolerance: float = 0.05,
                   queries_ok: int | None = None, queries_failed: int = 0,
                   max_query_error_share: float = 0.01, min_samples: int = 3, id: str = "S3",
                   title: str = "server CPU at the target write rate") -> dict:
    """Average server CPU over the writing window ``[start, end]`` < ``threshold_pct``, at a write rate of
    at least ``target_rate`` (within ``rate_tolerance``), while queries are still answered
    (``queries_ok`` > 0 and at most ``max_query_error_share`` failed).

    CPU percent is as sampled (100 = one core); it is divided by ``cores`` so that the caller picks
    what 100 % means (``cores=psutil.cpu_count()`` = share of the whole machine).  Failing evidence
    (CPU over, queries failing) fails even below the target rate; passing needs the target rate."""
    thr = f"< {threshold_pct:g} %"
    _, vs = window(times, cpu_percent, start, end)
    if len(vs) < min_samples:
        return _verdict(id, title, INCONCLUSIVE, f"only {len(vs)} CPU samples in the writing window "
                        f"(need {min_samples})", None, thr)
    avg = statistics.fmean(vs) / cores
    peak = max(vs) / cores
    rate_text = (f"{achieved_rate:.0f} writes/s" if achieved_rate is not None else "unknown write rate")
    queries_total = (queries_ok or 0) + queries_failed
    query_share = queries_failed / queries_total if queries_total else 0.0
    figure = (f"CPU avg {avg:.1f} % (peak {peak:.1f} %; threshold {thr}"
              f"{'' if cores == 1 else f', of {cores} cores'}) at {rate_text} (target {target_rate:g})")
    figure += (f"; queries answered {queries_ok}/{queries_total}" if queries_ok is not None
               else "; queries not measured")
    details = {"avg_percent": avg, "peak_percent": peak, "samples": len(vs), "cores": cores,
               "achieved_rate": achieved_rate, "target_rate": target_rate, "queries_ok": queries_ok,
               "queries_failed": queries_failed}
    queries_bad = queries_ok is not None and (queries_ok == 0 or query_share > max_query_error_share)
    if avg >= threshold_pct or queries_bad:
        return _verdict(id, title, FAIL, figure, round(avg, 3), thr, details)
    if achieved_rate is None or achieved_rate < target_rate * (1 - rate_tolerance) or queries_ok is None:
        return _verdict(id, title, INCONCLUSIVE, figure + ": target rate or queries not reached", round(avg, 3),
                        thr, details)
    return _verdict(id, title, PASS, figure, round(avg, 3), thr, details)


# ------------------------------------------------------------------------------------------------
# S4: connection / subscription leaks
# ------------------------------------------------------------------------------------------------

def _names(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit})" if len(items) > limit else "")


def subscription_leaks(live_rows: Sequence[Mapping] | None, *, expected_ids: Iterable[str],
                       closed_ids: Iterable[str] = (), stats: Mapping | None = None,
                       expected_subscriptions: int | None = None,
                       expected_connections: int | None = None, opened: int | None = None,
                       grace_s: float | None = None, id: str = "S4",
                       title: str = "no leaked subscriptions or connections") -> dict:
    """After closing some subscriptions (and waiting a grace period), ``system.live`` must list exactly
    the ``expected_ids`` (subscription ids) that remain.

    ``live_rows``: the ``system.live`` rows of this test's scope (dicts with ``subscription_id``,
    ``live_id``, ...), or None if they could not be read.  Zombies: rows of a closed id, rows listed
    twice, rows of an id nobody opened; all are named by ``live_id``.  Missing: remaining ids not
    listed.  ``stats`` (parsed ``system.stats``): ``active_subscriptions`` must equal
    ``expected_subscriptions`` (default: the number of expected ids), and ``active_connections`` /
    ``websocket_sessions`` must equal ``expected_connections`` when given."""
    expected = set(expected_ids)
    closed = set(closed_ids)
    n_exp = len(expected) if expected_subscriptions is None else expected_subscriptions
    thr = f"exactly {len(expected)} remaining, 0 zombies"
    if live_rows is None:
        return _verdict(id, title, INCONCLUSIVE, "system.live could not be read", None, thr)
    by_id: dict[str, list[str]] = {}
    for row in live_rows:
        sid = str(row.get("subscription_id"))
        by_id.setdefault(sid, []).append(str(row.get("live_id") or sid))
    zombies, unexpected, duplicated = [], [], []
    for sid, lives in sorted(by_id.items()):
        if sid in closed:
            zombies.extend(lives)
        elif sid not in expected:
            unexpected.extend(lives)
        elif len(lives) > 1:
            duplicated.extend(lives[1:])
    missing = sorted(expected - set(by_id))
    problems, mismatches = [], {}
    if zombies:
        problems.append(f"{len(zombies)} zombie(s) of closed subscriptions ({_names(zombies)})")
    if duplicated:
        problems.append(f"{len(duplicated)} duplicate row(s) ({_names(duplicated)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown subscription(s) ({_names(unexpected)})")
    if missing:
        problems.append(f"{len(missing)} remaining subscription(s) missing ({_names(missing)})")
    if stats is not None:
        subs = stats.get("active_subscriptions")
        if subs is not None and subs != n_exp:
            mismatches["active_subscriptions"] = subs
            problems.append(f"active_subscriptions {subs} (expected {n_exp})")
        if expected_connections is not None:
            for key in ("active_connections", "websocket_sessions"):
                got = stats.get(key)
                if got is not None and got != expected_connections:
                    mismatches[key] = got
                    problems.append(f"{key} {got} (expected {expected_connections})")
    head = (f"{f'{opened} opened, {len(closed)} closed: ' if opened is not None else ''}system.live lists "
            f"{len(live_rows)} row(s) for {len(expected)} remaining"
            f"{f' after {grace_s:g} s' if grace_s is not None else ''}")
    details = {"zombies": zombies, "duplicated": duplicated, "unexpected": unexpected, "missing": missing,
               "listed": len(live_rows), "expected": len(expected), "stats_mismatches": mismatches,
               "stats": dict(stats) if stats is not None else None}
    value = len(zombies) + len(duplicated) + len(unexpected)
    if problems:
        return _verdict(id, title, FAIL, f"{head}: {'; '.join(problems)}", value, thr, details)
    return _verdict(id, title, PASS, f"{head}: no zombie", value, thr, details)


# ------------------------------------------------------------------------------------------------
# S6 / SC-058: query latency under stress
# ------------------------------------------------------------------------------------------------

def query_latency(latencies_ms: Sequence[float], *, threshold_ms: float = 500.0, quantile: float = 0.95,
                  failed: int = 0, min_count: int = 20, id: str = "S6",
                  title: str = "SELECT latency under stress") -> dict:
    """The ``quantile`` (nearest rank) of SELECT latencies < ``threshold_ms``.  Failed queries (timeouts,
    errors) count as slower than any answer, so they cannot make the figure look better."""
    q = f"p{quantile * 100:g}"
    thr = f"< {threshold_ms:g} ms"
    answered = [float(x) for x in latencies_ms]
    count = len(answered) + failed
    if count < min_count:
        return _verdict(id, title, INCONCLUSIVE, f"only {count} SELECTs (need {min_count})", None, thr,
                        {"count": count, "failed": failed})
    value = nearest_rank(answered + [math.inf] * failed, quantile)
    details = {"count": count, "failed": failed, "quantile": quantile,
               "max_ms": max(answered) if answered else None,
               "median_ms": statistics.median(answered) if answered else None}
    tail = f" over {count} SELECTs (threshold {thr}); {failed} failed"
    if math.isinf(value):
        return _verdict(id, title, FAIL, f"{q} is a failed query{tail}", None, thr, details)
    verdict = PASS if value < threshold_ms else FAIL
    return _verdict(id, title, verdict, f"{q} {value:.1f} ms{tail}", round(value, 3), thr, details)


# ------------------------------------------------------------------------------------------------
# S7: memory across periodic flushes
# ------------------------------------------------------------------------------------------------

def flush_buildup(times: Sequence[float], values: Sequence[float], flush_times: Sequence[float], *,
                  settle_s: float = 10.0, max_growth_pct: float = 10.0, min_flushes: int = 3,
                  k: float = 3.0, min_slope_mb_per_min: float = 0.5, release: Mapping | None = None,
                  id: str = "S7", title: str = "no memory build-up across flushes") -> dict:
    """Memory just after each flush must not build up.  For each flush at ``f``, the post-flush level is
    the lowest memory sample in ``(f, f + settle_s]`` (the flush frees memtables; the floor is what
    stays).  Fail when the last post-flush level is ``max_growth_pct`` above the first, or when the
    levels rise with a significant slope (``> k`` stderr and ``>= min_slope_mb_per_min``; plain OLS:
    a few points carry no autocorrelation to correct for)."""
    thr = f"< {max_growth_pct:g} % and no significant slope"
    points = []
    for f in sorted(flush_times):
        _, vs = window(times, values, f + 1e-9, f + settle_s)
        if vs:
            points.append((f, min(vs)))
    if len(points) < min_flushes:
        return _verdict(id, title, INCONCLUSIVE, f"only {len(points)} flush(es) with memory samples after "
                        f"them (need {min_flushes})", None, thr, {"points": points})
    first, last = points[0][1], points[-1][1]
    growth = (last - first) / first * 100.0
    fit = linear_fit([p[0] for p in points], [p[1] / MB for p in points], autocorrelation=False)
    slope = fit["slope"] * 60.0
    stderr = fit["stderr"] * 60.0
    rising = slope > k * stderr and slope >= min_slope_mb_per_min
    built_up = rising or growth >= max_growth_pct
    figure = (f"post-flush memory {_mb(first)} → {_mb(last)} over {len(points)} flushes ({_pct(growth)}, "
              f"threshold < {max_growth_pct:g} %); slope {slope:.2f} ± {stderr:.2f} MB/min: "
              f"{'build-up under load' if built_up else 'no build-up'}")
    details = {"points": points, "growth_pct": growth, "slope_mb_per_min": slope,
               "stderr_mb_per_min": stderr, "r2": fit["r2"]}
    took = (release or {}).get("details", {}).get("took_s")
    if built_up and release is not None:
        # the build-up was given back after the load (S5), or it was not: a leak
        back = release.get("verdict") == PASS and took is not None
        details["given_back_s"] = took if back else None
        kept = (release.get("details") or {}).get("last_pct")
        figure += (f", given back {took:.0f} s after it: not a leak" if back else
                   (f", not all given back after the load ({_pct(kept)} over baseline at the end): a leak"
                    if kept is not None else ", not given back after the load: a leak")
                   if release.get("verdict") == FAIL else "")
    verdict = FAIL if rising or growth >= max_growth_pct else PASS
    return _verdict(id, title, verdict, figure, round(growth, 3), thr, details)


# ------------------------------------------------------------------------------------------------
# S8: subscriptions stay healthy (no stall, changes counter tracks what arrives)
# ------------------------------------------------------------------------------------------------

def _stalls(points, due, stall_s, lag_s):
    """Maximal runs where ``received`` stays flat for ≥ stall_s while this subscription's own ``changes``
    counter grows, or changes it must receive were acknowledged (``due``: their sorted ack times; those
    acknowledged in the last ``lag_s`` of the run may still be in flight). A quiet subscription is not stalled."""
    found = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1][2] == points[i][2]:
            j += 1
        if j > i:
            t0, c0, r = points[i]
            t1, c1, _ = points[j]
            changes_during = (c1 - c0) if c0 is not None and c1 is not None else 0
            due_during = bisect.bisect_right(due, t1 - lag_s) - bisect.bisect_left(due, t0) if t1 - lag_s > t0 else 0
            if t1 - t0 >= stall_s and (changes_during > 0 or due_during > 0):
                found.append({"from": t0, "to": t1, "duration_s": t1 - t0, "received": r,
                              "changes_during": changes_during, "due_during": due_during})
        i = j + 1
    return found


def _drifts(points, abs_tolerance, lag_s, persist_s):
    """Runs where |changes − received| exceeds what in-flight messages explain (``abs_tolerance`` +
    recent change rate × ``lag_s``) for at least ``persist_s``."""
    found, run = [], None
    prev = None
    for t, c, r in points:
        if c is None:
            continue
        rate = 0.0
        if prev is not None and t > prev[0]:
            rate = max(0.0, (c - prev[1]) / (t - prev[0]))
        prev = (t, c)
        d = c - r
        if abs(d) > abs_tolerance + rate * lag_s:
            if run is None:
                run = {"from": t, "to": t, "max_drift": d, "final_drift": d}
            run["to"] = t
            run["final_drift"] = d
            if abs(d) > abs(run["max_drift"]):
                run["max_drift"] = d
        else:
            if run is not None and run["to"] - run["from"] >= persist_s:
                found.append(run)
            run = None
    if run is not None and run["to"] - run["from"] >= persist_s:
        found.append(run)
    for r in found:
        r["duration_s"] = r["to"] - r["from"]
    return found


def subscription_health(series_by_sub: Mapping[str, Sequence[tuple]] | None, *,
                        due: Mapping[str, Sequence[float]] | None = None, stall_s: float = 10.0,
                        drift_abs_tolerance: int = 0, drift_lag_s: float = 2.0, drift_persist_s: float = 10.0,
                        expected: int | None = None,
                        id: str = "S8", title: str = "subscriptions stay healthy") -> dict:
    """Per subscription, a series of ``(t, changes, received)``: the server's ``system.live.changes``
    (None when the row was absent) and the listener's received count, polled together.

    * stall: ``received`` stays flat for ``stall_s`` or longer while that subscription's ``changes``
      counter grows, or while changes it must receive are acknowledged (``due``: subscription → the
      sorted ack times of the writes its query matches, from the ledger); the window is reported. A
      subscription with nothing to receive (a filtered conversation without traffic) is quiet, not stalled;
    * drift: ``changes − received`` stays beyond what in flight explains (``drift_abs_tolerance`` +
      change rate × ``drift_lag_s``) for ``drift_persist_s`` or longer: the counter stopped tracking
      what the listener receives (or the listener gets what the counter does not count).

    Queue drops KalamDB does not count show as loss in the writers' ledger (the verifier's job), not
    here. ``expected``: how many subscriptions the run has; fewer watched (no series, e.g. a worker that
    never answered the polls) cannot pass: inconclusive, unless a watched one already fails."""
    thr = f"no stall ≥ {stall_s:g} s, no counter drift ≥ {drift_persist_s:g} s"
    usable = {sub: sorted(pts, key=lambda p: p[0]) for sub, pts in (series_by_sub or {}).items()
              if len(pts) >= 2}
    if not usable:
        return _verdict(id, title, INCONCLUSIVE, "no subscription series with 2+ polls", None, thr)
    due = due or {}
    stalls, drifts = [], []
    for sub, pts in sorted(usable.items()):
        for s in _stalls(pts, sorted(due.get(sub, ())), stall_s, drift_lag_s):
            stalls.append({"subscription": sub, **s})
        for d in _drifts(pts, drift_abs_tolerance, drift_lag_s, drift_persist_s):
            drifts.append({"subscription": sub, **d})
    parts = []
    if stalls:
        parts.append(f"{len(stalls)} stall(s): " + _names(
            [f"{s['subscription']} {s['duration_s']:.0f} s at {s['received']} received "
             f"(+{s['changes_during']} counted, {s['due_during']} due)" for s in stalls], 3))
    if drifts:
        parts.append(f"{len(drifts)} counter drift(s): " + _names(
            [f"{d['subscription']} changes−received {d['max_drift']:+,.0f} for {d['duration_s']:.0f} s"
             for d in drifts], 3))
    head = f"{len(usable)} subscriptions watched"
    details = {"stalls": stalls, "drifts": drifts, "subscriptions": len(usable), "expected": expected}
    if parts:
        return _verdict(id, title, FAIL, f"{head}: {'; '.join(parts)}", len(stalls) + len(drifts), thr, details)
    if expected is not None and len(usable) < expected:
        return _verdict(id, title, INCONCLUSIVE, f"only {len(usable)} of {expected} subscriptions watched "
                        f"(2+ polls): no stall among them", 0, thr, details)
    return _verdict(id, title, PASS, f"{head}: no stall, counters track received", 0, thr, details)


# ------------------------------------------------------------------------------------------------
# S9: storage-engine memory bound
# ------------------------------------------------------------------------------------------------

def _storage_memory(figures: Mapping, metric: str | None) -> float | None:
    if metric is not None:
        v = figures.get(metric)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    # Without a named metric: the sum of the memory figures (names with "mem" or "cache" and a byte
    # unit; capacities and on-disk sizes excluded).
    picked = [float(v) for k, v in figures.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and k.endswith("_bytes")
              and ("mem" in k or "cache" in k) and "capacity" not in k]
    return sum(picked) if picked else None


MEMTABLES = "rocksdb_memtables_size_bytes"   # KalamDB: every memtable (active + immutable), summed over column families
# the figures of KalamDB's storage engine reported beside S9's verdict (at their peak during the run)
ROCKSDB_FIGURES = ("rocksdb_memtables_size_bytes", "rocksdb_active_memtable_size_bytes",
                   "rocksdb_estimate_live_data_size_bytes", "rocksdb_total_sst_files_size_bytes",
                   "rocksdb_pending_compaction_bytes")


def memtable_budget(options_text: str) -> dict | None:
    """The most memory RocksDB lets its memtables hold, from its OPTIONS file (the server's own settings):
    per column family at most ``max_write_buffer_number`` memtables, each switched once it reaches
    ``write_buffer_size`` (it may pass it by one arena block, an eighth of it). None when the file names
    no column family with both settings."""
    per_cf, cf = {}, None
    for line in options_text.splitlines():
        line = line.strip()
        if line.startswith("[CFOptions "):
            cf = line[len("[CFOptions "):].strip(']" ')
            per_cf[cf] = {}
        elif line.startswith("["):
            cf = None
        elif cf is not None and "=" in line:
            key, _, value = line.partition("=")
            if key in ("write_buffer_size", "max_write_buffer_number"):
                try:
                    per_cf[cf][key] = int(value)
                except ValueError:
                    pass
    usable = {name: v for name, v in per_cf.items() if len(v) == 2}
    if not usable:
        return None
    total = sum(v["max_write_buffer_number"] * v["write_buffer_size"] * 9 // 8 for v in usable.values())
    return {"bytes": total, "column_families": len(usable)}


def storage_growth(times: Sequence[float], storage: Sequence[Mapping], *, load_start: float, load_end: float,
                   warmup_s: float = 0.0, metric: str = MEMTABLES, process_gone: bool = False,
                   min_samples: int = 10, min_slope_mb_per_min: float = 0.5, id: str = "S9",
                   title: str = "storage-engine memory within bounds") -> dict:
    """S9 without a budget: the storage engine's memtables (``metric``) must not keep growing under
    load. Bounded memtables are flushed when full, so over the steady part they stay flat or level off;
    a significant slope that does not level off (:func:`leak_estimate`) fails."""
    thr = f"memtables flat or levelling off (slope < {min_slope_mb_per_min:g} MB/min)"
    if process_gone:
        return _verdict(id, title, FAIL, "server process gone during the run (out of memory?)", None, thr)
    ts, vs = window(times, [_storage_memory(f or {}, metric) for f in storage], load_start + warmup_s, load_end)
    if len(vs) < min_samples:
        return _verdict(id, title, INCONCLUSIVE, f"only {len(vs)} samples of {metric} in the steady part of "
                        f"the load (need {min_samples})", None, thr, {"metric": metric})
    growth = leak_estimate(ts, vs, min_slope_mb_per_min=min_slope_mb_per_min, min_points=min_samples)
    peak = max(vs)
    details = {"metric": metric, "peak_bytes": peak, "samples": len(vs), "growth": growth}
    figure = f"{metric}: peak {_mb(peak)}, first {_mb(vs[0])}, last {_mb(vs[-1])} over {len(vs)} samples; "
    if growth["leak"] is None:
        return _verdict(id, title, INCONCLUSIVE, figure + f"growth not judged ({growth['reason']})", peak, thr, details)
    figure += (f"slope {growth['slope_mb_per_min']:.2f} ± {growth['stderr_mb_per_min']:.2f} MB/min: "
               + ("kept growing under load" if growth["leak"] else "bounded"))
    return _verdict(id, title, FAIL if growth["leak"] else PASS, figure, peak, thr, details)


def storage_bound(times: Sequence[float], storage: Sequence[Mapping], *, bound_bytes: float | None = None,
                  metric: str | None = None, process_gone: bool = False, min_samples: int = 3,
                  bound_from: str = "", id: str = "S9", title: str = "storage-engine memory within bounds") -> dict:
    """Storage-engine memory (``storage``: one dict of ``system.stats`` storage figures per sample time)
    stays ≤ ``bound_bytes`` (the server's configured budget; ``bound_from`` says where it comes from) and
    the server did not die (an OOM kill shows as ``process_gone``).  ``metric`` names the figure; by
    default the sum of the memory-like figures.  No bound configured → skipped (the peak is still reported)."""
    thr = f"≤ {_mb(bound_bytes)}" if bound_bytes is not None else None
    if process_gone:
        return _verdict(id, title, FAIL, "server process gone during the run (out of memory?)", None, thr)
    pts = [(t, m) for t, f in zip(times, storage) if (m := _storage_memory(f or {}, metric)) is not None]
    if len(pts) < min_samples:
        return _verdict(id, title, INCONCLUSIVE, f"only {len(pts)} samples with storage-engine memory "
                        f"figures in system.stats (need {min_samples})", None, thr)
    t_peak, peak = max(pts, key=lambda p: p[1])
    details = {"peak_bytes": peak, "peak_t": t_peak, "samples": len(pts), "metric": metric or "sum",
               "bound_from": bound_from or None}
    if bound_bytes is None:
        return _verdict(id, title, SKIPPED, f"no bound configured (peak {_mb(peak)})", peak, thr, details)
    verdict = PASS if peak <= bound_bytes else FAIL
    figure = f"peak {_mb(peak)} over {len(pts)} samples (bound {_mb(bound_bytes)}"
    figure = (f"{metric}: " if metric else "") + figure + (f", {bound_from})" if bound_from else ")")
    return _verdict(id, title, verdict, figure, peak, thr, details)


# ------------------------------------------------------------------------------------------------
# SC-057: WebSocket uptime
# ------------------------------------------------------------------------------------------------

def ws_uptime(disconnects: Sequence[Mapping], *, listener_seconds: float, notifications: int,
              min_notifications: int = 100_000, min_uptime: float = 0.999, id: str = "SC-057",
              title: str = "WebSocket uptime") -> dict:
    """Uptime share = 1 − (unexpected downtime) / ``listener_seconds`` (the listener-seconds the sockets
    were meant to be open), ≥ ``min_uptime``, judged over at least ``min_notifications``.

    ``disconnects``: dicts with ``code`` (close code, None = no close frame), ``down_s`` (seconds until
    the listener was back, or until the end), ``expected`` (True for our own closes and forced
    reconnects), optionally ``t`` and ``listener``.  Unexpected ones are counted by close code."""
    thr = f"≥ {min_uptime * 100:g} % over ≥ {min_notifications:,} notifications"
    if listener_seconds <= 0:
        return _verdict(id, title, INCONCLUSIVE, "no listener time recorded", None, thr)
    unexpected = [d for d in disconnects if not d.get("expected")]
    by_code = Counter("none" if d.get("code") is None else str(d.get("code")) for d in unexpected)
    downtime = math.fsum(float(d.get("down_s") or 0.0) for d in unexpected)
    uptime = max(0.0, 1.0 - downtime / listener_seconds)
    codes = ", ".join(f"{c}×{n}" for c, n in sorted(by_code.items()))
    figure = (f"uptime {uptime * 100:.3f} % (threshold ≥ {min_uptime * 100:g} %) over {notifications:,} "
              f"notifications; {len(unexpected)} unexpected disconnect(s){f' ({codes})' if codes else ''}")
    details = {"unexpected": len(unexpected), "by_code": dict(by_code), "downtime_s": downtime,
               "listener_seconds": listener_seconds, "notifications": notifications}
    if uptime < min_uptime:
        return _verdict(id, title, FAIL, figure, round(uptime, 6), thr, details)
    if notifications < min_notifications:
        return _verdict(id, title, INCONCLUSIVE, figure + f": fewer than {min_notifications:,} notifications",
                        round(uptime, 6), thr, details)
    return _verdict(id, title, PASS, figure, round(uptime, 6), thr, details)


# ------------------------------------------------------------------------------------------------
# S10 / SC-060: graceful degradation under a step load
# ------------------------------------------------------------------------------------------------

RATE_LIMIT_KINDS = frozenset({"429", "RATE_LIMIT_EXCEEDED", "rate_limited", "IP_BANNED"})


def _max_at_once(disconnects: Sequence[tuple[float, str]], window_s: float) -> tuple[int, float | None]:
    """Most distinct listeners with an unexpected disconnect inside any ``window_s`` window."""
    events = sorted(disconnects)
    best, best_t = 0, None
    lo = 0
    for hi in range(len(events)):
        while events[hi][0] - events[lo][0] > window_s:
            lo += 1
        distinct = len({who for _, who in events[lo:hi + 1]})
        if distinct > best:
            best, best_t = distinct, events[lo][0]
    return best, best_t


def _past_capacity(capacity: Mapping | None) -> tuple:
    """(start, why not): the start (epoch s) of the step that broke past the server's capacity and None; or
    None and why the load never went past it (the reason S10 is skipped)."""
    if capacity is None:
        return None, "load never exceeded capacity: a steady load (S10 is judged on a stepped load, --step-load)"
    steps = capacity.get("steps") or []
    if capacity.get("first_broken") is None:
        top = max((x["acked_writes_per_s"] for x in steps), default=0)
        return None, (f"load never exceeded capacity: every step held, up to {top:,.0f} writes/s acknowledged "
                      f"(raise --step-max)")
    broken = steps[capacity["first_broken"]]
    if capacity.get("limited_by") == "generator":
        return None, (f"load never exceeded the server's capacity: the load generator saturated first, at "
                      f"{broken['offered_writes_per_s']:,.0f} writes/s offered (more generator processes: "
                      f"--processes N)")
    return broken["start"], None


def degradation(*, requests: int, errors: Mapping[str, int] | None = None, slow: int = 0,
                slow_ms: float | None = None, server_crashed: bool = False, health_ok_after: bool | None = None,
                disconnects: Sequence[tuple[float, str]] = (), listeners: int = 0,
                mass_share: float = 0.25, mass_window_s: float = 5.0, lost_acked: int | None = None,
                max_unanswered_share: float = 0.01, steps: Sequence[Mapping] | None = None,
                crashed_at: float | None = None, load_start: float | None = None,
                capacity: Mapping | None = None,
                id: str = "S10", title: str = "graceful degradation past capacity") -> dict:
    """Under a load stepped past capacity the server may slow down and answer 429, but:

    * judged only where the load went past the server's capacity (``capacity``: checks.capacity's, of a
      stepped load): a steady load, a stepped load whose every step held, or one whose generator saturated
      before the server are ``skipped`` ("load never exceeded capacity"), unless the server crashed (a
      crash fails S10 whatever the load); past capacity, disconnects count from the first step that broke;

    * it keeps answering: errors other than rate limiting (``errors`` by kind: "429" and KalamDB's
      rate-limit codes are graceful; "500", "timeout", "connect", ... are not) stay ≤
      ``max_unanswered_share`` of ``requests``; slow answers are counted, not failed;
    * it does not crash: ``server_crashed`` (process gone) false, ``health_ok_after`` not False;
    * no mass disconnect: at most ``mass_share`` of the ``listeners`` disconnected unexpectedly within
      any ``mass_window_s`` (``disconnects``: ``(t, listener)`` of unexpected disconnects);
    * no acknowledged write lost (``lost_acked`` from the live-query verifier; None = unknown →
      inconclusive unless something else already fails)."""
    thr = (f"no crash, non-429 errors ≤ {max_unanswered_share * 100:g} %, < {mass_share * 100:g} % of "
           f"listeners disconnected within {mass_window_s:g} s, 0 acknowledged writes lost")
    crashed = server_crashed or health_ok_after is False
    past, not_past = _past_capacity(capacity)
    if not crashed and not_past:
        return _verdict(id, title, SKIPPED, not_past, None, thr, {"capacity_knee": (capacity or {}).get("knee"),
                                                                  "limited_by": (capacity or {}).get("limited_by")})
    if past is not None:
        disconnects = [d for d in disconnects if d[0] >= past]
    errors = dict(errors or {})
    rate_limited = sum(n for kind, n in errors.items() if kind in RATE_LIMIT_KINDS)
    unanswered = sum(n for kind, n in errors.items() if kind not in RATE_LIMIT_KINDS)
    share = unanswered / requests if requests else 0.0
    at_once, at_t = _max_at_once(list(disconnects), mass_window_s)
    details = {"requests": requests, "errors": errors, "rate_limited": rate_limited, "unanswered": unanswered,
               "unanswered_share": share, "slow": slow, "slow_ms": slow_ms, "crashed": crashed,
               "server_crashed": server_crashed, "health_ok_after": health_ok_after,
               "max_disconnected_at_once": at_once, "mass_disconnect_at": at_t, "listeners": listeners,
               "lost_acked": lost_acked, "steps": list(steps or []),
               "past_capacity_from": past}
    if requests <= 0 and not crashed:
        return _verdict(id, title, INCONCLUSIVE, "no request was made", None, thr, details)
    when = ""
    if crashed and crashed_at is not None:
        when = (f" at {crashed_at - load_start:.1f} s into the load" if load_start is not None
                else f" at t={crashed_at:.3f}")
    details["crashed_at"] = crashed_at if crashed else None
    parts = [f"server crashed{when}" if crashed else "no crash",
             f"{requests:,} requests: {rate_limited:,} rate-limited, {unanswered:,} other errors "
             f"({share * 100:.2f} %), {slow:,} slow",
             f"max {at_once}/{listeners} listeners disconnected within {mass_window_s:g} s",
             "acknowledged writes lost: unknown" if lost_acked is None
             else f"{lost_acked:,} acknowledged writes lost"]
    figure = "; ".join(parts)
    mass = listeners > 0 and at_once / listeners >= mass_share
    failed = crashed or share > max_unanswered_share or mass or (lost_acked or 0) > 0
    failures = [name for name, bad in (("crash", crashed), ("unanswered", share > max_unanswered_share),
                                        ("mass_disconnect", mass), ("lost_acked", (lost_acked or 0) > 0)) if bad]
    details["failures"] = failures
    if failed:
        return _verdict(id, title, FAIL, figure, len(failures), thr, details)
    if lost_acked is None:
        return _verdict(id, title, INCONCLUSIVE, figure, 0, thr, details)
    return _verdict(id, title, PASS, figure, 0, thr, details)


# ------------------------------------------------------------------------------------------------
# The load generator itself
# ------------------------------------------------------------------------------------------------

def generator_saturation(times: Sequence[float], cpu_percent: Sequence[float], *, start: float | None = None,
                         end: float | None = None, threshold_pct: float = 90.0, max_share: float = 0.05,
                         min_samples: int = 3, id: str = "GEN",
                         title: str = "load generator not saturated") -> dict:
    """A gevent load generator runs on one core; above ``threshold_pct`` of it the latencies it measures
    are its own queueing.  More than ``max_share`` of the samples over the threshold → inconclusive with
    ``details["warning"]`` (the generator's sockets back up: arrivals are stamped by the kernel, but the
    server then waits on full socket buffers, so latencies include the generator's backlog); else pass."""
    thr = f"≤ {max_share * 100:g} % of samples above {threshold_pct:g} % of a core"
    _, vs = window(times, cpu_percent, start, end)
    if len(vs) < min_samples:
        return _verdict(id, title, INCONCLUSIVE, f"only {len(vs)} generator CPU samples", None, thr)
    over = sum(1 for v in vs if v > threshold_pct)
    share = over / len(vs)
    figure = (f"generator CPU avg {statistics.fmean(vs):.1f} %, max {max(vs):.1f} % of a core; "
              f"{over}/{len(vs)} samples above {threshold_pct:g} %")
    details = {"avg_percent": statistics.fmean(vs), "max_percent": max(vs), "over": over, "samples": len(vs)}
    if share > max_share:
        details["warning"] = "load generator saturated: its sockets back up, so latency figures include its own backlog"
        return _verdict(id, title, INCONCLUSIVE, figure + ": saturated, latencies unreliable",
                        round(share, 4), thr, details)
    return _verdict(id, title, PASS, figure, round(share, 4), thr, details)
