"""What a finished run hands on: the Record. The verifier and the report files take a Record, never the run.

``Run.finish()`` returns one; a distributed master's carries the results its workers reconciled and what
it knows of each worker. Everything here is a value of the past run: the sessions are closed, the
ledgers complete (or flagged partial), the server's counters read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    options: Any                      # the parsed options of the run
    base_url: str
    workload: str
    accepted_known: frozenset
    run_id: str | None
    namespace: str | None
    ledgers: dict                     # table key -> checks.ledger.WriteLedger
    sessions: list                    # closed listener sessions (ListenerSession, or RemoteSession on a master)
    flags: dict                       # interrupted, setup_error, drain_timed_out, ledger_partial, ...
    failed_listeners: list
    started_at: float | None
    writing_started_at: float | None
    writing_stopped_at: float | None
    counters: dict | None = None      # system.live changes per (user, subscription id), read before closing
    server_stats_at_end: dict | None = None
    results: list | None = None       # SubscriptionResults reconciled elsewhere (on workers), else None
    stress: Any = None                # loadtest.run.stress.StressRecorder with --stress
    series_parts: list = field(default_factory=list)   # per-worker TimeSeries parts (distributed)
    distributed: dict | None = None   # the master's view of its workers (report["distributed"])
    clock_error_bound_ms: dict | None = None           # per latency start point, distributed only
    server: dict | None = None        # the server the run used: kind, version, log_path (when known)
    generator: dict | None = None     # the load generator's health (loadtest.run.generator); a master's: its busiest worker's
    write_failures: list = field(default_factory=list)  # (t, "refused" | "unknown"): writes the server did not answer
    slow_listeners: list = field(default_factory=list)  # listeners that were slow consumers (--slow-listeners)
    # (t, CPU fraction or None, loop lag ms or None, process) of every generator process: a stepped load's
    # per-step generator figures (checks.capacity)
    generator_timeline: list = field(default_factory=list)
