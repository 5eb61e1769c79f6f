"""kalamclient under gevent monkey-patching (run in a subprocess so the patching stays there):
the keepalive runs as a greenlet while the reader greenlet is blocked in recv(), nothing busy-waits,
and close() from another greenlet wakes the blocked reader with one Closed event."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a scripted WebSocket server in the child: the upgrade and auth_success, then what each script sends
PRELUDE = textwrap.dedent(r'''
    from gevent import monkey
    monkey.patch_all()
    import base64, hashlib, resource, socket, struct, sys, time
    import gevent
    sys.path.insert(0, sys.argv[1])
    from kalamclient import LiveConnection
    from kalamclient.events import Change, Closed, SubscriptionAck

    def frame(payload, opcode=1):
        n = len(payload)
        head = bytes([0x80 | opcode, n]) if n < 126 else bytes([0x80 | opcode, 126]) + struct.pack("!H", n)
        return head + payload

    def accept(lsock):
        c, _ = lsock.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(4096)
        key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        c.sendall(frame(b'{"type":"auth_success","user":"u","role":"user","protocol":{"serialization":"json","compression":"gzip"}}'))
        return c
''')

SCRIPT = PRELUDE + textwrap.dedent(r'''
    pings = []
    def serve(lsock):
        c = accept(lsock)
        c.sendall(frame(b'{"type":"change","subscription_id":"s","change_type":"insert","rows":[{"_seq":"1"}]}'))
        while True:
            data = c.recv(4096)
            if not data:
                return
            if data[0] & 0x0F == 9:
                pings.append(time.time())

    lsock = socket.socket(); lsock.bind(("127.0.0.1", 0)); lsock.listen(1)
    gevent.spawn(serve, lsock)
    conn = LiveConnection("http://127.0.0.1:%d" % lsock.getsockname()[1], "t", ping_interval=0.1)
    conn.connect()
    assert type(conn.recv(2)) is Change
    result = {}
    def reader():
        result["ev"] = conn.recv(None)      # blocks until close() below
        result["again"] = conn.recv(0.1)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    g = gevent.spawn(reader)
    gevent.sleep(1.0)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    conn.close()
    g.join(3)
    assert g.dead, "reader not woken by close()"
    ev = result["ev"]
    assert type(ev) is Closed and ev.clean and ev.code == 1000, ev
    assert result["again"] is None
    assert len(pings) >= 5, pings
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert cpu < 0.3, "busy waiting? %.3f s CPU in 1 s idle" % cpu
    print("OK pings=%d idle_cpu=%.3f" % (len(pings), cpu))
''')


@pytest.mark.timeout(30)
def test_gevent_keepalive_reader_and_close():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=25)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.timeout(120)
def test_gevent_receive_path_passes_the_websocket_unit_tests():
    """Under gevent the receive path reads the socket itself (waiting on its read watcher): the same
    WebSocket unit tests (frames, lengths, fragments, timeouts, partial frames, close) pass there too."""
    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import sys, pytest\n"
            "import kalamclient.ws as ws\n"
            "setup = ws.LiveConnection._setup_reader\n"
            "def checked(self):\n"
            "    setup(self)\n"
            "    assert self._real is not None, 'the gevent receive path is not in use'\n"
            "ws.LiveConnection._setup_reader = checked\n"
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-k', 'test_ws_', sys.argv[1]]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests" / "test_client_unit.py")],
                          capture_output=True, text=True, timeout=110, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


# Push mode's read runs compiled (kalamclient/_speedups.c) where it was built, else in Python: both are tested
READS = ["compiled", "python"]


def _read_env(read: str) -> dict:
    if read == "compiled":
        from kalamclient import ws
        if ws._on_readable_compiled is None:
            pytest.skip("kalamclient._speedups was not built (no C compiler at install)")
        return dict(os.environ, KALAMDB_LT_PURE_PYTHON="")
    return dict(os.environ, KALAMDB_LT_PURE_PYTHON="1")


# in the child: counts the compiled reads (none in Python)
COUNT_READS = ("import kalamclient.ws as ws\n"
               "reads = [0]\n"
               "if ws._on_readable_compiled is not None:\n"
               "    _real_read = ws._on_readable_compiled\n"
               "    def _counted(conn):\n"
               "        reads[0] += 1\n"
               "        return _real_read(conn)\n"
               "    ws._on_readable_compiled = _counted\n")


def _compiled_reads(out: str) -> int:
    return int(out.rsplit("compiled reads:", 1)[1].split()[0])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("read", READS)
def test_gevent_push_mode_passes_the_websocket_unit_tests_in_order(read):
    """Push mode (the event loop reads the socket and hands each change to a handler, recv() returns the
    rest): the same WebSocket unit tests pass when every connection pushes from its upgrade on, the
    changes the handler got merged, in the order they were handed out, with what recv() returns. So
    fragments, control frames between data frames, partial frames, the close and the order survive it,
    with the read compiled and in Python."""
    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import sys, time, collections, pytest\n"
            + COUNT_READS +
            "setup, real = ws.LiveConnection._setup_reader, ws.LiveConnection.recv\n"
            "pushed = [0]\n"
            "def setup_pushing(self):\n"
            "    setup(self)\n"
            "    self._got = collections.deque()\n"
            "    def handler(ev):\n"
            "        pushed[0] += 1\n"
            "        self._got.append(ev)\n"
            "    assert self.push_changes(handler), 'push mode not in use'\n"
            "def recv(self, timeout=None):\n"
            "    got = getattr(self, '_got', None)\n"
            "    if got is None:\n"
            "        return real(self, timeout)\n"
            "    deadline = None if timeout is None else time.monotonic() + timeout\n"
            "    while True:\n"
            "        if got:\n"
            "            return got.popleft()\n"
            "        t = 0.01 if deadline is None else max(0.0, min(0.01, deadline - time.monotonic()))\n"
            "        ev = real(self, t)\n"
            "        if ev is not None:\n"
            "            got.append(ev)\n"
            "            return got.popleft()\n"
            "        if got:\n"
            "            return got.popleft()\n"
            "        if deadline is not None and time.monotonic() >= deadline:\n"
            "            return None\n"
            "ws.LiveConnection._setup_reader = setup_pushing\n"
            "ws.LiveConnection.recv = recv\n"
            # recv_many's own test is about what recv() alone hands out per wake-up: the handler has those
            "code = pytest.main(['-q', '-p', 'no:cacheprovider', '-k', 'test_ws_ and not recv_many', sys.argv[1]])\n"
            "print('pushed by the loop:', pushed[0])\n"
            "print('compiled reads:', reads[0])\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests" / "test_client_unit.py")],
                          capture_output=True, text=True, timeout=110, cwd=ROOT, env=_read_env(read))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    assert int(proc.stdout.rsplit("pushed by the loop:", 1)[1].split()[0]) > 0, proc.stdout[-2000:]
    assert (_compiled_reads(proc.stdout) > 0) == (read == "compiled"), proc.stdout[-2000:]


ORDER_SCRIPT = PRELUDE + COUNT_READS + textwrap.dedent(r'''
    def change(i):
        return frame(b'{"type":"change","subscription_id":"s","change_type":"insert","rows":[{"_seq":"%d"}]}' % i)

    N = 3000
    sent = {"bytes": 0, "frames": 1}  # accept() sent the auth_success
    def serve(lsock):
        c = accept(lsock)
        i = 0
        while i < N:
            # bursts: a ping (a control frame: recv() takes over), then changes in the same read, now
            # and then an event that is not a change (recv() hands it out) with changes behind it
            burst = b"" if i % 7 else frame(b"p", opcode=9)
            sent["frames"] += 0 if i % 7 else 1
            for _ in range(1 + i % 5):
                i += 1
                burst += change(i)
                sent["frames"] += 1 + (i % 11 == 0)
                if i % 11 == 0:
                    burst += frame(b'{"type":"subscription_ack","subscription_id":"s%d","total_rows":0,'
                                   b'"batch_control":{"batch_num":0,"has_more":false,"status":"ready"}}' % i)
            c.sendall(burst)
            sent["bytes"] += len(burst)
            time.sleep(0.0005 if i % 3 else 0)
        c.sendall(frame(struct.pack("!H", 1000), opcode=8))
        sent["frames"] += 1
        time.sleep(1)

    lsock = socket.socket(); lsock.bind(("127.0.0.1", 0)); lsock.listen(1)
    gevent.spawn(serve, lsock)
    conn = LiveConnection("http://127.0.0.1:%d" % lsock.getsockname()[1], "t", ping_interval=None)
    conn.connect()
    order, by_loop, by_recv = [], [0], [0]
    def handler(ev):
        by_loop[0] += 1
        order.append(ev.seq)
    assert conn.push_changes(handler)
    while True:
        ev = conn.recv(2)
        if ev is None or ev.__class__ is Closed:
            break
        if ev.__class__ is Change:
            by_recv[0] += 1
            order.append(ev.seq)
        elif ev.__class__ is SubscriptionAck:
            order.append("ack%s" % ev.subscription_id[1:])
            gevent.sleep(0)   # the caller yields while it holds an event: nothing may overtake it
    expected = []
    for i in range(1, N + 1):
        expected.append(i)
        if i % 11 == 0:
            expected.append("ack%d" % i)
    assert type(ev) is Closed and ev.code == 1000, ev
    assert order == expected, next((k, a, b) for k, (a, b) in enumerate(zip(order, expected)) if a != b) if len(order) == len(expected) else (len(order), len(expected))
    print("OK loop=%d recv=%d" % (by_loop[0], by_recv[0]))
    print("compiled reads:", reads[0])
    # the counters the read keeps, the same both ways: every frame, and the harness's lag of every event
    assert conn.frames == sent["frames"], (conn.frames, sent)
    assert conn.bytes_in > sent["bytes"], (conn.bytes_in, sent)  # and the upgrade's response before them
    assert 0 < conn.lag_max <= conn.lag_sum < 0.05 * N, (conn.lag_sum, conn.lag_max)
''')


PUSH_ONLY_SCRIPT = PRELUDE + COUNT_READS + textwrap.dedent(r'''
    N = 600
    def serve(lsock):
        c = accept(lsock)
        time.sleep(0.2)
        i = 1
        while i <= N:  # changes only, one to three to a write
            k = min(i + 1 + i % 3, N + 1)
            c.sendall(b"".join(frame(b'{"type":"change","subscription_id":"s","change_type":"insert",'
                                     b'"rows":[{"_seq":"%d"}]}' % j) for j in range(i, k)))
            i = k
            time.sleep(0.001)
        c.sendall(frame(struct.pack("!H", 1000), opcode=8))
        time.sleep(1)

    lsock = socket.socket(); lsock.bind(("127.0.0.1", 0)); lsock.listen(1)
    gevent.spawn(serve, lsock)
    conn = LiveConnection("http://127.0.0.1:%d" % lsock.getsockname()[1], "t", ping_interval=None)
    conn.connect()
    frames0, lag0 = conn.frames, conn.lag_sum
    seqs = []
    assert conn.push_changes(lambda ev: seqs.append(ev.seq))
    ev = conn.recv(5)
    assert type(ev) is Closed and ev.code == 1000, ev
    print("push only: loop=%d in_order=%s frames=%d lag=%r lag_max=%r stamped=%s"
          % (len(seqs), seqs == list(range(1, N + 1)), conn.frames - frames0, conn.lag_sum - lag0, conn.lag_max,
             conn._kernel_stamps))
    print("compiled reads:", reads[0])
''')


@pytest.mark.timeout(60)
@pytest.mark.parametrize("read", READS)
def test_gevent_push_mode_counts_what_the_loop_reads(read):
    """Every change of a feed without control frames is handed out by the event loop (compiled or in
    Python), in order, and the read keeps the connection's counters: each frame counted, the harness's
    lag of each change noted (lag_sum, lag_max)."""
    proc = subprocess.run([sys.executable, "-c", PUSH_ONLY_SCRIPT, str(ROOT)], capture_output=True, text=True,
                          timeout=50, env=_read_env(read))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = proc.stdout.split("push only: ", 1)[1].split("\n", 1)[0]
    got = dict(kv.split("=", 1) for kv in line.split())
    assert (got["loop"], got["in_order"], got["frames"]) == ("600", "True", "601"), line  # and the close
    lag, lag_max = float(got["lag"]), float(got["lag_max"])
    assert 0 < lag_max <= lag < 600 * 0.05, line
    assert got["stamped"] == "True", line  # kernel stamps: the lag is from the kernel's arrival
    assert (_compiled_reads(proc.stdout) > 0) == (read == "compiled"), proc.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("read", READS)
def test_gevent_push_mode_keeps_the_order_between_the_loop_and_recv(read):
    proc = subprocess.run([sys.executable, "-c", ORDER_SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=50,
                          env=_read_env(read))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loop, recv = (int(x.split("=")[1]) for x in proc.stdout.split("OK ")[1].split("\n")[0].split())
    # both ways were taken: changes handed out by the event loop, and changes recv() returned
    assert loop > 0 and recv > 0, proc.stdout
    assert (_compiled_reads(proc.stdout) > 0) == (read == "compiled"), proc.stdout
