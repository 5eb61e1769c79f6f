"""Run history: each run's files in reports/<run id>/, reports/latest the newest, a failed set-up's too."""
from __future__ import annotations

import csv
import json
import os
import socket

from locust_run import run_locust


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_each_run_writes_its_files_into_its_own_directory_and_latest_moves_to_the_newest(tmp_path):
    first = run_locust(tmp_path, "--workload", "shared", run_time="4s", history=True)
    assert first.report is not None, first.output[-3000:]
    reports = tmp_path / "reports"
    run1 = first.report["run"]["run_id"]
    assert os.readlink(reports / "latest") == run1
    assert sorted(os.listdir(reports / run1)) == ["junit.xml", "report.html", "series.csv", "subscriptions.csv",
                                                  "verdict.json"]
    # the terminal names the run's directory and its files, above the verdict (wrapped at 120 columns)
    assert (f"reports: {reports / run1}/ (verdict.json, report.html, junit.xml, series.csv, subscriptions.csv)"
            in " ".join(first.output.split()))

    series = _rows(reports / run1 / "series.csv")
    assert list(series[0]) == ["time", "t_epoch_s", "writes_sent", "writes_acked", "deliveries", "latency_p50_ms",
                               "latency_p95_ms", "latency_p99_ms", "samples"]
    assert sum(int(r["deliveries"]) for r in series) == first.report["figures"]["change_messages_received"]
    acked = first.report["figures"]["writes"]["events"]
    assert sum(int(r["writes_acked"]) for r in series) == sum(v["ack"] for v in acked.values()) > 0
    subs = _rows(reports / run1 / "subscriptions.csv")
    assert [r["key"] for r in subs] == [s["key"] for s in first.report["subscriptions"]]
    assert [int(r["lost"]) for r in subs] == [s["lost"] for s in first.report["subscriptions"]]

    # --compare-to reports/latest: the run before this one (latest moves to the new run when it starts)
    second = run_locust(tmp_path, "--workload", "shared", "--compare-to", str(reports / "latest"), run_time="3s",
                        history=True)
    assert second.report is not None, second.output[-3000:]
    run2 = second.report["run"]["run_id"]
    assert run2 != run1 and os.readlink(reports / "latest") == run2
    comparison = second.report["comparison"]
    assert (comparison["a"]["run_id"], comparison["b"]["run_id"]) == (run1, run2), comparison.get("error")
    assert comparison["against"] == str(reports / run1)
    assert json.loads((reports / run1 / "verdict.json").read_text())["run"]["run_id"] == run1   # kept as it was


def test_a_failed_set_up_writes_its_report_into_its_run_directory_and_latest_points_at_it(tmp_path):
    # an earlier run's files, latest on them (as a run leaves them: tested above)
    earlier = tmp_path / "reports" / "1206000000abcd"
    earlier.mkdir(parents=True)
    (earlier / "verdict.json").write_text(json.dumps({"run": {"run_id": "1206000000abcd"}}))
    os.symlink(earlier.name, tmp_path / "reports" / "latest")
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = run_locust(tmp_path, "--host", f"http://127.0.0.1:{port}", run_time="3s", history=True,
                     env={"KALAMDB_ADMIN_PASSWORD": "x"})
    reports = tmp_path / "reports"
    latest = os.readlink(reports / "latest")
    assert latest != earlier.name   # the earlier run's verdict is not left as the newest
    assert bad.report is not None, bad.output[-3000:]
    assert bad.report["summary"]["verdict"] == "inconclusive" and bad.returncode == 1
    assert bad.report["run"]["run_id"] is None and "cannot connect" in bad.report["notes"][0]
    assert sorted(os.listdir(reports / latest)) == ["junit.xml", "report.html", "series.csv", "subscriptions.csv",
                                                    "verdict.json"]


def test_explicit_report_paths_are_used_as_given_and_leave_the_history_alone(tmp_path):
    # run_locust names a path of its own for the JSON, HTML and JUnit files; no CSV: nothing goes to a run directory
    r = run_locust(tmp_path, "--workload", "shared", "--report-csv", "", run_time="3s")
    assert r.report is not None, r.output[-3000:]
    assert not (tmp_path / "reports").exists()
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["junit", "report", "verdict"]
