"""Start the stand-in as a subprocess from Python (tests, benchmarks, the load test's self-check).

    from standin.testing import StandinProcess, TEST_ROOT_PASSWORD
    with StandinProcess(faults={"drop": 0.1}, config="config/loadtest-server.toml") as s:
        s.url, s.ws_url, s.pid, s.set_faults({...}), s.patch_faults({...}), s.get_faults(), s.restart()
        s.log_path, s.log_text()   # the server log, <logs_dir>/server.log (default: <data_dir>/logs)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque

TEST_ROOT_PASSWORD = "StandinRoot-Test-Pw1"
TEST_JWT_SECRET = "standin-test-jwt-secret-at-least-32-characters"
_LINE = re.compile(r"^standin listening on (http://(\S+):(\d+))\s*$")


class StandinError(RuntimeError):
    """A stand-in that could not be started or answered wrongly. ``returncode`` and ``stderr`` are set
    when the child exited before it listened (its own message is in ``stderr`` and in ``str()``)."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class StandinProcess:
    def __init__(self, faults: dict | None = None, config: str | None = None, data_dir: str | None = None,
                 env: dict | None = None, root_password: str | None = TEST_ROOT_PASSWORD, port: int = 0,
                 extra_args=(), host: str = "127.0.0.1", seed: int | None = None, startup_timeout: float = 20.0,
                 jwt_secret: str | None = TEST_JWT_SECRET, logs_dir: str | None = None):
        self.faults = dict(faults or {})
        self.config = config
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="standin-data-")
        self.env = dict(env or {})
        # the server log (KalamDB's KALAMDB_LOGS_DIR → <dir>/server.log): beside the data by default, so it
        # goes with a temporary data dir; env={"KALAMDB_LOGS_DIR": ...} or logs_dir= put it elsewhere
        self.logs_dir = self.env.get("KALAMDB_LOGS_DIR") or logs_dir or os.path.join(self.data_dir, "logs")
        self.root_password = root_password
        self.jwt_secret = jwt_secret
        self.port = port
        self.host = host
        self.seed = seed
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._stderr_tail: deque = deque(maxlen=60)
        self._stderr_thread = None
        self._started_once = False  # a failed first start removes the temp data dir; a failed restart keeps it

    # ------------------------------------------------------------------ properties
    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/v1/ws"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    @property
    def log_path(self) -> str:
        """The server log the child writes (appended across restarts)."""
        return os.path.join(self.logs_dir, "server.log")

    def log_text(self) -> str:
        """The server log so far ('' before the child created it)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr_tail(self) -> str:
        return "".join(self._stderr_tail)

    # ------------------------------------------------------------------ lifecycle
    def _cmd(self, port: int):
        cmd = [sys.executable, "-m", "standin", "--host", self.host, "--port", str(port), "--data-dir", self.data_dir]
        if self.config:
            cmd += ["--config", str(self.config)]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        for k, v in self.faults.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            cmd += ["--fault", f"{k}={v}"]
        cmd += list(self.extra_args)
        return cmd

    def _env(self):
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if self.root_password is not None:
            env["KALAMDB_ROOT_PASSWORD"] = self.root_password
        else:
            env.pop("KALAMDB_ROOT_PASSWORD", None)
        if self.jwt_secret is not None:
            env.setdefault("KALAMDB_JWT_SECRET", self.jwt_secret)
        env.update({k: str(v) for k, v in self.env.items()})
        env["KALAMDB_LOGS_DIR"] = self.logs_dir
        return env

    def start(self, port: int | None = None):
        if self.proc is not None and self.proc.poll() is None:
            raise StandinError("already running")
        port = self.port if port is None else port
        self._stderr_tail.clear()
        # its own session: a terminal's Ctrl-C (SIGINT to the foreground process group) reaches the owner
        # only, which then stops the stand-in itself (after reading what it still needs from it)
        self.proc = subprocess.Popen(self._cmd(port), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self._env(), text=True, bufsize=1, start_new_session=True)
        t = threading.Thread(target=self._pump_stderr, args=(self.proc,), daemon=True)
        t.start()
        self._stderr_thread = t
        result: dict = {}

        def read_line(p=self.proc):
            result["line"] = p.stdout.readline()

        rt = threading.Thread(target=read_line, daemon=True)
        rt.start()
        rt.join(self.startup_timeout)  # returns at once when the child exits: readline() sees EOF
        line = result.get("line")
        m = _LINE.match(line or "")
        if not m:
            self._fail_start(line)
        self.url = m.group(1)
        self.port = int(m.group(3))
        self._started_once = True
        threading.Thread(target=self._drain_stdout, args=(self.proc,), daemon=True).start()
        return self

    def _fail_start(self, line):
        """Raise the child's own error when it exited before listening, else the timeout; a first start
        that fails leaves no temporary data dir behind."""
        p = self.proc
        rc = None
        if line is not None:  # stdout ended (or a wrong line): the child exits or has exited
            try:
                rc = p.wait(5)
            except subprocess.TimeoutExpired:
                rc = None
        if rc is None:
            self._reap(signal.SIGKILL)
        if self._stderr_thread is not None:
            self._stderr_thread.join(2.0)  # the whole stderr, up to EOF (bounded: the child is gone)
        tail = self.stderr_tail()
        try:
            if not self._started_once and self._own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)
        finally:
            for f in (p.stdout, p.stderr):
                try:
                    f.close()
                except Exception:
                    pass
        if rc is not None:
            last = tail.strip().splitlines()[-1] if tail.strip() else "(no stderr)"
            raise StandinError(f"standin exited with code {rc} before it listened: {last}\n"
                               f"stderr tail:\n{tail}", returncode=rc, stderr=tail)
        raise StandinError(f"standin did not start within {self.startup_timeout}s "
                           f"(first stdout line: {line!r}); stderr tail:\n{tail}", stderr=tail)

    def _pump_stderr(self, p):
        try:
            for line in p.stderr:
                self._stderr_tail.append(line)
        except (ValueError, OSError):
            pass

    def _drain_stdout(self, p):
        try:
            for _ in p.stdout:
                pass
        except (ValueError, OSError):
            pass

    def _reap(self, sig, timeout: float = 10.0):
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def kill(self):
        """SIGKILL (no clean shutdown)."""
        return self._reap(signal.SIGKILL)

    def stop(self, timeout: float = 10.0):
        """SIGTERM and wait."""
        return self._reap(signal.SIGTERM, timeout)

    def wait(self, timeout: float | None = None):
        return self.proc.wait(timeout)

    def restart(self, kill: bool = False, faults: dict | None = None):
        """Stop (or kill) and start again on the same port with the same data dir.

        ``faults`` replaces the start-up faults for this start and later ones (e.g. ``{}`` after a
        ``crash_at`` given at start-up, which would otherwise fire again); None keeps them."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill() if kill else self.stop()
        if faults is not None:
            self.faults = dict(faults)
        deadline = time.time() + 10
        while True:
            try:
                return self.start(self.port)
            except StandinError as ex:
                # the port may still be held for a moment (exit code 1, "cannot start"); a bad option
                # or config (exit code 2) will not get better by retrying
                if ex.returncode == 2 or time.time() > deadline:
                    raise
                time.sleep(0.2)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        try:
            self.stop(timeout=5)
        finally:
            self._reap(signal.SIGKILL)
            for s in (self.proc.stdout, self.proc.stderr) if self.proc else ():
                try:
                    s.close()
                except Exception:
                    pass
            if self._own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    # ------------------------------------------------------------------ faults
    def _faults_req(self, method: str, body=None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/_standin/faults", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def get_faults(self) -> dict:
        return self._faults_req("GET")

    def set_faults(self, faults: dict) -> dict:
        return self._faults_req("PUT", faults)

    def patch_faults(self, faults: dict) -> dict:
        return self._faults_req("PATCH", faults)

    def __repr__(self):
        return f"StandinProcess(url={self.url!r}, pid={self.pid})"


# ---------------------------------------------------------------------------------------- helpers
def login(url: str, user: str, password: str, headers: dict | None = None) -> str:
    """POST /v1/api/auth/login and return the access token (raises on failure)."""
    import requests

    r = requests.post(url + "/v1/api/auth/login", json={"user": user, "password": password},
                      headers=headers or {}, timeout=10)
    if r.status_code != 200:
        raise StandinError(f"login of {user!r} failed: HTTP {r.status_code} {r.text[:200]}")
    return r.json()["access_token"]


def sql(url: str, token: str | None, query: str, params=None, namespace: str | None = None, timeout: float = 10):
    """POST /v1/api/sql; returns the requests.Response (no status check)."""
    import requests

    body = {"sql": query}
    if params is not None:
        body["params"] = params
    if namespace is not None:
        body["namespace_id"] = namespace
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url + "/v1/api/sql", json=body, headers=headers, timeout=timeout)


def sql_ok(url: str, token: str, query: str, params=None, namespace: str | None = None) -> dict:
    r = sql(url, token, query, params, namespace)
    if r.status_code != 200:
        raise StandinError(f"SQL failed: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


class WsClient:
    """Tiny websocket-client wrapper for tests: JSON frames, gzip binary frames decoded, close info."""

    def __init__(self, ws_url: str, token: str | None = None, compress: bool = True, timeout: float = 5.0,
                 headers: list | None = None, sockopt=()):
        """``sockopt``: (level, option, value) tuples set before connect, e.g. a small SO_RCVBUF for a
        slow reader whose socket fills."""
        import websocket

        url = ws_url + ("" if compress else "?compress=false")
        hdrs = list(headers or [])
        if token:
            hdrs.append(f"Authorization: Bearer {token}")
        self.ws = websocket.create_connection(url, header=hdrs, timeout=timeout, skip_utf8_validation=True,
                                              sockopt=tuple(sockopt))
        self.timeout = timeout
        self.close_code = None
        self.close_reason = None
        self.binary_frames = 0
        self.text_frames = 0

    def send(self, obj):
        import json as _json

        self.ws.send(obj if isinstance(obj, str) else _json.dumps(obj))

    def recv(self, timeout: float | None = None):
        """Next message as dict; None on timeout; raises ConnectionClosed-like StandinError on close."""
        import gzip
        import json as _json

        import websocket

        self.ws.settimeout(self.timeout if timeout is None else timeout)
        try:
            op, data = self.ws.recv_data(control_frame=False)
        except websocket.WebSocketTimeoutException:
            return None
        except websocket.WebSocketConnectionClosedException:
            raise WsClosed(self.close_code, self.close_reason) from None
        if op == websocket.ABNF.OPCODE_CLOSE:
            self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            self.close_reason = data[2:].decode(errors="replace")
            raise WsClosed(self.close_code, self.close_reason)
        if op == websocket.ABNF.OPCODE_BINARY:
            self.binary_frames += 1
            data = gzip.decompress(data)
        else:
            self.text_frames += 1
        return _json.loads(data)

    def recv_until_closed(self, timeout: float = 5.0):
        """Reads until the server closes; returns (code, reason, messages)."""
        msgs = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                m = self.recv(timeout=max(0.05, deadline - time.time()))
            except WsClosed as c:
                return c.code, c.reason, msgs
            if m is not None:
                msgs.append(m)
        return None, None, msgs

    def drain(self, wait: float = 0.3):
        out = []
        while True:
            m = self.recv(timeout=wait)
            if m is None:
                return out
            out.append(m)

    def ping(self):
        self.ws.ping()

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


class WsClosed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"websocket closed: {code} {reason!r}")
        self.code = code
        self.reason = reason
