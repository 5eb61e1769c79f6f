"""The end-of-run files beside the JSON report: a self-contained HTML report, a JUnit XML file and CSV.

    write_files(record, report, series, histogram, server, paths=...)   # by the plugin, after the JSON report

Where they go: ``loadtest.verdict.paths`` (``reports/<run id>/`` by default, ``reports/latest`` the newest).

* HTML (``--report-html``, default ``{run_dir}/report.html``): one file that opens offline (the vendored
  uPlot library, its CSS and the chart script are inlined), readable without hovering: a run-health
  line (load generator, rejected writes, disconnects, outage, reconnects), the verdict table; with
  --step-load the capacity section (the capacity figure, whose limit it was, delivery latency and the
  delivery ratio with the acknowledged writes against each step's offered writes/s, the knee and the
  first step that broke marked, the step table); then plots: delivery latency percentiles per second,
  the latency histogram (SC-054's threshold marked, the share above it in its title), writes and
  deliveries per listener per second, server memory from 0 with its growth over the baseline, and CPU
  (with the stress verdicts' baseline, steady part / leak fit and release window marked when the report
  has them); a plot without data says why. Then per-listener figures, the figures, settings and
  scenario details as tables, notes. Times are clock times.
* JUnit (``--report-junit``, default ``{run_dir}/junit.xml``): one ``<testcase>`` per scenario;
  ``fail`` → ``<failure>``, ``inconclusive`` → ``<error>`` (the evidence is incomplete: neither a pass
  nor a proven failure), ``skipped`` → ``<skipped>``.
* CSV (``--report-csv``, default ``{run_dir}``): ``series.csv`` and ``subscriptions.csv``, for a spreadsheet.

Never raises: a figure that cannot be drawn must not cost the verdict (the JSON report is already out).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

log = logging.getLogger(__name__)

from .paths import CSV_FILES
from .display import (MB, capacity_view, listeners_from_report, monitor_series, run_health, run_marks, run_monitor,
                      run_settings, stress_overlay)
from .report import comparison_view
from .timeseries import series_of

STATIC = Path(__file__).resolve().parent.parent / "static"   # shared with the live view
UPLOT_VERSION = "1.6.32"


def series_or_none(run):
    """The whole run's TimeSeries (a Record: its ledgers and logs; on a distributed master the merged ledger
    and the arrivals' series each worker computed), or None when it cannot be computed (said in the log:
    the verdict must not depend on a plot)."""
    try:
        return series_of(run)
    except Exception:
        log.warning("could not compute the run's time series", exc_info=True)
        return None


def series_figures(ts, options) -> tuple[dict, dict]:
    """Per-second columns and the latency histogram (SC-054's threshold marked) of a series; empty without one."""
    if ts is None:
        return {}, {}
    return ts.columns(), ts.histogram(threshold_ms=getattr(options, "latency_threshold_ms", None))


def server_series(run, report: dict, sampled: dict | None = None) -> dict:
    """Server memory / CPU samples: the stress monitor's (live object or in the report), else the
    view's own psutil samples of the server process (``sampled``)."""
    mon = run_monitor(run)
    if mon is not None:
        got = monitor_series(mon)
        if got and got["t"]:
            return got
    for holder in (report, report.get("figures") or {}, report.get("stress") or {}):
        m = holder.get("monitor") if isinstance(holder, dict) else None
        if isinstance(m, dict) and isinstance(m.get("rows"), list) and isinstance(m.get("columns"), list):
            cols = m["columns"]   # loadtest.run.stress.StressRecorder.monitor_report(): MB and % already
            if "t" in cols and "server_rss_mb" in cols:
                it, ir = cols.index("t"), cols.index("server_rss_mb")
                ic = cols.index("server_cpu_pct") if "server_cpu_pct" in cols else None
                out = {"t": [], "rss_mb": [], "cpu": [], "source": "monitor"}
                for row in m["rows"]:
                    rss, cpu = row[ir], (row[ic] if ic is not None else None)
                    if rss is None and cpu is None:
                        continue
                    out["t"].append(row[it])
                    out["rss_mb"].append(rss)
                    out["cpu"].append(cpu)
                if out["t"]:
                    return out
        if isinstance(m, dict) and isinstance(m.get("samples"), list):
            out = {"t": [], "rss_mb": [], "cpu": [], "source": "monitor"}
            for s in m["samples"]:
                rss, cpu = s.get("server_rss_bytes"), s.get("server_cpu_percent")
                if rss is None and cpu is None:
                    continue
                out["t"].append(s.get("t"))
                out["rss_mb"].append(None if rss is None else round(rss / MB, 2))
                out["cpu"].append(None if cpu is None else round(cpu, 1))
            if out["t"]:
                return out
    if sampled is not None and sampled.get("t"):
        return sampled
    return {"t": [], "rss_mb": [], "cpu": [], "source": "none"}



def write_json(report: dict, path: str | None) -> None:
    if path:
        _write(path, json.dumps(report, indent=2, default=str))
        log.info("verdict report written to %s", path)


SERIES_CSV, SUBSCRIPTIONS_CSV = CSV_FILES


def write_csv(directory: str, report: dict, series: dict) -> None:
    """series.csv: one row a second (clock time, writes sent / acknowledged, deliveries, latency
    percentiles in ms and their sample count); subscriptions.csv: one row a subscription (the report's
    ``subscriptions``; nested figures as JSON in their cell)."""
    if not directory:
        return
    try:
        cols = ("t", "writes_sent", "writes_acked", "deliveries", "p50", "p95", "p99", "samples")
        heads = {"t": "t_epoch_s", "p50": "latency_p50_ms", "p95": "latency_p95_ms", "p99": "latency_p99_ms"}
        rows = [["time"] + [heads.get(c, c) for c in cols]]
        for i, t in enumerate(series.get("t", [])):   # none after a failed set-up: the header alone
            clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
            rows.append([clock] + [_cell(series[c][i]) if c in series else "" for c in cols])
        _write(os.path.join(directory, SERIES_CSV), _csv_text(rows))
        subs = report.get("subscriptions") or []
        keys: list = []
        for sub in subs:
            keys += [k for k in sub if k not in keys]
        rows = [keys] + [[_cell(sub.get(k)) for k in keys] for sub in subs]
        _write(os.path.join(directory, SUBSCRIPTIONS_CSV), _csv_text(rows))
        log.info("CSV files written to %s", directory)
    except Exception:
        log.warning("could not write the CSV files in %s", directory, exc_info=True)


def _cell(v):
    return json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else ("" if v is None else v)


def _csv_text(rows: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def write_files(run, report: dict, series: dict, hist: dict, sampled: dict | None = None, *, paths) -> None:
    """JUnit, HTML and CSV beside the JSON report; ``run`` is the Record, ``paths`` its ReportPaths."""
    o = run.options
    html_path = paths.html
    junit_path = paths.junit
    write_csv(paths.csv, report, series)
    if junit_path:
        try:
            _write(junit_path, junit_xml(report))
            log.info("JUnit report written to %s", junit_path)
        except Exception:
            log.warning("could not write the JUnit report %s", junit_path, exc_info=True)
    if html_path:
        try:
            data = {"report": report, "series": series, "histogram": hist,
                    "server": server_series(run, report, sampled),
                    "marks": run_marks(run, report), "stress": stress_overlay(report),
                    "settings": run_settings(run),
                    "listeners": listeners_from_report(report, getattr(o, "latency_from", "sent")),
                    "comparison": comparison_view(report.get("comparison")),
                    "capacity": capacity_view(report),
                    "health": run_health(report), "generated_at": time.time()}
            _write(html_path, html_report(data))
            log.info("HTML report written to %s", html_path)
        except Exception:
            log.warning("could not write the HTML report %s", html_path, exc_info=True)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- JUnit
def junit_xml(report: dict) -> str:
    scen = report.get("scenarios", {})
    run = report.get("run", {})
    started, finished = run.get("started_at"), run.get("finished_at")
    elapsed = round(finished - started, 3) if started and finished else 0.0
    counts = {"fail": 0, "inconclusive": 0, "skipped": 0}
    for s in scen.values():
        if s.get("verdict") in counts:
            counts[s["verdict"]] += 1
    suites = ET.Element("testsuites", name="kalamdb-loadtest", tests=str(len(scen)),
                        failures=str(counts["fail"]), errors=str(counts["inconclusive"]),
                        skipped=str(counts["skipped"]), time=str(elapsed))
    suite = ET.SubElement(suites, "testsuite", name="kalamdb-live-queries", tests=str(len(scen)),
                          failures=str(counts["fail"]), errors=str(counts["inconclusive"]),
                          skipped=str(counts["skipped"]), time=str(elapsed),
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started or time.time())))
    props = ET.SubElement(suite, "properties")
    for k in ("run_id", "namespace", "host", "workload", "writers", "listeners", "write_rate", "op_mix",
              "reconnect_every", "latency_from"):
        if k in run:
            ET.SubElement(props, "property", name=k, value=str(run[k]))
    for sid, s in scen.items():
        tc = ET.SubElement(suite, "testcase", classname="kalamdb.live_queries",
                           name=f"{sid} {s.get('title', '')}".strip(), time="0")
        verdict = s.get("verdict")
        figure = str(s.get("figure", ""))
        thr = s.get("threshold")
        body = json.dumps({"figure": figure, "threshold": thr, "value": s.get("value"),
                           "details": s.get("details")}, indent=1, default=str)
        if verdict == "fail":
            el = ET.SubElement(tc, "failure", message=figure, type="fail")
            el.text = body
        elif verdict == "inconclusive":
            el = ET.SubElement(tc, "error", message=f"inconclusive: {figure}", type="inconclusive")
            el.text = body
        elif verdict == "skipped":
            ET.SubElement(tc, "skipped", message=figure)
        # "pass" and "warning" (GEN: the load generator was busy; a caution on the figures, not a
        # failure) are passing testcases; the verdict is in system-out
        out = ET.SubElement(tc, "system-out")
        out.text = f"{verdict}: {figure}" + (f" [threshold {thr}]" if thr else "")
    notes = report.get("notes") or []
    if notes:
        ET.SubElement(suite, "system-out").text = "\n".join(str(n) for n in notes)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------- HTML
_CSS = """
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 17px; margin: 26px 0 8px; }
.overall { font-size: 16px; padding: 8px 12px; border-radius: 4px; color: #fff; display: inline-block; }
ul.notes li { margin: 3px 0; }
details { margin: 4px 0; } details > table { margin: 4px 0 10px 18px; }
"""

_BODY = """
<h1>KalamDB live-query verification report</h1>
<div class="muted" id="subtitle"></div>
<p><span class="overall" id="overall"></span></p>
<div class="health" id="health-line"></div>
<h2>Scenarios</h2>
<div id="verdicts"></div>
<ul class="notes" id="notes"></ul>
{comparison}{capacity}<h2>Plots</h2>
<div class="charts">
  <div class="chart" id="chart-latency"></div>
  <div class="chart" id="chart-histogram"></div>
  <div class="chart" id="chart-throughput"></div>
  <div class="chart" id="chart-server"></div>
</div>
<div class="muted" id="stress-note"></div>
<h2>Listeners</h2>
<div id="listeners"></div>
<h2>Figures</h2>
<div id="figures"></div>
<h2>Settings</h2>
<div id="settings"></div>
<h2>Scenario details</h2>
<div id="details"></div>
<p class="muted">Charts: uPlot """ + UPLOT_VERSION + """ (MIT licence, Leon Sorokin), inlined.</p>
"""

# only in a report of a run with --step-load: charts.js's LT.capacity fills it
_CAPACITY = """<section id="capacity"></section>
"""

# only in a report of a run with --compare-to
_COMPARISON = """<h2 id="comparison-title">Compared with an earlier run</h2>
<div id="comparison"></div>
"""

_SCRIPT = """
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("lt-data").textContent);
  var R = D.report, run = R.run || {}, sum = R.summary || {};
  var colors = { pass: "#1b7f3b", fail: "#c62828", inconclusive: "#d07000" };
  var ov = document.getElementById("overall");
  ov.textContent = "OVERALL " + String(sum.verdict).toUpperCase() + " (exit code " + sum.exit_code + ")";
  ov.style.background = colors[sum.verdict] || "#555";
  document.getElementById("subtitle").textContent = "run " + (run.run_id || "?") + " · " + (run.workload || "") +
    " workload · " + (run.host || "") + (run.started_at ? " · " + LT.day(run.started_at) + " " + LT.clock(run.started_at) +
    " – " + LT.clock(run.finished_at) + " (" + LT.zone(run.started_at) + ")" : "");
  LT.healthLine(document.getElementById("health-line"), D.health);
  var scen = Object.keys(R.scenarios || {}).map(function (k) { var s = R.scenarios[k]; s.id = s.id || k; return s; });
  LT.verdictTable(document.getElementById("verdicts"), scen, false);
  if (D.comparison) LT.comparisonTable(document.getElementById("comparison"), D.comparison);
  document.getElementById("notes").innerHTML = (R.notes || []).map(function (n) { return "<li>" + LT.esc(n) + "</li>"; }).join("");
  var thr = (D.settings || {}).latency_threshold_ms, from = (D.settings || {}).latency_from;
  if (D.capacity) LT.guarded(document.getElementById("capacity"), function (el) { LT.capacity(el, D.capacity, from); });
  [["latency", function (el) { LT.latency(el, D.series, thr, from, D.marks); }],
   ["histogram", function (el) { LT.histogram(el, D.histogram); }],
   ["throughput", function (el) { LT.throughput(el, D.series, D.marks, (D.settings || {}).listeners); }],
   ["server", function (el) { LT.server(el, D.server, D.marks, D.stress); }]].forEach(function (chart) {
    LT.guarded(document.getElementById("chart-" + chart[0]), chart[1]);
  });
  if (D.stress) {
    var st = D.stress, txt = [];
    if (st.baseline_mb) txt.push("baseline " + st.baseline_mb.toFixed(1) + " MB (" + (st.growth_id || "") + ")");
    if (st.leak && st.leak.slope_mb_per_min !== null && st.leak.slope_mb_per_min !== undefined)
      txt.push("leak fit " + st.leak.slope_mb_per_min.toFixed(2) + " MB/min: " + (st.leak.reason || ""));
    if (st.release) txt.push("release (" + st.release.id + "): " + (st.release.took_s !== null && st.release.took_s !== undefined ?
      "back within the band after " + st.release.took_s.toFixed(0) + " s" : "not back within the band"));
    document.getElementById("stress-note").textContent = txt.join(" · ");
  }
  LT.listenerTable(document.getElementById("listeners"), D.listeners);
  LT.kvTable(document.getElementById("figures"), R.figures);
  LT.kvTable(document.getElementById("settings"), D.settings);
  document.getElementById("details").innerHTML = scen.map(function (s) {
    return "<details data-scenario='" + LT.esc(s.id) + "'><summary>" + LT.esc(s.id) + " " + LT.esc(s.verdict) + ": " +
      LT.esc(s.figure) + "</summary>" + LT.tableHtml(s.details) + "</details>";
  }).join("");
  window.LT_REPORT_READY = true;
})();
"""


def json_safe(x):
    """JSON-safe: NaN / infinities become null (JSON has neither); tuples become lists."""
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _inline_js(text: str) -> str:
    return text.replace("</script", "<\\/script")


def html_report(data: dict) -> str:
    uplot = (STATIC / "uPlot.iife.min.js").read_text(encoding="utf-8")
    css = (STATIC / "uPlot.min.css").read_text(encoding="utf-8") + (STATIC / "verification.css").read_text(encoding="utf-8")
    charts = (STATIC / "charts.js").read_text(encoding="utf-8")
    payload = json.dumps(json_safe(data), default=str, allow_nan=False).replace("</", "<\\/")
    summary = (data.get("report") or {}).get("summary") or {}
    title = f"KalamDB live-query verification: {str(summary.get('verdict', '?')).upper()}"
    body = (_BODY.replace("{comparison}", _COMPARISON if data.get("comparison") else "")
            .replace("{capacity}", _CAPACITY if data.get("capacity") else ""))
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>{css}\n{_CSS}</style>\n</head>\n<body>\n{body}\n"
            f"<script type=\"application/json\" id=\"lt-data\">{payload}</script>\n"
            f"<script>{_inline_js(uplot)}</script>\n<script>{_inline_js(charts)}</script>\n"
            f"<script>{_SCRIPT}</script>\n</body>\n</html>\n")
