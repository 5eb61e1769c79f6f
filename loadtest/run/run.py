"""One verified run: set-up, the start barrier, the drain, the server's counters, the verdict.

Lifecycle (driven by ``loadtest.plugin``, which holds the one Locust listener of each event):

1. ``test_start``  → ``Run.start()``: a fresh namespace, tables and users; the ledger.
2. Listener users connect, subscribe and report ready; writer users wait at the barrier until every
   listener is ready (or the barrier times out, then late listeners are judged from their own window).
3. Run time ends: Locust stops the users (writers stop writing; a write cut off mid-flight is
   recorded with an unknown outcome).
4. ``test_stop``   → ``Run.finish()``: listeners stay connected until every expected change has
   arrived or the drain times out; the server's per-subscription ``changes`` counters are read while
   they are still connected; then the sessions close. It returns a ``Record``; the plugin hands it to
   the verifier (``loadtest.verdict``) and the view, then calls ``Run.close()`` (clean-up).
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

from ..options import join_step, listener_count, parse_accept_known, step_schedule
from . import drain
from . import provision as prov_mod
from .listening import ListenerSession, SlowReading, collect_reads
from .locuststats import DeliveryStats
from .generator import GeneratorProbe
from .pacing import TokenBucket
from .record import Record
from .stress import StressRecorder
from .workloads import OpMix, WriteGenerator, subscriptions_for, tables_for
from .writes import Writer

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

    MISSING = ("KALAMDB_ADMIN_PASSWORD is not set: give the admin (root or dba) password of the KalamDB server "
               "in the environment (user: KALAMDB_ADMIN_USER, default root)")

    @classmethod
    def from_env_or_error(cls) -> "AdminCredentials":
        password = os.environ.get("KALAMDB_ADMIN_PASSWORD") or os.environ.get("KALAMDB_ROOT_PASSWORD")
        if not password:
            raise prov_mod.SetupError(cls.MISSING)
        return cls(os.environ.get("KALAMDB_ADMIN_USER", "root"), password)

    @classmethod
    def from_env(cls) -> "AdminCredentials":
        """At start-up (--host given): a missing password ends the process with the message."""
        try:
            return cls.from_env_or_error()
        except prov_mod.SetupError as exc:
            raise SystemExit(str(exc)) from None


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
        # --step-load: the writers' rate over the writing window (each process from its own writing start,
        # which a distributed master's go message sets on every worker at once)
        self.step_schedule = step_schedule(o)
        self.id = prov_mod.new_run_id()   # names its namespace and users, and its directory of files
        self.started_at = None
        self.writing_started_at = None
        self.writing_stopped_at = None
        self.finished = False
        self.writing_closed = False   # no new write starts (Locust is stopping); in-flight ones finish
        self.writes_in_flight = 0
        self.write_failures: list = []   # (t, "refused" | "unknown"): the outage evidence (checks.evidence)
        self.generator = GeneratorProbe(timeline=self.step_schedule is not None)
        self.record = None
        self.prov = None
        self.admin_http = None
        self._next_writer = 0
        self._next_listener = 0
        self._next_reader = 0
        self.read_collect_s = 0.0   # the loop's collect interval now (_collect_reads)
        self._tokens: dict[str, str] = {}
        self._token_lock = threading.Lock()
        self.flags: dict = {}
        self.newest_acks = None   # the drain's targets (loadtest.run.drain), once the writers stopped
        self.server_stats_at_end = None
        self.server_info = None   # the server this process started (kind, url, log_path), for the record
        self.stress = None  # loadtest.run.stress.StressRecorder with --stress
        self.tally = None   # loadtest.run.stress.RequestTally with --stress: the stress recorder's, or a worker's own

    # ---- set-up --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.time()
        self.admin_http = KalamHttp(self.base_url, timeout=30.0)
        self.auth_bucket.acquire()
        try:
            prov_mod.with_rate_limit_retry(lambda: self.admin_http.login(self.admin.user, self.admin.password),
                                           what="admin login")
        except Exception as exc:
            raise prov_mod.login_error(exc, self.base_url, self.admin.user) from None
        o = self.options
        self.prov = prov_mod.provision(self.admin_http, self.workload, o.writers, listener_count(o), self.id,
                                       readers=o.readers, probe=o.stress and o.leak_probe > 0)
        if o.stress:
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
        if self.prov is None:   # set-up failed: no account for anyone
            return None
        if self._next_writer >= len(self.prov.writers):
            return None
        acc = self.prov.writers[self._next_writer]
        self._next_writer += 1
        self._collect_reads()
        return acc

    def claim_listener(self):
        if self.prov is None:   # set-up failed: no account for anyone
            return None
        if self._next_listener >= len(self.prov.listeners):
            return None
        acc = self.prov.listeners[self._next_listener]
        self._next_listener += 1
        self._collect_reads()
        return acc

    def claim_reader(self):
        readers = self.prov.readers if self.prov else []
        if self._next_reader >= len(readers):
            return None
        acc = readers[self._next_reader]
        self._next_reader += 1
        self._collect_reads()
        return acc

    def _collect_reads(self) -> None:
        """--read-collect-ms in a process that only listens: its loop gathers readiness before each poll, so a
        change that reached every socket is read in one wake-up, not one per socket (a paced feed woke it up
        to twice per change). The latencies keep the kernel's receive stamps. Off as soon as a writer or a
        reader runs here: their HTTP answers would wait in the loop, and Locust times them in user space."""
        only_listening = self._next_listener > 0 and self._next_writer == 0 and self._next_reader == 0
        want = self.options.read_collect_ms / 1000.0 if only_listening else 0.0
        if want != self.read_collect_s:
            self.read_collect_s = want if collect_reads(want) else 0.0

    def write_rate_now(self) -> float:
        """Writes/s per writer now: --write-rate, or the stepped load's step."""
        if self.step_schedule is None or self.writing_started_at is None:
            return self.options.write_rate
        return self.step_schedule.rate_at(time.time() - self.writing_started_at)

    @property
    def run_id(self) -> str | None:
        return self.prov.run_id if self.prov else None

    @property
    def namespace(self) -> str | None:
        return self.prov.namespace if self.prov else None

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

    # ---- what the users drive ------------------------------------------------------------------------------
    def new_writer(self):
        """A WriterUser's writer: an account, logged in, past the start barrier. None when every writer
        account is taken (more writer users than provisioned accounts)."""
        account = self.claim_writer()
        if account is None:
            return None
        o = self.options
        gen = WriteGenerator(self.workload, self.prov.namespace, account.user, self.humans, self.mix,
                             stream_tokens=o.stream_tokens, payload_bytes=o.payload_bytes,
                             rows_per_insert=o.rows_per_insert)
        writer = Writer(self, account, self.login(account), gen)
        self.writers_may_start.wait()
        return writer

    def new_listener(self):
        """A ListenerUser's session (not started), its deliveries counted in Locust's statistics. None
        when every listener account is taken."""
        account = self.claim_listener()
        if account is None:
            return None
        return self.new_listener_session(account, on_delivery=DeliveryStats(self.env))

    def wait_to_join(self, session) -> bool:
        """--step-listeners: a listener of a later step waits for its step's start before it subscribes.
        False when the writing ended first: the listener never joins the run (its session is dropped, and
        the verdict does not expect it: loadtest.verdict.capacity.listeners_expected)."""
        k = join_step(self.options, self.prov.listeners.index(session.account)) if self.prov is not None else 0
        if k == 0:
            return True
        joined = False
        try:   # Locust stops its users at the end of the run: a listener still waiting then never joined
            self.writers_may_start.wait()
            if self.writing_started_at is None:   # set-up failed or the run ended before the writers started
                return False
            joins_at = self.writing_started_at + k * self.options.step_every
            while not (self.finished or self.writing_closed) and time.time() < joins_at:
                gevent.sleep(min(0.25, max(0.0, joins_at - time.time())))
            joined = not (self.finished or self.writing_closed)
            return joined
        finally:
            if not joined and session in self.sessions:
                self.sessions.remove(session)

    def start_listener(self, session) -> Exception | None:
        """Subscribe and wait until ready; a failure is reported (its subscriptions' verdicts are then
        inconclusive) and returned."""
        try:
            session.start(timeout=self.options.barrier_timeout)
            self.listener_ready(session.account)
            return None
        except Exception as e:
            session.vanished = f"could not subscribe: {e}"
            self.listener_failed(session.account, str(e))
            return e

    def reconnect_every(self, session) -> float:
        """Seconds between forced reconnects of this listener (L9), 0 = never: --reconnect-every for a
        --reconnect-share of the listeners."""
        o = self.options
        index = self.prov.listeners.index(session.account)
        every = max(1, round(1 / o.reconnect_share)) if o.reconnect_share > 0 else 0
        return o.reconnect_every if (o.reconnect_every > 0 and every and index % every == 0) else 0

    # ---- barrier -------------------------------------------------------------------------------------------
    def slow_listeners(self) -> list[str]:
        """The listeners that are slow consumers (--slow-listeners N): the first N accounts, the same on
        every process of a distributed run."""
        n = self.options.slow_listeners
        return [a.user for a in self.prov.listeners[:n]] if self.prov is not None and n else []

    def new_listener_session(self, account, on_delivery=None, session_class=ListenerSession):
        o = self.options
        specs = subscriptions_for(self.workload, self.prov.namespace, account.user)
        slow = (SlowReading(o.slow_pause, o.slow_every, o.slow_rcvbuf)
                if account.user in self.slow_listeners() else None)
        session = session_class(self, account, specs, batch_size=o.snapshot_batch_size,
                                on_delivery=on_delivery, slow=slow)
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
            self.generator.start()
            if self.stress is not None:
                self.stress.load_started(self.writing_started_at)
            self.writers_may_start.set()

    # ---- end of run ----------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Keep listeners connected until arrivals settle (loadtest.run.drain) or the timeout."""
        o = self.options
        if self.newest_acks is None:
            self.newest_acks = drain.newest_acks(self.ledgers)
        deadline = time.time() + o.drain_timeout
        last_total, last_change = -1, time.time()
        while True:
            total = sum(s.received_total() for s in self.sessions)
            now = time.time()
            if total != last_total:
                last_total, last_change = total, now
            if drain.should_stop(delivered=drain.all_delivered(self.sessions, self.newest_acks),
                                 quiet_s=now - last_change, quiet_needed=o.drain_quiet):
                break
            if now >= deadline:
                self.flags["drain_timed_out"] = True
                log.warning("drain timed out after %.0fs", o.drain_timeout)
                break
            gevent.sleep(0.1)
        self.flags["drain_seconds"] = round(time.time() - self.writing_stopped_at, 3)

    def end_logs(self, t: float, drained: bool = True) -> None:
        drain.end_logs(self.sessions, t, drained)

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
            self.flags["stats_error"] = str(exc)
            return None

    def stop_writing(self, timeout: float = 10.0) -> None:
        """No new write starts, and the ones in flight get their answer before Locust kills the writers: a
        write cut off between send and answer would be left with an unknown outcome although the server
        committed it (and its change would then be neither expected nor counted lost)."""
        self.writing_closed = True
        self.writers_may_start.set()
        deadline = time.monotonic() + timeout
        while self.writes_in_flight and time.monotonic() < deadline:
            gevent.sleep(0.01)
        if self.writes_in_flight:
            log.warning("%d write(s) still unanswered after %.0fs: their outcome is unknown",
                        self.writes_in_flight, timeout)

    def finish(self, interrupted: bool = False) -> Record | None:
        """The end of the run: stop the writers, drain, read the counters, close the sessions."""
        if self.finished:
            return self.record
        if not interrupted:
            self.stop_writing()
        self.generator.stop()
        self.finished = True
        self.writing_stopped_at = time.time()
        self.writers_may_start.set()  # release writers still waiting, so they end
        self.flags["interrupted"] = interrupted
        if self.stress is not None:
            self.stress.load_ended(self.writing_stopped_at)
        if not interrupted and self.sessions:
            self.drain()
        self.end_logs(time.time(), drained=not interrupted)
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
        self.record = self.to_record(counters)
        return self.record

    def to_record(self, counters, **extra) -> Record:
        return Record(options=self.options, base_url=self.base_url, workload=self.workload,
                      accepted_known=frozenset(self.accepted_known),
                      run_id=self.prov.run_id if self.prov else None,
                      namespace=self.prov.namespace if self.prov else None,
                      ledgers=self.ledgers, sessions=list(self.sessions), flags=self.flags,
                      failed_listeners=list(self.failed_listeners), started_at=self.started_at,
                      writing_started_at=self.writing_started_at, writing_stopped_at=self.writing_stopped_at,
                      counters=counters, server_stats_at_end=self.server_stats_at_end, stress=self.stress,
                      write_failures=list(self.write_failures), slow_listeners=self.slow_listeners(),
                      **{"generator": self.generator.figures, "server": self.server_info,
                         "generator_timeline": [(t, c, lag, "this process") for t, c, lag in self.generator.timeline or ()],
                         **extra})

    def close(self, report: dict | None = None) -> None:
        """After the verdict: remove the run's namespace and users (--cleanup)."""
        if self.options.cleanup and self.prov is not None and self.admin_http is not None:
            prov_mod.cleanup(self.admin_http, self.prov)
