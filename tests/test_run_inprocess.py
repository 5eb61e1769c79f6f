"""In-process tests of what only subprocess Locust runs reached before: the drain rule, verify(Record),
and the adapter that writes deliveries into Locust's statistics."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from checks.model import Workload
from checks.testing import History
from loadtest.options import add_arguments
from loadtest.run import drain
from loadtest.run.record import Record
from loadtest.verdict.verify import verify


class _Parser(argparse.ArgumentParser):
    """Our options without importing Locust here: importing it monkey-patches gevent into pytest's process
    after ssl was imported (a RecursionError in ssl). Locust's extra keywords are only for its web form."""

    def add_argument(self, *args, include_in_web_ui=None, is_secret=None, is_required=None, **kw):
        return super().add_argument(*args, **kw)


def _options(*args):
    p = _Parser()
    add_arguments(p)
    o = p.parse_args(list(args))
    o.report_json = ""
    return o


def _session(user, sid, log, table="events", max_n=None):
    spec = SimpleNamespace(table=SimpleNamespace(key=table), owner="", group="", subscription_id=sid)
    st = SimpleNamespace(spec=spec, log=log, received=0, epoch_received=0, max_n=max_n or {})
    return SimpleNamespace(account=SimpleNamespace(user=user), subs={sid: st}, vanished=None, disconnects={},
                           forced_reconnects=0, resumes=0, malformed=0, disconnect_log=[], first_ready_at=None,
                           closed_at=None, lag=lambda: (0, 0.0, 0.0), received_total=lambda: st.received)


def test_drain_waits_for_each_writers_newest_acknowledged_write():
    h = History(Workload(table="events", content_columns=("body",)))
    a1 = h.insert("w1")
    h.insert("w1")
    h.insert("w2")
    h.delete(a1)   # a tombstone carries the older n: not a drain target
    newest = drain.newest_acks({"events": h.ledger})
    assert newest[("events", "", "")] == {"w1": 2, "w2": 1}
    behind = _session("l1", "s", None, max_n={"w1": 2})
    done = _session("l2", "s", None, max_n={"w1": 2, "w2": 1})
    assert drain.behind([behind, done], newest) == (1, 2, {"w2"})
    assert not drain.all_delivered([behind, done], newest)
    behind.vanished = "gone"   # not waited for
    assert drain.all_delivered([behind, done], newest)


def test_drain_stops_after_a_short_quiet_when_everything_is_in_else_after_the_long_one():
    assert drain.should_stop(delivered=True, quiet_s=0.5, quiet_needed=3.0)
    assert not drain.should_stop(delivered=True, quiet_s=0.4, quiet_needed=3.0)
    assert not drain.should_stop(delivered=False, quiet_s=2.9, quiet_needed=3.0)
    assert drain.should_stop(delivered=False, quiet_s=3.0, quiet_needed=3.0)


def _record(h, logs, **flags):
    sessions = [_session(lg.info.listener, lg.info.subscription_id, lg) for lg in logs]
    for s in sessions:
        for st in s.subs.values():
            st.received = len(st.log.kind)
    return Record(options=_options("--writers", "1", "--listeners", str(len(logs))), base_url="http://x",
                  workload="shared", accepted_known=frozenset(), run_id="r1", namespace="ns",
                  ledgers={"events": h.ledger}, sessions=sessions, flags=dict(flags), failed_listeners=[],
                  started_at=h.t - 1, writing_started_at=h.t - 1, writing_stopped_at=h.t)


def test_verify_takes_a_record_and_judges_loss_with_its_exact_count():
    h = History(Workload(table="events", content_columns=("body",)))
    logs = [h.subscription("l1", "events"), h.subscription("l2", "events")]
    writes = [h.insert("w1") for _ in range(5)]
    for i in writes:
        h.deliver(logs[0], i)
    for i in writes[:3]:   # l2 misses two inserts
        h.deliver(logs[1], i)
    for lg in logs:
        lg.finished(h.t)
    rep = verify(_record(h, logs))
    assert rep["scenarios"]["L1"]["verdict"] == "fail"
    assert {s["listener"]: s["lost"] for s in rep["subscriptions"]} == {"l1": 0, "l2": 2}
    assert rep["figures"]["change_messages_received"] == 8


def test_verify_of_a_clean_record_passes_and_an_interrupted_one_does_not():
    h = History(Workload(table="events", content_columns=("body",)))
    logs = [h.subscription("l1", "events")]
    for i in [h.insert("w1") for _ in range(3)]:
        h.deliver(logs[0], i)
    logs[0].finished(h.t)
    assert verify(_record(h, logs))["scenarios"]["L1"]["verdict"] == "pass"
    assert verify(_record(h, logs, interrupted=True))["scenarios"]["L1"]["verdict"] == "inconclusive"


def test_an_interrupted_run_ends_its_epochs_so_a_change_still_on_its_way_is_not_lost():
    h = History(Workload(table="events", content_columns=("body",)))
    logs = [h.subscription("l1", "events"), h.subscription("l2", "events")]
    ids = [h.insert("w1") for _ in range(3)]
    for i in ids[:2]:
        h.deliver(logs[0], i)      # the third was on its way when Ctrl-C came
    for i in (ids[0], ids[2]):
        h.deliver(logs[1], i)      # the second is proven lost: a later write of its writer arrived
    drain.end_logs([_session(f"l{k + 1}", "events", lg) for k, lg in enumerate(logs)], h.t, drained=False)
    rep = verify(_record(h, logs, interrupted=True))
    assert {s["listener"]: s["lost"] for s in rep["subscriptions"]} == {"l1": 0, "l2": 1}
    assert rep["scenarios"]["L1"]["verdict"] == "fail"   # a proven loss stands, interrupted or not


STATS_SCRIPT = textwrap.dedent(r"""
    import sys
    from types import SimpleNamespace
    sys.path.insert(0, sys.argv[1])
    import locust.stats as locust_stats
    from locust.stats import RequestStats
    from loadtest.run.locuststats import DeliveryStats

    # batches: all below 99.5 ms (buckets counted by round() in C: ties, 99.4), one past it, two names
    batches = [[("events insert", ms) for ms in (0.4, 3.0, 12.5, 12.5, 12.7, 2.5, 0.5, 99.4, 0.0)],
               [("events insert", 0.4), ("events update", 180.0), ("events update", 1234.5), ("events insert", 7.0)]]

    def compare(by_log, by_adapter, names):
        for e in [(by_log.get(n, "WS"), by_adapter.get(n, "WS")) for n in names] + [(by_log.total, by_adapter.total)]:
            a, b = e
            for field in ("num_requests", "min_response_time", "max_response_time"):
                assert getattr(a, field) == getattr(b, field), field
            assert abs(a.total_response_time - b.total_response_time) < 1e-9, "total_response_time"
            assert dict(a.response_times) == dict(b.response_times), (a.name, dict(b.response_times))
            assert sum(a.num_reqs_per_sec.values()) == sum(b.num_reqs_per_sec.values()), "per second"

    for custom in (False, True):
        if custom:   # a bucketing of the user's own, set at run time (Locust's documented hook), is honoured
            locust_stats.bucket_response_time = lambda ms: int(ms // 10 * 10)
        by_log, by_adapter = RequestStats(), RequestStats()
        d = DeliveryStats(SimpleNamespace(stats=by_adapter), interval=60.0)
        for batch in batches:
            for name, ms in batch:
                by_log.log_request("WS", name, ms, 0)
                d(name, ms)
            d.flush()
        compare(by_log, by_adapter, ("events insert", "events update"))
    print("SAME", by_adapter.total.num_requests, DeliveryStats.__call__ is DeliveryStats.call_python)
""")


@pytest.mark.parametrize("call", ["compiled", "python"])
def test_delivery_stats_write_what_statsentry_log_writes(call):
    """Fails when Locust's statistics change shape: the adapter writes StatsEntry's fields directly.
    In its own process: Locust monkey-patches gevent on import. Its __call__ compiled
    (loadtest.run._speedups, where built) and in Python."""
    from loadtest.run.compiled import speedups
    if call == "compiled" and speedups is None:
        pytest.skip("loadtest.run._speedups was not built")
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, KALAMDB_LT_PURE_PYTHON="1" if call == "python" else "")
    out = subprocess.run([sys.executable, "-c", STATS_SCRIPT, root], capture_output=True, text=True, timeout=60,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["SAME", "13", str(call == "python")]
