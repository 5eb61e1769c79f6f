"""The verifier on hand-made histories: one test per anomaly, each asserting exact counts."""

import pytest

from checks import (KIND_DELETE, KIND_INSERT, OUTCOME_REJECTED, OUTCOME_UNKNOWN,
                    Thresholds, Workload, reconcile, verdicts)
from checks.model import seq_commit_ms
from checks.testing import History

USER_WL = Workload("inbox", "user", ("body",))


def run(h, logs, counters=None, run_flags=None, th=None):
    results = [reconcile(h.ledger, log) for log in logs]
    return results, verdicts(h.ledger, results, counters, run_flags, th)


def inserts(h, subs, writers=("w1", "w2"), k=3):
    out = []
    for _ in range(k):
        for w in writers:
            i = h.insert(w)
            for s in subs:
                h.deliver(s, i)
            out.append(i)
    return out


# ---------------------------------------------------------------- clean history

def test_clean_history_passes_every_scenario():
    h = History()
    a, b = h.subscription("la"), h.subscription("lb", snapshot=True)
    c = h.subscription("lc")
    rows = []
    for step in range(260):                       # 520 writes on 2 writers, > 1000 changes in total
        for w in ("w1", "w2"):
            if step % 4 == 3 and rows:
                i = h.update(rows[-1]) if step % 8 == 3 else h.delete(rows.pop(0))
            else:
                i = h.insert(w)
                rows.append(i) if step % 5 else None
            for s in (a, b, c):
                h.deliver(s, i)
            if step == 100 and w == "w2":         # lc loses its socket, then resumes
                c.disconnected(h.tick())
                gap_i = h.insert("w1")
                gap_u = h.update(gap_i)            # the insert is superseded within the gap
                for s in (a, b):
                    h.deliver(s, gap_i)
                    h.deliver(s, gap_u)
                c.subscribed(h.tick(), resume_from=c.seq[-1])
                h.deliver_snapshot(c, gap_u)
                c.ready(h.tick())
    # a USER table with a conversation filter (L5), its own ledger
    hu = History(USER_WL)
    human = hu.subscription("human1", owner="u1", group="conv1")
    for k in range(5):
        hu.deliver(human, hu.insert("agent1", owner="u1", group="conv1"))
        hu.insert("agent1", owner="u1", group="conv2")            # another conversation
        hu.insert("agent2", owner="u2", group="conv1")            # another user's row
    results = [reconcile(h.ledger, s) for s in (a, b, c)] + [reconcile(hu.ledger, human)]
    counters = {r.key: r.change_messages_last_epoch for r in results}
    report = verdicts([h.ledger, hu.ledger], results, counters, {})
    assert {k: v.verdict for k, v in report.items()} == {k: "pass" for k in report}, \
        {k: (v.verdict, v.figure) for k, v in report.items()}
    assert results[2].collapsed_gap == 1 and results[2].resumes == 1
    assert sum(r.lost + r.duplicated + r.unexpected_total for r in results) == 0
    assert report["L1"].value == 100.0
    assert "lost 0 of" in report["L1"].figure
    assert report["L10"].details["changes_verified"] >= 1000
    assert report["L5"].figure.startswith("lost 0 of 5 messages")
    for v in report.values():
        d = v.to_dict()
        assert set(d) == {"id", "title", "verdict", "figure", "value", "threshold", "details"}


# ---------------------------------------------------------------- loss, duplicates, unexpected

def test_lost_insert_fails_L1_with_exact_figure():
    h = History()
    a, b = h.subscription("la"), h.subscription("lb")
    ids = inserts(h, [a])
    for i in ids[:-1] + [h.insert("w1")]:
        h.deliver(b, i)
    h.deliver(a, h.ledger.find("w1", 4))
    (ra, rb), rep = run(h, [a, b])
    assert (ra.lost, rb.lost) == (0, 1)
    assert rb.samples["lost"][0]["n"] == 3 and rb.samples["lost"][0]["writer"] == "w2"
    assert rep["L1"].verdict == "fail"
    assert rep["L1"].figure.startswith("lost 1 of 14 inserts; 1 of 2 subscriptions lost some")
    assert rep["L4"].verdict == "fail" and rep["L8"].verdict == "fail"
    assert rep["L1"].value == pytest.approx(100 * 13 / 14, abs=1e-3)


def test_loss_tolerated_by_delivery_threshold():
    h = History()
    a = h.subscription("la")
    ids = inserts(h, [])
    for i in ids[1:]:
        h.deliver(a, i)
    _, rep = run(h, [a], th=Thresholds(delivery_pct=80))
    assert rep["L1"].verdict == "pass" and rep["L1"].details["lost"] == 1


def test_duplicate_within_and_across_epochs():
    h = History()
    a = h.subscription("la")
    i1, i2 = h.insert("w1"), h.insert("w1")
    h.deliver(a, i1)
    h.deliver(a, i1)                                  # same epoch
    h.deliver(a, i2)
    a.disconnected(h.tick())
    a.subscribed(h.tick(), resume_from=h.seq[i2])
    h.deliver_snapshot(a, i2)                         # resume sends it again
    a.ready(h.tick())
    (r,), rep = run(h, [a])
    assert r.by_op["insert"]["duplicated"] == 2 and r.lost == 0
    # a duplicate is counted once, as a duplicate (not also as out of order or before `from`)
    assert r.out_of_order["seq"] == 0 and r.out_of_order["seq_before_from"] == 0
    assert rep["L1"].verdict == "fail" and "2 duplicated" in rep["L1"].figure
    assert rep["L9"].verdict == "fail"


def test_unexpected_never_written_rejected_and_filter_mismatch():
    h = History()
    a = h.subscription("la", group="g1")
    ok = h.insert("w1", group="g1")
    rej = h.insert("w1", group="g1", outcome=OUTCOME_REJECTED)
    other = h.insert("w1", group="g2")
    for i in (ok, rej, other):
        h.deliver(a, i)
    ghost = h.wire_row(ok)
    ghost.update(n="99", id="w1:99")
    a.record_row(KIND_INSERT, ghost, None, None, h.tick())            # never written
    a.record_row(KIND_INSERT, dict(ghost, writer="w9"), None, None, h.tick())
    tomb = dict(h.wire_row(ok), _deleted=True)
    a.record_row(KIND_DELETE, None, tomb, None, h.tick())             # ok was never deleted
    (r,), rep = run(h, [a])
    assert r.unexpected == {"never_written": 3, "rejected": 1, "filter_mismatch": 1,
                            "stale_snapshot_row": 0}
    assert r.lost == 0 and r.by_op["insert"]["delivered"] == 1
    assert rep["L1"].verdict == "fail" and "5 unexpected" in rep["L1"].figure


def test_foreign_row_is_a_security_violation():
    h = History(USER_WL)
    mine = h.subscription("human1", owner="u1", group="c1")
    i = h.insert("agent", owner="u1", group="c1")
    j = h.insert("agent", owner="u2", group="c1")
    h.deliver(mine, i)
    h.deliver(mine, j)
    (r,), rep = run(h, [mine])
    assert r.foreign == 1 and r.unexpected_total == 0 and r.lost == 0
    assert rep["L5"].verdict == "fail" and "SECURITY VIOLATION" in rep["L5"].figure
    assert rep["L5"].details["security_violation"] is True
    assert rep["L1"].verdict == "fail" and "SECURITY" in rep["L1"].figure


def test_user_table_expects_only_own_rows():
    h = History(USER_WL)
    s = h.subscription("human1", owner="u1")
    h.deliver(s, h.insert("agent", owner="u1"))
    h.insert("agent", owner="u2")                     # not for u1: not expected
    (r,), rep = run(h, [s])
    assert r.lost == 0 and r.expected == 1
    assert rep["L5"].verdict == "skipped"             # no group filter


# ---------------------------------------------------------------- ordering

def test_out_of_order_by_seq_and_writer():
    h = History()
    a = h.subscription("la")
    i1, i2, i3 = h.insert("w1"), h.insert("w1"), h.insert("w2")
    for i in (i2, i1, i3):
        h.deliver(a, i)
    (r,), rep = run(h, [a])
    assert r.out_of_order == {"seq": 1, "seq_before_from": 0, "writer": 1, "row": 0,
                              "seq_vs_writer_order": 0}
    assert rep["L6"].verdict == "fail" and rep["L10"].verdict == "fail"
    assert "1 out of order seq" in rep["L6"].figure


def test_out_of_order_seq_is_placed_by_phase_with_its_gap():
    # an inversion in the first changes after a resume (KalamDB's handover), and one in the steady stream
    h = History()
    a = h.subscription("la")
    ids = [h.insert("w1") for _ in range(60)]
    for i in ids[:5]:
        h.deliver(a, i)
    a.disconnected(h.tick())
    a.subscribed(h.tick(), resume_from=h.seq[ids[4]])
    a.ready(h.tick())
    h.deliver(a, ids[6])
    h.deliver(a, ids[5])                                # the lower _seq after the higher: position 1
    for i in ids[7:58]:
        h.deliver(a, i)
    h.deliver(a, ids[59])
    h.deliver(a, ids[58])                               # position 53 of the epoch: steady
    (r,), rep = run(h, [a])
    assert r.order_phases == {"after_subscribe": 0, "after_resume": 1, "steady": 1}
    assert rep["L6"].details["by_phase"] == {"after_subscribe": 0, "after_resume": 1, "steady": 1}
    assert rep["L6"].figure.endswith("out-of-order _seq by phase: 1 after resume, 1 steady")
    gaps = {x["phase"]: x["seq_gap_ms"] for x in rep["L6"].details["samples"] if x["anomaly"] == "out_of_order_seq"}
    ms = [seq_commit_ms(h.seq[i]) for i in ids]
    assert gaps == {"after_resume": ms[6] - ms[5], "steady": ms[59] - ms[58]} and min(gaps.values()) > 0


def test_out_of_order_by_writer_with_increasing_seq():
    h = History()
    a = h.subscription("la")
    i1, i2 = h.insert("w1"), h.insert("w1")
    h.deliver(a, i2)
    h.deliver(a, i1, seq=h.seq[i2] + 1)               # seq order fine, writer order broken
    (r,), rep = run(h, [a])
    assert r.out_of_order["seq"] == 0 and r.out_of_order["seq_vs_writer_order"] == 1
    assert r.out_of_order["writer"] == 1 and r.out_of_order["row"] == 0
    assert rep["L6"].verdict == "fail"


def test_row_versions_out_of_order():
    h = History()
    a = h.subscription("la")
    i = h.insert("w1")
    u = h.update(i)
    h.deliver(a, u)
    h.deliver(a, i)
    (r,), rep = run(h, [a])
    assert r.out_of_order["seq"] == 1 and r.out_of_order["row"] == 1 and r.out_of_order["writer"] == 1
    assert rep["L6"].verdict == "fail"


def test_divergent_seq_across_listeners():
    h = History()
    a, b = h.subscription("la"), h.subscription("lb")
    i1, i2 = h.insert("w1"), h.insert("w2")
    for s in (a, b):
        h.deliver(s, i1)
    h.deliver(a, i2)
    h.deliver(b, i2, seq=h.seq[i2] + 5)               # same write, other _seq
    _, rep = run(h, [a, b])
    assert rep["L6"].details["seq_divergent"] == 1 and rep["L6"].verdict == "fail"
    assert rep["L6"].details["out_of_order_seq"] == 0


def test_divergent_relative_order_across_listeners():
    h = History()
    a, b = h.subscription("la"), h.subscription("lb")
    i1, i2 = h.insert("w1"), h.insert("w2")
    h.deliver(a, i1)
    h.deliver(a, i2)
    # b sees them in the other order and with swapped seqs: locally consistent, globally divergent
    h.deliver(b, i2, seq=h.seq[i1])
    h.deliver(b, i1, seq=h.seq[i2])
    _, rep = run(h, [a, b])
    d = rep["L6"].details
    assert d["seq_divergent"] == 2 and d["order_divergent"] == 1 and d["subs_diverging"] == ["lb/lb-sub"]


# ---------------------------------------------------------------- content

def test_wrong_values_old_values_deleted_flag_and_kind():
    h = History()
    a = h.subscription("la")
    i1, i2, i3 = h.insert("w1"), h.insert("w1"), h.insert("w1")
    u1, u2, u3 = h.update(i1), h.update(i2), h.update(i3)
    d1, d2 = h.delete(i1), h.delete(i2)
    for i in (i1, i2, i3):
        h.deliver(a, i)
    _, row, old, _ = h.change(u1)
    h.deliver(a, u1, row=dict(row, body="corrupt"))               # wrong new values
    h.deliver(a, u2, old=dict(h.change(u2)[2], body="not-old"))   # wrong old values
    h.deliver(a, u3, old=None)                                    # no old values at all
    _, _, tomb, _ = h.change(d1)
    h.deliver(a, d1, old=dict(tomb, _deleted=False))              # _deleted not true
    h.deliver(a, d2, old=dict(h.change(d2)[2], body="x"))         # wrong tombstone content
    extra = h.update(i3)
    h.deliver(a, extra, kind=KIND_INSERT)                         # update delivered as an insert
    (r,), rep = run(h, [a])
    assert r.by_op["update"]["wrong_values"] == 1 and r.wrong_old_values == 2
    assert r.wrong_deleted_flag == 1 and r.by_op["delete"]["wrong_values"] == 1
    assert r.by_op["update"]["wrong_kind"] == 1 and r.by_op["insert"]["wrong_values"] == 0
    assert r.lost == 0
    assert rep["L1"].verdict == "pass"
    assert rep["L2"].verdict == "fail" and "2 wrong old values" in rep["L2"].figure
    assert rep["L3"].verdict == "fail" and "1 wrong deleted flag" in rep["L3"].figure
    assert {s["what"] for s in r.samples["wrong_old_values"]} == {"digest", "no old_values"}


def test_content_not_checked_when_columns_differ():
    h = History()
    from checks import ArrivalLog, SubscriptionInfo
    log = ArrivalLog(SubscriptionInfo("lp", "proj", content_columns=()))
    log.subscribed(h.tick())
    log.ready(h.tick())
    h.deliver(log, h.insert("w1"))
    (r,), _ = run(h, [log])
    assert r.content_checked is False and r.wrong_values == 0 and r.lost == 0


# ---------------------------------------------------------------- latency

def test_latency_over_threshold_and_negative_kept():
    h = History()
    a = h.subscription("la")
    slow = h.insert("w1")
    h.deliver(a, slow, t=h.ledger.t_sent(slow) + 0.2)             # 200 ms after sending
    fast = h.insert("w1")
    h.deliver(a, fast, t=h.ledger.t_ack(fast) - 0.001)            # beat the HTTP answer by 1 ms
    (r,), rep = run(h, [a])
    assert r.latency["ack"].count_negative() == 1
    assert r.latency["ack"].min == pytest.approx(-0.001, abs=1e-6)
    v = rep["SC-054"]
    assert v.verdict == "fail" and v.value == pytest.approx(200.0, rel=0.01)
    assert v.details["sent"]["within"] == 1 and v.details["ack"]["negative"] == 1
    assert "p99 200" in v.figure
    rep2 = verdicts(h.ledger, [r], thresholds=Thresholds(latency_ms=250))
    assert rep2["SC-054"].verdict == "pass"


def test_latency_from_commit_time_in_seq():
    h = History()
    a = h.subscription("la")
    i = h.insert("w1")
    commit_ms = (h.seq[i] >> 22) + 1704067200000
    h.deliver(a, i, t=commit_ms / 1000.0 + 0.030)
    (r,), rep = run(h, [a], th=Thresholds(latency_from="commit"))
    assert r.latency["commit"].percentile(99) == pytest.approx(0.030, rel=0.01)
    assert rep["SC-054"].verdict == "pass" and "from commit" in rep["SC-054"].figure


# ---------------------------------------------------------------- counters (L7) and queue drops

def test_changes_counter_mismatch_missing_and_skipped():
    h = History()
    a, b = h.subscription("la"), h.subscription("lb")
    inserts(h, [a, b])
    ra, rb = reconcile(h.ledger, a), reconcile(h.ledger, b)
    rep = verdicts(h.ledger, [ra, rb], {ra.key: 6, rb.key: 7})
    assert rep["L7"].verdict == "fail" and rep["L7"].value == 50.0
    assert rep["L7"].details["mismatched"] == [{"sub": "lb/lb-sub", "server_changes": 7, "received": 6}]
    rep = verdicts(h.ledger, [ra, rb], {"la-sub": 6})              # bare subscription id works too
    assert rep["L7"].verdict == "inconclusive" and rep["L7"].details["missing"] == ["lb/lb-sub"]
    assert verdicts(h.ledger, [ra, rb], None)["L7"].verdict == "skipped"
    assert verdicts(h.ledger, [ra, rb], {ra.key: 6, rb.key: 6})["L7"].verdict == "pass"
    # nothing counted and nothing received: zeros that agree verify nothing
    quiet = [reconcile(h.ledger, h.subscription("lq"))]
    v = verdicts(h.ledger, quiet, {quiet[0].key: 0})["L7"]
    assert v.verdict == "skipped" and v.figure == "no change counted or received by any of 1 subscriptions: nothing to compare"


def test_queue_drops_named_and_accepted():
    h = History()
    a = h.subscription("la")
    ids = inserts(h, [])
    for i in ids[:2] + ids[3:]:
        h.deliver(a, i)
    r = reconcile(h.ledger, a)
    counters = {r.key: 5}                      # the server counted only what it delivered
    deficit = "system.live changes counters' deficit"
    rep = verdicts(h.ledger, [r], counters)
    assert rep["L1"].verdict == "fail" and rep["L7"].verdict == "pass"
    assert rep["L1"].details["known_behaviours"] == {
        "queue-drops": {"count": 1, "accepted": False, "accepted_count": 0, "server_count": 1,
                        "server_count_from": deficit}}
    assert f"known behaviour queue-drops: 1 (the server counted 1 full-queue drops: {deficit})" in rep["L1"].figure
    # without a count of the server's own (no log, no stats), its counters' deficit is the evidence
    accept = {"queue-drops"}
    rep = verdicts(h.ledger, [r], counters, thresholds=Thresholds(accepted_known=accept))
    assert rep["L1"].verdict == "pass", rep["L1"].figure
    # the server's log counted none: the loss stays a loss
    rep = verdicts(h.ledger, [r], counters, thresholds=Thresholds(accepted_known=accept, queue_drops_counted=0,
                                                                  queue_drops_source="server log x.log"))
    assert rep["L1"].verdict == "fail" and "1 not accepted: loss" in rep["L1"].figure, rep["L1"].figure
    # accepted with the server's own count of full-queue drops: accepted up to that count
    rep = verdicts(h.ledger, [r], counters, thresholds=Thresholds(accepted_known=accept, queue_drops_counted=1,
                                                                  queue_drops_source="server log x.log"))
    assert rep["L1"].verdict == "pass", rep["L1"].figure
    assert rep["L1"].details["known_behaviours"]["queue-drops"] == {
        "count": 1, "accepted": True, "accepted_count": 1, "server_count": 1, "server_count_from": "server log x.log"}
    assert "(the server counted 1 full-queue drops: server log x.log)" in rep["L1"].figure
    rep = verdicts(h.ledger, [r], {r.key: 6})  # counted but not received: not a queue drop
    assert rep["L1"].details["known_behaviours"] == {} and rep["L7"].verdict == "fail"
    # no counters and no count: nothing is named queue-drops, whatever is accepted
    rep = verdicts(h.ledger, [r], None, thresholds=Thresholds(accepted_known=accept))
    assert rep["L1"].verdict == "fail" and rep["L1"].details["known_behaviours"] == {}


def test_loss_is_placed_on_the_slow_listeners_subscriptions():
    h = History()
    slow, fast = h.subscription("ls"), h.subscription("lf")
    ids = inserts(h, [])
    for i in ids:
        h.deliver(fast, i)
    for i in ids[:1] + ids[3:]:
        h.deliver(slow, i)
    results = [reconcile(h.ledger, slow), reconcile(h.ledger, fast)]
    rep = verdicts(h.ledger, results, None, {"slow_listeners": ["ls"]})
    assert rep["L1"].verdict == "fail"
    assert rep["L1"].details["slow_listeners"] == {"listeners": 1, "subscriptions": 1, "lost": 2,
                                                   "lost_elsewhere": 0}
    assert "slow listeners' subscriptions lost 2, the others none" in rep["L1"].figure
    rep = verdicts(h.ledger, results, None, {"slow_listeners": ["lf"]})
    assert rep["L1"].details["slow_listeners"]["lost_elsewhere"] == 2
    assert "slow listeners' subscriptions lost 0, the others 2" in rep["L1"].figure
    assert "slow_listeners" not in verdicts(h.ledger, results, None)["L1"].details


# ---------------------------------------------------------------- outcomes

def test_unknown_outcome_missing_is_not_lost_delivered_proves_commit():
    h = History()
    a = h.subscription("la")
    u1 = h.insert("w1", outcome=OUTCOME_UNKNOWN)
    u2 = h.insert("w1", outcome=OUTCOME_UNKNOWN)
    ok = h.insert("w1")
    h.deliver(a, u2)
    h.deliver(a, ok)
    (r,), rep = run(h, [a])
    assert r.lost == 0 and r.unknown_missing == 1 and r.unknown_delivered == 1
    assert r.unexpected_total == 0 and r.latency["ack"].count == 1
    assert rep["L1"].verdict == "pass"
    assert rep["L1"].details["unknown_outcome_missing"] == 1


def test_pending_write_delivered_before_finish():
    h = History()
    a = h.subscription("la")
    i = h.insert("w1", finish=False)                  # notification beats the HTTP answer
    h.deliver(a, i)
    r1 = reconcile(h.ledger, a)
    assert r1.unknown_delivered == 1 and r1.unexpected_total == 0
    h.ledger.finish(i, 1)
    r2 = reconcile(h.ledger, a)
    assert r2.unknown_delivered == 0 and r2.by_op["insert"]["delivered"] == 1 and r2.lost == 0


def test_rejected_write_delivered_is_unexpected():
    h = History()
    a = h.subscription("la")
    i = h.insert("w1", outcome=OUTCOME_REJECTED)
    h.deliver(a, i)
    (r,), rep = run(h, [a])
    assert r.unexpected["rejected"] == 1 and r.lost == 0 and r.expected == 0
    assert rep["L1"].verdict == "fail"


# ---------------------------------------------------------------- windows: live-only and snapshot

def test_live_only_subscriber_does_not_expect_earlier_writes():
    h = History()
    inserts(h, [])
    a = h.subscription("late")
    ids = inserts(h, [a])
    (r,), rep = run(h, [a])
    assert r.lost == 0 and r.not_expected_missing == 6 and r.expected == len(ids)
    assert rep["L1"].verdict == "pass"


def test_boundary_write_may_arrive_or_not_on_live_only():
    h = History()
    a = h.subscription("la", subscribe=False)
    b = h.subscription("lb", subscribe=False)
    for s in (a, b):
        s.subscribed(h.t)
    i = h.insert("w1")                                # between subscribe and ready
    for s in (a, b):
        s.ready(h.tick())
    h.deliver(a, i)
    ra, rb = reconcile(h.ledger, a), reconcile(h.ledger, b)
    assert (ra.lost, rb.lost, rb.not_expected_missing) == (0, 0, 1)


def test_snapshot_shows_latest_state_superseded_and_deleted_not_expected():
    h = History()
    i1, i2, i3 = h.insert("w1"), h.insert("w1"), h.insert("w1")
    u1 = h.update(i1)
    h.delete(i3)
    s = h.subscription("ls", snapshot=True, subscribe=False)
    s.subscribed(h.tick())
    h.deliver_snapshot(s, i2)
    h.deliver_snapshot(s, u1)
    s.ready(h.tick())
    (r,), rep = run(h, [s])
    # i1 (superseded by u1) and i3 (by its delete) are superseded; the delete itself happened before
    assert r.lost == 0 and r.superseded_before_snapshot == 2 and r.deleted_before_snapshot == 1
    assert r.by_op["update"]["in_snapshot"] == 1 and r.not_expected_missing == 0
    assert rep["L1"].verdict == "pass"


def test_snapshot_missing_row_and_stale_row():
    h = History()
    i1, i2 = h.insert("w1"), h.insert("w1")
    u2 = h.update(i2)
    s = h.subscription("ls", snapshot=True, subscribe=False)
    s.subscribed(h.tick())
    h.deliver_snapshot(s, i2)                          # stale: u2 was acknowledged before subscribe
    s.ready(h.tick())                                  # and i1 is missing altogether
    (r,), rep = run(h, [s])
    assert r.by_op["insert"]["lost"] == 1 and r.by_op["update"]["lost"] == 1
    assert r.unexpected["stale_snapshot_row"] == 1
    assert {x["why"] for x in r.samples["lost"]} == {"missing from the snapshot",
                                                     "snapshot shows an older version"}
    assert rep["L1"].verdict == "fail" and rep["L2"].verdict == "fail"


def test_snapshot_boundary_write_as_snapshot_or_change_never_both():
    def scenario(how):
        h = History()
        s = h.subscription("ls", snapshot=True, subscribe=False)
        s.subscribed(h.tick())
        i = h.insert("w1")                             # between subscribe and ready
        if how in ("snapshot", "both"):
            h.deliver_snapshot(s, i)
        s.ready(h.tick())
        if how in ("change", "both"):
            h.deliver(s, i)
        j = h.insert("w1")
        h.deliver(s, j)
        return reconcile(h.ledger, s)
    assert scenario("snapshot").lost == 0 and scenario("snapshot").duplicated == 0
    assert scenario("change").lost == 0 and scenario("change").duplicated == 0
    both = scenario("both")
    assert both.duplicated == 1 and both.lost == 0
    none = scenario("none")
    assert none.lost == 1 and none.samples["lost"][0]["why"] == "missing from the snapshot"


def test_snapshot_then_change_stream_must_be_contiguous():
    h = History()
    i = h.insert("w1")
    s = h.subscription("ls", snapshot=True, subscribe=False)
    s.subscribed(h.tick())
    h.deliver_snapshot(s, i)
    s.ready(h.tick())
    u1 = h.update(i)
    u2 = h.update(i)
    h.deliver(s, u2)                                   # u1 skipped
    (r,), _ = run(h, [s])
    assert r.by_op["update"]["lost"] == 1 and r.samples["lost"][0]["n"] == h.ledger.wseq(u1)


# ---------------------------------------------------------------- resume (L9)

def resumed(h, s, snapshot_rows, resume_from=None):
    s.subscribed(h.tick(), resume_from=s.seq[-1] if resume_from is None else resume_from)
    for i in snapshot_rows:
        h.deliver_snapshot(s, i)
    s.ready(h.tick())


def test_resume_collapses_superseded_updates():
    h = History()
    s = h.subscription("ls")
    i = h.insert("w1")
    h.deliver(s, i)
    s.disconnected(h.tick())
    h.update(i)
    u2 = h.update(i)
    j = h.insert("w2")
    resumed(h, s, [u2, j])
    k = h.insert("w1")
    h.deliver(s, k)
    (r,), rep = run(h, [s])
    assert r.lost == 0 and r.collapsed_gap == 1 and r.resumes == 1 and r.duplicated == 0
    assert rep["L9"].verdict == "pass"
    assert "1 superseded versions collapsed in gaps" in rep["L9"].figure
    assert rep["L9"].details["collapsed_in_gap"] == 1


def test_resume_deletes_not_replayed_known_behaviour():
    h = History()
    s = h.subscription("ls")
    i, j = h.insert("w1"), h.insert("w1")
    h.deliver(s, i)
    h.deliver(s, j)
    s.disconnected(h.tick())
    h.delete(i)
    t = h.insert("w2")
    h.update(t)
    h.delete(t)                                        # inserted, updated, deleted within the gap
    resumed(h, s, [])
    (r,), rep = run(h, [s])
    assert r.lost == 0 and r.deletes_not_replayed == 2 and r.collapsed_gap == 2
    v = rep["L9"]
    assert v.verdict == "fail" and v.details["known_behaviours"] == {
        "resume-deletes-not-replayed": {"count": 2, "accepted": False}}
    assert "known behaviour resume-deletes-not-replayed: 2" in v.figure
    ok = verdicts(h.ledger, [r], thresholds=Thresholds(accepted_known={"resume-deletes-not-replayed"}))
    assert ok["L9"].verdict == "pass" and ok["L3"].verdict == "pass"
    assert ok["L9"].details["known_behaviours"]["resume-deletes-not-replayed"]["accepted"] is True


def test_resume_missing_gap_write_is_lost():
    h = History()
    s = h.subscription("ls")
    h.deliver(s, h.insert("w1"))
    s.disconnected(h.tick())
    gap = h.insert("w1")
    resumed(h, s, [])                                  # the resume snapshot forgot it
    (r,), rep = run(h, [s])
    assert r.lost == 1 and r.samples["lost"][0]["n"] == h.ledger.wseq(gap)
    assert rep["L9"].verdict == "fail" and rep["L9"].figure.startswith("1 resumes on 1 subs: lost 1 of 2")


def test_in_flight_at_disconnect_proven_lost_or_forgiven():
    h = History()
    s = h.subscription("ls")
    i1, i2, i3 = h.insert("w1"), h.insert("w1"), h.insert("w1")
    h.deliver(s, i1)
    h.deliver(s, i3)                                   # i2 was dispatched before i3: lost
    i4 = h.insert("w1")                                # sent, then the socket drops: in flight
    s.disconnected(h.tick())
    (r,), _ = run(h, [s])
    assert r.lost == 1 and r.samples["lost"][0]["n"] == 2
    assert r.not_expected_missing == 1                # i4: never resumed, not expected
    resumed(h, s, [])                                  # a resume must deliver i4's row
    (r,), _ = run(h, [s])
    assert r.lost == 2
    assert [x["n"] for x in r.samples["lost"]] == [2, 4]
    assert h.ledger.wseq(i4) == 4


# ---------------------------------------------------------------- inconclusive and skipped

def test_drain_timeout_makes_loss_inconclusive():
    h = History()
    a = h.subscription("la")
    ids = inserts(h, [])
    for i in ids[:-1]:
        h.deliver(a, i)
    (r,), rep = run(h, [a], run_flags={"drain_timed_out": True})
    assert r.lost == 1
    assert rep["L1"].verdict == "inconclusive" and rep["L1"].figure.endswith("(drain timed out)")
    assert "drain timed out" in rep["L1"].details["incomplete"][0]
    h.deliver(a, ids[-1])
    h.deliver(a, ids[-1])                              # a duplicate still fails
    (r,), rep = run(h, [a], run_flags={"drain_timed_out": True})
    assert rep["L1"].verdict == "fail"


def test_incomplete_evidence_never_passes():
    h = History()
    a, gone = h.subscription("la"), h.subscription("gone")
    inserts(h, [a])
    (ra, rg), rep = run(h, [a, gone])
    # a ready subscription that received nothing, of a listener still connected: that is loss, not
    # missing evidence, and it touches no other subscription's verdicts
    assert not rg.vanished and rg.lost == 6
    assert rep["L1"].verdict == "fail" and rep["L1"].details["lost"] == 6 and "incomplete" not in rep["L1"].details
    assert rep["L6"].verdict == "pass" and rep["L7"].verdict != "inconclusive"
    # the listener's session vanished (it could not resume): its evidence is missing, inconclusive
    rg.vanished = True
    rep = verdicts(h.ledger, [ra, rg], None, None, None)
    assert rep["L1"].verdict == "inconclusive" and "vanished" in rep["L1"].details["incomplete"][0]
    _, rep = run(h, [a], run_flags={"missing_listeners": ["l9"]})
    assert rep["L1"].verdict == "inconclusive" and rep["SC-054"].verdict == "inconclusive"


def test_ledger_partial_explains_unexpected():
    h = History()
    a = h.subscription("la")
    h.deliver(a, h.insert("w1"))
    row = h.wire_row(0)
    a.record_row(KIND_INSERT, dict(row, writer="w-of-a-lost-worker", id="x:1", n="1"), None, None, h.tick())
    (r,), rep = run(h, [a], run_flags={"ledger_partial": True})
    assert r.unexpected["never_written"] == 1
    assert rep["L1"].verdict == "inconclusive"
    (r,), rep = run(h, [a])
    assert rep["L1"].verdict == "fail"


def test_skipped_and_minimum_volumes():
    h = History()
    a = h.subscription("la")
    h.deliver(a, h.insert("w1"))
    _, rep = run(h, [a])
    assert rep["L4"].verdict == "skipped"              # one writer
    assert rep["L5"].verdict == "skipped" and rep["L8"].verdict == "skipped"
    assert rep["L9"].verdict == "skipped" and rep["L7"].verdict == "skipped"
    assert rep["L2"].verdict == "skipped" and rep["L3"].verdict == "skipped"
    assert rep["L10"].verdict == "inconclusive" and rep["L10"].value == 1
    assert rep["L1"].verdict == "pass"
    _, rep = run(h, [a], th=Thresholds(high_frequency_min=1))
    assert rep["L10"].verdict == "pass"
    empty = History()
    _, rep = run(empty, [empty.subscription("x")])
    assert rep["L1"].verdict == "skipped" and rep["SC-054"].verdict == "skipped"
    assert rep["L6"].verdict == "skipped" and rep["L10"].verdict == "skipped"


def test_resume_delivering_seq_not_after_from():
    h = History()
    s = h.subscription("ls")
    i, j = h.insert("w1"), h.insert("w1")
    h.deliver(s, i)
    s.disconnected(h.tick())
    resumed(h, s, [], resume_from=h.seq[j] + 10)       # client asked from beyond j
    h.deliver_snapshot(s, j)                           # server sent _seq <= from anyway
    (r,), rep = run(h, [s])
    assert r.out_of_order["seq_before_from"] == 1 and r.duplicated == 0
    assert rep["L6"].verdict == "fail"


def test_fresh_resubscribe_snapshot_is_not_duplicate():
    h = History()
    s = h.subscription("ls", snapshot=True)
    i = h.insert("w1")
    h.deliver(s, i)
    s.disconnected(h.tick())
    s.subscribed(h.tick())                             # not a resume: full snapshot again
    h.deliver_snapshot(s, i)
    s.ready(h.tick())
    (r,), _ = run(h, [s])
    assert r.duplicated == 0 and r.lost == 0 and r.resumes == 0 and r.epochs == 2


def test_report_is_json_serialisable():
    import json
    h = History()
    a, b = h.subscription("la"), h.subscription("lb")
    ids = inserts(h, [a])
    for i in ids[1:]:
        h.deliver(b, i)
    results, rep = run(h, [a, b], counters={"la/la-sub": 6})
    from checks import verdicts_to_dict
    text = json.dumps({"verdicts": verdicts_to_dict(rep), "subs": [r.to_dict() for r in results]})
    back = json.loads(text)
    assert back["verdicts"]["L1"]["verdict"] == "fail" and back["subs"][1]["lost"] == 1
