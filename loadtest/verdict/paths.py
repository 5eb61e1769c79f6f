"""Run history: where a run's files go.

Each run writes into ``<--reports-dir>/<run id>/`` (verdict.json, report.html, junit.xml, series.csv,
subscriptions.csv) and ``<--reports-dir>/latest`` points at the newest run's directory. ``latest`` moves
when a run *starts*, so while a run is going (or after one whose set-up failed) it never shows an earlier
run's verdict as if it were the newest. ``--report-json`` and the others name their file with ``{run_dir}``
(their defaults); a path without it is used as given (the user's own place, e.g. for CI).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RUN_DIR = "{run_dir}"
CSV_FILES = ("series.csv", "subscriptions.csv")   # loadtest.verdict.files.write_csv
LATEST = "latest"


@dataclass(frozen=True)
class ReportPaths:
    """One run's files; an empty string is a file not wanted (``--report-html ""``)."""
    run_dir: str
    json: str
    html: str
    junit: str
    csv: str   # a directory: series.csv and subscriptions.csv

    @property
    def files(self) -> list[str]:
        """What the terminal names above the verdict: the run's directory once with the names of the files in
        it (``reports/<id>/ (verdict.json, report.html, ...)``), a file elsewhere by its path."""
        listed = [f for f in (self.json, self.html, self.junit) if f] + (
            [os.path.join(self.csv, name) for name in CSV_FILES] if self.csv else [])
        inside = [f for f in listed if os.path.dirname(f) == self.run_dir]
        shown = [f for f in listed if f not in inside]
        if inside:
            shown.insert(0, f"{self.run_dir}/ ({', '.join(os.path.basename(f) for f in inside)})")
        return shown

    @property
    def uses_run_dir(self) -> bool:
        inside = self.run_dir + os.sep
        return any(p == self.run_dir or p.startswith(inside) for p in (self.json, self.html, self.junit, self.csv))


def report_paths(options, run_name: str) -> ReportPaths:
    """The paths of the run named ``run_name`` (its id), from the options."""
    run_dir = os.path.join(getattr(options, "reports_dir", "reports") or "reports", run_name)

    def path(name: str, default: str) -> str:
        value = getattr(options, name, default)
        return "" if not value else value.replace(RUN_DIR, run_dir)

    return ReportPaths(run_dir=run_dir, json=path("report_json", RUN_DIR + "/verdict.json"),
                       html=path("report_html", RUN_DIR + "/report.html"),
                       junit=path("report_junit", RUN_DIR + "/junit.xml"), csv=path("report_csv", RUN_DIR))


def start_run_dir(paths: ReportPaths) -> None:
    """Make the run's directory and point ``latest`` at it (when any file goes there). Never raises: a
    directory that cannot be made is said in the log, and each file then says so again when written."""
    if not paths.uses_run_dir:
        return
    try:
        os.makedirs(paths.run_dir, exist_ok=True)
        point_latest(paths.run_dir)
    except OSError as exc:
        log.warning("run history: %s", exc)


def point_latest(run_dir: str) -> None:
    """``<reports-dir>/latest`` → this run's directory: a relative symlink, replaced atomically (a reader
    sees the old run or the new one, never neither)."""
    parent = Path(run_dir).parent
    link = parent / LATEST
    tmp = parent / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path(run_dir).name, target_is_directory=True)
    os.replace(tmp, link)
