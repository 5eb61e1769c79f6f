"""loadtest.monitor against real processes on loopback: the stand-in (system.stats + psutil), a plain
``python -m http.server`` (psutil only, failing stats → gaps), a server that dies mid-run, and the
sampler under gevent monkey-patching (in a subprocess, so this process stays unpatched)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from checks.stress import Sample, memory_growth
from kalamclient import KalamHttp
from loadtest.run.monitor import ServerMonitor, find_pid_by_port, parse_stats

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.fixture
def http_server(tmp_path):
    """A plain ``python -m http.server`` on a free loopback port (bounded start, always reaped)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False
        assert _wait_until(listening), "http.server did not start"
        yield proc, port
    finally:
        proc.kill()
        proc.wait(5)


def _admin_factory(url):
    from standin.testing import TEST_ROOT_PASSWORD

    def make():
        http = KalamHttp(url, timeout=5.0)
        http.login("root", TEST_ROOT_PASSWORD)
        return http
    return make


# ---------------------------------------------------------------------------------- pure parts

def test_parse_stats_turns_text_into_numbers():
    rows = [{"metric_name": "memory_rss_bytes", "metric_value": "123456"},
            {"metric_name": "cpu_usage_percent", "metric_value": "12.5"},
            {"metric_name": "server_version", "metric_value": "0.3.0"},
            ["cluster_mode", "standalone"], ["nan_metric", "nan"]]
    assert parse_stats(rows) == {"memory_rss_bytes": 123456, "cpu_usage_percent": 12.5,
                                 "server_version": "0.3.0", "cluster_mode": "standalone",
                                 "nan_metric": "nan"}


# ---------------------------------------------------------------------------------- psutil path

def test_find_pid_by_port_finds_the_listening_process(http_server):
    proc, port = http_server
    assert find_pid_by_port(port) == proc.pid
    assert find_pid_by_port(port, host="127.0.0.1") == proc.pid
    assert find_pid_by_port(_free_port()) is None


def test_psutil_only_monitor_and_failing_stats_are_gaps(http_server):
    proc, port = http_server
    url = f"http://127.0.0.1:{port}"
    # http.server has no /v1/api/sql: every stats poll fails, psutil still measures the process
    with ServerMonitor(url, KalamHttp(url, timeout=2.0), interval=0.1) as mon:
        assert mon.server_pid == proc.pid
        assert _wait_until(lambda: len(mon.samples()) >= 3)
    samples = mon.samples()
    assert not mon.running
    assert all(s.source == "psutil" and s.error for s in samples)
    assert all(s.server_rss_bytes and s.server_rss_bytes > 1_000_000 for s in samples)
    assert all(s.server_alive is True and s.server_cpu_percent is not None for s in samples)
    assert all(s.generator_rss_bytes > 0 and s.generator_cpu_percent is not None for s in samples)
    assert mon.gaps == len(samples) == mon.polls

    with ServerMonitor(url, None, interval=0.1) as mon:  # no admin client at all: psutil only, no gap
        assert _wait_until(lambda: len(mon.samples()) >= 2)
    assert all(s.source == "psutil" and s.error is None for s in mon.samples()) and mon.gaps == 0


def test_a_server_that_dies_is_recorded_not_raised(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_until(lambda: find_pid_by_port(port) == proc.pid)
        mon = ServerMonitor(f"http://127.0.0.1:{port}", None, interval=0.1).start()
        assert _wait_until(lambda: len(mon.samples()) >= 2)
        proc.kill()
        proc.wait(5)
        assert _wait_until(lambda: mon.server_gone_at is not None)
        n = len(mon.samples())
        assert _wait_until(lambda: len(mon.samples()) >= n + 2)  # still sampling after the death
        assert mon.running
        mon.stop()
        assert not mon.running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    last = mon.samples()[-1]
    assert last.server_alive is False and last.source == "gap" and last.server_rss_bytes is None


def test_monitor_works_under_gevent_monkey_patching(http_server):
    _, port = http_server
    script = textwrap.dedent(f"""
        from gevent import monkey; monkey.patch_all()
        import gevent, json, sys, time
        sys.path.insert(0, {ROOT!r})
        from loadtest.run.monitor import ServerMonitor
        ticks = []
        def other():                       # another greenlet keeps running while the monitor samples
            for _ in range(20):
                ticks.append(time.time()); gevent.sleep(0.05)
        g = gevent.spawn(other)
        mon = ServerMonitor("http://127.0.0.1:{port}", None, interval=0.1).start()
        gevent.sleep(0.8)
        mon.stop()
        g.join(5)
        print(json.dumps({{"samples": len(mon.samples()), "ticks": len(ticks), "running": mon.running,
                          "pid": mon.server_pid}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["samples"] >= 4 and result["ticks"] == 20
    assert result["running"] is False and result["pid"] is not None


# ---------------------------------------------------------------------------------- the stand-in

def test_monitor_reads_system_stats_of_the_standin(standin):
    factory = _admin_factory(standin.url)
    mon = ServerMonitor(standin.url, factory, interval=0.1)  # no pid given: found by its port
    mon.start()
    try:
        assert mon.server_pid == standin.pid
        t_load = mon.mark("load_start")
        assert _wait_until(lambda: len([s for s in mon.samples() if s.stats]) >= 5)
        mon.mark("flush")
        mon.mark("load_end")
    finally:
        mon.stop()
    samples = [s for s in mon.samples() if s.stats]
    for s in samples:
        assert isinstance(s, Sample) and s.source == "psutil+stats" and s.error is None
        assert s.server_rss_bytes > 1_000_000 and s.server_alive is True
        assert s.stats["pid"] == standin.pid and isinstance(s.stats["memory_rss_bytes"], int)
        assert isinstance(s.subscriptions, int) and isinstance(s.connections, int)
        assert isinstance(s.ws_sessions, int)
        assert "sqlite_db_size_bytes" in s.storage and "server_version" not in s.stats
    assert [name for name, _ in mon.marks()] == ["load_start", "flush", "load_end"]
    assert mon.mark_time("load_start") == t_load and len(mon.marks("flush")) == 1
    data = json.loads(mon.to_json())
    assert data["server_pid"] == standin.pid and len(data["samples"]) == len(mon.samples())
    assert data["marks"][0] == ["load_start", t_load]
    times, rss = mon.series("server_rss_bytes")
    assert len(times) == len(mon.samples()) and all(v > 0 for v in rss)
    times, subs = mon.series("stats.active_subscriptions")
    assert len(subs) == len(samples)
    # a run this short has no baseline after a 30 s warm-up: the verdict says so instead of passing
    v = memory_growth(*mon.series("server_rss_bytes"), load_start=t_load, load_end=mon.mark_time("load_end"))
    assert v["verdict"] == "inconclusive"


def test_monitor_records_gaps_when_the_standin_dies(standin_factory):
    server = standin_factory()
    mon = ServerMonitor(server.url, _admin_factory(server.url), interval=0.1, pid=server.pid, query_timeout=2.0)
    mon.start()
    try:
        assert _wait_until(lambda: any(s.stats for s in mon.samples()))
        server.kill()
        assert _wait_until(lambda: mon.server_gone_at is not None)
        n = len(mon.samples())
        assert _wait_until(lambda: len(mon.samples()) >= n + 2)
        assert mon.running
    finally:
        mon.stop()
    last = mon.samples()[-1]
    assert last.source == "gap" and last.error and "ConnectError" in last.error
    assert last.server_alive is False and mon.gaps >= 2
