"""The verdict report: one line per scenario on the console, and a JSON file (docs/report-schema.md)."""
from __future__ import annotations

import logging
import sys

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


def console_lines(report: dict) -> list[str]:
    run_id = report["run"].get("run_id")
    lines = [f"KalamDB live-query verification — "
             + (f"run {run_id}" if run_id else "no run (set-up failed)")
             + f" ({report['run'].get('workload', '?')} workload)"]
    for sid, s in report["scenarios"].items():
        thr = s.get("threshold")
        thr_text = f"  [threshold {thr}]" if thr not in (None, "") else ""
        lines.append(f"  {sid:<7} {s['verdict'].upper():<13} {s.get('title', '')}: {s.get('figure', '')}{thr_text}")
    for note in report.get("notes", []):
        lines.append(f"  note: {note}")
    s = report["summary"]
    lines.append(f"  OVERALL {s['verdict'].upper()} (exit code {s['exit_code']})")
    return lines


def print_verdict(report: dict) -> None:
    print("\n".join(console_lines(report)), file=sys.stderr, flush=True)
