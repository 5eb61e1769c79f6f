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


COLLECT_SCRIPT = textwrap.dedent(r"""
    import sys
    sys.path.insert(0, sys.argv[1])
    import locust  # monkey-patches gevent first
    import os, socket, subprocess, time
    import gevent, gevent.event
    from locust.argument_parser import get_parser
    from locust.env import Environment
    import loadtest.plugin  # noqa: F401  (adds the load test's options to Locust's parser)
    from loadtest.run.provision import Account, Provisioned
    from loadtest.run.run import AdminCredentials, Run
    from loadtest.run.workloads import tables_for

    SENDER = ("import os, sys, time\nfds = [int(x) for x in sys.argv[2:]]\n"
              "for i in range(int(sys.argv[1])):\n    os.write(fds[i % len(fds)], b'x'); time.sleep(0.002)\n")

    def wakeups(sends=100, sockets=5):
        # distinct loop iterations that read one of `sends` bytes, 2 ms apart round `sockets` sockets,
        # from another process
        loop = gevent.get_hub().loop
        pairs = [socket.socketpair() for _ in range(sockets)]
        seen, got, done, watchers = set(), [0], gevent.event.Event(), []
        def on_read(fd):
            got[0] += len(os.read(fd, 4096))
            seen.add(loop.iteration)
            if got[0] >= sends:
                done.set()
        for r, _ in pairs:
            r.setblocking(False)
            w = loop.io(r.fileno(), 1)
            w.start(on_read, r.fileno())
            watchers.append(w)
        fds = [w.fileno() for _, w in pairs]
        p = subprocess.Popen([sys.executable, "-c", SENDER, str(sends)] + [str(f) for f in fds], pass_fds=fds)
        done.wait(60)
        p.wait()
        for w in watchers:
            w.stop()
            w.close()
        for r, w in pairs:
            r.close()
            w.close()
        assert got[0] == sends, got
        return len(seen)

    def timers_ms(n=20):
        t = time.perf_counter()
        for _ in range(n):
            gevent.sleep(0.005)
        return round((time.perf_counter() - t) * 1000)

    def run_with(*args):
        o = get_parser(default_config_files=[]).parse_args(["--workload", "shared", "--writers", "1",
                                                            "--listeners", "2", *args])
        env = Environment(events=locust.events, parsed_options=o, host="http://127.0.0.1:9")
        run = Run(env, "http://127.0.0.1:9", AdminCredentials("root", "unused"))
        run.prov = Provisioned("r", "ns", [Account("w", "p")], [Account("l1", "p"), Account("l2", "p")],
                               tables_for("shared", "ns"))
        return run

    print("idle", run_with().read_collect_s, wakeups())
    run = run_with("--read-collect-ms", "20")
    run.claim_listener()
    print("listening", run.read_collect_s, wakeups(), timers_ms())
    run.claim_writer()
    print("writing", run.read_collect_s, wakeups())
    run.claim_listener()
    print("writing", run.read_collect_s, wakeups())
    off = run_with("--read-collect-ms", "0")
    off.claim_listener()
    print("off", off.read_collect_s, wakeups())
    dflt = run_with()
    dflt.claim_listener()
    print("default", dflt.read_collect_s)
""")


def test_a_process_that_only_listens_reads_many_sockets_per_wake_up_and_stops_when_a_writer_joins():
    """--read-collect-ms: while this process runs listeners only, its event loop gathers readiness before each
    poll (100 bytes 2 ms apart over 5 sockets from another process: about 11 loop iterations at 20 ms,
    one per byte without), and its timers keep their time; a writer here turns it off (its HTTP answers would
    wait). Fails when the interval is not applied, is not turned off, or delays timers. In its own process:
    Locust monkey-patches gevent on import."""
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", COLLECT_SCRIPT, root], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {}
    for line in out.stdout.splitlines():
        name, *figures = line.split()
        lines.setdefault(name, []).append(figures)
    # no listener claimed yet: the loop polls at once
    assert lines["idle"][0][0] == "0.0" and int(lines["idle"][0][1]) >= 60, lines
    (interval, wakes, timers), = lines["listening"]
    assert float(interval) == 0.02
    assert int(wakes) <= 30, lines                  # ~11 (about 210 ms of sends / 20 ms), not ~100
    assert int(timers) < 240, lines                 # 20 sleeps of 5 ms: 100-110 ms; delayed by 20 ms each: >= 400
    for interval, wakes in lines["writing"]:       # a writer in this process: off, and stays off
        assert float(interval) == 0.0 and int(wakes) >= 60, lines
    assert lines["off"] == [["0.0", lines["off"][0][1]]] and int(lines["off"][0][1]) >= 60, lines
    assert lines["default"] == [["0.002"]], lines
