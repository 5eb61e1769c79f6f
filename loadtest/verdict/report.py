"""The verdict report: one line per scenario on the console, and a JSON file (docs/report-schema.md)."""
from __future__ import annotations

import logging
import sys
import textwrap

log = logging.getLogger(__name__)

SCHEMA = "kalamdb-loadtest/verdict/v1"
FAILING = ("fail", "inconclusive")


def build(run_info: dict, scenarios: dict, figures: dict, subscriptions: list, notes: list, *, verdict: str) -> dict:
    """verdict: the run's, from checks.evidence.judge_run (exit code 0 only for pass)."""
    code = 0 if verdict == "pass" else 1
    counts: dict = {}
    for s in scenarios.values():
        counts[s["verdict"]] = counts.get(s["verdict"], 0) + 1
    return {
        "schema": SCHEMA,
        "summary": {"verdict": verdict, "exit_code": code, "counts": counts},
        "run": run_info,
        "scenarios": scenarios,
        "figures": figures,
        "subscriptions": subscriptions,
        "notes": notes,
        "exit_code": code,
    }


WIDTH = 120   # a terminal's lines: longer ones wrap, indented under the figure


def console_lines(report: dict, files: list | None = None) -> list[str]:
    """The verdict block a terminal ends with: the files, one row per scenario (skipped ones with the same
    reason on one row), the notes, the run's verdict last."""
    run_id = report["run"].get("run_id")
    lines = [f"KalamDB live-query verification — "
             + (f"run {run_id}" if run_id else "no run (set-up failed)")
             + f" ({report['run'].get('workload', '?')} workload)"]
    if files:
        lines += _wrap("reports: " + ", ".join(files), indent=11)
    skipped: dict = {}
    for sid, s in report["scenarios"].items():
        if s["verdict"] == "skipped":
            skipped.setdefault(s.get("figure", ""), []).append(sid)
    for sid, s in report["scenarios"].items():
        if s["verdict"] == "skipped" and len(skipped[s.get("figure", "")]) > 1:
            ids = skipped[s.get("figure", "")]
            if ids[0] == sid:
                lines += _wrap(f"{'SKIPPED':<21} {', '.join(ids)}: {s.get('figure', '')}")
            continue
        thr = s.get("threshold")
        thr_text = f"  [threshold {thr}]" if thr not in (None, "") else ""
        lines += _wrap(f"{sid:<7} {s['verdict'].upper():<13} {s.get('title', '')}: {s.get('figure', '')}{thr_text}")
    for note in report.get("notes", []):
        lines += _wrap(f"note: {note}")
    s = report["summary"]
    lines.append(f"  OVERALL {s['verdict'].upper()} (exit code {s['exit_code']})")
    return lines


def _wrap(line: str, indent: int = 24) -> list[str]:
    return textwrap.wrap(line, width=WIDTH, initial_indent="  ", subsequent_indent=" " * indent,
                         break_on_hyphens=False, break_long_words=False) or [line]


def print_verdict(report: dict, files: list | None = None) -> None:
    print("\n".join(console_lines(report, files)), file=sys.stderr, flush=True)
