"""Bad input to the load test gets a clear error, a written report and a non-zero exit code; secrets stay out."""
from __future__ import annotations

import pytest

from locust_run import run_locust
from standin.testing import TEST_ROOT_PASSWORD

pytestmark = pytest.mark.timeout(180)


def test_run_against_a_given_host_with_admin_from_environment(tmp_path, standin):
    r = run_locust(tmp_path, "--host", standin.url, "--workload", "shared",
                   env={"KALAMDB_ADMIN_USER": "root", "KALAMDB_ADMIN_PASSWORD": TEST_ROOT_PASSWORD})
    assert r.returncode == r.clean_exit[0], r.output[-3000:]
    assert r.report["run"]["host"] == standin.url
    assert r.verdict("L1") == "pass" and r.verdict("L5") == "skipped"
    assert TEST_ROOT_PASSWORD not in r.output


def test_wrong_host_is_a_clear_error(tmp_path):
    r = run_locust(tmp_path, "--host", "http://127.0.0.1:9", env={"KALAMDB_ADMIN_PASSWORD": "not-used-secret-1"},
                   run_time="30s", timeout=60)
    assert r.returncode != 0
    assert "127.0.0.1:9" in r.output
    assert "set-up of the run" in r.output
    assert r.report is not None and r.report["summary"]["verdict"] == "inconclusive"
    assert "not-used-secret-1" not in r.output


def test_refused_admin_login_is_a_clear_error_without_the_password(tmp_path, standin):
    wrong = "Wrong-Password-77"
    r = run_locust(tmp_path, "--host", standin.url, env={"KALAMDB_ADMIN_PASSWORD": wrong}, run_time="30s", timeout=60)
    assert r.returncode != 0
    assert "AuthFailed" in r.output
    assert wrong not in r.output
    assert wrong not in str(r.report)


def test_missing_admin_password_for_a_given_host(tmp_path, standin):
    r = run_locust(tmp_path, "--host", standin.url, run_time="5s", timeout=60)
    assert r.returncode != 0
    assert "KALAMDB_ADMIN_PASSWORD is not set" in r.output


def test_ctrl_c_keeps_the_record_and_says_inconclusive(tmp_path):
    r = run_locust(tmp_path, run_time="60s", interrupt_after=7, timeout=60)
    assert r.returncode != 0
    assert r.report is not None, r.output[-3000:]
    assert r.report["run"]["flags"]["interrupted"] is True
    verdicts = {v["verdict"] for k, v in r.scenarios.items() if k != "GEN"}   # GEN: the generator's own health
    assert "pass" not in verdicts and r.report["summary"]["verdict"] == "inconclusive"
    assert r.report["notes"][0] == "run interrupted (Ctrl-C / SIGTERM): evidence is partial"
    assert sum(c["ack"] for t in r.report["figures"]["writes"].values() for c in t.values()) > 0


def test_server_crash_mid_run_is_not_a_pass(tmp_path):
    r = run_locust(tmp_path, faults={"crash_after_writes": 150}, run_time="8s", timeout=90)
    assert r.returncode != 0
    assert r.report is not None, r.output[-3000:]
    # the stand-in exits after its 150th write: every later write is refused, every listener dropped, and
    # what arrived before is no proof of anything: inconclusive, the outage first, with its counts
    assert r.report["summary"]["verdict"] == "inconclusive", r.report["notes"]
    outage = r.report["figures"]["outage"]
    writes = r.report["figures"]["writes"]
    assert outage["writes_refused"] == sum(c["rejected"] for t in writes.values() for c in t.values()) > 0
    assert outage["listeners_disconnected"] == 6 == r.report["figures"]["disconnects_unexpected"]["1006"]
    assert outage["counters_unreadable"] and outage["stats_unreadable"] and outage["seconds"] is None
    assert r.report["notes"][0].startswith("server unreachable from ") and "until the end of the run" in r.report["notes"][0]
    assert not [k for k, v in r.scenarios.items() if v["verdict"] == "pass" and k != "GEN"]
