"""WriteLedger: what every writer sent, and what the server answered.

One ledger per workload table (it knows the table's columns, to compute digests). Storage is
columnar (`array`), one entry per write, addressed by its index `idx` (0, 1, 2, ... in begin order):

    writer   writer code (interned name)         wseq     the writer's own sequence number 1, 2, 3, ...
    op       OP_INSERT / OP_UPDATE / OP_DELETE   outcome  OUTCOME_* (PENDING until finish())
    owner    owner code (USER tables)            group    group code (e.g. a conversation id)
    t_sent   time.time() at begin()              t_ack    time.time() of the answer (NaN if none)
    digest   content digest of the row after the write (for a DELETE: of the tombstone, i.e. the
             version it deleted, since KalamDB keeps every field in the tombstone)
    old_digest  UPDATE only: digest of the previous values of the columns it changed (else 0)
    prev / next  the previous / next version of the same key (-1: none); a REJECTED write is
             unlinked from this chain because it never became a version
    key      idx of the INSERT that created the key

Recording a write (one greenlet per writer; no locking because gevent is cooperative):

    idx = ledger.begin("w03", OP_INSERT, None, {"body": "hello"})   # pk None: "{writer}:{wseq}"
    n, pk = ledger.wseq(idx), ledger.pk(idx)    # what goes into the columns n and id
    row = ledger.row(idx)                       # {"id", "writer", "n", **content}: the row to send
    ... send it ...
    ledger.finish(idx, OUTCOME_ACK)             # or OUTCOME_REJECTED / OUTCOME_UNKNOWN

    idx = ledger.begin("w03", OP_UPDATE, pk, {"body": "edited"})    # partial values are merged
    idx = ledger.begin("w03", OP_DELETE, pk)

An arrival may be recorded before finish() (a notification can beat the HTTP answer): the ledger and
the arrival logs are only joined at verification time.

Distribution: each writer lives in exactly one process; `to_bytes()` / `WriteLedger.from_bytes()` ship
a ledger and `extend(other)` merges ledgers of disjoint writers (codes and indices are remapped).
"""

from __future__ import annotations

import json
import math
import struct
import time
from array import array
from typing import Iterator, Mapping, Optional

import numpy as np
import orjson

from .model import (OP_DELETE, OP_INSERT, OP_NAMES, OP_UPDATE, OUTCOME_ACK, OUTCOME_NAMES,
                    OUTCOME_PENDING, OUTCOME_REJECTED, OUTCOME_UNKNOWN, Workload, content_digest, json_bytes)

NAN = float("nan")

# (attribute, array typecode) of every per-write column, in serialisation order.
_COLUMNS = (
    ("writer", "I"), ("wseq", "q"), ("op", "b"), ("outcome", "b"), ("owner", "I"), ("group", "I"),
    ("t_sent", "d"), ("t_ack", "d"), ("digest", "I"), ("old_digest", "I"),
    ("prev", "q"), ("next", "q"), ("key", "q"),
)
_MAGIC = b"KLEDGER1"


class _Interner:
    """String <-> small int; code 0 is always the empty string."""

    __slots__ = ("names", "codes")

    def __init__(self, names=("",)):
        self.names = list(names)
        self.codes = {n: i for i, n in enumerate(self.names)}

    def code(self, name: str) -> int:
        c = self.codes.get(name)
        if c is None:
            c = len(self.names)
            self.names.append(name)
            self.codes[name] = c
        return c

    def get(self, name: str) -> int:
        return self.codes.get(name, -1)


class LedgerView:
    """Read-only snapshot of the ledger as Python lists, for fast vectorised verification.

    Every column list has one extra sentinel element at the end, so that indexing with -1 (an
    unresolved arrival) yields a value that matches nothing (op 0, outcome -1, owner -1, ...).
    """

    __slots__ = ("n", "writer", "wseq", "op", "outcome", "owner", "group", "t_sent", "t_ack",
                 "digest", "old_digest", "prev", "next", "key", "flat", "flat_base", "flat_count",
                 "_matching", "_arrays")

    def __init__(self, ledger: "WriteLedger"):
        self.n = len(ledger)
        sentinels = {"writer": -1, "wseq": -1, "op": 0, "outcome": -1, "owner": -1, "group": -1,
                     "t_sent": NAN, "t_ack": NAN, "digest": -1, "old_digest": -1, "prev": -1,
                     "next": -1, "key": -1}
        for name, _ in _COLUMNS:
            col = getattr(ledger, "_" + name).tolist()
            col.append(sentinels[name])
            setattr(self, name, col)
        # flat[flat_base[c] + wseq] = idx of writer code c's write number wseq; flat[0] = -1.
        flat = [-1]
        base, count = [], []
        for per_writer in ledger._by_writer:
            base.append(len(flat) - 1)
            count.append(len(per_writer))
            flat.extend(per_writer)
        self.flat, self.flat_base, self.flat_count = flat, base, count
        self._matching = {}
        self._arrays = {}

    def array(self, name: str):
        """Column ``name`` (sentinel included) as a numpy array, made once per view."""
        got = self._arrays.get(name)
        if got is None:
            got = self._arrays[name] = np.array(getattr(self, name),
                                                dtype=np.float64 if name in ("t_sent", "t_ack") else np.int64)
        return got

    def matching(self, owner_code: Optional[int], group_code: Optional[int]) -> list:
        """Indices of writes whose owner / group equal the given codes (None: any)."""
        k = (owner_code, group_code)
        got = self._matching.get(k)
        if got is None:
            idxs = range(self.n)
            if owner_code is not None:
                own = self.owner
                idxs = [i for i in idxs if own[i] == owner_code]
            if group_code is not None:
                grp = self.group
                idxs = [i for i in idxs if grp[i] == group_code]
            got = self._matching[k] = list(idxs)
        return got


class WriteLedger:
    """Columnar record of every write of one workload table (see the module docstring)."""

    def __init__(self, workload: Workload = Workload(), *, clock=time.time):
        self.workload = workload
        self._row_columns = workload.row_columns
        self._clock = clock
        for name, tc in _COLUMNS:
            setattr(self, "_" + name, array(tc))
        self._writers = _Interner()
        self._owners = _Interner()
        self._groups = _Interner()
        self._by_writer: list[array] = [array("q")]   # per writer code: idx by wseq - 1
        self._custom_pk: dict[int, str] = {}            # insert idx -> pk when not "{writer}:{wseq}"
        # Live state of each key written in this process, in three dicts that hold no container of their
        # own per key (a list per key was traversed by every full collection of the cyclic GC: at 3M
        # writes, 1/3 of the writers' CPU and pauses of 3 s): pk -> idx of its latest version; pk -> that
        # version's full row (absent once deleted); pk -> the row before it (absent: none), which a
        # REJECTED write restores. Rows are kept as JSON bytes: a dict of dicts is itself tracked, and a full
        # collection then visits every row (a spec run's generator paused longer the more rows it had
        # written); a dict of bytes is not tracked at all.
        self._latest: dict[str, int] = {}
        self._rows: dict[str, bytes] = {}
        self._prev_rows: dict[str, bytes] = {}
        self._mutations = 0
        self._view: Optional[LedgerView] = None
        self._view_at = -1
        # delta(): writes below _shipped are the reader's already; _touched lists those of them changed
        # since (by finish() or by a later version's link), so a delta carries no write twice
        self._shipped = -1            # -1: no reader yet (nothing is tracked)
        self._touched = array("q")

    # ------------------------------------------------------------------ recording
    def begin(self, writer: str, op: int, pk: Optional[str] = None, values: Optional[Mapping] = None,
              owner: str = "", group: str = "", t_sent: Optional[float] = None) -> int:
        """Record a write about to be sent; returns its idx. See the module docstring.

        `values`: the row content after the write (content columns; an UPDATE may give only the
        columns it changes, the rest is taken from the previous version). `id`, `writer` and `n` are
        filled in by the ledger; if given they must agree with it. For an UPDATE/DELETE, empty
        owner/group are inherited from the previous version of the key.
        """
        wcode = self._writers.code(writer)
        while len(self._by_writer) <= wcode:
            self._by_writer.append(array("q"))
        wseq = len(self._by_writer[wcode]) + 1
        idx = len(self._op)
        wl = self.workload
        values = dict(values or {})
        prev_idx, prev_row, prev_bytes = -1, None, None
        if op == OP_INSERT:
            if pk is None:
                pk = f"{writer}:{wseq}"
            if pk in self._latest:
                raise ValueError(f"key {pk!r} reused: writers never reuse a key")
            row = values
            key_idx = idx
            if pk != f"{writer}:{wseq}":
                self._custom_pk[idx] = pk
        elif op in (OP_UPDATE, OP_DELETE):
            prev_bytes = self._rows.get(pk)
            if prev_bytes is None:
                raise ValueError(f"{OP_NAMES[op]} of key {pk!r} which is unknown or deleted")
            prev_row = orjson.loads(prev_bytes)
            prev_idx = self._latest[pk]
            if self._writer[prev_idx] != wcode:
                raise ValueError(f"key {pk!r} belongs to another writer")
            key_idx = self._key[prev_idx]
            if not owner:
                owner = self._owners.names[self._owner[prev_idx]]
            if not group:
                group = self._groups.names[self._group[prev_idx]]
            row = dict(prev_row) if op == OP_UPDATE else prev_row
            if op == OP_UPDATE:
                row.update(values)
        else:
            raise ValueError(f"unknown op {op!r}")
        if op != OP_DELETE:
            for col, want in ((wl.key_column, pk), (wl.writer_column, writer), (wl.seq_column, wseq)):
                if col in values and str(values[col]) != str(want):
                    raise ValueError(f"column {col}={values[col]!r} disagrees with the ledger ({want!r})")
                row[col] = want
        cols = self._row_columns
        if op == OP_DELETE:
            digest = self._digest[prev_idx]        # the tombstone keeps every field of that version
            old_digest = 0
        else:
            digest = content_digest(row, cols)
            old_digest = 0
            if op == OP_UPDATE:
                changed = sorted(c for c in cols if c != wl.key_column
                                 and str(row.get(c)) != str(prev_row.get(c)))
                old_digest = content_digest(prev_row, changed)

        self._writer.append(wcode)
        self._wseq.append(wseq)
        self._op.append(op)
        self._outcome.append(OUTCOME_PENDING)
        self._owner.append(self._owners.code(owner))
        self._group.append(self._groups.code(group))
        self._t_sent.append(self._clock() if t_sent is None else t_sent)
        self._t_ack.append(NAN)
        self._digest.append(digest)
        self._old_digest.append(old_digest)
        self._prev.append(prev_idx)
        self._next.append(-1)
        self._key.append(key_idx)
        if prev_idx >= 0:
            self._next[prev_idx] = idx
            if prev_idx < self._shipped:
                self._touched.append(prev_idx)
        self._by_writer[wcode].append(idx)
        self._latest[pk] = idx
        if op == OP_DELETE:
            del self._rows[pk]
        else:
            self._rows[pk] = json_bytes(row)
        if prev_row is None:
            self._prev_rows.pop(pk, None)
        else:
            self._prev_rows[pk] = prev_bytes
        self._mutations += 1
        return idx

    def finish(self, idx: int, outcome: int, t_ack: Optional[float] = None) -> None:
        """Record the server's answer. ACK / REJECTED stamp t_ack (now unless given); UNKNOWN does not
        (nobody knows when, or whether, it committed). A REJECTED write is unlinked from its key's
        version chain and the key's state is rolled back, so the next write diffs against the right
        version. Calling finish again overwrites (e.g. UNKNOWN later resolved by a read)."""
        if outcome not in OUTCOME_NAMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        self._outcome[idx] = outcome
        if idx < self._shipped:
            self._touched.append(idx)
        if outcome == OUTCOME_UNKNOWN:
            self._t_ack[idx] = NAN if t_ack is None else t_ack
        elif outcome != OUTCOME_PENDING:
            self._t_ack[idx] = self._clock() if t_ack is None else t_ack
        if outcome == OUTCOME_REJECTED:
            prev = self._prev[idx]
            if prev >= 0 and self._next[prev] == idx:
                self._next[prev] = -1
                if prev < self._shipped:
                    self._touched.append(prev)
            pk = self.pk(idx)
            if self._latest.get(pk) == idx:
                if prev >= 0:
                    self._latest[pk] = prev
                    row = self._prev_rows.pop(pk, None)
                    if row is None:
                        self._rows.pop(pk, None)
                    else:
                        self._rows[pk] = row
                else:
                    del self._latest[pk]
                    self._rows.pop(pk, None)
                    self._prev_rows.pop(pk, None)
        self._mutations += 1

    # ------------------------------------------------------------------ lookups
    def next_wseq(self, writer: str) -> int:
        """The wseq the next begin() of `writer` will get (a writer needs it to build the row)."""
        c = self._writers.get(writer)
        return 1 if c < 0 or c >= len(self._by_writer) else len(self._by_writer[c]) + 1

    def __len__(self) -> int:
        return len(self._op)

    def wseq(self, idx: int) -> int:
        return self._wseq[idx]

    def writer(self, idx: int) -> str:
        return self._writers.names[self._writer[idx]]

    def op(self, idx: int) -> int:
        return self._op[idx]

    def outcome(self, idx: int) -> int:
        return self._outcome[idx]

    def owner(self, idx: int) -> str:
        return self._owners.names[self._owner[idx]]

    def group(self, idx: int) -> str:
        return self._groups.names[self._group[idx]]

    def t_sent(self, idx: int) -> float:
        return self._t_sent[idx]

    def t_ack(self, idx: int) -> Optional[float]:
        t = self._t_ack[idx]
        return None if math.isnan(t) else t

    def pk(self, idx: int) -> str:
        k = self._key[idx]
        got = self._custom_pk.get(k)
        if got is not None:
            return got
        return f"{self._writers.names[self._writer[k]]}:{self._wseq[k]}"

    def row(self, idx: int) -> Optional[dict]:
        """The full row after write idx (id, writer, n, content), while idx is its key's latest
        version in this process (always true right after begin()); None for a delete."""
        pk = self.pk(idx)
        if self._latest.get(pk) != idx:
            raise KeyError(f"write {idx} is no longer the latest version of its key")
        row = self._rows.get(pk)
        return None if row is None else orjson.loads(row)

    def find(self, writer: str, wseq: int) -> int:
        """idx of `writer`'s write number `wseq`, or -1."""
        c = self._writers.get(writer)
        if c < 0 or not 1 <= wseq <= len(self._by_writer[c]):
            return -1
        return self._by_writer[c][wseq - 1]

    def prev_version(self, idx: int) -> int:
        return self._prev[idx]

    def next_version(self, idx: int) -> int:
        return self._next[idx]

    def versions(self, idx: int) -> list:
        """Every version (idx) of the key of write idx, oldest first; rejected writes excluded."""
        out, i = [], self._key[idx]
        if self._outcome[i] == OUTCOME_REJECTED:
            return [i] if i == idx else []
        while i >= 0:
            out.append(i)
            i = self._next[i]
        return out

    def delete_of(self, idx: int) -> int:
        """idx of the DELETE of write idx's key, or -1."""
        v = self.versions(idx)
        return v[-1] if v and self._op[v[-1]] == OP_DELETE else -1

    def writers(self) -> list:
        return [w for w in self._writers.names[1:]]

    def writer_code(self, name: str) -> int:
        return self._writers.get(name)

    def owner_code(self, name: str) -> int:
        return self._owners.get(name)

    def group_code(self, name: str) -> int:
        return self._groups.get(name)

    def counts(self) -> dict:
        """{"insert": {"ack": n, "rejected": n, "unknown": n, "pending": n}, ...}"""
        out = {name: {o: 0 for o in OUTCOME_NAMES.values()} for name in OP_NAMES.values()}
        for op, oc in zip(self._op, self._outcome):
            out[OP_NAMES[op]][OUTCOME_NAMES[oc]] += 1
        return out

    def ack_times(self, owner: Optional[str] = None, group: Optional[str] = None) -> list:
        """Sorted ack times of the acknowledged writes of this owner (a user table's subscription) and
        group (a filtered one): the changes such a subscription must receive, and when they were due."""
        v = self.view()
        oc = None if owner is None else self.owner_code(owner)
        gc = None if group is None else self.group_code(group)
        if (owner is not None and oc < 0) or (group is not None and gc < 0):
            return []
        return sorted(v.t_ack[i] for i in v.matching(oc, gc) if v.outcome[i] == OUTCOME_ACK)

    def view(self) -> LedgerView:
        """A cached LedgerView (rebuilt only after the ledger changed)."""
        if self._view is None or self._view_at != self._mutations:
            self._view = LedgerView(self)
            self._view_at = self._mutations
        return self._view

    def iter_writes(self) -> Iterator[tuple]:
        """Plain tuples (idx, writer, wseq, op, outcome, owner, group, t_sent, t_ack, digest,
        old_digest, prev, next, key, pk), in idx order."""
        W, O, G = self._writers.names, self._owners.names, self._groups.names
        for i in range(len(self)):
            yield (i, W[self._writer[i]], self._wseq[i], self._op[i], self._outcome[i],
                   O[self._owner[i]], G[self._group[i]], self._t_sent[i], self.t_ack(i),
                   self._digest[i], self._old_digest[i], self._prev[i], self._next[i], self._key[i],
                   self.pk(i))

    # ------------------------------------------------------------------ clocks
    def shift_times(self, delta: float) -> None:
        """Add `delta` seconds to every t_sent and t_ack (NaN stays NaN): puts a ledger recorded on
        one machine on another machine's clock (distributed runs: delta = that machine's offset)."""
        if not delta:
            return
        for name in ("_t_sent", "_t_ack"):
            col = getattr(self, name)
            setattr(self, name, array("d", [t + delta for t in col]))
        self._mutations += 1
        if self._shipped > 0:
            self._shipped = 0         # every time moved: a reader gets the whole ledger again

    # ------------------------------------------------------------------ shipping and merging
    def _workload_dict(self) -> dict:
        wl = self.workload
        return {"table": wl.table, "table_kind": wl.table_kind, "content_columns": list(wl.content_columns),
                "key_column": wl.key_column, "writer_column": wl.writer_column, "seq_column": wl.seq_column}

    @staticmethod
    def _workload_of(d: dict) -> Workload:
        return Workload(d["table"], d["table_kind"], tuple(d["content_columns"]), d["key_column"],
                        d["writer_column"], d["seq_column"])

    def to_bytes(self) -> bytes:
        """Compact serialisation: a JSON header then the raw columns (native byte order)."""
        header = {
            "workload": self._workload_dict(),
            "writers": self._writers.names, "owners": self._owners.names, "groups": self._groups.names,
            "custom_pk": [[k, v] for k, v in self._custom_pk.items()],
            "n": len(self), "byteorder": struct.pack("=H", 1).hex(),
        }
        hb = json.dumps(header).encode()
        parts = [_MAGIC, struct.pack("<I", len(hb)), hb]
        parts += [getattr(self, "_" + name).tobytes() for name, _ in _COLUMNS]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "WriteLedger":
        if data[:8] != _MAGIC:
            raise ValueError("not a WriteLedger serialisation")
        (hlen,) = struct.unpack_from("<I", data, 8)
        header = json.loads(data[12:12 + hlen])
        led = cls(cls._workload_of(header["workload"]))
        swap = header["byteorder"] != struct.pack("=H", 1).hex()
        pos, n = 12 + hlen, header["n"]
        for name, tc in _COLUMNS:
            col = array(tc)
            size = col.itemsize * n
            col.frombytes(data[pos:pos + size])
            if swap:
                col.byteswap()
            pos += size
            setattr(led, "_" + name, col)
        led._writers = _Interner(header["writers"])
        led._owners = _Interner(header["owners"])
        led._groups = _Interner(header["groups"])
        led._custom_pk = {int(k): v for k, v in header["custom_pk"]}
        led._index_writers(0)
        return led

    def _index_writers(self, start: int) -> None:
        """_by_writer for the writes from ``start`` on (shipped columns carry no index)."""
        bw = self._by_writer
        while len(bw) < len(self._writers.names):
            bw.append(array("q"))
        for i in range(start, len(self)):
            c, s = self._writer[i], self._wseq[i]
            w = bw[c]
            while len(w) < s:
                w.append(-1)
            w[s - 1] = i

    def delta(self, full: bool = False) -> dict:
        """What changed since the last call, for one reader keeping a replica (the live view's verifier
        process, :meth:`apply`): the columns of the writes begun since, and the outcome, t_ack and next of
        older writes that changed since (finish(), or a later version linked to them). The first call and
        ``full`` send every write (``start`` 0). Its size follows the writes of the interval, not the
        length of the run: a whole ledger a time made the live view's copy grow with the run (49 ms stalls
        of the event loop in a 5-minute run)."""
        n = len(self)
        start = 0 if full or self._shipped < 0 else self._shipped
        touched = sorted({i for i in self._touched if i < start}) if start else []
        self._touched = array("q")
        self._shipped = n
        idx = array("q", touched)
        out = {"start": start, "n": n,
               "cols": {name: getattr(self, "_" + name)[start:n].tobytes() for name, _ in _COLUMNS},
               "touched": idx.tobytes(),
               "outcome": array("b", [self._outcome[i] for i in touched]).tobytes(),
               "t_ack": array("d", [self._t_ack[i] for i in touched]).tobytes(),
               "next": array("q", [self._next[i] for i in touched]).tobytes(),
               "writers": list(self._writers.names), "owners": list(self._owners.names),
               "groups": list(self._groups.names),
               "custom_pk": [[k, v] for k, v in self._custom_pk.items() if k >= start]}
        if start == 0:
            out["workload"] = self._workload_dict()
        return out

    @classmethod
    def replica(cls, delta: dict) -> "WriteLedger":
        """A new ledger from a first :meth:`delta` (``start`` 0)."""
        if delta["start"] != 0:
            raise ValueError("a replica starts from a delta with start 0")
        led = cls(cls._workload_of(delta["workload"]))
        led.apply(delta)
        return led

    def apply(self, delta: dict) -> None:
        """Bring this replica up to date with the next :meth:`delta` of its source (``start`` 0: replaced
        by it). Raises ValueError when the delta does not follow what this replica holds."""
        start = delta["start"]
        if start == 0:
            for name, tc in _COLUMNS:
                setattr(self, "_" + name, array(tc))
            self._by_writer = [array("q")]
            self._custom_pk = {}
        elif start != len(self):
            raise ValueError(f"ledger delta from write {start}, replica holds {len(self)}")
        for name, _ in _COLUMNS:
            getattr(self, "_" + name).frombytes(delta["cols"][name])
        idx = array("q")
        idx.frombytes(delta["touched"])
        for name, tc in (("outcome", "b"), ("t_ack", "d"), ("next", "q")):
            col, vals = getattr(self, "_" + name), array(tc)
            vals.frombytes(delta[name])
            for i, v in zip(idx, vals):
                col[i] = v
        self._writers = _Interner(delta["writers"])
        self._owners = _Interner(delta["owners"])
        self._groups = _Interner(delta["groups"])
        for k, v in delta["custom_pk"]:
            self._custom_pk[int(k)] = v
        self._index_writers(start)
        self._mutations += 1

    def extend(self, other: "WriteLedger") -> None:
        """Append every write of `other` (another process's ledger of the same table). The writers of
        the two ledgers must be disjoint (a writer lives in one process)."""
        if other.workload.row_columns != self.workload.row_columns:
            raise ValueError("cannot merge ledgers of different workloads")
        clash = set(self._writers.names[1:]) & set(other._writers.names[1:])
        if clash:
            raise ValueError(f"writers present in both ledgers: {sorted(clash)[:5]}")
        off = len(self)
        wmap = [self._writers.code(n) for n in other._writers.names]
        omap = [self._owners.code(n) for n in other._owners.names]
        gmap = [self._groups.code(n) for n in other._groups.names]
        while len(self._by_writer) < len(self._writers.names):
            self._by_writer.append(array("q"))
        self._writer.extend(wmap[c] for c in other._writer)
        self._owner.extend(omap[c] for c in other._owner)
        self._group.extend(gmap[c] for c in other._group)
        for name in ("wseq", "op", "outcome", "t_sent", "t_ack", "digest", "old_digest"):
            getattr(self, "_" + name).extend(getattr(other, "_" + name))
        for name in ("prev", "next", "key"):
            getattr(self, "_" + name).extend(v + off if v >= 0 else -1 for v in getattr(other, "_" + name))
        for c, per_writer in enumerate(other._by_writer):
            if c:
                self._by_writer[wmap[c]].extend(i + off if i >= 0 else -1 for i in per_writer)
        for k, v in other._custom_pk.items():
            self._custom_pk[k + off] = v
        self._mutations += 1
