"""The verdict report: one line per scenario on the console, and a JSON file (docs/report-schema.md); and the
comparison of two reports (``checks.compare``) as lines for ``python3 -m loadtest compare``."""
from __future__ import annotations

import json
import logging
import sys
import textwrap
from pathlib import Path

from checks.compare import compare, format_number

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
    lines += capacity_lines(report.get("capacity"), report.get("figures", {}).get("capacity"))
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


def capacity_lines(cap: dict | None, figure: str | None) -> list[str]:
    """A stepped load's steps as a table, then its capacity figure (checks.capacity.capacity_text)."""
    if not cap or not cap.get("steps"):
        return []
    q = f"p{cap.get('quantile', 99.0):g}"
    lines = ["  stepped load: step  offered/s  acked/s  deliveries/s  listeners  lost  "
             f"{q + ' ms':>8}  rejected  failed  disconn.  gen CPU  held"]
    for x in cap["steps"]:
        p = x.get(f"latency_{q}_ms")
        gen = x.get("generator_cpu_pct")
        lines.append(f"  {x['index'] + 1:>16}  {x['offered_writes_per_s']:>9,.0f}  {x['acked_writes_per_s']:>7,.0f}  "
                     f"{x['deliveries_per_s']:>12,.0f}  {x['listeners']:>9}  {x['lost']:>4,}  "
                     f"{'-' if p is None else f'{p:,.1f}':>8}  {x['rejected']:>8,}  {x['failed']:>6,}  "
                     f"{x['disconnects']:>8,}  {'-' if gen is None else f'{gen:.0f} %':>7}  "
                     + ("yes" if x["held"] else "no" + (" (generator saturated)" if x["generator_saturated"] else "")))
    if figure:
        lines += _wrap(f"capacity: {figure}", indent=12)
    return lines


def _wrap(line: str, indent: int = 24) -> list[str]:
    return textwrap.wrap(line, width=WIDTH, initial_indent="  ", subsequent_indent=" " * indent,
                         break_on_hyphens=False, break_long_words=False) or [line]


def print_verdict(report: dict, files: list | None = None) -> None:
    print("\n".join(console_lines(report, files)), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- comparing runs
class ReportUnreadable(ValueError):
    """A path that is not a verdict report: the message says which path and why, in one line."""


def report_path(path: str) -> Path:
    """The verdict JSON a path names: the file itself, or in a run directory its ``verdict.json`` (else its
    only ``verdict*.json``: a directory of reports named by hand, or by versions before the run history)."""
    p = Path(path)
    if not p.is_dir():
        return p
    if (p / "verdict.json").is_file():
        return p / "verdict.json"
    found = sorted(x for x in p.glob("verdict*.json") if x.is_file())
    if len(found) == 1:
        return found[0]
    raise ReportUnreadable(f"{path}: a directory without verdict.json"
                           + (f" (and {len(found)} verdict*.json files: name one)" if found else ""))


def load_report(path: str) -> dict:
    """The verdict report at ``path`` (a file or a run directory), or ReportUnreadable."""
    p = report_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportUnreadable(f"{path}: no such file or directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportUnreadable(f"{p}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise ReportUnreadable(f"{p}: not JSON ({exc})") from None
    schema = report.get("schema") if isinstance(report, dict) else None
    if schema != SCHEMA or not isinstance(report.get("scenarios"), dict):
        raise ReportUnreadable(f"{p}: not a verdict report (schema {schema!r}, expected {SCHEMA!r})")
    return report


def with_comparison(report: dict, earlier_path: str, tolerance_pct: float = 10.0) -> dict:
    """``--compare-to``: the report with ``comparison`` (the earlier run as A, this one as B, and ``against``:
    the path). An earlier report that cannot be read or compared is said in ``comparison.error`` and a note;
    never raises (the run's verdict stands on its own)."""
    try:
        comparison = dict(compare(load_report(earlier_path), report, tolerance_pct), against=earlier_path)
    except ReportUnreadable as exc:
        why = str(exc)
    except Exception as exc:   # a report of another version may lack what compare reads: not the run's fault
        log.warning("could not compare with %s", earlier_path, exc_info=True)
        why = f"{earlier_path}: could not be compared ({exc.__class__.__name__}: {exc})"
    else:
        return dict(report, comparison=comparison)
    return dict(report, comparison={"against": earlier_path, "error": why},
                notes=[*report.get("notes", []), f"--compare-to: no comparison: {why}"])


SIDE_INDENT = 10     # where "A: figure" stands under a scenario's row
VERDICTS_WIDTH = 22  # "PASS → FAIL" and the like; INCONCLUSIVE → INCONCLUSIVE pushes its row's rest on


def comparison_rows(result: dict) -> list[dict]:
    """What a reader sees of ``checks.compare.compare``'s result, one row for the run and one a scenario:
    ``{"scenario", "a", "b" (verdicts), "status" (with why for not comparable), "regressed", "moved" (the figures
    that moved, as text; a gating one that is worse ends in WORSE), "figure_a", "figure_b"}``. Shared by the
    terminal's table and the HTML report."""
    run = result["run"]
    rows = [{"scenario": "run", "a": run["a"], "b": run["b"], "status": "worse" if run["regressed"] else "same",
             "regressed": run["regressed"], "moved": _moved(run["figures"]), "figure_a": None, "figure_b": None}]
    for sid, s in result["scenarios"].items():
        a, b = s["a"] or {}, s["b"] or {}
        rows.append({"scenario": sid, "a": a.get("verdict"), "b": b.get("verdict"),
                     "status": s["status"] + (f" ({', '.join(s['why'])})" if s["status"] == "not comparable" else ""),
                     "regressed": s["regressed"], "moved": _moved(s["figures"]),
                     "figure_a": a.get("figure"), "figure_b": b.get("figure")})
    return rows


def comparison_outcome(result: dict) -> str:
    """The comparison's last line: the result, where B is worse, and the exit code."""
    if result["regressions"]:
        where = ", ".join(dict.fromkeys(r["scenario"] for r in result["regressions"]))
        return f"RESULT WORSE: B is worse than A in {where} (exit code {result['exit_code']})"
    return f"RESULT SAME OR BETTER: B is nowhere worse than A beyond the tolerance (exit code {result['exit_code']})"


def settings_differ_text(result: dict) -> str:
    return "; ".join(f"{d['name']} {_setting(d['a'])} → {_setting(d['b'])}" for d in result["run"]["settings_differ"])


def comparison_lines(result: dict, path_a: str | None = None, path_b: str | None = None) -> list[str]:
    """``python3 -m loadtest compare``'s table, ≤ WIDTH columns: both runs, the settings that differ, one row for
    the run and each scenario (verdict A → B, what it came to, the figures that moved; then the figure text of
    both; the scenarios skipped in both on one row a reason), the regressions, the outcome last."""
    lines = [f"KalamDB live-query comparison (tolerance {format_number(result['tolerance_pct'])} %)"]
    for side, path in (("a", path_a), ("b", path_b)):
        who = result[side]
        lines += _wrap(f"{side.upper()}: run {who.get('run_id') or '?'} ({who.get('workload') or '?'} workload): "
                       f"{str(who.get('verdict')).upper()}" + (f"  {path}" if path else ""), indent=5)
    if result["run"]["settings_differ"]:
        lines += _wrap("settings differ: " + settings_differ_text(result), indent=4)
    skipped: dict = {}
    margin = " " * (SIDE_INDENT - 2)
    for row in comparison_rows(result):
        if row["status"] == "skipped":
            skipped.setdefault(row["figure_b"], []).append(row["scenario"])
            continue
        verdicts = f"{str(row['a'] or 'absent').upper()} → {str(row['b'] or 'absent').upper()}"
        word = "WORSE" if row["status"] == "worse" else row["status"]
        lines += _wrap(f"{row['scenario']:<7} {verdicts:<{VERDICTS_WIDTH}} {word}"
                       + (": " + "; ".join(row["moved"]) if row["moved"] else ""), indent=SIDE_INDENT)
        if row["scenario"] == "run":
            continue
        if row["figure_a"] == row["figure_b"]:
            lines += _wrap(f"{margin}A, B: {row['figure_a'] or ''}", indent=SIDE_INDENT + 6)
        else:
            for side in ("a", "b"):
                if row[side] is not None:
                    lines += _wrap(f"{margin}{side.upper()}: {row['figure_' + side] or ''}", indent=SIDE_INDENT + 3)
    for figure, ids in skipped.items():
        lines += _wrap(f"{'SKIPPED in both':<{VERDICTS_WIDTH + 8}} {', '.join(ids)}: {figure}", indent=SIDE_INDENT)
    if result["regressions"]:
        regressed: dict = {}
        for r in result["regressions"]:
            regressed.setdefault(r["scenario"], []).append(r["what"])
        lines += _wrap("regressions: " + "; ".join(f"{sid} ({', '.join(what)})" for sid, what in regressed.items()),
                       indent=4)
    lines.append("  " + comparison_outcome(result))
    return lines


def comparison_view(comparison: dict | None) -> dict | None:
    """The HTML report's ``comparison`` (the report's ``comparison``, as its rows): None without
    ``--compare-to``; ``{"against", "error"}`` when the earlier report could not be read."""
    if not comparison:
        return None
    if "error" in comparison:
        return {"against": comparison.get("against"), "error": comparison["error"]}
    return {"against": comparison.get("against"), "a": comparison["a"], "b": comparison["b"],
            "tolerance_pct": comparison["tolerance_pct"], "verdict": comparison["verdict"],
            "settings_differ": settings_differ_text(comparison), "rows": comparison_rows(comparison),
            "outcome": comparison_outcome(comparison)}


def _setting(value) -> str:
    return "–" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _moved(figures: list) -> list[str]:
    return [_figure_change(f) for f in figures if f["status"] in ("worse", "better", "within tolerance")]


def _figure_change(f: dict) -> str:
    """"p99 10 → 80 ms (+70, +700 %) WORSE": a figure that moved; only a gating one is called WORSE (or
    better, or within tolerance)."""
    unit = f" {f['unit']}" if f["unit"] else ""
    said = [("+" if f["change"] > 0 else "-") + format_number(abs(f["change"]))]
    if f["change_pct"] is not None:
        pct = f["change_pct"]
        said.append(f"{pct:+.1f} %" if abs(pct) < 10 else f"{pct:+,.0f} %")
    if f["gates"] and f["status"] != "worse":
        said.append(f["status"])
    mark = " WORSE" if f["status"] == "worse" and f["gates"] else ""
    return f"{f['name']} {format_number(f['a'])} → {format_number(f['b'])}{unit} ({', '.join(said)}){mark}"
