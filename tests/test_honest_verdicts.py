"""Runs that go wrong never read as PASS: a late crash, a restart, Ctrl-C at the barrier and mid-run (as a
terminal sends it, to the whole process group), a run that exercised nothing, bad option values, a master
that gives up waiting for its workers; and one that only looks wrong (the generator standing still for
3 s) is judged on what it sent. Each is a real Locust run against the built-in stand-in (or one
started here), with the exact verdict, exit code and counts it must give."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from dist_run import free_port
from locust_run import REPO, run_locust
from standin.testing import TEST_ROOT_PASSWORD

pytestmark = pytest.mark.timeout(180)
ADMIN = {"KALAMDB_ADMIN_USER": "root", "KALAMDB_ADMIN_PASSWORD": TEST_ROOT_PASSWORD}


def refused_in_ledger(r) -> int:
    return sum(c["rejected"] for t in r.report["figures"]["writes"].values() for c in t.values())


def passing(r) -> set:
    return {k for k, v in r.scenarios.items() if v["verdict"] == "pass" and k != "GEN"}


def test_a_crash_late_in_the_run_with_three_listeners_is_named_and_is_not_a_pass(tmp_path):
    # the case that gave OVERALL PASS: three listeners, the server gone for the last seconds of the run
    r = run_locust(tmp_path, "--listeners", "3", "-u", "7", "-r", "7", faults={"crash_at": 7}, run_time="9s")
    assert r.report is not None, r.output[-3000:]
    outage = r.report["figures"]["outage"]
    assert outage is not None, r.report["notes"]
    assert outage["writes_refused"] == refused_in_ledger(r) > 0
    assert outage["listeners_disconnected"] == 3 == r.report["figures"]["disconnects_unexpected"]["1006"]
    assert outage["reconnects_refused"] > 0 and outage["counters_unreadable"] and outage["stats_unreadable"]
    first = r.report["notes"][0]
    assert re.match(r"server unreachable from \d+\.\d s into the run until the end of the run: "
                    rf"{outage['writes_refused']} write\(s\) refused, {outage['writes_unknown']} with unknown outcome, "
                    r"3 listener\(s\) disconnected", first), first
    assert passing(r) == set() and r.failing == set()
    assert r.report["summary"]["verdict"] == "inconclusive" and r.returncode == 1
    assert "OVERALL INCONCLUSIVE" in r.output


def test_a_generator_that_stands_still_3_s_is_named_and_its_stall_is_not_blamed_on_the_server(tmp_path):
    # a GC pause or a swapped-out process: the whole event loop blocks (the test hook, 4 s into writing).
    # Its writers stand still with it, so no change is left in flight to be read 3 s late: nothing is lost,
    # nothing fails, the latency does not hold the 3 s, and GEN names the stall
    r = run_locust(tmp_path, env={"KALAMDB_LT_TEST_STALL": "4:3"}, run_time="12s")
    assert r.report is not None, r.output[-3000:]
    gen = r.scenarios["GEN"]
    assert gen["details"]["stalls"] >= 1 and gen["details"]["loop_lag_max_ms"] >= 2900, gen
    assert "it stood still (≥ 100 ms)" in gen["figure"]
    assert "blocking the event loop for 3.0 s" in r.output
    assert r.failing == set(), {k: r.scenarios[k]["figure"] for k in r.failing}
    lost = {k: v["details"]["lost"] for k, v in r.scenarios.items() if "lost" in (v.get("details") or {})}
    assert set(lost) >= {"L1", "L2", "L3", "L4"} and set(lost.values()) == {0}, lost
    assert r.verdict("L1") == "pass" and r.verdict("L6") == "pass"
    sent = r.report["figures"]["latency_ms"]["sent"]
    assert sent["max"] < 1000, sent   # the 3 s are the reading's, not the delivery's
    assert (r.returncode, r.verdict("SC-054")) == r.clean_exit


def test_a_restart_mid_run_is_named_even_though_nothing_was_lost(tmp_path, standin_factory):
    s = standin_factory()
    # killed and started again 3 s into the writing, whenever the writing starts
    r = run_locust(tmp_path, "--host", s.url, run_time="10s", env=ADMIN,
                   after_line=("writers start", 3.0, lambda: s.restart(kill=True)))
    assert r.report is not None, r.output[-3000:]
    outage = r.report["figures"]["outage"]
    assert outage is not None and outage["seconds"] is not None and 0 < outage["seconds"] < 5, outage
    assert outage["writes_refused"] == refused_in_ledger(r) > 0
    assert outage["listeners_disconnected"] == 6 and not outage["counters_unreadable"]
    assert r.report["figures"]["resumes"] == 6   # every listener came back ...
    assert r.scenarios["L4"]["details"]["lost"] == 0 and r.scenarios["L4"]["details"]["duplicated"] == 0  # ... lost nothing
    assert re.match(r"server unreachable from \d+\.\d s into the run for \d+\.\d s: ", r.report["notes"][0])
    # would have passed: each is inconclusive, saying why
    assert passing(r) == set() and r.failing == set()
    assert all("unproven: server unreachable" in v["figure"] for k, v in r.scenarios.items()
               if v["verdict"] == "inconclusive" and k != "SC-054")
    assert r.report["summary"]["verdict"] == "inconclusive" and r.returncode == 1


def test_ctrl_c_at_the_start_barrier_is_inconclusive(tmp_path):
    # one user a second: the barrier is still closed when Ctrl-C comes
    r = run_locust(tmp_path, "-r", "1", run_time="30s", interrupt_after=1.0, interrupt_when="started the built-in",
                   interrupt_group=True, timeout=60)
    assert r.report is not None, r.output[-3000:]
    assert r.report["run"]["writing_started_at"] is None
    assert passing(r) == set()
    assert r.report["summary"]["verdict"] == "inconclusive" and r.returncode == 1
    assert r.report["notes"][0] == "run interrupted (Ctrl-C / SIGTERM): evidence is partial"
    assert "OVERALL PASS" not in r.output


def test_ctrl_c_mid_run_to_the_process_group_ends_at_once_with_the_report(tmp_path):
    r = run_locust(tmp_path, run_time="60s", interrupt_after=4, interrupt_when="writers start",
                   interrupt_group=True, timeout=60)
    assert r.report is not None, r.output[-3000:]
    # the stand-in and the live verifier have process groups of their own: the terminal's Ctrl-C did not
    # kill them, so the listeners did not try to resume against a dead server, and no outage is reported
    assert r.ended_s is not None and r.ended_s < 4.0, r.ended_s
    assert "resume attempt" not in r.output and r.report["figures"]["outage"] is None
    assert sum(c["ack"] for t in r.report["figures"]["writes"].values() for c in t.values()) > 0
    assert passing(r) == set() and r.failing == set()   # no latency fail from partial data
    assert r.report["summary"]["verdict"] == "inconclusive" and r.returncode == 1


def test_a_run_with_no_listener_verified_nothing_and_is_inconclusive(tmp_path):
    r = run_locust(tmp_path, "--listeners", "0", "-u", "4", run_time="4s")
    assert r.report is not None, r.output[-3000:]
    assert sum(c["ack"] for t in r.report["figures"]["writes"].values() for c in t.values()) > 0
    assert passing(r) == set()
    assert r.report["notes"] == ["no scenario was exercised (every one skipped): nothing was verified"]
    assert r.report["summary"]["verdict"] == "inconclusive" and r.returncode == 1


@pytest.mark.parametrize("args, says", [
    (["--op-mix", "nonsense"], "--op-mix: unknown operation 'nonsense'"),
    (["--write-rate", "-5"], "--write-rate: -5.0 is out of range (must be ≥ 0)"),
    (["--standin-fault", "drop=abc"], "--standin-fault 'drop=abc': bad value for drop"),
    (["--latency-quantile", "1.5"], "--latency-quantile: 1.5 is out of range (must be > 0 and ≤ 1)"),
    (["--accept-known", "everything"], "--accept-known: unknown behaviour(s) ['everything']"),
])
def test_a_bad_option_value_stops_at_once_naming_the_option(tmp_path, args, says):
    stale = tmp_path / "verdict.json"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--config",
                        str(REPO / "locust.conf"), "-t", "30s", "--report-json", str(stale),
                        "--reports-dir", str(tmp_path / "reports"), *args],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"locust: error: {says}" in p.stderr
    assert "Traceback" not in p.stderr and "started the built-in" not in p.stderr   # nothing started
    assert not stale.exists()
    assert time.monotonic() - t0 < 30   # it did not sit out the run time


def test_a_master_that_gives_up_waiting_for_workers_stops_its_stand_in(tmp_path):
    p = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--config",
                        str(REPO / "locust.conf"), "--master", "--master-bind-port", str(free_port()),
                        "--expect-workers", "2", "--expect-workers-max-wait", "2", "-t", "5s",
                        "--report-json", str(tmp_path / "verdict.json"), "--reports-dir", str(tmp_path / "reports")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "Gave up waiting for workers" in p.stderr, p.stderr[-2000:]
    pid = int(re.search(r"started the built-in KalamDB stand-in at \S+ \(pid (\d+)\)", p.stderr).group(1))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid), f"stand-in pid {pid} was left running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a zombie is gone for our purpose
        return f.read().split(")")[-1].split()[0] != "Z"
