"""Stress, memory and stability during a run (scenarios S1-S10, SC-057; GEN): the evidence, then the verdicts.

With ``--stress`` the run owns one :class:`StressRecorder`:

* ``start()`` (at ``Run.start``, after set-up): a :class:`loadtest.run.monitor.ServerMonitor` samples the
  server (``system.stats`` as admin; psutil of the server process when it listens on loopback) and this
  process every ``--monitor-interval``; every SQL request of the run is counted by outcome (S10).
* ``load_started(t)`` (the start barrier opens): mark ``load_start``; a greenlet samples, per
  subscription, the server's ``system.live.changes`` with the listener's received count (S8); another
  runs ``STORAGE FLUSH TABLE`` on every table every ``--flush-every`` s (S7).
* ``load_ended(t)`` (``Run.finish`` starts): mark ``load_end``, stop flushing.
* ``stop_sampling()`` after the drain, ``leak_probe()`` while the listeners are still connected (S4),
  ``release()`` after the sessions closed: keep sampling ``--release-window`` s (S5), mark
  ``release_end``, check the server still answers (S10).
* ``verdicts(results)`` → ``{id: verdict dict}`` judged by the pure functions of ``checks.stress``;
  ``monitor_report()`` → the compact time series for ``report["monitor"]``.

Without ``--stress`` :func:`skipped_verdicts` reports every one of them as skipped, with the reason.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter

import gevent

from checks import stress as st
from checks.model import OP_INSERT, OUTCOME_ACK
from kalamclient import KalamHttp, LiveConnection
from kalamclient.errors import ConnectError, HttpError, OutcomeUnknown, ProtocolError, RateLimited
from kalamclient.events import Closed, ServerError, SubscriptionAck

from . import provision as prov_mod
from .monitor import ServerMonitor

log = logging.getLogger(__name__)

STRESS_IDS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "SC-057", "GEN")
TITLES = {
    "S1": "server memory growth under write load", "S2": "writers + listeners sustained",
    "S3": "server CPU at the target write rate", "S4": "no leaked subscriptions or connections",
    "S5": "memory released after the load", "S6": "SELECT latency under stress",
    "S7": "no memory build-up across flushes", "S8": "subscriptions stay healthy",
    "S9": "storage-engine memory within bounds", "S10": "graceful degradation, no crash",
    "SC-057": "WebSocket uptime", "GEN": "load generator not saturated",
}
NOT_STRESS = "not a stress profile (use --config profiles/short.conf or profiles/spec.conf)"
PROBE_PER_CONNECTION = 100


def _skip(sid: str, figure: str) -> dict:
    return {"id": sid, "title": TITLES[sid], "verdict": st.SKIPPED, "figure": figure, "value": None,
            "threshold": None, "details": {}}


def skipped_verdicts() -> dict:
    return {sid: _skip(sid, NOT_STRESS) for sid in STRESS_IDS}


def error_kind(exc) -> str | None:
    """How a failed request counts for S10: "429" (graceful), the HTTP status, "unknown_outcome",
    "connect", "protocol"; None for what is not a server failure (an UPDATE that matched no row)."""
    if exc is None:
        return None
    if isinstance(exc, RateLimited):
        return "429"
    if isinstance(exc, HttpError):
        return str(exc.status) if exc.status else (exc.code or "error")
    if isinstance(exc, OutcomeUnknown):
        return "unknown_outcome"
    if isinstance(exc, ConnectError):
        return "connect"
    if isinstance(exc, ProtocolError):
        return "protocol"
    if isinstance(exc, (OSError, TimeoutError)):
        return type(exc).__name__
    return None


class RequestTally:
    """What the stress verdicts count of the run's own requests: SQL requests and their errors by kind
    (S10), acknowledged writes (S8's write series), and every read's ``(t, ms, ok)`` (S3, S6, S10).

    Fed by Locust's ``request`` event and the reader users, in whichever process runs them: the
    stress recorder's own process, or each worker of a distributed run, which ships its tally to the
    master at the end (``to_wire`` / ``merge_wire``, read times on the master's clock)."""

    def __init__(self):
        self.reads: list[tuple[float, float, bool]] = []  # (t, latency ms, ok)
        self.requests = 0
        self.errors: Counter = Counter()
        self.writes_ok = 0

    def on_request(self, request_type=None, name=None, response_time=None, exception=None, **_kw):
        if request_type != "SQL":
            return
        self.requests += 1
        kind = error_kind(exception)
        if kind is not None:
            self.errors[kind] += 1
        elif exception is None and not str(name).startswith("SELECT"):
            self.writes_ok += 1

    def record_read(self, t: float, latency_ms: float, ok: bool) -> None:
        self.reads.append((t, latency_ms, ok))

    def to_wire(self, shift: float = 0.0) -> dict:
        return {"requests": self.requests, "errors": dict(self.errors), "writes_ok": self.writes_ok,
                "reads": [[t + shift, ms, ok] for t, ms, ok in self.reads]}

    def merge_wire(self, d: dict) -> None:
        self.requests += int(d.get("requests") or 0)
        self.errors.update({str(k): int(v) for k, v in (d.get("errors") or {}).items()})
        self.writes_ok += int(d.get("writes_ok") or 0)
        self.reads.extend((float(t), float(ms), bool(ok)) for t, ms, ok in d.get("reads") or ())
        self.reads.sort(key=lambda r: r[0])


class StressRecorder:
    def __init__(self, run):
        self.run = run
        self.o = run.options
        self.monitor: ServerMonitor | None = None
        self.load_start = None
        self.load_end = None
        self.release_end = None
        self.sub_series: dict[str, list[tuple]] = {}
        self.flush_times: list[float] = []
        self.flush_errors: list[str] = []
        self.tally = RequestTally()
        self.probe: dict | None = None
        self.health_ok_after: bool | None = None
        self.health_error = None
        self._sampling = False
        self._loops: list = []
        self._flusher = None

    # ---- clients -------------------------------------------------------------------------------------------
    def _admin_client(self) -> KalamHttp:
        http = KalamHttp(self.run.base_url, timeout=10.0)
        admin = self.run.admin
        self.run.auth_bucket.acquire()
        prov_mod.with_rate_limit_retry(lambda: http.login(admin.user, admin.password), attempts=5,
                                       what="admin login (stress)")
        return http

    # ---- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        # the tally hears every request through the plugin's one request listener (run.tally)
        self.monitor = ServerMonitor(self.run.base_url, self._admin_client, interval=self.o.monitor_interval)
        self.monitor.start()
        self.monitor.mark("setup_done")

    def load_started(self, t: float) -> None:
        self.load_start = t
        self.monitor.mark("load_start", t)
        self.monitor.mark("warmup_end", t + self.o.warmup)
        self._sampling = True
        self._loops.append(gevent.spawn(self._subscription_loop))
        if self.o.flush_every > 0:
            self._flusher = gevent.spawn(self._flush_loop)

    def load_ended(self, t: float) -> None:
        if self.load_start is None:  # the barrier never opened (set-up failed, or no listener came)
            self.load_start = t
        self.load_end = t
        self.monitor.mark("load_end", t)
        if self._flusher is not None:  # flushes belong to the load (S7); it sleeps between them
            self._flusher.kill(block=False)
            self._flusher = None

    def stop_sampling(self) -> None:
        self._sampling = False
        for g in self._loops:
            g.join(timeout=self.o.monitor_interval + 11.0)
            g.kill(block=False)
        self._loops = []

    # ---- S8: per-subscription series -----------------------------------------------------------------------
    def _subscription_loop(self) -> None:
        http = None
        while self._sampling:
            try:
                if http is None:
                    http = self._admin_client()
                res = http.query("SELECT user_id, subscription_id, changes FROM system.live LIMIT 100000",
                                 timeout=10.0)
                t = time.time()
                counts: dict = {}
                for row in res.dicts():
                    counts.setdefault((row.get("user_id"), row.get("subscription_id")), []).append(row.get("changes"))
                rows, _ = self.run.subscription_counts()
                for key, user, sid, received in rows:
                    values = counts.get((user, sid))
                    changes = int(values[0]) if values and len(values) == 1 and values[0] is not None else None
                    self.sub_series.setdefault(key, []).append((t, changes, received))
            except Exception as exc:  # a missed poll is a gap in the series, never an error of the run
                log.debug("subscription poll failed: %s", exc)
                http = None if isinstance(exc, (ConnectError, HttpError)) else http
            gevent.sleep(self.o.monitor_interval)

    # ---- S7: periodic flushes ------------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        http = None
        while self._sampling and self.load_end is None:
            gevent.sleep(self.o.flush_every)
            if not self._sampling or self.load_end is not None:
                return
            try:
                if http is None:
                    http = self._admin_client()
                for table in self.run.prov.tables:
                    http.sql(f"STORAGE FLUSH TABLE {self.run.prov.namespace}.{table.key}", timeout=30.0)
                t = time.time()
                self.flush_times.append(t)
                self.monitor.mark("flush", t)
            except Exception as exc:
                self.flush_errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("STORAGE FLUSH failed: %s", exc)
                http = None

    # ---- S4: leak probe ------------------------------------------------------------------------------------
    def leak_probe(self) -> dict:
        """Open ``--leak-probe`` subscriptions as the probe user (≤ 100 per connection), close half of them
        (unsubscribe), wait ``--leak-grace`` s, read ``system.live`` and ``system.stats``, judge; then close
        the rest.  Runs after the drain, while the listeners are still connected."""
        o, run = self.o, self.run
        n = o.leak_probe
        if n <= 0 or run.prov is None or run.prov.probe is None:
            self.probe = _skip("S4", "no leak probe (--leak-probe 0)")
            return self.probe
        self.monitor.mark("probe_start")
        ns = run.prov.namespace
        keys = [t.key for t in run.prov.tables]
        sql = (f"SELECT * FROM {ns}.events" if "events" in keys
               else f"SELECT * FROM {ns}.messages WHERE conversation = 'probe'")
        ids = [f"probe{i:03d}" for i in range(n)]
        closed = ids[0::2][: n // 2]
        remaining = [i for i in ids if i not in set(closed)]
        conns: list[tuple[LiveConnection, list[str]]] = []
        http = None
        try:
            http = self._admin_client()
            token = run.token_for(run.prov.probe)
            before = self._stats(http)
            disconnects_before = sum(len(s.disconnect_log) for s in run.sessions)
            for k in range(0, n, PROBE_PER_CONNECTION):
                chunk = ids[k:k + PROBE_PER_CONNECTION]
                run.auth_bucket.acquire()
                conn = LiveConnection(run.base_url, token, compress=True, auth="header", ping_interval=5.0,
                                      connect_timeout=10.0)
                conn.connect()
                conns.append((conn, chunk))
                for sid in chunk:
                    conn.subscribe(sid, sql, None)
                self._wait_acks(conn, set(chunk), timeout=30.0)
            for conn, chunk in conns:
                for sid in chunk:
                    if sid in closed:
                        conn.unsubscribe(sid)
            gevent.sleep(o.leak_grace)
            for _attempt in range(3):  # listeners may (re)connect between two reads: retry until both agree
                rows1 = http.query("SELECT live_id, connection_id, subscription_id, user_id FROM system.live "
                                   "LIMIT 100000", timeout=10.0).dicts()
                stats = self._stats(http)
                rows2 = http.query("SELECT live_id, connection_id, subscription_id, user_id FROM system.live "
                                   "LIMIT 100000", timeout=10.0).dicts()
                if len(rows1) == len(rows2):
                    break
            probe_rows = [r for r in rows2 if r.get("user_id") == run.prov.probe.user]
            others = len(rows2) - len(probe_rows)
            churn = sum(len(s.disconnect_log) for s in run.sessions) != disconnects_before
            expected_conns = None
            if before and isinstance(before.get("active_connections"), (int, float)) and not churn:
                expected_conns = int(before["active_connections"]) + len(conns)
            stats_used = {k: stats[k] for k in ("active_subscriptions", "active_connections", "websocket_sessions")
                          if isinstance(stats.get(k), (int, float))}
            self.probe = st.subscription_leaks(
                probe_rows, expected_ids=remaining, closed_ids=closed, stats=stats_used,
                expected_subscriptions=others + len(remaining), expected_connections=expected_conns,
                opened=n, grace_s=o.leak_grace)
            self.probe["details"].update({"connections_opened": len(conns), "other_live_rows": others,
                                          "listener_churn_during_probe": churn})
        except Exception as exc:
            log.warning("leak probe failed: %s", exc)
            self.probe = {"id": "S4", "title": TITLES["S4"], "verdict": st.INCONCLUSIVE,
                          "figure": f"leak probe failed: {type(exc).__name__}: {exc}", "value": None,
                          "threshold": f"exactly {len(remaining)} remaining, 0 zombies", "details": {}}
        finally:
            for conn, chunk in conns:
                try:
                    for sid in chunk:
                        if sid not in closed:
                            conn.unsubscribe(sid)
                    conn.close()
                except Exception:  # best effort: the verdict is already taken
                    pass
            self.monitor.mark("probe_end")
        return self.probe

    @staticmethod
    def _wait_acks(conn: LiveConnection, pending: set, timeout: float) -> None:
        deadline = time.time() + timeout
        while pending:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} probe subscription(s) not ready after {timeout:.0f} s")
            ev = conn.recv(timeout=min(left, 1.0))
            if isinstance(ev, SubscriptionAck):
                pending.discard(ev.subscription_id)
            elif isinstance(ev, ServerError):
                raise RuntimeError(f"probe subscription {ev.subscription_id} refused: {ev.code} {ev.message}")
            elif isinstance(ev, Closed):
                raise ConnectionError(f"probe connection closed while subscribing (code {ev.code})")

    @staticmethod
    def _stats(http) -> dict:
        from .monitor import STATS_SQL, parse_stats

        return parse_stats(http.query(STATS_SQL, timeout=10.0).dicts())

    # ---- S5 release window, end of monitoring --------------------------------------------------------------
    def release(self, interrupted: bool = False) -> None:
        if not interrupted:
            self.monitor.mark("release_start")
            gevent.sleep(self.o.release_window)
        try:
            http = self._admin_client()
            http.query("SELECT metric_name, metric_value FROM system.stats", timeout=10.0)
            self.health_ok_after = True
        except Exception as exc:
            self.health_ok_after = False
            self.health_error = f"{type(exc).__name__}: {exc}"
        self.release_end = self.monitor.mark("release_end")
        self.monitor.sample_once()
        self.monitor.stop()

    # ---- verdicts ------------------------------------------------------------------------------------------
    @staticmethod
    def _inserts(ledgers: dict) -> tuple[int, dict]:
        total, per_writer = 0, Counter()
        for led in ledgers.values():
            for (_i, writer, _wseq, op, outcome, *_rest) in led.iter_writes():
                if op == OP_INSERT and outcome == OUTCOME_ACK:
                    total += 1
                    per_writer[writer] += 1
        return total, dict(per_writer)

    def storage_verdict(self, samples, budget: dict | None, ls: float, le: float, gone: bool) -> dict:
        """S9: a bound given (--storage-bound-mb) judges the storage engine's memory figures against it; on
        a real KalamDB without one, its memtables (rocksdb_memtables_size_bytes) are judged against what
        its own RocksDB options let them hold, or, where those are unknown (a server not started here), by
        whether they kept growing under load. The stand-in's SQLite figures are judged only against a bound."""
        o = self.o
        times, storage = [s.t for s in samples], [s.storage for s in samples]
        has_memtables = any(st.MEMTABLES in (f or {}) for f in storage)
        if o.storage_bound_mb is not None:
            s9 = st.storage_bound(times, storage, bound_bytes=o.storage_bound_mb * st.MB, process_gone=gone,
                                  bound_from="--storage-bound-mb", title=TITLES["S9"])
        elif has_memtables and budget is not None:
            s9 = st.storage_bound(times, storage, bound_bytes=budget["bytes"], metric=st.MEMTABLES,
                                  process_gone=gone, title=TITLES["S9"],
                                  bound_from=f"the server's RocksDB options: {budget['column_families']} column "
                                             f"families × max_write_buffer_number × write_buffer_size, + 1/8")
        elif has_memtables:
            s9 = st.storage_growth(times, storage, load_start=ls, load_end=le, warmup_s=o.warmup,
                                   process_gone=gone, min_slope_mb_per_min=o.leak_slope_mb_per_min,
                                   title=TITLES["S9"])
        else:
            s9 = st.storage_bound(times, storage, process_gone=gone, title=TITLES["S9"])
            if s9["verdict"] != st.FAIL:
                s9["verdict"] = st.SKIPPED
                if not s9["figure"].startswith("no bound"):
                    s9["figure"] = f"no bound configured (--storage-bound-mb); {s9['figure']}"
        # the storage engine's other figures beside it, at their peak during the run
        peaks = {k: max(v) for k in st.ROCKSDB_FIGURES
                 if (v := [f[k] for f in storage if isinstance((f or {}).get(k), (int, float))])}
        if peaks:
            s9.setdefault("details", {})["rocksdb_peaks"] = peaks
        if budget is not None:
            s9.setdefault("details", {})["memtable_budget"] = budget
        return s9

    def verdicts(self, record, results, capacity: dict | None = None) -> dict:
        """S1–S10, SC-057 and GEN from the monitor's samples and the run's record (loadtest.run.record);
        ``capacity``: a stepped load's (checks.capacity), which S10 is judged past."""
        o, run, mon = self.o, record, self.monitor
        samples = mon.samples()
        ls = self.load_start or run.writing_started_at or run.started_at
        le = self.load_end or run.writing_stopped_at or time.time()
        duration = max(0.0, le - ls)
        rss_t, rss_v = st.series(samples, "server_rss_bytes")
        out = {}

        # S5 first: whether memory was given back after the load tells growth under load from a leak (S1, S7)
        steady_from = ls + o.warmup
        base = st.baseline_level(rss_t, rss_v, steady_from, steady_from + o.baseline_window)
        s5 = st.memory_release(rss_t, rss_v, baseline=base, load_end=le, within_pct=o.memory_release_pct,
                               deadline_s=o.release_window, until=self.release_end, title=TITLES["S5"])

        # S1: memory growth (SC-056's measure), rows written
        s1 = st.memory_growth(rss_t, rss_v, load_start=ls, load_end=le, warmup_s=o.warmup,
                              baseline_s=o.baseline_window, threshold_pct=o.memory_growth_pct,
                              min_slope_mb_per_min=o.leak_slope_mb_per_min, max_gap_s=max(60.0, 5 * o.monitor_interval),
                              server_gone_at=mon.server_gone_at, release=s5, id="S1", title=TITLES["S1"])
        inserted, per_writer = self._inserts(record.ledgers)
        fewest = min(per_writer.values()) if per_writer else 0
        s1["details"]["rows_inserted"] = inserted
        s1["details"]["rows_per_writer_min"] = fewest
        s1["figure"] += f"; {inserted:,} rows inserted (fewest per writer {fewest:,}, need {o.rows_per_writer:,})"
        if s1["verdict"] == st.PASS and (fewest < o.rows_per_writer or len(per_writer) < o.writers):
            s1["verdict"] = st.INCONCLUSIVE
            s1["figure"] += ": not the full write load"
        out["S1"] = s1

        # S2: sustained writers + listeners
        unexpected = [d for s in run.sessions for d in s.disconnect_log if not d["expected"]]
        lost = sum(r.lost for r in results) if results else None
        expected = sum(sum(c["expected"] for c in r.by_op.values()) for r in results) if results else None
        out["S2"] = st.sustained_load(s1, duration_s=duration, min_duration_s=o.sustained_min_duration,
                                      unexpected_disconnects=len(unexpected), lost=lost, expected=expected,
                                      title=TITLES["S2"])

        # S3: CPU during the writing window, at the achieved insert rate, still answering queries
        cpu_t, cpu_v = st.series(samples, "server_cpu_percent")
        cores = o.cpu_cores if o.cpu_cores > 0 else (mon.cpu_count if mon.local else 1)
        reads_in = [r for r in self.tally.reads if r[0] >= ls]
        if reads_in:
            q_ok, q_failed, q_source = sum(1 for r in reads_in if r[2]), sum(1 for r in reads_in if not r[2]), "readers"
        else:
            polls = [s for s in samples if ls <= s.t <= le]
            q_ok, q_failed, q_source = sum(1 for s in polls if s.error is None), sum(1 for s in polls if s.error), \
                "monitor's system.stats polls"
        rate = inserted / duration if duration > 0 else None
        s3 = st.cpu_under_load(cpu_t, cpu_v, start=ls, end=le, threshold_pct=o.cpu_threshold_pct, cores=cores,
                               achieved_rate=rate, target_rate=o.target_write_rate, queries_ok=q_ok,
                               queries_failed=q_failed, title=TITLES["S3"])
        s3["details"]["queries_from"] = q_source
        out["S3"] = s3

        # S4
        out["S4"] = self.probe or {"id": "S4", "title": TITLES["S4"], "verdict": st.INCONCLUSIVE,
                                   "figure": "leak probe did not run (run interrupted or the server was gone)",
                                   "value": None, "threshold": None, "details": {}}

        out["S5"] = s5

        # S6: SELECT latency during the load
        if o.readers <= 0:
            out["S6"] = _skip("S6", "no reader users (--readers 0)")
        else:
            lat = [r[1] for r in self.tally.reads if r[0] >= ls and r[2]]
            failed = sum(1 for r in self.tally.reads if r[0] >= ls and not r[2])
            out["S6"] = st.query_latency(lat, threshold_ms=o.query_p95_ms, quantile=0.95, failed=failed,
                                         title=TITLES["S6"])

        # S7: flushes
        if o.flush_every <= 0:
            out["S7"] = _skip("S7", "no periodic flush (--flush-every 0)")
        else:
            s7 = st.flush_buildup(rss_t, rss_v, self.flush_times, settle_s=min(10.0, o.flush_every),
                                  max_growth_pct=o.memory_growth_pct, min_slope_mb_per_min=o.leak_slope_mb_per_min,
                                  release=s5,
                                  title=TITLES["S7"])
            if self.flush_errors:
                s7["details"]["flush_errors"] = self.flush_errors[:10]
                s7["figure"] += f"; {len(self.flush_errors)} flush(es) failed ({self.flush_errors[0]})"
                if s7["verdict"] == st.PASS:
                    s7["verdict"] = st.INCONCLUSIVE
            out["S7"] = s7

        # S8: subscription health
        due = {}   # per subscription: when each change it must receive was acknowledged (its query's writes)
        for s in run.sessions:
            for state in s.subs.values():
                info = state.log.info
                led = record.ledgers.get(state.spec.table.key)
                if led is not None:
                    due[info.key] = led.ack_times(info.owner if info.table_kind == "user" else None, info.group)
        s8 = st.subscription_health(self.sub_series, due=due, stall_s=o.stall_seconds,
                                    drift_persist_s=o.stall_seconds, drift_lag_s=max(2.0, o.monitor_interval),
                                    expected=sum(len(s.subs) for s in run.sessions), title=TITLES["S8"])
        gone = mon.server_gone_at is not None
        if gone and s8["verdict"] == st.PASS:  # watched only until the server went away
            s8["verdict"] = st.INCONCLUSIVE
            s8["figure"] += f" (until the server was gone, {mon.server_gone_at - ls:.0f} s into the load)"
        out["S8"] = s8

        out["S9"] = self.storage_verdict(samples, (record.server or {}).get("memtable_budget"), ls, le, gone)

        # S10: graceful degradation
        slow = sum(1 for r in self.tally.reads if r[2] and r[1] >= o.query_p95_ms)
        out["S10"] = st.degradation(
            requests=self.tally.requests, errors=dict(self.tally.errors), slow=slow, slow_ms=o.query_p95_ms,
            server_crashed=gone, health_ok_after=self.health_ok_after,
            disconnects=[(d["t"], d["listener"]) for d in unexpected], listeners=max(o.listeners, len(run.sessions)),
            lost_acked=lost if not run.flags.get("interrupted") else None,
            crashed_at=mon.server_gone_at, load_start=ls, capacity=capacity, title=TITLES["S10"])
        if gone or self.health_ok_after is False:
            out["S10"]["details"]["server_gone_at"] = mon.server_gone_at
            out["S10"]["details"]["health_error"] = self.health_error

        # SC-057: WebSocket uptime
        end = min((s.closed_at for s in run.sessions if s.closed_at), default=time.time())
        listener_seconds = sum(max(0.0, (s.closed_at or end) - s.first_ready_at)
                               for s in run.sessions if s.first_ready_at)
        notifications = sum(state.received for s in run.sessions for state in s.subs.values())
        disconnects = [d for s in run.sessions for d in s.disconnect_log]
        out["SC-057"] = st.ws_uptime(disconnects, listener_seconds=listener_seconds, notifications=notifications,
                                     min_notifications=o.uptime_min_notifications, min_uptime=o.uptime_min,
                                     title=TITLES["SC-057"])

        # GEN: a warning, not a verdict on the server (it cannot fail the run). The generator is this
        # process, or on a distributed master each worker process (the worst one is judged)
        workers_cpu = getattr(getattr(self.run, "live", None), "cpu", None)
        if workers_cpu:
            gen = self._workers_generator(workers_cpu, ls, le)
        else:
            gen_t, gen_v = st.series(samples, "generator_cpu_percent")
            gen = st.generator_saturation(gen_t, gen_v, start=ls, end=le, title=TITLES["GEN"])
        if gen["details"].get("warning"):
            gen["verdict"] = "warning"
        elif gen["verdict"] == st.INCONCLUSIVE:
            gen["verdict"] = st.SKIPPED
        out["GEN"] = gen
        return out

    def _workers_generator(self, workers_cpu: dict, start: float, end: float) -> dict:
        """GEN over the workers' own CPU samples (node -> [(t on the master's clock, % of a core)], one per
        worker report): the worst worker's verdict, naming it, with every worker's figures."""
        workers = getattr(self.run, "workers", {})
        judged = {}
        for node, pts in workers_cpu.items():
            w = workers.get(node)
            judged[w.label if w is not None else node] = st.generator_saturation(
                [t for t, _ in pts], [v for _, v in pts], start=start, end=end, title=TITLES["GEN"])
        every = {k: {"verdict": v["verdict"], "figure": v["figure"]} for k, v in judged.items()}
        label, gen = max(judged.items(), key=lambda kv: (bool(kv[1]["details"].get("warning")),
                                                        kv[1]["details"].get("max_percent", -1.0)))
        gen["figure"] = f"busiest of {len(judged)} worker process(es), {label}: {gen['figure']}"
        gen["details"]["workers"] = every
        return gen

    # ---- report --------------------------------------------------------------------------------------------
    def monitor_report(self) -> dict:
        """The monitor's samples as compact columns (MB, %, rounded) plus the phase marks."""
        mon = self.monitor
        rows = []
        for s in mon.samples():
            storage = st._storage_memory(s.storage or {}, None)
            rows.append([round(s.t, 2),
                         _r(s.server_rss_bytes / st.MB if s.server_rss_bytes is not None else None),
                         _r(s.server_cpu_percent), s.connections, s.subscriptions,
                         _r(s.generator_cpu_percent),
                         _r(s.generator_rss_bytes / st.MB if s.generator_rss_bytes is not None else None),
                         _r(storage / st.MB if storage is not None else None),
                         s.error is None])
        rss = [r[1] for r in rows if r[1] is not None]
        marks: dict = {}
        for name, t in mon.marks():
            marks.setdefault(name, []).append(round(t, 2))
        return {"interval": mon.interval, "server_pid": mon.server_pid, "local": mon.local,
                "cpu_count": mon.cpu_count, "polls": mon.polls, "gaps": mon.gaps,
                "server_gone_at": mon.server_gone_at,
                "marks": {k: (v[0] if len(v) == 1 else v) for k, v in marks.items()},
                "columns": ["t", "server_rss_mb", "server_cpu_pct", "connections", "subscriptions",
                            "generator_cpu_pct", "generator_rss_mb", "storage_mem_mb", "stats_ok"],
                "rows": rows,
                "summary": {"server_rss_mb_min": min(rss, default=None), "server_rss_mb_max": max(rss, default=None),
                            "flushes": len(self.flush_times), "reads": len(self.tally.reads),
                            "read_p95_ms": _r(st.nearest_rank([r[1] for r in self.tally.reads if r[2]], 0.95))
                            if any(r[2] for r in self.tally.reads) else None}}


def _r(x, nd: int = 2):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), nd)


__all__ = ["StressRecorder", "skipped_verdicts", "STRESS_IDS", "NOT_STRESS", "error_kind"]
