"""Server monitor: a background sampler of the server's and the load generator's resources.

Every ``interval`` seconds it reads ``SELECT metric_name, metric_value FROM system.stats`` (needs a DBA
or system token) and, when the server runs on this machine, psutil's RSS and CPU of the server
process; and always psutil's figures of this process (the load generator).  Each poll becomes one
:class:`checks.stress.Sample`; the verdicts of ``checks.stress`` are computed from them afterwards.

    mon = ServerMonitor(url, lambda: admin_client(), interval=2.0)   # or an already logged-in KalamHttp
    mon.start()
    mon.mark("load_start") ... mon.mark("flush") ... mon.mark("load_end")
    mon.stop()
    mon.samples(), mon.marks(), mon.to_json()

The sampler is a ``threading.Thread``: under Locust (gevent monkey-patched) that is a greenlet, and
the ``Event.wait`` between polls and the HTTP request yield to the other greenlets; unpatched it is a
real daemon thread.  It never raises out of the loop: a poll that fails is recorded as a gap (``source
== "gap"``, ``error`` set) and sampling goes on; psutil figures are still taken when the server is
local, so a dead process shows as ``server_alive == False``.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections import deque
from urllib.parse import urlsplit

import psutil

from checks.stress import MB, Sample
from checks.stress import series as _series
from kalamclient.errors import AuthFailed

log = logging.getLogger(__name__)

__all__ = ["ServerMonitor", "find_pid_by_port", "parse_stats", "STATS_SQL", "STORAGE_HINTS"]

STATS_SQL = "SELECT metric_name, metric_value FROM system.stats"
# system.stats metric names that belong to the storage engine (RocksDB in KalamDB, SQLite in the
# stand-in); kept in Sample.storage for S9.
STORAGE_HINTS = ("rocksdb", "sqlite", "storage", "memtable", "block_cache", "sst", "compaction",
                 "table_readers", "write_buffer")


def _number(text):
    """KalamDB sends every metric value as TEXT (and BIGINT as a JSON string): "42" → 42, "1.5" → 1.5,
    anything else stays as it came (None stays None)."""
    if isinstance(text, bool) or text is None:
        return text
    if isinstance(text, (int, float)):
        return text
    s = str(text).strip()
    try:
        return int(s)
    except ValueError:
        pass
    try:
        value = float(s)
    except ValueError:
        return text
    return value if value == value and value not in (float("inf"), float("-inf")) else text


def parse_stats(rows) -> dict:
    """``{metric_name: value}`` from the rows of ``system.stats`` (dicts or ``[name, value]`` lists),
    values parsed to numbers where they are numbers."""
    out = {}
    for row in rows:
        if isinstance(row, dict):
            name, value = row.get("metric_name"), row.get("metric_value")
        else:
            name, value = row[0], row[1]
        if name is not None:
            out[str(name)] = _number(value)
    return out


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tcp_connections(proc: psutil.Process):
    getter = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6 names it connections
    return getter(kind="tcp")


def find_pid_by_port(port: int, host: str | None = None) -> int | None:
    """Pid of the process listening on TCP ``port`` on this machine (on ``host`` if given, wildcard
    addresses included), or None.  Tries the system-wide table first; where that needs privileges
    (macOS, hardened Linux) falls back to the processes we may inspect."""
    wanted = {host, "0.0.0.0", "::", "::ffff:0.0.0.0"} if host else None

    def matches(conn) -> bool:
        return (conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
                and (wanted is None or conn.laddr.ip in wanted))

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if matches(conn) and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, PermissionError, OSError):
        pass
    for proc in psutil.process_iter():
        try:
            if any(matches(c) for c in _tcp_connections(proc)):
                return proc.pid
        except (psutil.Error, OSError):
            continue
    return None


def _first_number(stats: dict, *names):
    for name in names:
        v = stats.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
    return None


class ServerMonitor:
    """Background sampler of one server.  See the module doc.

    ``admin``: a logged-in client with ``query(sql, timeout=...) -> QueryResult`` (a DBA/system
    ``KalamHttp``), or a zero-argument factory returning one (preferred: the monitor then owns its
    client and logs in again after an auth error), or None (psutil only).  ``pid``/``port`` locate the
    server process; without them, a loopback ``base_url``'s port is looked up with
    :func:`find_pid_by_port`."""

    def __init__(self, base_url: str, admin=None, interval: float = 2.0, pid: int | None = None,
                 port: int | None = None, query_timeout: float = 5.0, max_samples: int = 200_000):
        self.base_url = base_url.rstrip("/")
        self.interval = float(interval)
        self.query_timeout = float(query_timeout)
        if admin is not None and not hasattr(admin, "query") and callable(admin):
            self._factory, self._client = admin, None
        else:
            self._factory, self._client = None, admin
        parts = urlsplit(self.base_url if "://" in self.base_url else "http://" + self.base_url)
        self.host = parts.hostname or ""
        self.port = port if port is not None else parts.port
        self.local = pid is not None or _is_loopback(self.host)
        self._pid = pid
        self._server_proc: psutil.Process | None = None
        self._next_locate = 0.0
        self.server_gone_at: float | None = None
        self._me = psutil.Process()
        self.cpu_count = psutil.cpu_count() or 1
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self._marks: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.gaps = 0
        self.last_error: str | None = None

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> "ServerMonitor":
        if self._thread is not None:
            return self
        self._locate_server()
        self._me.cpu_percent(None)  # psutil's first cpu_percent call only primes the counter
        self._thread = threading.Thread(target=self._run, name="server-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop sampling and join the sampler (bounded by ``timeout``, default interval + query timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.interval + self.query_timeout + 1.0)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- phases and results -----------------------------------------------------------------------
    def mark(self, name: str, t: float | None = None) -> float:
        """Record a phase boundary or event (``"load_start"``, ``"warmup_end"``, ``"flush"``, ...)."""
        t = time.time() if t is None else float(t)
        with self._lock:
            self._marks.append((name, t))
        return t

    def marks(self, name: str | None = None) -> list:
        """All ``(name, t)`` marks in order, or the times of the marks called ``name``."""
        with self._lock:
            if name is None:
                return list(self._marks)
            return [t for n, t in self._marks if n == name]

    def mark_time(self, name: str) -> float | None:
        """Time of the last mark called ``name`` (None if never marked)."""
        times = self.marks(name)
        return times[-1] if times else None

    def samples(self, start: float | None = None, end: float | None = None) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples
                    if (start is None or s.t >= start) and (end is None or s.t <= end)]

    def series(self, name: str, start: float | None = None, end: float | None = None):
        """``(times, values)`` of a Sample field (or ``"stats.NAME"``/``"storage.NAME"``)."""
        return _series(self.samples(), name, start, end)

    def to_dict(self) -> dict:
        return {"base_url": self.base_url, "interval": self.interval, "server_pid": self._pid,
                "local": self.local, "cpu_count": self.cpu_count, "polls": self.polls, "gaps": self.gaps,
                "server_gone_at": self.server_gone_at, "marks": [list(m) for m in self.marks()],
                "samples": [s.to_dict() for s in self.samples()]}

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), default=str)
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @property
    def server_pid(self) -> int | None:
        return self._pid

    # -- sampling ---------------------------------------------------------------------------------
    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # never let the sampler die: a lost poll is a gap, not a crash
                log.debug("monitor poll failed", exc_info=True)
                self.last_error = f"{type(exc).__name__}: {exc}"
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow poll: skip the missed ticks rather than firing a burst
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def _locate_server(self) -> None:
        if self._pid is None and self.local and self.port:
            try:
                self._pid = find_pid_by_port(self.port)
            except Exception:  # psutil oddities on exotic platforms: sample without the process
                log.debug("find_pid_by_port failed", exc_info=True)
        if self._pid is not None and self._server_proc is None:
            try:
                self._server_proc = psutil.Process(self._pid)
                self._server_proc.cpu_percent(None)
            except psutil.Error:
                self._server_proc = None

    def _admin(self):
        if self._client is None and self._factory is not None:
            self._client = self._factory()
        return self._client

    def _read_stats(self) -> tuple[dict | None, str | None]:
        try:
            client = self._admin()
            if client is None:
                return None, None
            result = client.query(STATS_SQL, timeout=self.query_timeout)
            rows = result.dicts() if hasattr(result, "dicts") else result
            return parse_stats(rows), None
        except Exception as exc:
            if self._factory is not None and isinstance(exc, AuthFailed):
                self._client = None  # expired token or restarted server: log in again next poll
            return None, f"{type(exc).__name__}: {exc}"

    def _server_figures(self) -> tuple[float | None, float | None, bool | None]:
        proc = self._server_proc
        if proc is None:
            if self._pid is None:
                return None, None, None
            return None, None, False
        try:
            with proc.oneshot():
                rss = proc.memory_info().rss
                cpu = proc.cpu_percent(None)
                alive = proc.status() != psutil.STATUS_ZOMBIE
            return (rss, cpu, True) if alive else (None, None, False)
        except psutil.Error:
            return None, None, False

    def sample_once(self) -> Sample:
        """Take one sample now and append it (the sampler calls this every interval)."""
        t = time.time()
        if self._server_proc is None and self._pid is None and self.local and time.monotonic() >= self._next_locate:
            # the server may have started listening after us; a full process scan is not free, so
            # look again at most every 10 s
            self._next_locate = time.monotonic() + 10.0
            self._locate_server()
        stats, error = self._read_stats()
        rss, cpu, alive = self._server_figures()
        if alive is False and self.server_gone_at is None:
            self.server_gone_at = t
        sources = []
        if rss is not None:
            sources.append("psutil")
        elif stats:
            mem_mb = _first_number(stats, "memory_usage_mb")
            rss = _first_number(stats, "memory_rss_bytes", "memory_usage_bytes")
            if rss is None and mem_mb is not None:
                rss = mem_mb * MB
        if cpu is None and stats:
            cpu = _first_number(stats, "cpu_usage_percent")
        if stats:
            sources.append("stats")
        try:
            with self._me.oneshot():
                gen_cpu = self._me.cpu_percent(None)
                gen_rss = self._me.memory_info().rss
        except psutil.Error:
            gen_cpu = gen_rss = None
        numeric = {k: v for k, v in (stats or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        sample = Sample(
            t=t, server_rss_bytes=rss, server_cpu_percent=cpu,
            connections=_first_number(numeric, "active_connections"),
            subscriptions=_first_number(numeric, "active_subscriptions", "total_live_queries"),
            ws_sessions=_first_number(numeric, "websocket_sessions"),
            storage={k: v for k, v in numeric.items() if any(h in k for h in STORAGE_HINTS)},
            generator_cpu_percent=gen_cpu, generator_rss_bytes=gen_rss,
            source="+".join(sources) or "gap", server_alive=alive, error=error, stats=numeric)
        if error is not None:  # the server did not answer this poll
            self.gaps += 1
            self.last_error = error
        self.polls += 1
        with self._lock:
            self._samples.append(sample)
        return sample
