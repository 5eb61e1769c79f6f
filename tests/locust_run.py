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
import threading
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
    ended_s: float | None = None   # seconds from the interrupt to the process's exit

    @property
    def scenarios(self) -> dict:
        return self.report["scenarios"]

    def verdict(self, sid: str) -> str:
        return self.scenarios[sid]["verdict"]

    @property
    def failing(self) -> set:
        return {k for k, v in self.scenarios.items() if v["verdict"] == "fail"}

    @property
    def saturated(self) -> bool:
        """The run's GEN said the load generator was saturated (this machine too busy): SC-054 is then
        inconclusive by rule (checks.evidence), and a clean run is inconclusive instead of pass."""
        return self.scenarios["GEN"]["verdict"] == "warning"

    @property
    def clean_exit(self) -> tuple:
        """What a clean run must end with: (exit code, SC-054's verdict)."""
        return (1, "inconclusive") if self.saturated else (0, "pass")

    @property
    def stats(self) -> dict:
        return self.report["run"]["server_stats_at_end"] or {}

    def stat(self, name: str) -> int:
        return int(float(self.stats[name]))


def run_locust(tmp_path, *args, faults: dict | None = None, run_time: str = "6s", small: bool = True,
               env: dict | None = None, timeout: float = 120, interrupt_after: float | None = None,
               interrupt_group: bool = False, interrupt_when: str | None = None,
               after_line: tuple | None = None, history: bool = False) -> RunResult:
    """interrupt_after: seconds after the start (or after the first output line containing
    ``interrupt_when``) to send SIGINT; interrupt_group: to the whole process group, as a terminal's
    Ctrl-C does (the load test then runs in a session of its own). after_line: (text, seconds, fn): call
    fn() that many seconds after the first output line containing text (e.g. restart the server 3 s after
    "writers start", whenever that comes on a busy machine). history: the files where a user's run puts them
    (``<tmp_path>/reports/<run id>/``, the report read through ``reports/latest``), else each at a path of its
    own in tmp_path."""
    stamp = time.monotonic_ns()
    report = Path(tmp_path) / f"verdict-{stamp}.json"
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--config", str(REPO / "locust.conf"),
           "--headless", "-t", run_time, "--only-summary", "--reports-dir", str(Path(tmp_path) / "reports")]
    if history:
        report = Path(tmp_path) / "reports" / "latest" / "verdict.json"
    else:
        # the HTML and JUnit reports beside the JSON one (a test's own --report-html/--report-junit wins)
        cmd += ["--report-json", str(report), "--report-html", str(Path(tmp_path) / f"report-{stamp}.html"),
                "--report-junit", str(Path(tmp_path) / f"junit-{stamp}.xml")]
    if small:
        cmd += SMALL
    for key, value in (faults or {}).items():
        cmd += ["--standin-fault", f"{key}={value}"]
    cmd += list(args)
    full_env = dict(os.environ)
    full_env.pop("KALAMDB_ADMIN_PASSWORD", None)
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                            start_new_session=interrupt_group)
    lines: list[str] = []
    seen = threading.Event()
    acted = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if interrupt_when is not None and interrupt_when in line:
                seen.set()
            if after_line is not None and after_line[0] in line and not acted.is_set():
                acted.set()
                threading.Timer(after_line[1], after_line[2]).start()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ended_s = None
    try:
        if interrupt_after is not None:
            if interrupt_when is not None:
                seen.wait(timeout=timeout)
            try:
                proc.wait(timeout=interrupt_after)
            except subprocess.TimeoutExpired:
                t_int = time.monotonic()
                if interrupt_group:
                    os.killpg(proc.pid, signal.SIGINT)
                else:
                    proc.send_signal(signal.SIGINT)
                proc.wait(timeout=timeout)
                ended_s = time.monotonic() - t_int
        else:
            proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        reader.join(timeout=10)
        raise AssertionError(f"locust run did not end within {timeout}s:\n{''.join(lines)[-4000:]}")
    finally:
        if interrupt_group:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # whatever the run left in its group
            except ProcessLookupError:
                pass
    reader.join(timeout=10)
    out = "".join(lines)
    data = json.loads(report.read_text()) if report.exists() else None
    return RunResult(proc.returncode, data, out, ended_s)
