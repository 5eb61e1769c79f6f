"""WriteLedger, ArrivalLog, content digests and the latency histogram (no sockets)."""


import pytest

from checks import (KIND_DELETE, KIND_INSERT, KIND_UPDATE, OP_DELETE, OP_INSERT, OP_UPDATE,
                    OUTCOME_ACK, OUTCOME_PENDING, OUTCOME_REJECTED, OUTCOME_UNKNOWN, ArrivalLog,
                    LatencyHistogram, SubscriptionInfo, Workload, WriteLedger, content_digest)
from checks.arrivals import FLAG_DELETED_OK, FLAG_MALFORMED, FLAG_NO_OLD
from checks.model import old_values_digest, seq_commit_ms

WL = Workload("t", "shared", ("body", "color"))


def make():
    t = [100.0]
    return WriteLedger(WL, clock=lambda: t[0]), t


def test_digest_str_equivalence_and_missing():
    cols = ("id", "n", "body")
    assert content_digest({"id": "w:1", "n": 5, "body": "x"}, cols) == \
        content_digest({"id": "w:1", "n": "5", "body": "x", "_seq": "9"}, cols)
    assert content_digest({"id": "w:1", "n": 5}, cols) != content_digest({"id": "w:1", "n": 5, "body": ""}, cols)
    assert content_digest({"id": "w:1", "n": 5, "body": "None"}, cols) != content_digest({"id": "w:1", "n": 5}, cols)


def test_begin_assigns_wseq_pk_and_row():
    led, t = make()
    a = led.begin("w1", OP_INSERT, None, {"body": "a", "color": "red"})
    b = led.begin("w2", OP_INSERT, None, {"body": "b", "color": "red"})
    c = led.begin("w1", OP_INSERT, None, {"body": "c", "color": "red"})
    assert (led.wseq(a), led.wseq(b), led.wseq(c)) == (1, 1, 2)
    assert (led.pk(a), led.pk(c)) == ("w1:1", "w1:2")
    assert led.row(c) == {"id": "w1:2", "writer": "w1", "n": 2, "body": "c", "color": "red"}
    assert led.t_sent(a) == 100.0 and led.outcome(a) == OUTCOME_PENDING and led.t_ack(a) is None
    t[0] = 100.5
    led.finish(a, OUTCOME_ACK)
    assert led.t_ack(a) == 100.5
    assert led.find("w1", 2) == c and led.find("w1", 3) == -1 and led.find("nobody", 1) == -1
    with pytest.raises(ValueError):
        led.begin("w1", OP_INSERT, None, {"body": "x", "n": 99})


def test_update_changed_columns_old_digest_and_delete():
    led, _ = make()
    a = led.begin("w1", OP_INSERT, None, {"body": "a", "color": "red"})
    u = led.begin("w1", OP_UPDATE, "w1:1", {"body": "b"})      # partial values are merged
    assert led.row(u) == {"id": "w1:1", "writer": "w1", "n": 2, "body": "b", "color": "red"}
    # KalamDB's old_values: _seq, id and the previous values of the changed columns (n, body)
    old = {"_seq": "7", "id": "w1:1", "n": "1", "body": "a"}
    assert led._old_digest[u] == old_values_digest(old)
    assert led._digest[u] == content_digest({"id": "w1:1", "writer": "w1", "n": "2", "body": "b",
                                             "color": "red"}, WL.row_columns)
    d = led.begin("w1", OP_DELETE, "w1:1")
    assert led._digest[d] == led._digest[u]                    # tombstone = the deleted version
    assert led.versions(a) == [a, u, d] and led.delete_of(a) == d
    assert led.prev_version(d) == u and led.next_version(a) == u
    with pytest.raises(ValueError):
        led.begin("w1", OP_UPDATE, "w1:1", {"body": "z"})      # deleted
    with pytest.raises(ValueError):
        led.begin("w2", OP_INSERT, "w1:1", {"body": "z"})      # keys are never reused


def test_rejected_update_rolls_back_and_unlinks():
    led, _ = make()
    a = led.begin("w1", OP_INSERT, None, {"body": "a", "color": "red"})
    led.finish(a, OUTCOME_ACK)
    u1 = led.begin("w1", OP_UPDATE, "w1:1", {"body": "b"})
    led.finish(u1, OUTCOME_REJECTED)
    assert led.next_version(a) == -1 and led.versions(a) == [a]
    u2 = led.begin("w1", OP_UPDATE, "w1:1", {"color": "blue"})
    assert led.prev_version(u2) == a
    assert led.row(u2)["body"] == "a"
    assert led._old_digest[u2] == old_values_digest({"id": "w1:1", "n": 1, "color": "red"})
    led.finish(u2, OUTCOME_UNKNOWN)
    assert led.t_ack(u2) is None and led.outcome(u2) == OUTCOME_UNKNOWN
    assert led.counts()["update"] == {"pending": 0, "ack": 0, "rejected": 1, "unknown": 1}


def test_rejected_delete_and_insert_roll_back():
    led, _ = make()
    a = led.begin("w1", OP_INSERT, None, {"body": "a", "color": "red"})
    led.finish(a, OUTCOME_ACK)
    d = led.begin("w1", OP_DELETE, "w1:1")
    assert led.row(d) is None
    led.finish(d, OUTCOME_REJECTED)                       # the key lives on, as version a
    assert led.row(a) == {"id": "w1:1", "writer": "w1", "n": 1, "body": "a", "color": "red"}
    u = led.begin("w1", OP_UPDATE, "w1:1", {"body": "b"})
    assert led.prev_version(u) == a and led.row(u)["color"] == "red"
    i = led.begin("w1", OP_INSERT, "k2", {"body": "x"})
    led.finish(i, OUTCOME_REJECTED)                       # never existed: the key may be inserted again
    led.begin("w1", OP_INSERT, "k2", {"body": "y"})
    with pytest.raises(ValueError):
        led.begin("w1", OP_INSERT, "k2", {"body": "z"})       # that one did


def test_the_ledger_keeps_no_gc_tracked_object_per_write():
    # every full collection of the cyclic GC traverses every tracked object: a container per key made the
    # writers' ledger cost grow faster than its writes (bench/scaling_bench.py: 16 us/write at 1M writes,
    # 22.5 at 3M, GC pauses of 3 s) and stalled every greenlet of the process meanwhile
    import gc

    from gc_growth import tracked_objects_added
    led, _ = make()
    def burst(k0):
        for k in range(k0, k0 + 3000):
            i = led.begin("w1", OP_INSERT, None, {"body": f"b{k}", "color": "red"})
            led.finish(i, OUTCOME_ACK)
            u = led.begin("w1", OP_UPDATE, led.pk(i), {"body": f"c{k}"})
            led.finish(u, OUTCOME_ACK)
            if k % 2:
                led.finish(led.begin("w1", OP_DELETE, led.pk(i)), OUTCOME_ACK)
    burst(0)
    assert tracked_objects_added(lambda: burst(3000)) < 100
    # nor a tracked container of one entry per key: a full collection would visit every entry
    assert not any(map(gc.is_tracked, (led._latest, led._rows, led._prev_rows)))


def test_the_ledgers_kept_rows_hold_their_own_size_not_orjsons_buffer():
    # orjson's bytes keep the 4 KiB buffer they were written into: kept as they came, every live row of a
    # 10-million-write run held 4,097 bytes (bench/scaling_bench.py: 3.2 KB per ledger write, the run could
    # not fit in 24 GiB)
    import tracemalloc

    led, _ = make()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(2000):
            led.finish(led.begin("w1", OP_INSERT, None, {"body": f"{k:010d}" + "x" * 90, "color": "red"}),
                       OUTCOME_ACK)
        per_write = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert len(led._rows) == 2000 and led.row(0)["body"] == "0000000000" + "x" * 90
    assert per_write < 1000, per_write   # the row's JSON (~150 B), its key, the dict slots and the columns


def test_serialise_and_merge_ledgers_of_two_processes():
    l1, _ = make()
    l2, _ = make()
    a = l1.begin("w1", OP_INSERT, None, {"body": "a", "color": "r"}, owner="u1", group="g1")
    l1.begin("w1", OP_UPDATE, l1.pk(a), {"body": "b"})
    b = l2.begin("w2", OP_INSERT, None, {"body": "x", "color": "r"}, owner="u2")
    l2.begin("w2", OP_DELETE, l2.pk(b))
    l2.finish(b, OUTCOME_ACK, t_ack=101.0)
    shipped = WriteLedger.from_bytes(l2.to_bytes())
    assert list(shipped.iter_writes()) == list(l2.iter_writes())
    l1.extend(shipped)
    assert len(l1) == 4
    i = l1.find("w2", 1)
    assert i == 2 and l1.pk(i) == "w2:1" and l1.owner(i) == "u2" and l1.t_ack(i) == 101.0
    assert l1.versions(i) == [2, 3] and l1.op(3) == OP_DELETE and l1.group(l1.find("w1", 2)) == "g1"
    with pytest.raises(ValueError):
        l1.extend(WriteLedger.from_bytes(l2.to_bytes()))      # writer w2 already merged


def test_a_replica_kept_by_deltas_equals_its_ledger_and_each_delta_carries_only_what_changed():
    import random
    rnd = random.Random(7)
    led, t = make()
    rep = None
    live, pending, sizes = [], [], []
    for step in range(40):
        for _ in range(rnd.randrange(1, 30)):
            t[0] += 0.01
            w = f"w{rnd.randrange(3)}"
            mine = [pk for pk in live if pk.startswith(w + ":")]
            r = rnd.random()
            if mine and r < 0.3:     # an update of any earlier row: its old version's next changes
                i = led.begin(w, OP_UPDATE, rnd.choice(mine), {"body": f"u{step}"})
            elif mine and r < 0.4:
                pk = rnd.choice(mine)
                i = led.begin(w, OP_DELETE, pk)
                live.remove(pk)
            else:
                i = led.begin(w, OP_INSERT, None, {"body": "b", "color": "c"})
                live.append(led.pk(i))
            pending.append(i)
        rnd.shuffle(pending)
        for i in pending[:len(pending) // 2]:  # answers come late, some for writes of earlier deltas
            outcome = rnd.choice((OUTCOME_ACK, OUTCOME_ACK, OUTCOME_ACK, OUTCOME_REJECTED, OUTCOME_UNKNOWN))
            led.finish(i, outcome, t_ack=t[0])
            if outcome == OUTCOME_REJECTED:
                live = [pk for pk in live if pk in led._rows]
        del pending[:len(pending) // 2]
        if step == 25:
            led.shift_times(0.5)     # every time moves: the next delta is the whole ledger again
        d = led.delta()
        sizes.append((d["start"], d["n"], len(d["touched"]) // 8))
        if rep is None:
            rep = WriteLedger.replica(d)
        else:
            rep.apply(d)
        assert list(rep.iter_writes()) == list(led.iter_writes()), step
        assert rep.counts() == led.counts()
        for w in led.writers():
            assert [rep.find(w, k) for k in range(1, 6)] == [led.find(w, k) for k in range(1, 6)]
    # each delta holds the writes begun since the one before (the first, and the one after the shift: all)
    assert sizes[0][0] == 0 and sizes[25][0] == 0
    assert all(sizes[k][0] == sizes[k - 1][1] for k in range(1, 40) if k != 25)
    assert sum(n - s for s, n, _ in sizes) == len(led) + sizes[24][1]
    assert all(0 < touched <= 60 for s, n, touched in sizes[1:25])
    with pytest.raises(ValueError):
        rep.apply(led.delta() | {"start": 3})   # not where the replica stands


def test_arrival_log_record_row_extracts_and_flags():
    log = ArrivalLog(SubscriptionInfo("l1", "s1", content_columns=("body", "color")))
    log.subscribed(10.0)
    log.ready(10.1)
    row = {"id": "w1:1", "writer": "w1", "n": "1", "body": "a", "color": "r", "_seq": "77", "_deleted": False}
    log.record_row(KIND_INSERT, row, None, None, 10.2)
    log.record_row(KIND_UPDATE, dict(row, n="2", _seq="78"), None, 78, 10.3)     # no old_values
    tomb = dict(row, n="2", _seq="79", _deleted=True)
    log.record_row(KIND_DELETE, None, tomb, 79, 10.4)
    log.record_row(KIND_DELETE, None, dict(tomb, _deleted="true"), 80, 10.5)     # not boolean true
    log.record_row(KIND_INSERT, {"id": "x", "_seq": "81"}, None, None, 10.6)     # no writer / n
    assert list(log.n) == [1, 2, 2, 2, -1] and list(log.seq) == [77, 78, 79, 80, 81]
    assert list(log.flags) == [0, FLAG_NO_OLD, FLAG_DELETED_OK, 0, FLAG_MALFORMED]
    assert log.digest[0] == content_digest(row, ("id", "writer", "n", "body", "color"))
    assert log.digest[2] == content_digest(dict(row, n=2), ("id", "writer", "n", "body", "color"))
    log.disconnected(11.0)
    assert log.subscribed(12.0, resume_from=81) == 1
    log.ready(12.5)
    assert log.gaps == [(10.6, 12.5)]
    assert log.epochs[1].snapshot and log.epochs[1].is_resume and log.epochs[1].start == 5


def test_arrival_log_is_compact():
    log = ArrivalLog(SubscriptionInfo("l1", "s1"))
    for i in range(100_000):
        log.record(KIND_INSERT, "w1", i, i, 1.0, 7, 0, False)
    assert log.nbytes() / len(log) <= 40


def test_histogram_percentiles_negative_and_merge():
    h = LatencyHistogram()
    h.add_many([i / 1000.0 for i in range(1, 1001)])     # 1..1000 ms
    assert abs(h.percentile(50) - 0.5) / 0.5 < 0.01
    assert abs(h.percentile(99) - 0.99) / 0.99 < 0.01
    assert h.max == 1.0 and h.min == 0.001
    g = LatencyHistogram()
    g.add_many([-0.004, -0.002, 0.0])
    h.merge(g)
    assert h.count == 1003 and h.min == -0.004 and h.count_negative() == 2
    assert abs(h.percentile(0.05) - (-0.004)) < 0.00002      # negatives are kept, not clamped
    assert abs(h.percentile(0.1) - (-0.002)) < 0.00001       # nearest rank 2 of 1003
    s = h.summary_ms(50)
    assert s["within"] == 53 and s["negative"] == 2
    assert LatencyHistogram.from_dict(h.to_dict()).summary_ms() == h.summary_ms()


def test_seq_commit_ms():
    seq = ((1_750_000_000_123 - 1704067200000) << 22) | 5
    assert seq_commit_ms(seq) == 1_750_000_000_123
