"""Benchmark of the verifier: arrivals reconciled per second, and resident bytes per recorded arrival.

    python bench/verifier_bench.py [--writers 10] [--writes 10000] [--subs 20] [--snapshot-subs 0]

Builds a clean history (inserts, updates and deletes, every subscription receiving every change in
_seq order, as KalamDB does), records it into ArrivalLogs, then times reconcile() over every log and
verdicts() over the results. Floors this project holds itself to: >= 500,000 arrivals/s reconciled,
<= 100 bytes resident per recorded arrival.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from checks import (KIND_DELETE, KIND_INSERT, KIND_UPDATE, OP_DELETE, OP_INSERT, OP_UPDATE,  # noqa: E402
                    OUTCOME_ACK, ArrivalLog, SubscriptionInfo, Thresholds, Workload, reconcile, verdicts)
from checks.model import SEQ_EPOCH_MS, SEQ_TIME_SHIFT  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(writers: int, writes: int, seed: int = 1):
    rnd = random.Random(seed)
    wl = Workload("bench", "shared", ("body",))
    t = [1_750_000_000.0]
    from checks import WriteLedger
    led = WriteLedger(wl, clock=lambda: t[0])
    live = {w: [] for w in range(writers)}
    events = []          # (kind, writer, n, seq, t_commit, digest, old_digest, deleted_ok)
    seqc = 0
    for _ in range(writes):
        for w in range(writers):
            name = f"w{w:02d}"
            r = rnd.random()
            keys = live[w]
            if r < 0.7 or not keys:
                op, pk = OP_INSERT, None
            elif r < 0.9:
                op, pk = OP_UPDATE, rnd.choice(keys)
            else:
                op, pk = OP_DELETE, keys.pop(rnd.randrange(len(keys)))
            idx = led.begin(name, op, pk, None if op == OP_DELETE else {"body": f"b{seqc}"})
            if op == OP_INSERT:
                keys.append(led.pk(idx))
            t[0] += 0.00002
            seqc += 1
            seq = ((int(t[0] * 1000) - SEQ_EPOCH_MS) << SEQ_TIME_SHIFT) | (seqc & 0x3FFFFF)
            led.finish(idx, OUTCOME_ACK)
            n = led.wseq(idx) if op != OP_DELETE else led.wseq(led.prev_version(idx))
            events.append((op, name, n, seq, t[0], led._digest[idx], led._old_digest[idx], op == OP_DELETE))
    return led, events, t[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=10)
    ap.add_argument("--writes", type=int, default=10_000, help="writes per writer")
    ap.add_argument("--subs", type=int, default=20)
    ap.add_argument("--loss", type=float, default=0.0,
                    help="fraction of changes each subscription drops (exercises the slow paths)")
    ap.add_argument("--resume-every", type=int, default=0,
                    help="each subscription disconnects and resumes after every N arrivals")
    args = ap.parse_args()

    t0 = time.perf_counter()
    led, events, t_end = build(args.writers, args.writes)
    print(f"ledger: {len(led)} writes built in {time.perf_counter() - t0:.1f} s")

    gc.collect()
    tracemalloc.start()
    rss0 = rss_bytes()
    snap0 = tracemalloc.take_snapshot()
    logs = []
    t_start = 1_750_000_000.0 - 1.0
    kind_of = {OP_INSERT: KIND_INSERT, OP_UPDATE: KIND_UPDATE, OP_DELETE: KIND_DELETE}
    for s in range(args.subs):
        log = ArrivalLog(SubscriptionInfo(f"l{s:02d}", f"l{s:02d}-events", content_columns=("body",)))
        log.subscribed(t_start)
        log.ready(t_start + 0.01)
        rec = log.record
        rnd = random.Random(s)
        for k, (op, name, n, seq, tc, dig, old, delok) in enumerate(events):
            if args.loss and rnd.random() < args.loss:
                continue
            rec(kind_of[op], name, n, seq, tc + 0.003, dig, old, delok)
            if args.resume_every and k % args.resume_every == args.resume_every - 1:
                log.disconnected(tc + 0.003)
                log.subscribed(tc + 0.003, resume_from=seq)
                log.ready(tc + 0.003)
        log.finished(t_end + 1)
        logs.append(log)
    snap1 = tracemalloc.take_snapshot()
    rss1 = rss_bytes()
    tracemalloc.stop()
    arrivals = sum(len(x) for x in logs)
    traced = sum(st.size_diff for st in snap1.compare_to(snap0, "filename"))
    print(f"recorded {arrivals:,} arrivals in {args.subs} subscriptions")
    print(f"resident per arrival: {traced / arrivals:.1f} bytes (tracemalloc), "
          f"{(rss1 - rss0) / arrivals:.1f} bytes (RSS delta), "
          f"{sum(x.nbytes() for x in logs) / arrivals:.1f} bytes (column payload)")
    del snap0, snap1

    gc.collect()
    t0 = time.perf_counter()
    results = [reconcile(led, log) for log in logs]
    t_rec = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = verdicts(led, results, thresholds=Thresholds())
    t_ver = time.perf_counter() - t0
    print(f"reconcile: {t_rec:.2f} s -> {arrivals / t_rec:,.0f} arrivals/s")
    print(f"verdicts:  {t_ver:.2f} s (cross-subscription checks included)")
    print(f"end to end: {arrivals / (t_rec + t_ver):,.0f} arrivals/s")
    bad = {k: v.verdict for k, v in report.items() if v.verdict not in ("pass", "skipped")}
    lost = sum(r.lost for r in results)
    print(f"history: lost={lost}, non-passing verdicts={bad or 'none'}")


if __name__ == "__main__":
    main()
