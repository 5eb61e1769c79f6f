"""Benchmark of distributed runs: arrivals verified per second per worker process, and the master's CPU.

    python bench/distributed_bench.py [--processes 1,2] [--writers 8] [--listeners 16] [--write-rate 40] [--run-time 15s]

For each process count, runs the real load test (`locust --processes N`, the built-in stand-in) and
prints, per worker process: arrivals received per second of load, arrivals reconciled per second at
the end (its own reconcile() time), its CPU; and for the master: CPU seconds over the run (and the share
of one core), CPU seconds and wall time of the end-of-run handshake, bytes moved through it.
`--processes 0` is the single-process run, for comparison. On a small machine the stand-in, the master
and the workers share the cores: the figures say what this machine does, not what the design allows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(processes: int, a) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "verdict.json"
        cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--config", str(REPO / "locust.conf"),
               "--headless", "-t", a.run_time, "--report-json", str(report), "--only-summary",
               "--report-html", "", "--report-junit", "", "--report-csv", "", "--reports-dir", tmp, "--writers", str(a.writers), "--listeners", str(a.listeners),
               "-u", str(a.writers + a.listeners), "-r", str(a.writers + a.listeners), "--write-rate", str(a.write_rate),
               "--drain-quiet", "1", "--drain-timeout", "20", "--reconnect-every", "0",
               "--latency-threshold-ms", "1000"]
        if processes:
            cmd += ["--processes", str(processes)]
        env = dict(os.environ)
        env.pop("KALAMDB_ADMIN_PASSWORD", None)
        t0 = time.time()
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
        wall = time.time() - t0
        if not report.exists():
            raise SystemExit(f"no report (exit {p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
        rep = json.loads(report.read_text())
        rep["_wall"] = wall
        return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", default="0,1,2", help="comma-separated worker process counts (0 = single process)")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--listeners", type=int, default=16)
    ap.add_argument("--write-rate", type=float, default=40.0)
    ap.add_argument("--run-time", default="15s")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; {a.writers} writers x {a.write_rate:g}/s, {a.listeners} listeners, "
          f"{a.run_time} of load, both workloads")
    for n in [int(x) for x in a.processes.split(",")]:
        rep = run(n, a)
        fig, summary = rep["figures"], rep["summary"]
        span = fig["writing_seconds"]
        print(f"\n== {'single process' if n == 0 else f'{n} worker process(es)'}: verdict {summary['verdict']}, "
              f"{fig['change_messages_received']} change messages ({fig['change_messages_per_second']:.0f}/s), "
              f"{sum(sum(c.values()) for t in fig['writes'].values() for c in t.values())} writes")
        d = rep.get("distributed")
        if d is None:
            print(f"   process CPU {fig['generator_cpu_seconds']:.2f} s over {rep['_wall']:.1f} s wall; "
                  f"verification {fig['verification_seconds']:.3f} s")
            continue
        for w in d["workers"]:
            rs = w["reconcile_seconds"] or 0.0
            rate = (w["arrivals"] / rs) if rs > 0 else float("nan")
            print(f"   worker pid {w['pid']:>6} ({len(w['writers'])} writers, {len(w['listeners'])} listeners): "
                  f"{w['arrivals'] / span:8.0f} arrivals/s received, {rate:10.0f} arrivals/s reconciled "
                  f"({w['arrivals']} in {rs:.3f} s), CPU {w['cpu_seconds']:.2f} s, "
                  f"clock {w['clock']['offset_s'] * 1e3:+.3f} ± {w['clock']['error_bound_s'] * 1e3:.3f} ms")
        e = d["end_of_run_seconds"]
        m = d["messages"] or {}
        print(f"   master: CPU {d['master_cpu_seconds']:.2f} s over {rep['_wall']:.1f} s wall "
              f"({100 * d['master_cpu_seconds'] / rep['_wall']:.1f}% of one core); end of run: "
              f"CPU {e.get('master_cpu_seconds', 0):.3f} s, ledger {e.get('ledger', 0):.3f} s, "
              f"merged ledger {e.get('merged_ledger_bytes', 0)} B + drain {e.get('merged_and_drained', 0):.3f} s, "
              f"results {e.get('results', 0):.3f} s; {m.get('bytes_in', 0)} B in / {m.get('bytes_out', 0)} B out "
              f"in {m.get('chunks_in', 0)}/{m.get('chunks_out', 0)} chunks")


if __name__ == "__main__":
    main()
