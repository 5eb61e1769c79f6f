"""Stand-in: WebSocket live queries (protocol §5)."""
import time
import uuid

import pytest
import websocket

from standin.testing import TEST_ROOT_PASSWORD, WsClient, WsClosed, login, sql, sql_ok


def uniq(prefix="t"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def table(standin, root_token):
    ns = uniq("ws")
    sql_ok(standin.url, root_token, f"CREATE NAMESPACE {ns}")
    sql_ok(standin.url, root_token, f"CREATE SHARED TABLE {ns}.ev (id TEXT PRIMARY KEY, writer TEXT NOT NULL, "
                                    f"n BIGINT NOT NULL, payload TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')")
    return f"{ns}.ev"


def ins(url, tok, t, rows):
    vals = ", ".join(f"('{i}', 'w', {n}, 'p{n}')" for i, n in rows)
    sql_ok(url, tok, f"INSERT INTO {t} (id, writer, n, payload) VALUES {vals}")


def connect(standin, tok, **kw):
    c = WsClient(standin.ws_url, tok, **kw)
    m = c.recv()
    assert m["type"] == "auth_success", m
    return c


def subscribe(c, sid, q, options=None, send_options=True):
    sub = {"id": sid, "sql": q}
    if send_options:
        sub["options"] = options
    c.send({"type": "subscribe", "subscription": sub})


def test_header_auth_first_frame(standin, root_token):
    c = WsClient(standin.ws_url, root_token)
    m = c.recv()
    assert m == {"type": "auth_success", "user": "root", "role": "system",
                 "protocol": {"serialization": "json", "compression": "gzip"}}
    c.close()


def test_message_auth_rules(standin, root_token):
    c = WsClient(standin.ws_url)
    c.send({"type": "authenticate", "method": "jwt", "token": root_token,
            "protocol": {"serialization": "json", "compression": "none"}})
    m = c.recv()
    assert m["type"] == "auth_success" and m["protocol"]["compression"] == "none"
    c.close()
    c = WsClient(standin.ws_url)
    c.send({"type": "authenticate", "method": "jwt", "token": root_token})  # documented form: no protocol
    code, reason, _ = c.recv_until_closed()
    assert code == 1011 and reason.startswith("Invalid message:") and "protocol" in reason
    c = WsClient(standin.ws_url)
    c.send({"type": "authenticate", "method": "jwt", "token": "garbage",
            "protocol": {"serialization": "json", "compression": "gzip"}})
    code, reason, msgs = c.recv_until_closed()
    assert msgs == [{"type": "auth_error", "message": "Invalid credentials"}]
    assert code == 1008 and reason == "Authentication failed"
    c = WsClient(standin.ws_url, "not-a-jwt")
    code, _, msgs = c.recv_until_closed()
    assert code == 1008 and msgs[0]["type"] == "auth_error"
    c = WsClient(standin.ws_url, root_token)
    c.recv()
    c.send("{not json")
    code, reason, _ = c.recv_until_closed()
    assert code == 1011 and reason.startswith("Invalid message:")
    c = connect(standin, root_token)
    c.send({"type": "next_batch", "subscription_id": "x", "last_seq_id": "123"})  # string where number required
    code, _, _ = c.recv_until_closed()
    assert code == 1011


def test_subscribe_errors(standin, root_token, table):
    c = WsClient(standin.ws_url)
    subscribe(c, "s", f"SELECT * FROM {table}")
    assert c.recv() == {"type": "error", "subscription_id": "subscribe", "code": "AUTH_REQUIRED",
                        "message": "Authentication required before subscribing"}
    c.close()
    c = connect(standin, root_token, compress=False)
    subscribe(c, "  ", f"SELECT * FROM {table}")
    m = c.recv()
    assert m["subscription_id"] == "invalid_subscription" and m["code"] == "INVALID_SUBSCRIPTION_ID"
    subscribe(c, "s1", "SELECT * FROM nons.nothing")
    m = c.recv()
    assert m["code"] == "NOT_FOUND" and m["message"] == "Not found: Table not found: nons.nothing"
    subscribe(c, "s2", "SELECT * FROM ev")
    assert c.recv()["code"] == "INVALID_SQL"
    subscribe(c, "s3", f"SELECT * FROM {table} ORDER BY n")
    assert c.recv()["code"] == "INVALID_SQL"
    subscribe(c, "s4", f"SELECT * FROM {table}", {"batch_size": 5, "last_rows": 10})
    m = c.recv()
    assert m["code"] == "UNSUPPORTED" and m["message"].startswith("last_rows (10) cannot exceed batch_size (5)")
    ns = table.split(".")[0]
    sql_ok(standin.url, root_token, f"CREATE SHARED TABLE {ns}.priv (id TEXT PRIMARY KEY)")
    sql_ok(standin.url, root_token, "CREATE USER IF NOT EXISTS wsuser WITH PASSWORD 'WsUserPw-1' ROLE user")
    cu = connect(standin, login(standin.url, "wsuser", "WsUserPw-1"), compress=False)
    subscribe(cu, "p", f"SELECT * FROM {ns}.priv")
    assert cu.recv()["code"] == "UNAUTHORIZED"
    subscribe(cu, "q", "SELECT * FROM system.live")
    assert cu.recv()["code"] == "UNAUTHORIZED"
    c.close()
    cu.close()


def test_live_only_ack_and_change_shapes(standin, root_token, table):
    c = connect(standin, root_token, compress=False)
    subscribe(c, "live", f"SELECT * FROM {table}", send_options=False)
    ack = c.recv()
    assert ack["type"] == "subscription_ack" and ack["total_rows"] == 0
    assert ack["batch_control"] == {"batch_num": 0, "has_more": False, "status": "ready", "last_seq_id": None}
    assert [f["name"] for f in ack["schema"]] == ["id", "writer", "n", "payload", "_seq", "_deleted"]
    ins(standin.url, root_token, table, [("a", 1), ("b", 2)])
    sql_ok(standin.url, root_token, f"UPDATE {table} SET payload = NULL, n = 3 WHERE id = 'a'")
    sql_ok(standin.url, root_token, f"UPDATE {table} SET n = 3 WHERE id = 'a'")  # no-op: no message
    sql_ok(standin.url, root_token, f"DELETE FROM {table} WHERE id = 'b'")
    msgs = c.drain()
    assert [m["change_type"] for m in msgs] == ["insert", "insert", "update", "delete"]
    i0 = msgs[0]
    assert list(i0) == ["type", "subscription_id", "change_type", "rows"]
    assert i0["rows"][0]["n"] == "1" and i0["rows"][0]["_deleted"] is False and isinstance(i0["rows"][0]["_seq"], str)
    up = msgs[2]
    assert set(up["rows"][0]) == {"_seq", "id", "writer", "n"}  # NULL payload absent, no _deleted
    assert up["old_values"][0] == {"_seq": i0["rows"][0]["_seq"], "id": "a", "payload": "p1", "n": "1"}
    assert int(up["rows"][0]["_seq"]) > int(i0["rows"][0]["_seq"])
    de = msgs[3]
    assert "rows" not in de
    tomb = de["old_values"][0]
    assert tomb["_deleted"] is True and tomb["id"] == "b" and tomb["n"] == "2" and tomb["payload"] == "p2"
    assert int(tomb["_seq"]) > int(msgs[1]["rows"][0]["_seq"])
    c.close()


def test_snapshot_batches_and_boundary(standin, root_token, table):
    ins(standin.url, root_token, table, [(f"r{i:03d}", i) for i in range(25)])
    c = connect(standin, root_token, compress=False)
    subscribe(c, "snap", f"SELECT * FROM {table}", {"batch_size": 10})
    ack = c.recv()
    assert ack["type"] == "subscription_ack" and ack["batch_control"]["status"] == "loading"
    b0 = c.recv()
    assert b0["type"] == "initial_data_batch" and len(b0["rows"]) == 10 and b0["batch_control"] == ack["batch_control"]
    assert b0["batch_control"]["has_more"] is True
    # changes during loading are buffered (after boundary) ...
    ins(standin.url, root_token, table, [("late1", 100)])
    sql_ok(standin.url, root_token, f"UPDATE {table} SET n = 101 WHERE id = 'late1'")
    assert c.recv(timeout=0.3) is None
    seen = [r["id"] for r in b0["rows"]]
    last = b0["batch_control"]["last_seq_id"]
    statuses = []
    for _ in range(5):
        c.send({"type": "next_batch", "subscription_id": "snap", "last_seq_id": last})
        b = c.recv()
        statuses.append(b["batch_control"]["status"])
        seen += [r["id"] for r in b["rows"]]
        last = b["batch_control"]["last_seq_id"]
        if not b["batch_control"]["has_more"]:
            break
    assert statuses == ["loading_batch", "ready"]
    assert seen == [f"r{i:03d}" for i in range(25)]  # ordered by _seq, late row not in snapshot
    msgs = c.drain()
    assert [(m["change_type"], (m.get("rows") or [{}])[0].get("n")) for m in msgs] == [("insert", "100"), ("update", "101")]
    c.send({"type": "next_batch", "subscription_id": "snap", "last_seq_id": last})
    assert c.recv()["code"] == "BATCH_FETCH_FAILED"
    c.close()


def test_resume_from_and_last_rows(standin, root_token, table):
    ins(standin.url, root_token, table, [(f"x{i}", i) for i in range(6)])
    rows = sql_ok(standin.url, root_token, f"SELECT id, _seq FROM {table} ORDER BY _seq")["results"][0]["rows"]
    cut = int(rows[2][1])
    sql_ok(standin.url, root_token, f"UPDATE {table} SET n = 50 WHERE id = 'x1'")
    sql_ok(standin.url, root_token, f"DELETE FROM {table} WHERE id = 'x4'")
    c = connect(standin, root_token, compress=False)
    subscribe(c, "res", f"SELECT * FROM {table}", {"batch_size": 100, "from": cut})
    c.recv()
    b = c.recv()
    assert [r["id"] for r in b["rows"]] == ["x3", "x5", "x1"]  # current state with _seq > from; deletes not replayed
    subscribe(c, "lr", f"SELECT id FROM {table}", {"batch_size": 10, "last_rows": 2})
    ack = c.recv()
    assert [f["name"] for f in ack["schema"]] == ["id"]
    b = c.recv()
    assert [r["id"] for r in b["rows"]] == ["x5", "x1"] and set(b["rows"][0]) == {"id", "_seq"}
    assert b["batch_control"]["status"] == "ready"
    c.close()


def test_thousand_row_cap_bug(standin_factory):
    s = standin_factory(config=None)  # code defaults: max_query_limit 1000
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    sql_ok(s.url, tok, "CREATE NAMESPACE c")
    sql_ok(s.url, tok, "CREATE SHARED TABLE c.t (id BIGINT PRIMARY KEY, v TEXT)")
    for base in range(0, 1200, 400):
        sql_ok(s.url, tok, "INSERT INTO c.t (id, v) VALUES " + ", ".join(f"({i}, 'v')" for i in range(base, base + 400)))
    c = connect(s, tok, compress=False)
    subscribe(c, "big", "SELECT * FROM c.t", {})
    c.recv()
    b = c.recv(timeout=10)
    assert len(b["rows"]) == 1000 and b["batch_control"]["has_more"] is False and b["batch_control"]["status"] == "ready"
    subscribe(c, "ok", "SELECT * FROM c.t", {"batch_size": 500})
    c.recv()
    n, last = 0, None
    for _ in range(5):
        b = c.recv(timeout=10)
        n += len(b["rows"])
        if not b["batch_control"]["has_more"]:
            break
        c.send({"type": "next_batch", "subscription_id": "ok", "last_seq_id": b["batch_control"]["last_seq_id"]})
    assert n == 1200
    c.close()


def test_filters_user_tables_and_gzip(standin, root_token, table):
    c = connect(standin, root_token, compress=False)
    subscribe(c, "f", f"SELECT * FROM {table} WHERE n >= 10 AND (payload LIKE 'p1%' OR NOT writer = 'w')", None, False)
    c.recv()
    subscribe(c, "g", f"SELECT * FROM {table} WHERE n IN (1, 2, 3)", None, False)  # unsupported live construct
    c.recv()
    ins(standin.url, root_token, table, [("f1", 5), ("f2", 12), ("f3", 15), ("f4", 1)])
    msgs = c.drain()
    assert [(m["subscription_id"], m["rows"][0]["id"]) for m in msgs] == [("f", "f2"), ("f", "f3")]
    # USER table: subscribers only see their own rows
    ns = table.split(".")[0]
    sql_ok(standin.url, root_token, f"CREATE USER TABLE {ns}.inbox (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), body TEXT)")
    sql_ok(standin.url, root_token, "CREATE USER IF NOT EXISTS hub1 WITH PASSWORD 'HubPw-1234' ROLE user")
    sql_ok(standin.url, root_token, "CREATE USER IF NOT EXISTS svc1 WITH PASSWORD 'SvcPw-1234' ROLE service")
    th = login(standin.url, "hub1", "HubPw-1234")
    ts = login(standin.url, "svc1", "SvcPw-1234")
    ch = connect(standin, th)  # compressed
    subscribe(ch, "in", f"SELECT * FROM {ns}.inbox", None, False)
    ch.recv()
    cs = connect(standin, ts, compress=False)
    subscribe(cs, "in", f"SELECT * FROM {ns}.inbox", None, False)
    cs.recv()
    sql_ok(standin.url, ts, f"EXECUTE AS USER 'hub1' (INSERT INTO {ns}.inbox (body) VALUES ($1))", ["x" * 700])
    sql_ok(standin.url, ts, f"INSERT INTO {ns}.inbox (body) VALUES ('own')")
    m = ch.recv()
    assert m["rows"][0]["body"] == "x" * 700 and ch.binary_frames >= 1
    assert ch.drain() == []
    got = cs.drain()
    assert [m["rows"][0]["body"] for m in got] == ["own"] and cs.binary_frames == 0
    for x in (c, ch, cs):
        x.close()


def test_heartbeat_auth_timeout_and_ping(standin_factory):
    s = standin_factory(env={"KALAMDB_WEBSOCKET_CLIENT_TIMEOUT_SECS": "1",
                             "KALAMDB_WEBSOCKET_HEARTBEAT_INTERVAL_SECS": "0.25",
                             "KALAMDB_WEBSOCKET_AUTH_TIMEOUT_SECS": "0.5"})
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    idle = connect(s, tok)
    alive = connect(s, tok)
    t0 = time.time()
    closed = None
    while time.time() - t0 < 4:
        alive.ping()  # protocol Ping frames refresh the heartbeat
        try:
            idle.recv(timeout=0.3)
        except WsClosed as c:
            closed = c
            break
    assert closed is not None and closed.code == 1000 and closed.reason == "Heartbeat timeout"
    assert 0.9 <= time.time() - t0 <= 3.0
    alive.send({"type": "ping"})
    assert alive.recv(timeout=0.3) is None  # still open, no reply to ping
    noauth = WsClient(s.ws_url)
    code, reason, msgs = noauth.recv_until_closed(timeout=4)
    assert code == 1008 and reason == "Authentication timeout"
    assert msgs[0]["message"].startswith("Authentication timeout - no auth message received within 3 seconds")
    alive.close()


def test_message_rate_and_subscription_limits(standin_factory, tmp_path):
    cfg = tmp_path / "ws.toml"
    cfg.write_text('[server]\nhost="127.0.0.1"\nport=8080\n[storage]\n[limits]\n[logging]\n[performance]\n'
                   '[rate_limit]\nmax_messages_per_sec = 3\nmax_subscriptions_per_user = 2\n')
    s = standin_factory(config=str(cfg))
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    sql_ok(s.url, tok, "CREATE NAMESPACE m")
    sql_ok(s.url, tok, "CREATE SHARED TABLE m.t (id TEXT PRIMARY KEY)")
    c = connect(s, tok, compress=False)
    for _ in range(6):
        c.send({"type": "ping"})
    m = c.recv()
    assert m == {"type": "error", "subscription_id": "rate_limit", "code": "RATE_LIMIT_EXCEEDED",
                 "message": "Too many messages"}
    c.drain()
    time.sleep(1.1)
    subscribe(c, "a", "SELECT * FROM m.t", None, False)
    subscribe(c, "b", "SELECT * FROM m.t", None, False)
    assert c.recv()["type"] == "subscription_ack" and c.recv()["type"] == "subscription_ack"
    time.sleep(1.1)
    subscribe(c, "c", "SELECT * FROM m.t", None, False)
    m = c.recv()
    assert m["code"] == "SUBSCRIPTION_LIMIT_EXCEEDED" and m["subscription_id"] == "c"
    c.send({"type": "unsubscribe", "subscription_id": "a"})
    subscribe(c, "c", "SELECT * FROM m.t", None, False)
    assert c.recv()["type"] == "subscription_ack"
    c.close()


def test_system_live_counter_and_kill(standin, root_token, table):
    c = connect(standin, root_token, compress=False)
    sid = uniq("cnt")
    subscribe(c, sid, f"SELECT * FROM {table}", {"batch_size": 100})
    c.recv()
    c.recv()
    ins(standin.url, root_token, table, [(f"c{i}", i) for i in range(7)])
    assert len(c.drain()) == 7
    rows = sql_ok(standin.url, root_token, "SELECT live_id, changes, options, status FROM system.live WHERE "
                                           f"subscription_id = '{sid}'")["results"][0]["rows"]
    assert len(rows) == 1 and rows[0][1] == "7" and rows[0][3] == "active"
    assert rows[0][2] == '{"batch_size":100}'
    live_id = rows[0][0]
    assert live_id.startswith("root-") and live_id.endswith("-" + sid)
    sql_ok(standin.url, root_token, f"KILL LIVE QUERY '{live_id}'")
    ins(standin.url, root_token, table, [("after-kill", 1)])
    assert c.drain() == []
    assert sql_ok(standin.url, root_token, f"SELECT COUNT(*) FROM system.live WHERE subscription_id = '{sid}'"
                  )["results"][0]["rows"] == [["0"]]
    c.close()


def test_slow_reader_queue_drops_not_counted(standin_factory):
    s = standin_factory()
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    sql_ok(s.url, tok, "CREATE NAMESPACE q")
    sql_ok(s.url, tok, "CREATE SHARED TABLE q.t (id BIGINT PRIMARY KEY, payload TEXT)")
    c = connect(s, tok, compress=False)
    subscribe(c, "slow", "SELECT * FROM q.t", None, False)
    c.recv()
    big = "x" * 4000
    total = 0
    for base in range(0, 3000, 100):  # ~12 MB while the client does not read
        sql_ok(s.url, tok, "INSERT INTO q.t (id, payload) VALUES " + ", ".join(f"({i}, '{big}')" for i in range(base, base + 100)))
        total += 100
    got = 0
    while c.recv(timeout=1.0) is not None:
        got += 1
    assert 0 < got < total
    changes = sql_ok(s.url, tok, "SELECT changes FROM system.live")["results"][0]["rows"]
    assert changes == [[str(got)]]  # enqueued == received; queue drops are not counted
    stats = dict(sql_ok(s.url, tok, "SELECT metric_name, metric_value FROM system.stats")["results"][0]["rows"])
    assert int(stats["standin_notifications_dropped_queue_full"]) == total - got
    c.close()
