"""Wiring of the run into Locust's events: options, the built-in stand-in, start, stop, exit code."""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

import gevent
from locust import events

from .options import add_arguments

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STANDIN_CONFIG = REPO_ROOT / "config" / "loadtest-server.toml"

_state: dict = {"run": None, "standin": None, "admin": None, "setup_error": None}


def current_run(environment=None):
    return _state["run"]


@events.init_command_line_parser.add_listener
def _add_options(parser):
    add_arguments(parser)


def _start_standin(o):
    """No --host: run against a KalamDB-compatible stand-in started here on a free loopback port."""
    from standin.testing import StandinProcess

    from .run import AdminCredentials

    root_password = secrets.token_urlsafe(16)
    faults = {}
    for item in o.standin_fault or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--standin-fault {item!r}: expected KIND=VALUE")
        faults[key.strip()] = value.strip()
    config = Path(o.standin_config) if o.standin_config else DEFAULT_STANDIN_CONFIG
    proc = StandinProcess(faults=faults or None, config=str(config), root_password=root_password,
                          env={"KALAMDB_JWT_SECRET": secrets.token_urlsafe(32)})
    proc.__enter__()
    log.info("no --host given: started the built-in KalamDB stand-in at %s (pid %s)", proc.url, proc.pid)
    return proc, AdminCredentials("root", root_password)


@events.init.add_listener
def _on_init(environment, **_kw):
    from users import ListenerUser, ReaderUser, WriterUser

    from .run import AdminCredentials

    o = environment.parsed_options
    if o is None:
        return
    WriterUser.fixed_count = o.writers
    ListenerUser.fixed_count = o.listeners
    ReaderUser.fixed_count = o.readers
    wanted = o.writers + o.listeners + o.readers
    if getattr(o, "num_users", None) and o.num_users < wanted:
        log.warning("-u %d is below --writers + --listeners + --readers = %d: some users will not run",
                    o.num_users, wanted)
    from locust.runners import WorkerRunner

    if isinstance(environment.runner, WorkerRunner):
        return
    if not environment.host:
        proc, admin = _start_standin(o)
        _state["standin"] = proc
        environment.host = proc.url
        o.host = proc.url
    else:
        admin = AdminCredentials.from_env()
    _state["admin"] = admin


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    from .run import Run

    if _state["admin"] is None:
        return
    from .distributed import run_class

    run = run_class(environment)(environment, environment.host, _state["admin"])  # master: distributed run
    _state["run"] = run
    try:
        run.start()
    except Exception as exc:  # wrong host, refused login, ...: say it clearly and stop the run
        _state["setup_error"] = f"{type(exc).__name__}: {exc}"
        log.error("set-up of the run against %s failed: %s", environment.host, _state["setup_error"])
        run.flags["setup_error"] = _state["setup_error"]
        run.writers_may_start.set()
        gevent.spawn_later(0.1, environment.runner.quit)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw):
    run = _state["run"]
    if run is not None and not run.finished:
        run.finish(interrupted=bool(_state["setup_error"]))


@events.quitting.add_listener
def _on_quitting(environment, **_kw):
    run = _state["run"]
    try:
        if run is not None and not run.finished:
            # quitting before test_stop: Ctrl-C or SIGTERM. Keep what was recorded; the verdict is inconclusive.
            run.finish(interrupted=True)
        if run is not None and run.report is not None:
            environment.process_exit_code = run.report["exit_code"]
        elif _state["admin"] is not None:
            environment.process_exit_code = 1
    finally:
        proc = _state["standin"]
        if proc is not None:
            proc.__exit__(None, None, None)
            _state["standin"] = None


# What people see: the web UI's verification view, the progress line, the HTML and JUnit reports.
# Imported last so that its event listeners run after the ones above (the run exists at its test_start).
from . import observe  # noqa: E402,F401
from . import distributed  # noqa: E402,F401  (master/worker mode: loadtest/distributed.py)
