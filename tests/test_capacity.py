"""The stepped load: checks.capacity on made-up timed evidence (pure), and real stepped runs against the stand-in
with a server that has a capacity (fault write_capacity), on one process and on two workers."""
from __future__ import annotations

from collections import Counter

from checks.capacity import Evidence, StepSchedule, capacity, capacity_text, step_windows
from checks.histogram import LatencyHistogram
from locust_run import run_locust

T0 = 1_700_000_000.0


def test_the_schedule_multiplies_the_rate_each_step_up_to_the_top_and_holds_it():
    s = StepSchedule(base=10, factor=2, every=5, top=60)
    assert [s.rate(k) for k in range(5)] == [10, 20, 40, 60, 60]
    assert s.last == 3
    assert [s.rate_at(t) for t in (0, 4.9, 5, 14.9, 15, 99)] == [10, 10, 20, 40, 60, 60]
    steps = step_windows(s, writers=4, t0=T0, t_end=T0 + 27)
    assert [(x.index, x.start - T0, x.end - T0, x.offered) for x in steps] == [
        (0, 0, 5, 40), (1, 5, 10, 80), (2, 10, 15, 160), (3, 15, 27, 240)]   # the top step lasts to the end
    assert [x.index for x in step_windows(s, 4, T0, T0 + 7)] == [0, 1]       # cut short by the end


def _evidence(acked_per_step, offered, every=5, lost_at=None, slow_step=None, gen_busy_step=None, p_ms=5.0):
    """Per-second evidence of a run whose step k acknowledged acked_per_step[k] writes/s."""
    ev = Evidence(sent=Counter(), acked=Counter(), deliveries=Counter(), latency={}, lost=Counter(),
                  listeners=[(T0 - 1, None)] * 3, generator=[])
    for k, acked in enumerate(acked_per_step):
        for s in range(int(T0) + k * every, int(T0) + (k + 1) * every):
            ev.sent[s] = ev.acked[s] = acked
            ev.deliveries[s] = acked * 3
            h = LatencyHistogram()
            h.add_many([(50.0 + 40 if k == slow_step else p_ms) / 1000.0] * (acked * 3))
            ev.latency[s] = h
            ev.generator.append((s + 0.5, 0.95 if k == gen_busy_step else 0.3, 1.0, "this process"))
    if lost_at is not None:
        ev.lost[int(T0) + lost_at] = 2
    return ev


def _steps(n, every=5):
    s = StepSchedule(base=10, factor=2, every=every, top=10 * 2 ** (n - 1))
    return step_windows(s, writers=4, t0=T0, t_end=T0 + n * every)


def test_the_knee_is_the_last_step_that_held_and_the_next_one_names_what_broke():
    cap = capacity(_steps(4), _evidence([40, 80, 160, 200], None), threshold_ms=50)
    assert [x["held"] for x in cap["steps"]] == [True, True, True, False]
    assert (cap["knee"], cap["first_broken"], cap["limited_by"]) == (2, 3, "server")
    assert cap["steps"][3]["broke"] == ["acknowledged 200 of 320 writes/s offered"]
    assert cap["steps"][2]["deliveries_per_s"] == 480 and cap["steps"][2]["listeners"] == 3
    assert capacity_text(cap) == ("160 writes/s × 3 listeners (480 deliveries/s) held (step 3 of 4); at 320 writes/s "
                                  "offered: acknowledged 200 of 320 writes/s offered (the server's limit)")


def test_each_reason_breaks_a_step_on_its_own():
    lost = capacity(_steps(3), _evidence([40, 80, 160], None, lost_at=12), threshold_ms=50)
    assert (lost["knee"], lost["steps"][2]["broke"], lost["steps"][2]["lost"]) == (1, ["2 change(s) lost"], 2)
    slow = capacity(_steps(3), _evidence([40, 80, 160], None, slow_step=2), threshold_ms=50)
    assert (slow["knee"], slow["steps"][2]["broke"]) == (1, ["p99 90 ms > 50 ms"])
    ev = _evidence([40, 80, 160], None)
    ev.rejected = Counter({int(T0) + 11: 3})
    ev.disconnects = [T0 + 12.5]
    rej = capacity(_steps(3), ev, threshold_ms=50)
    assert rej["steps"][2]["broke"] == ["3 write(s) rejected (rate limit or error)", "1 unexpected disconnect(s)"]
    first = capacity(_steps(2), _evidence([10, 40], None), threshold_ms=50)
    assert (first["knee"], first["first_broken"]) == (None, 0)
    assert capacity_text(first).startswith("no step held; at 40 writes/s offered: acknowledged 10 of 40")


def test_the_knee_is_the_highest_step_that_held_a_lower_one_that_did_not_is_named():
    cap = capacity(_steps(4), _evidence([40, 50, 160, 200], None), threshold_ms=50)
    assert [x["held"] for x in cap["steps"]] == [True, False, True, False]
    assert (cap["knee"], cap["first_broken"], cap["broke_below_knee"], cap["limited_by"]) == (2, 3, [1], "server")
    assert capacity_text(cap) == (
        "160 writes/s × 3 listeners (480 deliveries/s) held (step 3 of 4) (below it step(s) 2 did not hold: "
        "80 writes/s: acknowledged 50 of 80 writes/s offered); at 320 writes/s offered: acknowledged 200 of 320 "
        "writes/s offered (the server's limit)")


def test_a_step_that_broke_while_the_generator_was_saturated_is_the_generators_limit():
    cap = capacity(_steps(3), _evidence([40, 80, 100], None, gen_busy_step=2), threshold_ms=50)
    assert (cap["knee"], cap["limited_by"], cap["steps"][2]["generator_cpu_pct"]) == (1, "generator", 95.0)
    assert capacity_text(cap).endswith("(the load generator saturated first: its limit, not the server's (more "
                                       "generator processes: --processes N))")
    held = capacity(_steps(3), _evidence([40, 80, 160], None), threshold_ms=50)
    assert (held["knee"], held["first_broken"], held["limited_by"]) == (2, None, None)
    assert capacity_text(held).endswith("; the load never went past capacity (raise --step-max)")


# ------------------------------------------------------------------------------------ real stepped runs
# 4 writers from 10 writes/s each, doubling every 3 s up to 80: 40, 80, 160 and 320 writes/s offered, against a
# stand-in that serves 200 write statements a second: the knee lands on 160, the step at 320 breaks
STEPPED = ("--workload", "shared", "--writers", "4", "--listeners", "2", "-u", "6", "-r", "6", "--write-rate", "10",
           "--step-load", "--step-every", "3", "--step-factor", "2", "--step-max", "80",
           # what breaks the step past 200/s here is the acknowledged rate; latency's rule has its pure tests
           # above (a stall of a busy machine must not move the knee)
           "--latency-threshold-ms", "1000")


def _assert_capacity_at_160(r):
    cap = r.report["capacity"]
    assert cap is not None, r.output[-3000:]
    offered = [x["offered_writes_per_s"] for x in cap["steps"]]
    assert offered == [40, 80, 160, 320], cap
    assert (cap["knee"], cap["first_broken"], cap["limited_by"]) == (2, 3, "server"), cap["steps"]
    knee, broken = cap["steps"][2], cap["steps"][3]
    assert abs(knee["acked_writes_per_s"] - 160) <= 8 and knee["lost"] == 0, knee
    assert 180 <= broken["acked_writes_per_s"] <= 205, broken   # the server's 200 statements/s
    assert broken["broke"] == [f"acknowledged {broken['acked_writes_per_s']:g} of 320 writes/s offered"], broken
    assert set(cap["steps"][0]) >= {"offered_writes_per_s", "acked_writes_per_s", "latency_p99_ms", "lost"}
    assert "(the server's limit)" in r.report["figures"]["capacity"]
    return cap


def test_a_server_with_a_capacity_puts_the_knee_on_it_and_s10_is_judged_past_it(tmp_path):
    # --stress: S10 is judged from the broken step on; --step-listeners 1: a listener more subscribes at each
    # step's start, and gets every change from then on
    from test_stress_runs import STRESS
    r = run_locust(tmp_path, *STRESS, *STEPPED, "--step-listeners", "1", "-u", "10", "-r", "10",
                   faults={"write_capacity": 200}, run_time="13s")
    cap = _assert_capacity_at_160(r)
    assert [x["listeners"] for x in cap["steps"]] == [2, 3, 4, 5]
    assert len(r.report["subscriptions"]) == 5
    live = ("L1", "L4", "L6", "L7", "L8", "L10")
    assert {k: r.verdict(k) for k in live} == dict.fromkeys(live, "pass"), {k: r.scenarios[k]["figure"] for k in live}
    assert "5 of 5 listeners complete" in r.scenarios["L8"]["figure"]
    s10 = r.scenarios["S10"]
    assert s10["verdict"] == "pass", s10["figure"]
    assert s10["details"]["past_capacity_from"] == cap["steps"][3]["start"]
    # the terminal: a row per step, then the capacity figure, above the scenarios
    block = r.output[r.output.index("stepped load: step"):]
    rows = block.splitlines()[1:1 + len(cap["steps"])]
    assert [row.split()[-1] for row in rows] == ["yes", "yes", "yes", "no"], rows
    assert block.splitlines()[1 + len(cap["steps"])].startswith("  capacity: ")


def test_a_distributed_stepped_run_steps_on_every_worker_together(tmp_path):
    r = run_locust(tmp_path, *STEPPED, "--processes", "2", "--step-listeners", "1", "-u", "9", "-r", "9",
                   faults={"write_capacity": 200}, run_time="13s", timeout=180)
    cap = _assert_capacity_at_160(r)
    assert len(r.report["distributed"]["workers"]) == 2
    assert [x["listeners"] for x in cap["steps"]] == [2, 3, 4, 5] and len(r.report["subscriptions"]) == 5


def test_listeners_of_a_step_that_never_came_are_not_expected(tmp_path):
    # the writing ends before the last steps: their listeners never join, and no evidence is missing
    r = run_locust(tmp_path, *STEPPED, "--step-listeners", "1", "-u", "9", "-r", "9", "--min-high-frequency", "100",
                   run_time="6s")
    steps = r.report["capacity"]["steps"]
    assert len(steps) < 4, steps
    assert len(r.report["subscriptions"]) == 2 + len(steps) - 1
    assert [x["listeners"] for x in steps] == list(range(2, 2 + len(steps)))
    assert not any("listener" in n for n in r.report["notes"]), r.report["notes"]
    assert (r.report["summary"]["verdict"], r.returncode) == (("inconclusive", 1) if r.saturated else ("pass", 0))
