"""The verification view in Locust's web UI.

Routes on Locust's Flask app (``--web-base-path`` is not supported by these routes):

    /verification              the live page: verdict per scenario, per-listener table, charts
    /verification/data.json    its data (``Observer.state()``), polled every 2 s by the page
    /verification/report.html  the last run's HTML report (after a run), else 404
    /verification/static/<f>   the vendored chart library (uPlot) and the page's script

Locust's own UI gets a "Verification" tab (a table of the scenarios' current verdicts, fed through
``/stats/requests``'s ``extended_stats``, whose "Charts" cells link to the view: ``static/locust-tab.js``,
injected into Locust's page, which also groups the start form's options as ``python3 -m loadtest --help``
does) and, on its "Download Data" tab, links to the view and to the HTML report.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from flask import Response, abort, jsonify, request, send_from_directory

log = logging.getLogger(__name__)

from ..options import GROUPS
from ..verdict.files import json_safe

STATIC = Path(__file__).resolve().parent.parent / "static"
TAB_KEY = "verification"
LOCUST_TAB_SCRIPT = '<script src="./verification/static/locust-tab.js"></script>'


def option_groups_script() -> str:
    """The start form's groups (``loadtest.options.GROUPS``, as ``python3 -m loadtest --help`` has them) for
    locust-tab.js: [{"title", "options": [dest, ...]}, ...]."""
    groups = [{"title": title, "options": [flag.lstrip("-").replace("-", "_") for flag in flags]}
              for title, flags in GROUPS.items()]
    return "<script>window.LT_OPTION_GROUPS = " + json.dumps(groups).replace("</", "<\\/") + ";</script>"


def _state_or_idle(environment) -> dict:
    lt = environment.loadtest
    obs = lt.observer
    if obs is None:
        err = lt.setup_error
        return {"phase": "idle", "phase_text": err or "no run yet: start one from Locust's form", "scenarios": [],
                "listeners": [], "series": {}, "server": {}, "totals": {}, "marks": [], "health": {},
                "provisional": True, "run": {}}
    return obs.state()


def install(environment, web_ui) -> None:
    app = web_ui.app

    @app.route("/verification")
    def verification_page():
        html = (STATIC / "verification.html").read_text(encoding="utf-8")
        return Response(html, mimetype="text/html")

    @app.route("/verification/data.json")
    def verification_data():
        try:
            body = json.dumps(json_safe(_state_or_idle(environment)), default=str, allow_nan=False)
            return Response(body, mimetype="application/json", headers={"Cache-Control": "no-store"})
        except Exception as exc:  # never a broken page because of one bad figure
            log.warning("verification view data failed", exc_info=True)
            return jsonify({"phase": "error", "phase_text": f"{type(exc).__name__}: {exc}"}), 500

    @app.route("/verification/static/<path:name>")
    def verification_static(name):
        return send_from_directory(str(STATIC), name)

    @app.route("/verification/report.html")
    def verification_report():
        lt = environment.loadtest
        path = lt.paths.html if lt.paths is not None else ""
        if not path or lt.report is None or not os.path.exists(path):
            abort(404)
        return send_from_directory(os.path.dirname(os.path.abspath(path)), os.path.basename(path))

    # Locust's own UI: a tab with the scenario table, and links on the "Download Data" tab.
    web_ui.template_args["extended_tabs"] = [{"title": "Verification", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [{"key": TAB_KEY, "structure": [
        {"key": "scenario", "title": "Scenario"}, {"key": "verdict", "title": "Verdict"},
        {"key": "figure", "title": "Figure"}, {"key": "view", "title": "Charts"}]}]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./verification", "title": "Verification view: live verdicts, listeners and charts"},
        {"href": "./verification/report.html", "title": "HTML verification report of the last run"}]

    @app.after_request
    def _add_our_script(response):
        # Locust's table cells hold text only, its form lists our options in one run: a script of ours on
        # its page makes the cells links and groups the options
        if request.path != "/" or response.status_code != 200 or response.mimetype != "text/html":
            return response
        try:
            html = response.get_data(as_text=True)
            response.set_data(html.replace("</body>", f"{option_groups_script()}\n{LOCUST_TAB_SCRIPT}\n</body>", 1))
        except Exception:  # Locust's own page must keep working
            log.debug("could not add the link script to Locust's page", exc_info=True)
        return response

    @app.after_request
    def _extend_stats(response):
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        try:
            data = json.loads(response.get_data())
            st = _state_or_idle(environment)
            tag = " (provisional)" if st.get("provisional") and st.get("phase") != "done" else ""
            rows = [{"scenario": f"{s['id']} {s.get('title') or ''}", "verdict": f"{s['verdict']}{tag}",
                     "figure": s.get("figure") or "", "view": "/verification"} for s in st.get("scenarios", [])]
            rows.insert(0, {"scenario": "run", "verdict": st.get("phase", ""), "figure": st.get("phase_text", ""),
                            "view": "/verification"})
            data["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
            response.set_data(json.dumps(data))
        except Exception:  # Locust's own page must keep working
            log.debug("could not extend /stats/requests", exc_info=True)
        return response
