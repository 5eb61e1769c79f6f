"""Command-line options of the load test (also settable in locust.conf and shown in the web UI's form)."""
from __future__ import annotations

from .workloads import BOTH, WORKLOAD_CHOICES

KNOWN_BEHAVIOURS = ("resume-deletes-not-replayed", "queue-drops")


def add_arguments(parser) -> None:
    # Locust's own add_argument (not an argparse group) so that the options show in the web UI's form.
    g = parser
    g.add_argument("--workload", choices=WORKLOAD_CHOICES, default=BOTH,
                   help="shared: one PUBLIC shared table every listener sees; agent-chat: a USER messages table, "
                        "agents write EXECUTE AS USER into humans' conversations; both (default)")
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
    g.add_argument("--report-json", default="reports/verdict.json", help="path of the JSON verdict report")
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
    g.add_argument("--standin-config", default="",
                   help="server config (KalamDB TOML) for the built-in stand-in; default config/loadtest-server.toml")
    g.add_argument("--cleanup", action="store_true", default=False,
                   help="drop the run's namespace at the end (each run uses its own namespace anyway)")


def parse_accept_known(text: str) -> frozenset:
    names = frozenset(x.strip() for x in (text or "").split(",") if x.strip())
    unknown = names - set(KNOWN_BEHAVIOURS)
    if unknown:
        raise ValueError(f"--accept-known: unknown behaviour(s) {sorted(unknown)}; known: {KNOWN_BEHAVIOURS}")
    return names
