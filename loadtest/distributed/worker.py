"""A worker's side of a distributed run: the WorkerRun and the WorkerAgent that talks to the master.

See ``loadtest.distributed`` for the protocol.
"""
from __future__ import annotations

import logging
import math
import os
import random
import resource
import socket
import time
import uuid

import gevent
import gevent.event

from checks.clock import clock_report, estimate_offset
from checks.ledger import WriteLedger
from checks.model import OUTCOME_PENDING
from checks.verifier import reconcile
from checks.wire import pack, result_to_wire, unpack

from ..run.listening import ListenerSession
from ..run.pacing import TokenBucket
from ..run.provision import Account, Provisioned
from ..run.run import AdminCredentials, Run
from ..run.stress import RequestTally
from ..run.workloads import tables_for
from ..verdict.timeseries import TimeSeries
from ..view.livefeed import WorkerFeed
from .hooks import DiscardingListenerSession
from .messages import NTP_ROUNDS, now as _now
from .transfers import Transfers

log = logging.getLogger(__name__)


class WorkerRun(Run):
    """A worker's view of the run: users claim accounts from the master, listeners report ready to
    it, the barrier opens on its word; the end is driven by the master (see the module docstring)."""

    distributed = True

    def __init__(self, environment, agent, test_clock_offset: float = 0.0, discard_share: float = 0.0):
        super().__init__(environment, environment.host or "http://unset", AdminCredentials("", ""))
        self.agent = agent
        self.test_clock_offset = test_clock_offset   # test hooks (loadtest.distributed.hooks)
        self.discard_share = discard_share
        self.welcomed = gevent.event.Event()
        self.run_key = None
        self.theta = 0.0          # master clock - this worker's clock
        self._shifted = False
        self.ntp_rounds: list = []
        self.clock_est = None
        self.discarded = 0
        self._reqs: dict = {}
        self._outbox = {"claims": [], "ready": [], "failed": []}
        self._flusher = None
        self.feed = WorkerFeed()
        self.tally = RequestTally() if self.options.stress else None   # --stress: shipped at the end
        for led in self.ledgers.values():
            led._clock = _now

    def start(self) -> None:
        self.started_at = _now()
        self._flusher = gevent.spawn(self._flush_loop)
        self.agent.send("klt:hello", {"hostname": socket.gethostname(), "pid": os.getpid(),
                                      "test_clock_offset": self.test_clock_offset})

    def welcome(self, d: dict) -> None:
        if d.get("setup_error"):
            self.flags["setup_error"] = d["setup_error"]
            self.finished = True
        self.run_key = d["run"]
        if d.get("base_url"):
            self.base_url = d["base_url"].rstrip("/")
        ns = d.get("namespace") or ""
        self.prov = Provisioned(run_id=d["run"], namespace=ns,
                                writers=[Account(u, "") for u in d["writers"]],
                                listeners=[Account(u, "") for u in d["listeners"]],
                                tables=tables_for(self.workload, ns) if ns else [],
                                readers=[Account(u, "") for u in d["readers"]])
        n = max(1, int(d.get("n_workers") or 1))
        rate = self.options.auth_rate / n   # KalamDB limits auth per IP: share the budget
        self.auth_bucket = TokenBucket(rate, burst=min(5.0, rate))
        if d.get("finished"):
            self.finished = True
        self.welcomed.set()
        if d.get("go"):
            self.go(d.get("t_go"))
        gevent.spawn(self._clock_rounds, "start")

    def go(self, t) -> None:
        if not self.writers_may_start.is_set():
            self.writing_started_at = _now()
            self.generator.start()
            self.writers_may_start.set()

    # ---- accounts ------------------------------------------------------------------------
    def _claim(self, kind: str):
        if not self.welcomed.wait(timeout=120) or self.finished:
            return None
        req = uuid.uuid4().hex[:12]
        ar = self._reqs[req] = gevent.event.AsyncResult()
        self._outbox["claims"].append([req, kind])
        try:
            acc, index = ar.get(timeout=60)
        except gevent.Timeout:
            log.error("no account from the master for a %s user after 60 s", kind)
            return None
        finally:
            self._reqs.pop(req, None)
        if acc is None:
            return None
        account = Account(acc["user"], acc["password"])
        lst = {"writer": self.prov.writers, "listener": self.prov.listeners, "reader": self.prov.readers}[kind]
        if 0 <= index < len(lst):
            lst[index] = account
        return account

    def claimed(self, answers) -> None:
        for req, acc, index in answers:
            ar = self._reqs.get(req)
            if ar is not None:
                ar.set((acc, index))

    def claim_writer(self):
        return self._claim("writer")

    def claim_listener(self):
        return self._claim("listener")

    def claim_reader(self):
        return self._claim("reader")

    # ---- barrier -------------------------------------------------------------------------
    def new_listener_session(self, account, on_delivery=None, session_class=ListenerSession):
        if self.discard_share <= 0:
            return super().new_listener_session(account, on_delivery, session_class)
        session = super().new_listener_session(account, on_delivery, DiscardingListenerSession)
        session.discard_share = self.discard_share
        session.discard_rng = random.Random(account.user)
        return session

    def listener_ready(self, account) -> None:
        self.ready_listeners += 1
        self._outbox["ready"].append(account.user)

    def listener_failed(self, account, why: str) -> None:
        self.failed_listeners.append(f"{account.user}: {why}")
        self._outbox["failed"].append([account.user, why])

    def _flush_loop(self) -> None:
        """One message per kind every 50 ms at most (claims and readiness are batched)."""
        while True:
            gevent.sleep(0.05)
            if self.run_key is None:
                continue
            ob = self._outbox
            if ob["claims"]:
                reqs, ob["claims"] = ob["claims"], []
                self.agent.send("klt:claim", {"run": self.run_key, "reqs": reqs})
            if ob["ready"] or ob["failed"]:
                ready, failed = ob["ready"], ob["failed"]
                ob["ready"], ob["failed"] = [], []
                self.agent.send("klt:ready", {"run": self.run_key, "ready": ready, "failed": failed})

    # ---- clock ---------------------------------------------------------------------------
    def _clock_rounds(self, when: str) -> None:
        for i in range(NTP_ROUNDS):
            got = self.agent.ntp_round()
            if got is not None:
                self.ntp_rounds.append(got)
            gevent.sleep(0.03)
        self.clock_est = estimate_offset(self.ntp_rounds)
        if self.clock_est is not None:
            self.theta = self.clock_est["theta"]
            self.agent.send("klt:clock", {"run": self.run_key, "clock": clock_report(self.clock_est)})

    # ---- the end, driven by the master ---------------------------------------------------
    def finish(self, interrupted: bool = False):
        """Locust stopped this worker's users (or the worker quits): writers stop; the sessions stay
        open for the master's end handshake (closed here only when the worker quits)."""
        self.finished = True
        self.writers_may_start.set()
        if self.writing_stopped_at is None:
            self.writing_stopped_at = _now()
        if interrupted:
            for s in self.sessions:
                s.close()
        return None

    def end_phase(self, d: dict) -> None:
        phase = d["phase"]
        if phase == "ledger":
            self._send_ledger()
        elif phase == "results":
            self._send_results()
        elif phase == "done":
            log.info("run %s over on the master: %s", self.run_key, d.get("verdict"))
            self.agent.run_over(self)  # a next run on this worker starts from nothing

    def _send_ledger(self) -> None:
        self.finished = True
        self.writers_may_start.set()
        if self.writing_stopped_at is None:
            self.writing_stopped_at = _now()
        self.generator.stop()
        # writes in flight get their answer (a user Locust killed mid-write never will)
        deadline = _now() + 12.0
        while _now() < deadline and self.env.runner.user_count > 0:
            if not any(led._outcome.count(OUTCOME_PENDING) for led in self.ledgers.values()):
                break
            gevent.sleep(0.05)
        self._clock_rounds("end")
        if not self._shifted:
            self.feed.close_ledgers(self.ledgers, _now(), self.theta)
            for led in self.ledgers.values():
                led.shift_times(self.theta)
            self._shifted = True
        keys = list(self.ledgers)
        writes = sum(len(led) for led in self.ledgers.values())
        payload = pack({"tables": keys}, [self.ledgers[k].to_bytes() for k in keys])
        self.agent.transfers.send("ledger", payload, {"run": self.run_key, "clock": clock_report(self.clock_est),
                                                      "meta": {"writes": writes}}, timeout=20.0)

    def merged(self, payload: bytes, meta: dict) -> None:
        header, blobs = unpack(payload)
        for key, raw in zip(header["tables"], blobs):
            self.ledgers[key] = WriteLedger.from_bytes(raw)
        self.newest_acks = None
        drained = meta.get("drain", True)
        if drained and self.sessions:
            self.drain()
        self.end_logs(_now(), drained=drained)
        self.agent.send("klt:drained", {"run": self.run_key,
                                        "drain_timed_out": bool(self.flags.get("drain_timed_out")),
                                        "drain_seconds": self.flags.get("drain_seconds"),
                                        "received": sum(s.received_total() for s in self.sessions)})

    def live_part(self) -> dict | None:
        """This worker's counts since its last report, for the master's live view."""
        if self.run_key is None:
            return None
        self.feed.add_writes(self.ledgers, _now(), self.theta)
        self.feed.add_arrivals(self.sessions, self.theta)
        return self.feed.part(self.run_key, self.sessions, _now() + self.theta)

    def _send_results(self) -> None:
        t0 = time.perf_counter()
        for s in self.sessions:
            s.close()
        self.feed.close_logs(self.sessions, self.theta)
        # the exact per-second series of this worker's arrivals, against the merged ledger
        series = TimeSeries(getattr(self.options, "latency_from", "sent"))
        results, blobs, sessions = [], [], []

        def on_master(t):
            return None if t is None else t + self.theta

        for s in self.sessions:
            subs = []
            for sid, st in s.subs.items():
                st.log.shift_times(self.theta)
                r = reconcile(self.ledgers[st.spec.table.key], st.log)   # one subscription at a time: heartbeats
                if s.vanished:
                    r.vanished = True
                d, b = result_to_wire(r)
                results.append(d)
                blobs.extend(b)
                series.add_log(st.log, self.ledgers[st.spec.table.key])
                spec = st.spec
                subs.append({"sid": sid, "owner": spec.owner, "group": spec.group, "table": spec.table.key,
                             "table_kind": spec.table.kind, "content_columns": list(spec.table.content_columns),
                             "received": st.received})
                gevent.sleep(0)  # heartbeats keep flowing while reconciling
            dlog = [{k: (v if not (isinstance(v, float) and math.isnan(v)) else None) for k, v in x.items()}
                    for x in s.disconnect_log]
            for x in dlog:
                if x.get("t") is not None:
                    x["t"] += self.theta
            sessions.append({"user": s.account.user, "vanished": s.vanished, "subs": subs,
                             "disconnects": {str(k): v for k, v in s.disconnects.items()},
                             "forced_reconnects": s.forced_reconnects, "resumes": s.resumes,
                             "malformed": s.malformed, "disconnect_log": dlog, "lag": list(s.lag()),
                             "reconnects_refused": s.reconnects_refused,
                             "first_ready_at": on_master(s.first_ready_at), "closed_at": on_master(s.closed_at)})
        ru = resource.getrusage(resource.RUSAGE_SELF)
        meta = {"cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2), "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
                "reconcile_seconds": round(time.perf_counter() - t0, 3),
                "discarded": sum(getattr(s, "discarded", 0) for s in self.sessions),
                "generator": self.generator.stop(),
                "write_failures": [[t + self.theta, kind] for t, kind in self.write_failures]}
        header = {"results": results, "sessions": sessions, "meta": meta, "series": series.to_wire(),
                  "generator_timeline": [[t + self.theta, c, lag] for t, c, lag in self.generator.timeline or ()]}
        if self.tally is not None:
            header["tally"] = self.tally.to_wire(shift=self.theta)
        payload = pack(header, blobs)
        self.agent.transfers.send("results", payload, {"run": self.run_key, "meta": meta}, timeout=60.0)





class WorkerAgent:
    """The worker process's side: talks to the master for the current WorkerRun."""

    def __init__(self, environment, on_run_over=None):
        self.env = environment
        self.runner = environment.runner
        self.run = None
        self.on_run_over = on_run_over   # callable(run): the process forgets the run
        self._ntp: dict = {}
        self._ntp_i = 0
        r = self.runner
        r.register_message("klt:welcome", self._on_welcome)
        r.register_message("klt:claimed", self._on_claimed)
        r.register_message("klt:go", self._on_go)
        r.register_message("klt:ntp_r", self._on_ntp_r)
        r.register_message("klt:end", self._on_end, concurrent=True)
        r.register_message("klt:subpoll", self._on_subpoll)
        self.transfers = Transfers(r, self._on_payload, master=False)

    def send(self, msg_type: str, data) -> None:
        try:
            self.runner.send_message(msg_type, data)
        except Exception as exc:
            log.warning("sending %s to the master failed: %s", msg_type, exc)

    def new_run(self, **hooks):
        self.run = WorkerRun(self.env, self, **hooks)
        return self.run

    def run_over(self, run) -> None:
        if self.on_run_over is not None:
            self.on_run_over(run)

    def _current(self, d):
        run = self.run
        if run is None or (run.run_key is not None and d.get("run") != run.run_key):
            return None
        return run

    def _on_welcome(self, environment, msg, **_kw):
        if self.run is not None and self.run.run_key is None:
            self.run.welcome(msg.data)

    def _on_claimed(self, environment, msg, **_kw):
        run = self._current(msg.data)
        if run is not None:
            run.claimed(msg.data["answers"])

    def _on_go(self, environment, msg, **_kw):
        run = self._current(msg.data)
        if run is not None:
            run.go(msg.data.get("t"))

    def ntp_round(self):
        self._ntp_i += 1
        i = self._ntp_i
        ar = self._ntp[i] = gevent.event.AsyncResult()
        self.send("klt:ntp", {"i": i, "t0": _now()})
        try:
            return ar.get(timeout=1.0)
        except gevent.Timeout:
            return None
        finally:
            self._ntp.pop(i, None)

    def _on_ntp_r(self, environment, msg, **_kw):
        t3 = _now()
        d = msg.data
        ar = self._ntp.get(d["i"])
        if ar is not None:
            ar.set((d["t0"], d["t1"], d["t2"], t3))

    def _on_subpoll(self, environment, msg, **_kw):
        run = self._current(msg.data)
        if run is None:
            return
        rows, writes_ok = run.subscription_counts()
        self.send("klt:subcounts", {"run": run.run_key, "i": msg.data.get("i"), "rows": [list(r) for r in rows],
                                    "writes_ok": writes_ok})

    def _on_end(self, environment, msg, **_kw):
        run = self._current(msg.data)
        if run is None:
            return
        try:
            run.end_phase(msg.data)
        except Exception:
            log.exception("end-of-run phase %s failed", msg.data.get("phase"))

    def _on_payload(self, node, kind, payload, meta):
        run = self._current(meta)
        if run is None:
            return
        if kind == "merged":
            run.merged(payload, meta)
