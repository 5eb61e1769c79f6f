"""Comparing two runs: checks.compare.compare on reports derived from one real run (its schema, not a made-up
one), the `python3 -m loadtest compare A B` command (exit 0 / 1 / 2), and a run with --compare-to (the
comparison in its JSON and HTML reports, its own exit code untouched)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from browser import chromium, require_chromium, wait_for
from checks.compare import compare
from loadtest.verdict.files import html_report
from loadtest.verdict.report import comparison_view, with_comparison
from locust_run import REPO, run_locust
from test_stress_runs import STRESS

pytestmark = pytest.mark.timeout(180)

COMPARE = [sys.executable, "-m", "loadtest", "compare"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One short stress run on the stand-in: every scenario's details as the load test writes them."""
    tmp = tmp_path_factory.mktemp("compare-run")
    r = run_locust(tmp, *STRESS, "--report-html", str(tmp / "report.html"), run_time="8s")
    assert r.report is not None, r.output[-3000:]
    judged = ("L1", "SC-054", "S1", "S3", "L7")
    assert {sid: r.verdict(sid) != "skipped" for sid in judged} == dict.fromkeys(judged, True), r.output[-3000:]
    return r, tmp


def edited(report: dict, edits: dict) -> dict:
    """A copy of ``report`` with each path (a tuple of keys) set to its value."""
    out = copy.deepcopy(report)
    for path, value in edits.items():
        holder = out
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = value
    return out


def latency_path(report: dict, quantile: str) -> tuple:
    return ("scenarios", "SC-054", "details", report["run"]["latency_from"], quantile)


@pytest.fixture(scope="module")
def base(real_run) -> dict:
    """A: the real report with the figures these tests move set to known values, the verdicts they move pass."""
    r, _tmp = real_run
    rep = r.report
    return edited(rep, {
        ("summary", "verdict"): "pass",
        ("scenarios", "L1", "verdict"): "pass", ("scenarios", "L1", "details", "lost"): 0,
        ("scenarios", "L1", "details", "expected"): 1000, ("scenarios", "L1", "details", "duplicated"): 0,
        ("scenarios", "L7", "verdict"): "pass",
        ("scenarios", "SC-054", "verdict"): "pass", ("scenarios", "SC-054", "value"): 10.0,
        latency_path(rep, "p50"): 3.0, latency_path(rep, "p95"): 6.0, latency_path(rep, "p99"): 10.0,
        ("scenarios", "S1", "verdict"): "pass", ("scenarios", "S1", "details", "peak_pct"): 1.0,
        ("scenarios", "S1", "details", "leak", "slope_mb_per_min"): 0.2,
        ("scenarios", "S3", "verdict"): "pass", ("scenarios", "S3", "details", "avg_percent"): 20.0,
        ("scenarios", "S3", "details", "achieved_rate"): 100.0,
        ("figures", "writes_acknowledged_per_second"): 100.0,
    })


def worse(base: dict) -> dict:
    """B: L1 lost 7 (fails), SC-054's p99 10 → 80 ms (fails), S1's memory slope 0.2 → 5 MB/min (still passes:
    worse by its figure alone), the run fails."""
    return edited(base, {
        ("summary", "verdict"): "fail",
        ("scenarios", "L1", "verdict"): "fail", ("scenarios", "L1", "details", "lost"): 7,
        ("scenarios", "SC-054", "verdict"): "fail", latency_path(base, "p99"): 80.0,
        ("scenarios", "S1", "details", "leak", "slope_mb_per_min"): 5.0,
    })


def figure(result: dict, sid: str, name: str) -> dict:
    return next(f for f in result["scenarios"][sid]["figures"] if f["name"] == name)


def regressed(result: dict) -> set:
    return {sid for sid, s in result["scenarios"].items() if s["regressed"]}


# ------------------------------------------------------------------------------- (a) checks.compare
def test_a_report_against_itself_is_the_same_everywhere(real_run):
    rep = real_run[0].report
    got = compare(rep, rep)
    assert got["verdict"] == "same-or-better" and got["exit_code"] == 0 and got["regressions"] == []
    statuses = {sid: s["status"] for sid, s in got["scenarios"].items()}
    skipped = {sid for sid, s in rep["scenarios"].items() if s["verdict"] == "skipped"}
    assert statuses == {sid: "skipped" if sid in skipped else "same" for sid in rep["scenarios"]}
    assert got["run"]["settings_differ"] == []
    # every figure a judged scenario has is read from the real details (a renamed key reads None)
    assert all(f["a"] is not None and f["status"] == "same" for sid in ("L1", "SC-054", "S1", "S3")
               for f in got["scenarios"][sid]["figures"])
    assert [f["name"] for f in got["scenarios"]["SC-054"]["figures"]] == ["p50", "p95", "p99"]
    assert [f["name"] for f in got["scenarios"]["S1"]["figures"]] == ["memory growth", "memory slope"]


def test_regressions_are_the_scenarios_worse_with_their_figures(base):
    got = compare(base, worse(base), tolerance_pct=10)
    assert got["verdict"] == "worse" and got["exit_code"] == 1
    assert got["regressions"] == [
        {"scenario": "run", "what": "run verdict pass → fail"},
        {"scenario": "L1", "what": "verdict pass → fail"},
        {"scenario": "L1", "what": "lost 0 → 7"},
        {"scenario": "L1", "what": "lost share 0 → 0.7 % lost"},
        {"scenario": "SC-054", "what": "verdict pass → fail"},
        {"scenario": "SC-054", "what": "p99 10 → 80 ms"},
        {"scenario": "S1", "what": "memory slope 0.2 → 5 MB/min"},
    ]
    assert regressed(got) == {"L1", "SC-054", "S1"}
    assert figure(got, "L1", "lost") == {"name": "lost", "unit": "", "better": "lower", "a": 0.0, "b": 7.0,
                                         "change": 7.0, "change_pct": None, "slack": 0.0, "gates": True,
                                         "status": "worse"}
    assert figure(got, "SC-054", "p99") == {"name": "p99", "unit": "ms", "better": "lower", "a": 10.0, "b": 80.0,
                                            "change": 70.0, "change_pct": 700.0, "slack": 1.0, "gates": True,
                                            "status": "worse"}
    assert [figure(got, "SC-054", q)["status"] for q in ("p50", "p95")] == ["same", "same"]
    slope = figure(got, "S1", "memory slope")
    assert (slope["a"], slope["b"], slope["slack"], slope["status"]) == (0.2, 5.0, 0.5, "worse")
    assert got["scenarios"]["S1"]["why"] == ["memory slope 0.2 → 5 MB/min"]
    assert got["scenarios"]["S1"]["a"]["verdict"] == got["scenarios"]["S1"]["b"]["verdict"] == "pass"


def test_same_or_better_and_within_tolerance_is_not_worse(base):
    b = edited(base, {
        latency_path(base, "p50"): 1.5,        # better by more than the 1 ms floor
        latency_path(base, "p95"): 6.5,        # within 1 ms
        latency_path(base, "p99"): 10.9,       # within 10 % of 10 ms
        ("scenarios", "S3", "details", "avg_percent"): 21.5,     # within 10 % of 20 %
        ("scenarios", "S3", "details", "achieved_rate"): 95.0,   # higher is better: within 10 % of 100
        ("scenarios", "S1", "details", "leak", "slope_mb_per_min"): 0.6,   # within the 0.5 MB/min floor
        ("scenarios", "S1", "details", "peak_pct"): 0.5,         # within the 1-point floor
        ("scenarios", "L7", "verdict"): "pass",
        ("figures", "writes_acknowledged_per_second"): 50.0,     # the run's rates never gate
    })
    a = edited(base, {("scenarios", "L7", "verdict"): "fail"})
    got = compare(a, b, tolerance_pct=10)
    assert got["regressions"] == [] and got["verdict"] == "same-or-better" and got["exit_code"] == 0
    assert [figure(got, "SC-054", q)["status"] for q in ("p50", "p95", "p99")] == \
        ["better", "within tolerance", "within tolerance"]
    assert [figure(got, "S3", n)["status"] for n in ("server CPU", "write rate")] == ["within tolerance"] * 2
    assert [figure(got, "S1", n)["status"] for n in ("memory growth", "memory slope")] == ["within tolerance"] * 2
    assert {sid: got["scenarios"][sid]["status"] for sid in ("SC-054", "S1", "S3", "L7", "L1")} == \
        {"SC-054": "better", "S1": "same", "S3": "same", "L7": "better", "L1": "same"}
    rate = got["run"]["figures"][0]
    assert (rate["name"], rate["a"], rate["b"], rate["gates"], rate["status"]) == \
        ("writes acknowledged", 100.0, 50.0, False, "worse")
    assert got["run"]["regressed"] is False


def test_the_slack_floors_and_a_zero_in_a(base):
    def p99(value, tolerance=10):
        return figure(compare(base, edited(base, {latency_path(base, "p99"): value}), tolerance), "SC-054", "p99")

    small = edited(base, {latency_path(base, "p99"): 0.5})
    at_floor = compare(small, edited(base, {latency_path(base, "p99"): 1.5}))
    past_floor = compare(small, edited(base, {latency_path(base, "p99"): 1.6}))
    assert figure(at_floor, "SC-054", "p99")["status"] == "within tolerance"   # 1 ms, not 10 % of 0.5 ms
    assert figure(past_floor, "SC-054", "p99")["status"] == "worse"
    assert (p99(10.5, tolerance=0)["status"], p99(11.2, tolerance=0)["status"]) == ("within tolerance", "worse")
    assert (p99(14.9, tolerance=50)["status"], p99(15.1, tolerance=50)["status"]) == ("within tolerance", "worse")
    # a count that was 0 is worse at 1, whatever the tolerance
    one_lost = compare(base, edited(base, {("scenarios", "L1", "details", "lost"): 1}), tolerance_pct=1000)
    assert regressed(one_lost) == {"L1"} and figure(one_lost, "L1", "lost")["status"] == "worse"
    hundred = edited(base, {("scenarios", "L1", "details", "lost"): 100})
    more = edited(base, {("scenarios", "L1", "details", "lost"): 105})
    assert figure(compare(hundred, more, 10), "L1", "lost")["status"] == "within tolerance"
    assert figure(compare(hundred, more, 0), "L1", "lost")["status"] == "worse"


def test_a_verdict_from_pass_to_fail_or_inconclusive_is_a_regression_with_the_same_figures(base):
    for now in ("fail", "inconclusive"):
        got = compare(base, edited(base, {("scenarios", "L7", "verdict"): now}))
        assert got["regressions"] == [{"scenario": "L7", "what": f"verdict pass → {now}"}], now
        assert got["scenarios"]["L7"]["status"] == "worse" and got["exit_code"] == 1
    # GEN's warning does not fail a run: not a regression
    warned = compare(edited(base, {("scenarios", "GEN", "verdict"): "pass"}),
                     edited(base, {("scenarios", "GEN", "verdict"): "warning"}))
    assert warned["regressions"] == [] and warned["scenarios"]["GEN"]["status"] == "same"


def test_a_scenario_skipped_or_absent_in_one_run_is_not_comparable_and_does_not_gate(base):
    skipped = {"verdict": "skipped", "figure": "not a stress profile", "value": None, "threshold": None,
               "details": {}}
    b = edited(base, {("scenarios", "S1"): dict(base["scenarios"]["S1"], **skipped)})
    del b["scenarios"]["L6"]
    a = edited(base, {("scenarios", "S3"): dict(base["scenarios"]["S3"], **skipped),
                      ("scenarios", "SC-057"): dict(base["scenarios"]["SC-057"], **skipped)})
    b = edited(b, {("scenarios", "S3", "details", "avg_percent"): 99.0,
                   ("scenarios", "SC-057"): dict(base["scenarios"]["SC-057"], **skipped)})
    got = compare(a, b)
    assert got["regressions"] == [] and got["exit_code"] == 0
    assert {sid: (got["scenarios"][sid]["status"], got["scenarios"][sid]["why"])
            for sid in ("S1", "S3", "L6", "SC-057")} == {
        "S1": ("not comparable", ["skipped in B"]), "S3": ("not comparable", ["skipped in A"]),
        "L6": ("not comparable", ["absent in B"]), "SC-057": ("skipped", [])}
    assert got["scenarios"]["S3"]["figures"] == [] and got["scenarios"]["L6"]["b"] is None


def test_a_run_that_judged_nothing_is_worse_than_one_that_passed(base):
    nothing = edited(base, {("summary", "verdict"): "inconclusive"})
    for sid, s in nothing["scenarios"].items():
        nothing["scenarios"][sid] = dict(s, verdict="skipped", details={})
    got = compare(base, nothing)
    assert got["regressions"] == [{"scenario": "run", "what": "run verdict pass → inconclusive"}]
    assert regressed(got) == set() and got["verdict"] == "worse"


def test_settings_that_differ_are_listed(base):
    b = edited(base, {("run", "write_rate"): 12.5,
                      ("run", "server_stats_at_end"): dict(base["run"]["server_stats_at_end"], server_version="9.9")})
    got = compare(base, b)
    assert got["run"]["settings_differ"] == [
        {"name": "write_rate", "a": base["run"]["write_rate"], "b": 12.5},
        {"name": "server version", "a": base["run"]["server_stats_at_end"]["server_version"], "b": "9.9"}]
    assert got["regressions"] == []


# ------------------------------------------------------------------------------- (b) the command
def run_compare(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*COMPARE, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=60)


def write_report(path, report: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def test_compare_command_exits_0_when_not_worse_and_1_when_worse(base, tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    write_report(a_dir / "verdict.json", base)
    write_report(b_dir / "verdict.json", base)
    same = run_compare(a_dir, b_dir)
    assert same.returncode == 0, same.stderr
    lines = same.stdout.rstrip("\n").split("\n")
    assert lines[-1] == "  RESULT SAME OR BETTER: B is nowhere worse than A beyond the tolerance (exit code 0)"
    assert max(map(len, lines)) <= 120 and "WORSE" not in same.stdout and same.stderr == ""

    b_file = write_report(tmp_path / "worse.json", worse(base))
    bad = run_compare(a_dir / "verdict.json", b_file)
    assert bad.returncode == 1, bad.stderr
    lines = bad.stdout.rstrip("\n").split("\n")
    assert lines[-1] == "  RESULT WORSE: B is worse than A in run, L1, SC-054, S1 (exit code 1)"
    assert max(map(len, lines)) <= 120
    rows = {line.split()[0]: line for line in lines if line.startswith("  ") and not line.startswith("   ")}
    assert rows["L1"] == "  L1      PASS → FAIL            WORSE: lost 0 → 7 (+7) WORSE; lost share 0 → 0.7 % lost (+0.7) WORSE"
    assert rows["SC-054"] == "  SC-054  PASS → FAIL            WORSE: p99 10 → 80 ms (+70, +700 %) WORSE"
    assert rows["S1"] == "  S1      PASS → PASS            WORSE: memory slope 0.2 → 5 MB/min (+4.8, +2,400 %) WORSE"
    assert rows["L4"] == "  L4      PASS → PASS            same"
    assert any(line.startswith("  regressions: run (run verdict pass → fail); L1 (verdict pass → fail, lost 0 → 7")
               for line in lines)


def test_compare_command_tolerance(base, tmp_path):
    a = write_report(tmp_path / "a.json", base)
    b = write_report(tmp_path / "b.json", edited(base, {latency_path(base, "p99"): 15.0}))
    assert run_compare(a, b).returncode == 1
    assert run_compare(a, b, "--tolerance", "60").returncode == 0
    negative = run_compare(a, b, "--tolerance", "-5")
    assert negative.returncode == 2
    assert negative.stderr == "python3 -m loadtest compare: --tolerance: -5.0 must be a percentage ≥ 0\n"


def test_compare_command_reads_a_run_directory_of_the_load_test(real_run):
    r, tmp = real_run   # run_locust names its report verdict-<stamp>.json: the directory's only one
    got = run_compare(tmp, tmp)
    assert got.returncode == 0, got.stderr
    assert f"A: run {r.report['run']['run_id']} " in got.stdout


@pytest.mark.parametrize("content, why", [
    (None, "no such file or directory"),
    ("{not json", "not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ('{"schema": "something/else", "scenarios": {}}',
     "not a verdict report (schema 'something/else', expected 'kalamdb-loadtest/verdict/v1')"),
    ("[1, 2]", "not a verdict report (schema None, expected 'kalamdb-loadtest/verdict/v1')"),
])
def test_compare_command_exits_2_with_one_line_on_bad_input(base, tmp_path, content, why):
    good = write_report(tmp_path / "good.json", base)
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    got = run_compare(good, bad)
    assert got.returncode == 2 and got.stdout == ""
    assert got.stderr == f"python3 -m loadtest compare: B: {bad}: {why}\n"


def test_compare_command_exits_2_for_a_directory_without_a_report(base, tmp_path):
    good = write_report(tmp_path / "good.json", base)
    (tmp_path / "empty").mkdir()
    got = run_compare(tmp_path / "empty", good)
    assert got.returncode == 2
    assert got.stderr == f"python3 -m loadtest compare: A: {tmp_path / 'empty'}: a directory without verdict.json\n"


# ------------------------------------------------------------------------------- (c) --compare-to
def test_an_unreadable_earlier_report_is_a_note_not_a_crash(base, tmp_path):
    missing = str(tmp_path / "nowhere.json")
    got = with_comparison(base, missing)
    why = f"{missing}: no such file or directory"
    assert got["comparison"] == {"against": missing, "error": why}
    assert got["notes"] == [*base["notes"], f"--compare-to: no comparison: {why}"]
    assert (got["summary"], got["exit_code"]) == (base["summary"], base["exit_code"])
    html = html_report({"report": got, "comparison": comparison_view(got["comparison"])})
    assert 'id="comparison-title"' in html and json.dumps(why) in html


def test_a_run_with_compare_to_reports_the_comparison_and_keeps_its_exit_code(real_run, base, tmp_path):
    _earlier_run, earlier_dir = real_run
    assert 'id="comparison-title"' not in (earlier_dir / "report.html").read_text(encoding="utf-8")
    # A: the real stress run, its delivery latency made 0.1 ms at every start: this run's is surely worse
    earlier = edited(base, {("scenarios", "SC-054", "details", start, q): 0.1
                            for start in ("sent", "ack", "commit") for q in ("p50", "p95", "p99")})
    a_path = write_report(tmp_path / "earlier" / "verdict.json", earlier)
    html = tmp_path / "report.html"
    r = run_locust(tmp_path, "--compare-to", str(a_path), "--report-html", str(html), run_time="6s")
    assert r.report is not None, r.output[-3000:]
    cmp = r.report["comparison"]
    assert cmp["against"] == str(a_path) and cmp["a"]["run_id"] == earlier["run"]["run_id"]
    assert regressed(cmp) == {"SC-054"}, cmp["regressions"]
    p99 = figure(cmp, "SC-054", "p99")
    latency_from = r.report["run"]["latency_from"]
    assert (p99["a"], p99["b"], p99["status"]) == (0.1, r.scenarios["SC-054"]["details"][latency_from]["p99"], "worse")
    run_regressed = r.report["summary"]["verdict"] != "pass"
    assert cmp["run"]["regressed"] is run_regressed
    # not comparable: what one run judged and the other skipped (the stress scenarios, judged in A only)
    judged_in_one = {sid for sid in earlier["scenarios"]
                     if (earlier["scenarios"][sid]["verdict"] == "skipped") != (r.verdict(sid) == "skipped")}
    assert {sid for sid, s in cmp["scenarios"].items() if s["status"] == "not comparable"} == judged_in_one
    assert {"S1", "S3"} <= judged_in_one
    # the comparison is not this run's verdict: its exit code is a clean run's, the terminal ends with it
    assert r.returncode == r.clean_exit[0], r.output[-3000:]
    assert r.output.rstrip().splitlines()[-1].startswith("  OVERALL ") and "RESULT WORSE" not in r.output
    text = html.read_text(encoding="utf-8")
    assert 'id="comparison-title"' in text
    outcome = ("RESULT WORSE: B is worse than A in " + ", ".join((["run"] if run_regressed else []) + ["SC-054"])
               + " (exit code 1)")
    require_chromium()
    with chromium(tmp_path) as drv:
        from selenium.webdriver.common.by import By

        drv.get(html.as_uri())
        wait_for(lambda: drv.execute_script("return window.LT_REPORT_READY === true"), 15, "the report's script")
        assert drv.find_element(By.ID, "comparison-outcome").text == outcome
        row = drv.find_element(By.CSS_SELECTOR, "#comparison tr[data-scenario='SC-054']")
        assert row.get_attribute("class") == "bad" and row.find_element(By.CSS_SELECTOR, "td.status").text == "WORSE"
        assert "p99 0.1 → " in row.find_element(By.CSS_SELECTOR, "td.moved").text
        marked = drv.find_elements(By.CSS_SELECTOR, "#comparison tr.bad")
        assert {m.get_attribute("data-scenario") for m in marked} == ({"run", "SC-054"} if run_regressed else {"SC-054"})

