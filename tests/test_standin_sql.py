"""Stand-in: /v1/api/sql shapes, caps, DML semantics, permissions (protocol §3, §4)."""
import time
import uuid

import pytest

from standin.testing import TEST_ROOT_PASSWORD, login, sql, sql_ok


def uniq(prefix="t"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ns(standin, root_token):
    name = uniq("ns")
    sql_ok(standin.url, root_token, f"CREATE NAMESPACE {name}")
    return name


def make_user(url, root, role="user", pw="UserPass-123"):
    name = uniq(role[:3])
    sql_ok(url, root, f"CREATE USER {name} WITH PASSWORD '{pw}' ROLE {role}")
    return name, login(url, name, pw)


def shared_table(url, root, ns, level="PUBLIC"):
    sql_ok(url, root, f"CREATE SHARED TABLE {ns}.ev (id TEXT PRIMARY KEY, writer TEXT NOT NULL, n BIGINT NOT NULL, "
                      f"payload TEXT, created_at TIMESTAMP DEFAULT NOW()) WITH (ACCESS_LEVEL = '{level}')")
    return f"{ns}.ev"


def test_insert_and_streamed_select_shape(standin, root_token, ns):
    t = shared_table(standin.url, root_token, ns)
    r = sql(standin.url, root_token, f"INSERT INTO {t} (id, writer, n, payload) VALUES ($1, $2, $3, $4)",
            ["w1:1", "w1", 1, "hello"])
    assert r.status_code == 200
    b = r.json()
    assert b["status"] == "success" and "error" not in b
    assert b["results"] == [{"row_count": 1, "message": "Inserted 1 row(s)", "as_user": "root"}]
    r = sql(standin.url, root_token, f"SELECT * FROM {t}")
    b = r.json()
    assert list(b) == ["status", "results", "took", "error"] and b["error"] is None
    res = b["results"][0]
    assert [f["name"] for f in res["schema"]] == ["id", "writer", "n", "payload", "created_at", "_seq", "_deleted"]
    assert res["schema"][0] == {"name": "id", "data_type": "Text", "index": 0, "flags": ["pk", "nn", "uq"]}
    assert res["schema"][2]["data_type"] == "BigInt" and res["schema"][4]["data_type"] == "Timestamp"
    assert "flags" not in res["schema"][3]
    row = res["rows"][0]
    assert row[0] == "w1:1" and row[2] == "1" and isinstance(row[5], str) and row[6] is False
    assert isinstance(row[4], int) and abs(row[4] / 1e6 - time.time()) < 60  # microseconds
    seq = int(row[5])
    assert abs(((seq >> 22) + 1704067200000) / 1000 - time.time()) < 60
    assert res["row_count"] == 1 and res["as_user"] == "root"
    r = sql(standin.url, root_token, f"SELECT COUNT(*) AS c FROM {t}")
    assert r.json()["results"][0]["rows"] == [["1"]]


def test_limits_default_and_cap(standin_factory, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[server]\nhost="127.0.0.1"\nport=8080\n[storage]\n[limits]\nmax_query_limit = 100\n'
                   'default_query_limit = 10\n[logging]\n[performance]\n')
    s = standin_factory(config=str(cfg))
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    sql_ok(s.url, tok, "CREATE NAMESPACE a")
    sql_ok(s.url, tok, "CREATE SHARED TABLE a.t (id BIGINT PRIMARY KEY, v TEXT)")
    values = ", ".join(f"({i}, 'v{i}')" for i in range(150, 0, -1))
    sql_ok(s.url, tok, f"INSERT INTO a.t (id, v) VALUES {values}")
    rows = sql_ok(s.url, tok, "SELECT id FROM a.t")["results"][0]["rows"]
    assert len(rows) == 10 and [int(r[0]) for r in rows] == list(range(1, 11))  # default ORDER BY pk
    assert len(sql_ok(s.url, tok, "SELECT * FROM a.t LIMIT 500")["results"][0]["rows"]) == 100
    assert len(sql_ok(s.url, tok, "SELECT * FROM a.t LIMIT 5")["results"][0]["rows"]) == 5
    assert sql_ok(s.url, tok, "SELECT COUNT(*) FROM a.t")["results"][0]["rows"] == [["150"]]


def test_multi_statement_and_errors(standin, root_token, ns):
    t = shared_table(standin.url, root_token, ns)
    b = sql_ok(standin.url, root_token,
               f"INSERT INTO {t} (id, writer, n) VALUES ('a', 'w', 1); INSERT INTO {t} (id, writer, n) VALUES ('b', 'w', 2), "
               f"('c', 'w', 3); UPDATE {t} SET n = 10 WHERE id = 'a'; CREATE NAMESPACE IF NOT EXISTS {ns}")
    msgs = [x.get("message") for x in b["results"]]
    assert msgs[-2:] == ["Inserted 3 row(s)", "Updated 1 row(s)"] and len(msgs) == 3
    r = sql(standin.url, root_token, f"SELECT 1; SELECT 2", [1])
    assert r.status_code == 400 and r.json()["error"]["code"] == "PARAMS_WITH_BATCH"
    r = sql(standin.url, root_token, "   ")
    assert r.status_code == 400 and r.json()["error"]["code"] == "EMPTY_SQL"
    r = sql(standin.url, root_token, f"SELECT * FROM {t} WHERE id = $1", [[1, 2]])
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_PARAMETER"
    r = sql(standin.url, root_token, f"INSERT INTO {t} (id, writer, n) VALUES ('a', 'w', 1)")
    assert r.status_code == 400
    e = r.json()["error"]
    assert e["code"] == "SQL_EXECUTION_ERROR" and e["message"].startswith("Primary key violation")
    r = sql(standin.url, root_token, f"INSERT INTO {t} (id, writer, n) VALUES ('z', 'w', 1); "
                                     f"INSERT INTO {t} (id, writer, n) VALUES ('a', 'w', 1)")
    assert r.status_code == 400 and "Statement 2 failed" in r.json()["error"]["message"]
    r = sql(standin.url, root_token, f"DELETE FROM {t}")
    assert r.status_code == 400 and r.json()["error"]["code"] == "SQL_EXECUTION_ERROR"
    r = sql(standin.url, root_token, f"UPDATE {t} SET id = 'q' WHERE id = 'a'")
    assert r.status_code == 400
    r = sql(standin.url, root_token, "SELECT * FROM nope.nothing")
    assert r.status_code == 400 and r.json()["error"]["code"] == "SQL_EXECUTION_ERROR"
    r = sql(standin.url, root_token, "FLUSH TABLE x.y")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_SQL"
    r = sql(standin.url, root_token, "SELEC nonsense")
    assert r.status_code == 400


def test_update_delete_mvcc(standin, root_token, ns):
    t = shared_table(standin.url, root_token, ns)
    sql_ok(standin.url, root_token, f"INSERT INTO {t} (id, writer, n, payload) VALUES ('k', 'w', 1, 'p')")
    seq1 = int(sql_ok(standin.url, root_token, f"SELECT _seq FROM {t} WHERE id = 'k'")["results"][0]["rows"][0][0])
    sql_ok(standin.url, root_token, f"UPDATE {t} SET n = 2 WHERE id = 'k'")
    seq2 = int(sql_ok(standin.url, root_token, f"SELECT _seq FROM {t} WHERE id = 'k'")["results"][0]["rows"][0][0])
    assert seq2 > seq1
    sql_ok(standin.url, root_token, f"UPDATE {t} SET n = 2 WHERE id = 'k'")  # no-op
    seq3 = int(sql_ok(standin.url, root_token, f"SELECT _seq FROM {t} WHERE id = 'k'")["results"][0]["rows"][0][0])
    assert seq3 == seq2
    b = sql_ok(standin.url, root_token, f"DELETE FROM {t} WHERE id = 'k'")
    assert b["results"][0]["message"] == "Deleted 1 row(s)"
    assert sql_ok(standin.url, root_token, f"SELECT COUNT(*) FROM {t}")["results"][0]["rows"] == [["0"]]
    sql_ok(standin.url, root_token, f"INSERT INTO {t} (id, writer, n) VALUES ('k', 'w', 5)")  # re-insert after delete
    assert sql_ok(standin.url, root_token, f"SELECT n FROM {t}")["results"][0]["rows"] == [["5"]]


def test_stream_table(standin, root_token, ns):
    sql_ok(standin.url, root_token, f"CREATE STREAM TABLE {ns}.ticks (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), v INT) "
                                    f"WITH (TTL_SECONDS = 3600)")
    r = sql(standin.url, root_token, f"CREATE STREAM TABLE {ns}.t2 (id BIGINT PRIMARY KEY, v INT)")
    assert r.status_code == 400  # TTL_SECONDS required
    sql_ok(standin.url, root_token, f"INSERT INTO {ns}.ticks (v) VALUES (1), (2)")
    r = sql(standin.url, root_token, f"UPDATE {ns}.ticks SET v = 3 WHERE v = 1")
    assert r.status_code == 400
    sql_ok(standin.url, root_token, f"DELETE FROM {ns}.ticks WHERE v = 1")
    rows = sql_ok(standin.url, root_token, f"SELECT v FROM {ns}.ticks")["results"][0]["rows"]
    assert rows == [[2]]


def test_user_table_scoping_and_execute_as(standin, root_token, ns):
    sql_ok(standin.url, root_token, f"CREATE USER TABLE {ns}.inbox (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), body TEXT)")
    a, ta = make_user(standin.url, root_token, "user")
    b, tb = make_user(standin.url, root_token, "user")
    svc, tsvc = make_user(standin.url, root_token, "service")
    sql_ok(standin.url, ta, f"INSERT INTO {ns}.inbox (body) VALUES ('from a')")
    sql_ok(standin.url, tb, f"INSERT INTO {ns}.inbox (body) VALUES ('from b')")
    assert sql_ok(standin.url, ta, f"SELECT body FROM {ns}.inbox")["results"][0]["rows"] == [["from a"]]
    assert sql_ok(standin.url, tb, f"SELECT body FROM {ns}.inbox")["results"][0]["rows"] == [["from b"]]
    assert sql_ok(standin.url, root_token, f"SELECT COUNT(*) FROM {ns}.inbox")["results"][0]["rows"] == [["0"]]
    r = sql_ok(standin.url, tsvc, f"EXECUTE AS USER '{a}' (INSERT INTO {ns}.inbox (body) VALUES ('svc for a'))")
    assert r["results"][0]["as_user"] == a
    assert len(sql_ok(standin.url, ta, f"SELECT * FROM {ns}.inbox")["results"][0]["rows"]) == 2
    assert sql_ok(standin.url, tsvc, f"SELECT COUNT(*) FROM {ns}.inbox")["results"][0]["rows"] == [["0"]]
    r = sql(standin.url, ta, f"EXECUTE AS USER '{b}' (INSERT INTO {ns}.inbox (body) VALUES ('x'))")
    assert r.status_code == 403 and r.json()["error"]["code"] == "PERMISSION_DENIED"
    r = sql(standin.url, tsvc, f"EXECUTE AS USER 'root' (SELECT * FROM {ns}.inbox)")
    assert r.status_code == 403
    t = shared_table(standin.url, root_token, ns)
    r = sql(standin.url, tsvc, f"EXECUTE AS USER '{a}' (INSERT INTO {t} (id, writer, n) VALUES ('e', 'w', 1))")
    assert r.status_code == 400 and r.json()["error"]["code"] == "SQL_EXECUTION_ERROR"


def test_shared_permissions_and_system_tables(standin, root_token, ns):
    pub = shared_table(standin.url, root_token, ns, "PUBLIC")
    sql_ok(standin.url, root_token, f"CREATE SHARED TABLE {ns}.priv (id TEXT PRIMARY KEY, v TEXT)")
    u, tu = make_user(standin.url, root_token, "user")
    s, ts = make_user(standin.url, root_token, "service")
    assert sql(standin.url, tu, f"SELECT * FROM {pub}").status_code == 200
    r = sql(standin.url, tu, f"INSERT INTO {pub} (id, writer, n) VALUES ('x', 'w', 1)")
    assert r.status_code == 403 and r.json()["error"]["code"] == "PERMISSION_DENIED"
    assert sql(standin.url, tu, f"SELECT * FROM {ns}.priv").status_code == 403
    assert sql(standin.url, ts, f"SELECT * FROM {ns}.priv").status_code == 200
    assert sql(standin.url, ts, f"INSERT INTO {pub} (id, writer, n) VALUES ('x', 'w', 1)").status_code == 200
    assert sql(standin.url, ts, "SELECT * FROM system.live").status_code == 403
    assert sql(standin.url, tu, "SELECT * FROM system.stats").status_code == 403
    assert sql(standin.url, tu, f"CREATE NAMESPACE {uniq('x')}").status_code == 403
    assert sql(standin.url, tu, "CREATE USER zz WITH PASSWORD 'x12345678' ROLE user").status_code == 403
    assert sql(standin.url, tu, f"CREATE SHARED TABLE {ns}.nope (id TEXT PRIMARY KEY)").status_code == 403
    stats = sql_ok(standin.url, root_token, "SELECT metric_name, metric_value FROM system.stats")["results"][0]["rows"]
    names = {r[0]: r[1] for r in stats}
    for k in ("memory_usage_bytes", "memory_usage_mb", "cpu_usage_percent", "thread_count", "pid",
              "active_connections", "active_subscriptions", "websocket_sessions", "total_live_queries",
              "server_uptime_seconds", "sqlite_db_size_bytes"):
        assert k in names
    assert int(names["pid"]) == standin.pid and int(names["memory_usage_bytes"]) > 10_000_000
    live = sql_ok(standin.url, root_token, "SELECT * FROM system.live")["results"][0]
    assert [f["name"] for f in live["schema"]] == ["live_id", "connection_id", "subscription_id", "namespace_id",
                                                   "table_name", "user_id", "query", "options", "status",
                                                   "created_at", "last_update", "changes", "node_id", "last_ping_at"]


def test_query_rate_limit(standin_factory, tmp_path):
    cfg = tmp_path / "rl.toml"
    cfg.write_text('[server]\nhost="127.0.0.1"\nport=8080\n[storage]\n[limits]\n[logging]\n[performance]\n'
                   '[rate_limit]\nmax_queries_per_sec = 5\n')
    s = standin_factory(config=str(cfg))
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    codes = [sql(s.url, tok, "SELECT 1").status_code for _ in range(12)]
    assert 429 in codes and codes[0] == 200
    r = next(r for r in (sql(s.url, tok, "SELECT 1") for _ in range(10)) if r.status_code == 429)
    assert r.json()["error"] == {"code": "RATE_LIMIT_EXCEEDED", "message": "Too many queries per second. Please slow down."}


def test_flush_and_ddl_messages(standin, root_token, ns):
    t = shared_table(standin.url, root_token, ns)
    sql_ok(standin.url, root_token, f"INSERT INTO {t} (id, writer, n) VALUES ('f', 'w', 1)")
    m = sql_ok(standin.url, root_token, f"STORAGE FLUSH TABLE {t}")["results"][0]["message"]
    assert m.startswith(f"Storage flush started for table '{t}'. Job ID: ")
    m = sql_ok(standin.url, root_token, f"STORAGE FLUSH TABLE {t}")["results"][0]["message"]
    assert m.startswith("Storage flush skipped")
    r = sql(standin.url, root_token, f"CREATE SHARED TABLE {t} (id TEXT PRIMARY KEY)")
    assert r.status_code == 400 and "already exists" in r.json()["error"]["message"]
    assert sql(standin.url, root_token, f"CREATE SHARED TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY)").status_code == 200


def test_restart_persistence(standin_factory):
    s = standin_factory()
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    sql_ok(s.url, tok, "CREATE NAMESPACE p")
    sql_ok(s.url, tok, "CREATE SHARED TABLE p.t (id TEXT PRIMARY KEY, v BIGINT)")
    sql_ok(s.url, tok, "CREATE USER keeper WITH PASSWORD 'KeeperPw-1' ROLE service")
    sql_ok(s.url, tok, "INSERT INTO p.t (id, v) VALUES ('a', 1), ('b', 2)")
    sql_ok(s.url, tok, "DELETE FROM p.t WHERE id = 'b'")
    max_seq = int(sql_ok(s.url, tok, "SELECT MAX(_seq) FROM p.t")["results"][0]["rows"][0][0])
    port = s.port
    s.restart()
    assert s.port == port
    assert sql(s.url, tok, "SELECT 1").status_code == 200  # same JWT secret: token still valid
    assert sql_ok(s.url, tok, "SELECT id, v FROM p.t")["results"][0]["rows"] == [["a", "1"]]
    k = login(s.url, "keeper", "KeeperPw-1")
    sql_ok(s.url, k, "INSERT INTO p.t (id, v) VALUES ('c', 3)")
    seq_c = int(sql_ok(s.url, k, "SELECT _seq FROM p.t WHERE id = 'c'")["results"][0]["rows"][0][0])
    assert seq_c > max_seq
    s.kill()
    s.restart()
    assert sql_ok(s.url, tok, "SELECT COUNT(*) FROM p.t")["results"][0]["rows"] == [["2"]]
