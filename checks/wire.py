"""Shipping verification results between processes (distributed runs): compact and lossless.

    blob = pack({"anything": "json-able"}, [b"raw", b"bytes"])    # one bytes object
    header, blobs = unpack(blob)

    d, blobs = result_to_wire(result)            # SubscriptionResult -> json-able dict + raw arrays
    result = result_from_wire(d, blobs)          # ... and back; verdicts() sees no difference

Everything `verdicts()` reads from a SubscriptionResult travels: the counters, the samples, the three
latency histograms (mergeable: `LatencyHistogram.to_dict`) and the first-arrival arrays
(`recv_idx`, `recv_seq`, `recv_epoch`) the cross-subscription divergence check (L6) needs. The write
indices in `recv_idx` refer to the ledger the result was reconciled against, so every process must
reconcile against the same (merged) ledger bytes.
"""
from __future__ import annotations

import json
import struct
import zlib
from array import array
from dataclasses import fields

from .histogram import LatencyHistogram
from .verifier import SubscriptionResult

_MAGIC = b"KLTWIRE1"
_ARRAYS = ("recv_idx", "recv_seq", "recv_epoch", "lost_sent")
BLOBS_PER_RESULT = len(_ARRAYS)   # result_to_wire's blobs of one result, in this order
_LITTLE = struct.pack("=H", 1) == struct.pack("<H", 1)


def pack(header: dict, blobs: list = (), compress: bool = True) -> bytes:
    """header (JSON) + blobs, optionally zlib-compressed (level 1: cheap, and ledgers shrink ~3x)."""
    hb = json.dumps(header, separators=(",", ":"), default=str).encode()
    parts = [struct.pack("<I", len(hb)), hb, struct.pack("<I", len(blobs))]
    for b in blobs:
        parts += [struct.pack("<Q", len(b)), b]
    body = b"".join(parts)
    if compress:
        return _MAGIC + b"Z" + zlib.compress(body, 1)
    return _MAGIC + b"R" + body


def unpack(data: bytes) -> tuple:
    if data[:8] != _MAGIC:
        raise ValueError("not a packed payload")
    body = zlib.decompress(data[9:]) if data[8:9] == b"Z" else data[9:]
    (hlen,) = struct.unpack_from("<I", body, 0)
    header = json.loads(body[4:4 + hlen])
    pos = 4 + hlen
    (n,) = struct.unpack_from("<I", body, pos)
    pos += 4
    blobs = []
    for _ in range(n):
        (size,) = struct.unpack_from("<Q", body, pos)
        pos += 8
        blobs.append(body[pos:pos + size])
        pos += size
    return header, blobs


def result_to_wire(r: SubscriptionResult) -> tuple:
    """(json-able dict, [bytes of recv_idx, recv_seq, recv_epoch, lost_sent]) — little-endian arrays."""
    d = {}
    for f in fields(SubscriptionResult):
        if f.name in _ARRAYS:
            continue
        v = getattr(r, f.name)
        if f.name == "latency":
            v = {k: h.to_dict() for k, h in v.items()}
        d[f.name] = v
    blobs = []
    for name in _ARRAYS:
        a = getattr(r, name)
        if not _LITTLE:
            a = array(a.typecode, a)
            a.byteswap()
        d[name + "_typecode"] = a.typecode
        blobs.append(a.tobytes())
    return d, blobs


def result_from_wire(d: dict, blobs: list) -> SubscriptionResult:
    kw = {}
    names = {f.name for f in fields(SubscriptionResult)}
    for k, v in d.items():
        if k in names and k not in _ARRAYS:
            kw[k] = v
    kw["latency"] = {k: LatencyHistogram.from_dict(h) for k, h in d["latency"].items()}
    for name, raw in zip(_ARRAYS, blobs):
        a = array(d[name + "_typecode"])
        a.frombytes(raw)
        if not _LITTLE:
            a.byteswap()
        kw[name] = a
    return SubscriptionResult(**kw)
