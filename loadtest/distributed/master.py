"""The master's side of a distributed run: the MasterRun and the Coordinator that talks to the workers.

See ``loadtest.distributed`` for the protocol.
"""
from __future__ import annotations

import logging
import resource
import socket
from types import SimpleNamespace

import gevent
import gevent.event
from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING

from checks.arrivals import ArrivalLog, SubscriptionInfo
from checks.ledger import WriteLedger
from checks.wire import BLOBS_PER_RESULT, pack, result_from_wire, unpack

from ..run.record import Record
from ..run.run import Run
from ..verdict.verify import lag_figures
from ..view.livefeed import MasterLiveView
from .messages import MISSING_GRACE, now as _now
from .transfers import Transfers

log = logging.getLogger(__name__)


class WorkerInfo:
    def __init__(self, node: str, hostname: str, pid: int, test_clock_offset: float):
        self.node = node
        self.hostname = hostname
        self.pid = pid
        self.test_clock_offset = test_clock_offset
        self.claimed: dict = {"writer": [], "listener": [], "reader": []}
        self.answers: dict = {}
        self.lost: str | None = None
        self.missing_since: float | None = None
        self.clock: dict | None = None
        self.meta: dict = {}

    @property
    def label(self) -> str:
        return f"{self.node} (host {self.hostname}, pid {self.pid})"


class MasterRun(Run):
    """The master's run: provisions, holds the barrier, collects everything, gives the verdict."""

    distributed = True

    def __init__(self, environment, base_url, admin, coordinator):
        super().__init__(environment, base_url, admin)
        self.coordinator = coordinator
        self.workers: dict[str, WorkerInfo] = {}
        self.remote_results = None
        self.live = MasterLiveView()      # the workers' periodic counts (loadtest.view.livefeed)
        self.remote_series: list = []     # each worker's exact per-second series, at the end
        self._subpolls: dict = {}         # S8 poll number -> ({node: answer}, workers asked, all answered)
        self._subpoll_i = 0
        self.claims_by_user: dict = {}
        self._watchers: list = []
        self.end_timings: dict = {}
        coordinator.attach(self)

    # ---- during the run --------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        self._watchers.append(gevent.spawn(self._broadcast_go_when_open))
        self._watchers.append(gevent.spawn(self._watch_workers))

    def _broadcast_go_when_open(self):
        self.writers_may_start.wait()
        if self.finished:
            return
        for w in list(self.workers.values()):
            self.coordinator.send("klt:go", {"run": self.run_key, "t": self.writing_started_at}, w.node)

    @property
    def run_key(self) -> str:
        return self.prov.run_id if self.prov else ""

    def _watch_workers(self):
        runner = self.env.runner
        while True:
            now = _now()
            for w in list(self.workers.values()):
                if w.lost:
                    continue
                node = runner.clients.get(w.node)
                if node is not None and node.state == STATE_MISSING:
                    if w.missing_since is None:
                        w.missing_since = now
                        log.warning("worker %s is missing (no heartbeat)", w.label)
                    elif now - w.missing_since >= MISSING_GRACE:
                        self._lose(w, f"no heartbeat for {now - w.missing_since + 3:.0f} s (Locust marked it missing)")
                elif node is None and runner.state in (STATE_RUNNING, STATE_SPAWNING) and not self.finished:
                    self._lose(w, "left the run (Locust removed it)")
                else:
                    w.missing_since = None
            gevent.sleep(0.5)

    def subscription_counts(self) -> tuple[list, int]:
        """S8's poll, across workers: each live worker answers with its subscriptions' counts and its
        acknowledged writes (a round trip of a few ms, right after the master read system.live). A
        worker that does not answer within 2 s leaves a gap in its subscriptions' series."""
        self._subpoll_i += 1
        i = self._subpoll_i
        live = self._live()
        answers: dict = {}
        every = gevent.event.Event()
        self._subpolls[i] = (answers, len(live), every)
        co = self.coordinator
        for w in live:
            co.send("klt:subpoll", {"run": self.run_key, "i": i}, w.node)
        if live:
            every.wait(timeout=2.0)
        self._subpolls.pop(i, None)
        rows = [tuple(r) for a in answers.values() for r in a.get("rows", ())]
        return rows, sum(int(a.get("writes_ok") or 0) for a in answers.values())

    def subpoll_answer(self, node: str, d: dict) -> None:
        poll = self._subpolls.get(d.get("i"))
        if poll is not None:
            answers, expected, every = poll
            answers[node] = d
            if len(answers) >= expected:
                every.set()

    def _lose(self, w: WorkerInfo, why: str) -> None:
        if not w.lost:
            w.lost = why
            log.error("worker %s lost: %s", w.label, why)

    # ---- the end handshake -----------------------------------------------------------------
    def _live(self) -> list:
        return [w for w in self.workers.values() if not w.lost]

    def _wait(self, phase: str, timeout: float) -> None:
        """Until every live worker answered `phase`, or is lost, or the timeout (which loses it)."""
        deadline = _now() + timeout
        while True:
            waiting = [w for w in self._live() if phase not in w.answers]
            if not waiting:
                return
            if _now() >= deadline:
                for w in waiting:
                    self._lose(w, f"no answer to the end-of-run phase '{phase}' within {timeout:.0f} s")
                return
            gevent.sleep(0.05)

    def _end_phase(self, phase: str, timeout: float, **extra) -> None:
        t0 = _now()
        co = self.coordinator
        for w in self._live():
            co.send("klt:end", {"run": self.run_key, "phase": phase, **extra}, w.node)
        self._wait(phase, timeout)
        self.end_timings[phase] = round(_now() - t0, 3)

    def finish(self, interrupted: bool = False) -> Record | None:
        if self.finished:
            return self.record
        self.finished = True
        self.writing_stopped_at = _now()
        self.writers_may_start.set()
        self.flags["interrupted"] = interrupted
        o = self.options
        if self.stress is not None:
            self.stress.load_ended(self.writing_stopped_at)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu_at_end = ru.ru_utime + ru.ru_stime
        quick = interrupted or bool(self.flags.get("setup_error"))
        # 1. ledgers (each worker's writes, on the master's clock)
        self._end_phase("ledger", 8.0 if quick else 40.0)
        for w in self.workers.values():
            got = w.answers.get("ledger")
            if got is None:
                continue
            header, blobs = got
            for key, raw in zip(header["tables"], blobs):
                self.ledgers[key].extend(WriteLedger.from_bytes(raw))
        lost_ledgers = [w for w in self.workers.values() if "ledger" not in w.answers]
        if lost_ledgers:
            self.flags["ledger_partial"] = True
        # 2. merged ledger to every worker; each drains its listeners against it
        keys = list(self.ledgers)
        merged = pack({"tables": keys}, [self.ledgers[k].to_bytes() for k in keys])
        self.end_timings["merged_ledger_bytes"] = len(merged)
        t0 = _now()
        co = self.coordinator
        senders = [gevent.spawn(co.transfers.send, "merged", merged,
                                {"run": self.run_key, "drain": not quick}, w.node, 30.0)
                   for w in self._live()]
        gevent.joinall(senders, timeout=70.0)
        self._wait("drained", (5.0 if quick else o.drain_timeout + 20.0))
        self.end_timings["merged_and_drained"] = round(_now() - t0, 3)
        if any(w.answers.get("drained", {}).get("drain_timed_out") for w in self.workers.values()):
            self.flags["drain_timed_out"] = True
        self.flags["drain_seconds"] = round(_now() - self.writing_stopped_at, 3)
        # 3. the server's counters, while every listener is still connected
        counters = None
        if not quick and any(w.claimed["listener"] for w in self.workers.values()):
            counters = self._read_counters()
        if self.stress is not None:
            try:
                self.stress.stop_sampling()
                if not interrupted:
                    self.stress.leak_probe()
            except Exception:
                log.exception("stress monitor")
        self.server_stats_at_end = self._read_stats()
        # 4. results: each worker closes its sessions and reconciles its own arrival logs
        self._end_phase("results", 20.0 if quick else 180.0)
        if self.stress is not None:
            try:
                self.stress.release(interrupted)
            except Exception:
                log.exception("stress monitor")
        self._collect_results()
        self.write_failures = sorted((t, kind) for w in self.workers.values()
                                     for t, kind in w.meta.get("write_failures") or ())
        self.record = self.to_record(counters, results=self.remote_results, series_parts=self.remote_series,
                                     distributed=self.distributed_report(), clock_error_bound_ms=self.clock_bound_ms(),
                                     generator=self.busiest_generator(),
                                     generator_timeline=[(t, c, lag, f"worker {w.label}") for w in self.workers.values()
                                                         for t, c, lag in w.meta.get("generator_timeline") or ()])
        return self.record

    def close(self, report: dict | None = None) -> None:
        """After the verdict: tell the workers the run is over, stop watching them, clean up."""
        self.coordinator.broadcast_done(self, (report or {}).get("summary", {}).get("verdict"))
        for g in self._watchers:
            g.kill(block=False)
        super().close(report)

    def _collect_results(self) -> None:
        results, sessions = [], []
        for w in self.workers.values():
            got = w.answers.get("results")
            if got is None:
                # its listeners' evidence is missing, named after the worker
                for user in w.claimed["listener"]:
                    sessions.append(RemoteSession(user, w.node, f"worker {w.label} lost: {w.lost}", {}))
                continue
            header, blobs = got
            w.meta.update(header["meta"])
            w.meta["generator_timeline"] = header.get("generator_timeline") or []
            if header.get("series"):
                self.remote_series.append(header["series"])
            if header.get("tally") and self.tally is not None:
                self.tally.merge_wire(header["tally"])
            pos = 0
            w.result_keys = []
            for d in header["results"]:
                r = result_from_wire(d, blobs[pos:pos + BLOBS_PER_RESULT])
                pos += BLOBS_PER_RESULT
                results.append(r)
                w.result_keys.append(r.key)
            for s in header["sessions"]:
                subs = {}
                for sub in s["subs"]:
                    info = SubscriptionInfo(listener=s["user"], subscription_id=sub["sid"], owner=sub["owner"],
                                            group=sub["group"], table_kind=sub["table_kind"],
                                            content_columns=tuple(sub["content_columns"]), table=sub["table"])
                    spec = SimpleNamespace(table=SimpleNamespace(key=sub["table"]), owner=sub["owner"],
                                           group=sub["group"], subscription_id=sub["sid"])
                    subs[sub["sid"]] = SimpleNamespace(spec=spec, log=ArrivalLog(info), received=sub["received"],
                                                       max_n={}, ready=True, failed=None)
                rs = RemoteSession(s["user"], w.node, s["vanished"], subs)
                rs.disconnects = {str(k): v for k, v in s["disconnects"].items()}
                rs.forced_reconnects, rs.resumes, rs.malformed = s["forced_reconnects"], s["resumes"], s["malformed"]
                rs.disconnect_log = s["disconnect_log"]
                rs.lag_figures = tuple(s.get("lag") or (0, 0.0, 0.0))
                rs.reconnects_refused = int(s.get("reconnects_refused") or 0)
                rs.first_ready_at, rs.closed_at = s.get("first_ready_at"), s.get("closed_at")
                sessions.append(rs)
        # every listener account claimed by a worker that sent nothing is accounted for above
        self.sessions = sessions
        self.remote_results = results

    # ---- the report ------------------------------------------------------------------------
    def clock_bound_ms(self) -> dict:
        """The clocks' error bound of each latency start point: a writer's clock against a listener's
        (sent, ack), or the listener's against the master's (commit)."""
        def err(kind):
            vals = [(w.clock or {}).get("error_bound_s") for w in self.workers.values() if w.claimed[kind]]
            vals = [v for v in vals if v is not None]
            return max(vals) if vals else 0.0
        e_w, e_l = err("writer"), err("listener")
        return {"sent": round((e_w + e_l) * 1000, 3), "ack": round((e_w + e_l) * 1000, 3),
                "commit": round(e_l * 1000, 3)}

    def busiest_generator(self) -> dict | None:
        """The load generators are the workers: the one with the most event-loop lag (then CPU) speaks for
        the run, named."""
        gens = [dict(w.meta["generator"], where=f"worker {w.label}") for w in self.workers.values()
                if w.meta.get("generator")]
        return max(gens, key=lambda g: (g.get("loop_lag_p95_ms") or 0.0, g.get("cpu_fraction") or 0.0), default=None)

    def distributed_report(self) -> dict:
        """report["distributed"]: each worker, the lost ones, the clocks, the end handshake's timings."""
        master_host = socket.gethostname()
        by_key = {r.key: r for r in (self.remote_results or [])}
        workers = []
        for w in self.workers.values():
            rs = [by_key[k] for k in getattr(w, "result_keys", []) if k in by_key]
            workers.append({
                "node": w.node, "hostname": w.hostname, "pid": w.pid,
                "same_host_as_master": w.hostname == master_host,
                "clock": w.clock, "test_clock_offset_s": w.test_clock_offset or None,
                "writers": w.claimed["writer"], "listeners": w.claimed["listener"], "readers": w.claimed["reader"],
                "ledger_received": "ledger" in w.answers, "results_received": "results" in w.answers,
                "lost": w.lost,
                "writes": w.meta.get("writes"),
                "subscriptions": len(rs), "arrivals": sum(r.arrivals for r in rs),
                "expected": sum(r.expected for r in rs), "lost_writes": sum(r.lost for r in rs),
                "duplicated": sum(r.duplicated for r in rs), "wrong_values": sum(r.wrong_values for r in rs),
                "unexpected": sum(r.unexpected_total for r in rs),
                "out_of_order": sum(r.out_of_order_total for r in rs),
                "subs_with_loss": [r.key for r in rs if r.lost][:20],
                "test_discarded_arrivals": w.meta.get("discarded"),
                "drain": w.answers.get("drained"),
                "cpu_seconds": w.meta.get("cpu_seconds"), "max_rss_mb": w.meta.get("max_rss_mb"),
                "reconcile_seconds": w.meta.get("reconcile_seconds"),
                "generator": w.meta.get("generator"),
                "listener_lag_ms": lag_figures([s.lag() for s in self.sessions if s.worker == w.node]),
            })
        lost = [{"node": w.node, "hostname": w.hostname, "pid": w.pid, "why": w.lost}
                for w in self.workers.values() if w.lost]
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime
        co = self.coordinator
        self.end_timings["master_cpu_seconds"] = round(cpu - getattr(self, "_cpu_at_end", cpu), 3)
        return {"mode": "master", "master_host": master_host, "workers": workers, "lost_workers": lost,
                "latency_clock_error_bound_ms": self.clock_bound_ms(), "latency_from": self.options.latency_from,
                "end_of_run_seconds": self.end_timings,
                "master_cpu_seconds": round(cpu, 2),
                "messages": dict(co.transfers.stats) if co and co.transfers else None}


class RemoteSession:
    """What the master knows of one listener session that lived on a worker (for the report)."""

    def __init__(self, user: str, node: str, vanished, subs: dict):
        self.account = SimpleNamespace(user=user)
        self.worker = node
        self.vanished = vanished or None
        self.subs = subs
        self.disconnects: dict = {}
        self.forced_reconnects = self.resumes = self.malformed = 0
        self.disconnect_log: list = []
        self.reconnects_refused = 0
        self.lag_figures = (0, 0.0, 0.0)
        self.first_ready_at = self.closed_at = None   # on the master's clock

    def received_total(self) -> int:
        return sum(st.received for st in self.subs.values())

    def lag(self) -> tuple:
        """(frames, lag sum s, lag max s) as the worker's ListenerSession.lag() reported it."""
        return self.lag_figures


class Coordinator:
    """The master process's side: answers workers, runs the end handshake for the current run."""

    def __init__(self, environment):
        self.env = environment
        self.runner = environment.runner
        self.run = None
        r = self.runner
        r.register_message("klt:hello", self._on_hello, concurrent=True)
        r.register_message("klt:claim", self._on_claim)
        r.register_message("klt:ready", self._on_ready)
        r.register_message("klt:ntp", self._on_ntp)
        r.register_message("klt:clock", self._on_clock)
        r.register_message("klt:drained", self._on_drained)
        r.register_message("klt:subcounts", self._on_subcounts)
        self.transfers = Transfers(r, self._on_payload, master=True)

    def attach(self, run) -> None:
        self.run = run

    def send(self, msg_type: str, data, node: str) -> None:
        try:
            self.runner.send_message(msg_type, data, client_id=node)
        except Exception as exc:
            log.warning("sending %s to %s failed: %s", msg_type, node, exc)

    def _worker(self, msg):
        run = self.run
        if run is None:
            return None, None
        return run, run.workers.get(msg.node_id)

    def _on_hello(self, environment, msg, **_kw):
        deadline = _now() + 120
        while True:
            run = self.run
            if run is not None and (run.prov is not None or run.flags.get("setup_error")):
                break
            if _now() > deadline:
                log.error("worker %s said hello but no run is set up", msg.node_id)
                return
            gevent.sleep(0.1)
        d = msg.data or {}
        w = run.workers.get(msg.node_id)
        if w is None:
            w = run.workers[msg.node_id] = WorkerInfo(msg.node_id, d.get("hostname", "?"), d.get("pid", 0),
                                                      d.get("test_clock_offset", 0.0))
            log.info("worker %s joined run %s", w.label, run.run_key)
        prov = run.prov
        n_workers = max(1, len(self.runner.clients.all), getattr(run.options, "expect_workers", 1) or 1)
        self.send("klt:welcome", {
            "run": run.run_key, "setup_error": run.flags.get("setup_error"), "base_url": run.base_url,
            "namespace": prov.namespace if prov else None,
            "writers": [a.user for a in prov.writers] if prov else [],
            "listeners": [a.user for a in prov.listeners] if prov else [],
            "readers": [a.user for a in prov.readers] if prov else [],
            "go": run.writers_may_start.is_set(), "t_go": run.writing_started_at, "finished": run.finished,
            "n_workers": n_workers}, msg.node_id)

    def _on_claim(self, environment, msg, **_kw):
        run, w = self._worker(msg)
        if w is None or msg.data.get("run") != run.run_key:
            return
        answers = []
        for req, kind in msg.data["reqs"]:
            acc = None
            if not run.finished and not w.lost:
                acc = {"writer": run.claim_writer, "listener": run.claim_listener, "reader": run.claim_reader}[kind]()
            if acc is None:
                answers.append([req, None, -1])
                continue
            lst = {"writer": run.prov.writers, "listener": run.prov.listeners, "reader": run.prov.readers}[kind]
            w.claimed[kind].append(acc.user)
            run.claims_by_user[acc.user] = w.node
            answers.append([req, {"user": acc.user, "password": acc.password}, lst.index(acc)])
        self.send("klt:claimed", {"run": run.run_key, "answers": answers}, w.node)

    def _on_ready(self, environment, msg, **_kw):
        run, w = self._worker(msg)
        if w is None or msg.data.get("run") != run.run_key:
            return
        for user in msg.data.get("ready", []):
            run.listener_ready(SimpleNamespace(user=user))
        for user, why in msg.data.get("failed", []):
            run.listener_failed(SimpleNamespace(user=user), f"{why} (on worker {w.node})")

    def _on_ntp(self, environment, msg, **_kw):
        t1 = _now()
        d = msg.data
        self.runner.send_message("klt:ntp_r", {"i": d["i"], "t0": d["t0"], "t1": t1, "t2": _now()},
                                 client_id=msg.node_id)

    def _on_clock(self, environment, msg, **_kw):
        run, w = self._worker(msg)
        if w is not None and msg.data.get("run") == run.run_key:
            w.clock = msg.data["clock"]

    def _on_drained(self, environment, msg, **_kw):
        run, w = self._worker(msg)
        if w is not None and msg.data.get("run") == run.run_key:
            w.answers["drained"] = msg.data

    def _on_subcounts(self, environment, msg, **_kw):
        run, w = self._worker(msg)
        if w is not None and msg.data.get("run") == run.run_key:
            run.subpoll_answer(w.node, msg.data)

    def _on_payload(self, node, kind, payload, meta):
        run = self.run
        w = run.workers.get(node) if run else None
        if w is None or meta.get("run") != run.run_key:
            log.warning("ignored a %s payload from %s (not in the current run)", kind, node)
            return
        header, blobs = unpack(payload)
        if "clock" in meta:
            w.clock = meta["clock"]
        w.meta.update(meta.get("meta") or {})
        w.answers[kind] = (header, blobs)

    def broadcast_done(self, run, verdict: str | None) -> None:
        for w in run._live():
            self.send("klt:end", {"run": run.run_key, "phase": "done", "verdict": verdict}, w.node)
