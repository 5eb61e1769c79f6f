"""checks.evidence: the outage finder, the generator's health and the run's verdict rule, as pure functions."""
from __future__ import annotations

from checks.evidence import Evidence, GeneratorHealth, Outage, find_outage, judge_run


def sc(verdict, figure="x"):
    return {"verdict": verdict, "figure": figure, "details": {}}


CLEAN = {"L1": sc("pass"), "L4": sc("pass"), "L7": sc("pass"), "SC-054": sc("pass"), "S1": sc("skipped"),
         "GEN": sc("pass")}


def test_a_clean_run_passes():
    j = judge_run(CLEAN, Evidence())
    assert (j.verdict, j.exit_code, j.notes) == ("pass", 0, [])


def test_interrupted_run_is_inconclusive_and_keeps_only_proven_delivery_fails():
    scen = dict(CLEAN, L4=sc("fail", "3 lost"), L7=sc("fail"), **{"SC-054": sc("fail")})
    j = judge_run(scen, Evidence(interrupted=True))
    assert {k: v["verdict"] for k, v in j.scenarios.items()} == {
        "L1": "inconclusive", "L4": "fail", "L7": "inconclusive", "SC-054": "inconclusive", "S1": "skipped",
        "GEN": "pass"}
    assert j.verdict == "fail" and j.exit_code == 1
    assert j.notes == ["run interrupted (Ctrl-C / SIGTERM): evidence is partial"]
    assert scen["L7"]["verdict"] == "fail"   # the input is not changed
    # nothing proven: inconclusive, never pass, never a latency fail
    j2 = judge_run(dict(CLEAN, **{"SC-054": sc("fail")}), Evidence(interrupted=True))
    assert j2.verdict == "inconclusive" and "pass" not in {v["verdict"] for k, v in j2.scenarios.items() if k != "GEN"}
    assert "would fail" in j2.scenarios["SC-054"]["figure"]


def test_a_lost_worker_or_a_set_up_failure_is_inconclusive():
    j = judge_run(CLEAN, Evidence(workers_lost=["worker w1 (host h, pid 7) lost: no heartbeat"]))
    assert j.verdict == "inconclusive" and "worker w1" in j.notes[0]
    j = judge_run({}, Evidence(setup_error="ConnectError: refused"))
    assert j.verdict == "inconclusive" and j.notes == ["set-up failed: ConnectError: refused"]


def test_an_outage_keeps_the_crash_fail_of_s10_and_names_itself_first():
    o = Outage(start=105.0, seconds=2.5, writes_refused=254, writes_unknown=3, listeners_disconnected=3)
    scen = dict(CLEAN, S10=sc("fail", "server crashed"), S1=sc("fail"))
    j = judge_run(scen, Evidence(outage=o, t0=100.0))
    assert j.notes[0] == ("server unreachable from 5.0 s into the run for 2.5 s: 254 write(s) refused, "
                          "3 with unknown outcome, 3 listener(s) disconnected")
    assert j.scenarios["S10"]["verdict"] == "fail" and j.scenarios["S1"]["verdict"] == "inconclusive"
    assert j.verdict == "fail"
    # an outage the run survived without loss is still not a pass
    assert judge_run(CLEAN, Evidence(outage=o)).verdict == "inconclusive"


def test_nothing_exercised_is_inconclusive():
    j = judge_run({"L1": sc("skipped"), "S1": sc("skipped"), "GEN": sc("pass")}, Evidence())
    assert j.verdict == "inconclusive"
    assert j.notes == ["no scenario was exercised (every one skipped): nothing was verified"]


def test_a_saturated_generator_makes_latency_inconclusive_and_only_latency():
    j = judge_run(dict(CLEAN, **{"SC-054": sc("fail", "p99 90 ms")}), Evidence(generator_saturated="CPU 97 %"))
    assert {k for k, v in j.scenarios.items() if v["verdict"] != CLEAN[k]["verdict"]} == {"SC-054"}
    assert j.scenarios["SC-054"]["verdict"] == "inconclusive"
    assert j.scenarios["SC-054"]["details"]["would_be"] == "fail"
    assert j.verdict == "inconclusive" and j.notes[0].startswith("the load generator was saturated (CPU 97 %)")


def test_a_saturated_generator_with_no_latency_to_judge_adds_no_note():
    scen = {"L1": sc("skipped"), "SC-054": sc("skipped"), "GEN": sc("warning")}
    j = judge_run(scen, Evidence(generator_saturated="lag"))
    assert j.notes == ["no scenario was exercised (every one skipped): nothing was verified"]
    assert j.scenarios["SC-054"]["verdict"] == "skipped"


def _dropped(lost, counted, extra=None):
    qd = {"count": lost, "accepted": False, "accepted_count": 0, "server_count": counted}
    return {"verdict": "fail", "figure": f"lost {lost}",
            "details": {"lost": lost, "failing": {"lost": lost, "known:queue-drops": lost, **(extra or {})},
                        "known_behaviours": {"queue-drops": qd}}}


def test_queue_drops_of_a_saturated_generator_are_its_own_not_the_servers():
    scen = dict(CLEAN, L1=_dropped(1008, 1008), L4=_dropped(1008, 1008))
    j = judge_run(scen, Evidence(generator_saturated="CPU 97 %"))
    assert {k: v["verdict"] for k, v in j.scenarios.items() if k in ("L1", "L4")} == dict.fromkeys(("L1", "L4"),
                                                                                                    "inconclusive")
    assert j.scenarios["L1"]["details"]["would_be"] == "fail" and j.verdict == "inconclusive"
    assert j.notes[0].startswith("the load generator was saturated (CPU 97 %): delivery latency")
    assert j.notes[1:] == ["1,008 changes were dropped by the server at full connection queues while the load generator "
                       "was saturated: its listeners read too slowly, so that loss is not judged; run with "
                       "--processes N or fewer listeners per process"]
    # the stress scenarios that fail on that loss alone are not judged either; on more than it, they fail
    s10 = {"verdict": "fail", "figure": "x", "details": {"failures": ["lost_acked"], "lost_acked": 1008}}
    s2 = {"verdict": "fail", "figure": "x", "details": {"failures": ["lost", "memory"], "lost": 1008}}
    j = judge_run(dict(scen, S10=s10, S2=s2), Evidence(generator_saturated="CPU 97 %"))
    assert (j.scenarios["S10"]["verdict"], j.scenarios["S2"]["verdict"]) == ("inconclusive", "fail")
    crash = dict(s10, details={"failures": ["crash", "lost_acked"], "lost_acked": 1008})
    assert judge_run(dict(scen, S10=crash), Evidence(generator_saturated="x")).scenarios["S10"]["verdict"] == "fail"
    # the same loss on a generator with headroom is the server's: it fails
    assert judge_run(scen, Evidence()).verdict == "fail"
    # loss the server did not count, or a duplicate beside it, still fails on a saturated generator
    for x in (_dropped(1008, 900), _dropped(1008, None), _dropped(1008, 1008, {"duplicated": 2})):
        assert judge_run(dict(CLEAN, L1=x), Evidence(generator_saturated="CPU 97 %")).scenarios["L1"]["verdict"] == "fail"


def test_generator_health_thresholds():
    assert not GeneratorHealth(cpu_fraction=0.5, loop_lag_p95_ms=2.0).saturated
    assert GeneratorHealth(cpu_fraction=0.95, loop_lag_p95_ms=2.0).saturated
    assert GeneratorHealth(cpu_fraction=0.2, loop_lag_p95_ms=25.0).saturated
    busy = GeneratorHealth(cpu_fraction=0.2, loop_lag_p95_ms=25.0).verdict()
    assert busy["verdict"] == "warning" and busy["figure"].endswith("the machine is busy with other work)")
    assert GeneratorHealth(cpu_fraction=0.95, loop_lag_p95_ms=2.0).verdict()["figure"].endswith("(its core is full)")
    assert GeneratorHealth().verdict()["verdict"] == "skipped"
    assert GeneratorHealth(cpu_fraction=0.2, loop_lag_p95_ms=1.0).verdict()["verdict"] == "pass"
    # a stall is named, never a saturation by itself (p95 and CPU decide)
    stood = GeneratorHealth(cpu_fraction=0.2, loop_lag_p95_ms=1.0, loop_lag_max_ms=3001.0, stalls=2).verdict()
    assert stood["verdict"] == "pass" and stood["details"]["stalls"] == 2
    assert stood["figure"] == ("this process: CPU 20 % of a core; event-loop lag p95 1.0 ms, max 3001.0 ms; "
                               "it stood still (≥ 100 ms) 2 time(s)")
    assert "stood still" not in GeneratorHealth(cpu_fraction=0.2, loop_lag_p95_ms=1.0, stalls=0).verdict()["figure"]


def test_find_outage():
    assert find_outage([], [], 3, end=10.0) is None
    # one listener dropped alone is not an outage; three of three together are
    assert find_outage([], [(5.0, 1006)], 3, end=10.0) is None
    assert find_outage([(5.0, "unknown")], [], 3, end=10.0) is None   # a timeout: slow, not gone
    o = find_outage([(5.2, "refused"), (6.0, "refused"), (5.1, "unknown")], [(5.0, 1006), (5.1, 1006), (5.3, 1006)],
                    3, end=10.0)
    assert (o.start, o.seconds, o.writes_refused, o.writes_unknown, o.listeners_disconnected) == (5.0, 1.0, 2, 1, 3)
    # the end-of-run reads failing: it lasted to the end
    o = find_outage([(5.0, "refused")], [], 3, counters_unreadable=True, end=10.0)
    assert o.seconds is None and o.counters_unreadable
    assert "until the end of the run" in o.text(0.0)
    assert find_outage([], [], 3, reconnects_refused=2, end=10.0).reconnects_refused == 2
