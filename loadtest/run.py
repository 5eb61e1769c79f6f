"""One verified run: set-up, the start barrier, the drain, the server's counters, the verdict.

Lifecycle (hooked to Locust's events in ``loadtest.plugin``):

1. ``test_start``  → ``Run.start()``: a fresh namespace, tables and users; the ledger.
2. Listener users connect, subscribe and report ready; writer users wait at the barrier until every
   listener is ready (or the barrier times out, then late listeners are judged from their own window).
3. Run time ends: Locust stops the users (writers stop writing; a write cut off mid-flight is
   recorded with an unknown outcome).
4. ``test_stop``   → ``Run.finish()``: listeners stay connected until every expected change has
   arrived or the drain times out; the server's per-subscription ``changes`` counters are read while
   they are still connected; then the sessions close and the verifier gives the verdict.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import gevent
import gevent.event

from checks.ledger import WriteLedger
from checks.model import Workload
from kalamclient import KalamHttp

from . import provision as prov_mod
from .options import parse_accept_known
from .pacing import TokenBucket
from .verification import verify_and_report
from .workloads import OpMix, subscriptions_for, tables_for

log = logging.getLogger(__name__)


class AdminCredentials:
    """The admin account, from the environment only (never from the command line, never printed)."""

    def __init__(self, user: str, password: str):
        self.user = user
        self._password = password

    @property
    def password(self) -> str:
        return self._password

    def __repr__(self) -> str:
        return f"AdminCredentials(user={self.user!r}, password=***)"

    @classmethod
    def from_env(cls) -> "AdminCredentials":
        password = os.environ.get("KALAMDB_ADMIN_PASSWORD") or os.environ.get("KALAMDB_ROOT_PASSWORD")
        if not password:
            raise SystemExit("KALAMDB_ADMIN_PASSWORD is not set: give the admin (root or dba) password of the "
                             "KalamDB server in the environment (user: KALAMDB_ADMIN_USER, default root)")
        return cls(os.environ.get("KALAMDB_ADMIN_USER", "root"), password)


class Run:
    def __init__(self, environment, base_url: str, admin: AdminCredentials):
        o = environment.parsed_options
        self.env = environment
        self.options = o
        self.base_url = base_url.rstrip("/")
        self.admin = admin
        self.workload = o.workload
        self.mix = OpMix.parse(o.op_mix)
        self.accepted_known = parse_accept_known(o.accept_known)
        self.auth_bucket = TokenBucket(o.auth_rate, burst=min(5.0, o.auth_rate))
        self.ping_interval = 5.0
        # one ledger per table: the verifier reconciles each subscription against its table's ledger
        self.ledgers = {t.key: WriteLedger(Workload(table=t.key, table_kind=t.kind, content_columns=t.content_columns))
                        for t in tables_for(self.workload, "ns")}
        self.sessions = []
        self.writers_may_start = gevent.event.Event()
        self.expected_listeners = o.listeners
        self.ready_listeners = 0
        self.failed_listeners: list[str] = []
        self.started_at = None
        self.writing_started_at = None
        self.writing_stopped_at = None
        self.finished = False
        self.verdicts = None
        self.report = None
        self.prov = None
        self.admin_http = None
        self._next_writer = 0
        self._next_listener = 0
        self._next_reader = 0
        self._tokens: dict[str, str] = {}
        self._token_lock = threading.Lock()
        self.flags: dict = {}
        self._last_acked = None
        self.server_stats_at_end = None
        self.stress = None  # loadtest.stress.StressRecorder with --stress
        self.tally = None   # loadtest.stress.RequestTally with --stress: the stress recorder's, or a worker's own

    # ---- set-up --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.time()
        self.admin_http = KalamHttp(self.base_url, timeout=30.0)
        self.auth_bucket.acquire()
        prov_mod.with_rate_limit_retry(lambda: self.admin_http.login(self.admin.user, self.admin.password),
                                       what="admin login")
        o = self.options
        self.prov = prov_mod.provision(self.admin_http, self.workload, o.writers, o.listeners,
                                       readers=o.readers, probe=o.stress and o.leak_probe > 0)
        if o.stress:
            from .stress import StressRecorder

            self.stress = StressRecorder(self)
            self.tally = self.stress.tally
            self.stress.start()
        if self.expected_listeners == 0:
            self._open_barrier("no listeners")
        else:
            gevent.spawn_later(self.options.barrier_timeout, self._barrier_timeout)

    # ---- stress evidence (--stress) -------------------------------------------------------------------------
    def record_read(self, t: float, latency_ms: float, ok: bool) -> None:
        """A reader's SELECT (S3, S6, S10)."""
        if self.tally is not None:
            self.tally.record_read(t, latency_ms, ok)

    def subscription_counts(self) -> tuple[list, int]:
        """([(subscription key, user, subscription id, changes received on its current connection)],
        acknowledged writes so far), read now, for S8's series next to the server's system.live."""
        rows = [(st.log.info.key, s.account.user, sid, st.epoch_received)
                for s in self.sessions for sid, st in s.subs.items()]
        return rows, (self.tally.writes_ok if self.tally is not None else 0)

    def claim_writer(self):
        if self._next_writer >= len(self.prov.writers):
            return None
        acc = self.prov.writers[self._next_writer]
        self._next_writer += 1
        return acc

    def claim_listener(self):
        if self._next_listener >= len(self.prov.listeners):
            return None
        acc = self.prov.listeners[self._next_listener]
        self._next_listener += 1
        return acc

    def claim_reader(self):
        readers = self.prov.readers if self.prov else []
        if self._next_reader >= len(readers):
            return None
        acc = readers[self._next_reader]
        self._next_reader += 1
        return acc

    @property
    def humans(self) -> list[str]:
        return [a.user for a in self.prov.listeners]

    def login(self, account) -> KalamHttp:
        http = KalamHttp(self.base_url, timeout=10.0)

        def attempt():
            self.auth_bucket.acquire()
            return http.login(account.user, account.password)

        prov_mod.with_rate_limit_retry(attempt, what=f"login {account.user}")
        with self._token_lock:
            self._tokens[account.user] = http.access_token
        return http

    def token_for(self, account) -> str:
        with self._token_lock:
            token = self._tokens.get(account.user)
        if token is None:
            token = self.login(account).access_token
        return token

    # ---- barrier -------------------------------------------------------------------------------------------
    def new_listener_session(self, account, on_delivery=None):
        from .listening import ListenerSession

        specs = subscriptions_for(self.workload, self.prov.namespace, account.user)
        session = ListenerSession(self, account, specs, batch_size=self.options.snapshot_batch_size,
                                  on_delivery=on_delivery)
        self.sessions.append(session)
        return session

    def listener_ready(self, account) -> None:
        self.ready_listeners += 1
        if self.ready_listeners >= self.expected_listeners:
            self._open_barrier(f"all {self.ready_listeners} listeners ready")

    def listener_failed(self, account, why: str) -> None:
        self.failed_listeners.append(f"{account.user}: {why}")
        self.expected_listeners -= 1
        if self.ready_listeners >= self.expected_listeners:
            self._open_barrier("remaining listeners ready")

    def _barrier_timeout(self) -> None:
        if not self.writers_may_start.is_set():
            self.flags["barrier_timed_out"] = True
            self._open_barrier(f"barrier timed out with {self.ready_listeners}/{self.expected_listeners} listeners ready")

    def _open_barrier(self, why: str) -> None:
        if not self.writers_may_start.is_set():
            log.info("writers start: %s", why)
            self.writing_started_at = time.time()
            if self.stress is not None:
                self.stress.load_started(self.writing_started_at)
            self.writers_may_start.set()

    # ---- end of run ----------------------------------------------------------------------------------------
    def _drain(self) -> None:
        """Keep listeners connected until arrivals settle (nothing new for drain_quiet s) or the timeout."""
        o = self.options
        deadline = time.time() + o.drain_timeout
        last_total, last_change = -1, time.time()
        while True:
            total = sum(s.received_total() for s in self.sessions)
            now = time.time()
            if total != last_total:
                last_total, last_change = total, now
            if self._all_delivered() and now - last_change >= min(0.5, o.drain_quiet):
                break
            if now - last_change >= o.drain_quiet:
                break
            if now >= deadline:
                self.flags["drain_timed_out"] = True
                log.warning("drain timed out after %.0fs", o.drain_timeout)
                break
            gevent.sleep(0.1)
        self.flags["drain_seconds"] = round(time.time() - self.writing_stopped_at, 3)

    def _all_delivered(self) -> bool:
        """Cheap early exit for the drain: each subscription has seen, per writer, the newest acknowledged
        write it must see (per-writer order then implies the earlier ones came, or are lost)."""
        from checks.model import OP_DELETE, OUTCOME_ACK

        if self._last_acked is None:
            last: dict = {}
            for key, led in self.ledgers.items():
                for (i, writer, wseq, op, outcome, owner, group, *_rest) in led.iter_writes():
                    if outcome == OUTCOME_ACK and op != OP_DELETE:  # a tombstone carries the older n
                        for scope in ((key, "", ""), (key, owner, group)):
                            last.setdefault(scope, {})[writer] = max(wseq, last.get(scope, {}).get(writer, 0))
            self._last_acked = last
        for s in self.sessions:
            if s.vanished:
                continue
            for st in s.subs.values():
                spec = st.spec
                want = self._last_acked.get((spec.table.key, spec.owner, spec.group), {})
                if any(st.max_n.get(w, 0) < n for w, n in want.items()):
                    return False
        return True

    def _read_counters(self) -> dict | None:
        """system.live changes per (user, subscription id), read while the listeners are still connected."""
        try:
            res = prov_mod.with_rate_limit_retry(
                lambda: self.admin_http.query(
                    "SELECT user_id, subscription_id, connection_id, changes FROM system.live LIMIT 1000"),
                what="read system.live")
        except Exception as exc:
            log.warning("could not read system.live counters: %s", exc)
            self.flags["counters_error"] = str(exc)
            return None
        counters: dict = {}
        for row in res.dicts():
            key = (row["user_id"], row["subscription_id"])
            counters.setdefault(key, []).append(int(row["changes"]))
        return counters

    def _read_stats(self) -> dict | None:
        """system.stats at the end of the run (figures for the report; the stand-in adds fault counts)."""
        if self.admin_http is None or self.flags.get("setup_error"):
            return None
        try:
            res = self.admin_http.query("SELECT metric_name, metric_value FROM system.stats")
            return {r["metric_name"]: r["metric_value"] for r in res.dicts()}
        except Exception as exc:
            log.warning("could not read system.stats: %s", exc)
            return None

    def finish(self, interrupted: bool = False) -> dict | None:
        if self.finished:
            return self.report
        self.finished = True
        self.writing_stopped_at = time.time()
        self.writers_may_start.set()  # release writers still waiting, so they end
        self.flags["interrupted"] = interrupted
        if self.stress is not None:
            self.stress.load_ended(self.writing_stopped_at)
        if not interrupted and self.sessions:
            self._drain()
        now = time.time()
        for s in self.sessions:
            for st in s.subs.values():
                st.log.finished(now)
        counters = self._read_counters() if self.sessions and not interrupted else None
        if self.stress is not None:
            self.stress.stop_sampling()
            if not interrupted:
                self.stress.leak_probe()  # S4, while the listeners are still connected
        self.server_stats_at_end = self._read_stats()
        for s in self.sessions:
            s.close()
        if self.stress is not None:
            self.stress.release(interrupted)  # S5: keep sampling through the release window
        self.report = verify_and_report(self, counters)
        if self.options.cleanup and self.prov is not None:
            prov_mod.cleanup(self.admin_http, self.prov)
        return self.report
