"""The provisional verifier's own process: ``python -m loadtest.view.verifier_process`` (started by the observer).

Why a process: the verifier is pure Python; run in a thread of the load generator it holds the GIL in
slices of several milliseconds, which showed as ~40 ms event-loop stalls and a threefold p99 delivery
latency in a 10-writer / 20-listener run. In its own process it costs the listeners nothing but the
copy of the record (memcpy of array columns, a pickle of bytes) and a pipe write.

Protocol on stdin/stdout: frames of a 4-byte big-endian length and a pickle. The observer streams the
record: a frame a second with what is new, and a verification asked for by a frame with ``verify`` true,
the only frames answered (so a copy on the generator's event loop is a second's worth of arrivals, however
long a verification takes).

frame    {"ledgers": {table: WriteLedger.delta()},                         # what changed in each ledger
          "logs": [{"key", "table", "user", "vanished", "info", "start",   # arrival logs: only what is new
                    "cols": {column: bytes from start}, "epochs", "writers", "t_finished"}],
          "cutoff", "now", "finished", "missing", "thresholds", "latency_from", "reset", "verify"}
answer   {"scenarios", "listeners", "totals", "series", "histogram", "worker_ms"}  or  {"error": text}

An arrival log's and a ledger delta's ``start`` must equal the length this process already holds (else the
next verification is answered ``{"error": "resync"}`` and the observer sends everything from 0 with
``reset``).
"""
from __future__ import annotations

import math
import os
import pickle
import struct
import sys
import time
import traceback

from checks.arrivals import ArrivalLog
from checks.histogram import LatencyHistogram
from checks.ledger import WriteLedger
from checks.verifier import reconcile, verdicts

from ..verdict.timeseries import TimeSeries

COLUMNS = ("kind", "writer", "n", "seq", "t_recv", "digest", "old_digest", "epoch", "flags")


def read_frame(f):
    head = f.read(4)
    if not head or len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    data = f.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def write_frame(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack(">I", len(data)))
    f.write(data)
    f.flush()


class Replica:
    """The record as this process holds it, brought up to date frame by frame (:meth:`handle`)."""

    def __init__(self):
        self.logs: dict = {}
        self.meta: dict = {}        # key -> (user, table, vanished)
        self.ledgers: dict = {}     # table -> WriteLedger replica
        self.series = None
        self.broken = None          # why a frame could not be applied: answered at the next verification

    def reset(self, latency_from: str) -> None:
        self.logs, self.meta, self.ledgers, self.broken = {}, {}, {}, None
        self.series = TimeSeries(latency_from)

    def handle(self, req: dict):
        """Apply one frame; when it asks for a verification (``verify``), the answer (else None)."""
        t0 = time.perf_counter()
        if req.get("reset") or self.series is None:
            self.reset(req.get("latency_from", "sent"))
        if self.broken is None:
            try:
                self.broken = self._apply(req)
            except Exception as exc:   # answered, never fatal: the observer shows the error and goes on
                self.broken = f"{type(exc).__name__}: {exc}"
        if not req.get("verify", True):
            return None
        if self.broken is not None:
            return {"error": self.broken}
        return self._verify(req, t0)

    def _apply(self, req: dict):
        """None, or "resync" when a frame does not follow what this process holds."""
        for d in req["logs"]:
            lg = self.logs.get(d["key"])
            if lg is None:
                if d["start"] != 0:
                    return "resync"
                lg = self.logs[d["key"]] = ArrivalLog(d["info"])
            if len(lg.kind) != d["start"]:
                return "resync"
            for name in COLUMNS:
                getattr(lg, name).frombytes(d["cols"][name])
            lg.epochs = d["epochs"]
            lg._writers = list(d["writers"])
            lg._writer_codes = {w: i for i, w in enumerate(lg._writers)}
            lg.t_finished = d["t_finished"]
            self.meta[d["key"]] = (d["user"], d["table"], d["vanished"])
        for key, d in req["ledgers"].items():
            led = self.ledgers.get(key)
            try:
                if led is None or d["start"] == 0:
                    self.ledgers[key] = WriteLedger.replica(d)
                else:
                    led.apply(d)
            except ValueError:
                return "resync"
        return None

    def _verify(self, req: dict, t0: float) -> dict:
        cutoff = req.get("cutoff")
        for key, lg in self.logs.items():
            if cutoff is not None and math.isnan(lg.t_finished):
                lg.t_finished = cutoff
        ledgers = self.ledgers
        th = req["thresholds"]
        results, per_listener = [], {}
        for key, lg in self.logs.items():
            user, table, vanished = self.meta[key]
            r = reconcile(ledgers[table], lg)
            if vanished:
                r.vanished = True
            results.append(r)
            per_listener.setdefault(user, []).append(r)
        run_flags = {"drain_timed_out": False, "ledger_partial": False, "missing_listeners": req.get("missing") or []}
        v = verdicts(list(ledgers.values()), results, None, run_flags, th)
        scenarios = [{"id": k, "title": x.title, "verdict": x.verdict, "figure": x.figure,
                      "threshold": x.threshold, "value": x.value} for k, x in v.items()]
        listeners = []
        for user, rs in per_listener.items():
            h = LatencyHistogram()
            for r in rs:
                h.merge(r.latency[th.latency_from])
            s = h.summary_ms()
            listeners.append({"listener": user, "subscriptions": len(rs),
                              "received": sum(r.change_messages for r in rs),
                              "snapshot_rows": sum(r.snapshot_rows for r in rs),
                              "expected": sum(r.expected for r in rs), "lost": sum(r.lost for r in rs),
                              "duplicated": sum(r.duplicated for r in rs),
                              "out_of_order": sum(r.out_of_order_total for r in rs),
                              "p50": s["p50"], "p95": s["p95"], "p99": s["p99"],
                              "vanished": any(r.vanished for r in rs)})
        for key, led in ledgers.items():
            self.series.add_ledger(key, led.view(), now=req["now"], final=req.get("finished", False))
        for key, lg in self.logs.items():
            self.series.add_log(lg, ledgers[self.meta[key][1]])
        all_h = LatencyHistogram()
        for r in results:
            all_h.merge(r.latency[th.latency_from])
        counts: dict = {}
        for led in ledgers.values():
            for op, d in led.counts().items():
                for k, c in d.items():
                    counts[k] = counts.get(k, 0) + c
        totals = {"writes_acked": counts.get("ack", 0), "writes_sent": sum(counts.values()),
                  "deliveries": sum(r.change_messages for r in results),
                  "expected": sum(r.expected for r in results), "lost": sum(r.lost for r in results),
                  "duplicated": sum(r.duplicated for r in results),
                  "out_of_order": sum(r.out_of_order_total for r in results),
                  "latency": all_h.summary_ms(), "latency_from": th.latency_from}
        return {"scenarios": scenarios, "listeners": listeners, "totals": totals,
                "series": self.series.columns(), "histogram": self.series.histogram(threshold_ms=th.latency_ms),
                "worker_ms": round((time.perf_counter() - t0) * 1000.0, 1)}


def main() -> int:
    # A provisional verdict can wait; the listeners and the server cannot: on a machine with fewer free cores
    # than busy processes, a verification at the same priority took CPU from the load generator (event-loop
    # stalls of 340 ms while verifying in a 5-minute spec run on 2 cores).
    try:
        os.nice(10)
    except (AttributeError, OSError):
        pass
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    w = Replica()
    while True:
        req = read_frame(inp)
        if req is None:
            return 0
        try:
            ans = w.handle(req)
        except Exception as exc:  # answer, never die: the observer shows the error and goes on
            ans = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=5)}
            if not req.get("verify", True):
                w.broken = ans["error"]
                continue
        if ans is not None:
            write_frame(out, ans)


if __name__ == "__main__":
    sys.exit(main())
