#!/usr/bin/env python3
"""Harness benchmark: is the load generator ever the bottleneck? (a script that prints figures; not a test)

    python bench/harness_bench.py [--listeners 10] [--writers 8] [--duration 8] [--delay-ms 20]
                                  [--high-rate 5000] [--low-rate 200] [--skip verifier,master]
                                  [--profile DIR]      # py-spy (or pyinstrument) profiles of the hot paths

One run against a built-in stand-in (``StandinProcess``, config/loadtest-server.toml, shared workload,
default op mix 60/30/10, 64-byte payloads). Every process is a separate OS process, so that its CPU
(``resource.getrusage(RUSAGE_SELF)``, user + system, over the measured window only) is its own:

1. Listener pipeline. A *pipeline* process runs ``--listeners`` real ``ListenerSession`` s (the load
   test's own ``Run``, ``ListenerUser._delivered`` firing Locust's request event into a real
   ``locust.env.Environment`` whose local runner's stats record it), i.e. receive, decompress where
   needed, decode, ``ArrivalLog.record_row``, report to Locust; after the drain it reconciles every
   arrival log against the writers' ledger (``checks.verifier.reconcile`` + ``verdicts``), and that CPU
   is added. Verified deliveries = changes the verifier counts as delivered (first arrival of an
   expected write). Beside it, in the same run, from the same server and table, a *raw* process holds as
   many sockets and does nothing but websocket-client ``recv_data`` + gzip inflate (when a frame is
   gzip) + ``orjson.loads``. Printed: verified deliveries per CPU-second of each, and their ratio.
2. Writers. A writer process runs ``--writers`` real ``WriterUser`` s (ledger + kalamclient HTTP +
   Locust request event) unpaced for ``--duration`` s: acknowledged writes per CPU-second.
3. Verifier: ``bench/verifier_bench.py`` (subprocess): arrivals reconciled per second, resident bytes
   per recorded arrival (tracemalloc).
4. Latency fidelity. The stand-in holds every notification until D after its commit stamp (fault
   ``delay_ms=D``; the `_seq` time, whole ms, so its truncation cancels), released by a timerfd. The
   pipeline measures median latency (from the write's send time, and from its commit time in ``_seq``)
   at ``--low-rate``, at ``--high-rate`` deliveries/s (writers paced 5 % above it; the window must reach
   it) and unpaced (the highest rate this machine drives); printed: median - D, and beside it the two
   parts that are not the wire: how late the stand-in released held changes (its own figures in
   system.stats) and the harness's lag, from a frame's arrival (kernel stamp, SO_TIMESTAMPNS) to its
   event, which the latency does not include.
5. Master: ``bench/distributed_bench.py``'s run (``locust --processes 2``): master CPU-seconds per
   second, per 10,000 arrivals/s verified across workers (= master CPU-s x 10,000 / arrivals).

Floors (printed beside the figures; exit 1 when one is missed): listener pipeline >= 25,000 verified
deliveries per CPU-second and >= 0.6 x the raw loop; verifier >= 500,000 arrivals/s and <= 100 bytes
per arrival; latency from commit within 1 ms of D in the high-rate window, which reaches its rate.

On a 2-core machine the stand-in, the writers and both listener processes share the cores: rates are
what this machine drives; per-CPU-second figures are what each process costs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FLOOR_PIPELINE = 25_000.0
FLOOR_RATIO = 0.6
FLOOR_RECONCILE = 500_000.0
FLOOR_BYTES = 100.0
FLOOR_LATENCY_MS = 1.0
PACE_HEADROOM = 1.05


# ---------------------------------------------------------------------------------------------------
# child processes (gevent, as under Locust): line protocol on stdin/stdout, one JSON job first
# ---------------------------------------------------------------------------------------------------

def _cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child_env(job):
    """A real load-test Run (shared workload) inside a real Locust Environment with a local runner."""
    warnings.filterwarnings("ignore")
    import locust
    from locust.argument_parser import get_parser
    from locust.env import Environment

    from loadtest.plugin import LoadTest
    from loadtest.run.provision import Account, Provisioned
    from loadtest.run.run import AdminCredentials, Run
    from loadtest.run.workloads import tables_for
    from users.listener import ListenerUser
    from users.writer import WriterUser

    o = get_parser(default_config_files=[]).parse_args(
        ["--workload", "shared", "--writers", str(len(job["writers"])), "--listeners", str(len(job["listeners"])),
         "--write-rate", str(job.get("write_rate", 0))]
        + (["--read-collect-ms", str(job["read_collect_ms"])] if "read_collect_ms" in job else []))
    env = Environment(user_classes=[WriterUser, ListenerUser], events=locust.events, parsed_options=o,
                      host=job["url"])
    env.create_local_runner()  # its request listener feeds env.stats
    run = Run(env, job["url"], AdminCredentials("root", "unused"))
    ns = job["namespace"]
    run.prov = Provisioned(job["run_id"], ns, [Account(*a) for a in job["writers"]],
                           [Account(*a) for a in job["listeners"]], tables_for("shared", ns))
    env.loadtest = LoadTest(env)
    env.loadtest.run = run
    return env, run


def _lines():
    from gevent.fileobject import FileObjectThread
    return FileObjectThread(sys.stdin.buffer, "rb")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _say(obj) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


def pipeline_main() -> None:
    from gevent import monkey
    monkey.patch_all()
    import gevent

    stdin = _lines()
    job = json.loads(stdin.readline())
    env, run = _child_env(job)
    from checks import Thresholds, WriteLedger, reconcile, verdicts

    sessions = []
    for _ in run.prov.listeners:
        s = run.new_listener()   # what ListenerUser.on_start does: deliveries batched into env.stats
        s.start(timeout=60)
        sessions.append(s)
    gevent.sleep(0.3)
    _say("READY")
    cpu0 = None
    while True:
        cmd = stdin.readline().decode().strip()
        if cmd == "GO":
            cpu0, wall0 = _cpu(), time.time()
            _say("OK")
        elif cmd == "COUNT":
            _say(str(sum(s.received_total() for s in sessions)))
        else:
            break
    cpu_recv, wall = _cpu() - cpu0, time.time() - wall0
    led_path = cmd.split(" ", 1)[1]
    from loadtest.verdict.verify import lag_figures
    lag = dict(lag_figures([s.lag() for s in sessions]),
               kernel_stamps=all(s.conn is not None and s.conn._kernel_stamps for s in sessions))
    for s in sessions:
        s.close()
    t_end = time.time()
    ledger = WriteLedger.from_bytes(Path(led_path).read_bytes())
    c0 = _cpu()
    results = []
    for s in sessions:
        for st in s.subs.values():
            st.log.finished(t_end)
            results.append(reconcile(ledger, st.log))
    report = verdicts(ledger, results, thresholds=Thresholds(latency_ms=1000.0))
    cpu_verify = _cpu() - c0
    from checks.histogram import LatencyHistogram
    med = {}
    for start in ("sent", "commit"):
        h = LatencyHistogram()
        for r in results:
            h.merge(r.latency[start])
        p = h.percentile(50)
        med[start] = None if p is None else p * 1000.0
    stats = env.stats
    _say({"arrivals": sum(r.arrivals for r in results),
          "verified": sum(c["delivered"] for r in results for c in r.by_op.values()),
          "lost": sum(r.lost for r in results), "cpu_recv": cpu_recv, "cpu_verify": cpu_verify, "wall": wall,
          "median_ms": med, "lag": lag, "locust_requests": stats.total.num_requests,
          "locust_median_ms": stats.total.median_response_time,
          "bad": {k: v.verdict for k, v in report.items() if v.verdict in ("fail", "inconclusive")}})


def raw_main() -> None:
    from gevent import monkey
    monkey.patch_all()
    import zlib

    import gevent
    import orjson
    import websocket

    from kalamclient.ws import ws_url

    stdin = _lines()
    job = json.loads(stdin.readline())
    url = ws_url(job["url"], True)
    counts = [0] * len(job["tokens"])
    stop = [False]
    socks = []
    for i, token in enumerate(job["tokens"]):
        ws = websocket.create_connection(url, timeout=20, header=["Authorization: Bearer " + token],
                                         suppress_origin=True, skip_utf8_validation=True)
        ws.send(orjson.dumps({"type": "subscribe", "subscription": {"id": "events", "sql": job["sql"]}}))
        while True:
            op, data = ws.recv_data()
            if op == 2 and data[:2] == b"\x1f\x8b":
                data = zlib.decompress(data, 31)
            if orjson.loads(data).get("type") == "subscription_ack":
                break
        ws.settimeout(0.5)
        socks.append(ws)

    def read(i, ws):
        n = 0
        while not stop[0]:
            try:
                op, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:
                break
            if op == 8:
                break
            if op == 2 and data[:2] == b"\x1f\x8b":
                data = zlib.decompress(data, 31)
            if orjson.loads(data)["type"] == "change":
                n += 1
                counts[i] = n

    readers = [gevent.spawn(read, i, ws) for i, ws in enumerate(socks)]
    _say("READY")
    while True:
        cmd = stdin.readline().decode().strip()
        if cmd == "GO":
            cpu0, wall0 = _cpu(), time.time()
            _say("OK")
        elif cmd == "COUNT":
            _say(str(sum(counts)))
        else:
            break
    cpu, wall = _cpu() - cpu0, time.time() - wall0
    stop[0] = True
    gevent.joinall(readers, timeout=3)
    _say({"arrivals": sum(counts), "cpu_recv": cpu, "wall": wall})


def writer_main() -> None:
    from gevent import monkey
    monkey.patch_all()
    import gevent

    stdin = _lines()
    job = json.loads(stdin.readline())
    env, run = _child_env(job)
    from checks.model import OUTCOME_ACK
    from users.writer import WriterUser

    users = [WriterUser(env) for _ in run.prov.writers]
    run.writers_may_start.set()  # on_start waits for the start barrier; here the window starts at WRITE
    gevent.joinall([gevent.spawn(u.on_start) for u in users], raise_error=True)
    _say("READY")
    cmd = stdin.readline().decode().split()
    duration, led_path = float(cmd[1]), cmd[2]
    stop = [False]

    def loop(u):
        while not stop[0]:
            u.write()
            w = u.wait_time()
            gevent.sleep(w)  # also yields when unpaced (w == 0)

    cpu0, t0 = _cpu(), time.time()
    greenlets = [gevent.spawn(loop, u) for u in users]
    gevent.sleep(duration)
    stop[0] = True
    gevent.joinall(greenlets)
    cpu, wall = _cpu() - cpu0, time.time() - t0
    ledger = run.ledgers["events"]
    Path(led_path).write_bytes(ledger.to_bytes())
    acked = sum(1 for i in range(len(ledger)) if ledger.outcome(i) == OUTCOME_ACK)
    _say({"writes": len(ledger), "acked": acked, "cpu": cpu, "wall": wall,
          "locust_requests": env.stats.total.num_requests})


# ---------------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------------

class Child:
    def __init__(self, role: str, job: dict):
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", role],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.role = role
        self.send(json.dumps(job))

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.role} process ended (exit {self.p.wait()})")
        line = line.strip()
        return json.loads(line) if line.startswith("{") else line

    def ask(self, line: str):
        self.send(line)
        return self.read()

    def expect_ready(self) -> None:
        got = self.read()
        if got != "READY":
            raise RuntimeError(f"{self.role}: {got!r}")

    def close(self) -> None:
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()


class Profiler:
    """py-spy on a child (raw stacks, summarised to the top functions), pyinstrument not needed then."""

    def __init__(self, pid: int, out: Path, rate: int = 250):
        self.out = out
        self.p = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw", "-r", str(rate),
                                   "-o", str(out), *os.environ.get("PYSPY_EXTRA", "--nonblocking").split()], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)

    def stop(self, top: int = 25) -> str:
        import signal
        self.p.send_signal(signal.SIGINT)
        try:
            _, err = self.p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return "py-spy did not stop"
        if not self.out.exists():
            return f"py-spy failed: {err[-500:]}"
        return summarise_raw(self.out, top)


def summarise_raw(path: Path, top: int = 25) -> str:
    """Self and total sample shares per function from py-spy's collapsed stacks."""
    from collections import Counter
    self_c, total_c, n = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not cnt.isdigit():
            continue
        c = int(cnt)
        frames = [re.sub(r" \(([^)]*/)?([^/)]+)\)", r" (\2)", f) for f in stack.split(";")]
        n += c
        self_c[frames[-1]] += c
        for f in set(frames):
            total_c[f] += c
    lines = [f"{n} samples; top self:"]
    lines += [f"  {100 * c / n:5.1f}%  {f}" for f, c in self_c.most_common(top)]
    lines += ["top total:"]
    lines += [f"  {100 * c / n:5.1f}%  {f}" for f, c in total_c.most_common(top)]
    return "\n".join(lines)


def provision(admin, listeners: int, writers: int):
    from loadtest.run.provision import provision as prov
    return prov(admin, "shared", writers, listeners)


def phase(url: str, admin, *, listeners: int, writers: int, write_rate: float, duration: float, raw: bool,
          tmp: Path, profile: Path | None = None, label: str = "") -> dict:
    """One measured window: fresh namespace, listeners subscribed (pipeline, and raw if asked), then the
    writers for `duration` s, the drain, then reconcile in the pipeline process."""
    from kalamclient import KalamHttp
    from loadtest.run.provision import with_rate_limit_retry

    p = provision(admin, listeners * (2 if raw else 1), writers)
    acc = lambda a: (a.user, a.password)  # noqa: E731
    base = {"url": url, "namespace": p.namespace, "run_id": p.run_id,
            "writers": [acc(a) for a in p.writers], "write_rate": write_rate}
    children = []
    try:
        pipe = Child("pipeline", dict(base, listeners=[acc(a) for a in p.listeners[:listeners]]))
        children.append(pipe)
        rawc = None
        if raw:
            tokens = []
            for a in p.listeners[listeners:]:
                h = KalamHttp(url, timeout=30)
                with_rate_limit_retry(lambda h=h, a=a: h.login(a.user, a.password))
                tokens.append(h.access_token)
            rawc = Child("raw", {"url": url, "tokens": tokens, "sql": f"SELECT * FROM {p.namespace}.events"})
            children.append(rawc)
        wr = Child("writer", dict(base, listeners=[]))
        children.append(wr)
        for c in children:
            c.expect_ready()
        listeners_procs = [c for c in (pipe, rawc) if c is not None]
        for c in listeners_procs:
            assert c.ask("GO") == "OK"
        prof = Profiler(pipe.p.pid, profile / f"{label}-pipeline.txt") if profile else None
        prof_w = Profiler(wr.p.pid, profile / f"{label}-writer.txt") if profile else None
        prof_r = Profiler(rawc.p.pid, profile / f"{label}-raw.txt") if (profile and rawc) else None
        led = tmp / f"ledger-{p.run_id}.bin"
        wres = wr.ask(f"WRITE {duration} {led}")
        if prof_w:
            wres["profile"] = prof_w.stop()
        # drain: every acknowledged write is one change per listener (stop when still for 3 s, max 60 s)
        expected = wres["acked"] * listeners
        end, last, still = time.time() + 60, None, time.time()
        while time.time() < end:
            counts = [int(c.ask("COUNT")) for c in listeners_procs]
            if min(counts) >= expected:
                break
            if counts != last:
                last, still = counts, time.time()
            elif time.time() - still > 3:
                break
            time.sleep(0.2)
        out = {"writer": wres, "expected": expected}
        if prof:
            out["profile"] = prof.stop()
        if prof_r:
            out["raw_profile"] = prof_r.stop()
        if rawc is not None:
            out["raw"] = rawc.ask("STOP")
        out["pipeline"] = pipe.ask(f"STOP {led}")
        return out
    finally:
        for c in children:
            c.close()


def _delay_late(admin) -> dict:
    """The stand-in's own timer error for fault delay_ms (system.stats, its newest 10,000 releases)."""
    rows = admin.sql("SELECT * FROM system.stats")[0].rows
    got = {k: float(v) for k, v in rows if k.startswith("standin_delay_late_ms_")}
    return {k.rsplit("_", 1)[1]: v for k, v in got.items()}


def verifier_figures() -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "verifier_bench.py")], capture_output=True,
                         text=True, timeout=900, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    t = out.stdout
    rate = float(re.search(r"reconcile: .* -> ([\d,]+) arrivals/s", t).group(1).replace(",", ""))
    per = float(re.search(r"resident per arrival: ([\d.]+) bytes \(tracemalloc\)", t).group(1))
    e2e = float(re.search(r"end to end: ([\d,]+) arrivals/s", t).group(1).replace(",", ""))
    return {"reconcile_per_s": rate, "bytes_per_arrival": per, "end_to_end_per_s": e2e}


def master_figures(run_time: str) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    import distributed_bench

    a = argparse.Namespace(writers=8, listeners=16, write_rate=40.0, run_time=run_time)
    rep = distributed_bench.run(2, a)
    d = rep["distributed"]
    arrivals = sum(w["arrivals"] for w in d["workers"])
    span = rep["figures"]["writing_seconds"]
    return {"verdict": rep["summary"]["verdict"], "arrivals": arrivals, "arrivals_per_s": arrivals / span,
            "master_cpu_s": d["master_cpu_seconds"], "wall_s": rep["_wall"],
            "cpu_per_10k": d["master_cpu_seconds"] * 10_000.0 / arrivals if arrivals else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=("pipeline", "raw", "writer"), help=argparse.SUPPRESS)
    ap.add_argument("--listeners", type=int, default=10, help="sockets per listening process (pipeline, raw)")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of writing per measured window")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="D: the stand-in's notification delay")
    ap.add_argument("--low-rate", type=float, default=200.0, help="deliveries/s of the low-rate latency window")
    ap.add_argument("--high-rate", type=float, default=5000.0,
                    help="deliveries/s the high-rate window must reach (the latency floor's rate)")
    ap.add_argument("--skip", default="",
                    help="comma list of: pipeline, latency (or one window: low, high, max), verifier, master")
    ap.add_argument("--master-run-time", default="15s")
    ap.add_argument("--profile", metavar="DIR", help="py-spy the pipeline, raw and writer processes (window 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.role:
        {"pipeline": pipeline_main, "raw": raw_main, "writer": writer_main}[args.role]()
        return 0
    skip = set(filter(None, args.skip.split(",")))
    skip_windows = skip & {"low", "high", "max"}
    fig: dict = {}
    ok = True
    prof_dir = Path(args.profile) if args.profile else None
    if prof_dir:
        if not shutil.which("py-spy"):
            raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
        prof_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs; {args.listeners} listener sockets per listening process, "
          f"{args.writers} writers, {args.duration:g} s windows; stand-in with config/loadtest-server.toml")

    if not {"pipeline", "latency"} <= skip:
        from kalamclient import KalamHttp
        from standin.testing import TEST_ROOT_PASSWORD, StandinProcess
        with StandinProcess(root_password=TEST_ROOT_PASSWORD, config=str(ROOT / "config" / "loadtest-server.toml")) \
                as s, tempfile.TemporaryDirectory() as tmp:
            admin = KalamHttp(s.url, timeout=30)
            admin.login("root", TEST_ROOT_PASSWORD)
            if "pipeline" not in skip:
                r = phase(s.url, admin, listeners=args.listeners, writers=args.writers, write_rate=0,
                          duration=args.duration, raw=True, tmp=Path(tmp), profile=prof_dir, label="window1")
                pl, rw, wr = r["pipeline"], r["raw"], r["writer"]
                cpu = pl["cpu_recv"] + pl["cpu_verify"]
                pipe_rate = pl["verified"] / cpu
                raw_rate = rw["arrivals"] / rw["cpu_recv"]
                ratio = pipe_rate / raw_rate
                fig["pipeline"] = dict(r, pipeline_per_cpu_s=pipe_rate, raw_per_cpu_s=raw_rate, ratio=ratio)
                ok &= pipe_rate >= FLOOR_PIPELINE and ratio >= FLOOR_RATIO
                print(f"\n1. listener pipeline: {pipe_rate:,.0f} verified deliveries / CPU-s   "
                      f"(floor {FLOOR_PIPELINE:,.0f}: {_met(pipe_rate >= FLOOR_PIPELINE)})"
                      f"\n   raw receive loop  : {raw_rate:,.0f} deliveries / CPU-s   ratio {ratio:.2f}   "
                      f"(floor {FLOOR_RATIO}: {_met(ratio >= FLOOR_RATIO)})"
                      f"\n   pipeline: {pl['verified']:,} verified of {pl['arrivals']:,} arrivals ({pl['lost']} lost, "
                      f"{r['expected']:,} expected), CPU {pl['cpu_recv']:.2f} s receiving + {pl['cpu_verify']:.2f} s "
                      f"reconciling; Locust stats hold {pl['locust_requests']:,} requests; bad verdicts: {pl['bad'] or 'none'}"
                      f"\n   raw: {rw['arrivals']:,} arrivals, CPU {rw['cpu_recv']:.2f} s; delivered "
                      f"{pl['arrivals'] / max(pl['wall'], 1e-9):,.0f}/s to each process over {pl['wall']:.1f} s")
                print(f"2. writers: {wr['acked'] / wr['cpu']:,.0f} acknowledged writes / CPU-s of the writer process "
                      f"({wr['acked']:,} acked of {wr['writes']:,}, {wr['acked'] / wr['wall']:,.0f}/s, CPU {wr['cpu']:.2f} s)")
                fig["writers"] = {"acked_per_cpu_s": wr["acked"] / wr["cpu"], **wr}
                if prof_dir:
                    for key in ("profile", "raw_profile"):
                        (prof_dir / f"window1-{key}-summary.txt").write_text(r.get(key, ""))
                    (prof_dir / "window1-writer-summary.txt").write_text(wr.get("profile", ""))
                    print(f"   profiles: {prof_dir}/window1-*-summary.txt")
            if "latency" not in skip:
                fig["latency"] = {}
                print(f"4. latency fidelity (stand-in delays every notification by D = {args.delay_ms:g} ms):")
                # writers are paced a little above the aim (pacing loses a few slots on a loaded machine);
                # "max" is unpaced: the highest rate this machine drives
                for name, rate in (("low", args.low_rate), ("high", args.high_rate), ("max", 0.0)):
                    if name in skip_windows:
                        continue
                    s.set_faults({"delay_ms": args.delay_ms})  # also restarts the stand-in's delay figures
                    per_writer = rate * PACE_HEADROOM / args.listeners / args.writers
                    r = phase(s.url, admin, listeners=args.listeners, writers=args.writers, write_rate=per_writer,
                              duration=args.duration, raw=False, tmp=Path(tmp))
                    pl = r["pipeline"]
                    got = pl["arrivals"] / max(r["writer"]["wall"], 1e-9)
                    d_sent = pl["median_ms"]["sent"] - args.delay_ms
                    d_commit = pl["median_ms"]["commit"] - args.delay_ms
                    fig["latency"][name] = {"aimed": rate or None, "deliveries_per_s": got,
                                            "median_minus_d_sent_ms": d_sent,
                                            "median_minus_d_commit_ms": d_commit, "lost": pl["lost"]}
                    floor = (f"   (floor {FLOOR_LATENCY_MS:g} ms from commit at >= {rate:,.0f}/s: "
                             f"{_met(abs(d_commit) <= FLOOR_LATENCY_MS and got >= rate)})" if name == "high" else "")
                    lag = pl["lag"]
                    late = _delay_late(admin)
                    fig["latency"][name].update(harness_lag=lag, standin_release_late=late)
                    aim = f"aimed {rate:,.0f}" if rate else "unpaced"
                    print(f"   {name:4} rate {got:7,.0f} deliveries/s ({aim}): median - D = "
                          f"{d_sent:+.2f} ms from sent, {d_commit:+.2f} ms from commit{floor}; "
                          f"{pl['lost']} lost"
                          f"\n             stand-in released held changes {late.get('p50', float('nan')):.3f} ms "
                          f"late (median; p99 {late.get('p99', float('nan')):.3f}); harness lag, arrival "
                          f"({'kernel stamp' if lag['kernel_stamps'] else 'read time'}) to event: mean "
                          f"{lag['mean']:.3f} ms, max {lag['max']:.1f} ms")
                    if name == "high":
                        ok &= abs(d_commit) <= FLOOR_LATENCY_MS and got >= rate
                s.set_faults({})
    if "verifier" not in skip:
        v = verifier_figures()
        fig["verifier"] = v
        ok &= v["reconcile_per_s"] >= FLOOR_RECONCILE and v["bytes_per_arrival"] <= FLOOR_BYTES
        print(f"3. verifier: {v['reconcile_per_s']:,.0f} arrivals reconciled / s (floor {FLOOR_RECONCILE:,.0f}: "
              f"{_met(v['reconcile_per_s'] >= FLOOR_RECONCILE)}; {v['end_to_end_per_s']:,.0f}/s with verdicts), "
              f"{v['bytes_per_arrival']:.1f} bytes per recorded arrival (floor {FLOOR_BYTES:g}: "
              f"{_met(v['bytes_per_arrival'] <= FLOOR_BYTES)})")
    if "master" not in skip:
        m = master_figures(args.master_run_time)
        fig["master"] = m
        print(f"5. master: {m['cpu_per_10k']:.3f} CPU-s/s per 10,000 arrivals/s verified across workers "
              f"({m['master_cpu_s']:.2f} CPU-s for {m['arrivals']:,} arrivals, {m['arrivals_per_s']:,.0f}/s, "
              f"2 worker processes, verdict {m['verdict']})")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1, default=str))
    print(json.dumps({"exit": 0 if ok else 1}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
