"""The live picture of a distributed run on the master: what each worker reports every few seconds.

In one process the observer verifies the record as it grows (``loadtest.view.observer``). A master holds no
record during the run: the writes are in the workers' ledgers, the arrivals in the workers' arrival logs,
and a worker cannot verify its listeners before it has every worker's ledger (that happens once, at the
end). So during the run the master shows what can be known without the ledger, and says so:

- writes sent and acknowledged, change deliveries per listener (counts from every worker);
- per-second writes, deliveries and delivery latency *from commit* (the arrival's kernel stamp minus the
  commit time in ``_seq``: it needs no ledger), on the master's clock (each worker shifts its times by
  its measured clock offset);
- lost / duplicated / out of order: not known until the end, shown as unknown rather than as 0.

A worker adds its part to Locust's own worker report (``events.report_to_master``, every ~3 s, also after
its users stopped), as the counts since its last report; the master adds the parts up
(``events.worker_report``). The work on the worker's event loop is incremental: each arrival and each
write is counted once. At the end the master's report gets the exact series instead (each worker's logs
against the merged ledger, with the run's own ``--latency-from``; see ``WorkerRun._send_results``).
"""
from __future__ import annotations

from types import SimpleNamespace

import gevent
import psutil

from checks.model import OUTCOME_ACK

from ..verdict.timeseries import TimeSeries

LIVE_LATENCY_FROM = "commit"


def _write_columns(led):
    """What TimeSeries.add_ledger reads of a WriteLedger, without copying its columns (a LedgerView would)."""
    return SimpleNamespace(n=len(led), outcome=led._outcome, t_sent=led._t_sent, t_ack=led._t_ack)


class WorkerFeed:
    """A worker's part of the master's live view (counts since the last part)."""

    def __init__(self):
        self.series = TimeSeries(LIVE_LATENCY_FROM)
        self.writes = self.acked = 0
        self.ledgers_closed = False
        self.logs_closed = False
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)   # the first reading is meaningless: start the interval here

    def add_writes(self, ledgers: dict, now: float, shift: float, final: bool = False) -> None:
        if self.ledgers_closed:
            return
        for key, led in ledgers.items():
            self.series.add_ledger(key, _write_columns(led), now=now, shift=shift, final=final)
        self.writes = sum(len(led) for led in ledgers.values())
        self.acked = sum(led._outcome.count(OUTCOME_ACK) for led in ledgers.values())

    def add_arrivals(self, sessions, shift: float, pause: bool = True) -> None:
        """``pause``: yield after each subscription, so that the listeners' greenlets go on in between."""
        for s in list(sessions):
            for st in list(s.subs.values()):
                if self.logs_closed:   # checked after every yield: the results phase shifts the logs
                    return
                self.series.add_log(st.log, None, shift=shift)   # ~1 us per new arrival
                if pause:
                    gevent.sleep(0)

    def close_ledgers(self, ledgers: dict, now: float, shift: float) -> None:
        """The worker's own writes are all answered (the ledger phase): count the rest, then stop (its
        ledgers are about to be shifted and then replaced by the merged one)."""
        self.add_writes(ledgers, now, shift, final=True)
        self.ledgers_closed = True

    def close_logs(self, sessions, shift: float) -> None:
        """The results phase: count the last arrivals, then stop (the logs are about to be shifted)."""
        self.add_arrivals(sessions, shift, pause=False)   # no yield: the shift follows at once
        self.logs_closed = True

    def part(self, run_key: str, sessions, t: float) -> dict:
        """``t``: now, on the master's clock. ``cpu``: this process's CPU since the last part, % of a core
        (the load generator's saturation, GEN)."""
        return {"run": run_key, "t": t, "cpu": self._proc.cpu_percent(None), "writes": self.writes, "acked": self.acked,
                "listeners": [[s.account.user, s.received_total()] for s in sessions],
                "series": self.series.to_wire(take=True)}


class MasterLiveView:
    """The master's sum of the workers' parts, for the observer (progress line, web view)."""

    def __init__(self):
        self.series = TimeSeries(LIVE_LATENCY_FROM)
        self.nodes: dict = {}        # node -> {"writes", "acked", "listeners": {user: received}}
        self.cpu: dict = {}          # node -> [(t, % of a core)]: each worker's own CPU (GEN)
        self.last_t: dict = {}       # node -> time of its newest part (master's clock)
        self.reports = 0

    def merge(self, node: str, part: dict) -> None:
        self.nodes[node] = {"writes": int(part.get("writes") or 0), "acked": int(part.get("acked") or 0),
                            "listeners": {str(u): int(n) for u, n in part.get("listeners") or ()}}
        self.series.merge_wire(part.get("series") or {})
        if part.get("t") is not None:
            self.last_t[node] = float(part["t"])
            if part.get("cpu") is not None:
                self.cpu.setdefault(node, []).append((float(part["t"]), float(part["cpu"])))
        self.reports += 1

    def complete_until(self) -> int | None:
        """The first second not yet complete: every worker's newest part is from a later time."""
        return int(min(self.last_t.values())) if self.last_t else None

    def counts(self) -> dict:
        received_by = {}
        worker_of = {}
        for node, d in self.nodes.items():
            for user, n in d["listeners"].items():
                received_by[user] = n
                worker_of[user] = node
        return {"writes": sum(d["writes"] for d in self.nodes.values()),
                "writes_acked": sum(d["acked"] for d in self.nodes.values()),
                "deliveries": sum(received_by.values()), "received_by_listener": received_by,
                "worker_of": worker_of, "workers_reporting": len(self.nodes), "reports": self.reports}
