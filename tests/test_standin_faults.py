"""Stand-in: fault injection (docs/architecture.md fault table) and the admin route."""
import threading
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


# ------------------------------------------------------------------------ scope and exact counts
def listener(s, tok, sids=("events", "chat")):
    """One connection with several live-only subscriptions on f.t (like a load-test listener)."""
    c = WsClient(s.ws_url, tok, compress=False)
    assert c.recv()["type"] == "auth_success"
    for sid in sids:
        c.send({"type": "subscribe", "subscription": {"id": sid, "sql": "SELECT * FROM f.t"}})
        assert c.recv()["type"] == "subscription_ack"
    return c


def by_sub(msgs):
    out = {}
    for m in msgs:
        out.setdefault(m["subscription_id"], []).append(m["rows"][0]["id"])
    return out


def stats_of(s, tok):
    return dict(sql_ok(s.url, tok, "SELECT metric_name, metric_value FROM system.stats")["results"][0]["rows"])


def live_changes(s, tok):
    rows = sql_ok(s.url, tok, "SELECT user_id, subscription_id, changes FROM system.live")["results"][0]["rows"]
    return {(u, sid): int(n) for u, sid, n in rows}


@pytest.fixture
def two_listeners(env):
    """lis_a and lis_b, each one connection with subscriptions `events` and `chat` (same ids for both)."""
    s, tok = env
    for u in ("lis_a", "lis_b"):
        sql_ok(s.url, tok, f"CREATE USER {u} WITH PASSWORD 'LisPw-1234' ROLE user")
    a = listener(s, login(s.url, "lis_a", "LisPw-1234"))
    b = listener(s, login(s.url, "lis_b", "LisPw-1234"))
    return s, tok, a, b


def test_scope_limits_drop_and_stall_to_one_subscription_of_one_listener(two_listeners):
    s, tok, a, b = two_listeners
    assert s.set_faults({"drop": 1, "scope": "lis_a/events"}) == {"drop": 1.0, "scope": "lis_a/events"}
    for i in range(4):
        write(s, tok, f"k{i}")
    keys = [f"k{i}" for i in range(4)]
    assert by_sub(a.drain()) == {"chat": keys}  # lis_a's events lost every change, its chat none
    assert by_sub(b.drain()) == {"events": keys, "chat": keys}  # same subscription ids, other user
    assert stats_of(s, tok)["standin_notifications_dropped_fault"] == "4"
    assert live_changes(s, tok) == {("lis_a", "events"): 0, ("lis_a", "chat"): 4,
                                    ("lis_b", "events"): 4, ("lis_b", "chat"): 4}
    s.set_faults({"stall_subscription": "chat", "scope": "lis_b/chat"})
    for i in range(3):
        write(s, tok, f"m{i}")
    keys = [f"m{i}" for i in range(3)]
    assert by_sub(a.drain()) == {"events": keys, "chat": keys}
    assert by_sub(b.drain()) == {"events": keys}
    assert live_changes(s, tok)[("lis_b", "chat")] == 7  # stalled: counted, never sent
    s.set_faults({"stall_subscription": "chat", "scope": "lis_b/events"})  # scope and the fault's id disagree
    write(s, tok, "q0")
    assert by_sub(a.drain()) == by_sub(b.drain()) == {"events": ["q0"], "chat": ["q0"]}


def test_scope_alone_does_nothing_and_user_prefix_scope(two_listeners):
    s, tok, a, b = two_listeners
    s.set_faults({"scope": "lis_a/events"})
    write(s, tok, "n0")
    assert by_sub(a.drain()) == by_sub(b.drain()) == {"events": ["n0"], "chat": ["n0"]}
    s.set_faults({"duplicate": 1, "scope": "lis_*/chat"})
    write(s, tok, "d0")
    assert by_sub(a.drain()) == by_sub(b.drain()) == {"events": ["d0"], "chat": ["d0", "d0"]}
    st = stats_of(s, tok)
    assert st["standin_notifications_duplicated_fault"] == "2" and st["standin_notifications_dropped_fault"] == "0"
    s.set_faults({"counter_skew": 5, "scope": "lis_b/events"})
    assert live_changes(s, tok) == {("lis_a", "events"): 2, ("lis_a", "chat"): 3,
                                    ("lis_b", "events"): 2 + 5, ("lis_b", "chat"): 3}


def test_scope_limits_reorder_delay_and_disconnect(two_listeners):
    s, tok, a, b = two_listeners
    s.set_faults({"reorder": 6, "seed": 2, "scope": "lis_b/chat"})
    for i in range(6):
        write(s, tok, f"r{i}")
    keys = [f"r{i}" for i in range(6)]
    assert by_sub(a.drain()) == {"events": keys, "chat": keys}
    got = by_sub(b.drain(0.5))
    assert got["events"] == keys and sorted(got["chat"]) == keys and got["chat"] != keys
    s.set_faults({"delay_ms": 400, "scope": "lis_a/chat"})
    t0 = time.time()
    write(s, tok, "late")
    assert by_sub(a.drain(0.2)) == {"events": ["late"]} and by_sub(b.drain(0.2)) == {"events": ["late"],
                                                                                     "chat": ["late"]}
    m = a.recv(timeout=2)
    assert m["subscription_id"] == "chat" and time.time() - t0 >= 0.39
    s.set_faults({"disconnect_every": 2, "scope": "lis_a/events"})
    write(s, tok, "x0")  # two change messages on lis_a's connection (events, chat): it is closed after them
    code, _, msgs = a.recv_until_closed(3)
    assert code == 1011 and len(msgs) == 2
    assert len(b.drain()) == 2  # lis_b's connection carries no lis_a/events: untouched


def test_drop_count_drops_exactly_the_next_n(env):
    s, tok = env
    c = listen(s, tok, "s")
    s.set_faults({"drop_count": 3})
    assert stats_of(s, tok)["standin_drop_count_left"] == "3"
    for i in range(10):
        write(s, tok, f"k{i}")
    assert [m["rows"][0]["id"] for m in c.drain()] == [f"k{i}" for i in range(3, 10)]
    st = stats_of(s, tok)
    assert st["standin_notifications_dropped_fault"] == "3" and st["standin_drop_count_left"] == "0"
    assert changes_of(s, tok, "s") == [7]
    s.patch_faults({"seed": 5})  # another key: the spent count is not re-armed
    write(s, tok, "after")
    assert [m["rows"][0]["id"] for m in c.drain()] == ["after"]
    s.patch_faults({"drop_count": 3})  # named again: re-armed
    assert stats_of(s, tok)["standin_drop_count_left"] == "3"
    s.patch_faults({"drop_count": None})
    assert stats_of(s, tok)["standin_drop_count_left"] == "0"
    write(s, tok, "none")
    assert [m["rows"][0]["id"] for m in c.drain()] == ["none"]
    assert stats_of(s, tok)["standin_notifications_dropped_fault"] == "3"


def test_duplicate_and_corrupt_counts_are_exact_and_restricted(env):
    s, tok = env
    c = listen(s, tok, "s")
    s.set_faults({"duplicate_count": 2, "corrupt_count": 1, "drop_change_type": "insert"})
    write(s, tok, "a")
    write(s, tok, "b")
    sql_ok(s.url, tok, "UPDATE f.t SET payload = 'u' WHERE id = 'a'")  # not an insert: no count spent
    write(s, tok, "c")
    msgs = c.drain()
    assert [(m["change_type"], m["rows"][0]["id"]) for m in msgs] == [
        ("insert", "a"), ("insert", "a"), ("insert", "b"), ("insert", "b"), ("update", "a"), ("insert", "c")]
    assert msgs[0]["rows"][0]["payload"] != "p-a" and msgs[1] == msgs[0]  # the corrupted one, twice
    assert msgs[2]["rows"][0]["payload"] == "p-b" and msgs[4]["rows"][0]["payload"] == "u"
    st = stats_of(s, tok)
    assert st["standin_notifications_duplicated_fault"] == "2" and st["standin_notifications_corrupted_fault"] == "1"
    assert st["standin_duplicate_count_left"] == "0" and st["standin_corrupt_count_left"] == "0"
    assert changes_of(s, tok, "s") == [6]  # both copies count


def test_drop_count_in_scope_counts_only_that_subscription(two_listeners):
    s, tok, a, b = two_listeners
    s.set_faults({"drop_count": 2, "scope": "lis_b/events"})
    for i in range(4):
        write(s, tok, f"k{i}")
    keys = [f"k{i}" for i in range(4)]
    assert by_sub(a.drain()) == {"events": keys, "chat": keys}
    assert by_sub(b.drain()) == {"events": keys[2:], "chat": keys}
    assert stats_of(s, tok)["standin_notifications_dropped_fault"] == "2"


def test_scope_and_counts_parse_on_both_paths(standin_factory):
    s = standin_factory(faults={"scope": "h03_run/events", "drop_count": 2, "duplicate_count": "1"})
    assert s.get_faults() == {"scope": "h03_run/events", "drop_count": 2, "duplicate_count": 1}
    assert s.set_faults({"scope": "*/a/b", "corrupt_count": 4}) == {"scope": "*/a/b", "corrupt_count": 4}
    for bad in ({"scope": "events"}, {"scope": "/events"}, {"scope": "u/"}, {"scope": "a*b/x"},
                {"drop_count": -1}, {"drop_count": 1.5}, {"corrupt_count": "x"}):
        r = requests.put(s.url + "/_standin/faults", json=bad)
        assert r.status_code == 400, bad
        assert r.json()["message"].startswith("bad value for "), r.json()
    assert s.get_faults() == {"scope": "*/a/b", "corrupt_count": 4}


@pytest.mark.parametrize("fault,words", [("scope=events", "bad value for scope: must be USER/SUBSCRIPTION_ID"),
                                         ("drop_count=-2", "bad value for drop_count: must be >= 0")])
def test_bad_scope_or_count_on_the_command_line_fails_at_start(fault, words):
    from standin.testing import StandinError, StandinProcess

    k, v = fault.split("=")
    p = StandinProcess(faults={k: v}, config=None)
    with pytest.raises(StandinError) as ei:
        p.start()
    assert ei.value.returncode == 2 and words in str(ei.value)
    p.close()


# ------------------------------------------------------------------------ crash_at
def wait_exit(s, limit: float):
    deadline = time.monotonic() + limit
    while s.returncode is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return s.returncode


def test_crash_at_set_by_the_admin_route_and_restart(env):
    s, tok = env
    write(s, tok, "before")
    t0 = time.monotonic()  # before the request: the timer starts after this
    s.set_faults({"crash_at": 1.0})
    left = float(stats_of(s, tok)["standin_crash_in_s"])
    assert 0.5 < left <= 1.0
    assert wait_exit(s, 10) == 70
    took = time.monotonic() - t0
    assert 1.0 <= took < 3.0, took
    s.restart()  # set at run time: not a start-up fault, so the new process runs clean
    assert s.get_faults() == {}
    assert "standin_crash_in_s" not in stats_of(s, tok)
    assert sql_ok(s.url, tok, "SELECT id FROM f.t")["results"][0]["rows"] == [["before"]]
    write(s, tok, "after")
    time.sleep(1.3)
    assert s.returncode is None


def test_crash_at_removed_or_zero_does_nothing_and_other_keys_do_not_rearm_it(env):
    s, tok = env
    s.set_faults({"crash_at": 0.6})
    s.patch_faults({"crash_at": None})
    s.set_faults({"crash_at": 0})  # 0: off
    assert "standin_crash_in_s" not in stats_of(s, tok)
    time.sleep(1.0)
    assert s.returncode is None
    t0 = time.monotonic()
    s.set_faults({"crash_at": 2.0})
    time.sleep(1.0)
    s.patch_faults({"seed": 4})  # crash_at not named: its clock goes on (re-armed, it would be >= 3.0 s)
    assert wait_exit(s, 10) == 70
    assert 2.0 <= time.monotonic() - t0 < 2.9


def test_crash_at_on_the_command_line_counts_from_listening(standin_factory):
    s = standin_factory(faults={"crash_at": 1.5})
    t0 = time.monotonic()
    assert s.get_faults() == {"crash_at": 1.5}
    assert wait_exit(s, 10) == 70
    assert 1.3 <= time.monotonic() - t0 < 3.0
    s.restart()  # the start-up faults again: it crashes again
    assert wait_exit(s, 10) == 70
    s.restart(faults={})
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    time.sleep(2.0)
    assert s.returncode is None and s.get_faults() == {}
    assert "standin_crash_in_s" not in stats_of(s, tok)


# ------------------------------------------------------------------------ handover_reorder
def resume(s, tok, sid, frm):
    """A new connection resuming `sid` from `frm` (snapshot rows > frm, then live)."""
    c = WsClient(s.ws_url, tok, compress=False)
    assert c.recv()["type"] == "auth_success"
    c.send({"type": "subscribe", "subscription": {"id": sid, "sql": "SELECT * FROM f.t",
                                                  "options": {"batch_size": 100, "from": frm}}})
    assert c.recv()["type"] == "subscription_ack"
    b = c.recv()
    assert b["type"] == "initial_data_batch" and b["batch_control"]["status"] == "ready"
    return c, [r["id"] for r in b["rows"]]


def insert_many(s, tok, keys):
    sql_ok(s.url, tok, "INSERT INTO f.t (id, writer, n, payload) VALUES "
           + ", ".join(f"('{k}', 'w', {i + 1}, 'p-{k}')" for i, k in enumerate(keys)))


def recv_timed(c, n):
    out = []
    for _ in range(n):
        m = c.recv(timeout=3)
        assert m is not None, out
        out.append((time.monotonic(), m["rows"][0]["id"], int(m["rows"][0]["_seq"])))
    return out


def max_seq(s, tok):
    return int(sql_ok(s.url, tok, "SELECT MAX(_seq) FROM f.t")["results"][0]["rows"][0][0])


def test_handover_reorder_swaps_the_first_two_live_changes_of_the_first_n_resumes(env):
    s, tok = env
    fresh = listen(s, tok, "fresh", options={"batch_size": 100})  # epoch 0: a snapshot, no `from`
    write(s, tok, "a0")
    cut = max_seq(s, tok)
    s.set_faults({"handover_reorder": 1, "handover_gap_ms": 60})
    assert stats_of(s, tok)["standin_handover_reorder_left"] == "1"
    c, snap = resume(s, tok, "r", cut)
    assert snap == [] and stats_of(s, tok)["standin_handover_reorder_left"] == "0"
    got = []
    reader = threading.Thread(target=lambda: got.extend(recv_timed(c, 4)), daemon=True)
    reader.start()  # already waiting when the changes arrive: the arrival gap is measured, not our delay
    insert_many(s, tok, ["k1", "k2", "k3", "k4"])
    reader.join(10)
    assert [k for _, k, _ in got] == ["k2", "k1", "k3", "k4"]
    assert got[1][2] < got[0][2] and got[2][2] > got[0][2]  # exactly one pair out of _seq order
    assert 0.03 <= got[1][0] - got[0][0] < 1.0, got  # the lower one ~60 ms after the higher one
    assert c.drain(0.3) == []
    assert [m["rows"][0]["id"] for m in fresh.drain()] == ["a0", "k1", "k2", "k3", "k4"]  # not resumed: in order
    st = stats_of(s, tok)
    assert st["standin_handover_reordered"] == "1"
    assert changes_of(s, tok, "r") == [4]
    c2, _ = resume(s, tok, "r2", cut)  # the count is spent: a second resume is in order
    insert_many(s, tok, ["m1", "m2", "m3"])
    assert [m["rows"][0]["id"] for m in c2.drain()] == ["m1", "m2", "m3"]
    assert stats_of(s, tok)["standin_handover_reordered"] == "1"


def test_handover_reorder_in_scope_and_a_lone_change(env):
    s, tok = env
    sql_ok(s.url, tok, "CREATE USER lis_a WITH PASSWORD 'LisPw-1234' ROLE user")
    ta = login(s.url, "lis_a", "LisPw-1234")
    write(s, tok, "a0")
    cut = max_seq(s, tok)
    s.set_faults({"handover_reorder": 1, "scope": "lis_a/events"})
    other, _ = resume(s, tok, "events", cut)  # root's events: out of scope, the count is not spent
    mine_chat, _ = resume(s, ta, "chat", cut)  # lis_a's chat: out of scope
    assert stats_of(s, tok)["standin_handover_reorder_left"] == "1"
    mine, _ = resume(s, ta, "events", cut)
    assert stats_of(s, tok)["standin_handover_reorder_left"] == "0"
    insert_many(s, tok, ["k1", "k2"])
    assert [k for _, k, _ in recv_timed(mine, 2)] == ["k2", "k1"]
    assert [m["rows"][0]["id"] for m in other.drain()] == ["k1", "k2"]
    assert [m["rows"][0]["id"] for m in mine_chat.drain()] == ["k1", "k2"]
    s.set_faults({"handover_reorder": 1})
    lone, _ = resume(s, tok, "lone", max_seq(s, tok))
    t0 = time.monotonic()
    write(s, tok, "only")  # no second change follows: it leaves alone after the flush time, unswapped
    m = lone.recv(timeout=3)
    assert m["rows"][0]["id"] == "only" and 0.15 <= time.monotonic() - t0 < 2.0
    assert stats_of(s, tok)["standin_handover_reordered"] == "1"
    write(s, tok, "next")
    assert [m["rows"][0]["id"] for m in lone.drain()] == ["next"]


def test_handover_reorder_parses_on_both_paths(standin_factory):
    s = standin_factory(faults={"handover_reorder": "2", "handover_gap_ms": "7.5"})
    assert s.get_faults() == {"handover_reorder": 2, "handover_gap_ms": 7.5}
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    assert stats_of(s, tok)["standin_handover_reorder_left"] == "2"
    for bad in ({"handover_reorder": -1}, {"handover_reorder": "x"}, {"handover_gap_ms": -1}):
        assert requests.put(s.url + "/_standin/faults", json=bad).status_code == 400, bad
