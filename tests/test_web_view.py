"""What people see: the web UI's live verification view, the HTML report and the JUnit XML.

Real parts: `python -m locust` with the built-in stand-in on loopback, Debian's chromium headless
(selenium + chromium-driver; installed by .ci/run, these tests skip with a message without it), and
junitparser reading the JUnit file. Bounded: every wait has a timeout; the two browser tests together
take well under two minutes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
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


def coloured(drv, selector, rgb, tol=40) -> int:
    return drv.execute_script(_COLOURED_JS, selector, *rgb, tol)


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
        drv.save_screenshot(str(tmp / "report.png"))


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
