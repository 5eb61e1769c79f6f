"""Stand-in: KalamDB's back-pressure (protocol §5.8): a bounded notification channel per connection; a
change beyond it is dropped, logged at warn level in server.log and not counted in system.live.changes."""
import os
import re
import socket
import subprocess
import sys
import threading
import time

import requests

from standin.testing import TEST_ROOT_PASSWORD, WsClient, login, sql_ok

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = 5000
PER_INSERT = 100  # below the capacity: one statement's changes fit a fast reader's channel at once
PAUSE_S = 2.0


def _payload() -> int:
    """Bytes per row so that the changes are well over what the kernel buffers of the slow socket take
    (the sender's buffer autotunes up to tcp_wmem's maximum, 4 MB here), so the channel must fill."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmax = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        wmax = 4 << 20
    return max(2000, wmax * 5 // 2 // ROWS)


PAYLOAD = _payload()
SMALL_RCVBUF = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
DROP_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z  WARN \S+ kalamdb_live::notification: "
                       r"Notification channel full for subscription_id=(\S+), dropping notification$")


def setup(s):
    tok = login(s.url, "root", TEST_ROOT_PASSWORD)
    sql_ok(s.url, tok, "CREATE NAMESPACE bp")
    sql_ok(s.url, tok, "CREATE SHARED TABLE bp.t (id BIGINT PRIMARY KEY, payload TEXT)")
    return tok


def subscriber(s, tok, sid, **kw):
    c = WsClient(s.ws_url, tok, compress=False, timeout=10.0, **kw)
    assert c.recv()["type"] == "auth_success"
    c.send({"type": "subscribe", "subscription": {"id": sid, "sql": "SELECT * FROM bp.t"}})
    assert c.recv()["type"] == "subscription_ack"
    return c


def read_ids(c, into: list, want: int, limit_s: float):
    """Reads change ids until `want` arrived, 1.5 s passed without one, or limit_s (bounded)."""
    deadline = time.monotonic() + limit_s
    while len(into) < want and time.monotonic() < deadline:
        m = c.recv(timeout=1.5)
        if m is None:
            return
        into.append(int(m["rows"][0]["id"]))


def run_slow_and_fast(s, tok):
    """A slow reader (SO_RCVBUF 4096, not reading for PAUSE_S while ROWS rows are inserted) and a fast
    one on the same server; returns the ids each received and the two clients (still open, so that
    their system.live rows can be read)."""
    slow = subscriber(s, tok, "slow", sockopt=SMALL_RCVBUF)
    fast = subscriber(s, tok, "fast")
    fast_ids: list = []
    t = threading.Thread(target=read_ids, args=(fast, fast_ids, ROWS, 60.0), daemon=True)
    t.start()
    t0 = time.monotonic()
    payload = "x" * PAYLOAD
    for base in range(0, ROWS, PER_INSERT):
        sql_ok(s.url, tok, "INSERT INTO bp.t (id, payload) VALUES "
               + ", ".join(f"({i}, '{payload}')" for i in range(base, base + PER_INSERT)))
    time.sleep(max(0.0, PAUSE_S - (time.monotonic() - t0)))
    slow_ids: list = []
    read_ids(slow, slow_ids, ROWS, 60.0)
    t.join(60.0)
    return slow_ids, fast_ids, (slow, fast)


def figures(s, tok):
    stats = dict(sql_ok(s.url, tok, "SELECT metric_name, metric_value FROM system.stats")["results"][0]["rows"])
    rows = sql_ok(s.url, tok, "SELECT subscription_id, changes FROM system.live")["results"][0]["rows"]
    return stats, {sid: int(n) for sid, n in rows}


def drop_lines(s):
    out = []
    for line in s.log_text().splitlines():
        if "kalamdb_live::notification" in line:
            m = DROP_LINE.match(line)
            assert m, line
            out.append(m.group(1))
    return out


def test_slow_reader_loses_exactly_what_is_logged_and_a_fast_one_nothing(standin_factory):
    s = standin_factory()  # config/loadtest-server.toml: capacity 128
    tok = setup(s)
    slow_ids, fast_ids, clients = run_slow_and_fast(s, tok)
    try:
        stats, changes = figures(s, tok)
    finally:
        for c in clients:
            c.close()
    dropped = drop_lines(s)
    assert set(dropped) == {"slow"}, set(dropped)  # one line per dropped change, all the slow one's
    assert 0 < len(slow_ids) < ROWS and len(slow_ids) + len(dropped) == ROWS, (len(slow_ids), len(dropped))
    assert slow_ids == sorted(slow_ids) and len(set(slow_ids)) == len(slow_ids)
    assert changes == {"slow": len(slow_ids), "fast": ROWS}  # what was sent, drops not counted
    assert fast_ids == list(range(ROWS))
    assert int(stats["standin_notifications_dropped_queue_full"]) == len(dropped)
    assert int(stats["standin_notifications_dropped_fault"]) == 0
    text = s.log_text()
    assert TEST_ROOT_PASSWORD not in text and tok not in text  # no secrets in the log
    assert "Notification channel full" not in s.stderr_tail()  # to the file only: no flood on the pipe


def test_a_channel_large_enough_loses_nothing(standin_factory, tmp_path):
    """The same slow reader with notification_channel_capacity above the rows: no drop, no line."""
    cfg = tmp_path / "big.toml"
    cfg.write_text('[server]\nhost = "127.0.0.1"\nport = 8080\n[storage]\n[limits]\nmax_query_limit = 100000\n'
                   'default_query_limit = 100000\n[logging]\n[performance]\n[rate_limit]\n'
                   'max_queries_per_sec = 100000\nmax_subscriptions_per_user = 100\n'
                   f'[websocket]\nnotification_channel_capacity = {ROWS + 1000}\n')
    s = standin_factory(config=str(cfg))
    tok = setup(s)
    settings = dict((r[0], r[1]) for r in sql_ok(s.url, tok, "SELECT name, value FROM system.settings")
                    ["results"][0]["rows"])
    assert settings["websocket.notification_channel_capacity"] == str(ROWS + 1000)
    slow_ids, fast_ids, clients = run_slow_and_fast(s, tok)
    try:
        stats, changes = figures(s, tok)
    finally:
        for c in clients:
            c.close()
    assert slow_ids == fast_ids == list(range(ROWS))
    assert changes == {"slow": ROWS, "fast": ROWS}
    assert stats["standin_notifications_dropped_queue_full"] == "0"
    assert os.path.isfile(s.log_path) and drop_lines(s) == []


def _start_bare(args, env_logs_dir=None):
    """python -m standin without StandinProcess (which always sets KALAMDB_LOGS_DIR)."""
    env = {k: v for k, v in os.environ.items() if k != "KALAMDB_LOGS_DIR"}
    env.update(KALAMDB_ROOT_PASSWORD=TEST_ROOT_PASSWORD, PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    if env_logs_dir:
        env["KALAMDB_LOGS_DIR"] = str(env_logs_dir)
    p = subprocess.Popen([sys.executable, "-m", "standin", "--port", "0", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    line = p.stdout.readline()
    assert line.startswith("standin listening on "), line
    return p, line.split()[-1]


def _logged_where(tmp_path, args, env_logs_dir=None, seed=9):
    """Where the warning a fault change logs went (the seed tells one start's line from another's)."""
    p, url = _start_bare(args, env_logs_dir)
    try:
        requests.put(url + "/_standin/faults", json={"seed": seed}, timeout=10).raise_for_status()
    finally:
        p.terminate()
        p.wait(10)
        p.stdout.close()
    return sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("server.log")
                  if f"faults now {{'seed': {seed}}}" in f.read_text())


def test_server_log_location_flag_over_env_over_toml(tmp_path):
    cfg = tmp_path / "log.toml"
    cfg.write_text(f'[server]\nhost = "127.0.0.1"\nport = 8080\n[storage]\n[limits]\n'
                   f'[logging]\nlogs_path = "{tmp_path / "toml"}"\n[performance]\n')
    assert _logged_where(tmp_path, ["--config", str(cfg)]) == ["toml/server.log"]
    assert _logged_where(tmp_path, ["--config", str(cfg)], tmp_path / "env", seed=10) == ["env/server.log"]
    assert _logged_where(tmp_path, ["--config", str(cfg), "--logs-dir", str(tmp_path / "flag")],
                         tmp_path / "env", seed=11) == ["flag/server.log"]
    assert _logged_where(tmp_path, ["--config", str(cfg)], seed=12) == ["toml/server.log"]
    line = (tmp_path / "flag" / "server.log").read_text().splitlines()[-1]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z  WARN \S+ standin: faults now", line), line
    # appended across starts, as KalamDB
    assert (tmp_path / "toml" / "server.log").read_text().count("faults now") == 2


def test_no_logs_dir_writes_no_log_file(tmp_path):
    cfg = tmp_path / "nolog.toml"
    cfg.write_text('[server]\nhost = "127.0.0.1"\nport = 8080\n[storage]\n[limits]\n[logging]\n[performance]\n')
    old = os.getcwd()
    os.chdir(tmp_path)  # KalamDB's default would be ./logs: the stand-in does not assume it
    try:
        assert _logged_where(tmp_path, ["--config", str(cfg)]) == []
    finally:
        os.chdir(old)
    assert not (tmp_path / "logs").exists()
