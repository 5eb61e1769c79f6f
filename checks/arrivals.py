"""ArrivalLog: everything one subscription received, compactly.

One log per subscription (per listener and subscription id). Columns (one entry per arrival, i.e. per
change message or per snapshot row), about 40 bytes per arrival:

    kind int8 (KIND_*)  writer uint16 (log-local code)  n int64  seq int64 (_seq)  t_recv double
    digest uint32  old_digest uint32  epoch int16  flags uint8 (FLAG_*)

Epochs: every subscribed() call (the first subscribe, then each resume) starts a new epoch;
ready() marks when its live changes started to flow; disconnected() ends it (connection lost);
finished() marks the normal end of the run (after the drain), without ending the epoch.

    log = ArrivalLog(SubscriptionInfo("l07", "l07-events", owner="", group="", table_kind="shared",
                                      snapshot=True, content_columns=("body",)))
    log.subscribed(t)                       # subscribe request sent
    log.ready(t)                            # batch/ack with status "ready" received
    log.record_change(change_event)         # kalamclient.events.Change
    log.record_batch(initial_data_batch)    # kalamclient.events.InitialDataBatch (snapshot rows)
    log.disconnected(t)                     # socket lost; then subscribed(t2, resume_from=last_seq)
    log.finished(t)                         # drain over

Rows arrive with BIGINTs as strings ("n": "5"); record_row() converts. Nothing is resolved against the
ledger here: notifications can arrive before the writer's HTTP answer (or before finish()).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Mapping, Optional

from .model import (KIND_BY_CHANGE_TYPE, KIND_DELETE, KIND_SNAPSHOT, KIND_UPDATE, Workload,
                    content_digest, old_values_digest, speedups)

NAN = float("nan")

FLAG_DELETED_OK = 1   # a delete whose tombstone has `_deleted: true`
FLAG_MALFORMED = 2    # the row lacked writer / n (or n was not an integer): cannot be resolved
FLAG_NO_OLD = 4       # an update without old_values


@dataclass(frozen=True)
class SubscriptionInfo:
    """What one subscription asked for.

    owner: the subscribing user's id (on a USER table it only sees rows owned by that user).
    group: the subscription's filter value on the workload's group (e.g. one conversation id), "" if
    unfiltered. snapshot: whether the first subscribe requested an initial snapshot (options given).
    content_columns: the workload content columns present in received rows (digests cover
    id, writer, n and these; they must equal the ledger workload's for content to be checked).
    """

    listener: str
    subscription_id: str
    owner: str = ""
    group: str = ""
    table_kind: str = "shared"
    snapshot: bool = False
    content_columns: tuple = ()
    table: str = ""

    @property
    def key(self) -> str:
        """The key used in `counters` and in reports: "listener/subscription_id"."""
        return f"{self.listener}/{self.subscription_id}"


@dataclass
class Epoch:
    """One connection's worth of a subscription (the first subscribe, or one resume)."""

    t_subscribed: float
    resume_from: Optional[int] = None     # `from` _seq of a resume (None: fresh subscribe)
    snapshot: bool = False
    t_ready: float = NAN
    t_disconnected: float = NAN
    t_last_arrival: float = NAN           # last arrival before disconnected() (gap start)
    start: int = 0                        # first arrival position of this epoch

    @property
    def is_resume(self) -> bool:
        return self.resume_from is not None


class ArrivalLog:
    __slots__ = ("info", "workload", "kind", "writer", "n", "seq", "t_recv", "digest", "old_digest",
                 "epoch", "flags", "epochs", "t_finished", "_writers", "_writer_codes",
                 "_row_columns", "_key_col", "_writer_col", "_n_col")

    def __init__(self, info: SubscriptionInfo, workload: Optional[Workload] = None):
        self.info = info
        wl = workload or Workload(info.table, info.table_kind, tuple(info.content_columns))
        self.workload = wl
        self._row_columns = (wl.key_column, wl.writer_column, wl.seq_column) + tuple(info.content_columns)
        self._key_col, self._writer_col, self._n_col = wl.key_column, wl.writer_column, wl.seq_column
        self.kind = array("b")
        self.writer = array("H")
        self.n = array("q")
        self.seq = array("q")
        self.t_recv = array("d")
        self.digest = array("I")
        self.old_digest = array("I")
        self.epoch = array("h")
        self.flags = array("B")
        self.epochs: list[Epoch] = []
        self.t_finished = NAN
        self._writers = [""]              # log-local writer code -> name (0: unknown / malformed)
        self._writer_codes = {"": 0}

    # ------------------------------------------------------------------ lifecycle
    def subscribed(self, t: float, resume_from: Optional[int] = None,
                   snapshot: Optional[bool] = None) -> int:
        """A subscribe (or resume, with resume_from = the `from` _seq sent) request was sent at t.
        Starts a new epoch and returns its number. A resume always takes a snapshot (KalamDB sends
        the current state of rows changed after `from`); a fresh re-subscribe uses info.snapshot
        unless told otherwise."""
        if snapshot is None:
            snapshot = True if resume_from is not None else self.info.snapshot
        if self.epochs and math.isnan(self.epochs[-1].t_disconnected):
            self._close_epoch(t)
        self.epochs.append(Epoch(t, resume_from, bool(snapshot), start=len(self.kind)))
        return len(self.epochs) - 1

    def ready(self, t: float) -> None:
        """Status "ready" received: live changes flow from here (end of the snapshot, if any)."""
        self._current().t_ready = t

    def disconnected(self, t: float) -> None:
        """The connection was lost (or the subscription ended) at t: the current epoch ends."""
        if self.epochs and math.isnan(self.epochs[-1].t_disconnected):
            self._close_epoch(t)

    def finished(self, t: float) -> None:
        """The run's drain is over at t; the current epoch stays open (nothing was lost by closing)."""
        self.t_finished = t

    def _close_epoch(self, t: float) -> None:
        ep = self.epochs[-1]
        ep.t_disconnected = t
        ep.t_last_arrival = self.t_recv[-1] if len(self.kind) > ep.start else ep.t_ready

    def _current(self) -> Epoch:
        if not self.epochs:   # tolerate a missing subscribed() call: the epoch starts now
            self.epochs.append(Epoch(NAN, None, self.info.snapshot, start=len(self.kind)))
        return self.epochs[-1]

    @property
    def gaps(self) -> list:
        """(t of the last arrival before a disconnect, t ready after the resume) per resume."""
        out = []
        for prev, nxt in zip(self.epochs, self.epochs[1:]):
            out.append((prev.t_last_arrival, nxt.t_ready))
        return out

    # ------------------------------------------------------------------ recording
    def writer_code(self, name: str) -> int:
        c = self._writer_codes.get(name)
        if c is None:
            c = len(self._writers)
            self._writers.append(name)
            self._writer_codes[name] = c
        return c

    def record(self, kind: int, writer: str, n: int, seq: int, t_recv: float, digest: int,
               old_digest: int = 0, deleted_flag_ok: bool = False, malformed: bool = False,
               no_old: bool = False) -> None:
        """Record one arrival from already-extracted fields. For a delete, n is the tombstone's n (the
        n of the version it deleted) and digest is the tombstone's digest."""
        if not self.epochs:
            self._current()
        self.kind.append(kind)
        c = self._writer_codes.get(writer)
        self.writer.append(self.writer_code(writer) if c is None else c)
        self.n.append(n)
        self.seq.append(seq)
        self.t_recv.append(t_recv)
        self.digest.append(digest)
        self.old_digest.append(old_digest)
        self.epoch.append(len(self.epochs) - 1)
        self.flags.append((FLAG_DELETED_OK if deleted_flag_ok else 0) | (FLAG_MALFORMED if malformed else 0)
                          | (FLAG_NO_OLD if no_old else 0))

    def record_row(self, kind: int, row: Optional[Mapping], old: Optional[Mapping] = None,
                   seq: Optional[int] = None, t_recv: float = NAN) -> tuple:
        """Record a change (or a snapshot row) from its JSON rows: `row` = rows[0] (None for a delete),
        `old` = old_values[0] (the tombstone for a delete). seq defaults to the row's `_seq`.
        Returns (writer, n) as recorded: ("", n) or (writer, -1) when the row was malformed."""
        src = old if kind == KIND_DELETE else row
        if src is None:
            src = {}
        writer = src.get(self._writer_col)
        n_raw = src.get(self._n_col)
        malformed = False
        try:
            n = int(n_raw)
        except (TypeError, ValueError):
            n, malformed = -1, True
        if not isinstance(writer, str):
            writer, malformed = "", True
        if seq is None:
            try:
                seq = int(src.get("_seq"))
            except (TypeError, ValueError):
                seq = 0
        digest = content_digest(src, self._row_columns)
        old_digest, no_old, deleted_ok = 0, False, False
        if kind == KIND_UPDATE:
            if old:
                old_digest = old_values_digest(old, self._key_col)
            else:
                no_old = True
        elif kind == KIND_DELETE:
            deleted_ok = src.get("_deleted") is True
        self.record(kind, writer, n, seq, t_recv, digest, old_digest, deleted_ok, malformed, no_old)
        return writer, n

    # record_row is compiled where checks._speedups was built (below); this stays the reference (and the
    # compiled one's way for inputs it does not take itself)
    record_row_python = record_row

    def record_change(self, change) -> None:
        """Record a kalamclient.events.Change (change_type, row, old, seq, received_at)."""
        self.record_row(KIND_BY_CHANGE_TYPE[change.change_type], change.row, change.old, change.seq,
                        change.received_at)

    def record_batch(self, batch) -> None:
        """Record the rows of a kalamclient.events.InitialDataBatch as snapshot arrivals."""
        t = batch.received_at
        for row in batch.rows:
            self.record_row(KIND_SNAPSHOT, row, None, None, t)

    # ------------------------------------------------------------------ clocks
    def shift_times(self, delta: float) -> None:
        """Add `delta` seconds to every time of this log (arrivals, epochs, end; NaN stays NaN): puts
        a log recorded on one machine on another machine's clock (distributed runs)."""
        if not delta:
            return
        self.t_recv = array("d", [t + delta for t in self.t_recv])
        for ep in self.epochs:
            ep.t_subscribed += delta
            ep.t_ready += delta
            ep.t_disconnected += delta
            ep.t_last_arrival += delta
        self.t_finished += delta

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.kind)

    @property
    def writers(self) -> list:
        """Log-local writer code -> name."""
        return self._writers

    def nbytes(self) -> int:
        """Bytes held by the columns (allocated size, excluding the small epoch/writer tables)."""
        return sum(a.buffer_info()[1] * a.itemsize for a in
                   (self.kind, self.writer, self.n, self.seq, self.t_recv, self.digest,
                    self.old_digest, self.epoch, self.flags))


if speedups is not None:
    # the same arrival recorded, the same (writer, n) returned (tests/test_speedups.py), without the two Python
    # frames of record_row and record per change: the largest part of a listener's cost per delivery after the read
    ArrivalLog.record_row = speedups.record_row_method(ArrivalLog, KIND_UPDATE, KIND_DELETE, FLAG_DELETED_OK,
                                                       FLAG_MALFORMED, FLAG_NO_OLD)
