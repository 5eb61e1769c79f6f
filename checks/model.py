"""Shared vocabulary of the ledger, the arrival logs and the verifier.

Everything here is plain data: small integer codes (they are stored in `array` columns, so they must
be small ints), the content digest both sides compute, and the description of a workload table.
"""

from __future__ import annotations

import importlib
import os
import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import orjson

# What a writer did (WriteLedger.op).
OP_INSERT = 1
OP_UPDATE = 2
OP_DELETE = 3
OP_NAMES = {OP_INSERT: "insert", OP_UPDATE: "update", OP_DELETE: "delete"}

# What the server answered (WriteLedger.outcome).
OUTCOME_PENDING = 0   # begin() was called, finish() not (yet)
OUTCOME_ACK = 1       # the server said it committed
OUTCOME_REJECTED = 2  # the server said it did not commit (SQL error, 429, ...)
OUTCOME_UNKNOWN = 3   # sent, no answer (timeout, reset): may or may not have committed
OUTCOME_NAMES = {OUTCOME_PENDING: "pending", OUTCOME_ACK: "ack", OUTCOME_REJECTED: "rejected",
                 OUTCOME_UNKNOWN: "unknown"}

# What a listener received (ArrivalLog.kind). The change kinds deliberately equal the op codes, so
# that "arrival kind == op of the write it resolves to" is one vectorised comparison.
KIND_SNAPSHOT = 0     # a row of an initial_data_batch (initial snapshot or resume)
KIND_INSERT = 1
KIND_UPDATE = 2
KIND_DELETE = 3
KIND_NAMES = {KIND_SNAPSHOT: "snapshot", KIND_INSERT: "insert", KIND_UPDATE: "update",
              KIND_DELETE: "delete"}
KIND_BY_CHANGE_TYPE = {"insert": KIND_INSERT, "update": KIND_UPDATE, "delete": KIND_DELETE}

# Columns KalamDB adds to every row; never part of a content digest.
SYSTEM_COLUMNS = frozenset({"_seq", "_deleted", "_commit_seq"})

# _seq is a snowflake: 41 bits of milliseconds since 2024-01-01 UTC, 10 bits worker, 12 bits sequence.
SEQ_EPOCH_MS = 1704067200000
SEQ_TIME_SHIFT = 22


def json_bytes(value) -> bytes:
    """``orjson.dumps(value)`` in a bytes object of its own length, for one that is kept: orjson's result
    keeps the buffer it wrote into (4,097 bytes held for a 112-byte row; the writers' ledger and their
    live rows were 3.2 KB per write, bench/scaling_bench.py), and a slice is a copy of the right size."""
    return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)[:-1]


def seq_commit_ms(seq: int) -> int:
    """Commit time (Unix ms, server clock) encoded in a `_seq`."""
    return (seq >> SEQ_TIME_SHIFT) + SEQ_EPOCH_MS


def seq_commit_seconds(seqs):
    """Commit times (Unix s, a numpy float64 array) of many `_seq`s (a numpy int64 array or any sequence of
    ints): what latency-from-commit is measured against, per arrival."""
    return ((np.asarray(seqs, dtype=np.int64) >> SEQ_TIME_SHIFT) + SEQ_EPOCH_MS) * 0.001


# Digest rendering: a present value renders as "col=<str(value)>", a missing one as "col" followed by a
# control character that str() of a value cannot start with after "=". str() is used on both sides so
# that a BIGINT written as int 5 and received as the JSON string "5" digest equally.
_FIELD_SEP = "\x1f"
_MISSING = "\x00"


def content_digest(values: Mapping, columns: Sequence[str]) -> int:
    """CRC-32 of a canonical text of `values` restricted to `columns` (in the given order)."""
    parts = []
    for col in columns:
        if col in values:
            parts.append(f"{col}={values[col]}")
        else:
            parts.append(col + _MISSING)
    return zlib.crc32(_FIELD_SEP.join(parts).encode("utf-8", "surrogatepass"))


def old_values_digest(old: Mapping, key_column: str = "id") -> int:
    """Digest of an update's `old_values[0]`: every key but the PK and the system columns, sorted.

    The ledger computes the same over the previous values of the columns the update changed
    (WriteLedger computes `content_digest(previous_row, sorted(changed_columns))`).
    """
    cols = sorted(k for k in old if k != key_column and k not in SYSTEM_COLUMNS)
    return content_digest(old, cols)


# The same two functions compiled (checks/_speedups.c, built at install where a C compiler is found), unless
# KALAMDB_LT_PURE_PYTHON=1. Both give the same number for the same row: a ledger digested by one process
# and arrivals by another (a worker without the compiled part) still compare. `speedups` is that module
# (None where the Python runs): checks.arrivals takes its record_row from it.
content_digest_python, old_values_digest_python = content_digest, old_values_digest
speedups = None
if not os.environ.get("KALAMDB_LT_PURE_PYTHON"):
    try:  # by name: the compiled module imports nothing of the package, so this is no circle through checks
        speedups = importlib.import_module(__package__ + "._speedups")
    except ImportError:
        pass
    else:
        speedups.configure(SYSTEM_COLUMNS)
        content_digest, old_values_digest = speedups.content_digest, speedups.old_values_digest


@dataclass(frozen=True)
class Workload:
    """One workload table as the checks see it.

    Every row has `id` ("{writer}:{k}", k = wseq of the INSERT that created it), `writer`, `n` (wseq of
    the write that produced this version) and the content columns. Digests cover `row_columns`.
    """

    table: str = ""
    table_kind: str = "shared"           # "shared" | "user"
    content_columns: tuple = ()
    key_column: str = "id"
    writer_column: str = "writer"
    seq_column: str = "n"

    def __post_init__(self):
        if self.table_kind not in ("shared", "user"):
            raise ValueError(f"table_kind must be 'shared' or 'user', not {self.table_kind!r}")
        object.__setattr__(self, "content_columns", tuple(self.content_columns))

    @property
    def row_columns(self) -> tuple:
        return (self.key_column, self.writer_column, self.seq_column) + self.content_columns
