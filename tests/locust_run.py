"""Run the real load test (`python -m locust`, the repository's locustfile) as a subprocess.

Small on purpose: a few writers and listeners for a few seconds, so that every fault test is a real
end-to-end run (Locust, the built-in stand-in on a free loopback port, WebSockets, the verifier) and
still takes seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SMALL = ["--writers", "4", "--listeners", "6", "-u", "10", "-r", "10", "--write-rate", "30",
         "--drain-quiet", "1", "--drain-timeout", "10", "--reconnect-every", "0"]


@dataclass
class RunResult:
    returncode: int
    report: dict | None
    output: str

    @property
    def scenarios(self) -> dict:
        return self.report["scenarios"]

    def verdict(self, sid: str) -> str:
        return self.scenarios[sid]["verdict"]

    @property
    def failing(self) -> set:
        return {k for k, v in self.scenarios.items() if v["verdict"] == "fail"}

    @property
    def stats(self) -> dict:
        return self.report["run"]["server_stats_at_end"] or {}

    def stat(self, name: str) -> int:
        return int(float(self.stats[name]))


def run_locust(tmp_path, *args, faults: dict | None = None, run_time: str = "6s", small: bool = True,
               env: dict | None = None, timeout: float = 120, interrupt_after: float | None = None) -> RunResult:
    stamp = time.monotonic_ns()
    report = Path(tmp_path) / f"verdict-{stamp}.json"
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--config", str(REPO / "locust.conf"),
           "--headless", "-t", run_time, "--report-json", str(report), "--only-summary",
           # the HTML and JUnit reports beside the JSON one (a test's own --report-html/--report-junit wins)
           "--report-html", str(Path(tmp_path) / f"report-{stamp}.html"),
           "--report-junit", str(Path(tmp_path) / f"junit-{stamp}.xml")]
    if small:
        cmd += SMALL
    for key, value in (faults or {}).items():
        cmd += ["--standin-fault", f"{key}={value}"]
    cmd += list(args)
    full_env = dict(os.environ)
    full_env.pop("KALAMDB_ADMIN_PASSWORD", None)
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
    try:
        if interrupt_after is not None:
            try:
                out, _ = proc.communicate(timeout=interrupt_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                out, _ = proc.communicate(timeout=timeout)
        else:
            out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"locust run did not end within {timeout}s:\n{out[-4000:]}")
    data = json.loads(report.read_text()) if report.exists() else None
    return RunResult(proc.returncode, data, out)
