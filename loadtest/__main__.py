"""``python3 -m loadtest --help``: every option of the load test, grouped, with its default.

Locust answers ``locust --help`` before it loads the locustfile, so its help never shows these. The
options themselves are set on Locust's command line, in locust.conf or in the web UI's form.
"""
from __future__ import annotations

import argparse
import sys

from .options import GROUPS, add_arguments


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=True)
    collected = _Collect()
    add_arguments(collected)
    group_of = {flag: title for title, flags in GROUPS.items() for flag in flags}
    groups = {title: p.add_argument_group(title) for title in GROUPS}
    for args, kwargs in collected.calls:
        kwargs.setdefault("help", "")
        groups[group_of[args[0]]].add_argument(*args, **kwargs)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        parser().print_help()
        return 0
    print(f"python3 -m loadtest: unknown command {argv[0]!r} (try --help); runs start with `python3 -m locust`",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
