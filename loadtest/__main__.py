"""``python3 -m loadtest --help``: every option of the load test, grouped, with its default.
``python3 -m loadtest compare A B [--tolerance PCT]``: what changed from run A to run B; exit code 1 when B
is worse (checks/compare.py has the rules), so that CI can gate an upgrade on it.

Locust answers ``locust --help`` before it loads the locustfile, so its help never shows these. The
options themselves are set on Locust's command line, in locust.conf or in the web UI's form.
"""
from __future__ import annotations

import argparse
import sys

from checks.compare import compare

from .options import GROUPS, add_arguments
from .verdict.report import ReportUnreadable, comparison_lines, load_report

COMPARE = "python3 -m loadtest compare"


class _Collect:
    """Stands in for Locust's parser: keeps each add_argument call, to be placed in its group."""

    def __init__(self):
        self.calls: list = []

    def add_argument(self, *args, **kwargs):
        kwargs.pop("include_in_web_ui", None)   # Locust's own keyword
        self.calls.append((args, kwargs))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m locust",
        description="KalamDB live-query load test: the options it adds to Locust's (see `locust --help` for "
                    "Locust's own: -u, -t, --headless, --processes, --master, ...). Set them on the command "
                    "line, in locust.conf or in the web UI's form.",
        usage="python3 -m locust [Locust's options] [the options below]",
        epilog=f"Comparing two runs: `{COMPARE} A B [--tolerance PCT]` (see `{COMPARE} --help`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=True)
    collected = _Collect()
    add_arguments(collected)
    group_of = {flag: title for title, flags in GROUPS.items() for flag in flags}
    groups = {title: p.add_argument_group(title) for title in GROUPS}
    for args, kwargs in collected.calls:
        kwargs.setdefault("help", "")
        groups[group_of[args[0]]].add_argument(*args, **kwargs)
    return p


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=COMPARE,
        description="What changed from run A (the earlier: the KalamDB before an upgrade, the old config) to "
                    "run B, scenario by scenario: verdicts, figure texts, and the figures that moved (loss, "
                    "latency percentiles, memory growth and slope, CPU, rates). Exit code 1 when B is worse: a "
                    "verdict that went from pass to fail or inconclusive, or a figure of a scenario judged in "
                    "both that moved the wrong way beyond the tolerance; 0 otherwise; 2 when a report cannot "
                    "be read. A scenario skipped in one run is not comparable, not worse.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("a", metavar="A", help="the earlier run: its directory (with verdict.json) or a verdict JSON")
    p.add_argument("b", metavar="B", help="the later run: its directory or a verdict JSON")
    p.add_argument("--tolerance", type=float, default=10.0, metavar="PCT",
                   help="how far (percent of A's value) a figure may move the wrong way before it is worse; "
                        "at least 1 ms for latencies, 1 point for CPU and memory percentages, 0.5 MB/min for "
                        "memory slopes, and 0 for counts (0 lost -> 1 lost is always worse)")
    return p


def compare_main(argv: list) -> int:
    """Prints the comparison of A and B; 1 when B is worse, 0 when not, 2 when the input is wrong."""
    args = compare_parser().parse_args(argv)
    if not args.tolerance >= 0:   # NaN too
        print(f"{COMPARE}: --tolerance: {args.tolerance!r} must be a percentage ≥ 0", file=sys.stderr)
        return 2
    reports = []
    for label, path in (("A", args.a), ("B", args.b)):
        try:
            reports.append(load_report(path))
        except ReportUnreadable as exc:
            print(f"{COMPARE}: {label}: {exc}", file=sys.stderr)
            return 2
    result = compare(*reports, tolerance_pct=args.tolerance)
    print("\n".join(comparison_lines(result, args.a, args.b)), flush=True)
    return result["exit_code"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        parser().print_help()
        return 0
    if argv[0] == "compare":
        return compare_main(argv[1:])
    print(f"python3 -m loadtest: unknown command {argv[0]!r} (try --help); runs start with `python3 -m locust`",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
