"""kalamclient under gevent monkey-patching (run in a subprocess so the patching stays there):
the keepalive runs as a greenlet while the reader greenlet is blocked in recv(), nothing busy-waits,
and close() from another greenlet wakes the blocked reader with one Closed event."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r'''
    from gevent import monkey
    monkey.patch_all()
    import base64, hashlib, resource, socket, struct, sys, time
    import gevent
    sys.path.insert(0, sys.argv[1])
    from kalamclient import LiveConnection
    from kalamclient.events import Change, Closed

    def frame(payload, opcode=1):
        n = len(payload)
        head = bytes([0x80 | opcode, n]) if n < 126 else bytes([0x80 | opcode, 126]) + struct.pack("!H", n)
        return head + payload

    pings = []
    def serve(lsock):
        c, _ = lsock.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(4096)
        key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        c.sendall(frame(b'{"type":"auth_success","user":"u","role":"user","protocol":{"serialization":"json","compression":"gzip"}}'))
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
