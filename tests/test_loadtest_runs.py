"""End-to-end: the real load test against the built-in stand-in, clean and with each fault that breaks a
scenario. Every fault test asserts the scenario(s) the fault must break, that the figure counts exactly
what the stand-in injected (its own counters, read from system.stats at the end of the run), and that
the scenarios the fault cannot touch still pass."""
from __future__ import annotations

import csv
import re

import pytest

from loadtest.run.stress import STRESS_IDS
from locust_run import REPO, run_locust

pytestmark = pytest.mark.timeout(180)


def lost_total(r) -> int:
    return r.scenarios["L4"]["details"]["lost"]


def test_clean_run_passes_every_scenario_and_exits_zero(tmp_path):
    r = run_locust(tmp_path, "--reconnect-every", "2", "--reconnect-share", "0.5", run_time="8s")
    assert r.report is not None, r.output[-3000:]
    figures = {k: v["figure"] for k, v in r.scenarios.items()}
    # GEN is judged in every run: when this machine was too busy for the generator, SC-054 (and only it)
    # is not judged, the run says so and is inconclusive; otherwise everything passes
    gen = r.scenarios["GEN"]
    saturated = gen["details"]["saturated"]
    assert gen["verdict"] == ("warning" if saturated else "pass"), gen
    assert "CPU" in gen["figure"] and "event-loop lag p95" in gen["figure"]
    assert r.failing == ({"SC-054"} if saturated else set()), figures
    live = {k: v for k, v in r.scenarios.items() if k not in STRESS_IDS and k != "SC-054"}
    assert all(v["verdict"] == "pass" for v in live.values()), {k: v["verdict"] for k, v in live.items()}
    # without --stress the stress scenarios are listed as skipped, with the reason, and do not fail the run
    stress = {k: v for k, v in r.scenarios.items() if k in STRESS_IDS and k != "GEN"}
    assert set(stress) == set(STRESS_IDS) - {"GEN"}
    assert all(v["verdict"] == "skipped" and "not a stress profile" in v["figure"] for v in stress.values())
    if saturated:
        assert r.returncode == 1 and r.report["summary"]["verdict"] == "inconclusive"
        assert r.report["notes"][0].startswith("the load generator was saturated")
        assert "not judged: load generator saturated" in r.scenarios["SC-054"]["figure"]
    else:
        assert r.returncode == 0 and r.report["summary"]["verdict"] == "pass", r.report["notes"]
        assert r.verdict("SC-054") == "pass" and "OVERALL PASS" in r.output
    assert r.report["figures"]["outage"] is None
    # the terminal ends with the verdict: after Locust's tables, the report files named, lines of ≤ 120
    # columns, the 11 skipped stress rows on one line, the run's verdict last
    out = r.output.rstrip().splitlines()
    block = out[max(i for i, line in enumerate(out) if line.startswith("KalamDB live-query verification")):]
    assert max(i for i, line in enumerate(out) if "Response time percentiles" in line) < len(out) - len(block)
    assert block[-1].startswith("  OVERALL ") and all(len(line) <= 120 for line in block), block
    assert block[1].startswith("  reports: ") and r.report["run"]["run_id"] in block[0]
    assert sum(1 for line in block if "not a stress profile" in line) == 1
    assert "lost 0 of" in r.scenarios["L1"]["figure"] and "no subscription lost any" in r.scenarios["L1"]["figure"]
    assert r.report["figures"]["resumes"] > 0
    assert r.stat("standin_notifications_sent") >= 1000
    # the generator's own lag, counted over every connection (reconnects included), apart from latency
    lag = r.report["figures"]["listener_lag_ms"]
    assert lag["frames"] >= r.report["figures"]["change_messages_received"]
    assert 0 <= lag["mean"] <= lag["max"]
    assert lost_total(r) == 0


# The fault runs below widen the latency threshold: they are about loss, duplicates or corruption, and a
# stall of the shared CI machine must not fail SC-054 for a reason that has nothing to do with the fault
# (SC-054's own fault is the delay test). Exact-count faults on the shared table with inserts only make the
# set of scenarios a fault breaks the same in every run: which changes a probability hits, and whether they
# are inserts or updates, is chance.
LAT = ("--latency-threshold-ms", "2000")
EXACT = (*LAT, "--workload", "shared", "--op-mix", "insert=100")
# what a change lost or duplicated on the shared table breaks: inserts, concurrent writers, many listeners
# on one query, high frequency
SHARED_DELIVERY = {"L1", "L4", "L8", "L10"}


def figures(r) -> dict:
    return {k: f"{v['verdict']}: {v['figure']}" for k, v in r.scenarios.items()}


def test_drop_is_caught_as_loss_with_the_exact_count(tmp_path):
    r = run_locust(tmp_path, *EXACT, "--csv", str(tmp_path / "locust"), faults={"drop_count": 7})
    assert r.stat("standin_notifications_dropped_fault") == 7
    assert lost_total(r) == 7, figures(r)
    assert r.failing == SHARED_DELIVERY, figures(r)
    # drops before the queue are not counted by the server either: the counter check stays quiet
    assert r.verdict("L7") == "pass" and r.verdict("L6") == "pass", figures(r)
    # latency is sampled from what arrived, never from what was lost
    received = r.report["figures"]["change_messages_received"]
    assert r.scenarios["SC-054"]["details"]["sent"]["count"] == received > 0, figures(r)
    assert r.scenarios["L4"]["details"]["known_behaviours"]["queue-drops"]["count"] == 7
    assert r.report["summary"]["verdict"] == "fail" and r.returncode == 1
    # Locust's own statistics say it too: one VERIFY entry per judged scenario, failed where the verdict is
    with open(tmp_path / "locust_stats.csv", newline="") as f:
        verify = {row["Name"].split()[0]: int(row["Failure Count"]) for row in csv.DictReader(f) if row["Type"] == "VERIFY"}
    judged = {k: v["verdict"] for k, v in r.scenarios.items() if v["verdict"] != "skipped"}
    assert verify == {k: int(v in ("fail", "inconclusive")) for k, v in judged.items()}, verify
    assert {k for k, n in verify.items() if n} >= SHARED_DELIVERY
    # and so does its table on the terminal: the failed entries among its failures
    table = r.output.split("Response time percentiles")[0]
    assert re.search(r"VERIFY\s+L1 inserts delivered to every matching listener\s+1\s+1\(100\.00%\)", table), table[-3000:]


def test_loss_is_not_accepted_as_queue_drops_without_the_servers_count(tmp_path):
    # --accept-known queue-drops, but no queue was full (the stand-in counted 0 full-queue drops): loss
    r = run_locust(tmp_path, *EXACT, "--accept-known", "queue-drops,resume-deletes-not-replayed",
                   faults={"drop_count": 7})
    assert r.stat("standin_notifications_dropped_queue_full") == 0
    assert r.failing == SHARED_DELIVERY, figures(r)
    qd = r.scenarios["L4"]["details"]["known_behaviours"]["queue-drops"]
    assert qd == {"count": 7, "accepted": False, "accepted_count": 0, "server_count": 0,
                  "server_count_from": f"server log {r.report['run']['server']['log_path']}"}
    assert "7 not accepted: loss" in r.scenarios["L8"]["figure"] and "0 of 6 listeners complete" in r.scenarios["L8"]["figure"]


# a slow consumer (SO_RCVBUF 4 KiB, stops reading 2 s in every 2.5 s) among fast ones, while two writers
# insert 50 rows per INSERT, 20 INSERTs a second each (2,000 changes/s to every listener: 4,000 in a pause,
# against the ~170 a slow connection holds): the stand-in's 128-change channel of the slow connection
# fills, and it drops changes as KalamDB does (logged, not counted in system.live.changes). The stand-in's
# send buffers are 8 KiB: with the kernel's (up to 4 MiB) a busy machine's writers wrote less in a pause
# than the socket held, and nothing was dropped. Paced, not as fast as they can: on a fast machine unpaced
# writers outran the fast listeners of their own process (up to 24,173 of 45,461 drops on fast listeners)
SLOW = ("--workload", "shared", "--writers", "2", "--listeners", "3", "-u", "5", "-r", "5", "--slow-listeners", "1",
        "--slow-pause", "2", "--slow-every", "2.5", "--rows-per-insert", "50", "--write-rate", "20",
        "--payload-bytes", "200", "--op-mix", "insert=100", "--latency-threshold-ms", "5000")


def small_send_buffers(tmp_path) -> str:
    config = tmp_path / "standin.toml"
    text = (REPO / "config" / "loadtest-server.toml").read_text()
    config.write_text(text.replace("[websocket]\n", "[websocket]\nsend_buffer_bytes = 8192\n", 1))
    return str(config)


def test_a_slow_consumer_loses_exactly_what_the_server_logged_and_only_on_its_subscriptions(tmp_path):
    r = run_locust(tmp_path, *SLOW, "--standin-config", small_send_buffers(tmp_path))
    assert r.report is not None, r.output[-3000:]
    dropped = r.stat("standin_notifications_dropped_queue_full")
    assert dropped > 0 and r.stat("standin_notifications_dropped_fault") == 0
    assert r.failing == SHARED_DELIVERY, figures(r)
    l1 = r.scenarios["L1"]["details"]
    assert l1["lost"] == dropped
    # every drop is placed: on the slow listener's subscription, or on another one, counted apart. With the
    # stand-in's 8 KiB send buffers a fast listener whose process reads late for a moment (a busy machine)
    # has a full socket too, and 50-row INSERTs then overflow its 128-slot channel as well (3 of 14,661
    # once, 51 of 11,897 once in a full suite run)
    sl = l1["slow_listeners"]
    assert (sl["listeners"], sl["subscriptions"]) == (1, 1) and sl["lost"] + sl["lost_elsewhere"] == dropped
    assert sl["lost_elsewhere"] <= 0.01 * dropped, sl
    assert l1["known_behaviours"]["queue-drops"] == {
        "count": dropped, "accepted": False, "accepted_count": 0, "server_count": dropped,
        "server_count_from": f"server log {r.report['run']['server']['log_path']}"}
    others = f"{sl['lost_elsewhere']:,}" if sl["lost_elsewhere"] else "none"
    assert f"slow listeners' subscriptions lost {sl['lost']:,}, the others {others}" in r.scenarios["L1"]["figure"]
    # the server never counted what it dropped: its counters equal what arrived
    assert r.verdict("L7") == "pass" and r.verdict("L6") == "pass"
    # every row of a multi-row INSERT is a write of its own in the ledger
    inserts = r.report["figures"]["writes"]["events"]["insert"]
    assert inserts["ack"] > 0 and inserts["ack"] % 50 == 0 and inserts["unknown"] == 0, inserts
    assert "the slow listeners' 1 subscriptions left out" in r.scenarios["SC-054"]["figure"]


def test_dropping_only_deletes_fails_only_the_delete_scenarios(tmp_path):
    r = run_locust(tmp_path, *LAT, "--workload", "shared", faults={"drop": 1.0, "drop_change_type": "delete"})
    dropped = r.stat("standin_notifications_dropped_fault")
    assert dropped > 0
    assert r.failing == {"L3", "L4", "L8", "L10"}, figures(r)
    assert r.scenarios["L3"]["details"]["lost"] == dropped == lost_total(r)
    assert r.scenarios["L3"]["figure"].startswith(f"lost {dropped} of {dropped} deletes")


def test_duplicates_are_caught_with_the_exact_count(tmp_path):
    r = run_locust(tmp_path, *EXACT, faults={"duplicate_count": 9})
    assert r.stat("standin_notifications_duplicated_fault") == 9
    assert r.scenarios["L4"]["details"]["duplicated"] == 9
    assert r.failing == SHARED_DELIVERY, figures(r)
    assert lost_total(r) == 0
    assert r.verdict("L7") == "pass"  # the server counts what it enqueued, duplicates included


def test_reordering_fails_ordering_only(tmp_path):
    r = run_locust(tmp_path, *LAT, faults={"reorder": 4, "seed": 4})
    # L10 ("1000+ changes, each once, in order") is broken by the same fault, by definition
    assert r.failing == {"L6", "L10"}, {k: v["figure"] for k, v in r.scenarios.items() if v["verdict"] == "fail"}
    assert r.scenarios["L6"]["value"] > 0 and lost_total(r) == 0


def test_delay_beyond_threshold_fails_latency_only(tmp_path):
    r = run_locust(tmp_path, faults={"delay_ms": 80})
    if r.saturated:   # a machine too busy for the generator: SC-054 not judged, its own verdict kept beside
        assert r.failing == set() and r.scenarios["SC-054"]["details"]["would_be"] == "fail", figures(r)
    else:
        assert r.failing == {"SC-054"}, figures(r)
    sent = r.scenarios["SC-054"]["details"]["sent"]
    assert sent["p50"] >= 80.0
    assert r.returncode != 0


def test_corrupted_values_are_caught_with_the_exact_count(tmp_path):
    r = run_locust(tmp_path, *EXACT, faults={"corrupt_count": 8})
    assert r.stat("standin_notifications_corrupted_fault") == 8
    wrong = sum(s["wrong_values"] + s["wrong_old_values"] + s["wrong_deleted_flag"] for s in r.report["subscriptions"])
    assert wrong == 8 == r.scenarios["L1"]["details"]["wrong_values"]
    assert r.failing == {"L1"}, figures(r)   # a wrong value is not a lost or a duplicated change
    assert lost_total(r) == 0


def test_wrong_changes_counter_fails_the_counter_scenario_only(tmp_path):
    # latency threshold widened (see the drop test): "only L7" must not hinge on a stall of the machine
    r = run_locust(tmp_path, *LAT, faults={"counter_skew": 3})
    assert r.failing == {"L7"}, {k: v["figure"] for k, v in r.scenarios.items() if v["verdict"] == "fail"}
    assert r.scenarios["L7"]["value"] == 0  # no subscription's counter equals what it received


def test_another_users_row_is_a_security_failure(tmp_path):
    r = run_locust(tmp_path, "--workload", "agent-chat", faults={"cross_user": 0.1, "seed": 6})
    leaked = r.stat("standin_notifications_cross_user_fault")
    assert leaked > 0
    assert r.failing == {"L1", "L5"}, figures(r)   # L1 names every foreign row too, as a delivery error
    assert "SECURITY" in r.scenarios["L5"]["figure"].upper() and "SECURITY" in r.scenarios["L1"]["figure"].upper()
    assert sum(s["foreign"] for s in r.report["subscriptions"]) == leaked


def test_disconnects_with_resume_lose_nothing_but_deletes_in_the_gap_are_named(tmp_path):
    # listeners stay away 1 s per forced reconnect while writers go on: KalamDB's resume does not replay
    # deletes made meanwhile (protocol §5.5), and the verdict must say so with a count
    r = run_locust(tmp_path, "--reconnect-every", "2", "--reconnect-share", "1", "--reconnect-pause", "1",
                   "--accept-known", "", "--op-mix", "insert=50,update=20,delete=30", "--workload", "shared",
                   run_time="7s")
    assert r.report["figures"]["resumes"] > 0
    assert r.verdict("L9") == "fail"
    known = r.scenarios["L9"]["details"]["known_behaviours"]["resume-deletes-not-replayed"]
    assert known["count"] > 0 and known["accepted"] is False
    # accepted: the same behaviour is still reported, and no longer fails
    r2 = run_locust(tmp_path, "--reconnect-every", "2", "--reconnect-share", "1", "--reconnect-pause", "1",
                    "--accept-known", "resume-deletes-not-replayed", "--workload", "shared", run_time="7s")
    assert r2.verdict("L9") == "pass", r2.scenarios["L9"]
    assert r2.report["figures"]["resumes"] > 0


def test_server_side_disconnects_are_resumed(tmp_path):
    r = run_locust(tmp_path, "--workload", "shared", faults={"disconnect_every": 150})
    assert r.report["figures"]["resumes"] > 0
    assert sum(r.report["figures"]["disconnects_unexpected"].values()) > 0
    assert lost_total(r) == 0
    assert r.verdict("L9") == "pass"


def test_a_reorder_at_the_resume_handover_is_placed_after_resume(tmp_path):
    # the stand-in swaps the first two live changes of the first resumes (KalamDB's handover race): L6
    # fails, each anomaly placed "after resume", as many as the stand-in swapped
    r = run_locust(tmp_path, *LAT, "--reconnect-every", "2", "--reconnect-share", "0.5",
                   faults={"handover_reorder": 3}, run_time="8s")
    swapped = r.stat("standin_handover_reordered")
    assert swapped > 0
    assert r.failing == {"L6", "L10"}, figures(r)
    assert r.scenarios["L6"]["details"]["by_phase"] == {"after_subscribe": 0, "after_resume": swapped, "steady": 0}
    assert r.scenarios["L6"]["figure"].endswith(f"out-of-order _seq by phase: {swapped} after resume")
    assert lost_total(r) == 0
