"""Per-second time series of a run: writes sent / acknowledged, change deliveries, delivery latency.

Pure bookkeeping over the run's record (the ledgers and the arrival logs), no sockets, no Locust:

    ts = TimeSeries(latency_from="sent")
    for key, ledger in run.ledgers.items():
        ts.add_ledger(key, ledger.view())                  # writes per second (t_sent, t_ack)
    for log, ledger in logs:
        ts.add_log(log, ledger)                            # deliveries, latency per second (t_recv)
    ts.columns()   # {"t": [...], "writes_sent": [...], "writes_acked": [...], "deliveries": [...],
                   #  "p50": [...], "p95": [...], "p99": [...], "samples": [...]}   (ms; None = no sample)

Both calls are incremental: a cursor per ledger and per log remembers how far it got, so the live view
feeds the new part every few seconds and the end-of-run report feeds everything once. ``shift`` (seconds)
moves the times onto another clock as they are counted (a worker's times onto the master's).

Series merge by adding counts: ``to_wire(take=True)`` hands over what was counted since the last take (the
cursors stay), and ``merge_wire`` adds such a part to another series. That is how a distributed run's
workers feed the master's live view and the end-of-run report. A write still
pending (no answer yet) holds the ledger cursor back until it is answered or ``pending_horizon``
seconds old. Latency here is per *change arrival* (snapshot rows are not deliveries), signed, from
the run's ``--latency-from`` start point; the verdict's figures (first arrival of each write) are the
verifier's, these are for plotting.
"""
from __future__ import annotations

import math
from array import array
from collections import Counter
from functools import partial
from itertools import compress, groupby, repeat
from operator import add, is_not, itemgetter, ne

import numpy as np

from checks.histogram import LatencyHistogram
from checks.model import KIND_DELETE, KIND_SNAPSHOT, OUTCOME_ACK, OUTCOME_PENDING, seq_commit_seconds

__all__ = ["TimeSeries", "series_of"]

_COUNTS = ("writes_sent", "writes_acked", "deliveries")
_not_none = partial(is_not, None)


class TimeSeries:
    def __init__(self, latency_from: str = "sent", pending_horizon: float = 30.0):
        if latency_from not in ("sent", "ack", "commit"):
            raise ValueError(f"latency_from must be sent, ack or commit, not {latency_from!r}")
        self.latency_from = latency_from
        self.pending_horizon = pending_horizon
        self.writes_sent: Counter = Counter()
        self.writes_acked: Counter = Counter()
        self.deliveries: Counter = Counter()
        self.latency: dict[int, LatencyHistogram] = {}
        self.overall = LatencyHistogram()          # every sample: the histogram plot
        self._ledger_cursor: dict = {}
        self._log_cursor: dict = {}

    # ------------------------------------------------------------------ feeding
    def add_ledger(self, key, view, now: float | None = None, final: bool = False, shift: float = 0.0) -> None:
        """Count the writes of one ledger (a ``LedgerView``, or anything with its ``n``, ``outcome``,
        ``t_sent`` and ``t_ack`` columns) from its cursor on. ``final``: the run is over, count everything
        (a write never answered is not acknowledged)."""
        start = self._ledger_cursor.get(key, 0)
        n = view.n
        if start >= n:
            return
        outcome, t_sent, t_ack = view.outcome, view.t_sent, view.t_ack
        horizon = -math.inf if final or now is None else now - self.pending_horizon
        stop = n
        for i in range(start, n):
            if outcome[i] == OUTCOME_PENDING and t_sent[i] > horizon and not final:
                stop = i
                break
        if stop <= start:
            return
        self.writes_sent.update(map(int, t_sent[start:stop]) if not shift else
                                (int(t + shift) for t in t_sent[start:stop]))
        self.writes_acked.update(int(t + shift) for o, t in zip(outcome[start:stop], t_ack[start:stop])
                                 if o == OUTCOME_ACK and t == t)
        self._ledger_cursor[key] = stop

    def add_log(self, log, ledger, key=None, shift: float = 0.0) -> None:
        """Count the change arrivals of one ArrivalLog (or a copy of one) from its cursor on;
        ``ledger`` is the WriteLedger of the subscription's table (resolves arrivals to writes; unused,
        may be None, with latency from commit). ``shift`` moves the arrival times (the ledger's
        are taken as they are)."""
        key = key if key is not None else log.info.key
        start = self._log_cursor.get(key, 0)
        n = len(log.kind)
        if start >= n:
            return
        self._log_cursor[key] = n
        # C-level iteration (map / compress / groupby) wherever a step needs no ledger lookup: a worker
        # feeds this on its listeners' event loop every few seconds (loadtest.view.livefeed)
        kinds = log.kind[start:n]
        keep = list(map(ne, kinds, repeat(KIND_SNAPSHOT)))
        t_all = log.t_recv[start:n]
        if shift:
            t_all = array("d", map(add, t_all, repeat(shift)))
        t_recv = list(compress(t_all, keep))
        if not t_recv:
            return
        secs = list(map(int, t_recv))
        self.deliveries.update(secs)
        if self.latency_from == "commit":
            seqs = list(compress(log.seq[start:n], keep))
            lat = (np.array(t_recv, dtype=np.float64) - seq_commit_seconds(seqs)).tolist()
            if min(seqs) <= 0:      # no commit time in this _seq
                lat = [x if q > 0 else None for x, q in zip(lat, seqs)]
        else:
            view = ledger.view()
            start_col = view.t_sent if self.latency_from == "sent" else view.t_ack
            pos = list(compress(range(n - start), keep))
            kinds = [kinds[j] for j in pos]
            writers, ns = log.writer[start:n].tolist(), log.n[start:n].tolist()
            names = log.writers
            base, count = [], []
            for c in (ledger.writer_code(name) if name else -1 for name in names):
                if 0 <= c < len(view.flat_base):
                    base.append(view.flat_base[c])
                    count.append(view.flat_count[c])
                else:
                    base.append(0)
                    count.append(0)
            flat, nxt = view.flat, view.next
            lat = []
            for j, k, t in zip(pos, kinds, t_recv):
                w, x = writers[j], ns[j]
                i = flat[base[w] + x] if 0 < x <= count[w] else -1
                if i >= 0 and k == KIND_DELETE:
                    i = nxt[i]          # a tombstone names the version it deleted
                t0 = start_col[i] if i >= 0 else math.nan
                lat.append(t - t0 if t0 == t0 else None)
        # arrivals come in time order, so a second's samples are (mostly) one run
        for s, grp in groupby(zip(secs, lat), key=itemgetter(0)):
            values = array("d", filter(_not_none, map(itemgetter(1), grp)))
            if not values:
                continue
            h = self.latency.get(s)
            if h is None:
                h = self.latency[s] = LatencyHistogram()
            h.add_many(values)
            self.overall.add_many(values)

    # ------------------------------------------------------------------ merging
    def to_wire(self, take: bool = False) -> dict:
        """The counts as plain lists (msgpack / JSON-able): ``{"writes_sent": [[second, n], ...],
        "writes_acked": ..., "deliveries": ..., "latency": [[second, LatencyHistogram.to_dict()], ...]}``.
        ``take``: and start counting afresh (the cursors stay, so nothing is counted twice)."""
        out = {name: sorted(getattr(self, name).items()) for name in _COUNTS}
        out["latency"] = [[s, h.to_dict()] for s, h in sorted(self.latency.items())]
        if take:
            for name in _COUNTS:
                getattr(self, name).clear()
            self.latency = {}
            self.overall = LatencyHistogram()
        return out

    def merge_wire(self, d: dict) -> None:
        """Add a part made by ``to_wire`` (of a series with the same latency start)."""
        for name in _COUNTS:
            getattr(self, name).update({int(s): int(c) for s, c in d.get(name, ())})
        for s, hd in d.get("latency", ()):
            h = LatencyHistogram.from_dict(hd)
            mine = self.latency.get(int(s))
            if mine is None:
                self.latency[int(s)] = mine = LatencyHistogram()
            mine.merge(h)
            self.overall.merge(h)

    # ------------------------------------------------------------------ reading
    def columns(self, since: int | None = None, until: int | None = None) -> dict:
        """Columns over every second from the first to the last one seen (gaps filled with 0 / None), or
        over [since, until) only."""
        keys = set(self.writes_sent) | set(self.writes_acked) | set(self.deliveries) | set(self.latency)
        if since is not None:
            keys = {k for k in keys if k >= since}
        if until is not None:
            keys = {k for k in keys if k < until}
        out = {"t": [], "writes_sent": [], "writes_acked": [], "deliveries": [], "p50": [], "p95": [],
               "p99": [], "samples": []}
        if not keys:
            return out
        for s in range(min(keys), max(keys) + 1):
            out["t"].append(s)
            out["writes_sent"].append(self.writes_sent.get(s, 0))
            out["writes_acked"].append(self.writes_acked.get(s, 0))
            out["deliveries"].append(self.deliveries.get(s, 0))
            h = self.latency.get(s)
            for p, name in ((50, "p50"), (95, "p95"), (99, "p99")):
                v = h.percentile(p) if h is not None and h.count else None
                out[name].append(None if v is None else round(v * 1000.0, 3))
            out["samples"].append(h.count if h is not None else 0)
        return out

    def histogram(self, bins: int = 60, threshold_ms: float | None = None) -> dict:
        """The latency distribution for a bar chart: log-spaced bins (ms) over the positive samples, plus
        the count of negative ones (kept, never clamped; see docs/report-schema.md). With
        ``threshold_ms`` (SC-054's): also ``above``, the samples above it, counted exactly (a bin edge
        seldom falls on the threshold)."""
        h = self.overall
        out = {"edges_ms": [], "counts": [], "negative": h.count_negative(), "count": h.count,
               "summary": h.summary_ms()}
        if threshold_ms is not None:
            out["threshold_ms"] = threshold_ms
            out["above"] = h.count - h.count_at_most(threshold_ms / 1000.0)
        if not h.count:
            return out
        pos = [(v, c) for v, c in h._sorted() if v > 0]
        if not pos:
            return out
        lo, hi = max(pos[0][0], 1e-5), max(pos[-1][0], pos[0][0] * 1.0001, 1e-5)
        lo_l, hi_l = math.log10(lo), math.log10(hi)
        width = (hi_l - lo_l) / bins if hi_l > lo_l else 1.0
        counts = [0] * bins
        for v, c in pos:
            b = min(bins - 1, max(0, int((math.log10(max(v, lo)) - lo_l) / width)))
            counts[b] += c
        out["edges_ms"] = [round(10 ** (lo_l + width * b) * 1000.0, 4) for b in range(bins + 1)]
        out["counts"] = counts
        return out



def series_of(run) -> TimeSeries:
    """The whole series of a finished run (a Record): its ledgers and logs, and on a distributed master
    the series each worker computed of its arrivals against the merged ledger."""
    ts = TimeSeries(getattr(run.options, "latency_from", "sent"))
    for key, led in run.ledgers.items():
        ts.add_ledger(key, led.view(), final=True)
    for s in run.sessions:
        for st in s.subs.values():
            ts.add_log(st.log, run.ledgers[st.spec.table.key])
    for part in run.series_parts:
        ts.merge_wire(part)
    return ts
