"""Bad input to the load test gets a clear error, a written report and a non-zero exit code; secrets stay out."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from dist_run import free_port
from locust_run import run_locust
from standin.testing import TEST_ROOT_PASSWORD


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")

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
    assert "set-up of the run failed: http://127.0.0.1:9: cannot connect to 127.0.0.1:9: connection refused — " \
           "check --host" in r.output
    assert r.report is not None and r.report["summary"]["verdict"] == "inconclusive"
    assert r.report["notes"] == ["set-up failed: http://127.0.0.1:9: cannot connect to 127.0.0.1:9: connection "
                                 "refused — check --host (is the server running there?)"]
    assert "Traceback" not in r.output and "no run (set-up failed)" in r.output
    assert "not-used-secret-1" not in r.output


def test_refused_admin_login_is_a_clear_error_without_the_password(tmp_path, standin):
    wrong = "Wrong-Password-77"
    r = run_locust(tmp_path, "--host", standin.url, env={"KALAMDB_ADMIN_PASSWORD": wrong}, run_time="30s", timeout=60)
    assert r.returncode != 0
    assert "admin login as 'root' refused (AuthFailed" in r.output
    assert "check KALAMDB_ADMIN_USER / KALAMDB_ADMIN_PASSWORD" in r.output and "Traceback" not in r.output
    assert wrong not in r.output
    assert wrong not in str(r.report)


def test_a_host_that_is_not_kalamdb_is_named_so_once(tmp_path):
    # a plain HTTP server (Python's), as a mistyped --host would find
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        r = run_locust(tmp_path, "--host", f"http://127.0.0.1:{port}", env={"KALAMDB_ADMIN_PASSWORD": "x-secret-9"},
                       run_time="30s", timeout=60)
    finally:
        srv.kill()
        srv.wait()
    says = f"http://127.0.0.1:{port}: not a KalamDB server (POST /v1/api/auth/login answered 501) — check --host"
    assert r.returncode == 1 and r.report["summary"]["verdict"] == "inconclusive"
    assert r.output.count(says) == 1 and r.report["notes"] == [f"set-up failed: {says}"]   # the log line, the note
    assert r.output.count("not a KalamDB server") == 2   # nothing else says it again
    assert "<html" not in r.output.lower() and "Traceback" not in r.output and "x-secret-9" not in r.output


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
