"""One listener's live session: a WebSocket, its subscriptions, and the record of everything that arrives.

The session is owned by the run, not by the Locust user: Locust kills user greenlets when the run
time is up, but listeners must stay connected through the drain (until every expected change has
arrived) and until the server's ``changes`` counters have been read. So the reader greenlet is
spawned here and lives until the run closes the session.
"""
from __future__ import annotations

import functools
import logging
import socket
import time
from dataclasses import dataclass

import gevent

from checks.arrivals import ArrivalLog, SubscriptionInfo
from checks.model import KIND_BY_CHANGE_TYPE, KIND_SNAPSHOT, seq_commit_ms
from kalamclient import LiveConnection
from kalamclient.errors import ConnectError, KalamError
from kalamclient.events import (AuthError, Change, Closed, InitialDataBatch, MalformedFrame, ServerError,
                                SubscriptionAck)

from .compiled import speedups

log = logging.getLogger(__name__)


def collect_reads(seconds: float) -> bool:
    """Let this thread's gevent loop gather readiness for up to ``seconds`` before each poll (libev's
    ``ev_set_io_collect_interval``; 0 = poll at once, libev's default), so that one wake-up serves the
    frames that reached several sockets meanwhile. Timers are not delayed by it; a frame keeps its kernel
    receive stamp, but a socket's frames that arrive within one interval are read at once and share the
    read's stamp (the later frame's). False where it cannot apply (a loop other than libev's)."""
    try:
        from gevent.libev import corecext
    except ImportError:   # gevent built without libev's extension
        return False
    loop = gevent.get_hub().loop
    if not isinstance(loop, corecext.loop):
        return False
    import ctypes
    # corecext exports libev's symbols; loading its own path again returns the module already loaded
    fn = ctypes.CDLL(corecext.__file__).ev_set_io_collect_interval
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_double], None
    fn(loop.ptr, float(seconds))
    return True


@dataclass(frozen=True)
class SlowReading:
    """A slow consumer (--slow-listeners): it stops reading for ``pause`` s every ``every`` s while the
    writers write, with a socket receive buffer of ``rcvbuf`` bytes, so that the server's queue fills."""

    pause: float
    every: float
    rcvbuf: int


class SubscriptionState:
    __slots__ = ("spec", "log", "last_seq", "ready", "failed", "received", "expect_batch", "max_n", "epoch_received",
                 "names")

    def __init__(self, spec, arrival_log):
        self.spec = spec
        self.log = arrival_log
        # Locust's request name of each change type ("events insert", ...)
        self.names = {ct: f"{spec.subscription_id} {ct}" for ct in ("insert", "update", "delete")}
        self.last_seq = None
        self.ready = False
        self.failed = None  # error text when the server refused the subscription
        self.received = 0
        self.epoch_received = 0  # change messages received on the current connection (what system.live counts)
        self.expect_batch = False
        self.max_n = {}  # writer -> highest n seen: lets the drain stop as soon as everything is in


class ListenerSession:
    def __init__(self, run, account, specs, *, batch_size: int, on_delivery=None, max_resume_attempts: int = 10,
                 slow: SlowReading | None = None):
        self.run = run
        self.slow = slow
        self.pauses = 0            # how often a slow listener stopped reading
        self._next_pause = None
        self.account = account
        self.batch_size = batch_size
        self.on_delivery = on_delivery  # callable(name, latency_ms) → Locust statistics
        # a batching on_delivery (loadtest.run.locuststats.DeliveryStats) has idle(), called when the reader
        # found nothing waiting, and flush(), at the end
        self._idle_deliveries = getattr(on_delivery, "idle", None)
        self._flush_deliveries = getattr(on_delivery, "flush", None)
        self.max_resume_attempts = max_resume_attempts
        self.subs: dict[str, SubscriptionState] = {}
        for spec in specs:
            info = SubscriptionInfo(listener=account.user, subscription_id=spec.subscription_id, owner=spec.owner,
                                    group=spec.group, table_kind=spec.table.kind, snapshot=batch_size > 0,
                                    content_columns=spec.table.content_columns)
            self.subs[spec.subscription_id] = SubscriptionState(spec, ArrivalLog(info))
        self.conn: LiveConnection | None = None
        self.reader: gevent.Greenlet | None = None
        self.closing = False
        self.forced = False
        self.vanished: str | None = None  # why the session lost its subscriptions for good
        self.disconnects: dict = {}  # close code -> count (unexpected ones)
        # every disconnect, expected (forced reconnect, our close) or not: {"t", "code", "listener",
        # "expected", "down_s"}; down_s is set when the session is back (or at close) for SC-057
        self.disconnect_log: list[dict] = []
        self.first_ready_at = None
        self.closed_at = None
        self.forced_reconnects = 0
        self.resumes = 0
        self.malformed = 0
        self.reconnects_refused = 0   # resume attempts the server refused to connect (an outage's evidence)
        self.connected_at = None
        # the harness's own lag (arrival, kernel stamp, to event) of the connections closed so far
        self._lag_frames = 0
        self._lag_sum = 0.0
        self._lag_max = 0.0

    # ---- connecting ----------------------------------------------------------------------------------------
    def _open(self) -> None:
        token = self.run.token_for(self.account)
        self.run.auth_bucket.acquire()
        sockopt = ((socket.SOL_SOCKET, socket.SO_RCVBUF, self.slow.rcvbuf),) if self.slow else ()
        conn = LiveConnection(self.run.base_url, token, compress=True, auth="header",
                              ping_interval=self.run.ping_interval, connect_timeout=10.0, auto_next_batch=True,
                              sockopt=sockopt)
        conn.connect()
        self._fold_lag()
        self.conn = conn
        self.connected_at = time.time()

    def _fold_lag(self) -> None:
        old = self.conn
        if old is not None:
            self._lag_frames += old.frames
            self._lag_sum += old.lag_sum
            self._lag_max = max(self._lag_max, old.lag_max)

    def lag(self) -> tuple[int, float, float]:
        """(frames, sum of lags s, max lag s) over every connection of this session: how long frames
        waited in this process between their arrival and their event (not part of any latency)."""
        c = self.conn
        if c is None:
            return self._lag_frames, self._lag_sum, self._lag_max
        return self._lag_frames + c.frames, self._lag_sum + c.lag_sum, max(self._lag_max, c.lag_max)

    def _subscribe_all(self, resume: bool) -> None:
        for sid, st in self.subs.items():
            if st.failed:
                continue
            st.ready = False
            if resume:
                options = {"from": int(st.last_seq or 0)}
                if self.batch_size > 0:
                    options["batch_size"] = self.batch_size
            else:
                options = {"batch_size": self.batch_size} if self.batch_size > 0 else None
            st.expect_batch = options is not None
            st.epoch_received = 0
            st.log.subscribed(time.time(), resume_from=options["from"] if resume else None)
            self.conn.subscribe(sid, st.spec.sql, options)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while not all(st.ready or st.failed for st in self.subs.values()):
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"listener {self.account.user}: subscriptions not ready after {timeout:.0f}s")
            ev = self.conn.recv(timeout=min(left, 1.0))
            if ev is not None and not self._dispatch(ev):
                raise ConnectionError(f"listener {self.account.user}: connection closed while subscribing ({ev})")

    def start(self, timeout: float = 30.0) -> None:
        """Connect, subscribe and wait until every subscription is ready; then read in the background."""
        self._open()
        self._subscribe_all(resume=False)
        self._wait_ready(timeout)
        self.first_ready_at = time.time()
        self.reader = gevent.spawn(self._read_loop)

    # ---- reading -------------------------------------------------------------------------------------------
    def _dispatch(self, ev) -> bool:
        """Record one event. Returns False when the connection has ended."""
        cls = ev.__class__
        if cls is Change:
            st = self.subs.get(ev.subscription_id)
            if st is None:
                return True
            kind = KIND_BY_CHANGE_TYPE.get(ev.change_type)
            if kind is None:
                self.malformed += 1
                return True
            # record_row parses writer and n (the verifier reports a malformed row: writer "" or n -1)
            w, n = st.log.record_row(kind, ev.row, ev.old, ev.seq, ev.received_at)
            st.received += 1
            st.epoch_received += 1
            if w and n > st.max_n.get(w, 0):
                st.max_n[w] = n
            seq = ev.seq
            if seq is None:
                return True
            if st.last_seq is None or seq > st.last_seq:
                st.last_seq = seq
            if self.on_delivery is not None:
                # Locust's table shows latency from the commit time in _seq (known without the ledger);
                # the verifier's figures use the ledger and say which start time they count from.
                self.on_delivery(st.names[ev.change_type], ev.received_at * 1000.0 - seq_commit_ms(seq))
            return True
        if cls is InitialDataBatch:
            st = self.subs.get(ev.subscription_id)
            if st is None:
                return True
            for row in ev.rows:
                # record_row parses writer and n (a malformed row is recorded as such: writer "" or n -1)
                w, n = st.log.record_row(KIND_SNAPSHOT, row, None, None, ev.received_at)
                if w and n > st.max_n.get(w, 0):
                    st.max_n[w] = n
                try:
                    seq = int(row["_seq"])
                except (KeyError, TypeError, ValueError):
                    continue
                if st.last_seq is None or seq > st.last_seq:
                    st.last_seq = seq
            if ev.status == "ready" and not ev.has_more:
                self._mark_ready(st, ev.received_at)
            return True
        if cls is SubscriptionAck:
            st = self.subs.get(ev.subscription_id)
            # Without options the ack means ready. With options the ack repeats the first batch's control
            # and that batch (possibly empty) follows, so readiness comes with the batch.
            if st is not None and not st.expect_batch and ev.status == "ready":
                self._mark_ready(st, ev.received_at)
            return True
        if cls is ServerError:
            st = self.subs.get(ev.subscription_id)
            if st is not None and ev.code not in ("RATE_LIMIT_EXCEEDED",):
                st.failed = f"{ev.code}: {ev.message}"
                log.error("listener %s: subscription %s refused: %s", self.account.user, ev.subscription_id, st.failed)
            else:
                log.warning("listener %s: server error %s %s", self.account.user, ev.code, ev.message)
            return True
        if cls is MalformedFrame:
            self.malformed += 1
            if self.malformed <= 5:
                log.warning("listener %s: malformed frame: %s", self.account.user, ev.reason)
            return True
        if cls is Closed:
            return False
        if cls is AuthError:
            log.error("listener %s: auth error: %s", self.account.user, ev.message)
            return True
        return True

    def _change_handler(self):
        """Push mode's handler of a change: _dispatch, or where loadtest.run._speedups was built the same
        branch compiled (which hands _dispatch whatever it does not take itself). A subclass with its own
        _dispatch keeps it."""
        if speedups is None or type(self)._dispatch is not ListenerSession._dispatch:
            return self._dispatch
        return functools.partial(speedups.dispatch_change, self)

    def _mark_ready(self, st, t) -> None:
        if not st.ready:
            st.ready = True
            st.log.ready(t)

    def _pause_if_due(self) -> None:
        """A slow listener's pause: from T s after the writers start, S s without reading every T s, while
        the writers write (the drain then reads at full speed)."""
        run = self.run
        started = run.writing_started_at
        if started is None or run.writing_closed or run.finished:
            return
        if self._next_pause is None:
            self._next_pause = started + self.slow.every
        now = time.time()
        if now < self._next_pause:
            return
        while self._next_pause <= now:
            self._next_pause += self.slow.every
        self.pauses += 1
        until = now + self.slow.pause
        # the pause ends early when the writers stop: the drain must read what the server still holds
        while time.time() < until and not (run.writing_closed or run.finished or self.closing):
            gevent.sleep(min(0.05, until - time.time()))

    def _read_loop(self) -> None:
        idle = self._idle_deliveries
        slow = self.slow is not None
        pushing = None
        while not self.closing:
            if slow:
                self._pause_if_due()   # a slow listener reads with recv(): it must be able to stop reading
            elif pushing is not self.conn:
                # changes are recorded in the event loop as they are read (kalamclient push mode: no
                # greenlet switch per wake-up); recv() returns the rest, in order
                pushing = self.conn
                pushing.push_changes(self._change_handler())
            ev = self.conn.recv(timeout=0.25)
            if ev is None:
                if idle is not None:
                    idle()
                continue
            if self._dispatch(ev):
                continue
            # the connection ended
            if self.closing:
                return
            now = time.time()
            for st in self.subs.values():
                st.log.disconnected(now)
            record = {"t": now, "code": ev.code, "listener": self.account.user, "expected": self.forced,
                      "down_s": None}
            self.disconnect_log.append(record)
            if self.forced:
                self.forced = False
                pause = getattr(self.run.options, "reconnect_pause", 0.0)
                if pause > 0:
                    gevent.sleep(pause)
            else:
                self.disconnects[ev.code] = self.disconnects.get(ev.code, 0) + 1
                log.warning("listener %s: connection closed unexpectedly (code %s %s); resuming",
                            self.account.user, ev.code, ev.reason)
            if not self._resume():
                record["down_s"] = time.time() - now
                return
            record["down_s"] = time.time() - now

    def _resume(self) -> bool:
        delay = 0.2
        for attempt in range(self.max_resume_attempts):
            if self.closing:
                return False
            try:
                self._open()
                self._subscribe_all(resume=True)
                self._wait_ready(30.0)
                self.resumes += 1
                return True
            except (KalamError, ConnectError, TimeoutError, ConnectionError, OSError) as exc:
                if isinstance(exc, (ConnectError, ConnectionError)):
                    self.reconnects_refused += 1
                log.warning("listener %s: resume attempt %d failed: %s", self.account.user, attempt + 1, exc)
                gevent.sleep(delay)
                delay = min(delay * 2, 3.0)
        self.vanished = f"could not resume after {self.max_resume_attempts} attempts"
        log.error("listener %s: %s", self.account.user, self.vanished)
        return False

    # ---- control -------------------------------------------------------------------------------------------
    def force_reconnect(self) -> None:
        """Drop the connection on purpose; the reader resumes from the last _seq seen (scenario L9)."""
        if self.conn is None or self.closing:
            return
        self.forced = True
        self.forced_reconnects += 1
        self.conn.close()

    def received_total(self) -> int:
        """Change messages received so far (the drain watches this number settle)."""
        return sum(st.received for st in self.subs.values())

    def close(self) -> None:
        self.closing = True
        self.closed_at = time.time()
        if self._flush_deliveries is not None:
            self._flush_deliveries()
        for record in self.disconnect_log:
            if record["down_s"] is None:  # still away when the run closed the session
                record["down_s"] = self.closed_at - record["t"]
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # closing is best effort; the record is already kept
                pass
        if self.reader is not None:
            self.reader.join(timeout=3.0)
            self.reader.kill(block=False)
