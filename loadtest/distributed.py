"""Distributed runs: Locust's master/worker mode (`--processes N`, or `--master` + `--worker`), one verdict.

The master provisions (namespace, accounts), holds the start barrier, reads the server's counters and
gives the verdict; workers run the writer and listener users. Everything between them goes through
Locust's own channel as custom messages (`klt:*`), batched, with large payloads chunked
(`CHUNK` bytes per message, at most `MAX_TRANSFER` bytes per payload) and acknowledged.

During the run
    worker -> master  klt:hello {hostname, pid}          master -> worker  klt:welcome {accounts' names, go, ...}
    worker -> master  klt:claim [[req, kind], ...]        master -> worker  klt:claimed [[req, account|None, index]]
    worker -> master  klt:ready {ready: [...], failed: [...]}   (listener subscribed and ready / failed)
    master -> worker  klt:go {t}                          (the start barrier opened: writers may write)
    worker -> master  klt:ntp {i, t0}                     master -> worker  klt:ntp_r {i, t0, t1, t2}
                      (clock offset: rounds after the welcome and again at the end; lowest round trips)

End of run (inside the master's test_stop, which Locust fires *before* it tells workers to stop and
then gives them only 0.5 s: so everything is collected here, by our own flush-and-acknowledge):
    1. master -> worker klt:end {phase: ledger}: writers stop, in-flight writes settle, final clock
       rounds; the worker ships its ledgers (times put on the master's clock) -> klt:x ... klt:xack
    2. the master merges the ledgers (`WriteLedger.extend`) and ships the merged ledger to every worker;
       each worker drains its listeners against it and answers klt:drained
    3. the master reads system.live (L7) while every listener is still connected
    4. master -> worker klt:end {phase: results}: the worker closes its sessions, puts its arrival logs
       on the master's clock, reconciles each subscription against the merged ledger and ships the
       results (counters, samples, mergeable latency histograms, first-arrival arrays for L6)
    5. the master calls `verdicts` and writes the report (`report["distributed"]`); klt:end {phase: done}

A worker that stops answering (or that Locust marks missing for `MISSING_GRACE` s) is *lost*: the run
flags `ledger_partial` (its writes are unknown) and `missing_listeners` (naming the worker), so no
scenario can pass. Worker sessions are owned by the run, not by Locust's users: they survive Locust
stopping the users until the end handshake is over.

Test hooks (environment variables of ONE process, for tests only):
    KALAMDB_LT_CLOCK_OFFSET=0.5            add 0.5 s to every time.time() this process takes
    KALAMDB_LT_TEST_DISCARD_ARRIVALS=0.05  this worker's listeners throw away 5 % of the change
                                           notifications they receive (client-side loss)
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
from types import SimpleNamespace

import gevent
import gevent.event
from locust import events

import kalamclient.ws
from checks.clock import clock_report, estimate_offset

log = logging.getLogger(__name__)

CHUNK = 256 * 1024                 # bytes of payload per zmq message
MAX_TRANSFER = 512 * 1024 * 1024   # largest payload accepted (bounded buffers)
MISSING_GRACE = 5.0                # s a worker may stay "missing" for Locust before it is lost to the run
NTP_ROUNDS = 8
ENV_CLOCK_OFFSET = "KALAMDB_LT_CLOCK_OFFSET"
ENV_DISCARD = "KALAMDB_LT_TEST_DISCARD_ARRIVALS"


# ==================================================================== test hook: an artificial clock offset

def install_test_clock_offset() -> float:
    """KALAMDB_LT_CLOCK_OFFSET (seconds): every time.time() of this process is shifted by it (a test
    hook standing in for a machine whose clock is off). Returns the offset (0.0 when unset)."""
    raw = os.environ.get(ENV_CLOCK_OFFSET, "").strip()
    if not raw:
        return 0.0
    offset = float(raw)
    if getattr(time.time, "_klt_offset", None) is None:
        real = time.time

        def shifted_time() -> float:
            return real() + offset

        shifted_time._klt_offset = offset
        time.time = shifted_time
        kalamclient.ws.kernel_stamp_shift_s = offset  # arrival stamps read the system clock too
        log.warning("test hook %s=%s: this process's clock reads %+.3f s off", ENV_CLOCK_OFFSET, raw, offset)
    return offset


TEST_CLOCK_OFFSET = install_test_clock_offset()


def _now() -> float:
    return time.time()  # looked up at call time (the test hook may replace time.time)


# ==================================================================== chunked, acknowledged transfers

class Transfers:
    """Payloads of any size over Locust custom messages: chunks of CHUNK bytes, one ack per payload.
    The receiver keeps at most MAX_TRANSFER bytes per payload in flight and ignores a payload it
    already completed (the sender may resend after a lost ack)."""

    def __init__(self, runner, on_complete, master: bool):
        self.runner = runner
        self.on_complete = on_complete     # callable(node_id, kind, payload: bytes, meta: dict)
        self.master = master
        self.incoming: dict = {}
        self.done: set = set()
        self.acks: dict = {}
        self.stats = {"bytes_in": 0, "bytes_out": 0, "chunks_in": 0, "chunks_out": 0, "payloads_in": 0,
                      "payloads_out": 0}
        runner.register_message("klt:x", self._on_chunk)
        runner.register_message("klt:xack", self._on_ack)

    def send(self, kind: str, payload: bytes, meta: dict, client_id: str | None = None,
             timeout: float = 60.0, attempts: int = 2) -> bool:
        """Send and wait for the receiver's ack. True when acknowledged."""
        xid = uuid.uuid4().hex
        n = max(1, math.ceil(len(payload) / CHUNK))
        if len(payload) > MAX_TRANSFER:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_TRANSFER}")
        ar = self.acks[xid] = gevent.event.AsyncResult()
        try:
            for attempt in range(attempts):
                for i in range(n):
                    data = {"xid": xid, "kind": kind, "i": i, "n": n, "data": payload[i * CHUNK:(i + 1) * CHUNK],
                            "meta": meta if i == n - 1 else None}
                    self._send("klt:x", data, client_id)
                    self.stats["chunks_out"] += 1
                    self.stats["bytes_out"] += len(data["data"])
                    gevent.sleep(0)  # let heartbeats and other messages through
                try:
                    ar.get(timeout=timeout)
                    self.stats["payloads_out"] += 1
                    return True
                except gevent.Timeout:
                    log.warning("transfer %s (%s, %d bytes) not acknowledged after %.0fs (attempt %d)",
                                xid[:8], kind, len(payload), timeout, attempt + 1)
            return False
        finally:
            self.acks.pop(xid, None)

    def _send(self, msg_type: str, data, client_id):
        if self.master:
            self.runner.send_message(msg_type, data, client_id=client_id)
        else:
            self.runner.send_message(msg_type, data)

    def _on_chunk(self, environment, msg, **_kw):
        d = msg.data
        node = msg.node_id if self.master else "master"
        key = (node, d["xid"])
        self.stats["chunks_in"] += 1
        self.stats["bytes_in"] += len(d["data"])
        if key in self.done:
            if d["i"] == d["n"] - 1:
                self._send("klt:xack", {"xid": d["xid"]}, node if self.master else None)
            return
        st = self.incoming.get(key)
        if st is None:
            if d["n"] * CHUNK > MAX_TRANSFER + CHUNK:
                log.error("refused a %d-chunk payload from %s (limit %d bytes)", d["n"], node, MAX_TRANSFER)
                return
            st = self.incoming[key] = {"parts": {}, "size": 0}
        if d["i"] not in st["parts"]:
            st["parts"][d["i"]] = d["data"]
            st["size"] += len(d["data"])
        if st["size"] > MAX_TRANSFER:
            log.error("payload from %s exceeds %d bytes: dropped", node, MAX_TRANSFER)
            del self.incoming[key]
            return
        if d["meta"] is not None:
            st["meta"] = d["meta"]
        if len(st["parts"]) == d["n"] and "meta" in st:
            del self.incoming[key]
            self.done.add(key)
            payload = b"".join(st["parts"][i] for i in range(d["n"]))
            self.stats["payloads_in"] += 1
            self._send("klt:xack", {"xid": d["xid"]}, node if self.master else None)
            gevent.spawn(self._complete, node, d["kind"], payload, st["meta"])

    def _complete(self, node, kind, payload, meta):
        try:
            self.on_complete(node, kind, payload, meta)
        except Exception:
            log.exception("handling a %s payload from %s failed", kind, node)

    def _on_ack(self, environment, msg, **_kw):
        ar = self.acks.get(msg.data["xid"])
        if ar is not None and not ar.ready():
            ar.set(True)


# ==================================================================== master side

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


def _make_distributed_run_class():
    from checks.ledger import WriteLedger
    from checks.wire import pack, result_from_wire

    from .livefeed import MasterLiveView
    from .run import Run
    from .verification import lag_figures

    class MasterRun(Run):
        """The master's run: provisions, holds the barrier, collects everything, gives the verdict."""

        distributed = True

        def __init__(self, environment, base_url, admin):
            super().__init__(environment, base_url, admin)
            self.workers: dict[str, WorkerInfo] = {}
            self.remote_results = None
            self.live = MasterLiveView()      # the workers' periodic counts (loadtest.livefeed)
            self.remote_series: list = []     # each worker's exact per-second series, at the end
            self._subpolls: dict = {}         # S8 poll number -> ({node: answer}, workers asked, all answered)
            self._subpoll_i = 0
            self.claims_by_user: dict = {}
            self._watchers: list = []
            self.end_timings: dict = {}
            _process["coordinator"].attach(self)

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
                _process["coordinator"].send("klt:go", {"run": self.run_key, "t": self.writing_started_at}, w.node)

        @property
        def run_key(self) -> str:
            return self.prov.run_id if self.prov else ""

        def _watch_workers(self):
            from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING

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
            co = _process["coordinator"]
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
            co = _process["coordinator"]
            for w in self._live():
                co.send("klt:end", {"run": self.run_key, "phase": phase, **extra}, w.node)
            self._wait(phase, timeout)
            self.end_timings[phase] = round(_now() - t0, 3)

        def finish(self, interrupted: bool = False):
            if self.finished:
                return self.report
            self.finished = True
            self.writing_stopped_at = _now()
            self.writers_may_start.set()
            # Ctrl-C on a master reaches Locust as a KeyboardInterrupt in some greenlet, which makes it
            # quit through test_stop (not quitting, as in one process): the flag says what happened
            interrupted = interrupted or bool(_process.get("sigint"))
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
            co = _process["coordinator"]
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
            from .verification import verify_and_report

            self.report = verify_and_report(self, counters)
            co.broadcast_done(self)
            for g in self._watchers:
                g.kill(block=False)
            if o.cleanup and self.prov is not None:
                from . import provision as prov_mod

                prov_mod.cleanup(self.admin_http, self.prov)
            return self.report

        def _collect_results(self) -> None:
            from checks.arrivals import ArrivalLog, SubscriptionInfo

            results, sessions = [], []
            for w in self.workers.values():
                got = w.answers.get("results")
                if got is None:
                    # its listeners' evidence is missing, named after the worker
                    for user in w.claimed["listener"]:
                        sessions.append(_RemoteSession(user, w.node, f"worker {w.label} lost: {w.lost}", {}))
                    continue
                header, blobs = got
                w.meta.update(header["meta"])
                if header.get("series"):
                    self.remote_series.append(header["series"])
                if header.get("tally") and self.tally is not None:
                    self.tally.merge_wire(header["tally"])
                pos = 0
                w.result_keys = []
                for d in header["results"]:
                    r = result_from_wire(d, blobs[pos:pos + 3])
                    pos += 3
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
                    rs = _RemoteSession(s["user"], w.node, s["vanished"], subs)
                    rs.disconnects = {str(k): v for k, v in s["disconnects"].items()}
                    rs.forced_reconnects, rs.resumes, rs.malformed = s["forced_reconnects"], s["resumes"], s["malformed"]
                    rs.disconnect_log = s["disconnect_log"]
                    rs.lag_figures = tuple(s.get("lag") or (0, 0.0, 0.0))
                    rs.first_ready_at, rs.closed_at = s.get("first_ready_at"), s.get("closed_at")
                    sessions.append(rs)
            # every listener account claimed by a worker that sent nothing is accounted for above
            self.sessions = sessions
            self.remote_results = results

        # ---- the report ------------------------------------------------------------------------
        def distributed_report(self, scen: dict, notes: list) -> dict:
            """report["distributed"]; marks SC-054 when the clocks' error bound is wider than its threshold."""
            o = self.options
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
                    "listener_lag_ms": lag_figures([s.lag() for s in self.sessions if s.worker == w.node]),
                })
            lost = [{"node": w.node, "hostname": w.hostname, "pid": w.pid, "why": w.lost}
                    for w in self.workers.values() if w.lost]
            for x in lost:
                notes.append(f"worker {x['node']} (host {x['hostname']}, pid {x['pid']}) lost: {x['why']} — "
                             "its evidence is missing, no scenario can pass")
            # clock error bound of each latency start point (writer's clock vs listener's clock)
            def err(names_kind):
                vals = [(w.clock or {}).get("error_bound_s") for w in self.workers.values() if w.claimed[names_kind]]
                vals = [v for v in vals if v is not None]
                return max(vals) if vals else 0.0
            e_w, e_l = err("writer"), err("listener")
            bound_ms = {"sent": round((e_w + e_l) * 1000, 3), "ack": round((e_w + e_l) * 1000, 3),
                        "commit": round(e_l * 1000, 3)}
            sc = scen.get("SC-054")
            judged = o.latency_from
            if sc is not None and sc.get("verdict") in ("pass", "fail"):
                sc.setdefault("details", {})["clock_error_bound_ms"] = bound_ms
                if bound_ms[judged] > o.latency_threshold_ms:
                    sc["verdict"] = "inconclusive"
                    sc["figure"] += (f" — clock error bound ±{bound_ms[judged]:.1f} ms exceeds the "
                                     f"{o.latency_threshold_ms:g} ms threshold: not judged")
                    notes.append(f"SC-054 not judged: latency from {judged} compares clocks of different "
                                 f"machines known only to ±{bound_ms[judged]:.1f} ms")
            if judged == "commit":
                notes.append("latency from commit compares the server's _seq time with listener clocks put on the "
                             "master's clock: it assumes the server's clock is the master's")
            ru = resource.getrusage(resource.RUSAGE_SELF)
            cpu = ru.ru_utime + ru.ru_stime
            co = _process["coordinator"]
            self.end_timings["master_cpu_seconds"] = round(cpu - getattr(self, "_cpu_at_end", cpu), 3)
            return {"mode": "master", "master_host": master_host, "workers": workers, "lost_workers": lost,
                    "latency_clock_error_bound_ms": bound_ms, "latency_from": judged,
                    "end_of_run_seconds": self.end_timings,
                    "master_cpu_seconds": round(cpu, 2),
                    "messages": dict(co.transfers.stats) if co and co.transfers else None}

    return MasterRun


class _RemoteSession:
    """What the master knows of one listener session that lived on a worker (for the report)."""

    def __init__(self, user: str, node: str, vanished, subs: dict):
        self.account = SimpleNamespace(user=user)
        self.worker = node
        self.vanished = vanished or None
        self.subs = subs
        self.disconnects: dict = {}
        self.forced_reconnects = self.resumes = self.malformed = 0
        self.disconnect_log: list = []
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
        from checks.wire import unpack

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

    def broadcast_done(self, run) -> None:
        for w in run._live():
            self.send("klt:end", {"run": run.run_key, "phase": "done",
                                  "verdict": (run.report or {}).get("summary", {}).get("verdict")}, w.node)


# ==================================================================== worker side

def _make_worker_run_class():
    from checks.ledger import WriteLedger
    from checks.model import OUTCOME_PENDING
    from checks.verifier import reconcile
    from checks.wire import pack, result_to_wire, unpack

    from .livefeed import WorkerFeed
    from .pacing import TokenBucket
    from .provision import Account, Provisioned
    from .run import AdminCredentials, Run
    from .stress import RequestTally
    from .timeseries import TimeSeries
    from .workloads import tables_for

    class WorkerRun(Run):
        """A worker's view of the run: users claim accounts from the master, listeners report ready to
        it, the barrier opens on its word; the end is driven by the master (see the module docstring)."""

        distributed = True

        def __init__(self, environment, agent):
            super().__init__(environment, environment.host or "http://unset", AdminCredentials("", ""))
            self.agent = agent
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
                                          "test_clock_offset": TEST_CLOCK_OFFSET})

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
        def new_listener_session(self, account, on_delivery=None):
            from .listening import ListenerSession
            from .workloads import subscriptions_for

            specs = subscriptions_for(self.workload, self.prov.namespace, account.user)
            discard = float(os.environ.get(ENV_DISCARD, "0") or 0)
            cls = _discarding_session_class() if discard > 0 else ListenerSession
            session = cls(self, account, specs, batch_size=self.options.snapshot_batch_size, on_delivery=on_delivery)
            if discard > 0:
                session.discard_share = discard
                session.discard_rng = random.Random(account.user)
            self.sessions.append(session)
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
                from . import plugin

                if plugin._state.get("run") is self:
                    plugin._state["run"] = None  # a next run on this worker starts from nothing

        def _send_ledger(self) -> None:
            self.finished = True
            self.writers_may_start.set()
            if self.writing_stopped_at is None:
                self.writing_stopped_at = _now()
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
            self._last_acked = None
            if meta.get("drain", True) and self.sessions:
                self._drain()
            now = _now()
            for s in self.sessions:
                for st in s.subs.values():
                    st.log.finished(now)
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
                    r = reconcile(self.ledgers[st.spec.table.key], st.log)
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
                                 "first_ready_at": on_master(s.first_ready_at), "closed_at": on_master(s.closed_at)})
            ru = resource.getrusage(resource.RUSAGE_SELF)
            meta = {"cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2), "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
                    "reconcile_seconds": round(time.perf_counter() - t0, 3),
                    "discarded": sum(getattr(s, "discarded", 0) for s in self.sessions)}
            header = {"results": results, "sessions": sessions, "meta": meta, "series": series.to_wire()}
            if self.tally is not None:
                header["tally"] = self.tally.to_wire(shift=self.theta)
            payload = pack(header, blobs)
            self.agent.transfers.send("results", payload, {"run": self.run_key, "meta": meta}, timeout=60.0)

    return WorkerRun


_DISCARDING = None


def _discarding_session_class():
    """Test hook KALAMDB_LT_TEST_DISCARD_ARRIVALS: a listener session that throws away a share of the
    change notifications it receives, as a buggy client would (the verifier must catch it)."""
    global _DISCARDING
    if _DISCARDING is None:
        from kalamclient.events import Change

        from .listening import ListenerSession

        class DiscardingListenerSession(ListenerSession):
            discard_share = 0.0
            discard_rng = random.Random(0)
            discarded = 0

            def _dispatch(self, ev) -> bool:
                if ev.__class__ is Change and self.discard_rng.random() < self.discard_share:
                    self.discarded += 1
                    return True
                return super()._dispatch(ev)

        _DISCARDING = DiscardingListenerSession
    return _DISCARDING


class WorkerAgent:
    """The worker process's side: talks to the master for the current WorkerRun."""

    def __init__(self, environment):
        self.env = environment
        self.runner = environment.runner
        self.run = None
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

    def new_run(self):
        cls = _process.get("worker_run_class")
        if cls is None:
            cls = _process["worker_run_class"] = _make_worker_run_class()
        self.run = cls(self.env, self)
        return self.run

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


# ==================================================================== wiring into Locust

_process: dict = {}


def run_class(environment):
    """The Run class for this process's runner: the master's distributed run, or the plain one."""
    from locust.runners import MasterRunner

    if isinstance(environment.runner, MasterRunner):
        cls = _process.get("master_run_class")
        if cls is None:
            cls = _process["master_run_class"] = _make_distributed_run_class()
        return cls
    from .run import Run

    return Run


def _note_sigint() -> None:
    """Remember a Ctrl-C (then behave exactly as before: KeyboardInterrupt)."""
    import signal

    prev = signal.getsignal(signal.SIGINT)
    if not callable(prev):
        return

    def on_sigint(signum, frame):
        _process["sigint"] = True
        return prev(signum, frame)

    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: leave signals alone
        pass


@events.init.add_listener
def _on_init(environment, **_kw):
    from locust.runners import MasterRunner, WorkerRunner

    runner = environment.runner
    if isinstance(runner, MasterRunner) and "coordinator" not in _process:
        _process["coordinator"] = Coordinator(environment)
        _note_sigint()
    elif isinstance(runner, WorkerRunner) and "agent" not in _process:
        _process["agent"] = WorkerAgent(environment)


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    agent = _process.get("agent")
    if agent is None:
        return
    from . import plugin

    run = agent.new_run()
    plugin._state["run"] = run
    run.start()


@events.report_to_master.add_listener
def _on_report_to_master(client_id, data, **_kw):
    """A worker's stats report (every ~3 s) carries its part of the master's live view."""
    agent = _process.get("agent")
    run = agent.run if agent is not None else None
    if run is None:
        return
    try:
        part = run.live_part()
    except Exception:  # the live view must never break the run
        log.warning("live counts for the master failed", exc_info=True)
        return
    if part is not None:
        data["klt_live"] = part


@events.request.add_listener
def _on_request(**kw):
    """A worker's SQL requests, for the stress verdicts (its RequestTally, shipped at the end)."""
    agent = _process.get("agent")
    run = agent.run if agent is not None else None
    if run is not None and run.tally is not None:
        run.tally.on_request(**kw)


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_kw):
    co = _process.get("coordinator")
    part = data.get("klt_live") if isinstance(data, dict) else None
    run = co.run if co is not None else None
    if part and run is not None and run.prov is not None and part.get("run") == run.run_key:
        run.live.merge(client_id, part)


@events.quitting.add_listener
def _on_quitting(environment, **_kw):
    agent = _process.get("agent")
    if agent is not None and agent.run is not None:
        for s in agent.run.sessions:
            try:
                s.close()
            except Exception:
                pass
