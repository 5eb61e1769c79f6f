"""The verifier: (ledger, arrival logs) -> per-subscription results -> scenario verdicts.

Pure functions, no sockets, no clocks: a recorded history goes in, a verdict map comes out.

    results = [reconcile(ledger, log) for log in logs]
    report = verdicts(ledger, results, counters={"l07/l07-events": 12000}, run={"drain_timed_out": False})
    json.dumps({k: v.to_dict() for k, v in report.items()})

How an arrival is matched to a write
------------------------------------
An insert/update/snapshot row names its write by (writer, n). A delete's tombstone carries the n of
the version it deleted, so the delete is the ledger's next version of that write's key.

What a subscription is expected to receive (its windows)
--------------------------------------------------------
A write "matches" a subscription when it is on the same table kind, has the subscriber as owner on a
USER table, and has the subscription's group when it has one. For a matching write W with outcome
ACK that did not arrive, in this order (the first rule that applies decides):

1. Contiguity (per key, per epoch): if the subscription received, in one epoch, a later version of
   W's key as a change, and W lies between that change and the state the listener had before it (the
   snapshot row of that epoch, else the newest version it had seen, else (live-only epoch) the first
   change of the key in that epoch), W is LOST: the change stream skipped it.
2. Live window: W was sent at or after the epoch's ready time (t_sent >= t_ready) and
   - the epoch is still open at the end of the run (no disconnect; `finished()` does not close it)
     and W was sent before the end, or
   - the epoch ended by a disconnect and a LATER write of the same writer arrived as a change in that
     epoch (per-writer commit order proves W was committed and dispatched first),
   then W is LOST, even if a later resume snapshot shows the row (the notification itself was lost).
   Writes of a closed epoch without such proof were possibly in flight when the socket dropped.
3. Snapshot scope: for every epoch with a snapshot (the initial snapshot when requested, and every
   resume), W is in scope when it was sent before that epoch's ready time, after the previous epoch's
   ready time (no lower bound for the first epoch), and is newer than anything the listener had seen
   of that key before the epoch. In scope, W is
   - COLLAPSED if the snapshot shows a newer version of the key, or a newer version was acknowledged
     before the subscribe (superseded: counted, not lost);
   - for a key deleted before ready: the DELETE itself is "resume-deletes-not-replayed" (a known
     KalamDB behaviour: resume snapshots filter `_deleted = false`; on the initial snapshot it is
     simply "deleted before snapshot"), earlier versions are collapsed;
   - otherwise LOST (it should be in the snapshot as the row's current state, or arrive as a change).
4. Anything else is not expected (acknowledged before a live-only subscribe, after the end, in
   flight at a disconnect that was never resumed, or in the subscribe-to-ready boundary of a
   live-only subscribe): receiving it is fine, missing it is fine.

A write with outcome UNKNOWN (or never finished) that did not arrive is never lost (counted as
`unknown_missing`); if it arrived, that proves it committed. A REJECTED write that arrives is
unexpected.

Arrival anomalies: duplicated (the same write received twice by one subscription, in any epochs;
snapshot rows of a fresh non-resume re-subscribe are not duplicates), unexpected (never written:
unknown writer/n, a row naming a delete's n, a delete of a version the ledger never deleted;
rejected; filter mismatch; stale snapshot row: the snapshot shows a version superseded before the
subscribe), foreign (another owner's row on a USER table: a security violation), out of order
(`_seq` not strictly increasing within an epoch, a resume delivering `_seq <= from`, per writer or
per row the writes not in their order), wrong content (row digest, update old values digest,
delete without `_deleted: true`, change type not the write's op).

Latency: one sample per first change arrival, from three start points: time sent, time acknowledged
(ACK only) and the commit time encoded in `_seq`. Negative samples are kept as they are.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import and_, ge, itemgetter, le, ne
from typing import Iterable, Mapping, Optional, Union

import numpy as np

from .arrivals import FLAG_DELETED_OK, FLAG_MALFORMED, FLAG_NO_OLD, ArrivalLog
from .histogram import LatencyHistogram
from .ledger import LedgerView, WriteLedger
from .model import (KIND_DELETE, KIND_NAMES, KIND_SNAPSHOT, KIND_UPDATE, OP_DELETE,
                    OP_NAMES, OP_UPDATE, OUTCOME_ACK, OUTCOME_NAMES, OUTCOME_PENDING,
                    OUTCOME_REJECTED, OUTCOME_UNKNOWN, seq_commit_ms, seq_commit_seconds)

INF = float("inf")
LATENCY_STARTS = ("sent", "ack", "commit")
KNOWN_RESUME_DELETES = "resume-deletes-not-replayed"
KNOWN_QUEUE_DROPS = "queue-drops"


@dataclass
class ReconcileConfig:
    sample_limit: int = 10          # offending writes kept per anomaly kind


def _op_counts() -> dict:
    return {name: {"expected": 0, "delivered": 0, "as_change": 0, "in_snapshot": 0, "lost": 0,
                   "duplicated": 0, "wrong_values": 0, "wrong_kind": 0}
            for name in OP_NAMES.values()}


@dataclass
class SubscriptionResult:
    """Everything reconcile() found for one subscription. `by_op[op]` counts writes (expected =
    delivered + lost); the other counters count arrivals or writes as their names say."""

    key: str
    listener: str
    subscription_id: str
    owner: str
    group: str
    table: str
    table_kind: str
    snapshot: bool
    epochs: int = 0
    resumes: int = 0
    arrivals: int = 0
    change_messages: int = 0              # every change message, valid or not
    change_messages_last_epoch: int = 0   # what system.live.changes should equal (L7)
    snapshot_rows: int = 0
    by_op: dict = field(default_factory=_op_counts)
    unexpected: dict = field(default_factory=lambda: {"never_written": 0, "rejected": 0,
                                                      "filter_mismatch": 0, "stale_snapshot_row": 0})
    foreign: int = 0
    malformed: int = 0
    out_of_order: dict = field(default_factory=lambda: {"seq": 0, "seq_before_from": 0, "writer": 0,
                                                        "row": 0, "seq_vs_writer_order": 0})
    # where each out-of-order _seq arrived: in the first HANDOVER_CHANGES changes after a subscribe or a
    # resume (KalamDB's snapshot-to-live handover), or in the steady stream after them
    order_phases: dict = field(default_factory=lambda: {"after_subscribe": 0, "after_resume": 0, "steady": 0})
    wrong_old_values: int = 0
    wrong_deleted_flag: int = 0
    collapsed_gap: int = 0
    superseded_before_snapshot: int = 0
    deleted_before_snapshot: int = 0
    deletes_not_replayed: int = 0
    not_expected_missing: int = 0
    unknown_missing: int = 0
    unknown_delivered: int = 0
    lost_last_epoch: int = 0
    content_checked: bool = True
    never_ready: bool = False
    vanished: bool = False
    latency: dict = field(default_factory=lambda: {s: LatencyHistogram() for s in LATENCY_STARTS})
    samples: dict = field(default_factory=dict)
    # first arrival of every write, in arrival order: write idx and its _seq (cross-subscription checks)
    recv_idx: array = field(default_factory=lambda: array("q"))
    recv_seq: array = field(default_factory=lambda: array("q"))
    recv_epoch: array = field(default_factory=lambda: array("h"))
    # t_sent of every lost write: a stepped load places each loss in the step that wrote it (checks.capacity)
    lost_sent: array = field(default_factory=lambda: array("d"))

    @property
    def lost(self) -> int:
        return sum(c["lost"] for c in self.by_op.values())

    @property
    def duplicated(self) -> int:
        return sum(c["duplicated"] for c in self.by_op.values())

    @property
    def expected(self) -> int:
        return sum(c["expected"] for c in self.by_op.values())

    @property
    def unexpected_total(self) -> int:
        return sum(self.unexpected.values())

    @property
    def wrong_values(self) -> int:
        return sum(c["wrong_values"] for c in self.by_op.values())

    @property
    def wrong_kind(self) -> int:
        return sum(c["wrong_kind"] for c in self.by_op.values())

    @property
    def out_of_order_total(self) -> int:
        o = self.out_of_order
        return o["seq"] + o["seq_before_from"] + o["writer"] + o["row"]

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "key", "listener", "subscription_id", "owner", "group", "table", "table_kind", "snapshot",
            "epochs", "resumes", "arrivals", "change_messages", "change_messages_last_epoch",
            "snapshot_rows", "by_op", "unexpected", "foreign", "malformed", "out_of_order", "order_phases",
            "wrong_old_values", "wrong_deleted_flag", "collapsed_gap", "superseded_before_snapshot",
            "deleted_before_snapshot", "deletes_not_replayed", "not_expected_missing",
            "unknown_missing", "unknown_delivered", "lost_last_epoch", "content_checked",
            "never_ready", "vanished", "samples")}
        d["lost"], d["duplicated"] = self.lost, self.duplicated
        d["expected"], d["wrong_values"], d["wrong_kind"] = self.expected, self.wrong_values, self.wrong_kind
        d["unexpected_total"], d["out_of_order_total"] = self.unexpected_total, self.out_of_order_total
        d["latency_ms"] = {s: h.summary_ms() for s, h in self.latency.items()}
        return d


def _pick(seq: list, positions: list) -> list:
    if not positions:
        return []
    if len(positions) == 1:
        return [seq[positions[0]]]
    return list(itemgetter(*positions)(seq))


def _descents(values: list) -> int:
    """Number of i with values[i] >= values[i+1] (C speed)."""
    return sum(map(ge, values, islice(values, 1, None)))


class _Sampler:
    def __init__(self, ledger: WriteLedger, result: SubscriptionResult, limit: int):
        self.ledger, self.result, self.limit = ledger, result, limit

    def add(self, anomaly: str, idx: int = -1, **extra) -> None:
        lst = self.result.samples.setdefault(anomaly, [])
        if len(lst) >= self.limit:
            return
        s = {}
        if idx >= 0:
            led = self.ledger
            s = {"writer": led.writer(idx), "n": led.wseq(idx), "op": OP_NAMES[led.op(idx)],
                 "pk": led.pk(idx), "outcome": OUTCOME_NAMES[led.outcome(idx)],
                 "t_sent": led.t_sent(idx)}
        s.update(extra)
        lst.append(s)


def reconcile(ledger: WriteLedger, log: ArrivalLog,
              config: Optional[ReconcileConfig] = None) -> SubscriptionResult:
    """Compare one subscription's arrivals with the ledger. See the module docstring for the rules."""
    cfg = config or ReconcileConfig()
    info = log.info
    if ledger.workload.table_kind != info.table_kind:
        raise ValueError(f"subscription {info.key} is on a {info.table_kind} table, the ledger on a "
                         f"{ledger.workload.table_kind} one")
    v: LedgerView = ledger.view()
    res = SubscriptionResult(info.key, info.listener, info.subscription_id, info.owner, info.group,
                             info.table or ledger.workload.table, info.table_kind, info.snapshot)
    res.content_checked = tuple(info.content_columns) == tuple(ledger.workload.content_columns)
    sampler = _Sampler(ledger, res, cfg.sample_limit)
    epochs = log.epochs
    res.epochs = len(epochs)
    res.resumes = sum(1 for e in epochs if e.is_resume)
    n = len(log)
    res.arrivals = n

    kinds = log.kind.tolist()
    ep_of = log.epoch.tolist()
    n_snap = kinds.count(KIND_SNAPSHOT)
    res.snapshot_rows = n_snap
    res.change_messages = n - n_snap
    if epochs:
        last_start = bisect_left(ep_of, len(epochs) - 1)
        res.change_messages_last_epoch = (n - last_start) - kinds[last_start:].count(KIND_SNAPSHOT)
    else:
        res.change_messages_last_epoch = res.change_messages

    # ---------------------------------------------------------------- resolve arrivals to writes
    lw_names = log.writers
    lbase, lcount = [], []
    for name in lw_names:
        c = ledger.writer_code(name) if name else -1
        if c >= 0 and c < len(v.flat_base):
            lbase.append(v.flat_base[c])
            lcount.append(v.flat_count[c])
        else:
            lbase.append(0)
            lcount.append(0)
    # numpy for the per-arrival arithmetic (an int object per element in Python's own C loops was half of
    # reconcile's time); lists from here on where the rules below index and count
    if n:
        lw, lx = np.frombuffer(log.writer, dtype=np.uint16), np.frombuffer(log.n, dtype=np.int64)
        lbase_a, lcount_a = np.array(lbase, dtype=np.int64)[lw], np.array(lcount, dtype=np.int64)[lw]
        found = (lx > 0) & (lx <= lcount_a)
        idx_a = np.where(found, v.array("flat")[np.where(found, lbase_a + lx, 0)], -1)
        del_a = np.flatnonzero(np.frombuffer(log.kind, dtype=np.int8) == KIND_DELETE)
        if del_a.size:                 # a tombstone names the version it deleted (-1: the sentinel's next)
            idx_a[del_a] = v.array("next")[idx_a[del_a]]
    else:
        idx_a, del_a = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    idxs, del_pos = idx_a.tolist(), del_a.tolist()
    n_del = len(del_pos)
    ops = list(map(v.op.__getitem__, idxs))
    outs = list(map(v.outcome.__getitem__, idxs))

    flags = log.flags
    res.malformed = sum(map(and_, flags, repeat(FLAG_MALFORMED))) // FLAG_MALFORMED
    ET = _EpochTimes(log)

    bad: dict = {}   # arrival position -> reason
    if idxs.count(-1):
        for p, i in enumerate(idxs):
            if i < 0:
                bad[p] = "never_written"
    if ops.count(OP_DELETE) != n_del or any(ops[p] != OP_DELETE for p in del_pos):
        for p, (k, o) in enumerate(zip(kinds, ops)):
            if o and (k == KIND_DELETE) != (o == OP_DELETE):
                bad.setdefault(p, "never_written")
    if outs.count(OUTCOME_REJECTED):
        for p, o in enumerate(outs):
            if o == OUTCOME_REJECTED:
                bad.setdefault(p, "rejected")
    owner_code = group_code = None
    if info.table_kind == "user":
        owner_code = ledger.owner_code(info.owner)
        owners = list(map(v.owner.__getitem__, idxs))
        if owners.count(owner_code) != n:
            for p, (i, o) in enumerate(zip(idxs, owners)):
                if i >= 0 and o != owner_code:
                    bad.setdefault(p, "foreign")
    if info.group:
        group_code = ledger.group_code(info.group)
        groups = list(map(v.group.__getitem__, idxs))
        if groups.count(group_code) != n:
            for p, (i, g) in enumerate(zip(idxs, groups)):
                if i >= 0 and g != group_code:
                    bad.setdefault(p, "filter_mismatch")
    for p, why in bad.items():
        i = idxs[p]
        if why == "foreign":
            res.foreign += 1
        else:
            res.unexpected[why] += 1
        extra = {"arrival": KIND_NAMES[kinds[p]], "seq": log.seq[p], "epoch": ep_of[p],
                 "arrival_writer": lw_names[log.writer[p]], "arrival_n": log.n[p]}
        if why == "foreign":
            extra["owner"] = ledger.owner(i)
        sampler.add(why, i if i >= 0 else -1, **extra)

    # ---------------------------------------------------------------- valid arrivals, duplicates
    valid = [p for p in range(n) if p not in bad] if bad else None
    V_idx = _pick(idxs, valid) if bad else idxs
    received = set(V_idx)  # membership only (a set builds in C, several times faster than a Counter)
    if len(received) != len(V_idx):
        first = []
        seen = set()
        positions = valid if bad else range(n)
        for p, i in zip(positions, V_idx):
            if i in seen:
                e = ep_of[p]
                ep = epochs[e] if e < len(epochs) else None
                if (kinds[p] == KIND_SNAPSHOT and ep is not None and e > 0 and ep.snapshot
                        and not ep.is_resume):
                    continue       # fresh re-subscribe: its snapshot legitimately repeats rows
                res.by_op[OP_NAMES[v.op[i]]]["duplicated"] += 1
                sampler.add("duplicated", i, arrival=KIND_NAMES[kinds[p]], seq=log.seq[p], epoch=e)
            else:
                seen.add(i)
                first.append(p)
    else:
        first = valid
    if first is None:      # fast path: every arrival is valid and the first of its write
        F_idx, F_kind, F_seq, F_trecv = idxs, kinds, log.seq.tolist(), log.t_recv.tolist()
        F_dig, F_old, F_ep, F_flags = (log.digest.tolist(), log.old_digest.tolist(), ep_of,
                                       flags.tolist())
    else:
        F_idx = _pick(idxs, first)
        F_kind = _pick(kinds, first)
        F_seq = _pick(log.seq, first)
        F_trecv = _pick(log.t_recv, first)
        F_dig = _pick(log.digest, first)
        F_old = _pick(log.old_digest, first)
        F_ep = _pick(ep_of, first)
        F_flags = _pick(flags, first)
    res.recv_idx = array("q", F_idx)
    res.recv_seq = array("q", F_seq)
    res.recv_epoch = array("h", F_ep)

    # change arrivals (not snapshot rows) among the first arrivals
    if F_kind.count(KIND_SNAPSHOT):
        cpos = [j for j, k in enumerate(F_kind) if k != KIND_SNAPSHOT]
        C_idx, C_kind, C_seq, C_trecv = (_pick(F_idx, cpos), _pick(F_kind, cpos), _pick(F_seq, cpos),
                                         _pick(F_trecv, cpos))
        C_old, C_flags = _pick(F_old, cpos), _pick(F_flags, cpos)
        S_pos = [j for j, k in enumerate(F_kind) if k == KIND_SNAPSHOT]
    else:
        cpos = None
        C_idx, C_kind, C_seq, C_trecv, C_old, C_flags = F_idx, F_kind, F_seq, F_trecv, F_old, F_flags
        S_pos = []

    # delivered, per op
    for op, c in Counter(map(v.op.__getitem__, C_idx)).items():
        res.by_op[OP_NAMES[op]]["as_change"] += c
    if S_pos:
        for op, c in Counter(v.op[F_idx[j]] for j in S_pos).items():
            res.by_op[OP_NAMES[op]]["in_snapshot"] += c
    for c in res.by_op.values():
        c["delivered"] = c["as_change"] + c["in_snapshot"]
    # stale snapshot rows: a version superseded by a write acknowledged before the subscribe
    for j in S_pos:
        i, e = F_idx[j], F_ep[j]
        x = v.next[i]
        if x >= 0 and e < len(ET.t_sub) and v.outcome[x] == OUTCOME_ACK and v.t_ack[x] < ET.t_sub[e]:
            res.unexpected["stale_snapshot_row"] += 1
            sampler.add("stale_snapshot_row", i, seq=F_seq[j], epoch=e, newer_n=v.wseq[x])
    if v.outcome.count(OUTCOME_UNKNOWN) or v.outcome.count(OUTCOME_PENDING):
        res.unknown_delivered = sum(1 for i in F_idx if v.outcome[i] in (OUTCOME_UNKNOWN, OUTCOME_PENDING))

    # ---------------------------------------------------------------- content
    if res.content_checked and sum(map(ne, F_dig, map(v.digest.__getitem__, F_idx))):
        for j, (i, d) in enumerate(zip(F_idx, F_dig)):
            if d != v.digest[i]:
                res.by_op[OP_NAMES[v.op[i]]]["wrong_values"] += 1
                sampler.add("wrong_values", i, arrival=KIND_NAMES[F_kind[j]], seq=F_seq[j],
                            what="tombstone" if F_kind[j] == KIND_DELETE else "row")
    if sum(map(ne, C_kind, map(v.op.__getitem__, C_idx))):
        for j, (i, k) in enumerate(zip(C_idx, C_kind)):
            if k != v.op[i]:
                res.by_op[OP_NAMES[v.op[i]]]["wrong_kind"] += 1
                sampler.add("wrong_kind", i, arrival=KIND_NAMES[k], seq=C_seq[j])
    if res.content_checked and sum(map(ne, C_old, map(v.old_digest.__getitem__, C_idx))):
        for j, (i, o) in enumerate(zip(C_idx, C_old)):
            if C_kind[j] == KIND_UPDATE and v.op[i] == OP_UPDATE and o != v.old_digest[i]:
                res.wrong_old_values += 1
                sampler.add("wrong_old_values", i, seq=C_seq[j],
                            what="no old_values" if C_flags[j] & FLAG_NO_OLD else "digest")
    n_del_c = C_kind.count(KIND_DELETE)
    if n_del_c and sum(map(and_, C_flags, repeat(FLAG_DELETED_OK))) != n_del_c:
        for j, (i, k) in enumerate(zip(C_idx, C_kind)):
            if k == KIND_DELETE and not C_flags[j] & FLAG_DELETED_OK:
                res.wrong_deleted_flag += 1
                sampler.add("wrong_deleted_flag", i, seq=C_seq[j])

    # ---------------------------------------------------------------- latency (first change arrivals)
    if C_idx:
        lat = res.latency
        if C_idx is idxs:    # every arrival counts: the log's own columns
            ci, ct, cs = idx_a, np.frombuffer(log.t_recv, dtype=np.float64), np.frombuffer(log.seq, dtype=np.int64)
        else:
            ci = np.array(C_idx, dtype=np.int64)
            ct, cs = np.array(C_trecv, dtype=np.float64), np.array(C_seq, dtype=np.int64)
        lat["sent"].add_many(ct - v.array("t_sent")[ci])
        ack_lat = ct - v.array("t_ack")[ci]
        if res.unknown_delivered:
            ack_lat = ack_lat[ack_lat == ack_lat]     # drop NaN (no acknowledgement)
        lat["ack"].add_many(ack_lat)
        stamped = cs > 0
        if not stamped.all():
            ct, cs = ct[stamped], cs[stamped]
        lat["commit"].add_many(ct - seq_commit_seconds(cs))

    # ---------------------------------------------------------------- order
    _check_order(v, res, sampler, epochs, F_idx, F_seq, F_ep)

    # ---------------------------------------------------------------- coverage: lost & co.
    _check_coverage(v, res, sampler, log, ET, owner_code, group_code, received,
                    F_idx, F_kind, F_ep, idxs, kinds, ep_of)

    for c in res.by_op.values():
        c["expected"] = c["delivered"] + c["lost"]
    res.never_ready = not any(not math.isnan(e.t_ready) for e in epochs)
    # vanished is the session's word (loadtest: the listener could not resume), never inferred from an
    # empty log: a ready subscription that received nothing lost everything it was due
    res.vanished = False
    return res


HANDOVER_CHANGES = 50   # changes of an epoch that count as its handover (buffered ones are flushed first)


def order_phase(position: int, resumed: bool) -> str:
    """Where in its epoch an arrival came: its first HANDOVER_CHANGES changes, after a subscribe or a
    resume, or the steady stream."""
    if position < HANDOVER_CHANGES:
        return "after_resume" if resumed else "after_subscribe"
    return "steady"


def _check_order(v, res, sampler, epochs, F_idx, F_seq, F_ep) -> None:
    ooo = 0
    bounds = []
    for e in range(max(len(epochs), (F_ep[-1] + 1) if F_ep else 0)):
        a, b = bisect_left(F_ep, e), bisect_right(F_ep, e)
        bounds.append((e, a, b))
        if b - a > 1:
            ooo += _descents(F_seq[a:b])
        if e < len(epochs) and epochs[e].is_resume and b > a:
            frm = epochs[e].resume_from
            res.out_of_order["seq_before_from"] += sum(map(le, F_seq[a:b], repeat(frm)))
    res.out_of_order["seq"] = ooo
    # per writer: if _seq increases along every writer's own order, and arrivals are in _seq order,
    # then every writer's arrivals are in its order. Writes of unknown outcome are left out (a timed-out
    # write may commit after the writer's next one).
    seq_vs_writer = 0
    if not ooo:
        seq_of = dict(zip(F_idx, F_seq))
        skip_unknown = bool(v.outcome.count(OUTCOME_UNKNOWN))
        for c, base in enumerate(v.flat_base):
            cnt = v.flat_count[c]
            if not cnt:
                continue
            writes = v.flat[base + 1: base + 1 + cnt]
            if skip_unknown:
                writes = [i for i in writes if v.outcome[i] != OUTCOME_UNKNOWN]
            got = [s for s in map(seq_of.get, writes) if s is not None]
            seq_vs_writer += _descents(got)
        res.out_of_order["seq_vs_writer_order"] = seq_vs_writer
    if ooo or seq_vs_writer or res.out_of_order["seq_before_from"]:
        # slow path: walk arrivals; version chains and writers have increasing idx in the ledger
        last_seq = None
        first_of_epoch = {e: a for e, a, _ in bounds}
        last_of_writer: dict = {}
        last_of_key: dict = {}
        wr, key = v.writer, v.key
        for j, (i, s, e) in enumerate(zip(F_idx, F_seq, F_ep)):
            if j and F_ep[j - 1] == e and last_seq is not None and s <= last_seq:
                phase = order_phase(j - first_of_epoch.get(e, 0), e < len(epochs) and epochs[e].is_resume)
                res.order_phases[phase] += 1
                sampler.add("out_of_order_seq", i, seq=s, previous_seq=last_seq, epoch=e, phase=phase,
                            seq_gap_ms=seq_commit_ms(last_seq) - seq_commit_ms(s))
            last_seq = s
            if e < len(epochs) and epochs[e].is_resume and s <= epochs[e].resume_from:
                sampler.add("seq_before_from", i, seq=s, resume_from=epochs[e].resume_from, epoch=e)
            w = wr[i]
            if i < last_of_writer.get(w, -1):
                res.out_of_order["writer"] += 1
                sampler.add("out_of_order_writer", i, seq=s, after_n=v.wseq[last_of_writer[w]])
            else:
                last_of_writer[w] = i
            k = key[i]
            if i < last_of_key.get(k, -1):
                res.out_of_order["row"] += 1
                sampler.add("out_of_order_row", i, seq=s, after_n=v.wseq[last_of_key[k]])
            else:
                last_of_key[k] = i


class _EpochTimes:
    __slots__ = ("t_sub", "t_ready", "t_disc", "snapshot", "resume", "open", "t_end", "lower")

    def __init__(self, log: ArrivalLog):
        eps = log.epochs
        self.t_sub = []
        self.t_ready = [e.t_ready for e in eps]
        for e in eps:
            t = e.t_subscribed
            if math.isnan(t):
                t = e.t_ready if not math.isnan(e.t_ready) else -INF
            self.t_sub.append(t)
        self.t_disc = [e.t_disconnected for e in eps]
        self.snapshot = [e.snapshot for e in eps]
        self.resume = [e.is_resume for e in eps]
        self.open = [math.isnan(t) for t in self.t_disc]
        fin = log.t_finished
        if eps and self.open[-1]:
            self.t_end = fin if not math.isnan(fin) else INF
        elif eps:
            self.t_end = self.t_disc[-1]
        else:
            self.t_end = -INF
        # lower bound of each snapshot epoch's scope: the previous ready time
        self.lower = []
        prev_ready = -INF
        for t in self.t_ready:
            self.lower.append(prev_ready)
            if not math.isnan(t):
                prev_ready = t


def _check_coverage(v, res, sampler, log, ET, owner_code, group_code, received,
                    F_idx, F_kind, F_ep, idxs, kinds, ep_of) -> None:
    if owner_code is not None and owner_code < 0:
        return            # the ledger has no write for this owner at all
    if group_code is not None and group_code < 0:
        return
    matching = v.matching(owner_code, group_code)
    unreceived = [i for i in matching if i not in received]
    if not unreceived:
        return
    if not log.epochs:
        res.not_expected_missing += len(unreceived)
        return
    outc, t_sent, t_ack, op, nxt = v.outcome, v.t_sent, v.t_ack, v.op, v.next
    t_sub0 = ET.t_sub[0]
    snap0 = ET.snapshot[0]
    t_end = ET.t_end
    slow = []
    for i in unreceived:
        o = outc[i]
        if o != OUTCOME_ACK:
            if o in (OUTCOME_UNKNOWN, OUTCOME_PENDING) and t_sent[i] >= t_sub0 and t_sent[i] < t_end:
                res.unknown_missing += 1
                sampler.add("unknown_missing", i)
            continue
        if t_ack[i] < t_sub0:
            if not snap0:
                res.not_expected_missing += 1
                continue
            j = nxt[i]
            if j >= 0 and outc[j] == OUTCOME_ACK and t_ack[j] < t_sub0:
                res.superseded_before_snapshot += 1
                continue
            slow.append(i)
        elif t_sent[i] >= t_end:
            res.not_expected_missing += 1
        else:
            slow.append(i)
    if not slow:
        return

    # Per-key analysis. Observations of every version of the affected keys, per epoch.
    keyv = v.key
    keys = {}
    for i in slow:
        keys.setdefault(keyv[i], []).append(i)
    chains = {}
    wanted = set()
    for k in keys:
        chain, i = [], k
        while i >= 0:
            chain.append(i)
            i = nxt[i]
        chains[k] = chain
        wanted.update(chain)
    obs: dict = {}        # idx -> list of (epoch, is_snapshot), every valid arrival
    for p, (i, k, e) in enumerate(zip(idxs, kinds, ep_of)):
        if i in wanted and i in received:
            obs.setdefault(i, []).append((e, k == KIND_SNAPSHOT))
    proof_cache: dict = {}

    def proven(e: int, writer: int, wseq: int) -> bool:
        """A later write of `writer` arrived as a change in epoch e."""
        m = proof_cache.get(e)
        if m is None:
            m = {}
            a, b = bisect_left(F_ep, e), bisect_right(F_ep, e)
            for j in range(a, b):
                if F_kind[j] != KIND_SNAPSHOT:
                    i = F_idx[j]
                    w = v.writer[i]
                    if v.wseq[i] > m.get(w, 0):
                        m[w] = v.wseq[i]
            proof_cache[e] = m
        return m.get(writer, 0) > wseq

    n_ep = len(log.epochs)
    last_ready = ET.t_ready[-1]
    for k, cands in keys.items():
        chain = chains[k]
        ordinal = {i: o for o, i in enumerate(chain)}
        snap = [None] * n_ep
        cmin = [None] * n_ep
        cmax = [None] * n_ep
        for o, i in enumerate(chain):
            for e, is_snap in obs.get(i, ()):
                if e >= n_ep:
                    continue
                if is_snap:
                    snap[e] = o if snap[e] is None else max(snap[e], o)
                else:
                    cmin[e] = o if cmin[e] is None else min(cmin[e], o)
                    cmax[e] = o if cmax[e] is None else max(cmax[e], o)
        seen_before = []
        best = -1
        for e in range(n_ep):
            seen_before.append(best)
            for x in (snap[e], cmax[e]):
                if x is not None and x > best:
                    best = x
        d = []
        for e in range(n_ep):
            de = -1
            for o, i in enumerate(chain):
                if outc[i] == OUTCOME_ACK and t_ack[i] < ET.t_sub[e]:
                    de = o
            d.append(de)
        last = chain[-1]
        has_delete = op[last] == OP_DELETE and outc[last] != OUTCOME_REJECTED
        for i in cands:
            oi = ordinal.get(i)
            if oi is None:
                continue
            ts = t_sent[i]
            verdict = None
            for e in range(n_ep):                               # rule 1: contiguity
                if cmax[e] is None:
                    continue
                if snap[e] is not None:
                    lo = snap[e]
                elif ET.snapshot[e]:
                    lo = max(seen_before[e], d[e] - 1)
                else:
                    lo = cmin[e]
                if lo < oi < cmax[e]:
                    verdict = ("lost", e, "skipped in the change stream")
                    break
            if verdict is None:                                  # rule 2: live window
                for e in range(n_ep):
                    tr = ET.t_ready[e]
                    if math.isnan(tr) or ts < tr:
                        continue
                    if ET.open[e]:
                        if ts < t_end:
                            verdict = ("lost", e, "live window")
                            break
                    elif ts < ET.t_disc[e] and proven(e, v.writer[i], v.wseq[i]):
                        verdict = ("lost", e, "live window, a later write of the writer arrived")
                        break
            if verdict is None:                                  # rule 3: snapshot scope
                for e in range(n_ep):
                    tr = ET.t_ready[e]
                    if not ET.snapshot[e] or math.isnan(tr):
                        continue
                    if not (ts < tr and ts >= ET.lower[e] and oi > seen_before[e]):
                        continue
                    if (snap[e] is not None and oi < snap[e]) or oi < d[e]:
                        verdict = ("collapsed", e, "")
                    elif has_delete and t_sent[last] < tr:
                        verdict = ("delete_gap", e, "") if i == last else ("collapsed", e, "")
                    else:
                        verdict = ("lost", e, "missing from the snapshot" if snap[e] is None
                                   else "snapshot shows an older version")
                    break
            if verdict is None:
                res.not_expected_missing += 1
                continue
            what, e, why = verdict
            if what == "lost":
                res.by_op[OP_NAMES[op[i]]]["lost"] += 1
                res.lost_sent.append(ts)
                if ts >= last_ready:
                    res.lost_last_epoch += 1
                sampler.add("lost", i, epoch=e, why=why)
            elif what == "collapsed":
                if e > 0:
                    res.collapsed_gap += 1
                else:
                    res.superseded_before_snapshot += 1
            else:
                if e > 0:
                    res.deletes_not_replayed += 1
                    sampler.add(KNOWN_RESUME_DELETES, i, epoch=e)
                else:
                    res.deleted_before_snapshot += 1


# ==================================================================== verdicts

@dataclass
class Thresholds:
    """Pass/fail limits; defaults are the specification's (scenarios.md). All overridable."""

    delivery_pct: float = 100.0          # L1-L4, L8-L10: share of expected writes delivered
    latency_ms: float = 50.0             # SC-054
    latency_percentile: float = 99.0     # SC-054
    latency_from: str = "sent"           # SC-054 start point: "sent" | "ack" | "commit"
    changes_counter_pct: float = 100.0   # L7: share of subscriptions whose counter is exact
    high_frequency_min: int = 1000       # L10
    min_concurrent_writers: int = 2      # L4
    min_listeners_same_query: int = 2    # L8
    accepted_known: frozenset = frozenset()   # known behaviours that do not fail a scenario
    # the server's own count of notifications it dropped on a full queue (its log's "Notification channel
    # full" lines, or the stand-in's system.stats), None when the run could not read one: accepting
    # queue-drops accepts at most this many, and none without it
    queue_drops_counted: Optional[int] = None
    queue_drops_source: str = ""         # where that count comes from ("server log /path", "stand-in stats")

    def __post_init__(self):
        if self.latency_from not in LATENCY_STARTS:
            raise ValueError(f"latency_from must be one of {LATENCY_STARTS}")
        self.accepted_known = frozenset(self.accepted_known)


@dataclass
class Verdict:
    id: str
    title: str
    verdict: str              # "pass" | "fail" | "inconclusive" | "skipped"
    figure: str               # short human text naming the counts
    value: Optional[float]
    threshold: Optional[str]
    details: dict

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "verdict": self.verdict, "figure": self.figure,
                "value": self.value, "threshold": self.threshold, "details": self.details}


TITLES = {
    "L1": "inserts delivered to every matching listener", "L2": "updates carry new and old values",
    "L3": "deletes carry the tombstone and _deleted=true", "L4": "concurrent writers: no loss, no duplicate",
    "L5": "agent -> human: filtered subscriptions get exactly their rows",
    "L6": "ordering", "L7": "changes counter equals notifications received",
    "L8": "many listeners on one table each get everything", "L9": "reconnect and resume lose nothing",
    "L10": "high frequency: 1000+ changes, each once, in order",
    "SC-054": "change delivery latency",
}


def _ledgers(ledger) -> list:
    if ledger is None:
        return []
    if isinstance(ledger, WriteLedger):
        return [ledger]
    if isinstance(ledger, Mapping):
        return list(ledger.values())
    return list(ledger)


def _pct(part: int, whole: int) -> Optional[float]:
    return None if not whole else round(100.0 * part / whole, 4)


def _nonzero(**items) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in items.items() if v)


def _samples(results, *names, limit: int = 10) -> list:
    out = []
    for r in results:
        for name in names:
            for s in r.samples.get(name, ()):
                if len(out) >= limit:
                    return out
                out.append(dict(s, sub=r.key, anomaly=name))
    return out


class _Context:
    """Run-level facts every verdict needs: incompleteness and known behaviours."""

    def __init__(self, results, counters, run, th: Thresholds):
        self.th = th
        run = dict(run or {})
        self.drain_timed_out = bool(run.get("drain_timed_out"))
        self.ledger_partial = bool(run.get("ledger_partial"))
        missing = run.get("missing_listeners") or 0
        self.missing_listeners = missing if isinstance(missing, int) else len(missing)
        self.vanished = [r.key for r in results if r.vanished or (r.never_ready and r.arrivals == 0)]
        self.incomplete = []
        if self.drain_timed_out:
            self.incomplete.append("drain timed out: missing changes may only be late")
        if self.ledger_partial:
            self.incomplete.append("ledger partial: some writes were not recorded")
        if self.missing_listeners:
            self.incomplete.append(f"{self.missing_listeners} listener(s) sent no data")
        if self.vanished:
            self.incomplete.append(f"{len(self.vanished)} subscription(s) without evidence (listener "
                                   f"vanished or never ready): {', '.join(self.vanished[:5])}")
        self.slow = frozenset(run.get("slow_listeners") or ())   # the run's slow consumers
        # queue drops: a loss the server never counted (system.live.changes < received + lost)
        self.queue_drop_subs = {}
        deficit = None
        for r in results:
            c = _counter_for(counters, r)
            if c is None:
                continue
            short = r.change_messages_last_epoch + r.lost_last_epoch - c
            deficit = (deficit or 0) + max(0, short)
            if r.lost_last_epoch and short > 0:
                self.queue_drop_subs[r.key] = r.lost_last_epoch
        # the server's own count of its full-queue drops: its log's, or its stats'; else (a server whose
        # log this run cannot read) what its changes counters fall short of what was sent
        if th.queue_drops_counted is not None:
            self.queue_drops_counted, self.queue_drops_source = th.queue_drops_counted, th.queue_drops_source
        elif deficit is not None:
            self.queue_drops_counted, self.queue_drops_source = deficit, "system.live changes counters' deficit"
        else:
            self.queue_drops_counted, self.queue_drops_source = None, ""

    def known(self, name: str, count: int) -> dict:
        return {"count": count, "accepted": name in self.th.accepted_known}

    def decide(self, failures: Mapping[str, int], known: Mapping[str, int] = (),
               explained_loss: bool = False) -> tuple:
        """(verdict, reasons). failures: name -> count (>0 fails). A loss explained by incomplete
        evidence (drain timeout, vanished listener) makes the verdict inconclusive, not failed."""
        failing = {k: c for k, c in failures.items() if c}
        known_bad = {k: c for k, c in dict(known).items() if c and k not in self.th.accepted_known}
        if self.ledger_partial and set(failing) <= {"unexpected"}:
            failing = {}
            explained = True
        else:
            explained = False
        if explained_loss and set(failing) <= {"lost"} and not known_bad:
            failing = {}
            explained = True
        if failing or known_bad:
            return "fail", {**failing, **{f"known:{k}": c for k, c in known_bad.items()}}
        if self.incomplete or explained:
            return "inconclusive", {}
        return "pass", {}


def _counter_for(counters, r: SubscriptionResult) -> Optional[int]:
    if not counters:
        return None
    c = counters.get(r.key)
    if c is None:
        c = counters.get(r.subscription_id)
    return None if c is None else int(c)


def _verdict(ctx: _Context, vid: str, verdict: str, figure: str, value, threshold, details) -> Verdict:
    if verdict != "skipped" and ctx.incomplete:
        details.setdefault("incomplete", ctx.incomplete)
    return Verdict(vid, TITLES[vid], verdict, figure, value, threshold, details)


def _delivery_verdict(ctx: _Context, vid: str, results: list, ops: tuple, label: str,
                      extra_failures: Mapping[str, int], extra_details: dict,
                      known: Mapping[str, int] = ()) -> Verdict:
    th = ctx.th
    expected = sum(r.by_op[o]["expected"] for r in results for o in ops)
    lost = sum(r.by_op[o]["lost"] for r in results for o in ops)
    dup = sum(r.by_op[o]["duplicated"] for r in results for o in ops)
    lost_subs = sum(1 for r in results if any(r.by_op[o]["lost"] for o in ops))
    delivered_pct = _pct(expected - lost, expected)
    # losses the server never counted are KalamDB's full-queue drop (a known behaviour)
    qd = sum(min(ctx.queue_drop_subs.get(r.key, 0), sum(r.by_op[o]["lost"] for o in ops)) for r in results)
    known = dict(known)
    if qd:
        known[KNOWN_QUEUE_DROPS] = qd
    lost_failing = lost
    accepted_qd = 0
    if qd and KNOWN_QUEUE_DROPS in th.accepted_known:
        accepted_qd = min(qd, ctx.queue_drops_counted or 0)   # only what the server says it dropped
        lost_failing = lost - accepted_qd
    loss_fails = expected and lost_failing and (100.0 * (expected - lost_failing) / expected) < th.delivery_pct
    failures = {"lost": lost if loss_fails else 0, "duplicated": dup, **extra_failures}
    explained = ctx.drain_timed_out or bool(ctx.vanished)
    verdict, reasons = ctx.decide(failures, known, explained_loss=explained)
    figure = (f"lost {lost:,} of {expected:,} {label}; "
              + (f"{lost_subs} of {len(results)} subscriptions lost some" if lost_subs
                 else "no subscription lost any"))
    known_details = {k: ctx.known(k, c) for k, c in known.items() if c}
    if KNOWN_QUEUE_DROPS in known_details:
        known_details[KNOWN_QUEUE_DROPS].update(accepted=bool(accepted_qd) and accepted_qd == qd,
                                                accepted_count=accepted_qd, server_count=ctx.queue_drops_counted,
                                                server_count_from=ctx.queue_drops_source)
    more = _nonzero(duplicated=dup, **extra_failures)
    if more:
        figure += ", " + more
    for k, c in known.items():
        if c:
            figure += f"; known behaviour {k}: {c}"
            if k == KNOWN_QUEUE_DROPS:
                figure += (f" (the server counted {ctx.queue_drops_counted:,} full-queue drops: "
                           f"{ctx.queue_drops_source})" if ctx.queue_drops_counted is not None
                           else " (no full-queue drop count from the server)")
                if KNOWN_QUEUE_DROPS in th.accepted_known and accepted_qd < c:
                    figure += f", {c - accepted_qd} not accepted: loss"
    slow_details = {}
    if ctx.slow:
        on_slow = [r for r in results if r.listener in ctx.slow]
        slow_lost = sum(r.by_op[o]["lost"] for r in on_slow for o in ops)
        slow_details = {"slow_listeners": {"listeners": len({r.listener for r in on_slow}),
                                           "subscriptions": len(on_slow), "lost": slow_lost,
                                           "lost_elsewhere": lost - slow_lost}}
        if lost:
            figure += (f"; slow listeners' subscriptions lost {slow_lost:,}, the others "
                       + (f"{lost - slow_lost:,}" if lost - slow_lost else "none"))
    if ctx.drain_timed_out and lost:
        figure += " (drain timed out)"
    details = {"subscriptions": len(results), "expected": expected, "delivered": expected - lost,
               "lost": lost, "duplicated": dup, "subs_with_loss": lost_subs, **extra_failures,
               **extra_details, **slow_details, "failing": reasons,
               "known_behaviours": known_details,
               "samples": _samples(results, "lost", "duplicated", "wrong_values", "wrong_kind",
                                   "wrong_old_values", "wrong_deleted_flag", "never_written",
                                   "rejected", "filter_mismatch", "foreign", "stale_snapshot_row")}
    if not expected and not any(extra_failures.values()) and not dup and not any(known.values()):
        return _verdict(ctx, vid, "skipped", f"no {label} expected by any subscription", None,
                        f"delivery >= {th.delivery_pct}%", details)
    return _verdict(ctx, vid, verdict, figure, delivered_pct, f"delivery >= {th.delivery_pct}%", details)


def _divergence(results: list) -> dict:
    """The same write must carry the same _seq everywhere, and every subscription must see common
    writes in the same relative order. Grouped by table (write indices are per ledger)."""
    out = {"seq_mismatch": 0, "order_inversions": 0, "subs_diverging": [], "samples": []}
    by_table: dict = {}
    for r in results:
        by_table.setdefault(r.table, []).append(r)
    for rs in by_table.values():
        consensus: dict = {}
        for r in rs:
            idxs, seqs = r.recv_idx.tolist(), r.recv_seq.tolist()
            got = list(map(consensus.get, idxs))
            missing = got.count(None)
            diff = sum(map(ne, got, seqs)) - missing
            if diff:
                out["seq_mismatch"] += diff
                for i, g, s in zip(idxs, got, seqs):
                    if g is not None and g != s and len(out["samples"]) < 10:
                        out["samples"].append({"sub": r.key, "write": i, "seq": s, "other_seq": g})
            if missing:
                for i, s in zip(idxs, seqs):
                    consensus.setdefault(i, s)
        if not out["seq_mismatch"]:
            continue
        # seqs disagree somewhere: order each subscription by the consensus seq and count inversions
        for r in rs:
            cs = list(map(consensus.__getitem__, r.recv_idx.tolist()))
            ep = r.recv_epoch.tolist()
            inv = 0
            for e in set(ep):
                a, b = bisect_left(ep, e), bisect_right(ep, e)
                inv += _descents(cs[a:b])
            if inv:
                out["order_inversions"] += inv
                out["subs_diverging"].append(r.key)
    return out


def verdicts(ledger: Union[WriteLedger, Iterable[WriteLedger], Mapping, None],
             results: list, counters: Optional[Mapping] = None, run: Optional[Mapping] = None,
             thresholds: Optional[Thresholds] = None) -> dict:
    """Scenario verdicts L1..L10 and SC-054 from the per-subscription results.

    ledger: the WriteLedger (or several, one per table) the results were reconciled against.
    counters: subscription key ("listener/subscription_id", or the bare subscription id) -> the
    server's `changes` from system.live, read after the drain. run: flags about the evidence:
    drain_timed_out, ledger_partial, missing_listeners (int or list).
    """
    th = thresholds or Thresholds()
    ledgers = _ledgers(ledger)
    results = list(results)
    ctx = _Context(results, counters, run, th)
    out: dict = {}
    unexpected = sum(r.unexpected_total for r in results)
    foreign = sum(r.foreign for r in results)
    ledger_counts = {}
    for led in ledgers:
        for op, d in led.counts().items():
            agg = ledger_counts.setdefault(op, Counter())
            agg.update(d)
    ledger_counts = {k: dict(v) for k, v in ledger_counts.items()}
    resume_deletes = sum(r.deletes_not_replayed for r in results)

    # L1 inserts (also where unexpected / foreign arrivals are reported: they are delivery errors)
    out["L1"] = _delivery_verdict(
        ctx, "L1", results, ("insert",), "inserts",
        {"wrong_values": sum(r.by_op["insert"]["wrong_values"] for r in results),
         "wrong_kind": sum(r.by_op["insert"]["wrong_kind"] for r in results),
         "unexpected": unexpected, "foreign": foreign},
        {"ledger": ledger_counts.get("insert", {}),
         "unexpected_by_reason": dict(sum((Counter(r.unexpected) for r in results), Counter())),
         "unknown_outcome_missing": sum(r.unknown_missing for r in results),
         "unknown_outcome_delivered": sum(r.unknown_delivered for r in results),
         "security_violation": foreign > 0})
    if foreign:
        out["L1"].figure += " (foreign rows: SECURITY VIOLATION)"

    # L2 updates
    out["L2"] = _delivery_verdict(
        ctx, "L2", results, ("update",), "updates",
        {"wrong_values": sum(r.by_op["update"]["wrong_values"] for r in results),
         "wrong_old_values": sum(r.wrong_old_values for r in results),
         "wrong_kind": sum(r.by_op["update"]["wrong_kind"] for r in results)},
        {"ledger": ledger_counts.get("update", {}),
         "as_change": sum(r.by_op["update"]["as_change"] for r in results),
         "in_snapshot": sum(r.by_op["update"]["in_snapshot"] for r in results)})

    # L3 deletes (deletes during a resume gap are L9's known behaviour, named here too)
    out["L3"] = _delivery_verdict(
        ctx, "L3", results, ("delete",), "deletes",
        {"wrong_tombstone": sum(r.by_op["delete"]["wrong_values"] for r in results),
         "wrong_deleted_flag": sum(r.wrong_deleted_flag for r in results),
         "wrong_kind": sum(r.by_op["delete"]["wrong_kind"] for r in results)},
        {"ledger": ledger_counts.get("delete", {})},
        known={KNOWN_RESUME_DELETES: resume_deletes})

    # L4 concurrent writers
    writers = set()  # by name: one writer may write several tables (one ledger each)
    for led in ledgers:
        names = led._writers.names
        for w, o in zip(led._writer, led._outcome):
            if o == OUTCOME_ACK:
                writers.add(names[w])
    n_writers = len(writers)
    l4 = _delivery_verdict(ctx, "L4", results, tuple(OP_NAMES.values()), "writes", {},
                           {"writers": n_writers})
    if n_writers < th.min_concurrent_writers:
        l4 = _verdict(ctx, "L4", "skipped", f"{n_writers} writer(s) acknowledged writes; "
                      f"needs >= {th.min_concurrent_writers}", n_writers, None, l4.details)
    else:
        l4.figure = f"{n_writers} writers: " + l4.figure
    out["L4"] = l4

    # L5 agent -> human: filtered subscriptions on a USER table
    l5_subs = [r for r in results if r.table_kind == "user" and r.group]
    if not l5_subs:
        out["L5"] = _verdict(ctx, "L5", "skipped", "no filtered subscription on a USER table", None,
                             None, {})
    else:
        f5 = sum(r.foreign for r in l5_subs)
        l5 = _delivery_verdict(
            ctx, "L5", l5_subs, tuple(OP_NAMES.values()), "messages",
            {"foreign": f5, "unexpected": sum(r.unexpected_total for r in l5_subs),
             "wrong_values": sum(r.wrong_values for r in l5_subs)},
            {"security_violation": f5 > 0,
             "latency_ms": _merged(l5_subs, th.latency_from).summary_ms(th.latency_ms)})
        if f5:
            l5.figure += f" -- SECURITY VIOLATION: {f5} row(s) of another user delivered"
        out["L5"] = l5

    # L6 ordering
    div = _divergence(results)
    ooo = {k: sum(r.out_of_order[k] for r in results) for k in
           ("seq", "seq_before_from", "writer", "row", "seq_vs_writer_order")}
    n_arr = sum(r.arrivals for r in results)
    failures6 = {"out_of_order_seq": ooo["seq"], "seq_before_from": ooo["seq_before_from"],
                 "out_of_order_writer": ooo["writer"], "out_of_order_row": ooo["row"],
                 "seq_vs_writer_order": ooo["seq_vs_writer_order"],
                 "seq_divergent": div["seq_mismatch"], "order_divergent": div["order_inversions"]}
    v6, reasons6 = ctx.decide(failures6)
    phases = {k: sum(r.order_phases[k] for r in results) for k in ("after_subscribe", "after_resume", "steady")}
    d6 = {**failures6, "subs_diverging": div["subs_diverging"], "failing": reasons6, "by_phase": phases,
          "samples": _samples(results, "out_of_order_seq", "seq_before_from", "out_of_order_writer",
                              "out_of_order_row") + div["samples"]}
    if not n_arr:
        out["L6"] = _verdict(ctx, "L6", "skipped", "no arrivals", None, None, d6)
    else:
        total6 = sum(failures6.values())
        where = _nonzero(**phases)
        out["L6"] = _verdict(ctx, "L6", v6, f"{total6} ordering anomalies in {n_arr} arrivals"
                             + (f" ({_nonzero(**failures6)})" if total6 else "")
                             + (f"; out-of-order _seq by phase: {where}" if where else ""), total6, "0", d6)

    # L7 changes counter
    if not counters:
        out["L7"] = _verdict(ctx, "L7", "skipped", "no system.live counters were read", None, None, {})
    else:
        equal, mism, missing = 0, [], []
        for r in results:
            c = _counter_for(counters, r)
            if c is None:
                missing.append(r.key)
            elif c == r.change_messages_last_epoch:
                equal += 1
            else:
                mism.append({"sub": r.key, "server_changes": c, "received": r.change_messages_last_epoch})
        compared = equal + len(mism)
        pct = _pct(equal, compared)
        failing = bool(mism) and (pct is None or pct < th.changes_counter_pct)
        d7 = {"compared": compared, "equal": equal, "mismatched": mism[:20], "missing": missing[:20],
              "queue_drops_suspected": ctx.queue_drop_subs}
        quiet = not mism and not any(_counter_for(counters, r) for r in results) and not any(
            r.change_messages_last_epoch for r in results)
        if failing:
            v7 = "fail"
        elif quiet:   # nothing counted, nothing received: a comparison of zeros verifies nothing
            v7 = "skipped"
        elif missing or ctx.incomplete or not compared:
            v7 = "inconclusive"
        else:
            v7 = "pass"
        fig = f"{equal} of {compared} subscriptions' counters equal the notifications received"
        if missing:
            fig += f"; {len(missing)} without a counter"
        if v7 == "skipped":
            fig = f"no change counted or received by any of {compared} subscriptions: nothing to compare"
        out["L7"] = _verdict(ctx, "L7", v7, fig, pct, f">= {th.changes_counter_pct}%", d7)

    # L8 many listeners on one shared query
    groups: dict = {}
    for r in results:
        if r.table_kind == "shared":
            groups.setdefault((r.table, r.group), []).append(r)
    l8_subs = [r for rs in groups.values() if len(rs) >= th.min_listeners_same_query for r in rs]
    if not l8_subs:
        out["L8"] = _verdict(ctx, "L8", "skipped", f"no shared query with >= "
                             f"{th.min_listeners_same_query} listeners", None, None, {})
    else:
        incomplete = [r.key for r in l8_subs if r.lost or r.duplicated]
        l8 = _delivery_verdict(ctx, "L8", l8_subs, tuple(OP_NAMES.values()), "writes", {},
                               {"listeners": len(l8_subs), "incomplete_listeners": incomplete[:20]})
        l8.figure = f"{len(l8_subs) - len(incomplete)} of {len(l8_subs)} listeners complete; " + l8.figure
        out["L8"] = l8

    # L9 reconnect / resume
    l9_subs = [r for r in results if r.resumes]
    if not l9_subs:
        out["L9"] = _verdict(ctx, "L9", "skipped", "no resume happened", None, None, {})
    else:
        rd = sum(r.deletes_not_replayed for r in l9_subs)
        coll = sum(r.collapsed_gap for r in l9_subs)
        l9 = _delivery_verdict(ctx, "L9", l9_subs, tuple(OP_NAMES.values()), "writes", {},
                               {"resumes": sum(r.resumes for r in l9_subs), "collapsed_in_gap": coll,
                                "samples_not_replayed": _samples(l9_subs, KNOWN_RESUME_DELETES)},
                               known={KNOWN_RESUME_DELETES: rd})
        l9.figure = (f"{sum(r.resumes for r in l9_subs)} resumes on {len(l9_subs)} subs: " + l9.figure
                     + (f"; {coll} superseded versions collapsed in gaps" if coll else ""))
        out["L9"] = l9

    # L10 high frequency
    verified = sum(r.by_op[o]["as_change"] for r in results for o in OP_NAMES.values())
    l10 = _delivery_verdict(ctx, "L10", results, tuple(OP_NAMES.values()), "writes",
                            {"out_of_order": sum(r.out_of_order_total for r in results)},
                            {"changes_verified": verified})
    if not verified:
        l10 = _verdict(ctx, "L10", "skipped", "no change was received", 0, None, l10.details)
    elif verified < th.high_frequency_min and l10.verdict != "fail":
        l10 = _verdict(ctx, "L10", "inconclusive", f"only {verified} changes verified; needs >= "
                       f"{th.high_frequency_min}", verified, f">= {th.high_frequency_min}", l10.details)
    else:
        l10.figure = f"{verified} changes verified; " + l10.figure
    out["L10"] = l10

    # SC-054 latency: a slow listener's pauses are the load test's own doing, so its subscriptions are
    # left out of it (their loss is judged above like any other)
    timed = [r for r in results if r.listener not in ctx.slow]
    h = _merged(timed, th.latency_from)
    summaries = {s: _merged(timed, s).summary_ms(th.latency_ms) for s in LATENCY_STARTS}
    if len(timed) < len(results):
        summaries["slow_subscriptions_left_out"] = len(results) - len(timed)
    if not h.count:
        out["SC-054"] = _verdict(ctx, "SC-054", "skipped", "no latency sample", None, None, summaries)
    else:
        p = h.percentile(th.latency_percentile) * 1000.0
        s = summaries[th.latency_from]
        ok = p <= th.latency_ms
        verdict = "fail" if not ok else ("inconclusive" if ctx.incomplete else "pass")
        fig = (f"p{th.latency_percentile:g} {p:.1f} ms from {th.latency_from} (max {s['max']:.1f} ms, "
               f"{100.0 * s['share_within']:.2f}% within {th.latency_ms:g} ms, {h.count} samples")
        if s["negative"]:
            fig += f", {s['negative']} negative"
        if len(timed) < len(results):
            fig += f"; the slow listeners' {len(results) - len(timed)} subscriptions left out"
        fig += ")"
        out["SC-054"] = _verdict(ctx, "SC-054", verdict, fig, round(p, 3),
                                 f"p{th.latency_percentile:g} <= {th.latency_ms:g} ms", summaries)
    return out


def _merged(results, start: str) -> LatencyHistogram:
    h = LatencyHistogram()
    for r in results:
        h.merge(r.latency[start])
    return h


def verdicts_to_dict(report: Mapping[str, Verdict]) -> dict:
    return {k: v.to_dict() for k, v in report.items()}
