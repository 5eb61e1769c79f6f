"""The one place the load test meets Locust's events: each listener is registered here, in this order.

One ``LoadTest`` per process, kept on Locust's ``environment`` (``environment.loadtest``), holds what the
process has: the admin account, the managed server (the built-in stand-in), the current run, its
observer, the distributed coordinator (master) or agent (worker), and whether the run was interrupted.
Users and the web view reach it through their ``environment``; nothing is looked up in a module global.

The end of a run is a sequence of calls that return values (``LoadTest.conclude``):
    run.finish() → a Record → verify(record) → the report → its files → the view → run.close()
"""
from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from checks.stress import memtable_budget
from servers.kalamdb import KalamdbError, KalamdbProcess
from standin.testing import StandinProcess
from users import ListenerUser, ReaderUser, WriterUser

from .distributed import hooks
from .distributed.master import Coordinator, MasterRun
from .distributed.worker import WorkerAgent
from .options import add_arguments, listener_count, option_errors
from .run.locuststats import report_verdicts
from .run.provision import SetupError
from .run.run import AdminCredentials, Run
from .verdict.files import series_figures, series_or_none, write_files, write_json
from .verdict.paths import ReportPaths, report_paths, start_run_dir
from .verdict.report import print_verdict, with_comparison
from .verdict.verify import verify
from .view import web
from .view.observer import Observer

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STANDIN_CONFIG = REPO_ROOT / "config" / "loadtest-server.toml"


class LoadTest:
    """Everything one load-test process holds (``environment.loadtest``)."""

    def __init__(self, environment):
        self.env = environment
        self.admin: AdminCredentials | None = None
        self.server = None            # the managed server process (the built-in stand-in), when this process started one
        self.run = None               # Run, MasterRun or WorkerRun
        self.observer: Observer | None = None
        self.coordinator: Coordinator | None = None   # a distributed master's
        self.agent: WorkerAgent | None = None         # a distributed worker's
        self.interrupted = False      # Ctrl-C seen on a distributed master (Locust then quits via test_stop)
        self.setup_error: str | None = None
        self.report: dict | None = None
        self.clock_offset = 0.0       # test hook (loadtest.distributed.hooks)
        self.unprinted: dict | None = None   # a headless run's report, printed at Locust's quit
        self.paths: ReportPaths | None = None   # the current run's files (loadtest.verdict.paths)
        self.compare_to = ""   # --compare-to as it was when the run started (reports/latest: the run before)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.env.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.env.runner, MasterRunner)

    # ---- set-up ------------------------------------------------------------------------------------------
    def start_standin(self, o) -> None:
        """No --host: run against a KalamDB-compatible stand-in started here on a free loopback port."""
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
        self.use_server(proc, root_password)

    def use_server(self, proc, root_password: str) -> None:
        """The server this process started is the run's host, with its root account."""
        self.server = proc
        # in its own process group (Ctrl-C does not reach it), so stopped here on every way out, also
        # where Locust exits without its quitting event (a master that gave up waiting for workers)
        atexit.register(self.stop_server)
        self.admin = AdminCredentials("root", root_password)
        self.env.host = proc.url
        self.env.parsed_options.host = proc.url

    def start_kalamdb(self, o) -> None:
        """--kalamdb-bin: run against that real KalamDB, started here like the stand-in (its root password
        and JWT secret are random and reach it through its environment only; its log is kept)."""
        config = Path(o.standin_config) if o.standin_config else DEFAULT_STANDIN_CONFIG
        proc = KalamdbProcess(o.kalamdb_bin, str(config), keep_log=True)
        try:
            proc.start()
        except KalamdbError as exc:
            proc.close()
            raise SystemExit(f"--kalamdb-bin {o.kalamdb_bin}: the server did not start: {exc}") from None
        log.info("no --host given: started KalamDB %s at %s (pid %s; log %s)", o.kalamdb_bin, proc.url, proc.pid,
                 proc.log_path)
        self.use_server(proc, proc.root_password)

    def server_info(self) -> dict | None:
        """run.server: the server this process started (kind, version, url, log_path)."""
        s = self.server
        if s is None:
            return None
        info = {"kind": getattr(s, "kind", "standin"), "url": s.url, "log_path": s.log_path}
        if info["kind"] == "kalamdb":
            try:
                info["version"] = s.version()
            except Exception as exc:  # the report says so; the run goes on
                info["version"] = None
                log.warning("KalamDB version unreadable: %s", exc)
            # S9's bound: what its RocksDB options let the memtables hold
            options = s.rocksdb_options()
            budget = memtable_budget(options[1]) if options else None
            if budget is not None:
                info["memtable_budget"] = dict(budget, options_file=options[0])
        return info

    def new_run(self):
        if self.is_master:
            return MasterRun(self.env, self.env.host, self.admin, self.coordinator)
        return Run(self.env, self.env.host, self.admin)

    def start_run(self) -> None:
        if self.is_worker:
            self.run = self.agent.new_run(test_clock_offset=self.clock_offset, discard_share=hooks.discard_share())
            self.run.generator.test_stall = hooks.stall_plan()
            self.run.start()
            return
        if self.admin is None:
            return
        self.report = None
        run = self.run = self.new_run()
        run.generator.test_stall = hooks.stall_plan()
        o = self.env.parsed_options
        # --compare-to reports/latest means the run before this one: resolved before latest moves to this one
        self.compare_to = os.path.realpath(o.compare_to) if getattr(o, "compare_to", "") else ""
        # its directory, and reports/latest pointing at it, before anything can fail: a failed set-up
        # writes its report there, and no earlier run's files look like the newest
        self.paths = report_paths(o, run.id)
        start_run_dir(self.paths)
        managed = self.server is not None and self.env.host.rstrip("/") == self.server.url.rstrip("/")
        if managed:
            run.server_info = self.server_info()
        try:
            if not managed and self.server is not None:
                # a Host typed into the web UI's form: not the built-in stand-in, so the environment's admin
                run.admin = AdminCredentials.from_env_or_error()
            run.start()
        except Exception as exc:  # wrong host, refused login, ...: say it clearly and stop the run
            self.setup_error = str(exc) if isinstance(exc, SetupError) else f"{type(exc).__name__}: {exc}"
            log.error("set-up of the run failed: %s", self.setup_error)
            run.flags["setup_error"] = self.setup_error
            run.writers_may_start.set()
            # headless: the process ends with the report; in the web UI the run stops and the view says why
            gevent.spawn_later(0.1, self.env.runner.quit if self.headless else self.env.runner.stop)

    def start_observer(self) -> None:
        if self.is_worker or self.run is None:
            return   # a worker's part of the view is its counts in the master's (loadtest.view.livefeed)
        if self.observer is not None:
            self.observer.stop()
        self.observer = Observer(self.env, self.run, server_pid=getattr(self.server, "pid", None))
        self.observer.start()

    # ---- the end -----------------------------------------------------------------------------------------
    def finish_run(self, interrupted: bool) -> None:
        run = self.run
        if run is None or run.finished:
            return
        record = run.finish(interrupted=interrupted)
        if record is not None:
            self.conclude(run, record)

    def conclude(self, run, record) -> dict:
        """Record → verdict → files → view: each step takes what the one before returned."""
        o, paths = record.options, self.paths
        ts = series_or_none(record)   # once: the stepped load's capacity and the plots both read it
        report = verify(record, ts)
        if self.compare_to:
            report = with_comparison(report, self.compare_to)
        self.report = report
        write_json(report, paths.json)
        series, hist = series_figures(ts, o)
        obs = self.observer if self.observer is not None and self.observer.run is run else None
        if obs is not None:
            obs.final(report, series, hist)
        write_files(record, report, series, hist, obs.server if obs is not None else None, paths=paths)
        report_verdicts(self.env, report)
        if getattr(o, "csv_prefix", None):
            # Locust's --csv writer rewrites its files once a second and not at exit: one more turn of it,
            # so its CSV holds the VERIFY entries too
            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)
        # after the files (a terminal that goes away, tee on Ctrl-C, loses nothing); headless, the verdict
        # is the terminal's last block: printed at Locust's quit, after its statistics tables
        if self.headless:
            self.unprinted = report
        else:
            print_verdict(report, paths.files)
        run.close(report)
        return report

    @property
    def headless(self) -> bool:
        return getattr(self.env, "web_ui", None) is None

    def on_quit(self, **_kw) -> None:
        """Locust's quit event: its tables are printed; the verdict goes last."""
        report, self.unprinted = self.unprinted, None
        if report is not None:
            print_verdict(report, self.paths.files)

    def quit(self) -> None:
        try:
            if self.run is not None and not self.run.finished and not self.is_worker:
                # quitting before test_stop: Ctrl-C or SIGTERM. Keep what was recorded; the verdict is inconclusive.
                self.finish_run(interrupted=True)
            if self.report is not None:
                self.env.process_exit_code = self.report["exit_code"]
            elif self.admin is not None:
                self.env.process_exit_code = 1
        finally:
            if self.observer is not None:
                self.observer.stop()
            if self.agent is not None and self.agent.run is not None:
                for s in self.agent.run.sessions:
                    try:
                        s.close()
                    except Exception:
                        pass
            self.stop_server()

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.__exit__(None, None, None)   # a KalamDB's log stays (keep_log): the report names it

    # ---- events without the environment (bound at init) ------------------------------------------------
    def on_request(self, **kw) -> None:
        """Every SQL request, for the stress verdicts (the run's RequestTally, with --stress)."""
        run = self.run
        if run is not None and run.tally is not None:
            run.tally.on_request(**kw)

    def on_report_to_master(self, client_id, data, **_kw) -> None:
        """A worker's stats report (every ~3 s) carries its part of the master's live view."""
        run = self.agent.run if self.agent is not None else None
        if run is None:
            return
        try:
            part = run.live_part()
        except Exception:  # the live view must never break the run
            log.warning("live counts for the master failed", exc_info=True)
            return
        if part is not None:
            data["klt_live"] = part

    def on_worker_report(self, client_id, data, **_kw) -> None:
        part = data.get("klt_live") if isinstance(data, dict) else None
        run = self.coordinator.run if self.coordinator is not None else None
        if part and run is not None and run.prov is not None and part.get("run") == run.run_key:
            run.live.merge(client_id, part)

    def forget_run(self, run) -> None:
        if self.run is run:
            self.run = None  # a next run on this worker starts from nothing

    def note_sigint(self) -> None:
        """Remember a Ctrl-C (then behave exactly as before: KeyboardInterrupt)."""
        prev = signal.getsignal(signal.SIGINT)
        if not callable(prev):
            return

        def on_sigint(signum, frame):
            self.interrupted = True
            return prev(signum, frame)

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: leave signals alone
            pass


# ==================================================================== Locust's events, in order

@events.init_command_line_parser.add_listener
def _add_options(parser):
    add_arguments(parser)


@events.init.add_listener
def _on_init(environment, web_ui=None, **_kw):
    lt = environment.loadtest = LoadTest(environment)
    o = environment.parsed_options
    if o is None:
        return
    errors = option_errors(o)
    if errors:   # like argparse: the option's name, exit 2, before anything starts
        for e in errors:
            print(f"locust: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    WriterUser.fixed_count = o.writers
    ListenerUser.fixed_count = listener_count(o)
    ReaderUser.fixed_count = o.readers
    wanted = o.writers + listener_count(o) + o.readers
    if getattr(o, "num_users", None) and o.num_users < wanted:
        log.warning("-u %d is below --writers + --listeners (with --step-listeners) + --readers = %d: some users "
                    "will not run",
                    o.num_users, wanted)
    lt.clock_offset = hooks.install_clock_offset()
    # these three events do not pass the environment: bound to this process's LoadTest instead
    environment.events.request.add_listener(lt.on_request)
    environment.events.quit.add_listener(lt.on_quit)
    if lt.is_worker:
        lt.agent = WorkerAgent(environment, on_run_over=lt.forget_run)
        environment.events.report_to_master.add_listener(lt.on_report_to_master)
        return
    if lt.is_master:
        lt.coordinator = Coordinator(environment)
        environment.events.worker_report.add_listener(lt.on_worker_report)
        lt.note_sigint()
    if not environment.host and o.kalamdb_bin:
        lt.start_kalamdb(o)
    elif not environment.host:
        lt.start_standin(o)
    else:
        lt.admin = AdminCredentials.from_env()
    ui = web_ui or getattr(environment, "web_ui", None)
    if ui is not None:
        web.install(environment, ui)


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    lt = environment.loadtest
    lt.start_run()
    lt.start_observer()


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_kw):
    # before Locust kills the users: the writes in flight get their answers (Run.stop_writing)
    run = environment.loadtest.run
    if run is not None and not run.finished:
        run.stop_writing()


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw):
    lt = environment.loadtest
    if lt.is_worker:
        if lt.run is not None:
            lt.run.finish()   # writers stop; the master's end handshake does the rest
        return
    lt.finish_run(interrupted=bool(lt.setup_error) or lt.interrupted)


@events.quitting.add_listener
def _on_quitting(environment, **_kw):
    environment.loadtest.quit()
