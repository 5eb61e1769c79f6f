"""What people see while a run goes on: a provisional verdict every few seconds, per-listener figures,
time series, the server's memory and CPU, a progress line on the terminal, and (at the end) the HTML
and JUnit reports.

One :class:`Observer` per run, made and started by ``loadtest.plugin`` at ``test_start`` after the run's
set-up, kept on the process's ``LoadTest``; the web view's routes (``loadtest.view.web``) read it from there.

Not stalling the listeners. Everything the listeners and writers record lives in the main thread's
greenlets. Every second the observer copies what is new there (the writes begun since and the older ones
answered since, the new part of every arrival log's array columns: memcpy work, no Python loop over
arrivals) and queues it for its own process (``loadtest.view.verifier_process``), which keeps a replica of
the record, reconciles every subscription, judges the scenarios and buckets the arrivals per second. Every
``--live-verify-interval`` seconds it sends the queue and asks for a verification, and goes on copying
while it runs: a copy is a second's worth of the record however long the run or a verification (in a
5-minute spec run, copying what came during a whole verification interval stalled the loop up to 77 ms).
A thread would not do: the verifier is pure Python and holds the GIL in slices of milliseconds (measured:
event-loop stalls up to ~48 ms and p99 delivery latency 41 ms instead of 14 ms in the default run). The
interval stretches to keep the verifier process busy at most ~25 % of the time on a long run (reconcile work
grows with the record). A heartbeat greenlet measures how late the event loop wakes up
(``health.loop_lag_ms``); the main thread's share of the live view (a copy a second) is ``health.copy_ms``.

A distributed master holds no record during the run: it shows the workers' counts and a latency from
commit instead, and no provisional verdict (``loadtest.view.livefeed``).

Provisional verdict. Writes sent in the last ``grace`` seconds (2 s, or 3 × the observed p99 latency,
at most 30 s) are not yet expected (the copied logs end there); the server's counters (L7) are read
only at the end, so L7 shows ``skipped`` until then. After the run, the view shows the final report.
"""
from __future__ import annotations

import copy
import logging
import os
import pickle
import struct
import sys
import time
from collections import deque
from pathlib import Path

import gevent
import psutil
from gevent import subprocess as gsp

from ..run import drain
from ..verdict.display import (MB, capacity_view, listeners_from_report, monitor_series, run_clock, run_marks,
                               run_monitor, run_settings, stress_overlay, writing_text)
from ..verdict.timeseries import TimeSeries
from ..verdict.verify import thresholds_from

log = logging.getLogger(__name__)
progress_log = logging.getLogger("loadtest.progress")
COPY_EVERY = 1.0   # s between copies of what is new in the record (verifications come at their own pace)

class Observer:
    def __init__(self, environment, run, server_pid: int | None = None):
        self.env = environment
        self.run = run
        self.report = None           # the final report, once the run is verified
        self.server_pid = server_pid  # the managed server's (stand-in or KalamDB), when it runs here
        o = environment.parsed_options
        self.options = o
        self.interval = float(getattr(o, "live_verify_interval", 2.0) or 0.0)
        self.progress_interval = float(getattr(o, "progress_interval", 5.0) or 0.0)
        self.headless = bool(getattr(o, "headless", False))
        self.latency_from = getattr(o, "latency_from", "sent")
        self.series = TimeSeries(self.latency_from)     # touched by the verifier thread only
        self.series_cols: dict = self.series.columns()
        self.histogram: dict = {}
        self.scenarios: list = []
        self.listeners: list = []
        self.totals: dict = {}
        self.provisional = True
        self.computed_at = None
        self.cutoff = None
        # without the server's pid (a --host given) psutil has nothing to sample: "none" says so in the charts
        self.server = {"t": [], "rss_mb": [], "cpu": [], "source": "psutil" if server_pid else "none"}
        self.health = {"verifications": 0, "verify_ms_last": None, "verify_ms_max": 0.0, "copy_ms_last": None,
                       "copy_ms_max": 0.0, "loop_lag_ms": {"last": 0.0, "max": 0.0, "p99": 0.0,
                                                          "max_during_verify": 0.0},
                       "interval_s": self.interval, "errors": 0, "last_error": None}
        self._lags: deque = deque(maxlen=1200)
        self._verifying = False
        self._greenlets: list = []
        self._stopped = False
        self._final_done = False
        self._pid = None
        self._proc = None
        self._next_verify_in = self.interval
        self._verifier = None
        self._sent: dict = {}
        self._outbox: list = []      # copies not yet written to the verifier process (pickled frames)
        self._inflight = None        # the greenlet of the verification under way
        self._failures = 0
        self._drain_seen = None
        # a distributed master: no record here during the run, only the workers' counts
        self.remote = getattr(run, "live", None)
        if self.remote is not None:
            self.health["worker_reports"] = 0

    # ---- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._greenlets.append(gevent.spawn(self._heartbeat))
        self._greenlets.append(gevent.spawn(self._sample_server))
        if self.interval > 0:
            self._greenlets.append(gevent.spawn(self._verify_loop))
        if self.headless and self.progress_interval > 0:
            self._greenlets.append(gevent.spawn(self._progress_loop))

    def stop(self) -> None:
        self._stopped = True
        for g in self._greenlets:
            g.kill(block=False)
        self._greenlets = []
        self.close_verifier()

    def close_verifier(self) -> None:
        g, self._inflight = self._inflight, None
        if g is not None and g is not gevent.getcurrent():
            g.kill(block=False)      # a verification under way is not wanted any more
        w, self._verifier = self._verifier, None
        if w is not None:
            w.close()

    # ---- phase ----------------------------------------------------------------------------------
    def phase(self) -> tuple[str, str]:
        run = self.run
        if run.flags.get("setup_error"):   # first: the one thing a user must read
            return "failed", f"set-up failed: {run.flags['setup_error']}"
        if self.report is not None:
            return "done", f"run finished: {self.report['summary']['verdict']}"
        if run.prov is None:
            return "setup", "setting up the namespace, tables and users"
        if not run.finished:
            if not run.writers_may_start.is_set():
                return "barrier", (f"waiting for listeners: {run.ready_listeners}/{run.expected_listeners} "
                                   f"subscribed and ready")
            if self.remote is not None:
                return "writing", (f"{self.writing_text()}; listeners listening on {len(self.remote.nodes)} "
                                   f"worker(s); loss, duplicates and order are judged at the end, when each worker "
                                   f"checks its listeners against every worker's ledger; live latency is from commit")
            return "writing", self.writing_text()
        if "drain_seconds" in run.flags or run.flags.get("interrupted"):
            mon = run_monitor(run)
            try:
                if mon is not None and mon.mark_time("release_start") and not mon.mark_time("release_end"):
                    left = mon.mark_time("release_start") + getattr(self.options, "release_window", 0) - time.time()
                    return "release", f"release window: watching server memory after the load, {max(0, left):.0f} s left"
            except Exception:
                pass
            return "verifying", "reading the server's counters and verifying"
        return "draining", self.drain_text()

    def run_clock(self) -> dict:
        return run_clock(self.run, getattr(self.options, "run_time", None))

    def writing_text(self, now: float | None = None) -> str:
        """"writing: 23 s of 60 s, 37 s left" (and the step of a --step-load run), computed now."""
        return writing_text(self.run_clock(), time.time() if now is None else now)

    def drain_status(self) -> dict:
        """What the drain waits for: subscriptions still missing the newest acknowledged write of some
        writer (the run's own early-exit rule), and the time left."""
        run, o = self.run, self.options
        now = time.time()
        started = run.writing_stopped_at or now
        left = max(0.0, started + o.drain_timeout - now)
        newest = run.newest_acks
        waiting_subs, subs, writers = drain.behind(run.sessions, newest) if newest is not None else (0, 0, set())
        total = sum(s.received_total() for s in run.sessions)
        if self._drain_seen is None or self._drain_seen[0] != total:
            self._drain_seen = (total, now)
        quiet = now - self._drain_seen[1]
        return {"subscriptions_waiting": waiting_subs, "subscriptions": subs, "writers_behind": len(writers),
                "quiet_for": round(quiet, 1),
                "seconds_left": round(left, 1), "timeout": o.drain_timeout, "quiet_needed": o.drain_quiet,
                "known": newest is not None}

    def drain_text(self) -> str:
        """The run's drain ends when every subscription has the newest acknowledged write of every writer
        (then after min(0.5, --drain-quiet) s without arrivals), or after --drain-quiet s without
        arrivals, or at --drain-timeout."""
        d = self.drain_status()
        left = f"{d['seconds_left']:.0f} s left of the {d['timeout']:g} s drain timeout"
        if not d["known"]:
            return f"draining: waiting for the last changes; {left}"
        if d["subscriptions_waiting"]:
            return (f"draining: waiting for {d['subscriptions_waiting']} of {d['subscriptions']} subscriptions to "
                    f"receive the newest writes of {d['writers_behind']} writer(s); nothing new for "
                    f"{d['quiet_for']:.0f} s (gives up after {d['quiet_needed']:g} s of quiet); {left}")
        return (f"draining: every subscription has the newest writes; ending after "
                f"{min(0.5, d['quiet_needed']):g} s of quiet; {left}")

    # ---- heartbeat: how late does the event loop wake up? ----------------------------------------
    def _heartbeat(self) -> None:
        step = 0.05
        lag = self.health["loop_lag_ms"]
        while not self._stopped:
            t = time.perf_counter()
            gevent.sleep(step)
            late = max(0.0, (time.perf_counter() - t - step) * 1000.0)
            self._lags.append(late)
            lag["last"] = round(late, 2)
            if late > lag["max"]:
                lag["max"] = round(late, 2)
            if self._verifying and late > lag["max_during_verify"]:
                lag["max_during_verify"] = round(late, 2)
            if len(self._lags) >= 20 and int(t * 20) % 20 == 0:
                xs = sorted(self._lags)
                lag["p99"] = round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 2)

    # ---- server memory / CPU ---------------------------------------------------------------------
    def _sample_server(self) -> None:
        while not self._stopped and self.report is None:
            if run_monitor(self.run) is None:
                try:
                    if self._proc is None:
                        pid = self.server_pid
                        if pid:
                            self._proc = psutil.Process(pid)
                            self._proc.cpu_percent(None)
                    if self._proc is not None:
                        with self._proc.oneshot():
                            rss = self._proc.memory_info().rss
                            cpu = self._proc.cpu_percent(None)
                        s = self.server
                        s["t"].append(round(time.time(), 3))
                        s["rss_mb"].append(round(rss / MB, 2))
                        s["cpu"].append(round(cpu, 1))
                except psutil.Error:
                    self._proc = None
            gevent.sleep(1.0)

    def server_series(self) -> dict:
        mon = run_monitor(self.run)
        if mon is not None:
            got = monitor_series(mon)
            if got is not None and got["t"]:
                return got
        return self.server

    # ---- provisional verification ----------------------------------------------------------------
    def grace(self) -> float:
        p99 = (self.totals.get("latency") or {}).get("p99")
        g = 2.0 if p99 is None else 3.0 * p99 / 1000.0
        return min(30.0, max(2.0, g))

    def _verify_loop(self) -> None:
        due = time.monotonic() + self._next_verify_in
        while not self._stopped:
            # what is new is copied every COPY_EVERY s (or the interval, when shorter), also while a
            # verification runs: one copy is a second's worth of the record, however long verifying takes
            gevent.sleep(min(self.interval, COPY_EVERY))
            phase, _ = self.phase()
            if phase in ("verifying", "release", "done", "failed"):
                self.close_verifier()
                if phase == "done":
                    return
                continue
            if phase == "setup":
                continue
            if self.remote is not None:
                if time.monotonic() >= due:
                    self._guarded(self.from_workers)
                    due = time.monotonic() + self.interval
                continue
            if self._failures >= 3:
                return
            if self._inflight is not None and not self._inflight.dead:
                self._guarded(self.copy_once)
                continue
            if self._inflight is not None:    # it has ended: the next one is due an interval later
                self._inflight = None
                due = time.monotonic() + self._next_verify_in
            if time.monotonic() >= due:
                self._inflight = gevent.spawn(self._guarded, self.verify_once)
            else:
                self._guarded(self.copy_once)

    def _guarded(self, step) -> None:
        """One step of the live view; the view must never break the run (3 failures in a row turn it off)."""
        try:
            step()
            self._failures = 0
        except Exception as exc:
            self._failures += 1
            self.health["errors"] += 1
            self.health["last_error"] = f"{type(exc).__name__}: {exc}"
            log.warning("provisional verification failed: %s", self.health["last_error"],
                        exc_info=self._failures == 1)
            if self._failures >= 3:
                log.warning("provisional verification off for this run after 3 failures in a row "
                            "(the final verdict is not affected)")
                self.close_verifier()

    def snapshot(self, reset: bool = False) -> dict:
        """The worker's request: what is new in every ledger (``WriteLedger.delta``) and in every arrival
        log since the last request (array slices as bytes). Built in the main thread with no greenlet switch inside,
        so it is a consistent cut of the record; memcpy work only."""
        run = self.run
        now = time.time()
        cutoff = None if run.finished else now - self.grace()
        if reset:
            self._sent = {}
        logs = []
        for s in run.sessions:
            for st in s.subs.values():
                lg = st.log
                key = lg.info.key
                start = self._sent.get(key, 0)
                end = len(lg.kind)
                logs.append({"key": key, "table": st.spec.table.key, "user": s.account.user,
                             "vanished": bool(s.vanished), "info": lg.info, "start": start,
                             "cols": {name: getattr(lg, name)[start:end].tobytes() for name in _LOG_COLUMNS},
                             "epochs": [copy.copy(e) for e in lg.epochs], "writers": list(lg.writers),
                             "t_finished": lg.t_finished})
                self._sent[key] = end
        missing = list(run.failed_listeners) + [f"{s.account.user}: {s.vanished}" for s in run.sessions
                                                if s.vanished]
        return {"now": now, "cutoff": cutoff, "ledgers": {k: led.delta(full=reset) for k, led in run.ledgers.items()},
                "logs": logs, "missing": missing, "finished": run.finished, "reset": reset,
                "thresholds": thresholds_from(self.options, run.accepted_known), "latency_from": self.latency_from}

    def copy_once(self, verify: bool = False) -> dict:
        """Copy what is new in the record into the verifier process's queue (``_outbox``, written at the next
        verification): the event loop's share of the live view, timed as ``health.copy_ms``."""
        if self._verifier is None:
            self._verifier = VerifierProcess()
            self._sent, self._outbox = {}, []
        t0 = time.perf_counter()
        snap = self.snapshot(reset=not self._sent)
        snap["verify"] = verify
        self._outbox.append(pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL))
        copy_ms = (time.perf_counter() - t0) * 1000.0
        h = self.health
        h["copy_ms_last"] = round(copy_ms, 2)
        h["copy_ms_max"] = max(h["copy_ms_max"], h["copy_ms_last"])
        return snap

    def verify_once(self) -> None:
        snap = self.copy_once(verify=True)
        frames, self._outbox = self._outbox, []
        self._verifying = True
        t1 = time.perf_counter()
        try:
            out = self._verifier.call(frames)
            if out.get("error") == "resync":
                self._sent = {}
                snap = self.copy_once(verify=True)
                frames, self._outbox = self._outbox, []
                out = self._verifier.call(frames)
        except Exception:
            self._verifier.close()
            self._verifier = None
            raise
        finally:
            self._verifying = False
        took = time.perf_counter() - t1
        if out.get("error"):
            raise RuntimeError(f"live verifier: {out['error']}")
        h = self.health
        h["verifications"] += 1
        h["verify_ms_last"] = out.get("worker_ms", round(took * 1000.0, 1))
        h["verify_ms_max"] = max(h["verify_ms_max"], h["verify_ms_last"])
        # the verifier process competes with the server and the generator for CPU: keep it busy <= ~25 % of the time
        self._next_verify_in = max(self.interval, 4.0 * took)
        h["interval_s"] = round(self._next_verify_in, 2)
        if self.report is None:   # the final report may have landed meanwhile: it wins
            self.scenarios, self.listeners, self.totals = out["scenarios"], out["listeners"], out["totals"]
            self.series_cols, self.histogram = out["series"], out["histogram"]
            self.computed_at, self.cutoff = snap["now"], snap["cutoff"]

    def from_workers(self) -> None:
        """A distributed master's view: the workers' counts and series (``loadtest.view.livefeed``). Loss,
        duplicates and order stay unknown (None) until the end."""
        live = self.remote
        c = live.counts()
        # seconds that some worker has not reported whole yet would show as a dip: left out until it has
        self.series_cols = live.series.columns(until=live.complete_until())
        self.histogram = live.series.histogram(threshold_ms=getattr(self.options, "latency_threshold_ms", None))
        self.listeners = [{"listener": u, "received": n, "worker": c["worker_of"].get(u)}
                          for u, n in sorted(c["received_by_listener"].items())]
        self.totals = {"writes_sent": c["writes"], "writes_acked": c["writes_acked"], "deliveries": c["deliveries"],
                       "expected": None, "lost": None, "duplicated": None, "out_of_order": None,
                       "latency": self.histogram.get("summary"), "latency_from": live.series.latency_from,
                       "workers_reporting": c["workers_reporting"]}
        self.health["worker_reports"] = c["reports"]
        self.computed_at = time.time()

    # ---- end of run ---------------------------------------------------------------------------------
    def final(self, report: dict, series_cols: dict, histogram: dict) -> None:
        """The run's report is out: show it instead of the provisional figures."""
        self.report = report
        self.provisional = False
        self.scenarios = [{"id": k, "title": s.get("title"), "verdict": s.get("verdict"), "figure": s.get("figure"),
                           "threshold": s.get("threshold"), "value": s.get("value")}
                          for k, s in report.get("scenarios", {}).items()]
        self.listeners = listeners_from_report(report, self.latency_from)
        self.series_cols, self.histogram = series_cols, histogram
        self.computed_at = time.time()
        self.cutoff = None
        t = self.totals or {}
        t.update({"lost": sum(x["lost"] for x in self.listeners),
                  "duplicated": sum(x["duplicated"] for x in self.listeners),
                  "out_of_order": sum(x["out_of_order"] for x in self.listeners),
                  "expected": sum(x["expected"] for x in self.listeners),
                  "deliveries": report.get("figures", {}).get("change_messages_received", t.get("deliveries")),
                  "latency": histogram.get("summary") or t.get("latency"), "latency_from": self.latency_from})
        self.totals = t
        h = self.health
        lag = h["loop_lag_ms"]
        if True:
            log.info("live verification: %d provisional verifications, verifier process max %.0f ms, copy on the event "
                     "loop max %.1f ms; event-loop lag p99 %.1f ms, max %.1f ms (max while verifying %.1f ms)",
                     h["verifications"], h["verify_ms_max"], h["copy_ms_max"], lag["p99"], lag["max"],
                     lag["max_during_verify"])

    # ---- live numbers (cheap, read straight from the run) ----------------------------------------
    def live_counts(self) -> dict:
        run = self.run
        if self.remote is not None and self.report is None:
            c = self.remote.counts()
            return {"deliveries": c["deliveries"], "received_by_listener": c["received_by_listener"],
                    "writes": c["writes"], "writes_acked": c["writes_acked"]}
        deliveries = sum(st.received for s in run.sessions for st in s.subs.values())
        received_by = {s.account.user: s.received_total() for s in run.sessions}
        return {"deliveries": deliveries, "received_by_listener": received_by,
                "writes": sum(len(led) for led in run.ledgers.values())}

    def state(self) -> dict:
        """Everything the web view shows (JSON-able)."""
        run, o = self.run, self.options
        phase, text = self.phase()
        live = self.live_counts()
        listeners = [dict(x) for x in self.listeners]
        if self.provisional:
            for x in listeners:
                received = live["received_by_listener"].get(x["listener"], x["received"])
                if x.get("expected") is None:
                    x["received"] = received
                    continue
                # expected counts the writes up to the cutoff only: what arrived beyond the arrivals that
                # answer it (delivered, and any duplicates) is pending, not an excess
                answered = x["expected"] - x.get("lost", 0) + x.get("duplicated", 0)
                x["pending"] = max(0, received - answered)
                x["received"] = received - x["pending"]
        known = {x["listener"] for x in listeners}
        for user, n in live["received_by_listener"].items():
            if user not in known:
                listeners.append({"listener": user, "received": n})
        server = self.server_series()
        return {"phase": phase, "phase_text": text, "now": time.time(), "provisional": self.provisional,
                "clock": self.run_clock() if phase == "writing" and self.remote is None else None,
                "computed_at": self.computed_at, "cutoff": self.cutoff,
                "run": run_settings(run), "scenarios": self.scenarios, "listeners": listeners,
                "totals": {**self.totals, "deliveries_now": live["deliveries"], "writes_now": live["writes"],
                           **({"writes_acked": live["writes_acked"]} if "writes_acked" in live else {})},
                "series": self.series_cols, "histogram": self.histogram, "server": server,
                "marks": run_marks(run, self.report), "stress": stress_overlay(self.report) if self.report else None,
                "capacity": capacity_view(self.report),
                "health": self.health, "drain": self.drain_status() if phase == "draining" else None,
                "report_html": bool(self.report) and bool(getattr(o, "report_html", "")),
                "exit_code": self.report.get("exit_code") if self.report else None}

    # ---- terminal progress -----------------------------------------------------------------------
    def progress_line(self) -> str:
        run = self.run
        phase, text = self.phase()
        el = time.time() - (run.writing_started_at or run.started_at or time.time())
        if phase == "draining":
            return text
        if phase != "writing":
            return text
        live = self.live_counts()
        t = self.totals
        lat = (t.get("latency") or {}).get("p95")
        lat_from = t.get("latency_from") or self.latency_from
        acked = live.get("writes_acked", t.get("writes_acked"))
        srv = self.server_series()
        rss = next((x for x in reversed(srv.get("rss_mb") or []) if x is not None), None)
        cpu = next((x for x in reversed(srv.get("cpu") or []) if x is not None), None)
        parts = [f"{el:5.0f}s writing", f"writes {live['writes']}" + (f" ({acked} acked)" if acked is not None else ""),
                 f"deliveries {live['deliveries']}",
                 ("lost: judged at the end" if self.remote is not None else
                  f"lost so far {t.get('lost', '?')}" + (f", duplicated {t['duplicated']}" if t.get("duplicated") else "")),
                 f"latency p95 {lat:.1f} ms ({lat_from})" if lat is not None else "latency p95 -",
                 f"server {rss:.0f} MB" + (f", CPU {cpu:.0f}%" if cpu is not None else "") if rss is not None
                 else "server memory -"]
        return "progress: " + " | ".join(parts)

    def _progress_loop(self) -> None:
        """A line every --progress-interval s while writing; at once on each phase change; every 2 s
        during the drain (what it waits for, how long is left)."""
        last_phase, last_print = None, 0.0
        while not self._stopped:
            phase, _ = self.phase()
            if phase in ("done", "failed"):
                return
            now = time.monotonic()
            every = min(2.0, self.progress_interval) if phase in ("draining", "release") else self.progress_interval
            if phase != last_phase or now - last_print >= every:
                progress_log.info(self.progress_line())
                last_phase, last_print = phase, now
            gevent.sleep(0.25)


# ---------------------------------------------------------------------------------------- verifier process
_LOG_COLUMNS = ("kind", "writer", "n", "seq", "t_recv", "digest", "old_digest", "epoch", "flags")


class VerifierProcess:
    """``python -m loadtest.view.verifier_process`` with cooperative pipes (gevent.subprocess): a call writes one
    frame and waits for the answer without blocking the other greenlets."""

    def __init__(self, timeout: float = 120.0):
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.timeout = timeout
        self.proc = gsp.Popen([sys.executable, "-m", "loadtest.view.verifier_process"], cwd=root, env=env,
                              stdin=gsp.PIPE, stdout=gsp.PIPE, stderr=None, close_fds=True,
                              start_new_session=True)   # the terminal's Ctrl-C is for the load test, not for it

    def call(self, frames: list) -> dict:
        """Write the frames (the last one asks for the verification) and wait for its answer."""
        with gevent.Timeout(self.timeout, TimeoutError(f"live verifier gave no answer in {self.timeout:.0f} s")):
            for frame in frames:
                self.proc.stdin.write(struct.pack(">I", len(frame)) + frame)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(4)
            if len(head) < 4:
                raise RuntimeError(f"live verifier exited (code {self.proc.poll()})")
            (n,) = struct.unpack(">I", head)
            data = self.proc.stdout.read(n)
            if len(data) < n:
                raise RuntimeError("live verifier closed its answer early")
        return pickle.loads(data)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=2.0)
        except Exception:
            self.proc.kill()
            try:
                self.proc.wait(timeout=2.0)
            except Exception:
                pass
