#!/usr/bin/env python3
"""Wire benchmark for kalamclient (a script that prints figures; not a test).

    python bench/wire_bench.py [--duration 10] [--listeners 20] [--writer-procs 2] [--writer-threads 4]
                               [--payload 40] [--compress] [--url http://127.0.0.1:8080 --root-password ...]
    python bench/wire_bench.py --synthetic-only

Default: starts a stand-in (``StandinProcess`` with config/loadtest-server.toml), creates a shared
PUBLIC table and ``--listeners`` listener users, each subscribed live on its own WebSocket. The
listeners run in a separate process (gevent, one greenlet per connection, as under Locust) so that
the CPU of the receiving side is measured on its own (``resource.getrusage`` of that process).
Writer processes (threads inside) insert as fast as they can for ``--duration`` seconds.

Prints:
  * sustained inserts/s with N subscribers (acknowledged INSERTs / writing time);
  * notifications/s delivered (received by all listeners / time from first write to last arrival);
  * received-and-decoded notifications per CPU-second of the receiving process;
  * a synthetic ceiling: the same receive path fed by a loopback server that only replays frames.
Floors: 500 inserts/s with 20 subscribers; 30,000 decoded notifications per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FLOOR_INSERTS = 500.0
FLOOR_DECODE = 30_000.0


# ---------------------------------------------------------------------------------------------------
# receiver process (gevent): python wire_bench.py --receiver  (JSON job on stdin, commands on stdin)
# ---------------------------------------------------------------------------------------------------

def receiver_main() -> None:
    from gevent import monkey
    monkey.patch_all()
    import resource

    import gevent
    from gevent.fileobject import FileObjectThread

    from kalamclient import LiveConnection
    from kalamclient.events import Change, Closed, MalformedFrame

    stdin = FileObjectThread(sys.stdin.buffer, "rb")
    job = json.loads(stdin.readline())
    counts = {"changes": 0, "malformed": 0, "closed": 0, "other": 0, "last": 0.0, "first": 0.0}
    conns = []
    for i, token in enumerate(job["tokens"]):
        conn = LiveConnection(job["url"], token, compress=job["compress"], ping_interval=5.0,
                              connect_timeout=20.0)
        conn.connect()
        conn.subscribe(f"bench{i}", job["sql"])  # live only
        conns.append(conn)

    stop = {"flag": False}
    live_counts = [0] * len(conns)

    def read(i, conn):
        last = 0.0
        first = 0.0
        while not stop["flag"]:
            ev = conn.recv(0.5)
            if ev is None:
                continue
            cls = ev.__class__
            if cls is Change:
                live_counts[i] += 1
                last = ev.received_at
                if not first:
                    first = last
            elif cls is MalformedFrame:
                counts["malformed"] += 1
            elif cls is Closed:
                counts["closed"] += 1
                break
            else:
                counts["other"] += 1
        counts["last"] = max(counts["last"], last)
        if first:
            counts["first"] = min(counts["first"] or first, first)

    readers = [gevent.spawn(read, i, c) for i, c in enumerate(conns)]
    gevent.sleep(0.5)  # the subscription acks arrive
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while True:
        cmd = stdin.readline().strip()
        if cmd == b"COUNT":
            sys.stdout.write(f"{sum(live_counts)}\n")
            sys.stdout.flush()
            continue
        break  # "STOP" or EOF
    stop["flag"] = True
    gevent.joinall(readers, timeout=5)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    for c in conns:
        c.close()
    counts.update(changes=sum(live_counts), cpu=cpu, wall=time.time() - t0)
    sys.stdout.write(json.dumps(counts) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------
# writer process
# ---------------------------------------------------------------------------------------------------

def writer_proc(url, creds, table, payload, start_at, duration, out_q):
    import threading

    from kalamclient import KalamHttp
    from kalamclient.errors import KalamError

    results = []

    def run(user, token):
        http = KalamHttp(url, timeout=10)
        http.set_token(token)
        sql = f"INSERT INTO {table} (id, writer, n, payload) VALUES ($1, $2, $3, $4)"
        body = "x" * payload
        ok = err = 0
        k = 0
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + duration
        while time.time() < end:
            k += 1
            try:
                http.sql(sql, [f"{user}:{k}", user, k, body])
                ok += 1
            except KalamError:
                err += 1
        results.append((ok, err, time.time()))

    threads = [threading.Thread(target=run, args=c) for c in creds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out_q.put(results)


# ---------------------------------------------------------------------------------------------------
# synthetic receive ceiling (no server work at all)
# ---------------------------------------------------------------------------------------------------

def synthetic(n_frames: int = 200_000, use_gevent: bool = False) -> float:
    """Decoded notifications per CPU-second of the receive path, fed by a replaying loopback server."""
    code = r'''
import sys, json
if sys.argv[2] == "1":
    from gevent import monkey; monkey.patch_all()
import base64, hashlib, resource, socket, struct, threading, time
sys.path.insert(0, sys.argv[1])
import orjson
from kalamclient import LiveConnection
from kalamclient.events import Change
N = int(sys.argv[3])
def frame(p, op=1):
    n = len(p)
    h = bytes([0x80 | op, n]) if n < 126 else bytes([0x80 | op, 126]) + struct.pack("!H", n)
    return h + p
def serve(srv):
    c, _ = srv.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    c.sendall(frame(b'{"type":"auth_success","user":"u","role":"user","protocol":{"serialization":"json","compression":"gzip"}}'))
    blob = b"".join(frame(orjson.dumps({"type": "change", "subscription_id": "bench0", "change_type": "insert",
        "rows": [{"id": f"w01:{i}", "writer": "w01", "n": str(i), "payload": "x" * 40,
                  "_seq": str(7325112241592565761 + i), "_deleted": False}]})) for i in range(1000))
    for _ in range(N // 1000):
        c.sendall(blob)
    c.sendall(frame(struct.pack("!H", 1000), 8))
    time.sleep(1)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
threading.Thread(target=serve, args=(srv,), daemon=True).start()
conn = LiveConnection("http://127.0.0.1:%d" % srv.getsockname()[1], "t", ping_interval=5)
conn.connect()
# the sender runs in this process too: measure only the reading thread's CPU when threads are real
who = resource.RUSAGE_THREAD if sys.argv[2] != "1" else resource.RUSAGE_SELF
r0 = resource.getrusage(who)
n = 0
while True:
    ev = conn.recv(10)
    if ev.__class__ is Change:
        n += 1
    else:
        break
r1 = resource.getrusage(who)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"n": n, "cpu": cpu}))
'''
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), "1" if use_gevent else "0", str(n_frames)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["n"] / res["cpu"] if res["cpu"] else float("inf")


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------

def provision(url, root_password, listeners, writers):
    from kalamclient import KalamHttp
    from kalamclient.errors import RateLimited

    admin = KalamHttp(url, timeout=30)
    admin.login("root", root_password)
    tag = f"{os.getpid()}{int(time.time()) % 100000}"
    ns = f"wb{tag}"
    admin.sql(f"CREATE NAMESPACE IF NOT EXISTS {ns}")
    admin.sql(f"CREATE SHARED TABLE {ns}.events (id TEXT PRIMARY KEY, writer TEXT NOT NULL, n BIGINT NOT NULL, "
              f"payload TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')")
    pw = "BenchPass123!"

    def login(name):
        http = KalamHttp(url, timeout=30)
        for _ in range(50):
            try:
                http.login(name, pw)
                return http.access_token
            except RateLimited:
                time.sleep(0.2)
        raise RuntimeError("login rate-limited")

    listener_tokens, writer_creds = [], []
    for i in range(listeners):
        name = f"wbl{tag}x{i}"
        admin.sql(f"CREATE USER {name} WITH PASSWORD '{pw}' ROLE user")
        listener_tokens.append(login(name))
    for i in range(writers):
        name = f"wbw{tag}x{i}"
        admin.sql(f"CREATE USER {name} WITH PASSWORD '{pw}' ROLE service")
        writer_creds.append((name, login(name)))
    return f"{ns}.events", listener_tokens, writer_creds


def run_bench(args, url, root_password):
    import multiprocessing as mp

    table, listener_tokens, writer_creds = provision(url, root_password, args.listeners,
                                                     args.writer_procs * args.writer_threads)
    recv = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--receiver"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        recv.stdin.write(json.dumps({"url": url, "tokens": listener_tokens, "compress": args.compress,
                                     "sql": f"SELECT * FROM {table}"}) + "\n")
        recv.stdin.flush()
        line = recv.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"receiver did not start: {line!r}")

        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        start_at = time.time() + 1.0
        procs = []
        per = args.writer_threads
        for p in range(args.writer_procs):
            creds = writer_creds[p * per:(p + 1) * per]
            proc = ctx.Process(target=writer_proc, args=(url, creds, table, args.payload, start_at, args.duration, q))
            proc.start()
            procs.append(proc)
        results = [r for _ in procs for r in q.get(timeout=args.duration + 60)]
        for proc in procs:
            proc.join(10)
        ok = sum(r[0] for r in results)
        errs = sum(r[1] for r in results)
        write_end = max(r[2] for r in results)
        inserts_per_s = ok / (write_end - start_at)

        # drain: wait until the listeners got everything, or the count stops moving for 3 s (max 60 s)
        expected = ok * args.listeners
        drain_end = time.time() + 60
        prev, still_since = -1, time.time()
        while time.time() < drain_end:
            recv.stdin.write("COUNT\n")
            recv.stdin.flush()
            n = int(recv.stdout.readline())
            if n >= expected:
                break
            if n != prev:
                prev, still_since = n, time.time()
            elif time.time() - still_since > 3:
                break
            time.sleep(0.25)
        recv.stdin.write("STOP\n")
        recv.stdin.flush()
        stats = json.loads(recv.stdout.readline())
    finally:
        try:
            recv.stdin.close()
        except OSError:
            pass
        try:
            recv.wait(15)
        except subprocess.TimeoutExpired:
            recv.kill()

    got = stats["changes"]
    span = max(1e-9, (stats["last"] or write_end) - start_at)
    notif_per_s = got / span
    per_cpu = got / stats["cpu"] if stats["cpu"] else float("inf")
    return {
        "listeners": args.listeners, "writers": len(writer_creds), "inserts_ok": ok, "insert_errors": errs,
        "inserts_per_s": inserts_per_s, "expected_notifications": expected, "received_notifications": got,
        "missing_notifications": expected - got, "notifications_per_s": notif_per_s,
        "receiver_cpu_s": stats["cpu"], "decoded_per_cpu_s": per_cpu, "malformed": stats["malformed"],
        "closed": stats["closed"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--listeners", type=int, default=20)
    ap.add_argument("--writer-procs", type=int, default=2)
    ap.add_argument("--writer-threads", type=int, default=4)
    ap.add_argument("--payload", type=int, default=40, help="payload column size (bytes)")
    ap.add_argument("--no-compress", dest="compress", action="store_false",
                    help="?compress=false (by default gzip is on, as in the load test: frames >= 512 B are gzip)")
    ap.add_argument("--config", default=str(ROOT / "config" / "loadtest-server.toml"))
    ap.add_argument("--url", help="use a running server instead of starting a stand-in")
    ap.add_argument("--root-password", default=None)
    ap.add_argument("--synthetic-only", action="store_true")
    ap.add_argument("--no-synthetic", action="store_true")
    args = ap.parse_args(argv)
    if args.receiver:
        receiver_main()
        return 0

    rc = 0
    if not args.synthetic_only:
        if args.url:
            res = run_bench(args, args.url, args.root_password or os.environ.get("KALAMDB_ROOT_PASSWORD", ""))
        else:
            from standin.testing import TEST_ROOT_PASSWORD, StandinProcess
            kw = {"root_password": TEST_ROOT_PASSWORD}
            if os.path.exists(args.config):
                kw["config"] = args.config
            else:
                print(f"note: {args.config} not found; stand-in defaults", file=sys.stderr)
            with StandinProcess(**kw) as s:
                res = run_bench(args, s.url, TEST_ROOT_PASSWORD)
        print(f"listeners (subscribers)          : {res['listeners']}")
        print(f"writers                          : {res['writers']} ({args.writer_procs} procs x "
              f"{args.writer_threads} threads), {args.duration:g} s")
        print(f"sustained inserts/s              : {res['inserts_per_s']:.0f}   (floor {FLOOR_INSERTS:.0f}; "
              f"{res['inserts_ok']} ok, {res['insert_errors']} errors)")
        print(f"notifications/s delivered        : {res['notifications_per_s']:.0f}   "
              f"({res['received_notifications']} of {res['expected_notifications']} expected, "
              f"{res['missing_notifications']} missing, {res['malformed']} malformed)")
        print(f"decoded notifications / CPU-s    : {res['decoded_per_cpu_s']:.0f}   (floor {FLOOR_DECODE:.0f}; "
              f"receiver process CPU {res['receiver_cpu_s']:.2f} s, gevent)")
        if res["inserts_per_s"] < FLOOR_INSERTS or res["decoded_per_cpu_s"] < FLOOR_DECODE:
            rc = 1
    if not args.no_synthetic:
        plain = synthetic(use_gevent=False)
        gev = synthetic(use_gevent=True)
        print(f"synthetic receive ceiling / CPU-s: {plain:.0f} (threads), {gev:.0f} (gevent, incl. replay server)")
    print(json.dumps({"exit": rc}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
