"""The load test against the real KalamDB server it starts itself (--kalamdb-bin), where the binary is
present (../shared/kalamdb/kalamdb-server, or $KALAMDB_BIN); skipped with the reason where it is not."""
from __future__ import annotations

import os
import re

import pytest

from locust_run import run_locust
from test_loadtest_runs import SLOW
from test_stress_runs import RUN_TIME, STRESS

pytestmark = pytest.mark.timeout(240)


def test_a_short_main_job_against_a_managed_kalamdb(tmp_path, kalamdb_bin):
    r = run_locust(tmp_path, "--kalamdb-bin", kalamdb_bin, "--latency-threshold-ms", "250", run_time="8s",
                   timeout=180)
    assert r.report is not None, r.output[-3000:]
    server = r.report["run"]["server"]
    assert server["kind"] == "kalamdb" and re.fullmatch(r"\d+\.\d+\.\d+\S*", server["version"]), server
    assert r.report["run"]["host"] == server["url"] and server["url"].startswith("http://127.0.0.1:")
    # its log is kept and named; the root password is nowhere in the output or the report
    assert os.path.isfile(server["log_path"]) and os.path.getsize(server["log_path"]) > 0
    assert "root_password" not in str(r.report) and "KALAMDB_ROOT_PASSWORD" not in r.output
    figures = {k: f"{v['verdict']}: {v['figure']}" for k, v in r.scenarios.items()}
    code, latency = r.clean_exit
    live = ("L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L10")
    assert {k: r.verdict(k) for k in live} == dict.fromkeys(live, "pass"), figures
    assert r.verdict("SC-054") == latency and r.returncode == code, figures
    assert r.scenarios["L4"]["details"]["lost"] == 0 and r.report["figures"]["outage"] is None
    # the server is stopped at the end: its port answers no more
    pid = int(re.search(r"started KalamDB \S+ at \S+ \(pid (\d+);", r.output).group(1))
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"


def test_kalamdb_bin_that_is_not_an_executable_is_a_clear_error(tmp_path):
    r = run_locust(tmp_path, "--kalamdb-bin", str(tmp_path / "nope"), run_time="5s", timeout=60)
    assert r.returncode == 2 and r.report is None
    assert f"locust: error: --kalamdb-bin: '{tmp_path / 'nope'}' is not an executable file" in r.output


def test_two_worker_processes_against_a_managed_kalamdb(tmp_path, kalamdb_bin):
    r = run_locust(tmp_path, "--kalamdb-bin", kalamdb_bin, "--processes", "2", "--latency-threshold-ms", "250",
                   run_time="8s", timeout=180)
    assert r.report is not None, r.output[-3000:]
    assert r.report["run"]["server"]["kind"] == "kalamdb"
    workers = r.report["distributed"]["workers"]
    assert len(workers) == 2 and all(w["ledger_received"] and w["results_received"] for w in workers)
    assert r.report["distributed"]["lost_workers"] == []
    code, latency = r.clean_exit
    live = ("L1", "L4", "L5", "L6", "L7", "L8", "L10")
    assert {k: r.verdict(k) for k in live} == dict.fromkeys(live, "pass"), r.output[-3000:]
    assert r.verdict("SC-054") == latency and r.returncode == code


def test_a_short_stress_run_samples_the_managed_kalamdb(tmp_path, kalamdb_bin):
    # S3 as a share of this machine's 2 cores: KalamDB used 78 % of one core (peaks 97 %) at this load on a
    # quiet day and crossed 80 % on CI; the test is about sampling the real server, not this machine's speed
    r = run_locust(tmp_path, *STRESS, "--kalamdb-bin", kalamdb_bin, "--cpu-cores", "2", run_time=RUN_TIME,
                   timeout=200)
    assert r.report is not None, r.output[-3000:]
    mon = r.report["monitor"]
    pid = int(re.search(r"started KalamDB \S+ at \S+ \(pid (\d+);", r.output).group(1))
    assert mon["server_pid"] == pid and mon["gaps"] == 0 and len(mon["rows"]) >= 20   # psutil on the real server
    assert all(row[1] and row[1] > 0 for row in mon["rows"])                             # its RSS, MB
    steady = ("L1", "L4", "L7", "L8", "S3", "S4", "S6", "S8", "SC-057")
    assert {k: r.verdict(k) for k in steady} == dict.fromkeys(steady, "pass"), \
        {k: r.scenarios[k]["figure"] for k in steady if r.verdict(k) != "pass"}
    s3 = r.scenarios["S3"]["details"]
    assert s3["cores"] == 2 and s3["samples"] >= 10 and s3["avg_percent"] > 0, s3
    assert r.verdict("S10") == "skipped"   # a steady load: S10 is judged past capacity (--step-load)
    # memory is judged from real samples (KalamDB 0.4.3-rc.4 grows its RocksDB memory in the first
    # seconds of load: a finding about the server, so its verdict is not asserted here)
    assert all(r.verdict(k) in ("pass", "fail") for k in ("S1", "S5", "S7")), {k: r.scenarios[k]["figure"] for k in ("S1", "S5", "S7")}


# the writers as fast as they can: KalamDB's send buffers are the kernel's, and the 4,000 changes SLOW's paced
# writers send in a pause fit in them (no drop at all)
SLOW_UNPACED = tuple("0" if before == "--write-rate" else arg for before, arg in zip(("",) + SLOW, SLOW))


def test_a_slow_consumer_on_kalamdb_loses_what_its_log_counts_only_on_its_subscriptions(tmp_path, kalamdb_bin):
    # KalamDB 0.4.3-rc.4 drops a change when a connection's 128-slot channel is full, logs it, and does not
    # count it in system.live.changes: accepted as queue-drops, up to the count in its own log
    r = run_locust(tmp_path, *SLOW_UNPACED, "--kalamdb-bin", kalamdb_bin, "--accept-known", "queue-drops", run_time="8s",
                   timeout=180)
    assert r.report is not None, r.output[-3000:]
    l1 = r.scenarios["L1"]["details"]
    qd = l1["known_behaviours"]["queue-drops"]
    dropped = qd["server_count"]
    assert dropped > 0 and qd == {"count": dropped, "accepted": True, "accepted_count": dropped,
                                  "server_count": dropped,
                                  "server_count_from": f"server log {r.report['run']['server']['log_path']}"}
    assert l1["lost"] == dropped
    # the slow listener's subscription bears the drops; on a busy machine (CI: 35,774 drops in 8 s) a fast
    # listener's channel can fill too, and the server's log counts those as well: every lost change is one
    # the log counted, wherever it fell
    slow = l1["slow_listeners"]
    assert (slow["listeners"], slow["subscriptions"]) == (1, 1), slow
    assert slow["lost"] + slow["lost_elsewhere"] == dropped and slow["lost"] > slow["lost_elsewhere"], slow
    live = ("L1", "L4", "L6", "L7", "L8", "L10")
    assert {k: r.verdict(k) for k in live} == dict.fromkeys(live, "pass"), {k: r.scenarios[k]["figure"] for k in live}
    assert r.returncode == r.clean_exit[0], r.report["notes"]
