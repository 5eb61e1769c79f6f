"""What people see: the web UI's live verification view, the HTML report and the JUnit XML.

Real parts: `python -m locust` with the built-in stand-in on loopback, Debian's chromium headless
(selenium + chromium-driver; installed by .ci/run, these tests skip with a message without it), and
junitparser reading the JUnit file. Bounded: every wait has a timeout; the two browser tests together
take well under two minutes.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from browser import canvas_painted, chromium, require_chromium, wait_for
from locust_run import REPO, run_locust
from standin.testing import TEST_ROOT_PASSWORD

CHARTS = ("latency", "throughput", "server", "histogram")

# pixels of a canvas near a colour (any alpha > 0): proves a series of that colour was drawn
_COLOURED_JS = """
const c = document.querySelector(arguments[0]);
if (!c) return -1;
const [r, g, b, tol] = [arguments[1], arguments[2], arguments[3], arguments[4]];
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) {
  if (d[i + 3] > 0 && Math.abs(d[i] - r) < tol && Math.abs(d[i + 1] - g) < tol && Math.abs(d[i + 2] - b) < tol) n++;
}
return n;
"""
BLUE = (30, 136, 229)       # p50, deliveries/s, histogram bars (charts.js)
BROWN = (109, 76, 65)       # server RSS


RED = (198, 40, 40)         # the histogram's threshold marker


def coloured(drv, selector, rgb, tol=40) -> int:
    return drv.execute_script(_COLOURED_JS, selector, *rgb, tol)


def text_of(drv, selector: str) -> str:
    from selenium.webdriver.common.by import By
    return drv.find_element(By.CSS_SELECTOR, selector).text


def clock(epoch: float) -> str:
    """HH:MM:SS as the page shows it (the browser runs in this process's time zone)."""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def fixed(x: float, digits: int) -> str:
    """JavaScript's x.toFixed(digits): the float's exact value, a tie rounded away from zero."""
    return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def share_text(part: int, whole: int) -> str:
    """The report's share of samples: "0 %", "< 0.1 %", "1.3 %"."""
    if not part:
        return "0 %"
    p = 100 * part / whole
    return "< 0.1 %" if p < 0.1 else f"{fixed(p, 1)} %"


def report_data(html: Path) -> dict:
    """What the HTML report draws from: its inlined JSON."""
    text = html.read_text(encoding="utf-8")
    start = text.index('id="lt-data">') + len('id="lt-data">')
    return json.loads(text[start:text.index("</script>", start)].replace("<\\/", "</"))


# the column of a canvas with the most pixels near a colour: where a vertical marker stands
_COLUMN_JS = """
const u = LT.charts[arguments[0]], c = u.ctx.canvas, [r, g, b] = [arguments[1], arguments[2], arguments[3]];
const d = u.ctx.getImageData(0, 0, c.width, c.height).data, cols = {};
for (let i = 0; i < d.length; i += 4) {
  if (d[i + 3] > 200 && Math.abs(d[i] - r) < 30 && Math.abs(d[i + 1] - g) < 30 && Math.abs(d[i + 2] - b) < 30) {
    const x = (i / 4) % c.width; cols[x] = (cols[x] || 0) + 1;
  }
}
let best = -1, n = 0;
for (const x in cols) if (cols[x] > n) { n = cols[x]; best = Number(x); }
return {x: best, n: n, left: u.bbox.left, width: u.bbox.width, height: u.bbox.height};
"""

# a table as the person sees it: header texts and each row's cells by column
_TABLE_JS = """
const t = document.querySelector(arguments[0]);
return {head: [...t.querySelectorAll('thead th')].map(th => th.textContent),
        rows: [...t.querySelectorAll('tbody tr')].map(tr => Object.fromEntries(
          [...tr.querySelectorAll('td[data-col]')].map(td => [td.dataset.col, td.textContent])))};
"""
PROVISIONAL_HEADERS = ["Listener", "Expected so far", "Received", "Pending", "Lost", "Duplicated", "Out of order",
                       "p50 ms", "p95 ms", "p99 ms"]
FINAL_HEADERS = ["Listener", "Expected", "Received", "Lost", "Duplicated", "Out of order", "p50 ms", "p95 ms",
                 "p99 ms"]
NO_SERVER = ("No data: no server samples: the server is not on this machine (or not started by this load test) "
             "and there is no stress monitor (--stress)")
NO_ARRIVAL = "No data: no latency samples: no change has arrived"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------- (a) live view
def test_live_verification_view_in_the_web_ui(tmp_path):
    require_chromium()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "locust.log"
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--config", str(REPO / "locust.conf"),
           "--headful", "--web-host", "127.0.0.1", "--web-port", str(port),
           "--writers", "2", "--listeners", "3", "-u", "5", "-r", "5", "--write-rate", "20",
           "--reconnect-every", "0", "--drain-quiet", "1", "--drain-timeout", "10",
           # a stepped load that hardly steps (40 writes/s offered for 40 s, then 60): the phase names
           # its step, the final view shows its capacity section
           "--step-load", "--step-every", "40", "--step-factor", "1.5", "--step-max", "30",
           "--report-json", str(tmp_path / "verdict.json"), "--report-html", str(tmp_path / "report.html"),
           "--report-junit", str(tmp_path / "junit.xml"), "--reports-dir", str(tmp_path / "reports")]
    env = dict(os.environ)
    env.pop("KALAMDB_ADMIN_PASSWORD", None)
    with open(out, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
    try:
        def ui_up():
            try:
                return get_json(f"{base}/verification/data.json", timeout=1.0)
            except OSError:
                assert proc.poll() is None, f"locust exited early:\n{out.read_text()[-3000:]}"
                return None

        idle = wait_for(ui_up, 30, "Locust's web UI")
        assert idle["phase"] == "idle"
        with chromium(tmp_path) as drv:
            from selenium.webdriver.common.by import By

            # Locust's own page: its start form (with our options), and links to the view
            drv.get(base + "/")
            start = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "button[type=submit]"), 20, "the start form")
            assert drv.find_elements(By.NAME, "writers") and drv.find_elements(By.NAME, "reportHtml")
            # the start form's options in the groups of `python3 -m loadtest --help`, a heading above each
            wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, ".lt-form-group"), 10, "the form's group headings")
            shown = drv.execute_script("""
                var list = document.querySelector(".lt-form-group").parentElement;
                var rows = [].slice.call(list.children).map(function (el, i) {
                  var f = el.querySelector("[name]");
                  return {order: +getComputedStyle(el).order, i: i,
                          what: el.classList.contains("lt-form-group") ? "## " + el.textContent : f ? f.name : null};
                });
                rows.sort(function (a, b) { return a.order - b.order || a.i - b.i; });
                return rows.map(function (r) { return r.what; });""")
            from loadtest.options import GROUPS
            camel = {n.replace("_", "").lower(): n for n in shown if n and not n.startswith("## ")}
            expected = []
            for title, flags in GROUPS.items():
                names = [camel[k] for k in (f.lstrip("-").replace("-", "").lower() for f in flags) if k in camel]
                if names:
                    expected += ["## " + title] + names
            assert shown == expected and len(expected) > 40, shown
            assert shown[:2] == ["## run (users, rates, the end of a run)", "writers"], shown
            start[0].click()
            wait_for(lambda: get_json(f"{base}/verification/data.json")["phase"] in ("barrier", "writing"), 30,
                     "the run to start from the form")

            # the verification view fills with live numbers and charts
            drv.get(base + "/verification")

            def live():
                st = drv.execute_script("return window.LT_STATE && {phase: LT_STATE.phase, "
                                        "deliveries: LT_STATE.totals.deliveries_now, "
                                        "scenarios: (LT_STATE.scenarios || []).length, "
                                        "listeners: (LT_STATE.listeners || []).length, points: LT.points}")
                if not st or st["phase"] != "writing" or not st["deliveries"] or not st["scenarios"]:
                    return None
                if not all(st["points"].get(c, 0) > 0 for c in CHARTS):
                    return None
                return st

            st = wait_for(live, 40, "live verdicts and charts while writing")
            assert st["listeners"] == 3
            # the phase with the time left, from the run's start and its run time (locust.conf: 60 s),
            # counted on between the polls: at most a tick (and the floor to a whole second) behind
            phase = drv.find_element(By.ID, "phase").text
            now = time.time()
            clock_now = drv.execute_script("return LT_STATE.clock")
            since_start = now - clock_now["started_at"]
            got = re.fullmatch(r"writing: (\d+) s of 60 s, (\d+) s left · step (\d) of 2: (\d+) writes/s offered", phase)
            assert got, phase
            assert int(got.group(1)) + int(got.group(2)) == 60
            assert -0.5 <= since_start - int(got.group(1)) <= 1.9, (phase, since_start)
            # the step the writing is in: the first 40 s from the writing's start, then the second
            steps = clock_now["steps"]
            assert [(s["index"], s["offered"]) for s in steps] == [(0, 40.0), (1, 60.0)]
            assert steps[1]["start"] - steps[0]["start"] == pytest.approx(40) and steps[1]["end"] is None
            if abs(now - steps[1]["start"]) > 1.9:   # a second or two at the change may show either
                step = 0 if now < steps[1]["start"] else 1
                assert (int(got.group(3)), int(got.group(4))) == (step + 1, int(steps[step]["offered"])), phase
            # provisional: what arrived beyond the writes up to the cutoff is Pending, not more Received
            # than Expected
            table = drv.execute_script(_TABLE_JS, "#listeners table")
            assert table["head"] == PROVISIONAL_HEADERS
            assert len(table["rows"]) == 3
            for row in table["rows"]:
                assert int(row["received"]) == int(row["expected"]) - int(row["lost"]) + int(row["duplicated"]), row
                assert int(row["pending"]) >= 0, row
            assert drv.find_element(By.ID, "listeners-note").text.startswith(
                "Provisional: Expected counts the writes sent up to ")
            first = st["deliveries"]
            rows = drv.find_elements(By.CSS_SELECTOR, "#verdicts tr[data-scenario]")
            ids = {r.get_attribute("data-scenario") for r in rows}
            assert {"L1", "L6", "SC-054"} <= ids
            assert "provisional" in drv.find_element(By.ID, "verdicts").text
            assert len(drv.find_elements(By.CSS_SELECTOR, "#listeners tbody tr")) == 3
            # numbers move: more deliveries a few seconds later
            wait_for(lambda: drv.execute_script("return LT_STATE.totals.deliveries_now") > first, 15,
                     "the delivery count to grow")
            for c in CHARTS:
                assert canvas_painted(drv, f"#chart-{c} canvas") > 0, c
            assert coloured(drv, "#chart-latency canvas", BLUE) > 20
            assert coloured(drv, "#chart-throughput canvas", BLUE) > 20
            assert coloured(drv, "#chart-server canvas", BROWN) > 5
            health = drv.execute_script("return LT_STATE.health")
            assert health["verifications"] >= 1 and not health["errors"]
            drv.save_screenshot(str(tmp_path / "verification-view.png"))

            # Locust's own UI has the Verification tab with the scenario rows
            drv.get(base + "/?tab=verification")
            wait_for(lambda: "L1 inserts" in drv.find_element(By.TAG_NAME, "body").text, 15,
                     "the Verification tab in Locust's UI")
            # ... whose "Charts" cells link to the view: one a row (the run's and each scenario's)
            rows = 1 + len(get_json(f"{base}/verification/data.json")["scenarios"])
            links = wait_for(lambda: (lambda a: a if len(a) == rows else None)(
                drv.find_elements(By.CSS_SELECTOR, "a.lt-view-link[href='/verification']")), 10,
                f"{rows} links to the view in the Charts column")
            assert links[0].text == "/verification" and links[0].get_attribute("href") == base + "/verification"
            assert re.search(r"^run writing writing: \d+ s of 60 s, \d+ s left · step \d of 2: \d+ writes/s offered "
                             r"/verification$",
                             drv.find_element(By.TAG_NAME, "body").text, re.M)
            # ... and its "Download Data" tab links to the view
            tab = drv.find_element(By.XPATH, "//button[contains(translate(., 'abcdefghijklmnopqrstuvwxyz', "
                                             "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'), 'DOWNLOAD DATA')]")
            tab.click()
            link = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "a[href='./verification']"), 10,
                            "the link to the verification view")
            assert "Verification view" in link[0].text

            # stop the run from Locust's UI; the view then shows the final report
            stop = wait_for(lambda: drv.find_elements(By.XPATH, "//button[normalize-space()='Stop' or "
                                                                "normalize-space()='STOP']"), 10, "the stop button")
            stop[0].click()
            final = wait_for(lambda: (lambda s: s if s["phase"] == "done" else None)(
                get_json(f"{base}/verification/data.json")), 40, "the run to finish and verify")
            assert final["provisional"] is False and final["exit_code"] is not None
            assert {s["id"] for s in final["scenarios"]} >= {"L1", "SC-054"}
            drv.get(base + "/verification")
            wait_for(lambda: drv.execute_script("return window.LT_STATE && LT_STATE.phase") == "done", 10,
                     "the final view")
            assert "(provisional)" not in drv.find_element(By.ID, "verdicts").text
            assert drv.execute_script(_TABLE_JS, "#listeners table")["head"] == FINAL_HEADERS
            assert drv.find_element(By.ID, "listeners-note").text == ""
            # the final report's capacity section, drawn by the report's own function
            report = json.loads((tmp_path / "verdict.json").read_text())
            cap = report["capacity"]
            assert final["capacity"]["steps"] == cap["steps"] and cap["steps"]
            assert text_of(drv, "#capacity-title") == "Capacity (stepped load)"
            assert text_of(drv, "#capacity-figure") == report["figures"]["capacity"]
            rows = drv.execute_script(_TABLE_JS, "#capacity-steps table")["rows"]
            assert [row["held"] for row in rows] == [held_text(s) for s in cap["steps"]]
            assert drv.execute_script("return LT.charts['capacity-latency'].data[0]") == \
                [s["offered_writes_per_s"] for s in cap["steps"]]
            drv.save_screenshot(str(tmp_path / "verification-final.png"))
        assert (tmp_path / "report.html").exists() and (tmp_path / "junit.xml").exists()
        assert (tmp_path / "verification-view.png").stat().st_size > 10_000
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)   # quit: Locust's own shutdown, which stops the stand-in
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


# ------------------------------------------------------------------------------- (b, c) reports
@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    """One short run that loses 5 % of the notifications: L1 etc. fail."""
    tmp = tmp_path_factory.mktemp("fault-run")
    html, junit = tmp / "report.html", tmp / "junit.xml"
    res = run_locust(tmp, "--report-html", str(html), "--report-junit", str(junit), faults={"drop": 0.05, "seed": 1})
    assert res.report is not None, res.output[-3000:]
    assert res.verdict("L1") == "fail", res.output[-3000:]
    return res, html, junit, tmp


def test_html_report_shows_the_failing_scenario_and_plots(fault_run):
    require_chromium()
    res, html, _junit, tmp = fault_run
    text = html.read_text(encoding="utf-8")
    assert "<script src=" not in text and "http://" not in text.split('id="lt-data"')[0]  # self-contained
    with chromium(tmp) as drv:
        from selenium.webdriver.common.by import By

        drv.get(html.as_uri())
        wait_for(lambda: drv.execute_script("return window.LT_REPORT_READY === true"), 15, "the report's script")
        assert "FAIL" in drv.find_element(By.ID, "overall").text
        row = drv.find_element(By.CSS_SELECTOR, "#verdicts tr[data-scenario='L1']")
        assert row.get_attribute("data-verdict") == "fail"
        figure = row.find_element(By.CSS_SELECTOR, "td.fig").text
        assert figure == res.scenarios["L1"]["figure"]
        lost = int(re.search(r"lost (\d+) of", figure).group(1))
        assert lost > 0
        points = drv.execute_script("return LT.points")
        for c in CHARTS:
            assert points.get(c, 0) > 0, (c, points)
            assert canvas_painted(drv, f"#chart-{c} canvas") > 0, c
        assert coloured(drv, "#chart-latency canvas", BLUE) > 20
        assert coloured(drv, "#chart-histogram canvas", BLUE) > 50
        assert coloured(drv, "#chart-throughput canvas", BLUE) > 20
        assert coloured(drv, "#chart-server canvas", BROWN) > 5
        listeners = drv.find_elements(By.CSS_SELECTOR, "#listeners tbody tr")
        assert len(listeners) == 6
        assert drv.find_elements(By.CSS_SELECTOR, "#listeners tr.bad")   # some listener lost changes
        assert "write_rate" in drv.find_element(By.ID, "settings").text
        assert res.report["capacity"] is None and not drv.find_elements(By.ID, "capacity-title")   # no --step-load
        drv.save_screenshot(str(tmp / "report.png"))


def test_html_report_reads_without_hovering(fault_run):
    """What a person reads off the report's top and its charts, without moving the mouse."""
    require_chromium()
    res, html, _junit, tmp = fault_run
    data = report_data(html)
    run, figures, hist, series = res.report["run"], res.report["figures"], data["histogram"], data["series"]
    with chromium(tmp) as drv:
        from selenium.webdriver.common.by import By

        drv.get(html.as_uri())
        wait_for(lambda: drv.execute_script("return window.LT_REPORT_READY === true"), 15, "the report's script")

        # clock times, not epoch floats: the subtitle's span of the run, the settings
        assert f" {clock(run['started_at'])} – {clock(run['finished_at'])} (UTC" in text_of(drv, "#subtitle")
        settings = {tr.find_element(By.TAG_NAME, "th").text: tr.find_element(By.TAG_NAME, "td").text
                    for tr in drv.find_elements(By.CSS_SELECTOR, "#settings > table > tbody > tr")}
        assert settings["started_at"] == clock(run["started_at"])
        assert settings["writing_stopped_at"] == clock(run["writing_stopped_at"])

        # the run-health line, from figures.generator and the writes' outcomes
        gen = figures["generator"]
        sent = sum(n for kinds in figures["writes"].values() for outcomes in kinds.values() for n in outcomes.values())
        rejected = sum(o["rejected"] for kinds in figures["writes"].values() for o in kinds.values())
        assert text_of(drv, "#health-line") == (
            f"Run health: load generator: event-loop lag p95 {fixed(gen['loop_lag_p95_ms'], 1)} ms (max "
            f"{fixed(gen['loop_lag_max_ms'], 1)} ms), CPU {fixed(round(100 * gen['cpu_fraction'], 1), 0)} % of a core"
            f" · rejected writes: {rejected:,} of {sent:,} · unexpected disconnects: 0 · outages: none · "
            f"reconnects: 0 forced, 0 resumed")

        # the histogram: SC-054's threshold marked, the share above it in the title, round ticks
        thr = data["settings"]["latency_threshold_ms"]
        assert hist["threshold_ms"] == thr == 50.0 and hist["count"] == figures["latency_ms"]["sent"]["count"]
        # the same samples as SC-054's (the histogram counts to its 0.2 % buckets)
        outside = hist["count"] - figures["latency_ms"]["sent"]["within"]
        assert abs(hist["above"] - outside) <= max(2, hist["count"] // 100), (hist["above"], outside)
        assert text_of(drv, "#chart-histogram .u-title") == (f"Delivery latency histogram: {hist['count']:,} samples, "
                                                     f"{share_text(hist['above'], hist['count'])} above 50 ms")
        lo, hi = hist["edges_ms"][0], hist["edges_ms"][-1]
        place = "right edge" if thr > hi else "left edge" if thr < lo else "inside"
        el = drv.find_element(By.ID, "chart-histogram")
        assert (el.get_attribute("data-threshold-ms"), el.get_attribute("data-threshold-place"),
                el.get_attribute("data-above")) == ("50", place, str(hist["above"]))
        marker = drv.execute_script(_COLUMN_JS, "histogram", *RED)
        where = min(1.0, max(0.0, (math.log10(thr) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))))
        assert abs(marker["x"] - (marker["left"] + where * marker["width"])) <= 2, (marker, where)
        assert marker["n"] >= 0.9 * marker["height"], marker      # a solid line over the whole plot
        # round ticks: 1-2-5 per decade, or every 1..9 where fewer than three of those fit (a range under a
        # decade: 2.03-12.04 ms on a fast machine)
        for mantissas in ((1, 2, 5), range(1, 10)):
            want = [v for v in (float(f"{m * 10.0 ** k:.2g}") for k in range(-3, 5) for m in mantissas) if lo <= v <= hi]
            if len(want) >= 3:
                break
        ticks = drv.execute_script("return LT.charts.histogram._lt.tickLabels")
        assert ticks == [f"{v:g}" for v in want] and len(ticks) >= 3, (ticks, lo, hi)

        # writes and deliveries per listener on one scale; the legend keeps the total
        assert text_of(drv, "#chart-throughput .u-title") == \
            "Writes and deliveries per listener per second (deliveries ÷ 6 listeners)"
        assert drv.execute_script("return LT.charts.throughput.series.map(s => s.scale)") == ["x", "y", "y", "y"]
        legend = {name: [v.text for v in drv.find_elements(By.CSS_SELECTOR, f"#chart-{name} .u-legend .u-value")]
                  for name in CHARTS}
        last = series["deliveries"][-1]
        assert legend["throughput"][3] == f"{fixed(last / 6, 1)}/s (all: {last:,}/s)"
        # a value in every legend, not "--": the last one, and the clock time of the last second
        assert all(v and v != "--" for values in legend.values() for v in values), legend
        for name in ("latency", "throughput", "server"):
            assert legend[name][0] == clock(drv.execute_script(f"return LT.charts.{name}.data[0].at(-1)")), name
        assert legend["histogram"] == [f"p50 {fixed(hist['summary']['p50'], 1)} ms, p99 "
                                       f"{fixed(hist['summary']['p99'], 1)} ms", f"{hist['count']:,} in all"]

        # memory from 0, its growth over the first sample in the title and the legend
        rss = [x for x in data["server"]["rss_mb"] if x is not None]
        growth = 100 * (rss[-1] - rss[0]) / rss[0]
        over = f"{'+' if growth >= 0 else '−'}{fixed(abs(growth), 1)} % over baseline"
        assert text_of(drv, "#chart-server .u-title") == (f"Server memory and CPU (psutil): {fixed(rss[-1], 1)} MB, {over} "
                                                  f"(the first sample, {fixed(rss[0], 1)} MB)")
        assert legend["server"][1] == f"{fixed(rss[-1], 1)} MB ({over})"
        assert drv.execute_script("return LT.charts.server.scales.mb.min") == 0

        # figures, settings and details as tables: no {...} anywhere
        for part in ("figures", "settings", "details"):
            assert "{" not in drv.execute_script(f"return document.getElementById('{part}').textContent"), part
        assert drv.find_elements(By.CSS_SELECTOR, "#figures table.grid")      # writes, latency: grids
        assert drv.find_elements(By.CSS_SELECTOR, "#details details[data-scenario='L1'] table.kv")
        drv.save_screenshot(str(tmp / "report-top.png"))


def test_html_report_says_why_a_chart_is_empty_and_names_the_outage(fault_run, tmp_path):
    """The report of a run against a server elsewhere that went away (the fault run's report, with
    what such a run records instead): no empty boxes, the outage on the health line."""
    require_chromium()
    from loadtest.verdict.display import run_health
    from loadtest.verdict.files import html_report

    _res, html, _junit, _tmp = fault_run
    data = report_data(html)
    figures = data["report"]["figures"]
    start = data["report"]["run"]["writing_started_at"] + 2.4
    figures["outage"] = {"start": start, "seconds": None, "writes_refused": 716, "writes_unknown": 3,
                         "listeners_disconnected": 6, "reconnects_refused": 41, "counters_unreadable": True,
                         "stats_unreadable": True}
    figures["disconnects_unexpected"] = {"1006": 6}
    data["health"] = run_health(data["report"])
    data["server"] = {"t": [], "rss_mb": [], "cpu": [], "source": "none"}
    data["histogram"] = {"edges_ms": [], "counts": [], "negative": 0, "count": 0, "summary": {},
                         "threshold_ms": 50.0, "above": 0}
    data["series"] = {k: [] for k in data["series"]}
    path = tmp_path / "report.html"
    path.write_text(html_report(data), encoding="utf-8")
    with chromium(tmp_path) as drv:
        from selenium.webdriver.common.by import By

        drv.get(path.as_uri())
        wait_for(lambda: drv.execute_script("return window.LT_REPORT_READY === true"), 15, "the report's script")
        why = {c: drv.find_element(By.CSS_SELECTOR, f"#chart-{c} .nodata-why").text for c in CHARTS}
        assert why == {"server": NO_SERVER, "histogram": NO_ARRIVAL, "latency": NO_ARRIVAL,
                       "throughput": "No data: no write sent"}
        assert text_of(drv, "#chart-histogram .nodata-title") == "Delivery latency histogram: 0 samples"
        assert not drv.find_elements(By.CSS_SELECTOR, ".charts canvas")
        items = {e.get_attribute("data-item"): (e.text, "bad" in e.get_attribute("class"))
                 for e in drv.find_elements(By.CSS_SELECTOR, "#health-line .health-item")}
        assert items["outage"] == (f"outages: server unreachable from {clock(start)} until the end of the run "
                                   f"(716 writes refused, 6 listeners disconnected)", True)
        assert items["disconnects"] == ("unexpected disconnects: 6 (close code 1006: 6)", True)
        assert items["reconnects"] == ("reconnects: 0 forced, 0 resumed, 41 refused", True)
        outage = {tr.find_element(By.TAG_NAME, "th").text: tr.find_element(By.TAG_NAME, "td").text
                  for tr in drv.find_elements(By.XPATH, "//div[@id='figures']/table/tbody/tr[th='outage']/td/table/tbody/tr")}
        assert outage["start"] == clock(start) and outage["seconds"] == "–" and outage["writes_refused"] == "716"
        drv.save_screenshot(str(tmp_path / "report-no-data.png"))


def test_junit_xml_has_one_failing_testcase_per_failing_scenario(fault_run):
    from junitparser import Error, Failure, JUnitXml, Skipped

    res, _html, junit, _tmp = fault_run
    xml = JUnitXml.fromfile(str(junit))
    cases = {}
    for suite in xml:
        for case in suite:
            sid = case.name.split(" ", 1)[0]
            assert sid not in cases, f"two testcases for {sid}"
            cases[sid] = case
    assert set(cases) == set(res.scenarios)
    for sid, s in res.scenarios.items():
        kinds = [type(r) for r in cases[sid].result]
        expected = {"fail": [Failure], "inconclusive": [Error], "skipped": [Skipped]}.get(s["verdict"], [])
        assert kinds == expected, (sid, s["verdict"], kinds)
    l1 = cases["L1"].result[0]
    assert isinstance(l1, Failure) and l1.message == res.scenarios["L1"]["figure"]
    assert sum(1 for c in cases.values() if any(isinstance(r, Failure) for r in c.result)) == len(res.failing)


# ------------------------------------------------------------------------------- (d) a stepped load's capacity
KNEE = (106, 27, 154)       # the knee's marker (charts.js)
STEPS = ("--step-load", "--step-every", "3", "--step-factor", "2", "--step-max", "80")


@pytest.fixture(scope="module")
def capacity_run(tmp_path_factory):
    """A stepped load against a stand-in that acknowledges at most 200 write statements/s: 40, 80, 160
    and 320 writes/s offered by 4 writers, 3 s a step."""
    tmp = tmp_path_factory.mktemp("capacity-run")
    html = tmp / "report.html"
    res = run_locust(tmp, "--writers", "4", "--listeners", "2", "-u", "6", "-r", "6", "--workload", "shared",
                     "--reconnect-every", "0", "--drain-quiet", "1", "--drain-timeout", "10", "--write-rate", "10",
                     *STEPS, "--report-html", str(html), faults={"write_capacity": 200}, run_time="14s", small=False)
    assert res.report is not None, res.output[-3000:]
    cap = res.report["capacity"]
    # the fault breaks the step past 200 writes/s; the steps below it held, so there is a knee
    assert cap["knee"] is not None and cap["first_broken"] is not None, (cap, res.output[-3000:])
    return res, html, tmp


def held_text(step: dict) -> str:
    """The step table's "Held / why not" cell."""
    if step["held"]:
        return "held"
    return "broke: " + "; ".join(step["broke"]) + (" (generator saturated)" if step["generator_saturated"] else "")


def js_number(x: float) -> str:
    """String(x) in JavaScript for the values here (160 → "160", 198.5 → "198.5")."""
    return f"{x:g}"


def test_terminal_prints_the_step_table(capacity_run):
    res, _html, _tmp = capacity_run
    cap = res.report["capacity"]
    lines = res.output.splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith("  stepped load: step  offered/s  acked/s")]
    assert len(head) == 1, res.output[-3000:]
    rows = lines[head[0] + 1:head[0] + 1 + len(cap["steps"])]
    for step, line in zip(cap["steps"], rows):
        held = "yes" if step["held"] else "no" + (" (generator saturated)" if step["generator_saturated"] else "")
        assert re.fullmatch(rf"\s+{step['index'] + 1}\s+{step['offered_writes_per_s']:,.0f}\s+"
                            rf"{step['acked_writes_per_s']:,.0f}\s+{step['deliveries_per_s']:,.0f}\s+"
                            rf"{step['listeners']}\s+{step['lost']:,}\s+.*\s{re.escape(held)}", line), (step, line)
    assert lines[head[0] + 1 + len(cap["steps"])].startswith(
        "  capacity: " + res.report["figures"]["capacity"][:40])


def test_html_report_plots_the_capacity_with_the_knee_marked(capacity_run):
    require_chromium()
    from loadtest.verdict.files import html_report

    res, html, tmp = capacity_run
    cap, figure = res.report["capacity"], res.report["figures"]["capacity"]
    steps, knee, broken = cap["steps"], cap["steps"][cap["knee"]], cap["steps"][cap["first_broken"]]
    with chromium(tmp) as drv:
        from selenium.webdriver.common.by import By

        drv.get(html.as_uri())
        wait_for(lambda: drv.execute_script("return window.LT_REPORT_READY === true"), 15, "the report's script")
        assert text_of(drv, "#capacity-title") == "Capacity (stepped load)"
        assert text_of(drv, "#capacity-figure") == figure
        limit = drv.find_element(By.ID, "capacity-limit")
        assert limit.get_attribute("data-limited-by") == cap["limited_by"] == "server"
        assert limit.text == (f"The limit is the server's: during step {broken['index'] + 1} the load generator was "
                              f"not saturated (CPU {fixed(broken['generator_cpu_pct'], 0)} % of a core, event-loop "
                              f"lag p95 {fixed(broken['generator_lag_p95_ms'], 1)} ms).")

        # the latency chart: one point per step at its offered rate, the threshold, the knee marked
        el = drv.find_element(By.ID, "chart-capacity-latency")
        assert el.get_attribute("data-knee-offered") == js_number(knee["offered_writes_per_s"])
        assert el.get_attribute("data-broken-offered") == js_number(broken["offered_writes_per_s"])
        assert el.get_attribute("data-steps") == str(len(steps))
        u = drv.execute_script("const u = LT.charts['capacity-latency']; return {data: u.data, labels: "
                               "u.series.map(s => s.label), markers: u._lt.markers, min: u.scales.x.min, "
                               "max: u.scales.x.max, left: u.bbox.left, width: u.bbox.width}")
        assert u["labels"] == ["offered", "p50", "p95", "p99"]
        assert u["data"][0] == [s["offered_writes_per_s"] for s in steps]
        for k, p in enumerate(("p50", "p95", "p99"), start=1):
            assert u["data"][k] == [s[f"latency_{p}_ms"] for s in steps], p
        assert [(m["x"], m["label"]) for m in u["markers"]] == [
            (knee["offered_writes_per_s"], f"knee: {knee['offered_writes_per_s']:,.0f} writes/s"),
            (broken["offered_writes_per_s"],
             f"step {broken['index'] + 1} broke: {broken['broke'][0]}" +
             (f" (+{len(broken['broke']) - 1} more)" if len(broken["broke"]) > 1 else ""))]
        # the knee's line, drawn where its offered rate is on the log axis, over the whole plot
        marker = drv.execute_script(_COLUMN_JS, "capacity-latency", *KNEE)
        lo, hi = math.log(u["min"]), math.log(u["max"])
        at = u["left"] + (math.log(knee["offered_writes_per_s"]) - lo) / (hi - lo) * u["width"]
        assert abs(marker["x"] - at) <= 2, (marker, at)
        assert marker["n"] >= 0.9 * marker["height"], marker

        # the delivery ratio (%) and the acknowledged writes against the offered ones
        d = drv.execute_script("const u = LT.charts['capacity-delivery']; return {data: u.data, "
                               "labels: u.series.map(s => s.label), markers: u._lt.markers.length}")
        assert d["labels"] == ["offered", "delivery ratio", "acknowledged writes/s", "offered writes/s"]
        assert d["data"][1] == [None if s["delivery_ratio"] is None else s["delivery_ratio"] * 100 for s in steps]
        assert d["data"][2] == [s["acked_writes_per_s"] for s in steps] and d["markers"] == 2

        # the step table: a row a step, the knee's named, each held or why not
        rows = drv.execute_script(_TABLE_JS, "#capacity-steps table")["rows"]
        assert len(rows) == len(steps)
        for s, row in zip(steps, rows):
            assert row["step"] == f"{s['index'] + 1}" + (" (knee)" if s["index"] == cap["knee"] else "")
            assert row["held"] == held_text(s), (s, row)
            assert (row["offered"], row["latency"]) == (f"{s['offered_writes_per_s']:,.0f}", fixed(s["latency_p99_ms"], 1))
        assert rows[cap["first_broken"]]["held"].startswith("broke: acknowledged ")
        drv.save_screenshot(str(tmp / "report-capacity.png"))

        # the same run had the generator saturated in the step that broke: its limit, not the server's
        data = report_data(html)
        data["capacity"]["limited_by"] = "generator"
        data["capacity"]["steps"][cap["first_broken"]]["generator_saturated"] = True
        other = tmp / "report-generator.html"
        other.write_text(html_report(data), encoding="utf-8")
        drv.get(other.as_uri())
        wait_for(lambda: drv.execute_script("return window.LT_REPORT_READY === true"), 15, "the report's script")
        limit = drv.find_element(By.ID, "capacity-limit")
        assert limit.get_attribute("data-limited-by") == "generator" and "bad" in limit.get_attribute("class")
        assert limit.text.startswith(f"The limit is the load generator's, not the server's: the generator was "
                                     f"saturated during step {broken['index'] + 1} (")
        assert limit.text.endswith("Run more generator processes (--processes N) to find the server's capacity.")
        assert drv.execute_script(_TABLE_JS, "#capacity-steps table")["rows"][cap["first_broken"]]["held"].endswith(
            " (generator saturated)")


# ------------------------------------------------------------------------------- no browser needed
def test_junit_maps_every_verdict(tmp_path):
    from junitparser import Error, Failure, JUnitXml, Skipped

    from loadtest.verdict.files import junit_xml

    report = {"run": {"started_at": 1.0, "finished_at": 3.5, "run_id": "r"}, "notes": ["n"],
              "scenarios": {"A": {"title": "a", "verdict": "pass", "figure": "ok"},
                            "B": {"title": "b", "verdict": "fail", "figure": "lost 3 of 9", "details": {"x": 1}},
                            "C": {"title": "c", "verdict": "inconclusive", "figure": "drain timed out"},
                            "D": {"title": "d", "verdict": "skipped", "figure": "not exercised"},
                            "E": {"title": "e", "verdict": "warning", "figure": "generator busy"}}}
    path = tmp_path / "j.xml"
    path.write_text(junit_xml(report))
    xml = JUnitXml.fromfile(str(path))
    got = {c.name.split()[0]: [type(r) for r in c.result] for s in xml for c in s}
    assert got == {"A": [], "B": [Failure], "C": [Error], "D": [Skipped], "E": []}
    suite = next(iter(xml))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 1, 1, 1)


def test_the_phase_names_the_step_of_a_stepped_load():
    """The view's phase text (and the page's, from the same clock) during a --step-load run."""
    from types import SimpleNamespace

    from checks.capacity import StepSchedule
    from loadtest.verdict.display import run_clock, writing_text

    run = SimpleNamespace(started_at=1000.0, writing_started_at=1002.0, options=SimpleNamespace(writers=4),
                          step_schedule=StepSchedule(base=10, factor=2, every=3, top=80))
    clock = run_clock(run, 14)
    assert clock["steps"] == [{"index": 0, "start": 1002.0, "end": 1005.0, "offered": 40.0},
                              {"index": 1, "start": 1005.0, "end": 1008.0, "offered": 80.0},
                              {"index": 2, "start": 1008.0, "end": 1011.0, "offered": 160.0},
                              {"index": 3, "start": 1011.0, "end": None, "offered": 320.0}]
    assert writing_text(clock, 1009.5) == "writing: 9 s of 14 s, 5 s left · step 3 of 4: 160 writes/s offered"
    assert writing_text(clock, 1002.5) == "writing: 2 s of 14 s, 12 s left · step 1 of 4: 40 writes/s offered"
    assert writing_text(clock, 1016.0) == ("writing: 14 s of 14 s, run time over: the writers stop · "
                                           "step 4 of 4: 320 writes/s offered")
    # a run time that ends inside the second step: two steps, the last cut short
    assert writing_text(run_clock(run, 6), 1005.2) == "writing: 5 s of 6 s, 1 s left · step 2 of 2: 80 writes/s offered"
    # until stopped: the schedule's own steps, the top one lasting
    assert writing_text(run_clock(run, None), 1100.0) == ("writing: 100 s (no run time: until stopped) · "
                                                          "step 4 of 4: 320 writes/s offered")
    # a factor of 1.5 offers fractions of a write/s per writer; no step before the writing starts
    run.step_schedule = StepSchedule(base=15, factor=1.5, every=3, top=80)
    assert writing_text(run_clock(run, 60), 1006.0).endswith("· step 2 of 6: 90 writes/s offered")
    assert writing_text(run_clock(run, 60), 1015.0).endswith("· step 5 of 6: 303.8 writes/s offered")
    run.options.writers = 1
    assert writing_text(run_clock(run, 60), 1006.0).endswith("· step 2 of 6: 22.5 writes/s offered")
    assert writing_text(run_clock(run, 60), 1012.0).endswith("· step 4 of 6: 50.6 writes/s offered")
    run.writing_started_at = None
    assert run_clock(run, 60)["steps"] is None
    # a steady load: no step
    steady = SimpleNamespace(started_at=1000.0, writing_started_at=1002.0, options=SimpleNamespace(writers=4),
                             step_schedule=None)
    assert writing_text(run_clock(steady, 60), 1023.2) == "writing: 23 s of 60 s, 37 s left"


def test_time_series_from_a_ledger_and_a_log():
    from checks.arrivals import ArrivalLog, SubscriptionInfo
    from checks.ledger import WriteLedger
    from checks.model import KIND_INSERT, OP_INSERT, OUTCOME_ACK, Workload
    from loadtest.verdict.timeseries import TimeSeries

    led = WriteLedger(Workload(table="t", content_columns=("body",)))
    lg = ArrivalLog(SubscriptionInfo("l1", "s1", content_columns=("body",)))
    lg.subscribed(999.0)
    lg.ready(999.5)
    for k in range(10):
        t = 1000.0 + k * 0.5
        i = led.begin("w1", OP_INSERT, None, {"body": "x"}, t_sent=t)
        led.finish(i, OUTCOME_ACK, t_ack=t + 0.001)
        lg.record(KIND_INSERT, "w1", led.wseq(i), 1 << 22, t + 0.004, 0)
    ts = TimeSeries("sent")
    ts.add_ledger("t", led.view(), final=True)
    ts.add_log(lg, led)
    cols = ts.columns()
    assert cols["t"] == [1000, 1001, 1002, 1003, 1004]
    assert cols["writes_acked"] == [2, 2, 2, 2, 2] and cols["deliveries"] == [2, 2, 2, 2, 2]
    assert all(abs(p - 4.0) < 0.05 for p in cols["p50"])
    ts.add_log(lg, led)               # incremental: nothing new, nothing counted twice
    assert ts.columns()["deliveries"] == [2, 2, 2, 2, 2]
    assert ts.histogram()["count"] == 10
    # the samples above SC-054's threshold, exactly (every one took 4 ms)
    assert [ts.histogram(threshold_ms=t)["above"] for t in (3.0, 50.0)] == [10, 0]
    assert "above" not in ts.histogram()


def test_time_series_parts_add_up_to_the_whole_and_shift_moves_the_clock():
    # a distributed run's series: each worker counts its own arrivals, the master adds the parts up
    from checks.arrivals import ArrivalLog, SubscriptionInfo
    from checks.ledger import WriteLedger
    from checks.model import KIND_INSERT, OP_INSERT, OUTCOME_ACK, Workload
    from loadtest.verdict.timeseries import TimeSeries

    led = WriteLedger(Workload(table="t", content_columns=("body",)))
    logs = [ArrivalLog(SubscriptionInfo(f"l{j}", f"s{j}", content_columns=("body",))) for j in range(2)]
    for k in range(12):
        t = 1000.0 + k * 0.5
        i = led.begin("w1", OP_INSERT, None, {"body": "x"}, t_sent=t)
        led.finish(i, OUTCOME_ACK, t_ack=t + 0.001)
        for j, lg in enumerate(logs):
            lg.record(KIND_INSERT, "w1", led.wseq(i), 1 << 22, t + 0.004 + 0.002 * j, 0)
    whole = TimeSeries("sent")
    whole.add_ledger("t", led.view(), final=True)
    for lg in logs:
        whole.add_log(lg, led)
    master = TimeSeries("sent")
    master.add_ledger("t", led.view(), final=True)
    for lg in logs:                       # one worker per listener, each sending two parts
        worker = TimeSeries("sent")
        half = ArrivalLog(lg.info)
        for name in ("kind", "writer", "n", "seq", "t_recv", "digest", "old_digest", "epoch", "flags"):
            getattr(half, name).extend(getattr(lg, name)[:5])
        half._writers, half._writer_codes = list(lg.writers), {w: c for c, w in enumerate(lg.writers)}
        worker.add_log(half, led, key="k")
        master.merge_wire(worker.to_wire(take=True))
        assert worker.to_wire()["deliveries"] == []          # taken: counted afresh from here
        worker.add_log(lg, led, key="k")                      # the same cursor: only the 7 new ones
        master.merge_wire(worker.to_wire(take=True))
    assert master.columns() == whole.columns()
    assert master.histogram() == whole.histogram()
    # shift: a worker whose clock is 10 s behind the master's files its arrivals 10 s later
    shifted = TimeSeries("sent")
    shifted.add_ledger("t", led.view(), final=True, shift=10.0)
    shifted.add_log(logs[0], led, shift=10.0)
    cols = shifted.columns()
    assert cols["t"][0] == 1010 and sum(cols["deliveries"]) == 12 and sum(cols["writes_acked"]) == 12
    assert all(abs(p - 10_004.0) < 25 for p in cols["p50"] if p is not None)   # arrival moved, ledger not


# ------------------------------------------------------------------------------- a Host typed into the form
def _web_locust(tmp_path, env_extra: dict):
    port = free_port()
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "locustfile.py"), "--config", str(REPO / "locust.conf"),
           "--headful", "--web-host", "127.0.0.1", "--web-port", str(port),
           "--writers", "2", "--listeners", "2", "--write-rate", "10", "--reconnect-every", "0",
           "--drain-quiet", "1", "--drain-timeout", "5", "--workload", "shared",
           "--report-json", str(tmp_path / "verdict.json"), "--report-html", "", "--report-junit", "",
           "--reports-dir", str(tmp_path / "reports")]
    env = dict(os.environ)
    env.pop("KALAMDB_ADMIN_PASSWORD", None)
    env.update(env_extra)
    out = open(tmp_path / "locust.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return get_json(f"{base}/verification/data.json", timeout=1.0)
        except OSError:
            assert proc.poll() is None, (tmp_path / "locust.log").read_text()[-3000:]
            return None

    wait_for(up, 30, "Locust's web UI")
    return proc, base


def _swarm(base: str, host: str) -> None:
    data = urllib.parse.urlencode({"user_count": 4, "spawn_rate": 4, "host": host}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/swarm", data=data), timeout=10) as r:
        assert json.loads(r.read())["success"] is True


@pytest.mark.parametrize("admin", ["from the environment", "missing"])
def test_a_host_typed_into_the_form_is_set_up_with_the_environments_admin(tmp_path, standin, admin):
    env = {"KALAMDB_ADMIN_USER": "root", "KALAMDB_ADMIN_PASSWORD": TEST_ROOT_PASSWORD} if admin != "missing" else {}
    proc, base = _web_locust(tmp_path, env)
    try:
        _swarm(base, standin.url)   # not the built-in stand-in this process started
        if admin == "missing":
            # the set-up error is in the view (and the process stays up for the next try)
            state = wait_for(lambda: (lambda d: d if d["phase"] == "failed" else None)(
                get_json(f"{base}/verification/data.json")), 30, "the set-up error in the view")
            assert state["phase_text"].startswith("set-up failed: KALAMDB_ADMIN_PASSWORD is not set"), state
            time.sleep(1.0)
            assert proc.poll() is None
        else:
            # past the set-up (the admin login to the typed host) and the barrier: writing
            wait_for(lambda: get_json(f"{base}/verification/data.json")["phase"] == "writing", 30,
                     "the run against the typed host")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert TEST_ROOT_PASSWORD not in (tmp_path / "locust.log").read_text()


def test_the_live_verifier_fed_increments_answers_as_one_fed_the_whole_record_each_time():
    # The observer sends each ledger's delta (writes begun since, older ones answered since), not the whole
    # ledger: the verifier process's replica must reach the verdicts a fresh copy of everything reaches.
    import copy as _copy

    from checks.arrivals import ArrivalLog, SubscriptionInfo
    from checks.ledger import WriteLedger
    from checks.model import (KIND_INSERT, KIND_UPDATE, OP_INSERT, OP_UPDATE, OUTCOME_ACK, SEQ_EPOCH_MS,
                              SEQ_TIME_SHIFT, Workload)
    from checks.verifier import Thresholds
    from loadtest.view.verifier_process import COLUMNS, Replica

    led = WriteLedger(Workload(table="t", content_columns=("body",)))
    info = SubscriptionInfo("l1", "s1", content_columns=("body",))
    lg = ArrivalLog(info)
    lg.subscribed(999.0)
    lg.ready(999.5)
    inc, sent = Replica(), 0
    pending, skipped = [], 0
    for rnd in range(6):
        for k in range(50):
            t = 1000.0 + rnd + k * 0.01
            if k % 5 == 4 and rnd:       # an update of a row of the first round: an old write's next changes
                i = led.begin("w1", OP_UPDATE, led.pk(k), {"body": f"r{rnd}"}, t_sent=t)
            else:
                i = led.begin("w1", OP_INSERT, None, {"body": "x"}, t_sent=t)
            pending.append((i, t, dict(led.row(i))))
        # half of this round's answers come in the next round
        answer, pending = pending[:len(pending) // 2 + 10], pending[len(pending) // 2 + 10:]
        for i, t, row in answer:
            led.finish(i, OUTCOME_ACK, t_ack=t + 0.001)
            if i % 97 == 3:
                skipped += 1             # lost on the way
                continue
            seq = ((int((t + 0.002) * 1000) - SEQ_EPOCH_MS) << SEQ_TIME_SHIFT) + i
            kind = KIND_UPDATE if led.op(i) == OP_UPDATE else KIND_INSERT
            lg.record_row(kind, row, {'body': 'x'} if kind == KIND_UPDATE else None, seq, t + 0.004)
        end = len(lg.kind)

        def request(start, reset, ledger_delta):
            return {"now": 1010.0 + rnd, "cutoff": 1000.0 + rnd + 0.25, "ledgers": {"t": ledger_delta},
                    "logs": [{"key": info.key, "table": "t", "user": "l1", "vanished": False, "info": info,
                              "start": start, "cols": {c: getattr(lg, c)[start:end].tobytes() for c in COLUMNS},
                              "epochs": [_copy.copy(e) for e in lg.epochs], "writers": list(lg.writers),
                              "t_finished": lg.t_finished}],
                    "missing": [], "finished": False, "reset": reset, "thresholds": Thresholds(),
                    "latency_from": "sent"}
        if rnd % 2:   # streamed: a frame of what is new (no answer), then one asking for the verification
            assert inc.handle(dict(request(sent, False, led.delta()), verify=False)) is None
            got = inc.handle(request(end, False, led.delta()))
        else:
            got = inc.handle(request(sent, rnd == 0, led.delta(full=rnd == 0)))
        sent = end
        shadow = WriteLedger.from_bytes(led.to_bytes())
        whole = Replica().handle(request(0, True, shadow.delta()))
        for part in ("scenarios", "listeners", "totals", "series", "histogram"):
            assert got[part] == whole[part], (rnd, part)
    assert got["totals"]["writes_acked"] == len(led) - len(pending)
    assert got["totals"]["lost"] == skipped > 0
    # a frame that does not follow what the process holds: the next verification asks for everything again
    assert inc.handle(dict(request(sent + 5, False, led.delta()), verify=False)) is None
    assert inc.handle(request(sent, False, led.delta())) == {"error": "resync"}
    assert inc.handle(request(0, True, led.delta(full=True)))["totals"] == got["totals"]
