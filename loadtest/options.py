"""Command-line options of the load test (also settable in locust.conf and shown in the web UI's form)."""
from __future__ import annotations

import os

from checks.capacity import StepSchedule
from standin.faults import FaultError, parse_cli_fault

from .run.workloads import BOTH, WORKLOAD_CHOICES, OpMix

KNOWN_BEHAVIOURS = ("resume-deletes-not-replayed", "queue-drops")


def add_arguments(parser) -> None:
    # Locust's own add_argument (not an argparse group) so that the options show in the web UI's form.
    g = parser
    g.add_argument("--workload", choices=WORKLOAD_CHOICES, default=BOTH,
                   help="shared: one PUBLIC shared table every listener sees; agent-chat: a USER messages table, "
                        "agents write EXECUTE AS USER into humans' conversations; both: the two at once")
    g.add_argument("--writers", type=int, default=10, help="writer users (fixed count)")
    g.add_argument("--listeners", type=int, default=20,
                   help="WebSocket listener users (fixed count)")
    g.add_argument("--write-rate", type=float, default=20.0,
                   help="writes per second per writer (0 = as fast as possible)")
    g.add_argument("--op-mix", default="insert=60,update=30,delete=10",
                   help="relative weights of insert/update/delete")
    g.add_argument("--stream-tokens", type=int, default=5,
                   help="agent-chat: updates per streamed assistant reply")
    g.add_argument("--payload-bytes", type=int, default=64, help="size of the text payload of each write")
    g.add_argument("--rows-per-insert", type=int, default=1,
                   help="rows per INSERT (one multi-row VALUES statement; the ledger counts every row): bursts "
                        "of changes, as a bulk import makes them")
    g.add_argument("--slow-listeners", type=int, default=0,
                   help="how many of the listeners are slow consumers (a phone on a slow link): each stops "
                        "reading for --slow-pause s every --slow-every s while the writers write")
    g.add_argument("--slow-pause", type=float, default=2.0, help="seconds a slow listener stops reading")
    g.add_argument("--slow-every", type=float, default=5.0,
                   help="seconds between the starts of a slow listener's pauses (the first this long after the "
                        "writers start)")
    g.add_argument("--slow-rcvbuf", type=int, default=4096,
                   help="socket receive buffer of a slow listener, bytes (SO_RCVBUF; the kernel doubles it)")
    g.add_argument("--snapshot-batch-size", type=int, default=500,
                   help="listeners subscribe with options {batch_size: N} (≤ 999, see protocol §6.1); 0 = live only")
    g.add_argument("--reconnect-every", type=float, default=0.0,
                   help="force a listener disconnect + resume (from its last _seq) every N seconds (L9); 0 = never")
    g.add_argument("--reconnect-pause", type=float, default=0.0,
                   help="seconds a forced-reconnect listener stays away before it resumes (changes made meanwhile "
                        "must be delivered on resume)")
    g.add_argument("--reconnect-share", type=float, default=0.25,
                   help="share of listeners that do forced reconnects")
    g.add_argument("--barrier-timeout", type=float, default=60.0,
                   help="seconds writers wait for every listener to be subscribed and ready")
    g.add_argument("--drain-timeout", type=float, default=30.0,
                   help="after writers stop, longest wait for expected changes to arrive")
    g.add_argument("--drain-quiet", type=float, default=2.0,
                   help="the drain ends early once nothing has arrived for this many seconds")
    g.add_argument("--auth-rate", type=float, default=15.0,
                   help="logins + WebSocket authentications per second (KalamDB's per-IP default is 20)")
    g.add_argument("--reports-dir", default="reports",
                   help="each run writes its files into DIR/<run id>/ and points DIR/latest at it (run history)")
    g.add_argument("--report-json", default="{run_dir}/verdict.json",
                   help="path of the JSON verdict report; {run_dir} is the run's directory under --reports-dir")
    g.add_argument("--latency-from", choices=("sent", "ack", "commit"), default="sent",
                   help="start time of delivery latency: write sent, write acknowledged, or commit time in _seq")
    g.add_argument("--latency-threshold-ms", type=float, default=50.0, help="SC-054 delivery latency threshold")
    g.add_argument("--latency-quantile", type=float, default=0.99,
                   help="quantile of delivery latency judged against the threshold")
    g.add_argument("--min-high-frequency", type=int, default=1000, help="L10: minimum changes verified")
    g.add_argument("--accept-known", default="",
                   help=f"comma-separated known KalamDB behaviours that do not fail a scenario: {', '.join(KNOWN_BEHAVIOURS)}")
    g.add_argument("--standin-fault", action="append", default=[], include_in_web_ui=False,
                   help="KIND=VALUE fault for the built-in stand-in (only when no --host is given); repeatable")
    g.add_argument("--kalamdb-bin", default="", include_in_web_ui=False,
                   help="with no --host: start this real KalamDB server binary for the run (a free loopback port, a "
                        "fresh data dir, --standin-config's or config/loadtest-server.toml, a random root password), "
                        "instead of the built-in stand-in; it is stopped at the end and its log kept")
    g.add_argument("--server-log", default="",
                   help="the server's log file, when the server (--host) is on this machine (its 'Notification "
                        "channel full' warnings are the evidence of queue drops); a server the load test starts "
                        "has its log known")
    g.add_argument("--standin-config", default="",
                   help="server config (KalamDB TOML) for the built-in stand-in; default config/loadtest-server.toml")
    g.add_argument("--cleanup", action="store_true", default=False,
                   help="drop the run's namespace at the end (each run uses its own namespace anyway)")
    add_stress_arguments(g)


def _opt_float(text):
    """A float, or None for "" / "none" (an option that is off unless given)."""
    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return None
    return float(text)


def add_stress_arguments(g) -> None:
    """Stress, memory and stability (scenarios S1-S10, SC-057; ../shared/scenarios.md Family 2). Every
    threshold defaults to the specification's figure; profiles/short.conf and profiles/spec.conf set them."""
    g.add_argument("--stress", action="store_true", default=False,
                   help="judge S1-S10 and SC-057: monitor the server, probe for leaked subscriptions, keep "
                        "sampling through a release window (off: they are reported as skipped)")
    g.add_argument("--readers", type=int, default=0,
                   help="reader users issuing simple SELECTs during the load (S6, and S3's 'still answers queries')")
    g.add_argument("--reader-rate", type=float, default=5.0, help="SELECTs per second per reader")
    g.add_argument("--monitor-interval", type=float, default=2.0,
                   help="seconds between samples of the server (system.stats, psutil) and of the subscriptions")
    g.add_argument("--warmup", type=float, default=30.0,
                   help="seconds of load excluded as warm-up; the memory baseline is taken after it")
    g.add_argument("--baseline-window", type=float, default=30.0,
                   help="seconds after the warm-up whose median memory is the baseline")
    g.add_argument("--release-window", type=float, default=60.0,
                   help="S5: after the writers stop (and the drain), keep sampling this long; memory must be "
                        "back within --memory-release-pct of the baseline within it")
    g.add_argument("--memory-growth-pct", type=float, default=10.0, help="S1/S2/S7: largest memory growth over baseline")
    g.add_argument("--memory-release-pct", type=float, default=5.0, help="S5: memory back within this percentage of baseline")
    g.add_argument("--leak-slope-mb-per-min", type=float, default=0.5,
                   help="S1/S2: smallest significant memory slope called a leak")
    g.add_argument("--rows-per-writer", type=int, default=10_000,
                   help="S1: rows each writer must have inserted for S1 to be judged at full load")
    g.add_argument("--sustained-min-duration", type=float, default=300.0,
                   help="S2: seconds of load needed (10 writers + 20 listeners for 5 min)")
    g.add_argument("--cpu-threshold-pct", type=float, default=80.0, help="S3: highest average server CPU")
    g.add_argument("--cpu-cores", type=int, default=0,
                   help="S3: what full CPU means: 0 = every core of the server's machine (share of the "
                        "machine), 1 = one core (as top shows a process), N = N cores")
    g.add_argument("--target-write-rate", type=float, default=1000.0,
                   help="S3: acknowledged inserts per second the run must reach for S3 to pass")
    g.add_argument("--query-p95-ms", type=float, default=500.0, help="S6: p95 of SELECT latency under load")
    g.add_argument("--flush-every", type=float, default=30.0,
                   help="S7: run STORAGE FLUSH TABLE on every table of the run this often during the load (0 = never)")
    g.add_argument("--stall-seconds", type=float, default=10.0,
                   help="S8: a subscription receiving nothing this long while its changes counter grows is stalled "
                        "(also how long a counter drift must last)")
    g.add_argument("--storage-bound-mb", type=_opt_float, default=None,
                   help="S9: storage-engine memory bound in MB (system.stats figures); none = S9 skipped")
    g.add_argument("--uptime-min-notifications", type=int, default=100_000,
                   help="SC-057: notifications needed to judge WebSocket uptime")
    g.add_argument("--uptime-min", type=float, default=0.999, help="SC-057: smallest WebSocket uptime share")
    g.add_argument("--leak-probe", type=int, default=50,
                   help="S4: subscriptions the leak probe opens at the end of the load (half are closed); 0 = no probe")
    g.add_argument("--leak-grace", type=float, default=5.0,
                   help="S4: seconds between closing the probe's subscriptions and reading system.live")


    # capacity: a stepped load (checks.capacity)
    g.add_argument("--step-load", action="store_true", default=False,
                   help="raise the writers' rate in steps, from --write-rate by --step-factor every --step-every s "
                        "up to --step-max, and report each step's figures and the capacity (the highest step "
                        "that held); S10 is judged past it")
    g.add_argument("--step-every", type=float, default=10.0, help="seconds per step of --step-load")
    g.add_argument("--step-factor", type=float, default=1.5,
                   help="each step of --step-load offers this many times the writes/s of the one before")
    g.add_argument("--step-max", type=float, default=200.0,
                   help="writes/s per writer of the last step of --step-load (it lasts to the end of the writing)")
    g.add_argument("--step-listeners", type=int, default=0,
                   help="with --step-load: this many more listeners subscribe at the start of each step after the "
                        "first (each expected to get every change from its subscription on, with the snapshot)")

    # what people see: the files at the end, the live verification, the progress line
    g.add_argument("--report-html", default="{run_dir}/report.html",
                   help="self-contained HTML report (verdicts, settings, plots) written at the end of every run; "
                        "empty = none")
    g.add_argument("--report-junit", default="{run_dir}/junit.xml",
                   help="JUnit XML (one testcase per scenario) written at the end of every run; empty = none")
    g.add_argument("--report-csv", default="{run_dir}",
                   help="directory of the run's CSV files: series.csv (per second: writes, deliveries, latency "
                        "percentiles) and subscriptions.csv (one row per subscription); empty = none")
    g.add_argument("--compare-to", default="",
                   help="an earlier run's directory or verdict JSON (reports/latest: the run before this one): the "
                        "JSON report gets `comparison` (that run "
                        "as A, this one as B, tolerance 10 percent) and the HTML report shows it, regressions marked. "
                        "It does not change this run's verdict or exit code: `python3 -m loadtest compare A B` "
                        "is what gates; empty = none")
    g.add_argument("--live-verify-interval", type=float, default=2.0,
                   help="seconds between provisional verifications during the run (web view, progress line); "
                        "0 = off")
    g.add_argument("--progress-interval", type=float, default=5.0,
                   help="seconds between progress lines on the terminal in headless runs; 0 = off")
    g.add_argument("--read-collect-ms", type=float, default=2.0,
                   help="a process that only listens (no writer or reader users in it) lets its event loop gather "
                        "readiness for this long before each poll, so one wake-up reads many sockets; latencies "
                        "keep each read's kernel stamp; 0 = wake at every frame")


# How `python3 -m loadtest --help` groups the options (tests/test_structure.py: every option in exactly one)
GROUPS = {
    "run (users, rates, the end of a run)": (
        "--writers", "--listeners", "--write-rate", "--auth-rate", "--barrier-timeout", "--drain-timeout",
        "--drain-quiet", "--cleanup", "--read-collect-ms"),
    "workload": ("--workload", "--op-mix", "--stream-tokens", "--payload-bytes", "--rows-per-insert",
                 "--snapshot-batch-size", "--reconnect-every", "--reconnect-pause", "--reconnect-share",
                 "--slow-listeners", "--slow-pause", "--slow-every", "--slow-rcvbuf"),
    "verification": ("--latency-from", "--latency-threshold-ms", "--latency-quantile", "--min-high-frequency",
                     "--accept-known", "--live-verify-interval", "--progress-interval"),
    "reports": ("--reports-dir", "--report-json", "--report-html", "--report-junit", "--report-csv", "--compare-to"),
    "capacity (stepped load)": ("--step-load", "--step-every", "--step-factor", "--step-max", "--step-listeners"),
    "server": ("--kalamdb-bin", "--standin-config", "--standin-fault", "--server-log"),
    "stress (S1-S10, SC-057)": (
        "--stress", "--readers", "--reader-rate", "--monitor-interval", "--warmup", "--baseline-window",
        "--release-window", "--memory-growth-pct", "--memory-release-pct", "--leak-slope-mb-per-min",
        "--rows-per-writer", "--sustained-min-duration", "--cpu-threshold-pct", "--cpu-cores",
        "--target-write-rate", "--query-p95-ms", "--flush-every", "--stall-seconds", "--storage-bound-mb",
        "--uptime-min-notifications", "--uptime-min", "--leak-probe", "--leak-grace"),
}


def parse_accept_known(text: str) -> frozenset:
    names = frozenset(x.strip() for x in (text or "").split(",") if x.strip())
    unknown = names - set(KNOWN_BEHAVIOURS)
    if unknown:
        raise ValueError(f"--accept-known: unknown behaviour(s) {sorted(unknown)}; known: {KNOWN_BEHAVIOURS}")
    return names


# (lowest, highest, lowest allowed itself): the values an option may take; argparse checked the type
_RANGES = {
    "writers": (0, None, True), "listeners": (0, None, True), "readers": (0, None, True),
    "write_rate": (0, None, True), "reader_rate": (0, None, False), "stream_tokens": (0, None, True),
    "payload_bytes": (0, None, True), "snapshot_batch_size": (0, 999, True),
    "reconnect_every": (0, None, True), "reconnect_pause": (0, None, True), "reconnect_share": (0, 1, True),
    "barrier_timeout": (0, None, False), "drain_timeout": (0, None, True), "drain_quiet": (0, None, True),
    "auth_rate": (0, None, False), "latency_threshold_ms": (0, None, False), "latency_quantile": (0, 1, False),
    "min_high_frequency": (0, None, True), "monitor_interval": (0, None, False), "warmup": (0, None, True),
    "baseline_window": (0, None, False), "release_window": (0, None, True), "memory_growth_pct": (0, None, False),
    "memory_release_pct": (0, None, False), "leak_slope_mb_per_min": (0, None, True),
    "rows_per_writer": (0, None, True), "sustained_min_duration": (0, None, True),
    "cpu_threshold_pct": (0, None, False), "cpu_cores": (0, None, True), "target_write_rate": (0, None, True),
    "query_p95_ms": (0, None, False), "flush_every": (0, None, True), "stall_seconds": (0, None, False),
    "storage_bound_mb": (0, None, False), "uptime_min_notifications": (0, None, True), "uptime_min": (0, 1, True),
    "leak_probe": (0, None, True), "leak_grace": (0, None, True), "live_verify_interval": (0, None, True),
    "progress_interval": (0, None, True), "rows_per_insert": (1, 999, True), "slow_listeners": (0, None, True),
    "slow_pause": (0, None, False), "slow_every": (0, None, False), "slow_rcvbuf": (256, None, True),
    "read_collect_ms": (0, 50, True),
}


def option_errors(o) -> list[str]:
    """Every option value that cannot be used, as "--name: why" (checked before anything starts)."""
    errors = []
    for name, (low, high, low_ok) in _RANGES.items():
        v = getattr(o, name, None)
        if v is None:
            continue
        flag = "--" + name.replace("_", "-")
        if v != v or (low is not None and (v < low or (v == low and not low_ok))) or (high is not None and v > high):
            bounds = (f"{'≥' if low_ok else '>'} {low}" + (f" and ≤ {high}" if high is not None else ""))
            errors.append(f"{flag}: {v!r} is out of range (must be {bounds})")
    for flag, parse, value in (("--op-mix", OpMix.parse, getattr(o, "op_mix", None)),
                               ("--accept-known", parse_accept_known, getattr(o, "accept_known", None))):
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                errors.append(f"{flag}: {str(exc).removeprefix(flag + ': ')}")
    binary = getattr(o, "kalamdb_bin", "") or ""
    if binary:
        if getattr(o, "host", None):
            errors.append("--kalamdb-bin: the load test starts that server itself; give it or --host, not both")
        elif not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            errors.append(f"--kalamdb-bin: {binary!r} is not an executable file")
        elif getattr(o, "standin_fault", None):
            errors.append("--standin-fault: faults are the built-in stand-in's; a real KalamDB (--kalamdb-bin) has none")
    if getattr(o, "step_listeners", 0) and not getattr(o, "step_load", False):
        errors.append("--step-listeners: listeners join at the steps of --step-load; give --step-load too")
    if (getattr(o, "slow_listeners", 0) or 0) > (getattr(o, "listeners", 0) or 0):
        errors.append(f"--slow-listeners: {o.slow_listeners} is more than --listeners ({o.listeners})")
    if (getattr(o, "slow_listeners", 0) or 0) and o.slow_pause >= o.slow_every:
        errors.append(f"--slow-pause: {o.slow_pause:g} s must be shorter than --slow-every ({o.slow_every:g} s)")
    if getattr(o, "step_load", False):
        if not o.write_rate > 0:
            errors.append("--step-load: steps start from --write-rate, which must be > 0 (0 is unpaced)")
        if not o.step_factor > 1:
            errors.append(f"--step-factor: {o.step_factor!r} must be > 1")
        if not o.step_every >= 2:
            errors.append(f"--step-every: {o.step_every!r} must be ≥ 2 s (a step's figures are per whole second)")
        if o.step_listeners < 0:
            errors.append(f"--step-listeners: {o.step_listeners} must be ≥ 0")
        if o.write_rate > 0 and not o.step_max >= o.write_rate:
            errors.append(f"--step-max: {o.step_max:g} is below --write-rate ({o.write_rate:g})")
    if not (getattr(o, "reports_dir", "reports") or "").strip():
        errors.append("--reports-dir: empty; give the directory that holds the runs' files (default reports)")
    server_log = getattr(o, "server_log", "") or ""
    if server_log and not os.path.isfile(server_log):
        errors.append(f"--server-log: {server_log!r} is not a file")
    for item in getattr(o, "standin_fault", None) or []:
        try:
            parse_cli_fault(item)
        except (FaultError, ValueError) as exc:
            errors.append(f"--standin-fault {item!r}: {exc}")
    return errors


def step_schedule(o):
    """--step-load's schedule (checks.capacity.StepSchedule) from the options, or None."""
    if not getattr(o, "step_load", False):
        return None
    return StepSchedule(o.write_rate, o.step_factor, o.step_every, o.step_max)


def listener_count(o) -> int:
    """Every listener of the run: --listeners, and --step-listeners more at each step after the first."""
    schedule = step_schedule(o)
    extra = (getattr(o, "step_listeners", 0) or 0) * schedule.last if schedule is not None else 0
    return o.listeners + extra


def join_step(o, index: int) -> int:
    """The step at whose start the listener with this account index subscribes (0: before the writers)."""
    n = getattr(o, "step_listeners", 0) or 0
    return 0 if index < o.listeners or not n else 1 + (index - o.listeners) // n
