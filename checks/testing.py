"""Hand-made histories for tests and benchmarks: a fake clock, a ledger, and rows shaped exactly as
KalamDB sends them (BIGINTs as strings, update deltas, tombstones), so that checks can be exercised
without any server or socket."""

from __future__ import annotations

from typing import Optional

from .arrivals import ArrivalLog, SubscriptionInfo
from .ledger import WriteLedger
from .model import (KIND_DELETE, KIND_INSERT, KIND_SNAPSHOT, KIND_UPDATE, OP_DELETE, OP_INSERT,
                    OP_UPDATE, OUTCOME_ACK, SEQ_EPOCH_MS, SEQ_TIME_SHIFT, Workload)


class History:
    """A scripted run. Time only moves when told (`tick`). Every write commits at t_sent + commit_dt
    and gets a fresh, increasing `_seq` encoding that commit time."""

    def __init__(self, workload: Workload = Workload(content_columns=("body",)), t0: float = 1_750_000_000.0):
        self.t = t0
        self.workload = workload
        self.ledger = WriteLedger(workload, clock=lambda: self.t)
        self.rows: dict[int, dict] = {}     # idx -> full row of that version (for delivering it)
        self.seq: dict[int, int] = {}       # idx -> _seq of the version it created
        self._seq_counter = 0

    def tick(self, dt: float = 0.001) -> float:
        self.t += dt
        return self.t

    def _next_seq(self, t_commit: float) -> int:
        self._seq_counter += 1
        return ((int(t_commit * 1000) - SEQ_EPOCH_MS) << SEQ_TIME_SHIFT) | (self._seq_counter & 0x3FFFFF)

    def write(self, writer: str, op: int = OP_INSERT, pk: Optional[str] = None, values=None,
              owner: str = "", group: str = "", outcome: int = OUTCOME_ACK, ack_dt: float = 0.002,
              commit_dt: float = 0.001, finish: bool = True) -> int:
        """begin() now, commit after commit_dt, finish(outcome) after ack_dt; the clock ends after
        the ack."""
        if values is None and op != OP_DELETE:
            values = {c: f"v{self._seq_counter}" for c in self.workload.content_columns}
        idx = self.ledger.begin(writer, op, pk, values, owner, group)
        if op == OP_DELETE:
            self.rows[idx] = dict(self.rows[self.ledger.prev_version(idx)])
        else:
            self.rows[idx] = self.ledger.row(idx)
        self.seq[idx] = self._next_seq(self.t + commit_dt)
        self.t += ack_dt
        if finish:
            self.ledger.finish(idx, outcome)
        self.t += 0.0001
        return idx

    def insert(self, writer: str, **kw) -> int:
        return self.write(writer, OP_INSERT, **kw)

    def update(self, idx: int, values=None, **kw) -> int:
        led = self.ledger
        if values is None:
            values = {c: f"u{self._seq_counter}" for c in self.workload.content_columns}
        return self.write(led.writer(idx), OP_UPDATE, led.pk(idx), values, **kw)

    def delete(self, idx: int, **kw) -> int:
        led = self.ledger
        return self.write(led.writer(idx), OP_DELETE, led.pk(idx), **kw)

    # ---------------------------------------------------------------- wire shapes
    def wire_row(self, idx: int) -> dict:
        """The version as KalamDB sends it in rows: BIGINTs (n, _seq) as strings."""
        row = {k: (str(v) if k == self.workload.seq_column else v) for k, v in self.rows[idx].items()}
        row["_seq"] = str(self.seq[idx])
        row["_deleted"] = False
        return row

    def change(self, idx: int):
        """(kind, row, old, seq) of the change notification of write idx."""
        led = self.ledger
        op = led.op(idx)
        if op == OP_INSERT:
            return KIND_INSERT, self.wire_row(idx), None, self.seq[idx]
        prev = led.prev_version(idx)
        if op == OP_UPDATE:
            new = self.wire_row(idx)
            new.pop("_deleted")
            old_full = self.wire_row(prev)
            old = {"_seq": old_full["_seq"], "id": old_full["id"]}
            for k, v in new.items():
                if k not in ("_seq", "id") and str(v) != str(old_full.get(k)):
                    old[k] = old_full[k]
            return KIND_UPDATE, new, old, self.seq[idx]
        tomb = self.wire_row(prev)
        tomb["_seq"] = str(self.seq[idx])
        tomb["_deleted"] = True
        return KIND_DELETE, None, tomb, self.seq[idx]

    def subscription(self, listener: str = "l01", sub_id: Optional[str] = None, *, snapshot: bool = False,
                     owner: str = "", group: str = "", table_kind: Optional[str] = None,
                     subscribe: bool = True, ready_dt: float = 0.001) -> ArrivalLog:
        info = SubscriptionInfo(listener, sub_id or f"{listener}-sub", owner, group,
                                table_kind or self.workload.table_kind, snapshot,
                                self.workload.content_columns, self.workload.table)
        log = ArrivalLog(info)
        if subscribe:
            log.subscribed(self.t)
            self.t += ready_dt
            log.ready(self.t)
            self.t += 0.0001
        return log

    def deliver(self, log: ArrivalLog, idx: int, t: Optional[float] = None, **mutate) -> None:
        """Record write idx's change notification on log (now, or at t). mutate: row=..., old=...,
        seq=... replace parts of the message (to forge anomalies)."""
        kind, row, old, seq = self.change(idx)
        kind = mutate.get("kind", kind)
        row = mutate.get("row", row)
        old = mutate.get("old", old)
        seq = mutate.get("seq", seq)
        log.record_row(kind, row, old, seq, self.t if t is None else t)

    def deliver_snapshot(self, log: ArrivalLog, idx: int, t: Optional[float] = None) -> None:
        log.record_row(KIND_SNAPSHOT, self.wire_row(idx), None, None, self.t if t is None else t)
