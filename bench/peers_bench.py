#!/usr/bin/env python3
"""Peers benchmark: change messages per CPU-second of the receiving process, this project beside its peers
(a script that prints figures; not a test)

    python bench/peers_bench.py [--listeners 10] [--writers 8] [--duration 8] [--rates 5000,0]
                                [--receivers artillery,locust,raw,pipeline] [--repeat 1] [--profile DIR]

One run against a built-in stand-in (``StandinProcess``, config/loadtest-server.toml, shared workload: every
socket gets every change). For each rate (change messages/s to the receiving process, over all its
sockets; 0 = writers unpaced, the highest rate this machine drives), each receiver in turn gets the same
feed on ``--listeners`` sockets of its own (a fresh namespace per window, ``--writers`` real WriterUsers
in their own process, then the drain):

* ``artillery``: Artillery 2.0.21's ws engine (Node), installed by this script with npm into
  bench/.peers/ (a benchmark-only dependency; its version is printed). Its ws engine counts frames only
  inside a capture step, so a processor function hooks every socket's ``message`` event and counts the
  change frames there (bench/peers/artillery_processor.js); CPU is the Node process tree's (psutil).
* ``locust``: a stock Locust WebSocket user (websocket-client defaults, the locust-plugins pattern: a
  receive greenlet per user, ``json.loads``, one ``events.request.fire`` per frame) in a real Locust
  ``Environment`` with a local runner.
* ``raw``: bench/harness_bench.py's raw loop (websocket-client ``recv_data`` + gzip inflate + orjson).
* ``picows``: a raw loop on uvloop + picows (a WebSocket parser in C) + orjson, counting change frames:
  what the receive path would cost on the event loop and WebSocket library the issue names, before any
  verification (``pip install -e '.[bench]'``; left out of the default set, with a line, when missing).
* ``pipeline``: this project's listener pipeline (harness_bench's pipeline process: real
  ``ListenerSession`` s, Locust statistics, then the full ledger reconciled; msgs = verified deliveries,
  CPU = receiving + reconciling).
* ``pipeline-wake``: the same with ``--read-collect-ms 0``: its loop polls at once, a wake-up per frame or
  two (the pipeline before the collect interval; ``pipeline`` is a process that only listens, so it
  collects for the default 2 ms).
* ``pipeline-batch``: the same, with the reader draining every whole frame of a read per wake-up
  (``LiveConnection.recv_many``; the session's loop is a local subclass in bench/peers/batched.py).

Printed per rate: each receiver's msgs/CPU-s, its ratio to the raw loop and to Artillery. Floors (exit 1
when missed): ``pipeline``, the listener path as the load test runs it, >= 1.0 x the raw loop and >= 1.0 x
Artillery, at every rate (the other pipeline variants are printed beside it, never judged). On a 2-core machine shared with others: ratios are of the same run; use
``--repeat`` to take each receiver's median over several windows.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

ARTILLERY_VERSION = "2.0.21"
NPM_DIR = BENCH / ".peers"
PROCESSOR = BENCH / "peers" / "artillery_processor.js"
PACE_HEADROOM = 1.05
FLOOR_RAW = 1.0
FLOOR_ARTILLERY = 1.0
RECEIVERS = ("artillery", "locust", "raw", "picows", "pipeline", "pipeline-batch", "pipeline-base", "pipeline-wake")


def _cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _say(obj) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------
# child roles of this file (line protocol as harness_bench's: JSON job, READY, GO/OK, COUNT, STOP)
# ---------------------------------------------------------------------------------------------------

def locust_main() -> None:
    """A stock Locust WebSocket user: websocket-client defaults, json, one request event per frame."""
    from gevent import monkey
    monkey.patch_all()
    import json as stdjson
    import warnings

    warnings.filterwarnings("ignore")
    import gevent
    import websocket
    from locust import User, constant, events, task
    from locust.env import Environment

    from checks.model import seq_commit_ms
    from harness_bench import _lines
    from kalamclient.ws import ws_url

    stdin = _lines()
    job = json.loads(stdin.readline())
    url = ws_url(job["url"], True)
    tokens = list(job["tokens"])
    subscribed = [0]

    class StockWsUser(User):
        wait_time = constant(1)

        def on_start(self):
            token = tokens.pop()
            self.ws = websocket.create_connection(url, header={"Authorization": "Bearer " + token})
            self.ws.send(stdjson.dumps({"type": "subscribe", "subscription": {"id": "events", "sql": job["sql"]}}))
            gevent.spawn(self.receive_loop)

        def receive_loop(self):
            fire = self.environment.events.request.fire
            while True:
                try:
                    message = self.ws.recv()
                except Exception:
                    return
                if isinstance(message, bytes):  # gzip binary frame
                    import zlib
                    message = zlib.decompress(message, 31)
                msg = stdjson.loads(message)
                t = msg["type"]
                if t == "change":
                    row = (msg.get("rows") or msg.get("old_values"))[0]
                    fire(request_type="WS", name=f"change {msg['change_type']}",
                         response_time=max(0.0, time.time() * 1000.0 - seq_commit_ms(int(row["_seq"]))),
                         response_length=len(message), exception=None, context={})
                elif t == "subscription_ack":
                    subscribed[0] += 1
                    fire(request_type="WS", name="subscribe", response_time=0, response_length=len(message),
                         exception=None, context={})

        @task
        def idle(self):
            pass

    env = Environment(user_classes=[StockWsUser], events=events, host=job["url"])
    runner = env.create_local_runner()
    n = len(tokens)
    runner.start(n, spawn_rate=max(1, n * 5))
    deadline = time.time() + 60
    while subscribed[0] < n and time.time() < deadline:
        gevent.sleep(0.05)
    gevent.sleep(0.3)

    def changes():
        return sum(e.num_requests for (name, _m), e in env.stats.entries.items() if name.startswith("change"))

    _say("READY")
    while True:
        cmd = stdin.readline().decode().strip()
        if cmd == "GO":
            cpu0, wall0 = _cpu(), time.time()
            _say("OK")
        elif cmd == "COUNT":
            _say(str(changes()))
        else:
            break
    cpu, wall = _cpu() - cpu0, time.time() - wall0
    got = changes()
    _say({"arrivals": got, "cpu_recv": cpu, "wall": wall, "locust_requests": env.stats.total.num_requests})
    os._exit(0)


def picows_main() -> None:
    """A raw uvloop + picows + orjson receive loop (the receive path's candidate engine): counts change frames."""
    import asyncio
    import threading
    import zlib

    import orjson
    import uvloop
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    from kalamclient.ws import ws_url

    job = json.loads(sys.stdin.readline())
    url = ws_url(job["url"], True)
    counts = [0]
    acks = [0]
    sub = orjson.dumps({"type": "subscribe", "subscription": {"id": "events", "sql": job["sql"]}})

    class Counter(WSListener):
        def on_ws_connected(self, transport: WSTransport):
            transport.send(WSMsgType.TEXT, sub)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame):
            data = frame.get_payload_as_memoryview()
            if frame.msg_type == WSMsgType.BINARY and data[:2] == b"\x1f\x8b":
                data = zlib.decompress(data, 31)
            t = orjson.loads(data)["type"]
            if t == "change":
                counts[0] += 1
            elif t == "subscription_ack":
                acks[0] += 1

    async def run():
        for token in job["tokens"]:
            await ws_connect(Counter, url, extra_headers={"Authorization": "Bearer " + token})
        while acks[0] < len(job["tokens"]):
            await asyncio.sleep(0.05)
        await asyncio.Event().wait()

    threading.Thread(target=lambda: uvloop.run(run()), daemon=True).start()
    while acks[0] < len(job["tokens"]):
        time.sleep(0.05)
    _say("READY")
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "GO":
            cpu0, wall0 = _cpu(), time.time()
            _say("OK")
        elif cmd == "COUNT":
            _say(str(counts[0]))
        else:
            break
    cpu, wall = _cpu() - cpu0, time.time() - wall0
    _say({"arrivals": counts[0], "cpu_recv": cpu, "wall": wall})
    os._exit(0)


def pipeline_base_main(base: str) -> None:
    """harness_bench's pipeline process with kalamclient from ``base`` (a directory holding a copy of an
    older kalamclient package, made by --baseline): the receive path before and after, in one run."""
    sys.path.insert(0, base)
    from gevent import monkey
    monkey.patch_all()
    import kalamclient
    assert kalamclient.__file__.startswith(base), kalamclient.__file__
    import harness_bench
    harness_bench.pipeline_main()


def baseline_tree(rev: str, tmp: Path) -> Path:
    """kalamclient/ as of git revision ``rev``, in a directory of its own, its compiled read built there
    as setup.py builds it (where that revision had one): the receive path before and after, compiled alike."""
    out = tmp / f"baseline-{rev.replace('/', '_')}"
    (out / "kalamclient").mkdir(parents=True, exist_ok=True)
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "kalamclient/", "csrc/"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        if name.endswith((".py", ".c", ".h")):
            data = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True).stdout
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
    if (out / "kalamclient" / "_speedups.c").exists():
        build = ("from setuptools import Extension, setup; setup(script_args=['-q', 'build_ext', '--inplace'], "
                 "ext_modules=[Extension('kalamclient._speedups', ['kalamclient/_speedups.c'], include_dirs=['csrc'])])")
        subprocess.run([sys.executable, "-c", build], cwd=out, check=True, capture_output=True)
    return out


def pipeline_batch_main() -> None:
    """harness_bench's pipeline process, the sessions' reader replaced by bench/peers/batched.py's."""
    from gevent import monkey
    monkey.patch_all()
    from peers import batched

    batched.install()
    import harness_bench
    harness_bench.pipeline_main()


# ---------------------------------------------------------------------------------------------------
# receivers, as seen by the orchestrator
# ---------------------------------------------------------------------------------------------------

class Child:
    """A Python child process speaking harness_bench's line protocol."""

    def __init__(self, script: Path, role: str, job: dict):
        self.p = subprocess.Popen([sys.executable, str(script), "--role", role], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.role = role
        self.pid = self.p.pid
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

    def ready(self) -> None:
        got = self.read()
        if got != "READY":
            raise RuntimeError(f"{self.role}: {got!r}")

    def go(self) -> None:
        assert self.ask("GO") == "OK"

    def count(self) -> int:
        return int(self.ask("COUNT"))

    def stop(self, ledger: Path) -> dict:
        return self.ask(f"STOP {ledger}")

    def close(self) -> None:
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()


def artillery_bin() -> tuple[Path, str]:
    """Artillery installed into bench/.peers (npm, once); (its bin, its version)."""
    pkg = NPM_DIR / "node_modules" / "artillery" / "package.json"
    version = json.loads(pkg.read_text())["version"] if pkg.exists() else None
    if version != ARTILLERY_VERSION:
        if not shutil.which("npm"):
            raise SystemExit("the artillery receiver needs Node and npm (or: --receivers locust,raw,pipeline)")
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        (NPM_DIR / "package.json").write_text('{"private": true}\n')
        print(f"installing artillery@{ARTILLERY_VERSION} into {NPM_DIR} (npm, once) ...", flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error",
                        f"artillery@{ARTILLERY_VERSION}"], cwd=NPM_DIR, check=True,
                       stdout=subprocess.DEVNULL)
        version = json.loads(pkg.read_text())["version"]
    return NPM_DIR / "node_modules" / "artillery" / "bin" / "run", version


class ArtilleryReceiver:
    """Artillery's ws engine: one VU per socket (connect with the Bearer token, hook, subscribe, think)."""

    role = "artillery"

    def __init__(self, job: dict, tmp: Path):
        import psutil
        bin_, _ = artillery_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="artillery-", dir=tmp))
        tokens = self.dir / "tokens.json"
        tokens.write_text(json.dumps(job["tokens"]))
        self.n = len(job["tokens"])
        sub = json.dumps({"type": "subscribe", "subscription": {"id": "events", "sql": job["sql"]}})
        target = job["url"].replace("http://", "ws://", 1) + "/v1/ws"
        script = {
            "config": {"target": target, "processor": str(PROCESSOR),
                       "phases": [{"duration": 1, "arrivalCount": self.n}]},
            "scenarios": [{"engine": "ws", "flow": [
                {"connect": {"function": "connectWithToken"}},
                {"function": "hookMessages"},
                {"send": sub},
                {"think": 3600},
            ]}],
        }
        path = self.dir / "script.json"
        path.write_text(json.dumps(script))
        env = dict(os.environ, PEERS_DIR=str(self.dir), PEERS_TOKENS=str(tokens),
                   ARTILLERY_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
        self.log = open(self.dir / "artillery.log", "w")
        self.p = subprocess.Popen(["node", str(bin_), "run", "--quiet", str(path)], cwd=self.dir, env=env,
                                  stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.p.pid
        self.proc = psutil.Process(self.p.pid)

    def _counts(self) -> tuple[int, int, int]:
        tot = [0, 0, 0]
        for f in self.dir.glob("count-*"):
            if f.name.endswith(".tmp"):
                continue
            try:
                vals = [int(x) for x in f.read_text().split()]
            except (OSError, ValueError):
                continue
            for i, v in enumerate(vals[:3]):
                tot[i] += v
        return tuple(tot)

    def _cpu(self) -> float:
        import psutil
        total = 0.0
        for p in [self.proc] + self.proc.children(recursive=True):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def ready(self) -> None:
        deadline = time.time() + 90
        while self._counts()[1] < self.n:
            if self.p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"artillery did not subscribe {self.n} sockets (exit {self.p.poll()}):\n"
                                   + (self.dir / "artillery.log").read_text()[-3000:])
            time.sleep(0.1)
        time.sleep(0.5)

    def go(self) -> None:
        self.cpu0, self.wall0 = self._cpu(), time.time()

    def count(self) -> int:
        return self._counts()[0]

    def stop(self, ledger: Path) -> dict:
        time.sleep(0.25)  # the counts file is written every 100 ms
        cpu, wall = self._cpu() - self.cpu0, time.time() - self.wall0
        changes, _acks, frames = self._counts()
        return {"arrivals": changes, "frames": frames, "cpu_recv": cpu, "wall": wall}

    def close(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


# ---------------------------------------------------------------------------------------------------
# one window: one receiver, one rate
# ---------------------------------------------------------------------------------------------------

def window(url: str, admin, receiver: str, *, listeners: int, writers: int, rate: float, duration: float,
           tmp: Path, profile: Path | None = None, label: str = "", baseline: Path | None = None) -> dict:
    from harness_bench import Profiler, provision
    from kalamclient import KalamHttp
    from loadtest.run.provision import with_rate_limit_retry

    p = provision(admin, listeners, writers)
    acc = lambda a: (a.user, a.password)  # noqa: E731
    write_rate = rate * PACE_HEADROOM / listeners / writers if rate else 0.0
    base = {"url": url, "namespace": p.namespace, "run_id": p.run_id,
            "writers": [acc(a) for a in p.writers], "write_rate": write_rate}
    sql = f"SELECT * FROM {p.namespace}.events"
    harness = BENCH / "harness_bench.py"
    children = []
    try:
        if receiver.startswith("pipeline"):
            script, role, extra = {
                "pipeline": (harness, "pipeline", {}),
                "pipeline-wake": (harness, "pipeline", {"read_collect_ms": 0}),   # the loop polls at once
                "pipeline-batch": (Path(__file__), "pipeline-batch", {}),
                "pipeline-base": (Path(__file__), f"pipeline-base={baseline}", {})}[receiver]
            rc = Child(script, role, dict(base, listeners=[acc(a) for a in p.listeners], **extra))
        else:
            tokens = []
            for a in p.listeners:
                h = KalamHttp(url, timeout=30)
                with_rate_limit_retry(lambda h=h, a=a: h.login(a.user, a.password))
                tokens.append(h.access_token)
            job = {"url": url, "tokens": tokens, "sql": sql}
            if receiver == "artillery":
                rc = ArtilleryReceiver(job, tmp)
            elif receiver == "raw":
                rc = Child(harness, "raw", job)
            elif receiver == "picows":
                rc = Child(Path(__file__), "picows", job)
            else:
                rc = Child(Path(__file__), "locust", job)
        children.append(rc)
        wr = Child(harness, "writer", dict(base, listeners=[]))
        children.append(wr)
        rc.ready()
        wr.ready()
        rc.go()
        prof = Profiler(rc.pid, profile / f"{label}.txt") if profile and receiver != "artillery" else None
        led = tmp / f"ledger-{p.run_id}.bin"
        wres = wr.ask(f"WRITE {duration} {led}")
        expected = wres["acked"] * listeners
        end, last, still = time.time() + 60, None, time.time()
        while time.time() < end:
            n = rc.count()
            if n >= expected:
                break
            if n != last:
                last, still = n, time.time()
            elif time.time() - still > 3:
                break
            time.sleep(0.1)
        prof_text = prof.stop() if prof else None
        res = rc.stop(led)
        msgs = res["verified"] if "verified" in res else res["arrivals"]
        cpu = res["cpu_recv"] + res.get("cpu_verify", 0.0)
        out = {"receiver": receiver, "rate": rate, "expected": expected, "msgs": msgs, "cpu": cpu,
               "per_cpu_s": msgs / cpu if cpu > 0 else float("nan"),
               "delivered_per_s": res["arrivals"] / max(wres["wall"], 1e-9), "writer": wres, "result": res}
        if prof_text:
            out["profile"] = prof_text
            (profile / f"{label}-summary.txt").write_text(prof_text)
        return out
    finally:
        for c in children:
            c.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--listeners", type=int, default=10, help="sockets of each receiver")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of writing per window")
    ap.add_argument("--rates", default="5000,0",
                    help="change messages/s to the receiver (all its sockets); 0 = unpaced (default 5000,0)")
    ap.add_argument("--receivers", default=None,
                    help=f"comma list of {', '.join(RECEIVERS)} (default: all; pipeline-batch only when "
                         "LiveConnection has recv_many)")
    ap.add_argument("--baseline", metavar="REV",
                    help="also run receiver pipeline-base: the pipeline with kalamclient/ as of git revision REV")
    ap.add_argument("--repeat", type=int, default=1, help="windows per receiver and rate (median taken)")
    ap.add_argument("--profile", metavar="DIR", help="py-spy every Python receiver's window")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.role == "locust":
        locust_main()
        return 0
    if args.role == "picows":
        picows_main()
        return 0
    if args.role == "pipeline-batch":
        pipeline_batch_main()
        return 0
    if args.role and args.role.startswith("pipeline-base="):
        pipeline_base_main(args.role.split("=", 1)[1])
        return 0

    from kalamclient import KalamHttp, LiveConnection
    from standin.testing import TEST_ROOT_PASSWORD, StandinProcess

    if args.receivers:
        receivers = [r.strip() for r in args.receivers.split(",") if r.strip()]
        bad = set(receivers) - set(RECEIVERS)
        if bad:
            raise SystemExit(f"unknown receivers: {', '.join(sorted(bad))}")
    else:
        receivers = [r for r in RECEIVERS if r != "pipeline-base"
                     and (r != "pipeline-batch" or hasattr(LiveConnection, "recv_many"))]
    from importlib.util import find_spec
    if "picows" in receivers and not (find_spec("picows") and find_spec("uvloop")):
        if args.receivers:
            raise SystemExit("receiver picows needs picows and uvloop: pip install -e '.[bench]'")
        receivers.remove("picows")
        print("picows: not installed (pip install -e '.[bench]'), left out")
    if args.baseline and "pipeline-base" not in receivers:
        receivers.insert(receivers.index("pipeline") if "pipeline" in receivers else len(receivers), "pipeline-base")
    rates = [float(r) for r in args.rates.split(",")]
    prof_dir = Path(args.profile) if args.profile else None
    if prof_dir:
        if not shutil.which("py-spy"):
            raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
        prof_dir.mkdir(parents=True, exist_ok=True)
    versions = [f"Python {sys.version.split()[0]}"]
    if "artillery" in receivers:
        _, av = artillery_bin()
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        wsv = json.loads((NPM_DIR / "node_modules" / "ws" / "package.json").read_text())["version"]
        versions.insert(0, f"Artillery {av} (Node {node}, ws {wsv})")
    from importlib.metadata import version as dist_version
    versions += [f"{d} {dist_version(d)}" for d in ("locust", "gevent", "websocket-client", "orjson")]
    print(f"machine: {os.cpu_count()} CPUs; {args.listeners} sockets per receiver, every socket gets every "
          f"change; {args.writers} writers; {args.duration:g} s windows; stand-in with config/loadtest-server.toml"
          f"\n{'; '.join(versions)}", flush=True)

    results: dict = {}
    with StandinProcess(root_password=TEST_ROOT_PASSWORD, config=str(ROOT / "config" / "loadtest-server.toml")) \
            as s, tempfile.TemporaryDirectory() as tmp:
        admin = KalamHttp(s.url, timeout=30)
        admin.login("root", TEST_ROOT_PASSWORD)
        baseline = baseline_tree(args.baseline, Path(tmp)) if args.baseline else None
        if baseline:
            print(f"pipeline-base: kalamclient/ as of {args.baseline} "
                  f"({subprocess.run(['git', 'rev-parse', '--short', args.baseline], cwd=ROOT, capture_output=True, text=True).stdout.strip()})")
        for rate in rates:
            for rep in range(args.repeat):
                for rc in receivers:
                    label = f"{rc}-{int(rate) or 'unpaced'}-{rep}"
                    r = window(s.url, admin, rc, listeners=args.listeners, writers=args.writers, rate=rate,
                               duration=args.duration, tmp=Path(tmp), profile=prof_dir, label=label,
                               baseline=baseline)
                    results.setdefault(rate, {}).setdefault(rc, []).append(r)
                    print(f"  {label:28} {r['per_cpu_s']:>9,.0f} msgs/CPU-s  ({r['msgs']:,} msgs of "
                          f"{r['expected']:,} expected, CPU {r['cpu']:.2f} s"
                          + (f" = receiving {r['result']['cpu_recv']:.2f} + verifying {r['result']['cpu_verify']:.2f}"
                             if "cpu_verify" in r["result"] else "")
                          + f", {r['delivered_per_s']:,.0f} msgs/s)", flush=True)
    ok = True
    table = {}
    for rate in rates:
        by = {rc: statistics.median(w["per_cpu_s"] for w in ws) for rc, ws in results[rate].items()}
        table[rate] = by
        name = f"paced {rate:,.0f} msgs/s" if rate else "unpaced"
        print(f"\n{name}: receiver          msgs/CPU-s   x raw   x artillery   msgs/s   msgs / expected")
        raw, art = by.get("raw"), by.get("artillery")
        for rc, v in by.items():
            ws = results[rate][rc]
            dps = statistics.median(w["delivered_per_s"] for w in ws)
            frac = sum(w["msgs"] for w in ws) / max(1, sum(w["expected"] for w in ws))
            xr = f"{v / raw:6.2f}" if raw else "     -"
            xa = f"{v / art:8.2f}" if art else "       -"
            print(f"  {rc:26} {v:>11,.0f}   {xr}   {xa}   {dps:>8,.0f}   {frac:.4f}")
        pipe = by.get("pipeline")
        if pipe is not None:
            for label, ref, floor in (("raw loop", raw, FLOOR_RAW), ("Artillery", art, FLOOR_ARTILLERY)):
                if ref:
                    met = pipe / ref >= floor
                    ok &= met
                    print(f"  floor: pipeline >= {floor:g} x {label}: {pipe / ref:.2f} "
                          f"{'met' if met else 'MISSED'}")
        bad = [w for ws in results[rate].values() for w in ws if w["msgs"] < 0.99 * w["expected"]]
        for w in bad:
            print(f"  warning: {w['receiver']} counted {w['msgs']:,} of {w['expected']:,} expected")
    if args.json:
        Path(args.json).write_text(json.dumps({"table": table, "windows": results}, indent=1, default=str))
    print(json.dumps({"exit": 0 if ok else 1}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
