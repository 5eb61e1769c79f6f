#!/usr/bin/env python3
"""The scaling curve: how cost grows with the work, on this machine (a script that prints figures; not a test).

    python bench/scaling_bench.py [--parts verifier,listeners,workers] [--max-writes 10000000] [--subs 3]
                                  [--budget 400] [--write-rate 10] [--window 8] [--json PATH]

1. Verifier and ledger at size. For N = 100k, 1M, 10M acknowledged writes (up to ``--max-writes``), a
   fresh subprocess per size builds a synthetic history with the project's own classes: the writers'
   ``WriteLedger`` (``begin`` / ``finish``, 10 writers, op mix 60/30/10, 64-byte payloads, as
   ``loadtest.run.writes`` calls it), ``--subs`` subscriptions each recording every change with
   ``ArrivalLog.record`` (live-only, in ``_seq`` order), then ``reconcile`` of every log and ``verdicts``.
   Printed per size: CPU per write of the ledger, resident bytes per ledger write and per arrival (RSS
   from /proc/self/statm, deltas; the bench's own scaffolding arrays subtracted), the ``LedgerView``
   reconcile builds on its first call (CPU per write), reconcile and verdicts CPU per arrival, peak RSS
   (VmHWM) per write; and the live view's copy on the event loop for one interval of 1,000 writes (the
   ledger's delta, pickled, as the observer sends it; beside it the whole ledger it sent before), whose
   floor is to stay within 2 x of the smallest size's. A phase shorter than 3 s (view, reconcile, verdicts
   at small sizes) is run again until its runs add up to 3 s, and the median is kept. A size whose run would
   take longer than ``--budget`` s (extrapolated from the previous size with the exponent measured so far), or whose peak
   would not fit in MemAvailable, is not run: its figures are extrapolated and marked so.
2. Listeners per process and subscriptions per listener. The pipeline of ``bench/harness_bench.py``: a
   process of real ``ListenerSession`` s (``Run`` in a real Locust ``Environment``, deliveries into its
   stats) against the built-in stand-in, a writer process of real ``WriterUser`` s paced to a total of
   ``--write-rate`` writes/s for ``--window`` s, the drain, then ``reconcile`` + ``verdicts`` in the
   pipeline process. Listeners per process 20, 200, 1,000 with one subscription each, and 20 listeners
   with 10 subscriptions each. The load test's options give a listener one subscription per workload
   table (``loadtest.run.workloads.subscriptions_for``; ``--workload both``: two, on two tables), no
   option sets more; ``ListenerSession`` takes any list of subscription specs on its one connection,
   so the bench gives it S subscriptions of ``SELECT * FROM <ns>.events`` (ids events, events1, ...).
   Printed: CPU per verified delivery (receiving + reconciling, the pipeline process's
   ``getrusage``), RSS per subscription once subscribed, RSS growth per arrival over the window.
3. Workers. ``bench/distributed_bench.py``'s run (``locust --processes N``, the built-in stand-in,
   both workloads, a fixed total load) for N = 1, 2, 4: the master's CPU-seconds per second of wall.

Growth exponents between consecutive rows: log(cost ratio) / log(size ratio), where cost is the total
(per-item figure x items) and size is writes (1), subscriptions per process (2), worker processes (3).
Floor: every exponent <= 1.15 (linear, with room for noise); exit 1 when one is above. An RSS growth
too small to measure (< 4 MiB) has no exponent. On a 2-core machine shared with other work, CPU time
is used rather than wall time, and a figure can still move by some percent between runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from verifier_bench import rss_bytes as _rss  # noqa: E402

FLOOR_EXPONENT = 1.15
LIVE_INTERVAL = 1_000       # writes in one interval of the live view's copy
FLOOR_COPY_GROWTH = 2.0     # that copy at the largest size measured, against the smallest
SIZES = (100_000, 1_000_000, 10_000_000)
MIN_RSS_DELTA = 4 << 20     # an RSS growth below this is not resolved well enough for an exponent


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu() -> float:
    """User CPU seconds of this process. Kernel time is kept apart (_sys): here it is mostly page faults
    on first touch of memory, whose cost per fault grows with the footprint on this VM (3.6 us per fault
    building a 300k-write LedgerView, 8.6 us at 10M), which says more about the machine than the code."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def _sys() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _median(fn, first=None, enough: float = 3.0, most: int = 10) -> float:
    """User CPU of fn(), the median of its runs, run again while they add up to less than `enough` s (a
    short phase measured once is within the noise of a shared machine and of its CPU accounting; the
    median, not the least, so that it compares with the single run of a long phase)."""
    runs = [] if first is None else [first]
    while not runs or (sum(runs) < enough and len(runs) < most):
        c0 = _cpu()
        fn()
        runs.append(_cpu() - c0)
    runs.sort()
    return runs[len(runs) // 2] if len(runs) % 2 else (runs[len(runs) // 2 - 1] + runs[len(runs) // 2]) / 2


class _GcWatch:
    """Time spent in the cyclic GC's collections (gc.callbacks), and the longest one: a pause of every
    greenlet of the process."""

    def __init__(self):
        self.total, self.longest, self.full, self._t = 0.0, 0.0, 0, 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
            return
        d = time.perf_counter() - self._t
        self.total += d
        self.longest = max(self.longest, d)
        self.full += info["generation"] == 2

    def close(self) -> dict:
        gc.callbacks.remove(self._cb)
        return {"gc_s": self.total, "gc_longest_s": self.longest, "gc_full": self.full}


def exponent(size1: float, cost1: float, size2: float, cost2: float):
    """log(cost ratio) / log(size ratio); None when a cost is not positive."""
    if not (cost1 > 0 and cost2 > 0 and size1 > 0 and size2 > 0 and size1 != size2):
        return None
    return math.log(cost2 / cost1) / math.log(size2 / size1)


def _fmt_exp(e) -> str:
    if e is None:
        return "n/a"
    return f"{e:.2f}" + ("!" if e > FLOOR_EXPONENT else "")


# ---------------------------------------------------------------------------------------------------
# part 1: the verifier and the ledger at size (one child process per size)
# ---------------------------------------------------------------------------------------------------

def verifier_child(writes: int, subs: int, writers: int = 10, payload: int = 64, seed: int = 1) -> dict:
    import random
    from array import array
    from collections import deque
    from itertools import repeat
    from operator import eq

    from checks import (OP_DELETE, OP_INSERT, OP_UPDATE, OUTCOME_ACK, ArrivalLog, SubscriptionInfo,
                        Thresholds, Workload, WriteLedger, reconcile, verdicts)
    from checks.model import SEQ_EPOCH_MS, SEQ_TIME_SHIFT

    out: dict = {"writes": writes, "subs": subs}
    rnd = random.Random(seed)
    t = [1_750_000_000.0]
    clock = lambda: t[0]  # noqa: E731
    names = [f"w{w:02d}" for w in range(writers)]
    pad = "x" * max(0, payload - 10)
    # the bench's own state: each writer's live keys (insert idx), O(1) removal; its size is subtracted
    live = [array("q") for _ in range(writers)]
    rss0 = _rss()
    s0 = _sys()
    watch = _GcWatch()
    c0 = _cpu()
    led = WriteLedger(Workload("events", "shared", ("payload",)), clock=clock)
    begin, finish, pk = led.begin, led.finish, led.pk
    random_, randrange = rnd.random, rnd.randrange
    for k in range(writes):
        w = k % writers
        keys = live[w]
        r = random_()
        if r < 0.6 or not keys:
            idx = begin(names[w], OP_INSERT, None, {"payload": f"{k:010d}{pad}"})
            keys.append(idx)
        elif r < 0.9:
            idx = begin(names[w], OP_UPDATE, pk(keys[randrange(len(keys))]), {"payload": f"{k:010d}{pad}"})
        else:
            j = randrange(len(keys))
            victim = keys[j]
            keys[j] = keys[-1]
            keys.pop()
            idx = begin(names[w], OP_DELETE, pk(victim))
        t[0] += 0.00002
        finish(idx, OUTCOME_ACK)
    out["build_cpu"] = _cpu() - c0
    out.update(watch.close())
    scaffold = sum(a.buffer_info()[1] * a.itemsize for a in live)
    del live
    rss1 = _rss()
    out["ledger_bytes"] = rss1 - rss0 - scaffold

    # what each subscription receives, as columns (scaffolding: measured before the logs, not counted)
    op, wr, wseq, prev = led._op, led._writer, led._wseq, led._prev
    n_col = array("q", (wseq[i] if o != OP_DELETE else wseq[prev[i]] for i, o in enumerate(op)))
    seq_col, last_ms, c = array("q"), -1, 0     # _seq: commit ms, then a counter within the ms
    for ts in led._t_sent:
        ms = int(ts * 1000)
        last_ms, c = (ms, 0) if ms != last_ms else (ms, c + 1)
        seq_col.append(((ms - SEQ_EPOCH_MS) << SEQ_TIME_SHIFT) | c)
    trecv_col = array("d", (ts + 0.003 for ts in led._t_sent))
    wnames = [led.writers()[c - 1] if c else "" for c in range(len(names) + 1)]
    t_end = t[0] + 1.0
    rss2 = _rss()
    logs = []
    c0 = _cpu()
    for s in range(subs):
        log = ArrivalLog(SubscriptionInfo(f"l{s:02d}", "events", content_columns=("payload",)))
        log.subscribed(1_750_000_000.0 - 1.0)
        log.ready(1_750_000_000.0 - 0.99)
        # ArrivalLog.record per arrival (kinds equal op codes), called from C: the cost is record's own
        deque(map(log.record, op, map(wnames.__getitem__, wr), n_col, seq_col, trecv_col, led._digest,
                  led._old_digest, map(eq, op, repeat(OP_DELETE))), 0)
        log.finished(t_end)
        logs.append(log)
    out["record_cpu"] = _cpu() - c0
    rss3 = _rss()
    arrivals = sum(len(x) for x in logs)
    out["arrivals"] = arrivals
    out["arrival_bytes"] = rss3 - rss2
    out["column_bytes"] = sum(x.nbytes() for x in logs)
    del n_col, seq_col, trecv_col

    gc.collect()
    rss4 = _rss()
    c0 = _cpu()
    led.view()            # what reconcile builds on its first call (cached for the next ones)
    out["view_cpu"] = _cpu() - c0
    out["view_bytes"] = _rss() - rss4

    def view_again():
        led._view = None  # the previous one freed first
        led.view()

    out["view_cpu"] = _median(view_again, out["view_cpu"])
    got = {}

    def reconcile_all():
        got["results"] = [reconcile(led, log) for log in logs]

    out["reconcile_cpu"] = _median(reconcile_all)
    results = got["results"]

    def judge():
        got["report"] = verdicts(led, results, thresholds=Thresholds())

    out["verdicts_cpu"] = _median(judge)
    report = got["report"]

    # the live view's copy on the event loop for one interval of LIVE_INTERVAL writes, as the run grows:
    # the ledger's delta (what the observer sends) beside the whole ledger (what it sent before)
    import pickle
    led.delta(full=True)
    from itertools import islice
    latest = (i for i in range(len(led) - 1, -1, -1) if led._next[i] < 0 and led._op[i] != OP_DELETE)
    pks = list(islice(((led.writer(i), pk(i)) for i in latest), LIVE_INTERVAL))

    def interval():
        for j in range(LIVE_INTERVAL):
            i = begin(pks[j][0], OP_UPDATE, pks[j][1], {"payload": f"{j:010d}{pad}"}) if j % 3 == 0 else \
                begin(names[j % writers], OP_INSERT, None, {"payload": f"{j:010d}{pad}"})
            finish(i, OUTCOME_ACK)

    def copy_delta():
        interval()
        t0 = time.perf_counter()
        pickle.dumps(led.delta(), protocol=pickle.HIGHEST_PROTOCOL)
        return time.perf_counter() - t0

    def copy_whole():
        t0 = time.perf_counter()
        pickle.dumps(led.to_bytes(), protocol=pickle.HIGHEST_PROTOCOL)
        return time.perf_counter() - t0

    out["copy_delta_ms"] = 1000.0 * statistics.median(copy_delta() for _ in range(7))
    out["copy_whole_ms"] = 1000.0 * statistics.median(copy_whole() for _ in range(3))
    out["peak_rss"] = _peak_rss()
    out["sys"] = _sys() - s0
    out["lost"] = sum(r.lost for r in results)
    out["delivered"] = sum(c["delivered"] for r in results for c in r.by_op.values())
    out["bad"] = {k: v.verdict for k, v in report.items() if v.verdict not in ("pass", "skipped")}
    return out


VMETRICS = (  # key, header, per-item figure from a child's answer, its item count
    ("build", "ledger CPU us/write", lambda r: 1e6 * r["build_cpu"] / r["writes"], "writes"),
    ("ledger_b", "ledger B/write", lambda r: r["ledger_bytes"] / r["writes"], "writes"),
    ("arrival_b", "B/arrival", lambda r: r["arrival_bytes"] / r["arrivals"], "arrivals"),
    ("record", "record us/arrival", lambda r: 1e6 * r["record_cpu"] / r["arrivals"], "arrivals"),
    ("view", "view us/write", lambda r: 1e6 * r["view_cpu"] / r["writes"], "writes"),
    ("reconcile", "reconcile us/arrival", lambda r: 1e6 * r["reconcile_cpu"] / r["arrivals"], "arrivals"),
    ("verdicts", "verdicts us/arrival", lambda r: 1e6 * r["verdicts_cpu"] / r["arrivals"], "arrivals"),
    ("peak", "peak RSS B/write", lambda r: r["peak_rss"] / r["writes"], "writes"),
)


def run_verifier_size(writes: int, subs: int) -> dict:
    t0 = time.time()
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--role", "verifier", "--writes", str(writes),
                        "--subs", str(subs)], capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        raise RuntimeError(f"verifier child ({writes:,} writes) exit {p.returncode}:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["wall"] = time.time() - t0
    return r


def part_verifier(a) -> tuple[list, bool]:
    sizes = [n for n in SIZES if n <= a.max_writes] or [a.max_writes]
    print(f"\n1. verifier and ledger at size: {a.subs} subscriptions each receiving every change, 10 writers, "
          f"op mix 60/30/10, 64-byte payloads; one fresh process per size; us = user CPU")
    rows: list = []
    for n in sizes:
        prev = rows[-1] if rows else None
        if prev is not None:
            # extrapolate this size's wall time and peak from the previous one, with the growth seen so far
            e = 1.0
            if len(rows) >= 2 and not rows[-2].get("extrapolated"):
                e = max(1.0, exponent(rows[-2]["writes"], rows[-2]["wall"], prev["writes"], prev["wall"]) or 1.0)
            est_wall = prev["wall"] * (n / prev["writes"]) ** e
            est_peak = prev["peak_rss"] * n / prev["writes"]
            avail = _mem_available()
            if prev.get("extrapolated") or est_wall > a.budget or est_peak > 0.9 * avail:
                why = (f"would take ~{est_wall:.0f} s > {a.budget:g} s budget" if est_wall > a.budget else
                       f"peak ~{est_peak / 2**30:.1f} GiB > 90% of MemAvailable {avail / 2**30:.1f} GiB"
                       if est_peak > 0.9 * avail else "the previous size was extrapolated")
                rows.append(_extrapolate(rows, n, why, est_wall))
                print(f"   {n:>11,} writes: not run ({why}); figures extrapolated")
                continue
        r = run_verifier_size(n, a.subs)
        rows.append(r)
        print(f"   {n:>11,} writes: {r['arrivals']:,} arrivals, {r['wall']:.0f} s wall, peak RSS "
              f"{r['peak_rss'] / 2**30:.2f} GiB, kernel CPU {r['sys']:.1f} s (apart); ledger build: "
              f"{r['gc_s']:.2f} s in the cyclic GC ({r['gc_full']} full collections, longest {r['gc_longest_s']:.3f} s); "
              f"lost {r['lost']}, non-passing verdicts {r['bad'] or 'none'}")
        print(f"   {'':>11}  live view's copy of one interval ({LIVE_INTERVAL:,} writes): {r['copy_delta_ms']:.2f} ms "
              f"(the whole ledger, as sent before: {r['copy_whole_ms']:.1f} ms)")
    measured = [r for r in rows if not r.get("extrapolated")]
    copy_ok = True
    if len(measured) < 2:   # growth needs two sizes: none is claimed from one
        print("   floor: the live copy's growth is not judged (one size measured)")
    else:
        small, big = measured[0], measured[-1]
        copy_ok = big["copy_delta_ms"] <= FLOOR_COPY_GROWTH * max(small["copy_delta_ms"], 0.05)
        print(f"   floor: the live copy of an interval at {big['writes']:,} writes <= {FLOOR_COPY_GROWTH:g} x at "
              f"{small['writes']:,} (it follows the interval, not the run): {'met' if copy_ok else 'MISSED'}")
    for r in rows:
        if not r.get("extrapolated"):
            for key, _, f, _ in VMETRICS:
                r[key] = f(r)
    # the table
    head = ["writes", "arrivals"] + [h for _, h, _, _ in VMETRICS] + ["wall s"]
    table = []
    for r in rows:
        x = "~" if r.get("extrapolated") else ""
        table.append([f"{x}{r['writes']:,}", f"{x}{r['arrivals']:,}"]
                     + [f"{x}{r[k]:.3f}" if r[k] < 10 else f"{x}{r[k]:,.1f}" for k, _, _, _ in VMETRICS]
                     + [f"{x}{r['wall']:.0f}"])
    ok = True
    for r1, r2 in zip(rows, rows[1:]):
        cells = [f"exponent {r1['writes'] // 1000:,}k->{r2['writes'] // 1000:,}k", ""]
        for key, _, _, items in VMETRICS:
            if r2.get("extrapolated"):
                cells.append("(extrap.)")
                continue
            if key.endswith("_b") and min(r1[key] * r1[items], r2[key] * r2[items]) < MIN_RSS_DELTA:
                cells.append("n/a")
                continue
            e = exponent(r1[items], r1[key] * r1[items], r2[items], r2[key] * r2[items])
            ok &= e is None or e <= FLOOR_EXPONENT
            cells.append(_fmt_exp(e))
        cells.append("")
        table.append(cells)
    _print_table(head, table)
    print(f"   floor: every exponent <= {FLOOR_EXPONENT} ('!' marks one above); B = resident bytes (RSS deltas); "
          f"'~' = extrapolated, not measured")
    for r in rows:
        if not r.get("extrapolated") and (r["lost"] or r["bad"]):
            ok = False
            print(f"   the {r['writes']:,}-write history did not verify clean: lost {r['lost']}, {r['bad']}")
    return rows, ok and copy_ok


def _extrapolate(rows: list, n: int, why: str, est_wall: float) -> dict:
    """Figures for size n from the largest measured size, each per-item figure grown by the exponent
    measured between the two largest measured sizes, never below 1 (a per-item cost is not assumed to
    fall further: fixed costs that shrink per item at small sizes do not keep shrinking)."""
    meas = [r for r in rows if not r.get("extrapolated")]
    last = meas[-1]
    out = {"writes": n, "arrivals": last["arrivals"] * n // last["writes"], "extrapolated": why, "wall": est_wall}
    for key, _, f, items in VMETRICS:
        v = f(last)
        e = 1.0
        if len(meas) >= 2:
            e = max(1.0, exponent(meas[-2][items], f(meas[-2]) * meas[-2][items], last[items], v * last[items]) or 1.0)
        out[key] = v * (n / last["writes"]) ** (e - 1.0)
    out["peak_rss"] = out["peak"] * n
    return out


def _print_table(head: list, rows: list) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "   " + "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    print(line(head))
    for r in rows:
        print(line(r))


# ---------------------------------------------------------------------------------------------------
# part 2: listeners per process, subscriptions per listener (harness_bench's pipeline machinery)
# ---------------------------------------------------------------------------------------------------

def pipeline_main() -> None:
    """harness_bench's pipeline process, with S subscriptions per listener and RSS figures: real
    ListenerSessions (deliveries into Locust's stats), started 50 at a time; after the drain, reconcile +
    verdicts of every subscription's log against the writers' ledger."""
    from gevent import monkey
    monkey.patch_all()
    import gevent
    import gevent.pool

    import harness_bench as hb

    stdin = hb._lines()
    job = json.loads(stdin.readline())
    env, run = hb._child_env(job)
    from checks import Thresholds, WriteLedger, reconcile, verdicts
    from loadtest.run.listening import ListenerSession
    from loadtest.run.locuststats import DeliveryStats
    from loadtest.run.pacing import TokenBucket
    from loadtest.run.workloads import SubscriptionSpec, events_table

    # logins and WebSocket auths: the stand-in's config allows 10,000/s per IP; the load test's 15/s
    # (KalamDB's default limit) would take minutes for 1,000 listeners
    run.auth_bucket = TokenBucket(1000.0, burst=50.0)
    ns = job["namespace"]
    table = events_table(ns)
    specs = [SubscriptionSpec(table, "events" if j == 0 else f"events{j}", f"SELECT * FROM {ns}.events", "", "")
             for j in range(job["subs"])]
    sessions = []
    rss_before = _rss()

    def start(account):
        s = ListenerSession(run, account, specs, batch_size=run.options.snapshot_batch_size,
                            on_delivery=DeliveryStats(env))
        run.sessions.append(s)
        s.start(timeout=120)
        sessions.append(s)

    pool = gevent.pool.Pool(50)
    for account in run.prov.listeners:
        pool.spawn(start, account)
    pool.join(raise_error=True)
    gevent.sleep(0.5)
    rss_ready = _rss()
    hb._say("READY")
    while True:
        cmd = stdin.readline().decode().strip()
        if cmd == "GO":
            cpu0, wall0 = hb._cpu(), time.time()
            hb._say("OK")
        elif cmd == "COUNT":
            hb._say(str(sum(s.received_total() for s in sessions)))
        else:
            break
    cpu_recv, wall = hb._cpu() - cpu0, time.time() - wall0
    rss_end = _rss()
    from loadtest.verdict.verify import lag_figures
    lag = lag_figures([s.lag() for s in sessions])
    for s in sessions:
        s.close()
    t_end = time.time()
    ledger = WriteLedger.from_bytes(Path(cmd.split(" ", 1)[1]).read_bytes())
    c0 = hb._cpu()
    results = []
    logs = [st.log for s in sessions for st in s.subs.values()]
    for log in logs:
        log.finished(t_end)
        results.append(reconcile(ledger, log))
    report = verdicts(ledger, results, thresholds=Thresholds(latency_ms=1000.0))
    cpu_verify = hb._cpu() - c0
    from checks.histogram import LatencyHistogram
    lat = {}
    for start in ("sent", "commit"):
        h = LatencyHistogram()
        for r in results:
            h.merge(r.latency[start])
        lat[start] = [None if h.percentile(q) is None else 1000.0 * h.percentile(q) for q in (50, 99)]
    hb._say({"latency_ms": lat, "lag": lag,"arrivals": sum(r.arrivals for r in results), "subscriptions": len(results),
             "verified": sum(c["delivered"] for r in results for c in r.by_op.values()),
             "lost": sum(r.lost for r in results), "cpu_recv": cpu_recv, "cpu_verify": cpu_verify, "wall": wall,
             "rss_before": rss_before, "rss_ready": rss_ready, "rss_end": rss_end,
             "column_bytes": sum(x.nbytes() for x in logs), "locust_requests": env.stats.total.num_requests,
             "bad": {k: v.verdict for k, v in report.items() if v.verdict in ("fail", "inconclusive")}})


class _Child:
    """harness_bench.Child, for a role of this script."""

    def __new__(cls, role: str, job: dict):
        import harness_bench as hb
        c = object.__new__(hb.Child)
        c.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", role],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        c.role = role
        c.send(json.dumps(job))
        return c


def listener_window(url: str, admin, *, listeners: int, subs: int, writers: int, write_rate: float,
                    duration: float, tmp: Path) -> dict:
    """One window: fresh namespace and accounts, the pipeline's sessions subscribed, writers paced to
    write_rate writes/s in total for `duration` s, the drain (every acknowledged write is one change per
    subscription; stop when still for 3 s, at most 60 s), then reconcile in the pipeline process."""
    import harness_bench as hb
    t0 = time.time()
    p = hb.provision(admin, listeners, writers)
    acc = lambda a: (a.user, a.password)  # noqa: E731
    base = {"url": url, "namespace": p.namespace, "run_id": p.run_id, "writers": [acc(a) for a in p.writers],
            "write_rate": write_rate / writers}
    children = []
    try:
        pipe = _Child("pipeline", dict(base, listeners=[acc(a) for a in p.listeners], subs=subs))
        children.append(pipe)
        pipe.expect_ready()
        t_ready = time.time()
        wr = hb.Child("writer", dict(base, listeners=[]))
        children.append(wr)
        wr.expect_ready()
        assert pipe.ask("GO") == "OK"
        led = tmp / f"ledger-{p.run_id}.bin"
        wres = wr.ask(f"WRITE {duration} {led}")
        expected = wres["acked"] * listeners * subs
        end, last, still = time.time() + 60, None, time.time()
        while time.time() < end:
            got = int(pipe.ask("COUNT"))
            if got >= expected:
                break
            if got != last:
                last, still = got, time.time()
            elif time.time() - still > 3:
                break
            time.sleep(0.2)
        out = pipe.ask(f"STOP {led}")
        out.update(writer=wres, expected=expected, listeners=listeners, subs=subs, setup_s=t_ready - t0,
                   total_s=time.time() - t0)
        return out
    finally:
        for c in children:
            c.close()


def _ms(pair) -> str:
    return "/".join("n/a" if x is None else f"{x:.1f}" for x in pair)


LMETRICS = (  # key, header, figure, the item it is per
    ("cpu_us", "CPU us/verified delivery", lambda r: 1e6 * (r["cpu_recv"] + r["cpu_verify"]) / max(r["verified"], 1)),
    ("recv_us", "of it receiving", lambda r: 1e6 * r["cpu_recv"] / max(r["verified"], 1)),
    ("rss_sub", "RSS B/subscription", lambda r: (r["rss_ready"] - r["rss_before"]) / r["subscriptions"]),
    ("rss_arr", "RSS B/arrival", lambda r: (r["rss_end"] - r["rss_ready"]) / max(r["arrivals"], 1)),
    ("col_arr", "log B/arrival", lambda r: r["column_bytes"] / max(r["arrivals"], 1)),
)


def part_listeners(a) -> tuple[list, bool]:
    from kalamclient import KalamHttp
    from standin.testing import TEST_ROOT_PASSWORD, StandinProcess

    grid = [(int(x.split("x")[0]), int(x.split("x")[1])) for x in a.grid.split(",")]
    print(f"\n2. listeners per process, subscriptions per listener: one pipeline process (real ListenerSessions), "
          f"{a.writers} writers paced to {a.write_rate:g} writes/s in total for {a.window:g} s (every write "
          f"is one change per subscription), stand-in with config/loadtest-server.toml; us = the pipeline "
          f"process's CPU (user + system) from GO to the drain's end, plus its reconcile + verdicts")
    rows = []
    with StandinProcess(root_password=TEST_ROOT_PASSWORD, config=str(ROOT / "config" / "loadtest-server.toml")) \
            as s, tempfile.TemporaryDirectory() as tmp:
        admin = KalamHttp(s.url, timeout=30)
        admin.login("root", TEST_ROOT_PASSWORD)
        for listeners, subs in grid:
            r = listener_window(s.url, admin, listeners=listeners, subs=subs, writers=a.writers,
                                write_rate=a.write_rate, duration=a.window, tmp=Path(tmp))
            for key, _, f in LMETRICS:
                r[key] = f(r)
            rows.append(r)
            w = r["writer"]
            print(f"   {listeners:>5} listeners x {subs:>2} subscriptions: {w['acked']:,} writes acked "
                  f"({w['acked'] / w['wall']:.1f}/s), {r['verified']:,} verified of {r['expected']:,} expected "
                  f"({r['verified'] / max(r['wall'], 1e-9):,.0f}/s over {r['wall']:.1f} s), {r['lost']} lost, "
                  f"CPU {r['cpu_recv']:.2f} s receiving + {r['cpu_verify']:.2f} s reconciling; latency p50/p99 "
                  f"{_ms(r['latency_ms']['sent'])} ms from sent, {_ms(r['latency_ms']['commit'])} from commit, "
                  f"harness lag mean {r['lag']['mean']} ms (max {r['lag']['max']}); set-up "
                  f"{r['setup_s']:.0f} s, window total {r['total_s']:.0f} s; bad verdicts: {r['bad'] or 'none'}")
    head = ["listeners", "subs each", "subscriptions", "verified"] + [h for _, h, _ in LMETRICS]
    table = [[f"{r['listeners']:,}", str(r["subs"]), f"{r['subscriptions']:,}", f"{r['verified']:,}"]
             + [f"{r[k]:,.1f}" for k, _, _ in LMETRICS] for r in rows]
    ok = True
    # exponents along each line of the grid: listeners at 1 subscription, subscriptions at the first count
    lines = [[r for r in rows if r["subs"] == 1], [r for r in rows if r["listeners"] == rows[0]["listeners"]]]
    for line in lines:
        for r1, r2 in zip(line, line[1:]):
            cells = [f"exponent {r1['listeners']}x{r1['subs']}->{r2['listeners']}x{r2['subs']}", "", "", ""]
            n1, n2 = r1["subscriptions"], r2["subscriptions"]
            for key, _, _ in LMETRICS:
                if key.startswith("rss"):
                    d1 = r1[key] * (r1["subscriptions"] if key == "rss_sub" else r1["arrivals"])
                    d2 = r2[key] * (r2["subscriptions"] if key == "rss_sub" else r2["arrivals"])
                    if min(d1, d2) < MIN_RSS_DELTA:
                        cells.append("n/a")
                        continue
                if key == "col_arr":
                    cells.append("")
                    continue
                # per-item figure f at n subscriptions: the whole costs f x n per write (or per process)
                e = exponent(n1, r1[key] * n1, n2, r2[key] * n2)
                if key != "recv_us":
                    ok &= e is None or e <= FLOOR_EXPONENT
                cells.append(_fmt_exp(e))
            table.append(cells)
    _print_table(head, table)
    print(f"   floor: every exponent <= {FLOOR_EXPONENT} (size: subscriptions per process; cost: the per-item "
          f"figure x subscriptions, i.e. per write carried); RSS growths < {MIN_RSS_DELTA >> 20} MiB: n/a. The "
          f"load test's options give a listener one subscription per table: the 10-subscription row is "
          f"ListenerSession with 10 specs on one table (no option makes it)")
    for r in rows:
        if r["lost"] or r["bad"] or r["verified"] < r["expected"]:
            ok = False
            print(f"   {r['listeners']}x{r['subs']}: not every change verified ({r['verified']:,} of "
                  f"{r['expected']:,}, lost {r['lost']}, {r['bad']})")
    return rows, ok


# ---------------------------------------------------------------------------------------------------
# part 3: worker processes (distributed_bench's run)
# ---------------------------------------------------------------------------------------------------

class _MasterCpu:
    """Samples the CPU (utime + stime, /proc/PID/stat) of the locust process this process starts, i.e. the
    master (``--processes N`` forks its workers from it), every 0.2 s in a thread."""

    def __init__(self):
        import threading
        self.samples: list = []      # (time.time(), CPU s)
        self.pid = None
        self._stop = False
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _find(self):
        me = os.getpid()
        try:
            kids = Path(f"/proc/{me}/task/{me}/children").read_text().split()
        except OSError:
            return None
        for k in kids:
            try:
                if b"locust" in Path(f"/proc/{k}/cmdline").read_bytes():
                    return int(k)
            except OSError:
                continue
        return None

    def _loop(self):
        while not self._stop:
            if self.pid is None:
                self.pid = self._find()
            if self.pid is not None:
                try:
                    f = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.samples.append((time.time(), (int(f[11]) + int(f[12])) / self._tick))
                except (OSError, IndexError, ValueError):
                    pass
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop = True
        self._thread.join(2)

    def between(self, t0: float, t1: float):
        """CPU seconds of the master between t0 and t1 (the nearest samples inside), and that span."""
        inside = [(t, c) for t, c in self.samples if t0 <= t <= t1]
        if len(inside) < 2:
            return None, None
        return inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0]


def part_workers(a) -> tuple[list, bool]:
    import distributed_bench

    counts = [int(x) for x in a.processes.split(",")]
    ns = argparse.Namespace(writers=a.dist_writers, listeners=a.dist_listeners, write_rate=a.dist_write_rate,
                            run_time=a.dist_run_time)
    print(f"\n3. workers: `locust --processes N` (distributed_bench.run: the built-in stand-in, both workloads), "
          f"the same total load each time: {ns.writers} writers x {ns.write_rate:g} writes/s, {ns.listeners} "
          f"listeners, {ns.run_time} of load; the master's CPU per second while the writers write, and over the "
          f"whole run")
    rows = []
    for n in counts:
        # a port of its own for the master (Locust's default 5557 is shared by every run on the machine: a
        # worker of another run there once joined this run's master)
        import socket
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = str(sk.getsockname()[1])
        saved = {k: os.environ.get(k) for k in ("LOCUST_MASTER_BIND_PORT", "LOCUST_MASTER_NODE_PORT")}
        os.environ.update(LOCUST_MASTER_BIND_PORT=port, LOCUST_MASTER_NODE_PORT=port)
        watch = _MasterCpu()
        try:
            rep = distributed_bench.run(n, ns)
        finally:
            watch.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        d, fig = rep["distributed"], rep["figures"]
        e = d["end_of_run_seconds"]
        load_cpu, load_s = watch.between(rep["run"]["writing_started_at"] or 0, rep["run"]["writing_stopped_at"] or 0)
        r = {"processes": n, "verdict": rep["summary"]["verdict"], "wall": rep["_wall"],
             "not_passing": {k: v["verdict"] for k, v in rep["scenarios"].items()
                             if v["verdict"] not in ("pass", "skipped")},
             "master_cpu": d["master_cpu_seconds"], "end_cpu": e.get("master_cpu_seconds", 0.0),
             "arrivals": sum(w["arrivals"] for w in d["workers"]), "workers": len(d["workers"]),
             "bytes": (d["messages"] or {}).get("bytes_in", 0) + (d["messages"] or {}).get("bytes_out", 0),
             "writing_s": fig["writing_seconds"]}
        r["cpu_per_s"] = r["master_cpu"] / r["wall"]
        r["load_cpu"], r["load_s"] = load_cpu, load_s
        r["load_cpu_per_s"] = load_cpu / load_s if load_cpu is not None and load_s else None
        rows.append(r)
        print(f"   --processes {n}: verdict {r['verdict']} {r['not_passing'] or ''}, {r['workers']} workers reported, {r['arrivals']:,} arrivals "
              f"verified across workers, master CPU {r['master_cpu']:.2f} s over {r['wall']:.1f} s wall (end of "
              f"run {r['end_cpu']:.3f} s), {r['bytes']:,} B through the master")
    head = ["processes", "master CPU-s/s writing", "master CPU-s/s run", "master CPU s", "of it end of run",
            "wall s", "arrivals"]
    table = [[str(r["processes"]), "n/a" if r["load_cpu_per_s"] is None else f"{r['load_cpu_per_s']:.4f}",
              f"{r['cpu_per_s']:.4f}", f"{r['master_cpu']:.2f}", f"{r['end_cpu']:.3f}", f"{r['wall']:.1f}",
              f"{r['arrivals']:,}"] for r in rows]
    ok = True
    for r1, r2 in zip(rows, rows[1:]):
        cells = [f"exponent {r1['processes']}->{r2['processes']}"]
        for key in ("load_cpu_per_s", "cpu_per_s"):
            e = (exponent(r1["processes"], r1[key], r2["processes"], r2[key])
                 if r1[key] is not None and r2[key] is not None else None)
            ok &= e is None or e <= FLOOR_EXPONENT
            cells.append(_fmt_exp(e))
        table.append(cells + ["", "", "", ""])
    _print_table(head, table)
    print(f"   floor: exponents of the master's CPU-s per s over worker processes <= {FLOOR_EXPONENT}; 'writing': "
          f"/proc/PID/stat of the master sampled every 0.2 s, between the report's writers start and stop "
          f"(10 ms ticks); 'run': the report's master CPU over the whole run, start-up included")
    for r in rows:
        if r["workers"] != r["processes"]:
            ok = False
            print(f"   --processes {r['processes']}: {r['workers']} workers reported")
    return rows, ok


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=("verifier", "pipeline"), help=argparse.SUPPRESS)
    ap.add_argument("--writes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--parts", default="verifier,listeners,workers", help="comma list of: verifier, listeners, workers")
    ap.add_argument("--max-writes", type=int, default=10_000_000, help="largest history of part 1")
    ap.add_argument("--subs", type=int, default=3, help="part 1: subscriptions receiving every change")
    ap.add_argument("--budget", type=float, default=400.0,
                    help="part 1: a size whose run would take longer (s) is extrapolated, not run")
    ap.add_argument("--grid", default="20x1,200x1,1000x1,20x10",
                    help="part 2: LISTENERSxSUBSCRIPTIONS windows (listeners per process x subscriptions each)")
    ap.add_argument("--write-rate", type=float, default=10.0, help="part 2: total writes/s of every window")
    ap.add_argument("--writers", type=int, default=4, help="part 2: writer users sharing that rate")
    ap.add_argument("--window", type=float, default=8.0, help="part 2: seconds of writing per window")
    ap.add_argument("--processes", default="1,2,4", help="part 3: worker process counts")
    ap.add_argument("--dist-writers", type=int, default=4)
    ap.add_argument("--dist-listeners", type=int, default=8)
    ap.add_argument("--dist-write-rate", type=float, default=15.0, help="part 3: writes/s per writer")
    ap.add_argument("--dist-run-time", default="10s")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    a = ap.parse_args(argv)
    if a.role == "verifier":
        print(json.dumps(verifier_child(a.writes, a.subs)))
        return 0
    if a.role == "pipeline":
        pipeline_main()
        return 0
    parts = set(filter(None, a.parts.split(",")))
    print(f"machine: {os.cpu_count()} CPUs, {_mem_available() / 2**30:.1f} GiB available")
    ok = True
    fig: dict = {}
    if "verifier" in parts:
        fig["verifier"], good = part_verifier(a)
        ok &= good
    if "listeners" in parts:
        fig["listeners"], good = part_listeners(a)
        ok &= good
    if "workers" in parts:
        fig["workers"], good = part_workers(a)
        ok &= good
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=1, default=str))
    print(json.dumps({"exit": 0 if ok else 1}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
