/* Charts and tables of the KalamDB live-query verification (the live view and the HTML report).
 * Needs uPlot (vendored: loadtest/static/uPlot.iife.min.js). No network, no build step.
 * window.LT.points[name] = number of data points drawn by each chart (tests read it). */
(function () {
  "use strict";
  var LT = { points: {}, charts: {} };
  var COLORS = { pass: "#1b7f3b", fail: "#c62828", inconclusive: "#d07000", skipped: "#757575", warning: "#b8860b" };

  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function num(x, d) {
    if (x === null || x === undefined || x === "") return "–";
    if (typeof x !== "number") return esc(x);
    return d === undefined ? String(x) : x.toFixed(d);
  }
  function count(arr) {
    var n = 0;
    for (var i = 0; i < (arr || []).length; i++) if (arr[i] !== null && arr[i] !== undefined) n++;
    return n;
  }
  function width(el) { return Math.max(320, (el.clientWidth || 800) - 8); }

  function vline(u, t, color, label, row) {
    var x = u.valToPos(t, "x", true);
    if (!(x >= u.bbox.left && x <= u.bbox.left + u.bbox.width)) return;
    var ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = color; ctx.setLineDash([4, 4]); ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    if (label) { ctx.fillStyle = color; ctx.font = "11px sans-serif"; ctx.fillText(label, x + 3, u.bbox.top + 12 + 13 * (row || 0)); }
    ctx.restore();
  }
  function hline(u, y, scale, color, label) {
    var py = u.valToPos(y, scale, true);
    if (!(py >= u.bbox.top && py <= u.bbox.top + u.bbox.height)) return;
    var ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = color; ctx.setLineDash([6, 4]); ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(u.bbox.left, py); ctx.lineTo(u.bbox.left + u.bbox.width, py); ctx.stroke();
    if (label) { ctx.fillStyle = color; ctx.font = "11px sans-serif"; ctx.fillText(label, u.bbox.left + 4, py - 3); }
    ctx.restore();
  }
  function shade(u, t0, t1, color, label) {
    var a = u.valToPos(t0, "x", true), b = u.valToPos(t1, "x", true);
    var l = u.bbox.left, r = u.bbox.left + u.bbox.width;
    a = Math.max(l, Math.min(r, a)); b = Math.max(l, Math.min(r, b));
    if (b <= a) return;
    var ctx = u.ctx;
    ctx.save(); ctx.fillStyle = color; ctx.fillRect(a, u.bbox.top, b - a, u.bbox.height);
    if (label) { ctx.fillStyle = "#444"; ctx.font = "11px sans-serif"; ctx.fillText(label, a + 3, u.bbox.top + u.bbox.height - 5); }
    ctx.restore();
  }

  /* Create or update a uPlot chart held in LT.charts[name]. */
  function plot(name, el, opts, data) {
    LT.points[name] = 0;
    for (var i = 1; i < data.length; i++) LT.points[name] += count(data[i]);
    var u = LT.charts[name];
    if (u && u.series.length === opts.series.length && u.root.parentNode === el) {
      u._lt = opts._lt;
      var title = u.root.querySelector(".u-title");
      if (title && opts.title) title.textContent = opts.title;
      u.setData(data); return u;
    }
    if (u) u.destroy();
    el.innerHTML = "";
    opts.width = width(el);
    opts.height = opts.height || 260;
    u = new uPlot(opts, data, el);
    u._lt = opts._lt;
    LT.charts[name] = u;
    return u;
  }
  window.addEventListener("resize", function () {
    Object.keys(LT.charts).forEach(function (k) {
      var u = LT.charts[k]; if (u && u.root.parentNode) u.setSize({ width: width(u.root.parentNode), height: u.height });
    });
  });

  function markHook(u) {
    var m = (u._lt && u._lt.marks) || [];
    m.forEach(function (mk, i) { vline(u, mk.t, "#555", mk.name, i % 3); });
  }

  LT.latency = function (el, series, thresholdMs, latencyFrom, marks) {
    var s = series || {};
    var data = [s.t || [], s.p50 || [], s.p95 || [], s.p99 || []];
    return plot("latency", el, {
      title: "Delivery latency per second (ms, from " + (latencyFrom || "sent") + ")",
      _lt: { marks: marks, threshold: thresholdMs },
      scales: { x: { time: true } },
      series: [{}, { label: "p50", stroke: "#1e88e5", width: 1.5, spanGaps: false },
               { label: "p95", stroke: "#f57c00", width: 1.5 }, { label: "p99", stroke: "#c62828", width: 1.5 }],
      axes: [{}, { label: "ms" }],
      hooks: { draw: [markHook, function (u) {
        if (u._lt.threshold) hline(u, u._lt.threshold, "y", "#c62828", "threshold " + u._lt.threshold + " ms");
      }] }
    }, data);
  };

  LT.throughput = function (el, series, marks) {
    var s = series || {};
    var data = [s.t || [], s.writes_sent || [], s.writes_acked || [], s.deliveries || []];
    return plot("throughput", el, {
      title: "Writes per second vs change deliveries per second",
      _lt: { marks: marks },
      scales: { x: { time: true }, w: { auto: true }, d: { auto: true } },
      series: [{}, { label: "writes sent/s", stroke: "#8e24aa", scale: "w", width: 1 },
               { label: "writes acked/s", stroke: "#43a047", scale: "w", width: 1.5 },
               { label: "deliveries/s", stroke: "#1e88e5", scale: "d", width: 1.5 }],
      axes: [{}, { scale: "w", label: "writes/s" }, { scale: "d", side: 1, label: "deliveries/s", grid: { show: false } }],
      hooks: { draw: [markHook] }
    }, data);
  };

  function fitLine(ts, vs, a, b) {
    var n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (var i = 0; i < ts.length; i++) {
      if (ts[i] < a || ts[i] > b || vs[i] === null || vs[i] === undefined) continue;
      var x = ts[i] - a; n++; sx += x; sy += vs[i]; sxx += x * x; sxy += x * vs[i];
    }
    if (n < 2 || n * sxx - sx * sx === 0) return null;
    var slope = (n * sxy - sx * sy) / (n * sxx - sx * sx), icpt = (sy - slope * sx) / n;
    return ts.map(function (t) { return t >= a && t <= b ? icpt + slope * (t - a) : null; });
  }

  LT.server = function (el, server, marks, stress) {
    var s = server || {};
    var t = s.t || [], rss = s.rss_mb || [], cpu = s.cpu || [];
    var series = [{}, { label: "server RSS (MB)", stroke: "#6d4c41", scale: "mb", width: 1.5 },
                  { label: "server CPU (%)", stroke: "#00897b", scale: "pct", width: 1 }];
    var data = [t, rss, cpu];
    if (stress && stress.window) {
      var fit = fitLine(t, rss, stress.window[0], stress.window[1]);
      if (fit) {
        series.push({ label: "leak fit (steady part)", stroke: "#c62828", scale: "mb", width: 1, dash: [8, 4] });
        data.push(fit);
      }
    }
    return plot("server", el, {
      title: "Server memory and CPU" + (s.source ? " (" + s.source + ")" : ""),
      _lt: { marks: marks, stress: stress },
      scales: { x: { time: true }, mb: { auto: true }, pct: { auto: true } },
      series: series,
      axes: [{}, { scale: "mb", label: "MB" }, { scale: "pct", side: 1, label: "CPU %", grid: { show: false } }],
      hooks: { draw: [markHook, function (u) {
        var st = u._lt.stress;
        if (!st) return;
        if (st.window) shade(u, st.window[0], st.window[1], "rgba(30,136,229,0.08)", "steady part (baseline, leak fit)");
        if (st.baseline_mb) hline(u, st.baseline_mb, "mb", "#1e88e5", "baseline " + st.baseline_mb.toFixed(1) + " MB");
        if (st.release && (st.release.start || st.window)) {
          var r0 = st.release.start || st.window[1];
          var r1 = st.release.end || (r0 + (st.release.took_s || 60));
          shade(u, r0, r1, "rgba(67,160,71,0.10)", "release window");
          if (st.release.band_mb) hline(u, st.release.band_mb, "mb", "#43a047", "release band");
        }
      }] }
    }, data);
  };

  LT.histogram = function (el, hist) {
    var h = hist || {};
    var edges = h.edges_ms || [], counts = h.counts || [];
    var xs = [], ys = [];
    for (var i = 0; i < counts.length; i++) { xs.push(i); ys.push(counts[i]); }
    var data = [xs, ys];
    return plot("histogram", el, {
      title: "Delivery latency histogram (" + (h.count || 0) + " samples" +
        (h.negative ? ", " + h.negative + " negative not shown" : "") + ")",
      _lt: { edges: edges, bins: counts.length },
      scales: { x: { time: false, range: function (u) { return [-0.5, Math.max(1, u._lt ? u._lt.bins : counts.length) - 0.5]; } } },
      series: [{ label: "bin" }, { label: "arrivals", stroke: "#1e88e5", fill: "rgba(30,136,229,0.35)",
                 paths: uPlot.paths.bars({ size: [0.9, 60] }), points: { show: false } }],
      axes: [{ label: "ms (log bins)", values: function (u, vals) {
        var ed = (u._lt && u._lt.edges) || edges;
        return vals.map(function (v) {
          var e = ed[Math.round(v)]; return e === undefined ? "" : (e < 1 ? e.toFixed(2) : e < 10 ? e.toFixed(1) : e.toFixed(0));
        });
      } }, { label: "arrivals" }]
    }, data);
  };

  LT.verdictTable = function (el, scenarios, provisional) {
    var rows = (scenarios || []).map(function (s) {
      var c = COLORS[s.verdict] || "#333";
      return "<tr data-scenario='" + esc(s.id) + "' data-verdict='" + esc(s.verdict) + "'><td class='sid'>" + esc(s.id) +
        "</td><td><span class='badge' style='background:" + c + "'>" + esc(s.verdict) +
        (provisional ? " (provisional)" : "") + "</span></td><td>" + esc(s.title) + "</td><td class='fig'>" +
        esc(s.figure) + "</td><td>" + esc(s.threshold) + "</td></tr>";
    }).join("");
    el.innerHTML = "<table class='lt'><thead><tr><th>Scenario</th><th>Verdict</th><th>What</th><th>Figure</th>" +
      "<th>Threshold</th></tr></thead><tbody>" + (rows || "<tr><td colspan=5>no verdict yet</td></tr>") + "</tbody></table>";
  };

  /* --compare-to: the comparison's rows (loadtest/verdict/report.py comparison_view), a regressed row marked
   * WORSE; or why there is no comparison. */
  LT.comparisonTable = function (el, cmp) {
    if (cmp.error) {
      el.innerHTML = "<p class='bad' id='comparison-error'>no comparison with " + esc(cmp.against) + ": " +
        esc(cmp.error) + "</p>";
      return;
    }
    var head = "<p id='comparison-outcome'><b>" + esc(cmp.outcome) + "</b></p><p class='muted'>A: run " +
      esc(cmp.a.run_id) + " (" + esc(cmp.a.verdict) + ") from " + esc(cmp.against) + " · B: this run · tolerance " +
      esc(cmp.tolerance_pct) + " %" + (cmp.settings_differ ? " · settings differ: " + esc(cmp.settings_differ) : "") + "</p>";
    var rows = (cmp.rows || []).map(function (r) {
      var verdicts = "<span class='badge' style='background:" + (COLORS[r.a] || "#333") + "'>" + esc(r.a || "absent") +
        "</span> → <span class='badge' style='background:" + (COLORS[r.b] || "#333") + "'>" + esc(r.b || "absent") + "</span>";
      var figures = r.figure_a === r.figure_b ? esc(r.figure_a) :
        "A: " + esc(r.figure_a) + "<br>B: " + esc(r.figure_b);
      return "<tr data-scenario='" + esc(r.scenario) + "' data-status='" + esc(r.status) + "'" +
        (r.regressed ? " class='bad'" : "") + "><td class='sid'>" + esc(r.scenario) + "</td><td class='verdicts'>" + verdicts +
        "</td><td class='status'>" + (r.regressed ? "<b>WORSE</b>" : esc(r.status)) + "</td><td class='moved'>" +
        r.moved.map(esc).join("<br>") + "</td><td class='fig'>" + (r.scenario === "run" ? "" : figures) + "</td></tr>";
    }).join("");
    el.innerHTML = head + "<table class='lt'><thead><tr><th>Scenario</th><th>Verdict A → B</th><th>Change</th>" +
      "<th>Figures that moved</th><th>Figure</th></tr></thead><tbody>" + rows + "</tbody></table>";
  };

  LT.listenerTable = function (el, listeners) {
    var rows = (listeners || []).map(function (x) {
      var bad = (x.lost || 0) + (x.duplicated || 0) + (x.out_of_order || 0);
      return "<tr" + (bad ? " class='bad'" : "") + "><td>" + esc(x.listener) + (x.vanished ? " (vanished)" : "") +
        "</td><td>" + num(x.received) + "</td><td>" + num(x.expected) + "</td><td>" + num(x.lost) + "</td><td>" +
        num(x.duplicated) + "</td><td>" + num(x.out_of_order) + "</td><td>" + num(x.p50, 1) + "</td><td>" +
        num(x.p95, 1) + "</td><td>" + num(x.p99, 1) + "</td></tr>";
    }).join("");
    el.innerHTML = "<table class='lt num'><thead><tr><th>Listener</th><th>Received</th><th>Expected</th><th>Lost</th>" +
      "<th>Duplicated</th><th>Out of order</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr></thead><tbody>" +
      (rows || "<tr><td colspan=9>no listener yet</td></tr>") + "</tbody></table>";
  };

  LT.kvTable = function (el, obj) {
    var rows = Object.keys(obj || {}).map(function (k) {
      var v = obj[k];
      if (v !== null && typeof v === "object") v = JSON.stringify(v);
      return "<tr><th>" + esc(k) + "</th><td>" + esc(v) + "</td></tr>";
    }).join("");
    el.innerHTML = "<table class='lt kv'><tbody>" + rows + "</tbody></table>";
  };

  LT.esc = esc;
  LT.num = num;
  window.LT = LT;
})();
