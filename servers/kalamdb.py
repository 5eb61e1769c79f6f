"""A managed real KalamDB server (``kalamdb-server``) for a run or a test, on loopback.

    from servers.kalamdb import KalamdbProcess, find_kalamdb_bin
    with KalamdbProcess(find_kalamdb_bin()) as k:        # config/loadtest-server.toml by default
        k.url, k.ws_url, k.pid, k.root_password, k.version(), k.restart(), k.log_path

Shaped like :class:`standin.testing.StandinProcess`. Every start gets a free loopback port
(kept across :meth:`restart`), a fresh temporary data dir and logs dir (both removed by
:meth:`close`; ``keep_log=True`` keeps the logs dir and so :attr:`log_path`), a random root
password and a random JWT secret. The secrets go to the server **through the environment
only**: never on its command line, never in ``repr``, log lines or exception messages (the log
tails quoted in errors are redacted). The child runs in its own session, so a Ctrl-C in the
terminal reaches the harness, not the server; the harness stops it (a signal, then SIGKILL after
a grace). A server left running when its object is collected or the interpreter exits is killed.

Which signal stops it (seen on 0.4.3-rc.4): **SIGINT** runs KalamDB's own graceful shutdown (the
Ctrl-C path of ``lifecycle.rs``: WebSocket shutdown, running jobs awaited, Raft groups shut down,
"Server shutdown complete") in about 0.3 s, open connections or not. **SIGTERM** goes to actix's
handler instead: it waits for every open connection, an idle keep-alive HTTP one included, up to
actix's 30 s shutdown timeout, then exits without that sequence. So :meth:`stop` sends SIGINT by
default (``stop_signal=signal.SIGTERM`` to choose the other). Neither sends live sockets the
close 1001 of the contract (protocol §5.7): they see the TCP connection end (1006).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref

__all__ = ["KalamdbProcess", "KalamdbError", "find_kalamdb_bin", "kalamdb_bin_candidate",
           "DEFAULT_CONFIG", "GENERATE"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "config", "loadtest-server.toml")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_REDACTED = "***"


class _Generate:
    def __repr__(self):
        return "GENERATE"


GENERATE = _Generate()
"""Default of ``root_password`` / ``jwt_secret``: a fresh random value per instance."""


class KalamdbError(RuntimeError):
    pass


def kalamdb_bin_candidate() -> str:
    """The path :func:`find_kalamdb_bin` looks at: ``$KALAMDB_BIN``, else ``<repo>/../shared/kalamdb/kalamdb-server``."""
    env = os.environ.get("KALAMDB_BIN")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "kalamdb", "kalamdb-server"))


def find_kalamdb_bin() -> str | None:
    """Path of the real KalamDB server binary if it exists and is executable, else None."""
    path = kalamdb_bin_candidate()
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _finalize(proc_box: list, dirs: list):
    """Kill a still-running server and remove its temp dirs (object collected, or interpreter exit)."""
    p = proc_box[0] if proc_box else None
    if p is not None and p.poll() is None:
        try:
            p.kill()
            p.wait(5)
        except Exception:
            pass
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


class KalamdbProcess:
    """A real ``kalamdb-server`` child process on a loopback port.

    :param binary: path of ``kalamdb-server`` (default: :func:`find_kalamdb_bin`).
    :param config: server TOML (default ``config/loadtest-server.toml``); host, port, data dir and
        logs dir in it are overridden through the environment.
    :param root_password: root's password, applied on the first start on the empty data dir;
        ``GENERATE`` (default) makes a random one, ``None`` starts without one (the server then
        wants ``POST /v1/api/auth/setup``).
    :param jwt_secret: ``GENERATE`` (default, random 64 characters) or a value of 32+ characters.
    :param env: extra environment for the server (e.g. ``KALAMDB_WEBSOCKET_CLIENT_TIMEOUT_SECS``).
    :param data_dir: use this data dir (kept by :meth:`close`) instead of a fresh temporary one.
    :param keep_log: keep the logs dir (and :attr:`log_path`) when closing.
    :param stop_signal: what :meth:`stop` sends first (SIGINT: see the module's notes).
    :param stop_timeout: seconds :meth:`stop` waits before SIGKILL.
    """

    kind = "kalamdb"

    def __init__(self, binary: str | None = None, config: str | None = DEFAULT_CONFIG, *,
                 root_password=GENERATE, jwt_secret=GENERATE, env: dict | None = None,
                 host: str = "127.0.0.1", port: int = 0, data_dir: str | None = None,
                 keep_log: bool = False, log_level: str | None = None,
                 startup_timeout: float = 30.0, stop_timeout: float = 10.0,
                 stop_signal: int = signal.SIGINT):
        if host not in _LOOPBACK:
            raise ValueError(f"KalamdbProcess binds loopback only (127.0.0.1, ::1, localhost), not {host!r}")
        binary = binary if binary is not None else find_kalamdb_bin()
        if binary is None:
            raise KalamdbError(f"real KalamDB not found at {kalamdb_bin_candidate()}; set KALAMDB_BIN")
        self.binary = os.path.abspath(binary)
        self.config = os.path.abspath(config) if config is not None else None
        self.root_password: str | None = (f"Kdb-{secrets.token_urlsafe(18)}" if root_password is GENERATE
                                          else root_password)
        secret = secrets.token_urlsafe(48) if jwt_secret is GENERATE else jwt_secret
        if secret is not None and len(secret) < 32:
            raise ValueError("jwt_secret must have 32 characters or more")
        self._jwt_secret: str | None = secret
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.host = host
        self.port = int(port)
        self._fixed_port = bool(port)
        self.keep_log = keep_log
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.stop_signal = stop_signal
        self.base_dir = tempfile.mkdtemp(prefix="kalamdb-")
        self._own_data = data_dir is None
        self.data_dir = os.path.abspath(data_dir) if data_dir else os.path.join(self.base_dir, "data")
        self.logs_dir = os.path.join(self.base_dir, "logs")
        os.makedirs(self.logs_dir, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self._proc_box: list = [None]
        self._closed = False
        self.starts = 0
        self._root_token: str | None = None
        doomed = ([self.data_dir] if self._own_data else []) if keep_log else [self.base_dir]
        self._finalizer = weakref.finalize(self, _finalize, self._proc_box, doomed)

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str | None:
        if not self.port:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        return None if self.url is None else self.url.replace("http://", "ws://", 1) + "/v1/ws"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> str:
        """The server's own log file (``[logging]``, written under the logs dir)."""
        return os.path.join(self.logs_dir, "server.log")

    @property
    def console_path(self) -> str:
        """The child's stdout and stderr (config errors and startup failures are printed there)."""
        return os.path.join(self.logs_dir, "console.log")

    def __repr__(self):
        return f"KalamdbProcess(url={self.url!r}, pid={self.pid}, kind={self.kind!r})"

    __str__ = __repr__

    # ------------------------------------------------------------------ secrets
    def _secrets(self):
        yield self.root_password
        yield self._jwt_secret
        for k, v in self.env.items():  # a secret the caller passed in ``env`` is one too
            if "SECRET" in k.upper() or "PASSWORD" in k.upper() or "TOKEN" in k.upper():
                yield v
        yield self._root_token

    def redact(self, text: str) -> str:
        """``text`` with every secret this server knows replaced by ``***``."""
        for s in self._secrets():
            if s and len(s) >= 3:
                text = text.replace(s, _REDACTED)
        return text

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the console output and of the server log, secrets redacted."""
        out = []
        for path in (self.console_path, self.log_path):
            try:
                with open(path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - 64 * 1024))
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
            if tail:
                out.append(f"--- {os.path.basename(path)} (last {len(tail)} lines)\n" + "\n".join(tail))
        return self.redact("\n".join(out)) if out else "(no output)"

    # ------------------------------------------------------------------ lifecycle
    def _env(self) -> dict:
        # inherited KALAMDB_* variables are not passed on: a stray KALAMDB_ROOT_PASSWORD or rate
        # limit in the caller's shell would change the server; pass them in ``env`` instead
        env = {k: v for k, v in os.environ.items() if not k.startswith("KALAMDB_")}
        env.update({
            "KALAMDB_SERVER_HOST": self.host,
            "KALAMDB_SERVER_PORT": str(self.port),
            "KALAMDB_DATA_DIR": self.data_dir,
            "KALAMDB_LOGS_DIR": self.logs_dir,
        })
        if self._jwt_secret is not None:
            env["KALAMDB_JWT_SECRET"] = self._jwt_secret
        if self.root_password is not None:
            env["KALAMDB_ROOT_PASSWORD"] = self.root_password
        if self.log_level is not None:
            env["KALAMDB_LOG_LEVEL"] = self.log_level
        env.update(self.env)
        return env

    def _check_paths(self):
        if not os.path.isfile(self.binary) or not os.access(self.binary, os.X_OK):
            raise KalamdbError(f"kalamdb-server binary not found or not executable: {self.binary}")
        if self.config is not None and not os.path.isfile(self.config):
            raise KalamdbError(f"KalamDB config file not found: {self.config}")

    def start(self, timeout: float | None = None) -> "KalamdbProcess":
        """Start the server and wait until ``GET /health`` answers 200."""
        if self._closed:
            raise KalamdbError("closed")
        if self.running:
            raise KalamdbError("already running")
        self._check_paths()
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if not self.port:
                self.port = free_port(self.host)
            try:
                return self._start_once(deadline, timeout)
            except _PortBusy:
                # another process took the port between the probe and the bind: a fixed port (a
                # restart) waits for it to come free, a picked one is picked again
                if time.monotonic() > deadline:
                    raise KalamdbError(f"port {self.port} stayed in use for {timeout:.0f}s; "
                                       f"log tail:\n{self.log_tail()}") from None
                if not (self._fixed_port or self.starts):
                    self.port = 0
                time.sleep(0.2)

    def _start_once(self, deadline: float, timeout: float) -> "KalamdbProcess":
        cmd = [self.binary] + ([self.config] if self.config is not None else [])
        os.makedirs(self.logs_dir, exist_ok=True)
        with open(self.console_path, "ab") as console:
            console_start = console.tell()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                         env=self._env(), cwd=self.base_dir, start_new_session=True,
                                         close_fds=True)
        self._proc_box[0] = self.proc
        health = self.url + "/health"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc.wait()
                if "already in use" in self._console_since(console_start):
                    raise _PortBusy()
                raise KalamdbError(f"kalamdb-server exited with code {rc} during startup "
                                   f"(config {self.config}); log tail:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(health, timeout=max(0.1, min(1.0, deadline - time.monotonic()))) as r:
                    # 200 from the port is ours only if our child holds its listening socket (not
                    # another server that took the port first, which makes ours exit)
                    if r.status == 200 and self._listens():
                        self.starts += 1
                        return self
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline and self.proc.poll() is None:
                self._reap(signal.SIGKILL)
                raise KalamdbError(f"kalamdb-server did not become healthy at {health} within {timeout:.0f}s; "
                                   f"log tail:\n{self.log_tail()}")
            time.sleep(0.05)

    def _listens(self) -> bool:
        """Does our child hold the socket listening on :attr:`port`? (Linux /proc; True elsewhere.)"""
        if not os.path.isdir(f"/proc/{self.proc.pid}/fd"):
            return True
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        cols = line.split()
                        if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == self.port:  # 0A = LISTEN
                            inodes.add(cols[9])
            except (OSError, StopIteration, IndexError, ValueError):
                continue
        try:
            for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
        except OSError:
            return self.proc.poll() is None
        return False

    def _console_since(self, offset: int) -> str:
        try:
            with open(self.console_path, "rb") as f:
                f.seek(offset)
                return f.read(256 * 1024).decode("utf-8", "replace")
        except OSError:
            return ""

    def _reap(self, sig, grace: float | None = None):
        """Send ``sig``, wait ``grace`` seconds, then SIGKILL. Returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(self.stop_timeout if grace is None else grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        return p.returncode

    def stop(self, timeout: float | None = None):
        """``stop_signal`` (SIGINT: KalamDB's graceful shutdown), then SIGKILL if it has not exited
        after ``timeout`` (default ``stop_timeout``). Returns the exit code (0 after a clean stop)."""
        return self._reap(self.stop_signal, timeout)

    def kill(self):
        """SIGKILL (no clean shutdown)."""
        return self._reap(signal.SIGKILL, 10.0)

    def wait(self, timeout: float | None = None):
        return self.proc.wait(timeout)

    def restart(self, kill: bool = False) -> "KalamdbProcess":
        """Stop (or kill) and start again on the same port with the same data dir."""
        if self.running:
            self.kill() if kill else self.stop()
        self._fixed_port = True
        return self.start()

    def close(self):
        """Stop the server and remove its temporary dirs (the logs dir stays if ``keep_log``)."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._reap(signal.SIGKILL)
            self._closed = True
            self._finalizer.detach()
            if self._own_data:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.keep_log:
                for name in os.listdir(self.base_dir):
                    if name != "logs":
                        shutil.rmtree(os.path.join(self.base_dir, name), ignore_errors=True)
            else:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------------------ HTTP helpers
    def _post(self, path: str, body: dict, token: str | None = None, timeout: float = 10.0) -> dict:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 401:
                raise _Unauthorized(f"POST {path} failed: HTTP 401 {self.redact(text)}") from None
            raise KalamdbError(f"POST {path} failed: HTTP {exc.code} {self.redact(text)}") from None

    def health(self) -> dict:
        """``GET /health``: ``{"status":"healthy","version":...,"api_version":"v1","build_date":...}``."""
        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def root_token(self, fresh: bool = False) -> str:
        """An access token of ``root`` (logs in with :attr:`root_password`; kept for the next call
        unless ``fresh``: root's hash has bcrypt cost 12, about 0.3 s a login)."""
        if self.root_password is None:
            raise KalamdbError("started without a root password")
        if fresh or self._root_token is None:
            body = {"user": "root", "password": self.root_password}
            self._root_token = self._post("/v1/api/auth/login", body)["access_token"]
        return self._root_token

    def sql(self, query: str, params=None, token: str | None = None) -> dict:
        """``POST /v1/api/sql`` as root (or with ``token``); the decoded answer."""
        body = {"sql": query} if params is None else {"sql": query, "params": params}
        if token is not None:
            return self._post("/v1/api/sql", body, token)
        try:
            return self._post("/v1/api/sql", body, self.root_token())
        except _Unauthorized:  # the kept token was refused (expired, or a server with another secret)
            return self._post("/v1/api/sql", body, self.root_token(fresh=True))

    def stats(self, token: str | None = None) -> dict:
        """``system.stats`` as ``{metric_name: metric_value}`` (all values are strings)."""
        res = self.sql("SELECT metric_name, metric_value FROM system.stats LIMIT 1000", token=token)["results"][0]
        names = [f["name"] for f in sorted(res["schema"], key=lambda f: f["index"])]
        i, j = names.index("metric_name"), names.index("metric_value")
        return {row[i]: row[j] for row in res.get("rows", [])}

    def rocksdb_options(self) -> tuple[str, str] | None:
        """(path, text) of the newest RocksDB OPTIONS file in its data dir: the settings its storage engine
        runs with (RocksDB writes one each time it opens or changes a column family); None before there is one."""
        found = []
        for root, _dirs, files in os.walk(self.data_dir):
            found += [os.path.join(root, f) for f in files if f.startswith("OPTIONS-") and f[8:].isdigit()]
        if not found:
            return None
        path = max(found, key=lambda f: int(os.path.basename(f)[8:]))
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return path, f.read()
        except OSError:
            return None

    def version(self, token: str | None = None) -> str:
        """The running server's version: ``system.stats`` metric ``server_version`` (e.g. ``0.4.3-rc.4``),
        read as root (or with ``token``); a server without a root password answers from ``/health``."""
        if token is None and self.root_password is None:
            return self.health()["version"]
        stats = self.stats(token)
        if "server_version" not in stats:
            raise KalamdbError("system.stats has no server_version metric")
        return stats["server_version"]


class _PortBusy(Exception):
    pass


class _Unauthorized(KalamdbError):
    pass
