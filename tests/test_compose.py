"""docker-compose.yml is consistent with the CLI (Docker itself cannot run on this machine)."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def load():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def locust_args(service) -> list[str]:
    cmd = service["command"]
    inner = shlex.split(cmd)[-1] if cmd.startswith("sh -c") else cmd
    part = inner.split("&&")[-1].strip()
    args = shlex.split(part)
    assert args[0] == "locust"
    return args[1:]


def test_services_ports_and_mounts_are_consistent():
    c = load()
    kdb, lt = c["services"]["kalamdb"], c["services"]["locust"]
    assert kdb["image"].startswith("jamals86/kalamdb")
    mounted = {v.split(":")[0] for v in kdb["volumes"]}
    assert "./config/loadtest-server.toml" in mounted and (REPO / "config/loadtest-server.toml").exists()
    port = kdb["environment"]["KALAMDB_SERVER_PORT"]
    assert f"{port}:{port}" in kdb["ports"]
    args = locust_args(lt)
    assert args[args.index("--host") + 1] == f"http://kalamdb:{port}"
    web_port = args[args.index("--web-port") + 1]
    assert f"{web_port}:{web_port}" in lt["ports"] and web_port == "8089"
    # secrets only by reference to the environment, never literal
    for env in (kdb["environment"], lt["environment"]):
        for key, value in env.items():
            if "PASSWORD" in key or "SECRET" in key:
                assert str(value).startswith("${"), key


def test_compose_locust_command_parses_with_the_load_tests_options():
    args = locust_args(load()["services"]["locust"])
    args = [a.replace("/app/deploy/", str(REPO / "deploy") + "/") for a in args]
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), *args, "--list"],
                          cwd=REPO / "deploy", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WriterUser" in proc.stdout and "ListenerUser" in proc.stdout


def test_worker_service_joins_the_master_and_needs_no_secret():
    c = load()
    master, worker = c["services"]["locust"], c["services"]["worker"]
    margs, wargs = locust_args(master), locust_args(worker)
    assert "--master" in margs and "--worker" in wargs
    port = margs[margs.index("--master-bind-port") + 1]
    assert wargs[wargs.index("--master-host") + 1] == "locust"          # the master's service name
    assert wargs[wargs.index("--master-port") + 1] == port
    assert "locust" in worker["depends_on"]
    assert not worker.get("ports")                                       # `--scale worker=N` needs no port
    # workers get options, server URL and accounts from the master: no secret in their environment
    assert not any("PASSWORD" in k or "SECRET" in k for k in (worker.get("environment") or {}))
    assert worker["image"] == master["image"] and worker["volumes"] == master["volumes"]


def test_compose_worker_command_parses():
    args = locust_args(load()["services"]["worker"])
    args = [a.replace("/app/", str(REPO) + "/") for a in args]
    proc = subprocess.run([sys.executable, "-m", "locust", *args, "--list"],
                          cwd=REPO / "deploy", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WriterUser" in proc.stdout and "ListenerUser" in proc.stdout
