"""checks.stress: every verdict on synthetic series (no server).  Deterministic series assert the
exact verdict and figure; noisy ones use a seeded generator and assert the verdict and the decision."""
from __future__ import annotations

import json
import math
import random

import pytest

from checks.stress import (MB, Sample, cpu_under_load, degradation, flush_buildup, generator_saturation,
                           leak_estimate, linear_fit, max_gap, memory_growth, memory_release, nearest_rank,
                           memtable_budget, query_latency, series, storage_bound, storage_growth,
                           subscription_health, subscription_leaks, ws_uptime)

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0  # load_start of every synthetic run
LOAD_END = T0 + 300.0  # a 5-minute load, sampled every 2 s


def ticks(start=T0, end=LOAD_END, step=2.0):
    n = int(round((end - start) / step))
    return [start + i * step for i in range(n + 1)]


def run_of(fn, start=T0, end=LOAD_END):
    times = ticks(start, end)
    return times, [fn(t) for t in times]


def growth(times, values, **kw):
    kw.setdefault("load_start", T0)
    kw.setdefault("load_end", LOAD_END)
    return memory_growth(times, values, **kw)


# ---------------------------------------------------------------------------------- helpers

def test_series_skips_gaps_and_reads_nested_figures():
    samples = [Sample(t=1.0, server_rss_bytes=10, storage={"rocksdb_x_bytes": 5}),
               Sample(t=2.0, source="gap", error="ConnectError: refused"),
               Sample(t=3.0, server_rss_bytes=30, stats={"active_subscriptions": 4})]
    assert series(samples, "server_rss_bytes") == ([1.0, 3.0], [10, 30])
    assert series(samples, "storage.rocksdb_x_bytes") == ([1.0], [5])
    assert series(samples, "stats.active_subscriptions", start=2.5) == ([3.0], [4])
    assert samples[0].to_dict()["storage"] == {"rocksdb_x_bytes": 5}


def test_max_gap_and_nearest_rank():
    assert max_gap([2.0, 4.0, 10.0], 0.0, 12.0) == 6.0
    assert max_gap([], 0.0, 5.0) == 5.0
    assert nearest_rank(list(range(1, 101)), 0.95) == 95
    assert nearest_rank([3.0], 0.95) == 3.0


def test_linear_fit_reports_slope_r2_and_stderr():
    fit = linear_fit([0, 1, 2, 3, 4], [1, 3, 5, 7, 9])
    assert fit["slope"] == pytest.approx(2.0) and fit["r2"] == pytest.approx(1.0)
    assert fit["stderr"] == pytest.approx(0.0, abs=1e-12) and fit["n"] == 5
    assert linear_fit([0, 1], [0, 1]) is None


# ---------------------------------------------------------------------------------- S1 / leak

def test_flat_memory_passes():
    times, values = run_of(lambda t: 200 * MB)
    v = growth(times, values)
    assert v["verdict"] == "pass"
    assert v["figure"] == ("growth under load: peak +0.0 % over baseline 200.0 MB (end +0.0 %; threshold < 10 %); "
                           "slope 0.00 ± 0.00 MB/min (R² 1.00, n 136): no leak")
    assert v["value"] == 0.0 and v["threshold"] == "< 10 %" and v["id"] == "S1"
    assert v["details"]["baseline_bytes"] == 200 * MB and v["details"]["leak"]["leak"] is False


def test_linear_leak_is_caught_while_growth_is_under_ten_percent():
    times, values = run_of(lambda t: 200 * MB + (t - T0) / 60 * MB)  # 1 MB/min: +2 % in 5 min
    v = growth(times, values)
    assert v["verdict"] == "fail"
    assert v["figure"] == ("growth under load: peak +2.1 % over baseline 200.8 MB (end +2.0 %; threshold < 10 %); "
                           "slope 1.00 ± 0.00 MB/min (R² 1.00, n 136): leak")
    assert v["value"] == pytest.approx(2.084, abs=1e-3)
    # the spec's criterion alone (growth < 10 %) would pass it:
    assert growth(times, values, fail_on_leak=False)["verdict"] == "pass"


def test_memory_given_back_after_the_load_is_growth_not_a_leak():
    times, values = run_of(lambda t: 200 * MB + (t - T0) / 60 * MB)  # 1 MB/min under load
    back = {"verdict": "pass", "details": {"took_s": 13.0}}
    v = growth(times, values, release=back)
    assert v["verdict"] == "pass" and v["details"]["leak"]["leak"] is False
    assert v["figure"] == ("growth under load: peak +2.1 % over baseline 200.8 MB (end +2.0 %; threshold < 10 %); "
                           "slope 1.00 ± 0.00 MB/min (R² 1.00, n 136): given back 13 s after the load: no leak")
    kept = {"verdict": "fail", "details": {}}
    v = growth(times, values, release=kept)
    assert v["verdict"] == "fail" and v["details"]["leak"]["leak"] is True
    assert v["figure"].endswith("(R² 1.00, n 136): not given back after the load: leak")
    v = growth(times, values, release={"verdict": "fail", "details": {"last_pct": 18.7}})
    assert v["figure"].endswith("(R² 1.00, n 136): not all given back after the load (+18.7 % over baseline at "
                                "the end): leak")
    # growth over the threshold fails as growth, whether or not it was given back
    times, values = run_of(lambda t: 200 * MB + (t - T0) / 60 * 10 * MB)
    v = growth(times, values, release=back)
    assert v["verdict"] == "fail" and v["details"]["leak"]["leak"] is False and v["value"] > 10
    assert v["figure"].endswith(": given back 13 s after the load: no leak")


def test_slow_noisy_leak_is_caught():
    rng = random.Random(7)
    times, values = run_of(lambda t: 200 * MB + (t - T0) / 60 * 0.8 * MB + rng.gauss(0, 1 * MB))
    v = growth(times, values)
    leak = v["details"]["leak"]
    assert v["verdict"] == "fail" and leak["leak"] is True
    assert v["value"] < 10
    assert 0.6 < leak["slope_mb_per_min"] < 1.0 and leak["slope_mb_per_min"] > 3 * leak["stderr_mb_per_min"]


def test_a_step_is_not_a_leak():
    times, values = run_of(lambda t: 200 * MB + (10 * MB if t >= T0 + 150 else 0))
    v = growth(times, values)
    assert v["verdict"] == "pass"
    assert v["figure"] == ("growth under load: peak +5.0 % over baseline 200.0 MB (end +5.0 %; threshold < 10 %); "
                           "slope 0.00 ± 0.00 MB/min (R² 1.00, n 76) after a step of +10.0 MB: no leak")
    step = v["details"]["leak"]["step"]
    assert step["t"] == T0 + 150 and step["height_mb"] == pytest.approx(10.0)


def test_a_noisy_step_is_not_a_leak_but_a_step_then_growth_is():
    rng = random.Random(3)
    times, values = run_of(lambda t: 200 * MB + (8 * MB if t >= T0 + 120 else 0) + rng.gauss(0, 1 * MB))
    est = leak_estimate(*_steady(times, values))
    assert est["leak"] is False and est["step"]["height_mb"] == pytest.approx(8.0, abs=0.5)
    times, values = run_of(lambda t: 200 * MB + (8 * MB if t >= T0 + 120 else 0) + (t - T0) / 60 * 1.5 * MB
                           + rng.gauss(0, 1 * MB))
    est = leak_estimate(*_steady(times, values))
    assert est["leak"] is True and est["reason"].startswith("after the step")


def _steady(times, values):
    return [t for t in times if t >= T0 + 30], [v for t, v in zip(times, values) if t >= T0 + 30]


def test_memory_that_levels_off_is_not_a_leak():
    rng = random.Random(5)
    times, values = run_of(lambda t: 200 * MB + 15 * MB * (1 - math.exp(-(t - T0) / 50)) + rng.gauss(0, 0.3 * MB))
    est = leak_estimate(*_steady(times, values))
    assert est["leak"] is False and ("levelled off" in est["reason"] or "flat after it" in est["reason"])


def test_noisy_flat_memory_passes():
    rng = random.Random(11)
    times, values = run_of(lambda t: 200 * MB + rng.gauss(0, 2 * MB))
    v = growth(times, values)
    assert v["verdict"] == "pass" and v["details"]["leak"]["leak"] is False
    assert abs(v["value"]) < 5


def test_growth_over_ten_percent_fails():
    times, values = run_of(lambda t: 200 * MB + (30 * MB if t >= T0 + 200 else 0))
    v = growth(times, values, id="SC-056", min_duration_s=300)
    assert v["verdict"] == "fail" and v["id"] == "SC-056"
    assert v["figure"].startswith("growth under load: peak +15.0 % over baseline 200.0 MB (end +15.0 %; threshold < 10 %)")


def test_memory_growth_inconclusive_cases():
    times, values = run_of(lambda t: 200 * MB)
    late = [(t, v) for t, v in zip(times, values) if t > T0 + 100]
    v = growth([t for t, _ in late], [v for _, v in late])
    assert v["verdict"] == "inconclusive"
    assert v["figure"] == "no baseline: fewer than 3 memory samples in the 30 s after a 30 s warm-up"
    holey = [(t, v) for t, v in zip(times, values) if not T0 + 100 < t < T0 + 200]
    v = growth([t for t, _ in holey], [v for _, v in holey])
    assert v["verdict"] == "inconclusive" and v["figure"] == "monitor lost the server for 100 s (> 60 s)"
    v = growth(times, values, load_end=T0 + 200, min_duration_s=300)
    assert v["verdict"] == "inconclusive" and v["figure"] == "load ran 200 s (need 300 s)"
    few = ticks(T0 + 30, T0 + 40)
    v = growth(few, [200 * MB] * len(few))
    assert v["verdict"] == "inconclusive" and v["figure"] == "only 6 memory samples in the steady part (need 10)"


# ---------------------------------------------------------------------------------- S5 release

def _after(fn, watch_s):
    times = ticks(LOAD_END, LOAD_END + watch_s)
    return times, [fn(t - LOAD_END) for t in times]


def test_release_within_sixty_seconds_passes():
    times, values = _after(lambda dt: 230 * MB if dt < 20 else 204 * MB, 120)
    v = memory_release(times, values, baseline=200 * MB, load_end=LOAD_END)
    assert v["verdict"] == "pass" and v["value"] == 20.0
    assert v["figure"] == "back within 5 % of baseline 200.0 MB after 20 s (≤ 60 s)"


def test_release_after_the_deadline_fails_with_the_time_it_took():
    times, values = _after(lambda dt: 230 * MB if dt < 80 else 204 * MB, 120)
    v = memory_release(times, values, baseline=200 * MB, load_end=LOAD_END)
    assert v["verdict"] == "fail" and v["value"] == 80.0
    assert v["figure"] == "back within 5 % of baseline 200.0 MB after 80 s (> 60 s)"


def test_a_late_release_after_a_monitor_hole_is_inconclusive():
    times, values = _after(lambda dt: 230 * MB if dt < 80 else 204 * MB, 120)
    holey = [(t, v) for t, v in zip(times, values) if not LOAD_END + 10 < t < LOAD_END + 80]
    v = memory_release([t for t, _ in holey], [v for _, v in holey], baseline=200 * MB, load_end=LOAD_END)
    assert v["verdict"] == "inconclusive"
    assert v["figure"] == "back within 5 % after 80 s, but the monitor lost the server for 70 s before that"


def test_a_dip_that_rebounds_is_not_a_release():
    times, values = _after(lambda dt: 204 * MB if dt < 10 or dt >= 42 else 230 * MB, 120)
    v = memory_release(times, values, baseline=200 * MB, load_end=LOAD_END)
    assert v["verdict"] == "pass" and v["value"] == 42.0


def test_memory_never_released_fails():
    times, values = _after(lambda dt: 230 * MB, 90)
    v = memory_release(times, values, baseline=200 * MB, load_end=LOAD_END)
    assert v["verdict"] == "fail" and v["value"] is None
    assert v["figure"] == "not back within 5 % of baseline 200.0 MB in 90 s watched; last +15.0 %"


def test_release_inconclusive_when_not_watched_long_enough_or_no_baseline():
    times, values = _after(lambda dt: 230 * MB, 30)
    v = memory_release(times, values, baseline=200 * MB, load_end=LOAD_END)
    assert v["verdict"] == "inconclusive"
    assert v["figure"] == "watched only 30 s after the load; still +15.0 % over baseline 200.0 MB"
    assert memory_release(times, values, baseline=None, load_end=LOAD_END)["figure"] == "no baseline"
    v = memory_release([T0], [200 * MB], baseline=200 * MB, load_end=LOAD_END)
    assert v["verdict"] == "inconclusive" and v["figure"] == "no memory sample after the load ended"


# ---------------------------------------------------------------------------------- S3 CPU

def _cpu(value, **kw):
    times = ticks(T0, T0 + 60)
    kw.setdefault("achieved_rate", 1010)
    kw.setdefault("queries_ok", 58)
    return cpu_under_load(times, [value] * len(times), start=T0, end=T0 + 60, **kw)


def test_cpu_under_threshold_at_target_rate_passes():
    v = _cpu(50.0)
    assert v["verdict"] == "pass" and v["value"] == 50.0
    assert v["figure"] == ("CPU avg 50.0 % (peak 50.0 %; threshold < 80 %) at 1010 writes/s (target 1000); "
                           "queries answered 58/58")


def test_cpu_over_threshold_fails_even_per_core():
    assert _cpu(90.0)["verdict"] == "fail"
    v = _cpu(360.0, cores=4)
    assert v["verdict"] == "fail"
    assert v["figure"] == ("CPU avg 90.0 % (peak 90.0 %; threshold < 80 %, of 4 cores) at 1010 writes/s "
                           "(target 1000); queries answered 58/58")


def test_cpu_needs_the_target_rate_and_answered_queries():
    v = _cpu(50.0, achieved_rate=600)
    assert v["verdict"] == "inconclusive"
    assert v["figure"] == ("CPU avg 50.0 % (peak 50.0 %; threshold < 80 %) at 600 writes/s (target 1000); "
                           "queries answered 58/58: target rate or queries not reached")
    assert _cpu(50.0, queries_ok=None)["verdict"] == "inconclusive"
    v = _cpu(50.0, queries_ok=0, queries_failed=12)
    assert v["verdict"] == "fail" and v["figure"].endswith("queries answered 0/12")
    v = cpu_under_load([T0], [10.0], start=T0, end=T0 + 60)
    assert v["verdict"] == "inconclusive" and v["figure"] == "only 1 CPU samples in the writing window (need 3)"


# ---------------------------------------------------------------------------------- S4 zombies

def _live(ids):
    return [{"subscription_id": s, "live_id": f"u1-c0-{s}", "connection_id": "c0"} for s in ids]


REMAINING = [f"s{i}" for i in range(26, 51)]
CLOSED = [f"s{i}" for i in range(1, 26)]


def test_no_zombie_passes():
    v = subscription_leaks(_live(REMAINING), expected_ids=REMAINING, closed_ids=CLOSED,
                           stats={"active_subscriptions": 25}, opened=50, grace_s=5)
    assert v["verdict"] == "pass" and v["value"] == 0
    assert v["figure"] == "50 opened, 25 closed: system.live lists 25 row(s) for 25 remaining after 5 s: no zombie"


def test_zombies_are_named():
    v = subscription_leaks(_live(REMAINING + ["s3", "s7"]), expected_ids=REMAINING, closed_ids=CLOSED,
                           stats={"active_subscriptions": 27, "active_connections": 2}, expected_connections=1,
                           opened=50, grace_s=5)
    assert v["verdict"] == "fail" and v["value"] == 2
    assert v["figure"] == ("50 opened, 25 closed: system.live lists 27 row(s) for 25 remaining after 5 s: "
                           "2 zombie(s) of closed subscriptions (u1-c0-s3, u1-c0-s7); "
                           "active_subscriptions 27 (expected 25); active_connections 2 (expected 1)")
    assert v["details"]["zombies"] == ["u1-c0-s3", "u1-c0-s7"]


def test_missing_and_count_only_leaks_fail_and_unread_live_is_inconclusive():
    v = subscription_leaks(_live(REMAINING[1:]), expected_ids=REMAINING, closed_ids=CLOSED,
                           stats={"active_subscriptions": 30})
    assert v["verdict"] == "fail"
    assert v["figure"] == ("system.live lists 24 row(s) for 25 remaining: 1 remaining subscription(s) missing "
                           "(s26); active_subscriptions 30 (expected 25)")
    v = subscription_leaks(None, expected_ids=REMAINING)
    assert v["verdict"] == "inconclusive" and v["figure"] == "system.live could not be read"


# ---------------------------------------------------------------------------------- S6 latency

def test_p95_under_and_over_500_ms():
    v = query_latency([10.0] * 95 + [600.0] * 5)
    assert v["verdict"] == "pass" and v["value"] == 10.0
    assert v["figure"] == "p95 10.0 ms over 100 SELECTs (threshold < 500 ms); 0 failed"
    v = query_latency([10.0] * 94 + [600.0] * 6, id="SC-058")
    assert v["verdict"] == "fail" and v["value"] == 600.0 and v["id"] == "SC-058"
    assert v["figure"] == "p95 600.0 ms over 100 SELECTs (threshold < 500 ms); 0 failed"
    assert query_latency([10.0] * 99 + [500.0])["verdict"] == "pass"
    assert query_latency([500.0] * 100)["verdict"] == "fail"  # p95 < 500 is strict


def test_failed_queries_count_as_slow_and_few_queries_are_inconclusive():
    assert query_latency([10.0] * 95, failed=5)["verdict"] == "pass"
    v = query_latency([10.0] * 94, failed=6)
    assert v["verdict"] == "fail" and v["value"] is None
    assert v["figure"] == "p95 is a failed query over 100 SELECTs (threshold < 500 ms); 6 failed"
    v = query_latency([10.0] * 5)
    assert v["verdict"] == "inconclusive" and v["figure"] == "only 5 SELECTs (need 20)"


# ---------------------------------------------------------------------------------- S7 flush

FLUSHES = [T0 + 60 * k for k in range(1, 6)]


def _sawtooth(floor_of):
    """Memory grows 0.5 MB per 2 s between flushes; 2 s after each flush it is back at the floor."""
    def value(t):
        past = [f for f in FLUSHES if f < t]
        if not past:
            return 200 * MB + (t - T0) * 0.25 * MB
        f = past[-1]
        return floor_of(FLUSHES.index(f)) + max(0.0, t - f - 2) * 0.25 * MB
    return run_of(value, T0, T0 + 330)


def test_flush_without_build_up_passes():
    times, values = _sawtooth(lambda k: 200 * MB)
    v = flush_buildup(times, values, FLUSHES)
    assert v["verdict"] == "pass" and v["value"] == 0.0
    assert v["figure"] == ("post-flush memory 200.0 MB → 200.0 MB over 5 flushes (+0.0 %, threshold < 10 %); "
                           "slope 0.00 ± 0.00 MB/min: no build-up")


def test_flush_build_up_fails_even_under_ten_percent():
    times, values = _sawtooth(lambda k: (200 + 4 * k) * MB)
    v = flush_buildup(times, values, FLUSHES)
    assert v["verdict"] == "fail" and v["value"] == 8.0
    assert v["figure"] == ("post-flush memory 200.0 MB → 216.0 MB over 5 flushes (+8.0 %, threshold < 10 %); "
                           "slope 4.00 ± 0.00 MB/min: build-up under load")


def test_flush_build_up_says_whether_it_was_given_back():
    times, values = _sawtooth(lambda k: (200 + 4 * k) * MB)
    v = flush_buildup(times, values, FLUSHES, release={"verdict": "pass", "details": {"took_s": 13.0}})
    assert v["verdict"] == "fail" and v["details"]["given_back_s"] == 13.0
    assert v["figure"].endswith("slope 4.00 ± 0.00 MB/min: build-up under load, given back 13 s after it: not a leak")
    v = flush_buildup(times, values, FLUSHES, release={"verdict": "fail", "details": {}})
    assert v["figure"].endswith(": build-up under load, not given back after the load: a leak")
    v = flush_buildup(*_sawtooth(lambda k: 200 * MB), FLUSHES, release={"verdict": "fail", "details": {}})
    assert v["figure"].endswith(": no build-up")


def test_flush_too_few_is_inconclusive():
    times, values = _sawtooth(lambda k: 200 * MB)
    v = flush_buildup(times, values, FLUSHES[:2])
    assert v["verdict"] == "inconclusive"
    assert v["figure"] == "only 2 flush(es) with memory samples after them (need 3)"


# ---------------------------------------------------------------------------------- S8 health

def test_healthy_subscriptions_pass():
    # 10 changes/s for 60 s, the listener 5 behind (in flight), then idle and equal
    pts = [(t, min(10 * t, 600), min(10 * t, 600) - (5 if 0 < t <= 60 else 0)) for t in range(0, 82, 2)]
    v = subscription_health({"a": pts}, due={"a": [i / 10 for i in range(600)]})
    assert v["verdict"] == "pass" and v["value"] == 0
    assert v["figure"] == "1 subscriptions watched: no stall, counters track received"


def test_stall_is_detected_with_its_window():
    pts = [(t, 10 * t, 200 if 20 <= t <= 40 else 10 * t) for t in range(0, 62, 2)]
    v = subscription_health({"a": pts})
    assert v["verdict"] == "fail"
    assert v["details"]["stalls"] == [{"subscription": "a", "from": 20, "to": 40, "duration_s": 20,
                                       "received": 200, "changes_during": 200, "due_during": 0}]
    assert v["figure"] == ("1 subscriptions watched: 1 stall(s): a 20 s at 200 received (+200 counted, 0 due); "
                           "1 counter drift(s): a changes−received +200 for 16 s")


def test_stall_seen_from_its_own_due_changes_when_the_counter_is_missing():
    pts = [(t, None, 100 if t >= 10 else 10 * t) for t in range(0, 42, 2)]
    due = [i / 10 for i in range(400)]   # 10 changes/s acknowledged for this subscription's query
    v = subscription_health({"b": pts}, due={"b": due})
    assert v["verdict"] == "fail"
    # due within [10, 40 - 2 s in flight]: 280 changes
    assert v["details"]["stalls"][0] == {"subscription": "b", "from": 10, "to": 40, "duration_s": 30,
                                         "received": 100, "changes_during": 0, "due_during": 281}
    assert v["details"]["drifts"] == []


def test_a_quiet_subscription_is_not_stalled_while_other_subscriptions_get_traffic():
    # a filtered conversation with no message: flat, its counter flat, nothing due; the busy one is fine
    quiet = [(t, 0, 0) for t in range(0, 62, 2)]
    busy = [(t, 10 * t, 10 * t) for t in range(0, 62, 2)]
    v = subscription_health({"quiet": quiet, "busy": busy}, due={"quiet": [], "busy": [i / 10 for i in range(600)]})
    assert v["verdict"] == "pass" and v["details"]["stalls"] == [], v["figure"]
    # the same flat series with changes due to it is a stall
    v = subscription_health({"quiet": quiet}, due={"quiet": [30.0]})
    assert v["verdict"] == "fail" and v["details"]["stalls"][0]["due_during"] == 1


def test_counter_drift_is_detected():
    # the listener receives 10/s; from t=30 the server's counter runs 5/s ahead of it
    pts = [(t, 10 * t + max(0, 5 * (t - 30)), 10 * t) for t in range(0, 62, 2)]
    v = subscription_health({"b": pts})
    assert v["verdict"] == "fail" and v["details"]["stalls"] == []
    assert v["figure"] == "1 subscriptions watched: 1 counter drift(s): b changes−received +150 for 22 s"
    assert v["details"]["drifts"][0]["from"] == 38 and v["details"]["drifts"][0]["final_drift"] == 150


def test_health_without_series_is_inconclusive():
    v = subscription_health({"a": [(0, 0, 0)]})
    assert v["verdict"] == "inconclusive" and v["figure"] == "no subscription series with 2+ polls"


# ---------------------------------------------------------------------------------- S9 storage

def _storage(memtable_mb):
    return {"rocksdb_memtable_bytes": memtable_mb * MB, "rocksdb_block_cache_usage_bytes": 20 * MB,
            "rocksdb_block_cache_capacity_bytes": 512 * MB, "rocksdb_sst_files_bytes": 900 * MB}


def test_storage_memory_within_and_over_bound():
    times = ticks(T0, T0 + 18)
    figures = [_storage(10 + 3 * i) for i in range(len(times))]  # memtable 10..37 MB + cache 20 MB
    v = storage_bound(times, figures, bound_bytes=100 * MB)
    assert v["verdict"] == "pass" and v["value"] == 57 * MB
    assert v["figure"] == "peak 57.0 MB over 10 samples (bound 100.0 MB)"
    v = storage_bound(times, figures, bound_bytes=50 * MB)
    assert v["verdict"] == "fail" and v["details"]["peak_t"] == T0 + 18
    v = storage_bound(times, figures, metric="rocksdb_memtable_bytes", bound_bytes=30 * MB)
    assert v["verdict"] == "fail" and v["figure"] == ("rocksdb_memtable_bytes: peak 37.0 MB over 10 samples "
                                                      "(bound 30.0 MB)")
    v = storage_bound(times, figures, metric="rocksdb_memtable_bytes", bound_bytes=40 * MB, bound_from="its options")
    assert v["verdict"] == "pass" and v["figure"].endswith("(bound 40.0 MB, its options)")
    assert v["details"]["bound_from"] == "its options"


OPTIONS = """[Version]
  rocksdb_version=9.10.0
[DBOptions]
  max_background_jobs=2
[CFOptions "default"]
  max_write_buffer_number=2
  write_buffer_size=65536
[TableOptions/BlockBasedTable "default"]
  block_size=4096
[CFOptions "hot_data"]
  write_buffer_size=131072
  max_write_buffer_number=3
  max_write_buffer_size_to_maintain=0
[CFOptions "half"]
  write_buffer_size=131072
"""


def test_the_memtable_budget_comes_from_the_servers_rocksdb_options():
    # per column family: max_write_buffer_number memtables of write_buffer_size, + one arena block (1/8)
    assert memtable_budget(OPTIONS) == {"bytes": (2 * 65536 + 3 * 131072) * 9 // 8, "column_families": 2}
    assert memtable_budget("[DBOptions]\n  max_open_files=-1\n") is None


def test_memtables_without_a_budget_are_judged_by_whether_they_keep_growing():
    flushed = run_of(lambda t: {"rocksdb_memtables_size_bytes": (0.2 + 0.1 * (int(t) % 20) / 20) * MB})
    v = storage_growth(*flushed, load_start=T0, load_end=LOAD_END, warmup_s=30)
    assert v["verdict"] == "pass" and v["details"]["metric"] == "rocksdb_memtables_size_bytes", v["figure"]
    assert v["figure"].startswith("rocksdb_memtables_size_bytes: peak ") and v["figure"].endswith(": bounded")
    growing = run_of(lambda t: {"rocksdb_memtables_size_bytes": (t - T0) / 60 * 2 * MB})   # 2 MB/min, no flush
    v = storage_growth(*growing, load_start=T0, load_end=LOAD_END, warmup_s=30)
    assert v["verdict"] == "fail" and v["figure"].endswith("MB/min: kept growing under load"), v["figure"]
    assert v["details"]["growth"]["slope_mb_per_min"] == pytest.approx(2.0)
    few = storage_growth(*growing, load_start=T0, load_end=T0 + 40, warmup_s=30)
    assert few["verdict"] == "inconclusive" and few["figure"].startswith("only 6 samples of rocksdb_memtables")
    gone = storage_growth(*flushed, load_start=T0, load_end=LOAD_END, process_gone=True)
    assert gone["verdict"] == "fail"


def test_storage_skipped_without_bound_inconclusive_without_figures_fail_when_gone():
    times = ticks(T0, T0 + 18)
    figures = [_storage(10) for _ in times]
    v = storage_bound(times, figures)
    assert v["verdict"] == "skipped" and v["figure"] == "no bound configured (peak 30.0 MB)"
    v = storage_bound(times, [{} for _ in times], bound_bytes=MB)
    assert v["verdict"] == "inconclusive"
    assert v["figure"] == "only 0 samples with storage-engine memory figures in system.stats (need 3)"
    v = storage_bound(times, figures, bound_bytes=100 * MB, process_gone=True)
    assert v["verdict"] == "fail" and v["figure"] == "server process gone during the run (out of memory?)"


# ---------------------------------------------------------------------------------- SC-057 uptime

DISCONNECTS = [{"t": T0 + 50, "code": 1006, "listener": "l03", "down_s": 0.5},
               {"t": T0 + 90, "code": 1011, "listener": "l07", "down_s": 0.5},
               {"t": T0 + 60, "code": 1000, "listener": "l01", "down_s": 3.0, "expected": True}]


def test_uptime_with_two_disconnects_over_100k_notifications():
    v = ws_uptime(DISCONNECTS, listener_seconds=20 * 300, notifications=100_000)
    assert v["verdict"] == "pass" and v["value"] == pytest.approx(0.999833, abs=1e-6)
    assert v["figure"] == ("uptime 99.983 % (threshold ≥ 99.9 %) over 100,000 notifications; "
                           "2 unexpected disconnect(s) (1006×1, 1011×1)")
    assert v["details"]["by_code"] == {"1006": 1, "1011": 1}


def test_uptime_below_threshold_fails_and_few_notifications_are_inconclusive():
    long_down = [dict(d, down_s=5.0) for d in DISCONNECTS[:2]]
    v = ws_uptime(long_down, listener_seconds=6000, notifications=100_000)
    assert v["verdict"] == "fail" and v["figure"].startswith("uptime 99.833 % ")
    v = ws_uptime(DISCONNECTS, listener_seconds=6000, notifications=50_000)
    assert v["verdict"] == "inconclusive"
    assert v["figure"].endswith("over 50,000 notifications; 2 unexpected disconnect(s) (1006×1, 1011×1): "
                                "fewer than 100,000 notifications")
    assert ws_uptime([], listener_seconds=0, notifications=10)["verdict"] == "inconclusive"


# ---------------------------------------------------------------------------------- S10 degradation

def _step(index, start, held, offered=100.0, acked=100.0):
    return {"index": index, "start": start, "offered_writes_per_s": offered, "acked_writes_per_s": acked,
            "held": held, "broke": [] if held else ["acknowledged 60 of 200 writes/s offered"]}


# a stepped load that went past the server's capacity at T0 + 60 (checks.capacity's shape)
PAST = {"steps": [_step(0, T0, True), _step(1, T0 + 60, False, 200.0, 60.0)], "knee": 0, "first_broken": 1,
        "limited_by": "server"}
BASE = dict(requests=10_000, errors={"429": 1_500, "500": 3}, slow=40, listeners=20, lost_acked=0, capacity=PAST)


def test_graceful_degradation_passes():
    v = degradation(**BASE)
    assert v["verdict"] == "pass"
    assert v["figure"] == ("no crash; 10,000 requests: 1,500 rate-limited, 3 other errors (0.03 %), 40 slow; "
                           "max 0/20 listeners disconnected within 5 s; 0 acknowledged writes lost")


def test_degradation_fails_on_crash_mass_disconnect_lost_writes_or_unanswered():
    v = degradation(**dict(BASE, server_crashed=True))
    assert v["verdict"] == "fail" and v["figure"].startswith("server crashed; ")
    assert v["details"]["failures"] == ["crash"]
    assert degradation(**dict(BASE, health_ok_after=False))["details"]["failures"] == ["crash"]
    mass = [(T0 + 100 + 0.3 * i, f"l{i:02d}") for i in range(6)] + [(T0 + 10, "l00")]
    v = degradation(**dict(BASE, disconnects=mass))
    assert v["verdict"] == "fail" and v["details"]["failures"] == ["mass_disconnect"]
    assert "max 6/20 listeners disconnected within 5 s" in v["figure"]
    assert v["details"]["mass_disconnect_at"] == T0 + 100
    spread = [(T0 + 10 * i, f"l{i:02d}") for i in range(6)]
    assert degradation(**dict(BASE, disconnects=spread))["verdict"] == "pass"
    v = degradation(**dict(BASE, lost_acked=2))
    assert v["verdict"] == "fail" and v["figure"].endswith("; 2 acknowledged writes lost")
    v = degradation(**dict(BASE, errors={"429": 10, "timeout": 200}))
    assert v["verdict"] == "fail" and v["details"]["failures"] == ["unanswered"]
    assert "200 other errors (2.00 %)" in v["figure"]


def test_degradation_is_judged_only_past_the_servers_capacity():
    steady = degradation(**dict(BASE, capacity=None))
    assert (steady["verdict"], steady["figure"]) == (
        "skipped", "load never exceeded capacity: a steady load (S10 is judged on a stepped load, --step-load)")
    held = dict(PAST, steps=[_step(0, T0, True), _step(1, T0 + 60, True, 200.0, 198.0)], knee=1, first_broken=None,
                limited_by=None)
    v = degradation(**dict(BASE, capacity=held))
    assert (v["verdict"], v["figure"]) == (
        "skipped", "load never exceeded capacity: every step held, up to 198 writes/s acknowledged (raise --step-max)")
    gen = dict(PAST, limited_by="generator")
    v = degradation(**dict(BASE, capacity=gen))
    assert (v["verdict"], v["figure"]) == (
        "skipped", "load never exceeded the server's capacity: the load generator saturated first, at 200 writes/s "
                   "offered (more generator processes: --processes N)")
    # a crash fails S10 whatever the load
    assert degradation(**dict(BASE, capacity=None, server_crashed=True))["verdict"] == "fail"
    # past capacity, disconnects count from the first step that broke
    before = [(T0 + 10 + 0.3 * i, f"l{i:02d}") for i in range(6)]
    v = degradation(**dict(BASE, disconnects=before))
    assert v["verdict"] == "pass" and v["details"]["past_capacity_from"] == T0 + 60
    after = [(T0 + 70 + 0.3 * i, f"l{i:02d}") for i in range(6)]
    assert degradation(**dict(BASE, disconnects=after))["details"]["failures"] == ["mass_disconnect"]


def test_degradation_inconclusive_without_loss_figure_or_requests():
    v = degradation(**dict(BASE, lost_acked=None))
    assert v["verdict"] == "inconclusive" and v["figure"].endswith("acknowledged writes lost: unknown")
    assert degradation(requests=0, capacity=PAST)["verdict"] == "inconclusive"


# ---------------------------------------------------------------------------------- generator

def test_generator_saturation_warns():
    times = ticks(T0, T0 + 18)
    v = generator_saturation(times, [50.0] * 10)
    assert v["verdict"] == "pass"
    assert v["figure"] == "generator CPU avg 50.0 %, max 50.0 % of a core; 0/10 samples above 90 %"
    v = generator_saturation(times, [95.0] * 5 + [50.0] * 5)
    assert v["verdict"] == "inconclusive" and "warning" in v["details"]
    assert v["figure"] == ("generator CPU avg 72.5 %, max 95.0 % of a core; 5/10 samples above 90 %: "
                           "saturated, latencies unreliable")
    assert generator_saturation([T0], [10.0])["verdict"] == "inconclusive"


def test_every_verdict_has_the_common_shape():
    times, values = run_of(lambda t: 200 * MB)
    leaky = [v + (t - T0) * 20_000 for t, v in zip(times, values)]
    for v in (growth(times, values), growth(times, leaky), query_latency([1.0] * 30),
              query_latency([1.0] * 10, failed=20), degradation(**BASE),
              ws_uptime([], listener_seconds=1, notifications=1),
              subscription_leaks(_live(["s1"]), expected_ids=["s1"], stats={"active_subscriptions": 1}),
              flush_buildup(*_sawtooth(lambda k: 200 * MB), FLUSHES)):
        assert set(v) == {"id", "title", "verdict", "figure", "value", "threshold", "details"}
        assert v["verdict"] in ("pass", "fail", "inconclusive", "skipped")
        json.dumps(v, allow_nan=False)  # goes into the JSON report as it is


# ------------------------------------------------------------------------------------------------
# S2: sustained load (composition of memory, disconnects and delivery)
# ------------------------------------------------------------------------------------------------

def _memory(verdict):
    return {"verdict": verdict, "figure": "peak +1.0 %", "threshold": "< 10 %", "value": 1.0, "details": {}}


def test_sustained_load_passes_only_with_enough_time_no_disconnect_and_no_loss():
    from checks.stress import sustained_load

    ok = sustained_load(_memory("pass"), duration_s=310, unexpected_disconnects=0, lost=0, expected=100)
    assert ok["verdict"] == "pass"
    short = sustained_load(_memory("pass"), duration_s=40, unexpected_disconnects=0, lost=0)
    assert short["verdict"] == "inconclusive" and "need 300" in short["figure"]
    dropped = sustained_load(_memory("pass"), duration_s=40, unexpected_disconnects=2, lost=0)
    assert dropped["verdict"] == "fail" and dropped["details"]["failures"] == ["disconnects"]
    lost = sustained_load(_memory("pass"), duration_s=310, lost=3, expected=100)
    assert lost["verdict"] == "fail" and "3 lost of 100" in lost["figure"]
    grew = sustained_load(_memory("fail"), duration_s=310)
    assert grew["verdict"] == "fail" and grew["details"]["failures"] == ["memory"]
    unknown = sustained_load(_memory("pass"), duration_s=310, lost=None)
    assert unknown["verdict"] == "inconclusive"


def test_health_with_subscriptions_never_watched_is_inconclusive_not_pass():
    # e.g. a worker that never answered the master's polls: its subscriptions have no series
    pts = [(t, 10 * t, 10 * t) for t in range(0, 42, 2)]
    v = subscription_health({"a": pts, "b": pts}, expected=3)
    assert v["verdict"] == "inconclusive" and v["figure"].startswith("only 2 of 3 subscriptions watched")
    assert subscription_health({"a": pts, "b": pts}, expected=2)["verdict"] == "pass"
    stalled = [(t, 10 * t, 200 if t >= 20 else 10 * t) for t in range(0, 62, 2)]
    assert subscription_health({"a": stalled}, expected=3)["verdict"] == "fail"   # what was seen still fails


def test_memory_growth_when_the_server_went_away_is_inconclusive_not_an_error():
    # samples until t=40, the load until t=100: no end level (the bug was a TypeError on None)
    times = [float(t) for t in range(0, 41, 2)]
    values = [100 * MB] * len(times)
    v = memory_growth(times, values, load_start=0.0, load_end=100.0, warmup_s=5, baseline_s=10, min_samples=5)
    assert v["verdict"] == "inconclusive" and v["figure"].startswith("no memory sample in the last 10 s of the load")
    v = memory_growth(times, values, load_start=0.0, load_end=100.0, warmup_s=5, baseline_s=10, min_samples=5,
                      server_gone_at=41.0, max_gap_s=100)
    assert v["verdict"] == "inconclusive" and v["figure"].startswith("server gone 41.0 s into the load")


def test_degradation_says_when_the_server_crashed():
    v = degradation(requests=100, server_crashed=True, crashed_at=112.5, load_start=100.0)
    assert v["verdict"] == "fail" and v["figure"].startswith("server crashed at 12.5 s into the load")
    assert v["details"]["crashed_at"] == 112.5
