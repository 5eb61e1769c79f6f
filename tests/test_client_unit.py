"""kalamclient without a KalamDB: frame decoder, value helpers, secrets, and error mapping against
scripted loopback servers (raw sockets / http.server).  Every test is bounded and fast."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import pickle
import socket
import struct
import threading
import time

import orjson
import pytest

from kalamclient import KalamHttp, LiveConnection, QueryResult, Tokens, as_int, decode_frame
from kalamclient.errors import (AuthFailed, ConnectError, HttpError, KalamError, OutcomeUnknown,
                                ProtocolError, RateLimited, SqlError, WsAuthError, WsAuthRateLimited)
from kalamclient.events import (AuthError, AuthSuccess, Change, Closed, InitialDataBatch, MalformedFrame,
                                ServerError, SubscriptionAck)
from kalamclient.ws import OP_BINARY, OP_TEXT

pytestmark = pytest.mark.timeout(30)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------------
# decoder
# ---------------------------------------------------------------------------------------------------

def _j(obj) -> bytes:
    return orjson.dumps(obj)


def test_decode_insert_update_delete_shapes():
    ins = decode_frame(_j({"type": "change", "subscription_id": "s1", "change_type": "insert",
                           "rows": [{"id": "a", "n": "5", "_seq": "7325112241592565761", "_deleted": False}]}),
                       OP_TEXT, 123.0)
    assert type(ins) is Change and ins.change_type == "insert"
    assert ins.row["n"] == "5" and ins.old is None
    assert ins.seq == 7325112241592565761 and type(ins.seq) is int
    assert ins.received_at == 123.0

    upd = decode_frame(_j({"type": "change", "subscription_id": "s1", "change_type": "update",
                           "rows": [{"_seq": "20", "id": "a", "n": "6"}],
                           "old_values": [{"_seq": "10", "id": "a", "n": "5"}]}))
    assert upd.change_type == "update" and upd.seq == 20 and upd.old == {"_seq": "10", "id": "a", "n": "5"}

    dele = decode_frame(_j({"type": "change", "subscription_id": "s1", "change_type": "delete",
                            "old_values": [{"id": "a", "n": "6", "_seq": "30", "_deleted": True}]}))
    assert dele.change_type == "delete" and dele.row is None
    assert dele.old["_deleted"] is True and dele.seq == 30

    hard = decode_frame(_j({"type": "change", "subscription_id": "s1", "change_type": "delete",
                            "old_values": [{"row_id": "u1:99"}]}))
    assert type(hard) is Change and hard.seq is None


def test_decode_control_messages():
    ack = decode_frame(_j({"type": "subscription_ack", "subscription_id": "s", "total_rows": 0,
                           "batch_control": {"batch_num": 0, "has_more": False, "status": "ready",
                                             "last_seq_id": None},
                           "schema": [{"name": "id", "data_type": "Text", "index": 0}]}))
    assert type(ack) is SubscriptionAck and ack.status == "ready" and ack.last_seq_id is None
    assert ack.schema[0]["name"] == "id"
    batch = decode_frame(_j({"type": "initial_data_batch", "subscription_id": "s", "rows": [{"_seq": "1"}],
                             "batch_control": {"batch_num": 0, "has_more": True, "status": "loading",
                                               "last_seq_id": 1}}))
    assert type(batch) is InitialDataBatch and batch.has_more and batch.last_seq_id == 1
    err = decode_frame(_j({"type": "error", "subscription_id": "rate_limit", "code": "RATE_LIMIT_EXCEEDED",
                           "message": "Too many messages"}))
    assert type(err) is ServerError and err.code == "RATE_LIMIT_EXCEEDED"
    ok = decode_frame(_j({"type": "auth_success", "user": "u", "role": "user",
                          "protocol": {"serialization": "json", "compression": "gzip"}}))
    assert type(ok) is AuthSuccess and ok.user == "u"
    assert type(decode_frame(_j({"type": "auth_error", "message": "Invalid credentials"}))) is AuthError


def test_decode_gzip_binary_frame():
    payload = _j({"type": "change", "subscription_id": "s", "change_type": "insert",
                  "rows": [{"_seq": "5", "x": "y" * 600}]})
    ev = decode_frame(gzip.compress(payload), OP_BINARY)
    assert type(ev) is Change and ev.seq == 5 and len(ev.row["x"]) == 600


@pytest.mark.parametrize("data,opcode,fragment", [
    (b"not json at all", OP_TEXT, "not JSON"),
    (b"\x1f\x8b\x08garbage", OP_BINARY, "bad gzip"),
    (b"\x00\x01\x02", OP_BINARY, "not JSON"),
    (b'{"type":"surprise"}', OP_TEXT, "unknown message type"),
    (b'{"no_type":1}', OP_TEXT, "shape"),
    (b'[1,2,3]', OP_TEXT, "shape"),
    (b'{"type":"change","subscription_id":"s","change_type":"insert","rows":[]}', OP_TEXT, "shape"),
    (b'{"type":"change","subscription_id":"s","change_type":"upsert","rows":[{}]}', OP_TEXT, "shape"),
    (b'{"type":"change","subscription_id":"s","change_type":"insert","rows":[{"_seq":"x1"}]}', OP_TEXT, "shape"),
    (b'{"type":"change","subscription_id":"s","change_type":"delete"}', OP_TEXT, "shape"),
    (b'{"type":"initial_data_batch","subscription_id":"s","rows":[]}', OP_TEXT, "shape"),
])
def test_decode_malformed_never_raises(data, opcode, fragment):
    ev = decode_frame(data, opcode, 1.0)
    assert type(ev) is MalformedFrame, ev
    assert fragment in ev.reason
    assert ev.raw_prefix == data[:200] and ev.received_at == 1.0


# ---------------------------------------------------------------------------------------------------
# values, secrets
# ---------------------------------------------------------------------------------------------------

def test_query_result_helpers_keep_raw_bigint():
    qr = QueryResult.from_json({
        "schema": [{"name": "id", "data_type": "Text", "index": 0},
                   {"name": "n", "data_type": "BigInt", "index": 1},
                   {"name": "_seq", "data_type": "BigInt", "index": 2}],
        "rows": [["a", "5", "7325112241592565761"], ["b", "6", "7325112241592565762"]],
        "row_count": 2, "as_user": "w"})
    assert qr.columns == ["id", "n", "_seq"]
    assert qr.rows[0][1] == "5"  # raw
    assert qr.dicts()[0] == {"id": "a", "n": "5", "_seq": "7325112241592565761"}
    assert qr.dicts(typed=True)[1] == {"id": "b", "n": 6, "_seq": 7325112241592565762}
    assert qr.column("n", typed=True) == [5, 6]
    assert qr.scalar() == "a"
    count = QueryResult.from_json({"schema": [{"name": "count", "data_type": "BigInt", "index": 0}],
                                   "rows": [["42"]], "row_count": 1})
    assert count.scalar() == "42" and count.scalar_int() == 42
    dml = QueryResult.from_json({"row_count": 1, "message": "Inserted 1 row(s)", "as_user": "w"})
    assert dml.rows == [] and dml.columns == [] and dml.scalar() is None and dml.row_count == 1
    assert as_int("12") == 12 and as_int(None) is None and as_int(7) == 7


def test_tokens_and_errors_hide_secrets():
    t = Tokens("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig-secret-part", "refresh-secret-value-xyz",
               user="u", role="user")
    assert "sig-secret-part" not in repr(t) and "refresh-secret-value-xyz" not in str(t)
    http = KalamHttp("http://127.0.0.1:1", token="my-very-secret-token")
    assert "my-very-secret-token" not in repr(http)
    err = SqlError("Statement 1 failed: CREATE USER x WITH PASSWORD 'Hunter2Hunter2' ROLE user; "
                   "token my-very-secret-token", code="SQL_EXECUTION_ERROR", status=400)
    for text in (str(err), repr(err), err.message, str(pickle.loads(pickle.dumps(err)))):
        assert "Hunter2Hunter2" not in text and "my-very-secret-token" not in text
    conn = LiveConnection("http://127.0.0.1:1", "another-secret-token-123")
    assert "another-secret-token-123" not in repr(conn) and "another-secret-token-123" not in conn.url


def test_error_hierarchy():
    assert issubclass(RateLimited, HttpError) and issubclass(AuthFailed, HttpError)
    assert issubclass(SqlError, HttpError) and issubclass(HttpError, KalamError)
    assert not issubclass(RateLimited, AuthFailed) and not issubclass(AuthFailed, RateLimited)
    assert issubclass(WsAuthRateLimited, RateLimited) and issubclass(WsAuthRateLimited, WsAuthError)
    assert not issubclass(WsAuthError, RateLimited)
    for cls in (ConnectError, OutcomeUnknown, ProtocolError):
        assert issubclass(cls, KalamError) and not issubclass(cls, HttpError)


# ---------------------------------------------------------------------------------------------------
# HTTP against closed ports and canned servers
# ---------------------------------------------------------------------------------------------------

def test_http_closed_port_is_connect_error_quickly():
    port = _free_port()
    http = KalamHttp(f"http://127.0.0.1:{port}", timeout=5)
    t0 = time.monotonic()
    with pytest.raises(ConnectError) as info:
        http.status()
    assert time.monotonic() - t0 < 2
    assert f"127.0.0.1:{port}" in str(info.value)
    assert info.value.port == port


def test_ws_closed_port_is_connect_error_quickly():
    port = _free_port()
    conn = LiveConnection(f"http://127.0.0.1:{port}", "tok", connect_timeout=5)
    t0 = time.monotonic()
    with pytest.raises(ConnectError) as info:
        conn.connect()
    assert time.monotonic() - t0 < 2
    assert f"127.0.0.1:{port}" in str(info.value)


class _SilentServer:
    """Accepts TCP connections and then either never answers or resets them."""

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.mode == "reset":
                try:
                    c.recv(65536)
                except OSError:
                    pass
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_http_no_answer_is_outcome_unknown():
    srv = _SilentServer("silent")
    try:
        http = KalamHttp(f"http://127.0.0.1:{srv.port}", timeout=0.5, token="t")
        t0 = time.monotonic()
        with pytest.raises(OutcomeUnknown):
            http.sql("INSERT INTO t (a) VALUES (1)")
        assert time.monotonic() - t0 < 3
    finally:
        srv.close()


def test_http_reset_is_outcome_unknown():
    srv = _SilentServer("reset")
    try:
        http = KalamHttp(f"http://127.0.0.1:{srv.port}", timeout=2, token="t")
        with pytest.raises(OutcomeUnknown):
            http.sql("INSERT INTO t (a) VALUES (1)")
    finally:
        srv.close()


def test_ws_upgrade_never_answered_is_connect_error():
    srv = _SilentServer("silent")
    try:
        conn = LiveConnection(f"http://127.0.0.1:{srv.port}", "t", connect_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(ConnectError):
            conn.connect()
        assert time.monotonic() - t0 < 3
    finally:
        srv.close()


class _CannedHttp:
    """http.server answering every request with (status, body bytes, headers)."""

    def __init__(self, status: int, body: bytes, headers: dict | None = None):
        canned = (status, body, headers or {})
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                st, b, hdrs = canned
                self.send_response(st)
                self.send_header("Content-Length", str(len(b)))
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(b)

            do_GET = do_POST = _answer

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status,body,headers,path,exc,code", [
    (429, b'{"status":"error","results":[],"took":0.1,"error":{"code":"RATE_LIMIT_EXCEEDED","message":"slow down"}}',
     {}, "sql", RateLimited, "RATE_LIMIT_EXCEEDED"),
    (429, b'{"error":"IP_BANNED","message":"banned","retry_after_seconds":300}', {}, "sql", RateLimited, "IP_BANNED"),
    (429, b'{"error":"rate_limited","message":"Too many"}', {"Retry-After": "2"}, "login", RateLimited,
     "rate_limited"),
    (401, b'{"error":"unauthorized","message":"Invalid credentials"}', {}, "login", AuthFailed, "unauthorized"),
    (428, b'{"error":"setup_required","message":"setup"}', {}, "login", AuthFailed, "setup_required"),
    (401, b'{"status":"error","results":[],"took":0,"error":{"code":"TOKEN_EXPIRED","message":"expired"}}', {},
     "sql", AuthFailed, "TOKEN_EXPIRED"),
    (403, b'{"status":"error","results":[],"took":0,"error":{"code":"PERMISSION_DENIED","message":"no"}}', {},
     "sql", SqlError, "PERMISSION_DENIED"),
    (400, b'{"status":"error","results":[],"took":0,"error":{"code":"SQL_EXECUTION_ERROR","message":"bad"}}', {},
     "sql", SqlError, "SQL_EXECUTION_ERROR"),
    (400, b"Json deserialize error: unknown field", {}, "sql", HttpError, None),
    (409, b'{"error":"already_configured","message":"done"}', {}, "setup", HttpError, "already_configured"),
    (200, b"<html>not json</html>", {}, "sql", ProtocolError, None),
    (200, b'{"status":"success"}', {}, "sql", ProtocolError, None),
])
def test_http_error_mapping(status, body, headers, path, exc, code):
    srv = _CannedHttp(status, body, headers)
    try:
        http = KalamHttp(srv.url, timeout=5, token="canned-token-abcdef")
        with pytest.raises(exc) as info:
            if path == "sql":
                http.sql("SELECT 1")
            elif path == "login":
                http.login("u", "Passw0rd!xyz")
            else:
                http.setup("admin", "AdminPass123!", "RootPass123!")
        err = info.value
        assert type(err) is exc
        assert err.code == code
        if isinstance(err, HttpError):
            assert err.status == status
        if status == 429:
            assert not isinstance(err, AuthFailed) and not isinstance(err, SqlError)
        if headers.get("Retry-After"):
            assert err.retry_after == 2.0
        if b"retry_after_seconds" in body:
            assert err.retry_after == 300.0
        assert "canned-token-abcdef" not in str(err) and "Passw0rd!xyz" not in str(err)
    finally:
        srv.close()


def test_http_sql_request_shape_and_decoding():
    answer = (b'{"status":"success","results":[{"schema":[{"name":"id","data_type":"Text","index":0},'
              b'{"name":"n","data_type":"BigInt","index":1}],"rows":[["a","9007199254740993"]],'
              b'"row_count":1,"as_user":"w"}],"took":1.0,"error":null}')
    srv = _CannedHttp(200, answer)
    try:
        http = KalamHttp(srv.url, timeout=5, token="tok-123456")
        qr = http.query("SELECT id, n FROM lt.t WHERE id = $1", ["a"], namespace="lt")
        assert qr.rows == [["a", "9007199254740993"]] and qr.dicts(typed=True)[0]["n"] == 9007199254740993
        method, path, headers, body = srv.requests[-1]
        assert method == "POST" and path == "/v1/api/sql"
        assert headers["Authorization"] == "Bearer tok-123456"
        assert headers["Content-Type"] == "application/json"
        assert orjson.loads(body) == {"sql": "SELECT id, n FROM lt.t WHERE id = $1", "params": ["a"],
                                      "namespace_id": "lt"}
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------------
# WebSocket against a scripted server
# ---------------------------------------------------------------------------------------------------

def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([b0, n])
    elif n < 65536:
        head = bytes([b0, 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, 127]) + struct.pack("!Q", n)
    return head + payload


class ScriptedWs:
    """Loopback WebSocket server that completes the upgrade and then runs ``script(conn)``."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.request = b""
        self.received = b""
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        c, _ = self.sock.accept()
        self.conn = c
        req = b""
        while b"\r\n\r\n" not in req:
            req += c.recv(4096)
        self.request = req
        key = [ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n")
               if ln.lower().startswith(b"sec-websocket-key")][0]
        acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        try:
            self.script(c)
        finally:
            self.done.set()

    def close(self):
        self.sock.close()


AUTH_OK = ws_frame(_j({"type": "auth_success", "user": "u", "role": "user",
                       "protocol": {"serialization": "json", "compression": "gzip"}}))


def _insert(seq: int, pad: int = 0) -> bytes:
    return _j({"type": "change", "subscription_id": "s", "change_type": "insert",
               "rows": [{"id": f"w:{seq}", "pad": "p" * pad, "_seq": str(seq), "_deleted": False}]})


def test_ws_frames_malformed_gzip_fragmented_and_close():
    def script(c):
        c.sendall(AUTH_OK)
        c.sendall(ws_frame(_insert(1)))
        c.sendall(ws_frame(b"{broken json"))
        c.sendall(ws_frame(gzip.compress(_insert(2, pad=800)), opcode=2))
        c.sendall(ws_frame(b"\x1f\x8bnot-gzip", opcode=2))
        whole = _insert(3)
        c.sendall(ws_frame(whole[:10], opcode=1, fin=False) + ws_frame(b"", opcode=9) +
                  ws_frame(whole[10:], opcode=0, fin=True))
        c.sendall(ws_frame(b'{"type":"mystery"}'))
        c.sendall(ws_frame(struct.pack("!H", 1011) + b"Invalid message: boom", opcode=8))
        time.sleep(0.5)
        c.close()

    srv = ScriptedWs(script)
    conn = LiveConnection(srv.url, "secret-tok-999", ping_interval=None, connect_timeout=5)
    try:
        ok = conn.connect()
        assert type(ok) is AuthSuccess and ok.user == "u"
        assert b"authorization: bearer secret-tok-999" in srv.request.lower()
        assert b"origin:" not in srv.request.lower()
        evs = [conn.recv(2) for _ in range(7)]
        kinds = [type(e).__name__ for e in evs]
        assert kinds == ["Change", "MalformedFrame", "Change", "MalformedFrame", "Change", "MalformedFrame",
                         "Closed"], kinds
        assert evs[0].seq == 1 and evs[2].seq == 2 and len(evs[2].row["pad"]) == 800 and evs[4].seq == 3
        assert conn.gzip_frames >= 1
        closed = evs[6]
        assert closed.code == 1011 and closed.reason == "Invalid message: boom" and closed.clean is True
        assert conn.recv(0.2) is None  # Closed is returned once
        assert conn.closed
    finally:
        conn.close()
        srv.close()


# Change messages of every shape, each with the event it must give, whichever path decodes it (recv(), push
# mode in Python, push mode compiled: kalamclient/_speedups.c makes only the usual shapes, ws.py the rest)
_ROW = {"id": "w:1", "n": "1", "_seq": "7"}
_SHAPES = [
    ({"type": "change", "subscription_id": "s", "change_type": "insert", "rows": [_ROW]},
     Change("s", "insert", _ROW, None, 7)),
    ({"type": "change", "subscription_id": "s", "change_type": "update", "rows": [dict(_ROW, _seq=8)],
      "old_values": [{"n": "0"}]}, Change("s", "update", dict(_ROW, _seq=8), {"n": "0"}, 8)),
    ({"type": "change", "subscription_id": "s", "change_type": "update", "rows": [dict(_ROW, _seq=" 9 ")],
      "old_values": []}, Change("s", "update", dict(_ROW, _seq=" 9 "), None, 9)),
    ({"type": "change", "subscription_id": "s", "change_type": "update", "rows": [{"id": "w:1"}],
      "old_values": None}, Change("s", "update", {"id": "w:1"}, None, None)),
    ({"type": "change", "subscription_id": "s", "change_type": "delete", "old_values": [dict(_ROW, _seq="10")]},
     Change("s", "delete", None, dict(_ROW, _seq="10"), 10)),
    ({"type": "change", "subscription_id": "s", "change_type": "delete", "old_values": [{"id": "w:1"}]},
     Change("s", "delete", None, {"id": "w:1"}, None)),
    ({"type": "change", "subscription_id": "s", "change_type": "insert", "rows": [dict(_ROW, _seq="x1")]},
     "unexpected message shape: ValueError"),
    ({"type": "change", "subscription_id": "s", "change_type": "insert", "rows": _ROW},
     "unexpected message shape: KeyError"),
    ({"type": "change", "subscription_id": 5, "change_type": "insert", "rows": [_ROW]},
     "unexpected message shape: TypeError"),
    ({"type": "change", "subscription_id": "s", "change_type": "upsert", "rows": [_ROW]},
     "unexpected message shape: ValueError"),
    ({"type": "change", "subscription_id": "s", "change_type": "delete", "old_values": []},
     "unexpected message shape: IndexError"),
    ({"type": "change", "subscription_id": "s", "change_type": "insert", "rows": [["not", "a", "row"]]},
     "unexpected message shape: AttributeError"),
    ({"type": "change", "subscription_id": "s", "change_type": "insert", "rows": [dict(_ROW, _seq=12)]},
     Change("s", "insert", dict(_ROW, _seq=12), None, 12)),
]


def test_ws_changes_of_every_shape_decode_to_the_same_events():
    """Each shape of change message in one read, then one by one: the same events, fields and order."""
    frames = [ws_frame(_j(m)) for m, _ in _SHAPES]

    def script(c):
        c.sendall(AUTH_OK + b"".join(frames))
        time.sleep(0.2)
        for f in frames:
            c.sendall(f)
            time.sleep(0.01)
        time.sleep(1)

    srv = ScriptedWs(script)
    conn = LiveConnection(srv.url, "t", ping_interval=None, connect_timeout=5)
    try:
        conn.connect()
        for round_ in ("one read", "one by one"):
            for (msg, want), ev in zip(_SHAPES, [conn.recv(2) for _ in _SHAPES]):
                if isinstance(want, str):
                    assert type(ev) is MalformedFrame and ev.reason.startswith(want), (round_, msg, ev)
                else:
                    assert type(ev) is Change and ev.received_at > 0, (round_, msg, ev)
                    want.received_at = ev.received_at
                    assert ev == want and type(ev.seq) is type(want.seq), (round_, msg, ev)
        assert conn.frames == 2 * len(_SHAPES) + 1 and conn.last_opcode == OP_TEXT
    finally:
        conn.close()
        srv.close()


def test_ws_frame_lengths_in_one_read_and_rsv_bits_rejected():
    """Frames of every length encoding back to back in one read (cut from the buffer), one split over
    two reads, then a frame with an RSV bit: that one is a protocol error (Closed 1002), not a change."""
    sizes = (10, 200, 70_000)
    frames = [ws_frame(_insert(i + 1, pad=p)) for i, p in enumerate(sizes)]
    split = ws_frame(_insert(4, pad=300))
    bad = bytearray(ws_frame(_insert(5)))
    bad[0] |= 0x40  # RSV1 without a negotiated extension

    def script(c):
        c.sendall(AUTH_OK + b"".join(frames) + split[:150])
        time.sleep(0.3)
        c.sendall(split[150:])
        c.sendall(bytes(bad))
        time.sleep(1)

    srv = ScriptedWs(script)
    conn = LiveConnection(srv.url, "t", ping_interval=None, connect_timeout=5)
    try:
        conn.connect()
        evs = [conn.recv(2) for _ in range(5)]
        assert [type(e).__name__ for e in evs] == ["Change"] * 4 + ["Closed"], evs
        assert [e.seq for e in evs[:4]] == [1, 2, 3, 4]
        assert [len(e.row["pad"]) for e in evs[:4]] == [*sizes, 300]
        assert evs[4].code == 1002 and "protocol error" in evs[4].reason
    finally:
        conn.close()
        srv.close()


def test_ws_recv_many_returns_every_buffered_event_with_its_stamp():
    """recv_many: [] on timeout; then every event whose frame is whole after one read (a ping between
    them answered, not returned), each with received_at; a partial frame waits for the next call;
    Closed is the last event and is returned once."""
    first = b"".join(ws_frame(_insert(i)) for i in (1, 2, 3)) + ws_frame(b"", opcode=9)
    partial = ws_frame(_insert(4, pad=500))

    def script(c):
        c.sendall(AUTH_OK)
        time.sleep(0.4)
        c.sendall(first + ws_frame(_insert(5)) + partial[:100])
        time.sleep(0.3)
        c.sendall(partial[100:] + ws_frame(struct.pack("!H", 1000), opcode=8))
        time.sleep(1)

    srv = ScriptedWs(script)
    conn = LiveConnection(srv.url, "t", ping_interval=None, connect_timeout=5)
    try:
        conn.connect()
        assert conn.recv_many(0.1) == []
        evs = conn.recv_many(2)
        assert [e.seq for e in evs] == [1, 2, 3, 5], evs
        assert all(type(e) is Change and e.received_at > 0 for e in evs)
        rest = []
        while not rest or type(rest[-1]) is not Closed:
            got = conn.recv_many(2)
            assert got, rest
            rest += got
        assert [type(e).__name__ for e in rest] == ["Change", "Closed"] and rest[0].seq == 4
        assert len(rest[0].row["pad"]) == 500 and rest[1].code == 1000
        assert conn.recv_many(0.1) == []
        assert conn.frames == 8  # auth_success, 3 changes, the ping, 2 changes, the close
    finally:
        conn.close()
        srv.close()


def test_ws_peer_vanishes_gives_unclean_closed_promptly():
    def script(c):
        c.sendall(AUTH_OK + ws_frame(_insert(1)))
        time.sleep(0.3)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()

    srv = ScriptedWs(script)
    conn = LiveConnection(srv.url, "t", ping_interval=None, connect_timeout=5)
    try:
        conn.connect()
        assert type(conn.recv(2)) is Change
        t0 = time.monotonic()
        ev = conn.recv(5)
        assert type(ev) is Closed and ev.clean is False and ev.code == 1006
        assert time.monotonic() - t0 < 2
    finally:
        conn.close()
        srv.close()


def test_ws_recv_timeout_returns_none_and_resumes_partial_frame():
    payload = _insert(7)
    frame = ws_frame(payload)

    def script(c):
        c.sendall(AUTH_OK)
        c.sendall(frame[:5])  # header and a little payload
        time.sleep(0.6)
        c.sendall(frame[5:])
        time.sleep(1)

    srv = ScriptedWs(script)
    conn = LiveConnection(srv.url, "t", ping_interval=None, connect_timeout=5)
    try:
        conn.connect()
        t0 = time.monotonic()
        assert conn.recv(0.2) is None
        assert 0.15 < time.monotonic() - t0 < 1.0
        ev = conn.recv(3)
        assert type(ev) is Change and ev.seq == 7
    finally:
        conn.close()
        srv.close()


def test_ws_auth_error_and_rate_limited_auth():
    def script_for(message):
        def script(c):
            c.sendall(ws_frame(_j({"type": "auth_error", "message": message})))
            c.sendall(ws_frame(struct.pack("!H", 1008) + b"Authentication failed", opcode=8))
            time.sleep(0.3)
            c.close()
        return script

    srv = ScriptedWs(script_for("Invalid credentials"))
    with pytest.raises(WsAuthError) as info:
        LiveConnection(srv.url, "t", ping_interval=None, connect_timeout=5).connect()
    assert info.value.close_code == 1008 and not isinstance(info.value, RateLimited)
    srv.close()

    srv = ScriptedWs(script_for("Too many authentication attempts. Please retry shortly."))
    with pytest.raises(RateLimited) as info:
        LiveConnection(srv.url, "t", ping_interval=None, connect_timeout=5).connect()
    assert isinstance(info.value, WsAuthRateLimited) and info.value.close_code == 1008
    srv.close()


def test_ws_message_auth_and_auto_next_batch_and_pings():
    texts = []
    pings = []
    state = {"buf": b""}

    def parse():
        buf = state["buf"]
        while len(buf) >= 2:
            op = buf[0] & 0x0F
            n = buf[1] & 0x7F
            i = 2
            if n == 126:
                n = struct.unpack("!H", buf[2:4])[0]
                i = 4
            elif n == 127:
                n = struct.unpack("!Q", buf[2:10])[0]
                i = 10
            if len(buf) < i + 4 + n:
                break
            mask = buf[i:i + 4]
            data = bytes(b ^ mask[k % 4] for k, b in enumerate(buf[i + 4:i + 4 + n]))
            buf = buf[i + 4 + n:]
            (texts if op == 1 else pings).append((op, data))
        state["buf"] = buf

    def read_texts(c, want, timeout=3.0):
        """Read masked client frames until `want` more text frames were seen (pings counted apart)."""
        c.settimeout(timeout)
        start = len(texts)
        parse()
        while len(texts) - start < want:
            state["buf"] += c.recv(65536)
            parse()

    def script(c):
        read_texts(c, 1)  # authenticate
        c.sendall(AUTH_OK)
        read_texts(c, 1)  # subscribe
        c.sendall(ws_frame(_j({"type": "initial_data_batch", "subscription_id": "s", "rows": [{"_seq": "5"}],
                               "batch_control": {"batch_num": 0, "has_more": True, "status": "loading",
                                                 "last_seq_id": 7325112241592565761}})))
        read_texts(c, 1)  # next_batch
        deadline = time.monotonic() + 3
        while not pings and time.monotonic() < deadline:
            state["buf"] += c.recv(65536)
            parse()
        c.sendall(ws_frame(struct.pack("!H", 1000), opcode=8))
        time.sleep(0.3)

    srv = ScriptedWs(script)
    conn = LiveConnection(srv.url, "msg-token", auth="message", ping_interval=0.2, connect_timeout=5)
    try:
        conn.connect()
        assert b"authorization" not in srv.request.lower()
        conn.subscribe("s", "SELECT * FROM lt.t", {"batch_size": 2, "from": "12"})
        assert type(conn.recv(3)) is InitialDataBatch
        assert type(conn.recv(5)) is Closed
    finally:
        conn.close()
        srv.done.wait(5)
        srv.close()
    assert orjson.loads(texts[0][1]) == {"type": "authenticate", "method": "jwt", "token": "msg-token",
                                         "protocol": {"serialization": "json", "compression": "gzip"}}
    assert orjson.loads(texts[1][1]) == {"type": "subscribe", "subscription": {
        "id": "s", "sql": "SELECT * FROM lt.t", "options": {"batch_size": 2, "from": 12}}}
    assert orjson.loads(texts[2][1]) == {"type": "next_batch", "subscription_id": "s",
                                         "last_seq_id": 7325112241592565761}
    assert b'"last_seq_id":7325112241592565761' in texts[2][1]  # a JSON number, not a string
    assert any(op == 9 for op, _ in pings)  # protocol Ping frames from the keepalive
