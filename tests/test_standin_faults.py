"""Stand-in: fault injection (docs/architecture.md fault table) and the admin route."""
import time
import uuid

import psutil
import pytest
import requests

from checks.model import seq_commit_ms
from standin.testing import TEST_ROOT_PASSWORD, WsClient, WsClosed, login, sql, sql_ok


@pytest.fixture
def env(standin_factory):
    """A fresh server (faults are global) with a PUBLIC shared table and one root listener helper."""
    s = standin_factory(seed=7)
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    sql_ok(s.url, tok, "CREATE NAMESPACE f")
    sql_ok(s.url, tok, "CREATE SHARED TABLE f.t (id TEXT PRIMARY KEY, writer TEXT NOT NULL, n BIGINT NOT NULL, "
                       "payload TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')")
    return s, tok


def listen(s, tok, sid="s", options=None, compress=False):
    c = WsClient(s.ws_url, tok, compress=compress)
    assert c.recv()["type"] == "auth_success"
    sub = {"id": sid, "sql": "SELECT * FROM f.t"}
    if options is not None:
        sub["options"] = options
    c.send({"type": "subscribe", "subscription": sub})
    assert c.recv()["type"] == "subscription_ack"
    if options is not None:
        assert c.recv()["type"] == "initial_data_batch"
    return c


def write(s, tok, k, n=None):
    sql_ok(s.url, tok, "INSERT INTO f.t (id, writer, n, payload) VALUES ($1, 'w', $2, $3)", [k, n or 1, f"p-{k}"])


def changes_of(s, tok, sid):
    rows = sql_ok(s.url, tok, f"SELECT changes FROM system.live WHERE subscription_id = '{sid}'")["results"][0]["rows"]
    return [int(r[0]) for r in rows]


def test_admin_route(env):
    s, tok = env
    assert s.get_faults() == {}
    assert s.set_faults({"drop": 0.5, "drop_change_type": "delete"}) == {"drop": 0.5, "drop_change_type": "delete"}
    assert s.patch_faults({"duplicate": 1}) == {"drop": 0.5, "drop_change_type": "delete", "duplicate": 1.0}
    assert s.patch_faults({"drop": None}) == {"drop_change_type": "delete", "duplicate": 1.0}
    assert s.set_faults({}) == {}
    r = requests.put(s.url + "/_standin/faults", json={"nonsense": 1})
    assert r.status_code == 400
    r = requests.put(s.url + "/_standin/faults", json={"drop": 2})
    assert r.status_code == 400
    r = requests.get(s.url + "/_standin/faults", headers={"X-Forwarded-For": "203.0.113.5"})
    assert r.status_code == 403
    r = requests.put(s.url + "/_standin/faults", json={"drop": 1}, headers={"X-Forwarded-For": "203.0.113.5"})
    assert r.status_code == 403 and s.get_faults() == {}


def test_cli_faults(standin_factory):
    s = standin_factory(faults={"drop": 0.25, "zombies": True, "reorder": 4})
    assert s.get_faults() == {"drop": 0.25, "zombies": True, "reorder": 4}


def test_drop_only_deletes(env):
    s, tok = env
    s.set_faults({"drop": 1, "drop_change_type": "delete"})
    c = listen(s, tok)
    for i in range(5):
        write(s, tok, f"k{i}")
    sql_ok(s.url, tok, "UPDATE f.t SET n = 9 WHERE id = 'k0'")
    sql_ok(s.url, tok, "DELETE FROM f.t WHERE id = 'k1'")
    sql_ok(s.url, tok, "DELETE FROM f.t WHERE id = 'k2'")
    kinds = [m["change_type"] for m in c.drain()]
    assert kinds == ["insert"] * 5 + ["update"]
    assert changes_of(s, tok, "s") == [6]  # dropped notifications are not counted


def test_drop_fraction_restricted_to_user(env):
    s, tok = env
    sql_ok(s.url, tok, "CREATE USER lis_a WITH PASSWORD 'LisPw-1234' ROLE user")
    s.set_faults({"drop": 1, "drop_user": "lis_"})
    a = listen(s, login(s.url, "lis_a", "LisPw-1234"), "sa")
    r = listen(s, tok, "sr")
    for i in range(4):
        write(s, tok, f"u{i}")
    assert a.drain() == [] and len(r.drain()) == 4
    s.set_faults({"drop": 0.5, "seed": 3})
    for i in range(200):
        write(s, tok, f"v{i}")
    got = len(a.drain(0.5))
    assert 60 < got < 140 and changes_of(s, tok, "sa") == [got]


def test_duplicate_and_corrupt(env):
    s, tok = env
    s.set_faults({"duplicate": 1, "drop_subscription": "dup"})
    d = listen(s, tok, "dup")
    o = listen(s, tok, "other")
    for i in range(3):
        write(s, tok, f"d{i}")
    assert [m["rows"][0]["id"] for m in d.drain()] == ["d0", "d0", "d1", "d1", "d2", "d2"]
    assert len(o.drain()) == 3
    s.set_faults({"corrupt": 1, "drop_change_type": "update"})
    write(s, tok, "c0", 5)
    sql_ok(s.url, tok, "UPDATE f.t SET payload = 'new' WHERE id = 'c0'")
    msgs = o.drain()
    assert msgs[0]["rows"][0]["payload"] == "p-c0"
    assert msgs[1]["change_type"] == "update" and msgs[1]["rows"][0]["payload"] != "new"
    assert msgs[1]["rows"][0]["id"] == "c0" and msgs[1]["rows"][0]["n"] == "5"


def test_reorder_and_delay(env):
    s, tok = env
    s.set_faults({"reorder": 10, "seed": 1})
    c = listen(s, tok)
    for i in range(10):
        write(s, tok, f"r{i}", i + 1)
    ns = [int(m["rows"][0]["n"]) for m in c.drain(0.5)]
    assert sorted(ns) == list(range(1, 11)) and ns != sorted(ns)
    write(s, tok, "tail", 99)  # fewer than N held: released by the flush timer
    assert [m["rows"][0]["id"] for m in c.drain(0.6)] == ["tail"]
    s.set_faults({"delay_ms": 300, "jitter_ms": 50})
    t0 = time.time()
    for i in range(3):
        write(s, tok, f"dl{i}")
    m = c.recv(timeout=2)
    assert time.time() - t0 >= 0.28 and m["rows"][0]["id"] == "dl0"
    assert [x["rows"][0]["id"] for x in c.drain(0.6)] == ["dl1", "dl2"]


def test_disconnect_every_and_stall(env):
    s, tok = env
    s.set_faults({"disconnect_every": 3})
    c = listen(s, tok)
    for i in range(5):
        write(s, tok, f"x{i}")
    code, reason, msgs = c.recv_until_closed(3)
    assert code == 1011 and len(msgs) == 3
    s.set_faults({"stall_subscription": "stuck"})
    st = listen(s, tok, "stuck")
    ok = listen(s, tok, "fine")
    for i in range(4):
        write(s, tok, f"y{i}")
    assert st.drain() == [] and len(ok.drain()) == 4
    assert changes_of(s, tok, "stuck") == [4]


def test_counter_skew_and_zombies(env):
    s, tok = env
    s.set_faults({"counter_skew": 7, "zombies": True})
    c = listen(s, tok, "z")
    write(s, tok, "a")
    assert len(c.drain()) == 1
    assert changes_of(s, tok, "z") == [8]
    c.close()
    time.sleep(0.3)
    assert changes_of(s, tok, "z") == [8]  # zombie stays listed
    stats = dict(sql_ok(s.url, tok, "SELECT metric_name, metric_value FROM system.stats")["results"][0]["rows"])
    assert stats["active_subscriptions"] == "1"
    s.set_faults({})
    assert changes_of(s, tok, "z") == []


def test_slow_select_and_leak(env):
    s, tok = env
    s.set_faults({"slow_select_ms": 300, "leak_bytes_per_change": 1000})
    t0 = time.time()
    sql_ok(s.url, tok, "SELECT * FROM f.t")
    assert time.time() - t0 >= 0.3
    t0 = time.time()
    write(s, tok, "fast")
    write(s, tok, "fast2")
    assert time.time() - t0 < 0.3
    stats = dict(sql_ok(s.url, tok, "SELECT metric_name, metric_value FROM system.stats")["results"][0]["rows"])
    assert stats["standin_leaked_bytes"] == "2000"


def test_cpu_burn(env):
    s, tok = env
    p = psutil.Process(s.pid)
    p.cpu_percent(None)
    s.set_faults({"cpu_burn": 0.6})
    time.sleep(1.0)
    assert p.cpu_percent(None) > 30
    s.set_faults({})


def test_crash_after_writes(env):
    s, tok = env
    s.set_faults({"crash_after_writes": 3})
    write(s, tok, "w1")
    write(s, tok, "w2")
    with pytest.raises(requests.exceptions.ConnectionError):
        write(s, tok, "w3")
    assert s.wait(5) == 70
    s.restart()
    rows = sql_ok(s.url, tok, "SELECT id FROM f.t")["results"][0]["rows"]
    assert rows == [["w1"], ["w2"], ["w3"]]  # committed before the crash
    assert s.get_faults() == {}


def test_delay_is_due_from_the_commit_stamp_and_reports_its_own_timer_error(env):
    """delay_ms = D holds each change until D after its `_seq` time (never before), and system.stats
    says how late the stand-in released them, so a latency benchmark can separate its error."""
    s, tok = env
    c = listen(s, tok)
    s.set_faults({"delay_ms": 150})
    for i in range(5):
        write(s, tok, f"d{i}")
    got = []
    for _ in range(5):
        m = c.recv(timeout=3)
        got.append((time.time() * 1000.0, int(m["rows"][0]["_seq"])))
    for t_ms, seq in got:
        assert 150 - 0.1 <= t_ms - seq_commit_ms(seq) < 150 + 500, (t_ms, seq_commit_ms(seq))
    stats = dict(sql_ok(s.url, tok, "SELECT * FROM system.stats")["results"][0]["rows"])
    assert int(stats["standin_delay_released"]) == 5
    assert 0 <= float(stats["standin_delay_late_ms_p50"]) <= float(stats["standin_delay_late_ms_p99"])
