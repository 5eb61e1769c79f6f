"""Run the real load test distributed: one `locust --master` and N `locust --worker` processes on
loopback (each with its own environment), against the built-in stand-in the master starts."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from locust_run import REPO, SMALL, RunResult


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DistResult(RunResult):
    worker_pids: list = field(default_factory=list)
    worker_outputs: list = field(default_factory=list)

    @property
    def dist(self) -> dict:
        return self.report["distributed"]

    def worker(self, pid: int) -> dict:
        return next(w for w in self.dist["workers"] if w["pid"] == pid)


def _env(extra: dict | None) -> dict:
    env = dict(os.environ)
    env.pop("KALAMDB_ADMIN_PASSWORD", None)
    for k in ("KALAMDB_LT_CLOCK_OFFSET", "KALAMDB_LT_TEST_DISCARD_ARRIVALS"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def run_distributed(tmp_path, *args, workers: list | None = None, run_time: str = "6s",
                    kill_worker: tuple | None = None, timeout: float = 120,
                    master_cmd_prefix: list | None = None, master_env: dict | None = None,
                    master_host: str = "127.0.0.1", bind_host: str = "*") -> DistResult:
    """workers: one env dict per worker process (key "_prefix": a command prefix for that worker, e.g.
    ["ip", "netns", "exec", "ns1"] to run it in a network namespace). kill_worker: (index, seconds after
    the master's writers start) to SIGKILL. master_cmd_prefix / master_env: the same for the master."""
    workers = workers if workers is not None else [{}, {}]
    stamp = time.monotonic_ns()
    report = Path(tmp_path) / f"verdict-{stamp}.json"
    port = free_port()
    loc = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py")]
    master = (master_cmd_prefix or []) + loc + [
        "--config", str(REPO / "locust.conf"), "--master", "--master-bind-host", bind_host,
        "--master-bind-port", str(port), "--expect-workers", str(len(workers)), "--expect-workers-max-wait", "60",
        "--headless", "-t", run_time, "--report-json", str(report), "--only-summary",
        "--report-html", "", "--report-junit", "", "--report-csv", "", "--reports-dir", str(Path(tmp_path) / "reports"),
        *SMALL, *args]
    mproc = subprocess.Popen(master, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_env(master_env))
    wprocs = []
    for wenv in workers:
        wenv = dict(wenv)
        cmd = list(wenv.pop("_prefix", [])) + loc + ["--worker", "--master-host", master_host, "--master-port", str(port)]
        wprocs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=_env(wenv)))
    lines: list[str] = []
    writing = threading.Event()

    def read_master():
        for line in mproc.stdout:
            lines.append(line)
            if "writers start" in line:
                writing.set()

    reader = threading.Thread(target=read_master, daemon=True)
    reader.start()
    try:
        if kill_worker is not None:
            # counted from the master's "writers start", not from launch: on a busy machine the workers
            # may take seconds to join, and a worker killed before it joined is not lost to the run
            index, after = kill_worker
            if writing.wait(timeout=90):
                time.sleep(after)
            wprocs[index].send_signal(signal.SIGKILL)
        try:
            mproc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            mproc.kill()
            reader.join(timeout=10)
            raise AssertionError(f"distributed run did not end within {timeout}s:\n{''.join(lines)[-4000:]}")
        reader.join(timeout=10)
        out = "".join(lines)
        wouts = []
        for p in wprocs:
            try:
                wouts.append(p.communicate(timeout=20)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                wouts.append(p.communicate()[0])
    finally:
        for p in [mproc, *wprocs]:
            if p.poll() is None:
                p.kill()
    data = json.loads(report.read_text()) if report.exists() else None
    return DistResult(mproc.returncode, data, out, worker_pids=[p.pid for p in wprocs], worker_outputs=wouts)
