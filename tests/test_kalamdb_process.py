"""servers.kalamdb.KalamdbProcess: a managed real KalamDB server (the binary, on 127.0.0.1).

Tests that need the real binary skip with "real KalamDB not found at ...; set KALAMDB_BIN" where it
is missing; the harness's own error paths are also checked with tiny fake binaries (shell scripts)."""
from __future__ import annotations

import gc
import os
import re
import signal
import socket
import stat
import time

import pytest

from kalamclient import KalamHttp, LiveConnection
from kalamclient.events import Closed
from kalamclient.errors import AuthFailed
from servers import kalamdb as kmod
from servers.kalamdb import DEFAULT_CONFIG, KalamdbError, KalamdbProcess, find_kalamdb_bin, kalamdb_bin_candidate

pytestmark = pytest.mark.timeout(90)

SHARED_BIN = os.path.normpath(os.path.join(kmod.REPO_ROOT, "..", "shared", "kalamdb", "kalamdb-server"))
SHIPPED_VERSION = "0.4.3-rc.4"  # /work/shared/kalamdb/README.md


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def fake_bin(tmp_path, body: str) -> str:
    path = tmp_path / "fake-kalamdb-server"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def leaked(k: KalamdbProcess, text) -> list[str]:
    """Names of ``k``'s secrets found in ``text`` (the values never reach an assertion message)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [name for name, value in (("root_password", k.root_password), ("jwt_secret", k._jwt_secret))
            if value and value in text]


def read_tree(root: str) -> bytes:
    out = b""
    for d, _, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(d, name), "rb") as f:
                    out += f.read()
            except OSError:
                pass
    return out


# ---------------------------------------------------------------------------------------------------
# finding the binary
# ---------------------------------------------------------------------------------------------------

def test_find_kalamdb_bin_env_and_default(tmp_path, monkeypatch):
    exe = fake_bin(tmp_path, "exit 0")
    monkeypatch.setenv("KALAMDB_BIN", exe)
    assert find_kalamdb_bin() == exe and kalamdb_bin_candidate() == exe
    plain = tmp_path / "not-executable"
    plain.write_text("")
    monkeypatch.setenv("KALAMDB_BIN", str(plain))
    assert find_kalamdb_bin() is None and kalamdb_bin_candidate() == str(plain)
    monkeypatch.setenv("KALAMDB_BIN", str(tmp_path / "missing"))
    assert find_kalamdb_bin() is None
    with pytest.raises(KalamdbError) as info:
        KalamdbProcess()
    assert str(info.value) == f"real KalamDB not found at {tmp_path / 'missing'}; set KALAMDB_BIN"
    monkeypatch.delenv("KALAMDB_BIN")
    assert kalamdb_bin_candidate() == SHARED_BIN
    expected = SHARED_BIN if os.path.isfile(SHARED_BIN) and os.access(SHARED_BIN, os.X_OK) else None
    assert find_kalamdb_bin() == expected


# ---------------------------------------------------------------------------------------------------
# the harness's failure paths (fake binaries: no real server needed)
# ---------------------------------------------------------------------------------------------------

def test_bad_config_path_fails_at_once(tmp_path):
    exe = fake_bin(tmp_path, "sleep 30")
    missing = str(tmp_path / "nope.toml")
    k = KalamdbProcess(exe, missing)
    try:
        t0 = time.monotonic()
        with pytest.raises(KalamdbError) as info:
            k.start()
        assert time.monotonic() - t0 < 0.5
        assert str(info.value) == f"KalamDB config file not found: {missing}"
        assert k.proc is None  # nothing was started
    finally:
        k.close()


def test_early_exit_reports_code_and_redacted_log_tail(tmp_path):
    # prints both secrets (as a careless server might) and exits: the error quotes the output, redacted
    exe = fake_bin(tmp_path, 'echo "boot root=$KALAMDB_ROOT_PASSWORD jwt=$KALAMDB_JWT_SECRET"; '
                             'echo "FATAL: something is wrong" >&2; exit 3')
    k = KalamdbProcess(exe, DEFAULT_CONFIG)
    try:
        with pytest.raises(KalamdbError) as info:
            k.start()
        msg = str(info.value)
        assert msg.startswith(f"kalamdb-server exited with code 3 during startup (config {DEFAULT_CONFIG})")
        assert "boot root=*** jwt=***" in msg and "FATAL: something is wrong" in msg
        assert leaked(k, msg) == []
        # the console file itself holds what the child printed (the secrets were really there)
        with open(k.console_path) as f:
            assert leaked(k, f.read()) == ["root_password", "jwt_secret"]
    finally:
        k.close()


def test_not_healthy_within_timeout_is_killed(tmp_path):
    exe = fake_bin(tmp_path, "exec sleep 60")
    k = KalamdbProcess(exe, DEFAULT_CONFIG, startup_timeout=1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(KalamdbError) as info:
            k.start()
        assert 1.0 <= time.monotonic() - t0 < 4.0
        assert str(info.value).startswith(f"kalamdb-server did not become healthy at {k.url}/health within 1s")
        assert k.returncode == -signal.SIGKILL and not alive(k.pid)
    finally:
        k.close()


def test_health_answered_by_another_process_is_not_taken_for_ours(tmp_path, standin):
    # the stand-in answers /health 200 on the port, but the "server" we started does not listen there
    exe = fake_bin(tmp_path, "exec sleep 60")
    k = KalamdbProcess(exe, DEFAULT_CONFIG, port=standin.port, startup_timeout=1.0)
    try:
        with pytest.raises(KalamdbError) as info:
            k.start()
        assert str(info.value).startswith(f"kalamdb-server did not become healthy at {standin.url}/health within 1s")
    finally:
        k.close()


def test_non_loopback_host_and_short_secret_are_refused(tmp_path):
    exe = fake_bin(tmp_path, "exit 0")
    with pytest.raises(ValueError, match="loopback only"):
        KalamdbProcess(exe, host="0.0.0.0")
    with pytest.raises(ValueError) as info:
        KalamdbProcess(exe, jwt_secret="short-secret")
    assert "short-secret" not in str(info.value)


# ---------------------------------------------------------------------------------------------------
# the real server
# ---------------------------------------------------------------------------------------------------

def test_start_health_root_login_version(kalamdb_bin):
    with KalamdbProcess(kalamdb_bin) as k:
        assert k.kind == "kalamdb" and k.config == DEFAULT_CONFIG
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", k.url) and k.ws_url == k.url.replace("http", "ws") + "/v1/ws"
        assert k.pid == k.proc.pid and k.running
        health = k.health()
        assert health["status"] == "healthy" and health["api_version"] == "v1"
        version = k.version()
        assert version == health["version"]
        assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", version)
        if os.path.realpath(kalamdb_bin) == os.path.realpath(SHARED_BIN):
            assert version == SHIPPED_VERSION
        http = KalamHttp(k.url, timeout=10)
        tokens = http.login("root", k.root_password)
        assert (tokens.user, tokens.role) == ("root", "system")
        assert http.query("SELECT 1 AS one").scalar_int() == 1
        with pytest.raises(AuthFailed) as info:
            KalamHttp(k.url, timeout=10).login("root", k.root_password + "x")
        assert info.value.status == 401
        # the child runs in its own session: a terminal's Ctrl-C (SIGINT to our group) misses it
        assert os.getsid(k.pid) == k.pid and os.getpgid(k.pid) != os.getpgid(0)
        t0 = time.monotonic()
        assert k.stop() == 0 and not k.running  # SIGINT: KalamDB's own clean shutdown...
        assert time.monotonic() - t0 < 3.0  # ...at once, although `http` still holds a keep-alive connection
        http.close()


def test_stop_signals(kalamdb_bin):
    with KalamdbProcess(kalamdb_bin) as k:
        assert k.stop_signal == signal.SIGINT
        http = KalamHttp(k.url, timeout=10)
        http.login("root", k.root_password)
        conn = LiveConnection(k.url, http.access_token, ping_interval=None, connect_timeout=10)
        conn.connect()
        t0 = time.monotonic()
        assert k.stop() == 0 and time.monotonic() - t0 < 3.0
        ev = conn.recv(3)
        assert type(ev) is Closed
        conn.close()
        http.close()
    # SIGTERM (actix's graceful stop) is clean and quick with no connection open
    with KalamdbProcess(kalamdb_bin, stop_signal=signal.SIGTERM) as k:
        t0 = time.monotonic()
        assert k.stop() == 0 and time.monotonic() - t0 < 3.0


def test_random_secrets_only_in_environment(kalamdb_bin, monkeypatch):
    monkeypatch.setenv("KALAMDB_ROOT_PASSWORD", "Inherited-Root-Pw-1")  # a stray variable is not passed on
    with KalamdbProcess(kalamdb_bin, log_level="debug") as a, KalamdbProcess(kalamdb_bin) as b:
        assert a.root_password != b.root_password and a._jwt_secret != b._jwt_secret
        assert len(a.root_password) >= 20 and len(a._jwt_secret) >= 32
        KalamHttp(a.url, timeout=10).login("root", a.root_password)
        with pytest.raises(AuthFailed):
            KalamHttp(a.url, timeout=10).login("root", "Inherited-Root-Pw-1")
        with open(f"/proc/{a.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        assert leaked(a, cmdline) == []
        assert cmdline.split(b"\0")[:-1] == [a.binary.encode(), a.config.encode()]
        with open(f"/proc/{a.pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        has_root = b"KALAMDB_ROOT_PASSWORD=" + a.root_password.encode() in environ
        has_jwt = b"KALAMDB_JWT_SECRET=" + a._jwt_secret.encode() in environ
        assert (has_root, has_jwt) == (True, True)
        assert b"KALAMDB_SERVER_PORT=%d" % a.port in environ
        for text in (repr(a), str(a), repr(vars(a).get("env"))):
            assert leaked(a, text) == []
        a.version()  # a login at debug level
        a.stop()
        logs = read_tree(a.logs_dir)
        assert b"Password authentication succeeded" in logs  # the debug log was written...
        assert leaked(a, logs) == []  # ...without them


def test_restart_keeps_data_port_and_password(kalamdb_bin):
    with KalamdbProcess(kalamdb_bin) as k:
        ns = "kp" + os.urandom(4).hex()
        k.sql(f"CREATE NAMESPACE {ns}")
        k.sql(f"CREATE SHARED TABLE {ns}.t (id TEXT PRIMARY KEY, n BIGINT)")
        k.sql(f"INSERT INTO {ns}.t (id, n) VALUES ('a', 1)")
        port, pid = k.port, k.pid
        for kill in (False, True):
            k.restart(kill=kill)
            assert k.port == port and k.pid != pid and k.running
            pid = k.pid
            http = KalamHttp(k.url, timeout=10)
            http.login("root", k.root_password)  # root was created on the first start only
            assert http.query(f"SELECT id, n FROM {ns}.t").rows == [["a", "1"]]
        assert k.starts == 3
        assert k.kill() == -signal.SIGKILL


def test_temp_dirs_removed_on_close_unless_keep_log(kalamdb_bin):
    k = KalamdbProcess(kalamdb_bin)
    k.start()
    base, pid = k.base_dir, k.pid
    assert sorted(os.listdir(base)) == ["data", "logs"]  # nothing written beside them (cwd is base)
    assert os.path.isdir(os.path.join(k.data_dir, "rocksdb"))
    assert os.path.isfile(k.log_path) and os.path.dirname(k.log_path) == k.logs_dir
    k.close()
    assert not os.path.exists(base) and not alive(pid)
    k.close()  # idempotent

    k = KalamdbProcess(kalamdb_bin, keep_log=True)
    try:
        with k:
            k.version()
        assert not os.path.exists(k.data_dir)
        assert os.listdir(k.base_dir) == ["logs"] and os.path.isfile(k.log_path)
        assert os.path.isfile(k.console_path)
    finally:
        import shutil
        shutil.rmtree(k.base_dir, ignore_errors=True)


def test_collected_server_does_not_linger(kalamdb_bin):
    k = KalamdbProcess(kalamdb_bin).start()
    pid, base = k.pid, k.base_dir
    del k
    gc.collect()
    assert not alive(pid) and not os.path.exists(base)
    k = KalamdbProcess(kalamdb_bin, keep_log=True).start()
    pid, base, data, log = k.pid, k.base_dir, k.data_dir, k.log_path
    del k
    gc.collect()
    try:
        assert not alive(pid) and not os.path.exists(data) and os.path.isfile(log)
    finally:
        import shutil
        shutil.rmtree(base, ignore_errors=True)


def test_without_root_password_needs_setup_and_reports_version(kalamdb_bin):
    with KalamdbProcess(kalamdb_bin, root_password=None, env={"KALAMDB_ROOT_PASSWORD": "Caller-Root-Pw-1"}) as k:
        # the env argument wins over the harness's own variables: the caller's root password is used
        assert KalamHttp(k.url, timeout=10).login("root", "Caller-Root-Pw-1").role == "system"
        assert k.version() == k.health()["version"]
        assert k.redact("pw=Caller-Root-Pw-1") == "pw=***"
    with KalamdbProcess(kalamdb_bin, root_password=None) as k:
        assert KalamHttp(k.url, timeout=10).status()["needs_setup"] is True
        assert k.version() == k.health()["version"]
        with pytest.raises(KalamdbError, match="without a root password"):
            k.root_token()


def test_taken_fixed_port_is_a_clear_error(kalamdb_bin):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        k = KalamdbProcess(kalamdb_bin, port=port, startup_timeout=1.0)
        try:
            with pytest.raises(KalamdbError) as info:
                k.start()
            msg = str(info.value)
            assert msg.startswith(f"port {port} stayed in use for 1s; log tail:")
            assert "already in use" in msg and leaked(k, msg) == []
        finally:
            k.close()


def test_invalid_config_reports_server_message(kalamdb_bin, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nhost = "127.0.0.1"\nport = 8080\n[storage]\n[limits]\n[logging]\n')
    k = KalamdbProcess(kalamdb_bin, str(bad))
    try:
        t0 = time.monotonic()
        with pytest.raises(KalamdbError) as info:
            k.start()
        assert time.monotonic() - t0 < 5
        msg = str(info.value)
        assert msg.startswith(f"kalamdb-server exited with code 1 during startup (config {bad})")
        assert "missing field `performance`" in msg
    finally:
        k.close()
