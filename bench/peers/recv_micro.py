#!/usr/bin/env python3
"""Receive-path micro benchmark: CPU per change frame of kalamclient's receive path alone (no stand-in).

    python bench/peers/recv_micro.py [--sockets 10] [--rate 400] [--seconds 5] [--variants raw,recv,...]

A feeder process (plain sockets, no gevent) accepts ``--sockets`` WebSocket upgrades and sends the same
change frame (the stand-in's shape, ~220 bytes, text) to every socket ``--rate`` times a second. The
reader process (gevent, monkey-patched, as under Locust) reads them with one variant; printed: its CPU
microseconds per frame (getrusage over the window) and frames per CPU-second. Variants of designs measured
and not taken: ``deferred`` (reads stamped in the watcher callback, cut and decoded by a 5 ms timer in one
hot loop), ``picows`` (uvloop + picows, no gevent, uvloop reading) and ``picows_ts`` (the same, each socket
read with recvmsg for its kernel stamp into picows's buffer; needs the [bench] extra).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _cpu():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sys():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def feeder(port_out, sockets: int, rate: float, seconds: float, burst: int = 1) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port_out.write(f"{srv.getsockname()[1]}\n")
    port_out.flush()
    conns = []
    for _ in range(sockets):
        c, _ = srv.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(4096)
        key = [ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(c)
    time.sleep(0.5)
    seq0 = (int(time.time() * 1000) - 1420070400000) << 22
    period = 1.0 / rate
    t0 = time.monotonic()
    i = 0
    end = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = t0 + i * period
        if due > now:
            time.sleep(due - now)
        for _ in range(burst):
            i += 1
            body = (b'{"type":"change","subscription_id":"events","change_type":"insert","rows":[{"id":"w01-%d",'
                    b'"writer":"w01_x","n":"%d","payload":"' % (i, i) + b"x" * 64 + b'","_seq":"%d"}]}' % (seq0 + i))
            frame = bytes([0x81, 126]) + len(body).to_bytes(2, "big") + body if len(body) >= 126 else \
                bytes([0x81, len(body)]) + body
            for c in conns:
                c.sendall(frame)
    for c in conns:
        c.sendall(b"\x88\x02\x03\xe8")
    time.sleep(0.5)
    port_out.write(f"{i}\n")
    port_out.flush()


def reader_picows(variant: str, port: int, sockets: int) -> None:
    # uvloop + picows, no gevent: "picows" lets uvloop read; "picows_ts" reads each socket itself with
    # recvmsg_into (the kernel's SO_TIMESTAMPNS stamp of the read) into picows's buffer, picows cutting
    import asyncio
    import socket as _s
    import struct as _st

    import orjson
    import uvloop
    from picows import WSListener, WSMsgType, ws_connect

    ts_unpack = _st.Struct("@qq").unpack_from
    counts = [0] * sockets
    cpu0, sys0 = [None], [None]
    stamp = [0.0]

    async def run():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = [sockets]

        class L(WSListener):
            def __init__(self, i):
                self.i = i

            def on_ws_frame(self, transport, frame):
                if cpu0[0] is None:
                    cpu0[0], sys0[0] = _cpu(), _sys()
                if frame.msg_type == WSMsgType.CLOSE:
                    left[0] -= 1
                    if not left[0]:
                        done.set_result(None)
                    return
                if orjson.loads(frame.get_payload_as_memoryview())["type"] == "change":
                    counts[self.i] += 1

        for i in range(sockets):
            tr, _l = await ws_connect(lambda i=i: L(i), f"ws://127.0.0.1:{port}/v1/ws")
            if variant == "picows_ts":
                under = tr.underlying_transport
                under.pause_reading()
                proto = under.get_protocol()
                sock = _s.socket(fileno=os.dup(under.get_extra_info("socket").fileno()))
                sock.setsockopt(_s.SOL_SOCKET, 35, 1)
                sock.setblocking(False)
                get_buffer, updated, recvmsg_into = proto.get_buffer, proto.buffer_updated, sock.recvmsg_into

                def readable(get_buffer=get_buffer, updated=updated, recvmsg_into=recvmsg_into, sock=sock):
                    try:
                        n, anc, _f, _a = recvmsg_into([get_buffer(65536)], 64)
                    except BlockingIOError:
                        return
                    if not n:
                        loop.remove_reader(sock.fileno())
                        return
                    if anc:
                        sec, nsec = ts_unpack(anc[0][2])
                        stamp[0] = sec + nsec * 1e-9
                    updated(n)
                loop.add_reader(sock.fileno(), readable)
        await done

    uvloop.run(run())
    print(json.dumps({"frames": sum(counts), "cpu": _cpu() - cpu0[0], "sys": _sys() - sys0[0]}), flush=True)


def reader(variant: str, port: int, sockets: int) -> None:
    if variant.startswith("picows"):
        return reader_picows(variant, port, sockets)
    from gevent import monkey
    monkey.patch_all()
    import gevent
    import orjson
    import websocket

    from kalamclient.events import Change, Closed
    from kalamclient.ws import LiveConnection

    url = f"http://127.0.0.1:{port}"
    counts = [0] * sockets
    cpu0 = [None]

    sys0 = [None]

    def mark():
        if cpu0[0] is None:
            cpu0[0] = _cpu()
            sys0[0] = _sys()

    def run_raw(i):
        ws = websocket.create_connection(url.replace("http", "ws") + "/v1/ws", timeout=20, suppress_origin=True,
                                         skip_utf8_validation=True)
        ws.settimeout(0.5)
        while True:
            try:
                op, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:
                break
            if op == 8:
                break
            mark()
            if orjson.loads(data)["type"] == "change":
                counts[i] += 1

    def run_recv(i):
        c = LiveConnection(url, None, ping_interval=None)
        c.open()
        while True:
            ev = c.recv(timeout=0.25)
            if ev is None:
                continue
            mark()
            if ev.__class__ is Change:
                counts[i] += 1
            elif ev.__class__ is Closed:
                break

    def run_recvnt(i):
        c = LiveConnection(url, None, ping_interval=None)
        c.open()
        while True:
            ev = c.recv(None)
            mark()
            if ev.__class__ is Change:
                counts[i] += 1
            elif ev.__class__ is Closed:
                break

    def run_many(i):
        c = LiveConnection(url, None, ping_interval=None)
        c.open()
        while True:
            evs = c.recv_many(timeout=0.25)
            if not evs:
                continue
            mark()
            for ev in evs:
                if ev.__class__ is Change:
                    counts[i] += 1
                elif ev.__class__ is Closed:
                    return

    def frames_of(buf, out):
        pos, size = 0, len(buf)
        while size - pos >= 2:
            n = buf[pos + 1]
            if n < 126:
                start = pos + 2
            else:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            end = start + n
            if end > size:
                break
            out.append((buf[pos] & 15, buf[start:end]))
            pos = end
        return buf[pos:]

    def upgrade(i):
        ws = websocket.create_connection(url.replace("http", "ws") + "/v1/ws", timeout=20, suppress_origin=True,
                                         skip_utf8_validation=True)
        return ws.sock

    def run_gsock(i):
        s = upgrade(i)
        s.settimeout(None)
        rest = b""
        out = []
        while True:
            d = s.recv(65536)
            if not d:
                return
            mark()
            rest = frames_of(rest + d if rest else d, out)
            for op, data in out:
                if op == 8:
                    return
                if orjson.loads(data)["type"] == "change":
                    counts[i] += 1
            out.clear()

    def run_watch(i):
        import socket as _s
        s = upgrade(i)
        real = s._sock
        real.setblocking(False)
        hub = gevent.get_hub()
        w = hub.loop.io(real.fileno(), 1)
        rest = b""
        out = []
        recv = real.recv
        while True:
            try:
                d = recv(65536)
            except BlockingIOError:
                hub.wait(w)
                continue
            if not d:
                return
            mark()
            rest = frames_of(rest + d if rest else d, out)
            for op, data in out:
                if op == 8:
                    return
                if orjson.loads(data)["type"] == "change":
                    counts[i] += 1
            out.clear()

    def run_watchmsg(i):
        import socket as _s
        s = upgrade(i)
        real = s._sock
        real.setsockopt(_s.SOL_SOCKET, 35, 1)
        real.setblocking(False)
        hub = gevent.get_hub()
        w = hub.loop.io(real.fileno(), 1)
        rest = b""
        out = []
        recvmsg = real.recvmsg
        while True:
            try:
                d, anc, _f, _a = recvmsg(65536, 64)
            except BlockingIOError:
                hub.wait(w)
                continue
            if not d:
                return
            mark()
            rest = frames_of(rest + d if rest else d, out)
            for op, data in out:
                if op == 8:
                    return
                if orjson.loads(data)["type"] == "change":
                    counts[i] += 1
            out.clear()

    def run_waitfirst(i):
        import socket as _s
        s = upgrade(i)
        real = s._sock
        real.setsockopt(_s.SOL_SOCKET, 35, 1)
        real.setblocking(False)
        hub = gevent.get_hub()
        w = hub.loop.io(real.fileno(), 1)
        rest = b""
        out = []
        recvmsg = real.recvmsg
        while True:
            hub.wait(w)
            try:
                d, anc, _f, _a = recvmsg(65536, 64)
            except BlockingIOError:
                continue
            if not d:
                return
            mark()
            rest = frames_of(rest + d if rest else d, out)
            for op, data in out:
                if op == 8:
                    return
                if orjson.loads(data)["type"] == "change":
                    counts[i] += 1
            out.clear()

    def run_gsock_to(i):
        s = upgrade(i)
        s.settimeout(0.25)
        rest = b""
        out = []
        while True:
            try:
                d = s.recv(65536)
            except OSError:
                continue
            if not d:
                return
            mark()
            rest = frames_of(rest + d if rest else d, out)
            for op, data in out:
                if op == 8:
                    return
                if orjson.loads(data)["type"] == "change":
                    counts[i] += 1
            out.clear()

    def run_epoll_all():
        import select
        import socket as _s
        hub = gevent.get_hub()
        from gevent.monkey import get_original
        ep = get_original("select", "epoll")()
        w = hub.loop.io(ep.fileno(), 1)
        st = {}
        for i in range(sockets):
            real = upgrade(i)._sock
            real.setsockopt(_s.SOL_SOCKET, 35, 1)
            real.setblocking(False)
            st[real.fileno()] = [real.recvmsg, b"", i]
            ep.register(real.fileno(), select.EPOLLIN)
        out = []
        left = sockets
        while left:
            hub.wait(w)
            for fd, _ev in ep.poll(0):
                e = st[fd]
                try:
                    d, anc, _f, _a = e[0](65536, 64)
                except BlockingIOError:
                    continue
                if not d:
                    ep.unregister(fd)
                    left -= 1
                    continue
                mark()
                rest = e[1]
                e[1] = frames_of(rest + d if rest else d, out)
                i = e[2]
                for op, data in out:
                    if op == 8:
                        ep.unregister(fd)
                        left -= 1
                        break
                    if orjson.loads(data)["type"] == "change":
                        counts[i] += 1
                out.clear()


    def run_cb_all(fused=False, deferred=False):
        # fused: the ceiling of an inlined push path (kernel stamp and a decoded Change per frame too);
        # deferred: the callback only reads (and stamps); a loop timer every 5 ms cuts and decodes every read
        # queued since, in one hot loop
        import socket as _s
        import struct as _st
        from gevent.event import Event

        from kalamclient.ws import _change
        ts_unpack = _st.Struct("@qq").unpack_from
        hub = gevent.get_hub()
        left = [sockets]
        fin = Event()
        watchers = []

        def make(i):
            s = upgrade(i)
            real = s._sock
            real.setsockopt(_s.SOL_SOCKET, 35, 1)
            real.setblocking(False)
            w = hub.loop.io(real.fileno(), 1)
            st = {"rest": b""}
            out = []
            recvmsg = real.recvmsg

            def cb():
                try:
                    d, anc, _f, _a = recvmsg(65536, 64)
                except BlockingIOError:
                    return
                if not d:
                    w.stop()
                    return
                if deferred:
                    queue.append((work, d, anc))
                    return
                work(d, anc)

            def work(d, anc):
                mark()
                if fused:
                    sec, nsec = ts_unpack(anc[0][2])
                    ts = sec + nsec * 1e-9
                rest = st["rest"]
                st["rest"] = frames_of(rest + d if rest else d, out)
                for op, data in out:
                    if op == 8:
                        w.stop()
                        left[0] -= 1
                        if not left[0]:
                            fin.set()
                        return
                    msg = orjson.loads(data)
                    if msg["type"] == "change":
                        if fused:
                            _change(msg, ts)
                        counts[i] += 1
                out.clear()
            w.start(cb)
            watchers.append(w)
        queue = []
        if deferred:
            def drain():
                if queue:
                    batch = queue[:]
                    del queue[:]
                    for fn, d, anc in batch:
                        fn(d, anc)
            tick = hub.loop.timer(0.005, 0.005)
            tick.start(drain)
        for i in range(sockets):
            make(i)
        fin.wait()

    def run_push_all():
        # kalamclient's push mode: the event loop reads each socket and hands its changes to a handler
        from gevent.event import Event
        left = [sockets]
        fin = Event()

        def make(i):
            c = LiveConnection(url, None, ping_interval=None)
            c.open()

            def handler(ev):
                mark()
                counts[i] += 1
            assert c.push_changes(handler), "push mode not available"

            def rest():
                while True:
                    ev = c.recv(0.25)
                    if ev is None:
                        continue
                    if ev.__class__ is Change:
                        mark()
                        counts[i] += 1
                    elif ev.__class__ is Closed:
                        break
                left[0] -= 1
                if not left[0]:
                    fin.set()
            gevent.spawn(rest)
        for i in range(sockets):
            make(i)
        fin.wait()

    if variant in ("fused", "deferred"):
        run_cb_all(fused=True, deferred=variant == "deferred")
        cpu = _cpu() - cpu0[0]
        print(json.dumps({"frames": sum(counts), "cpu": cpu, "sys": _sys() - sys0[0]}), flush=True)
        return
    if variant == "push":
        run_push_all()
        cpu = _cpu() - cpu0[0]
        print(json.dumps({"frames": sum(counts), "cpu": cpu, "sys": _sys() - sys0[0]}), flush=True)
        return
    if variant in ("cb", "epoll"):
        run_cb_all() if variant == "cb" else run_epoll_all()
        cpu = _cpu() - cpu0[0]
        print(json.dumps({"frames": sum(counts), "cpu": cpu, "sys": _sys() - sys0[0]}), flush=True)
        return
    fn = {"raw": run_raw, "recv": run_recv, "recvnt": run_recvnt, "many": run_many, "gsock": run_gsock, "watch": run_watch,
          "watchmsg": run_watchmsg, "waitfirst": run_waitfirst, "gsock_to": run_gsock_to}[variant]
    gs = [gevent.spawn(fn, i) for i in range(sockets)]
    gevent.joinall(gs)
    cpu = _cpu() - cpu0[0]
    print(json.dumps({"frames": sum(counts), "cpu": cpu, "sys": _sys() - sys0[0]}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role")
    ap.add_argument("--variant", default="recv")
    ap.add_argument("--variants", default="raw,recv")
    ap.add_argument("--port", type=int)
    ap.add_argument("--sockets", type=int, default=10)
    ap.add_argument("--rate", type=float, default=400.0, help="frames/s to each socket")
    ap.add_argument("--burst", type=int, default=1, help="frames sent back to back per tick")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if a.role == "feeder":
        feeder(sys.stdout, a.sockets, a.rate, a.seconds, a.burst)
        return 0
    if a.role == "reader":
        reader(a.variant, a.port, a.sockets)
        return 0
    me = str(Path(__file__).resolve())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for rep in range(a.repeat):
        for v in a.variants.split(","):
            f = subprocess.Popen([sys.executable, me, "--role", "feeder", "--sockets", str(a.sockets), "--rate",
                                  str(a.rate / a.burst), "--burst", str(a.burst), "--seconds", str(a.seconds)],
                                 stdout=subprocess.PIPE, text=True, env=env)
            port = int(f.stdout.readline())
            r = subprocess.run([sys.executable, me, "--role", "reader", "--variant", v, "--port", str(port),
                                "--sockets", str(a.sockets)], capture_output=True, text=True, env=env)
            if r.returncode:
                f.kill()
                f.wait()
                print(r.stderr[-2000:])
                continue
            sent = int(f.stdout.readline())
            f.wait()
            res = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{v:8} {res['frames']:>7,} frames of {sent * a.sockets:,}  {1e6 * res['cpu'] / res['frames']:6.1f} us/frame"
                  f"  {res['frames'] / res['cpu']:>9,.0f} frames/CPU-s  (system {1e6 * res['sys'] / res['frames']:.1f} us/frame)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
