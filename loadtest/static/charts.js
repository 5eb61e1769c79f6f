/* Charts and tables of the KalamDB live-query verification (the live view and the HTML report).
 * Needs uPlot (vendored: loadtest/static/uPlot.iife.min.js). No network, no build step.
 * For the tests (and anyone reading the page's state): window.LT.points[name] = number of data points
 * drawn by each chart; LT.charts[name] = its uPlot instance (u._lt: what the chart was drawn from, and
 * for the histogram u._lt.tickLabels, the x labels drawn; for the capacity charts u._lt.markers, the
 * knee's and the first broken step's markers); a chart without data is a div.nodata with the reason;
 * the histogram's element carries data-threshold-ms / -place / data-above. */
(function () {
  "use strict";
  var LT = { points: {}, charts: {} };
  var COLORS = { pass: "#1b7f3b", fail: "#c62828", inconclusive: "#d07000", skipped: "#757575", warning: "#b8860b" };
  var RED = "#c62828";
  // figures whose numbers are epoch seconds: shown as clock times (keys of the report and the settings)
  var EPOCH_KEY = /(_at|^start|^end|^t|_start|_end|^window)$/;
  var MAX_ROWS = 20;   // an array in a figures table: the first rows, then how many more

  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function missing(x) { return x === null || x === undefined || x === ""; }
  function num(x, d) {
    if (missing(x)) return "–";
    if (typeof x !== "number") return esc(x);
    return d === undefined ? String(x) : x.toFixed(d);
  }
  function thousands(n) { return missing(n) ? "–" : Number(n).toLocaleString("en-US"); }
  function pad2(n) { return (n < 10 ? "0" : "") + n; }
  /* HH:MM:SS of an epoch (seconds), in the browser's time zone, as the charts' axes are */
  function clock(epoch) {
    if (missing(epoch)) return "–";
    var d = new Date(epoch * 1000);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }
  function day(epoch) {
    var d = new Date(epoch * 1000);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate());
  }
  function zone(epoch) {
    var off = -new Date(epoch * 1000).getTimezoneOffset(), a = Math.abs(off);
    return "UTC" + (off < 0 ? "−" : "+") + pad2(Math.floor(a / 60)) + ":" + pad2(a % 60);
  }
  function count(arr) {
    var n = 0;
    for (var i = 0; i < (arr || []).length; i++) if (!missing(arr[i])) n++;
    return n;
  }
  function firstIndex(arr) {
    for (var i = 0; i < (arr || []).length; i++) if (!missing(arr[i])) return i;
    return -1;
  }
  function lastIndex(arr) {
    for (var i = (arr || []).length - 1; i >= 0; i--) if (!missing(arr[i])) return i;
    return -1;
  }
  function share(part, whole) {
    if (!whole) return "–";
    if (!part) return "0 %";
    var p = 100 * part / whole;
    return p < 0.1 ? "< 0.1 %" : p.toFixed(1) + " %";
  }
  function width(el) { return Math.max(320, (el.clientWidth || 800) - 8); }

  /* A legend value that is never "--": under the cursor the value there, elsewhere the series' last
   * value. fmt(value, u, index) formats a value that is there. */
  function legendValue(fmt) {
    return function (u, v, sidx, idx) {
      var i = idx === null || idx === undefined ? lastIndex(u.data[sidx]) : idx;
      var x = i < 0 ? null : u.data[sidx][i];
      return missing(x) ? "–" : fmt(x, u, i);
    };
  }
  function fixed(d, unit) { return function (v) { return v.toFixed(d) + (unit || ""); }; }
  var TIME_SERIES = { label: "Time", value: legendValue(clock) };
  var TIME_AXIS = { space: 80, values: function (u, splits) { return splits.map(clock); } };

  /* (uPlot leaves its axes' textAlign on the context: each label sets its own) */
  function vline(u, t, color, label, row) {
    var x = u.valToPos(t, "x", true);
    if (!(x >= u.bbox.left && x <= u.bbox.left + u.bbox.width)) return;
    var ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = color; ctx.setLineDash([4, 4]); ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    if (label) { ctx.fillStyle = color; ctx.font = "11px sans-serif"; ctx.textAlign = "left"; ctx.fillText(label, x + 3, u.bbox.top + 12 + 13 * (row || 0)); }
    ctx.restore();
  }
  function hline(u, y, scale, color, label) {
    var py = u.valToPos(y, scale, true);
    if (!(py >= u.bbox.top && py <= u.bbox.top + u.bbox.height)) return;
    var ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = color; ctx.setLineDash([6, 4]); ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(u.bbox.left, py); ctx.lineTo(u.bbox.left + u.bbox.width, py); ctx.stroke();
    if (label) { ctx.fillStyle = color; ctx.font = "11px sans-serif"; ctx.textAlign = "left"; ctx.fillText(label, u.bbox.left + 4, py - 3); }
    ctx.restore();
  }
  function shade(u, t0, t1, color, label) {
    var a = u.valToPos(t0, "x", true), b = u.valToPos(t1, "x", true);
    var l = u.bbox.left, r = u.bbox.left + u.bbox.width;
    a = Math.max(l, Math.min(r, a)); b = Math.max(l, Math.min(r, b));
    if (b <= a) return;
    var ctx = u.ctx;
    ctx.save(); ctx.fillStyle = color; ctx.fillRect(a, u.bbox.top, b - a, u.bbox.height);
    if (label) { ctx.fillStyle = "#444"; ctx.font = "11px sans-serif"; ctx.textAlign = "left"; ctx.fillText(label, a + 3, u.bbox.top + u.bbox.height - 5); }
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
      u.setData(data);
      u.setLegend({ idx: u.cursor.idx }, false);   // the idle legend's "last value" moved on too
      return u;
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
  /* A chart that has nothing to draw says why, in place of an empty box. */
  function noData(name, el, title, why) {
    var u = LT.charts[name];
    if (u) { u.destroy(); delete LT.charts[name]; }
    LT.points[name] = 0;
    el.innerHTML = "<div class='nodata'><div class='nodata-title'>" + esc(title) + "</div><p class='nodata-why'>No data: " +
      esc(why) + "</p></div>";
    return null;
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

  var NO_ARRIVAL = "no latency samples: no change has arrived";

  LT.latency = function (el, series, thresholdMs, latencyFrom, marks) {
    var s = series || {};
    var title = "Delivery latency per second (ms, from " + (latencyFrom || "sent") + ")";
    if (!count(s.p50)) return noData("latency", el, title, NO_ARRIVAL);
    var data = [s.t || [], s.p50 || [], s.p95 || [], s.p99 || []], ms = legendValue(fixed(1, " ms"));
    return plot("latency", el, {
      title: title,
      _lt: { marks: marks, threshold: thresholdMs },
      scales: { x: { time: true } },
      series: [TIME_SERIES, { label: "p50", stroke: "#1e88e5", width: 1.5, spanGaps: false, value: ms },
               { label: "p95", stroke: "#f57c00", width: 1.5, value: ms },
               { label: "p99", stroke: "#c62828", width: 1.5, value: ms }],
      axes: [TIME_AXIS, { label: "ms" }],
      hooks: { draw: [markHook, function (u) {
        if (u._lt.threshold) hline(u, u._lt.threshold, "y", "#c62828", "threshold " + u._lt.threshold + " ms");
      }] }
    }, data);
  };

  /* Deliveries are writes × listeners: drawn per listener they share the writes' scale and neither
   * hides the other; the legend keeps the total. */
  LT.throughput = function (el, series, marks, listeners) {
    var s = series || {}, n = listeners > 0 ? listeners : 1;
    var title = "Writes and deliveries per listener per second (deliveries ÷ " + n + " listener" +
      (n === 1 ? "" : "s") + ")";
    if (!(s.t || []).length) return noData("throughput", el, title, "no write sent");
    var all = s.deliveries || [];
    var perListener = all.map(function (v) { return missing(v) ? null : v / n; });
    var rate = legendValue(fixed(0, "/s"));
    return plot("throughput", el, {
      title: title,
      _lt: { marks: marks, all: all },
      scales: { x: { time: true } },
      series: [TIME_SERIES, { label: "writes sent/s", stroke: "#8e24aa", width: 1, value: rate },
               { label: "writes acked/s", stroke: "#43a047", width: 1.5, value: rate },
               { label: "deliveries/s per listener", stroke: "#1e88e5", width: 1.5,
                 value: legendValue(function (v, u, i) {
                   return v.toFixed(1) + "/s (all: " + thousands(u._lt.all[i]) + "/s)";
                 }) }],
      axes: [TIME_AXIS, { label: "per second" }],
      hooks: { draw: [markHook] }
    }, [s.t || [], s.writes_sent || [], s.writes_acked || [], perListener]);
  };

  function fitLine(ts, vs, a, b) {
    var n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (var i = 0; i < ts.length; i++) {
      if (ts[i] < a || ts[i] > b || missing(vs[i])) continue;
      var x = ts[i] - a; n++; sx += x; sy += vs[i]; sxx += x * x; sxy += x * vs[i];
    }
    if (n < 2 || n * sxx - sx * sx === 0) return null;
    var slope = (n * sxy - sx * sy) / (n * sxx - sx * sx), icpt = (sy - slope * sx) / n;
    return ts.map(function (t) { return t >= a && t <= b ? icpt + slope * (t - a) : null; });
  }

  function growth(v, baseline) {
    if (!baseline) return "";
    var g = 100 * (v - baseline) / baseline;
    return (g >= 0 ? "+" : "−") + Math.abs(g).toFixed(1) + " % over baseline";
  }

  LT.NO_SERVER = "no server samples: the server is not on this machine (or not started by this load test) " +
    "and there is no stress monitor (--stress)";

  /* Memory from 0, so that 2 MB on 52 MB looks like what it is, and its growth in % over the baseline
   * (the stress verdicts' when there is one, else the first sample) in the title and the legend. */
  LT.server = function (el, server, marks, stress) {
    var s = server || {};
    var t = s.t || [], rss = s.rss_mb || [], cpu = s.cpu || [];
    var title = "Server memory and CPU" + (s.source && s.source !== "none" ? " (" + s.source + ")" : "");
    if (s.source === "none") return noData("server", el, title, LT.NO_SERVER);
    if (!t.length) return noData("server", el, title, "no server sample yet");
    var first = rss[firstIndex(rss)];
    var base = stress && stress.baseline_mb ? { mb: stress.baseline_mb, what: "the stress baseline" } :
      { mb: first, what: "the first sample" };
    var last = rss[lastIndex(rss)];
    if (!missing(last)) {
      title += ": " + last.toFixed(1) + " MB, " + growth(last, base.mb) +
        (missing(base.mb) ? "" : " (" + base.what + ", " + base.mb.toFixed(1) + " MB)");
    }
    var top = [base.mb || 0, (stress && stress.release && stress.release.band_mb) || 0];
    var series = [TIME_SERIES, { label: "server RSS", stroke: "#6d4c41", scale: "mb", width: 1.5,
                                 value: legendValue(function (v, u) { return v.toFixed(1) + " MB (" + growth(v, u._lt.baseline) + ")"; }) },
                  { label: "server CPU", stroke: "#00897b", scale: "pct", width: 1, value: legendValue(fixed(0, " %")) }];
    var data = [t, rss, cpu];
    if (stress && stress.window) {
      var fit = fitLine(t, rss, stress.window[0], stress.window[1]);
      if (fit) {
        series.push({ label: "leak fit (steady part)", stroke: "#c62828", scale: "mb", width: 1, dash: [8, 4],
                      value: legendValue(fixed(1, " MB")) });
        data.push(fit);
      }
    }
    return plot("server", el, {
      title: title,
      _lt: { marks: marks, stress: stress, baseline: base.mb, top: top },
      scales: { x: { time: true },
                mb: { range: function (u, lo, hi) { return [0, 1.1 * Math.max(hi || 0, u._lt.top[0], u._lt.top[1]) || 1]; } },
                pct: { range: function (u, lo, hi) { return [0, Math.max(10, 1.1 * (hi || 0))]; } } },
      series: series,
      axes: [TIME_AXIS, { scale: "mb", label: "MB" }, { scale: "pct", side: 1, label: "CPU %", grid: { show: false } }],
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

  /* Round values (1, 2, 5 × 10^k ms; 1..9 × 10^k on a narrow range) within [lo, hi]. */
  function roundTicks(lo, hi) {
    var out = [];
    [[1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]].some(function (mantissas) {
      out = [];
      for (var k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
        mantissas.forEach(function (m) {
          var v = Number((m * Math.pow(10, k)).toPrecision(2));
          if (v >= lo && v <= hi) out.push(v);
        });
      }
      return out.length >= 3;
    });
    return out;
  }
  function round2(ms) { return String(Number(ms.toPrecision(2))); }   // 2 significant digits, never 1.2e+3
  function msLabel(v) { return v >= 1000 ? String(v / 1000) + " s" : String(v); }
  /* The histogram's x is the bin number (bars of equal width on log-spaced bins); at(ms) is where a
   * latency falls on it: bin i spans [i - 0.5, i + 0.5]. */
  function binScale(edges) {
    var n = edges.length - 1, lo = Math.log10(edges[0]), step = (Math.log10(edges[n]) - lo) / n;
    return { n: n, at: function (ms) { return (Math.log10(ms) - lo) / step - 0.5; } };
  }
  /* Where the threshold marker stands: on its value, or on the edge it lies beyond. */
  function thresholdPlace(bins, ms) {
    var x = bins.at(ms);
    if (x > bins.n - 0.5) return { x: bins.n - 0.5, place: "right edge" };
    if (x < -0.5) return { x: -0.5, place: "left edge" };
    return { x: x, place: "inside" };
  }

  LT.histogram = function (el, hist) {
    var h = hist || {};
    var edges = h.edges_ms || [], counts = h.counts || [], thr = h.threshold_ms;
    var above = missing(thr) || !h.count ? "" : ", " + share(h.above, h.count) + " above " + thr + " ms";
    var title = "Delivery latency histogram: " + thousands(h.count || 0) + " samples" + above +
      (h.negative ? ", " + thousands(h.negative) + " negative not shown" : "");
    ["data-threshold-ms", "data-threshold-place", "data-above"].forEach(function (a) { el.removeAttribute(a); });
    if (!counts.length) {
      return noData("histogram", el, title, h.count ? "all " + thousands(h.count) + " samples are negative " +
        "(the clocks differ): nothing to draw on a log axis" : NO_ARRIVAL);
    }
    var bins = binScale(edges), marker = missing(thr) ? null : thresholdPlace(bins, thr);
    if (marker) {
      el.setAttribute("data-threshold-ms", String(thr));
      el.setAttribute("data-threshold-place", marker.place);
      el.setAttribute("data-above", String(h.above));
    }
    var xs = counts.map(function (c, i) { return i; });
    var ticks = roundTicks(edges[0], edges[bins.n]);
    return plot("histogram", el, {
      title: title,
      _lt: { edges: edges, bins: bins, marker: marker, threshold: thr, ticks: ticks, tickLabels: [],
             count: h.count, summary: h.summary || {} },
      scales: { x: { time: false, range: function (u) { return [-0.5, u._lt.bins.n - 0.5]; } } },
      series: [{ label: "latency", value: function (u, v, sidx, idx) {
                   var e = u._lt.edges;
                   if (idx === null || idx === undefined) {
                     return "p50 " + num(u._lt.summary.p50, 1) + " ms, p99 " + num(u._lt.summary.p99, 1) + " ms";
                   }
                   return round2(e[idx]) + "–" + round2(e[idx + 1]) + " ms";
                 } },
               { label: "arrivals", stroke: "#1e88e5", fill: "rgba(30,136,229,0.35)",
                 paths: uPlot.paths.bars({ size: [0.9, 60] }), points: { show: false },
                 value: function (u, v, sidx, idx) {
                   return idx === null || idx === undefined ? thousands(u._lt.count) + " in all" : thousands(v);
                 } }],
      axes: [{ label: "ms (log scale)",
               splits: function (u) { return u._lt.ticks.map(u._lt.bins.at); },
               values: function (u) { return (u._lt.tickLabels = u._lt.ticks.map(msLabel)); } },
             { label: "arrivals" }],
      hooks: { draw: [function (u) {
        var m = u._lt.marker;
        if (!m) return;
        var px = u.valToPos(m.x, "x", true), ctx = u.ctx, top = u.bbox.top;
        ctx.save();
        ctx.strokeStyle = RED; ctx.lineWidth = 2 * (window.devicePixelRatio || 1);
        ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + u.bbox.height); ctx.stroke();
        ctx.fillStyle = RED; ctx.font = "bold " + 11 * (window.devicePixelRatio || 1) + "px sans-serif";
        // beyond the axis: the marker stands on the edge, its label points past it; near the right
        // edge the label goes to the marker's left, where there is room
        var label = "threshold " + u._lt.threshold + " ms";
        label = m.place === "right edge" ? label + " →" : m.place === "left edge" ? "← " + label : label;
        var right = m.place === "right edge" || (m.place === "inside" && px > u.bbox.left + 0.7 * u.bbox.width);
        ctx.textAlign = right ? "right" : "left";
        ctx.fillText(label, px + (right ? -5 : 5), top + 14);
        ctx.restore();
      }] }
    }, [xs, counts]);
  };

  /* ---- a stepped load (--step-load): report.capacity (loadtest.verdict.display.capacity_view) ---- */
  var KNEE = "#6a1b9a";
  /* writes/s as the phase text has them (loadtest.verdict.display.rate_text): 160, 337.5, 1,000 */
  function rate(v) { return missing(v) ? "–" : thousands(Math.round(v * 10) / 10); }
  function kneeStep(cap) { return missing(cap.knee) ? null : cap.steps[cap.knee]; }
  function brokenStep(cap) { return missing(cap.first_broken) ? null : cap.steps[cap.first_broken]; }
  function whyBroke(b) {
    return b.broke.length ? b.broke[0] + (b.broke.length > 1 ? " (+" + (b.broke.length - 1) + " more)" : "") : "";
  }
  /* The knee (solid) and the first step that broke (dashed), each labelled, on a chart whose x is the
   * offered writes/s; a label that would run past the plot's right edge stands left of its line. */
  function stepMarks(u) {
    var cap = u._lt.cap, knee = kneeStep(cap), b = brokenStep(cap), dpr = window.devicePixelRatio || 1;
    var marks = [];
    if (knee) marks.push({ x: knee.offered_writes_per_s, color: KNEE, dash: [], label: "knee: " + rate(knee.offered_writes_per_s) + " writes/s" });
    if (b) marks.push({ x: b.offered_writes_per_s, color: RED, dash: [5, 4], label: "step " + (b.index + 1) + " broke: " + whyBroke(b) });
    var ctx = u.ctx, top = u.bbox.top, right = u.bbox.left + u.bbox.width;
    u._lt.markers = marks;   // what was drawn where (m.px: canvas pixels), for anyone reading the page's state
    marks.forEach(function (m, row) {
      var px = m.px = u.valToPos(m.x, "x", true);
      ctx.save();
      ctx.strokeStyle = m.color; ctx.lineWidth = 2 * dpr; ctx.setLineDash(m.dash.map(function (d) { return d * dpr; }));
      ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + u.bbox.height); ctx.stroke();
      ctx.fillStyle = m.color; ctx.font = "bold " + 11 * dpr + "px sans-serif";
      var w = ctx.measureText(m.label).width, leftOf = px + 5 * dpr + w > right;
      ctx.textAlign = leftOf ? "right" : "left";
      ctx.fillText(m.label, px + (leftOf ? -5 : 5) * dpr, top + (14 + 14 * row) * dpr);
      ctx.restore();
    });
  }
  /* x: the offered writes/s on a log scale (each step × --step-factor: evenly spaced), a tick at every step */
  function offeredAxis(steps) {
    var xs = steps.map(function (s) { return s.offered_writes_per_s; });
    return {
      xs: xs,
      scale: { time: false, distr: 3, log: 2, range: function (u) { return [xs[0] / 1.3, xs[xs.length - 1] * 1.3]; } },
      axis: { label: "offered writes/s (log scale)", splits: function () { return xs; },
              values: function (u, splits) { return splits.map(rate); } },
      series: { label: "offered", value: legendValue(function (v) { return rate(v) + " writes/s"; }) }
    };
  }
  function column(steps, key, scale) {
    return steps.map(function (s) { return missing(s[key]) ? null : s[key] * (scale || 1); });
  }

  function capacityLatency(el, cap, latencyFrom) {
    var steps = cap.steps, q = "p" + cap.quantile;
    var title = "Delivery latency against offered load (ms, from " + (latencyFrom || "sent") + ")";
    if (!steps.length) return noData("capacity-latency", el, title, "no step of the stepped load ran");
    // p50, p95, p99, and the threshold's own quantile when it is another (--latency-quantile)
    var colors = { p50: "#1e88e5", p95: "#f57c00", p99: "#c62828" }, keys = ["p50", "p95", "p99"];
    if (keys.indexOf(q) < 0) { keys.push(q); colors[q] = "#4e342e"; }
    var ys = keys.map(function (k) { return column(steps, "latency_" + k + "_ms"); });
    if (!count(ys[keys.indexOf(q)])) return noData("capacity-latency", el, title, NO_ARRIVAL);
    var x = offeredAxis(steps), ms = legendValue(fixed(1, " ms"));
    el.setAttribute("data-steps", String(steps.length));
    return plot("capacity-latency", el, {
      title: title,
      _lt: { cap: cap, threshold: cap.threshold_ms, top: 1.4 * cap.threshold_ms },   // the markers' labels above the threshold
      scales: { x: x.scale, y: { range: function (u, lo, hi) { return [0, Math.max(u._lt.top, 1.1 * (hi || 0))]; } } },
      series: [x.series].concat(keys.map(function (k) {
        return { label: k, stroke: colors[k], width: 1.5, points: { show: true, size: 7 }, value: ms };
      })),
      axes: [x.axis, { label: "ms" }],
      hooks: { draw: [function (u) {
        hline(u, u._lt.threshold, "y", RED, "threshold " + u._lt.cap.threshold_ms + " ms (p" + u._lt.cap.quantile + ")");
        stepMarks(u);
      }] }
    }, [x.xs].concat(ys));
  }

  /* The delivery ratio (left, %) and the acknowledged writes against the offered ones (right): where
   * the acknowledged line leaves the offered one, the server (or the generator) no longer keeps up. */
  function capacityDelivery(el, cap) {
    var steps = cap.steps;
    var title = "Delivery ratio and acknowledged writes against offered load";
    if (!steps.length) return noData("capacity-delivery", el, title, "no step of the stepped load ran");
    var x = offeredAxis(steps), ratio = column(steps, "delivery_ratio", 100), rateFmt = legendValue(function (v) { return rate(v) + "/s"; });
    var lowest = Math.min.apply(null, ratio.filter(function (v) { return !missing(v); }).concat([100]));
    return plot("capacity-delivery", el, {
      title: title,
      _lt: { cap: cap, low: Math.max(0, Math.min(90, Math.floor(lowest) - 5)) },
      // headroom above 100 %, where the markers' labels stand clear of a ratio that held
      scales: { x: x.scale, pct: { range: function (u) { return [u._lt.low, 100 + 0.3 * (100 - u._lt.low)]; } },
                wps: { range: function (u, lo, hi) { return [0, 1.1 * (hi || 1)]; } } },
      series: [x.series,
               { label: "delivery ratio", stroke: "#1e88e5", width: 1.5, scale: "pct", points: { show: true, size: 7 },
                 value: legendValue(function (v) { return v.toFixed(v === 100 ? 0 : 3) + " %"; }) },
               { label: "acknowledged writes/s", stroke: "#43a047", width: 2, scale: "wps", points: { show: true, size: 7 },
                 value: rateFmt },
               { label: "offered writes/s", stroke: "#9e9e9e", width: 1, dash: [6, 4], scale: "wps", value: rateFmt }],
      axes: [x.axis, { scale: "pct", label: "delivered %",
                       values: function (u, splits) { return splits.map(function (v) { return v > 100 ? "" : String(v); }); } },
             { scale: "wps", side: 1, label: "writes/s", grid: { show: false } }],
      hooks: { draw: [stepMarks] }
    }, [x.xs, ratio, column(steps, "acked_writes_per_s"), x.xs]);
  }

  var CAPACITY_COLUMNS = [["step", "Step"], ["offered", "Offered writes/s"], ["acked", "Acked writes/s"],
    ["deliveries", "Deliveries/s"], ["listeners", "Listeners"], ["lost", "Lost"], ["latency", null],
    ["rejected", "Rejected"], ["failed", "Failed"], ["disconnects", "Disconnects"], ["server_cpu", "Server CPU"],
    ["generator_cpu", "Generator CPU"], ["held", "Held / why not"]];
  function pct(v) { return missing(v) ? "–" : v.toFixed(0) + " %"; }
  function heldText(s) {
    return s.held ? "held" : "broke: " + s.broke.join("; ") + (s.generator_saturated ? " (generator saturated)" : "");
  }
  function capacityRows(cap) {
    var q = "p" + cap.quantile;
    return cap.steps.map(function (s) {
      var knee = s.index === cap.knee, cells = {
        step: (s.index + 1) + (knee ? " (knee)" : ""), offered: rate(s.offered_writes_per_s), acked: rate(s.acked_writes_per_s),
        deliveries: rate(s.deliveries_per_s), listeners: num(s.listeners), lost: thousands(s.lost),
        latency: num(s["latency_" + q + "_ms"], 1), rejected: thousands(s.rejected), failed: thousands(s.failed),
        disconnects: thousands(s.disconnects), server_cpu: pct(s.server_cpu_pct), generator_cpu: pct(s.generator_cpu_pct),
        held: esc(heldText(s)) };
      return "<tr data-step='" + s.index + "' class='" + (s.held ? "" : "bad") + (knee ? " knee" : "") + "'>" +
        CAPACITY_COLUMNS.map(function (c) { return "<td data-col='" + c[0] + "'>" + cells[c[0]] + "</td>"; }).join("") + "</tr>";
    }).join("");
  }
  /* Whose limit it was, in words, with the generator's figures in the step that broke: a generator's
   * limit is not the server's capacity. */
  function limitText(cap) {
    var b = brokenStep(cap);
    if (!b) return "";   // the figure says so: the load never went past capacity
    var gen = "CPU " + pct(b.generator_cpu_pct) + " of a core, event-loop lag p95 " + num(b.generator_lag_p95_ms, 1) + " ms";
    if (cap.limited_by === "generator") {
      return "The limit is the load generator's, not the server's: the generator was saturated during step " +
        (b.index + 1) + " (" + gen + "), so what broke there says nothing of the server. Run more generator " +
        "processes (--processes N) to find the server's capacity.";
    }
    return "The limit is the server's: during step " + (b.index + 1) + " the load generator was not saturated (" + gen + ").";
  }
  function scheduleText(cap) {
    var sc = cap.schedule || {};
    return "Steps of " + num(sc.every_s) + " s: from " + rate(sc.from_per_writer) + " writes/s per writer, × " +
      num(sc.factor) + " a step, up to " + rate(sc.max_per_writer) + " (" + num(sc.writers) + " writers). A step held when " +
      "nothing it wrote was lost, p" + cap.quantile + " ≤ " + cap.threshold_ms + " ms, no write was rejected or failed, " +
      "no listener disconnected unexpectedly and at least " + Math.round(100 * cap.keep_up) + " % of the offered writes were acknowledged.";
  }

  /* The capacity section, in el (the report's and the live view's): the figure in words, whose limit,
   * the two charts and the step table; nothing without a stepped load. The latency chart's element
   * carries data-knee-offered / data-broken-offered (writes/s) and data-steps. */
  LT.capacity = function (el, cap, latencyFrom) {
    if (!cap) {
      ["capacity-latency", "capacity-delivery"].forEach(function (k) { if (LT.charts[k]) { LT.charts[k].destroy(); delete LT.charts[k]; } });
      el.innerHTML = "";
      return;
    }
    if (!el.querySelector("#chart-capacity-latency")) {   // once: the charts are updated in place after
      el.innerHTML = "<h2 id='capacity-title'>Capacity (stepped load)</h2><p id='capacity-figure'></p>" +
        "<p id='capacity-limit'></p><p class='muted' id='capacity-schedule'></p><div class='charts'>" +
        "<div class='chart' id='chart-capacity-latency'></div><div class='chart' id='chart-capacity-delivery'></div></div>" +
        "<div id='capacity-steps'></div>";
    }
    var knee = kneeStep(cap), b = brokenStep(cap), q = "p" + cap.quantile;
    el.querySelector("#capacity-figure").textContent = cap.figure || "";
    var limit = el.querySelector("#capacity-limit");
    limit.textContent = limitText(cap);
    limit.className = cap.limited_by === "generator" ? "bad" : "";
    limit.setAttribute("data-limited-by", cap.limited_by || "none");
    el.querySelector("#capacity-schedule").textContent = scheduleText(cap);
    var lat = el.querySelector("#chart-capacity-latency");
    lat.setAttribute("data-knee-offered", knee ? String(knee.offered_writes_per_s) : "");
    lat.setAttribute("data-broken-offered", b ? String(b.offered_writes_per_s) : "");
    LT.guarded(lat, function (e) { capacityLatency(e, cap, latencyFrom); });
    LT.guarded(el.querySelector("#chart-capacity-delivery"), function (e) { capacityDelivery(e, cap); });
    el.querySelector("#capacity-steps").innerHTML = "<table class='lt num'><thead><tr>" + CAPACITY_COLUMNS.map(function (c) {
      return "<th>" + (c[1] || q + " ms") + "</th>";
    }).join("") + "</tr></thead><tbody>" + (capacityRows(cap) || "<tr><td colspan=" + CAPACITY_COLUMNS.length +
      ">no step ran</td></tr>") + "</tbody></table>";
  };

  /* A chart that cannot be drawn says so in its place and costs the rest of the page nothing. */
  LT.guarded = function (el, draw) {
    try { draw(el); } catch (e) { el.textContent = "could not draw this chart: " + e; }
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

  /* provisional: expected counts only the writes up to the cutoff; what arrived beyond it is Pending
   * (checked at the next verification), not an excess over Expected. */
  LT.listenerTable = function (el, listeners, provisional) {
    var cols = [["listener", "Listener"], ["expected", provisional ? "Expected so far" : "Expected"],
                ["received", "Received"]];
    if (provisional) cols.push(["pending", "Pending"]);
    cols = cols.concat([["lost", "Lost"], ["duplicated", "Duplicated"], ["out_of_order", "Out of order"],
                        ["p50", "p50 ms"], ["p95", "p95 ms"], ["p99", "p99 ms"]]);
    var rows = (listeners || []).map(function (x) {
      var bad = (x.lost || 0) + (x.duplicated || 0) + (x.out_of_order || 0);
      return "<tr" + (bad ? " class='bad'" : "") + ">" + cols.map(function (c) {
        var k = c[0], v = x[k];
        if (k === "listener") return "<td>" + esc(v) + (x.vanished ? " (vanished)" : "") + "</td>";
        return "<td data-col='" + k + "'>" + (/^p\d/.test(k) ? num(v, 1) : num(v)) + "</td>";
      }).join("") + "</tr>";
    }).join("");
    el.innerHTML = "<table class='lt num'><thead><tr>" + cols.map(function (c) { return "<th>" + c[1] + "</th>"; }).join("") +
      "</tr></thead><tbody>" + (rows || "<tr><td colspan=" + cols.length + ">no listener yet</td></tr>") + "</tbody></table>";
  };

  /* Figures as tables, never as {...} text: an object is a key/value table (nested as deep as it goes);
   * an object or array of like objects of plain values is one grid; epoch seconds are clock times. */
  function plain(v) { return v === null || typeof v !== "object"; }
  function plainValue(k, v) {
    if (missing(v)) return "–";
    if (typeof v === "number" && EPOCH_KEY.test(k) && v > 1e9) return clock(v);
    if (typeof v === "number") return esc(Math.abs(v) >= 1e4 && v === Math.round(v) ? thousands(v) : v);
    return esc(v);
  }
  function gridHtml(keys, rows) {
    var cols = [];
    rows.forEach(function (r) { Object.keys(r).forEach(function (c) { if (cols.indexOf(c) < 0) cols.push(c); }); });
    return "<table class='lt kv grid'><thead><tr><th></th>" + cols.map(function (c) { return "<th>" + esc(c) + "</th>"; }).join("") +
      "</tr></thead><tbody>" + rows.map(function (r, i) {
        return "<tr><th>" + esc(keys[i]) + "</th>" + cols.map(function (c) { return "<td>" + plainValue(c, r[c]) + "</td>"; }).join("") + "</tr>";
      }).join("") + "</tbody></table>";
  }
  function valueHtml(k, v) {
    if (plain(v)) return plainValue(k, v);
    var isArray = Array.isArray(v), keys = Object.keys(v);
    if (!keys.length) return "none";
    var shown = keys.slice(0, isArray ? MAX_ROWS : keys.length), items = shown.map(function (i) { return v[i]; });
    var more = keys.length > shown.length ? "<div class='muted'>… and " + thousands(keys.length - shown.length) + " more</div>" : "";
    if (isArray && items.every(plain)) return items.map(function (x) { return plainValue(k, x); }).join(", ") + more;
    var like = items.every(function (x) { return !plain(x) && !Array.isArray(x) && Object.keys(x).length && Object.keys(x).every(function (c) { return plain(x[c]); }); });
    if (like && items.length > 1) return gridHtml(shown, items) + more;
    return kvHtml(isArray ? items : v, shown) + more;
  }
  function kvHtml(obj, keys) {
    return "<table class='lt kv'><tbody>" + (keys || Object.keys(obj || {})).map(function (k, i) {
      var v = Array.isArray(obj) ? obj[i] : obj[k];
      return "<tr><th>" + esc(k) + "</th><td>" + valueHtml(k, v) + "</td></tr>";
    }).join("") + "</tbody></table>";
  }
  LT.kvTable = function (el, obj) { el.innerHTML = kvHtml(obj || {}); };
  LT.tableHtml = function (obj) { return kvHtml(obj || {}); };

  /* The report's run-health line (loadtest.verdict.display.run_health): what could make the figures
   * below less than they look. */
  LT.healthLine = function (el, h) {
    h = h || {};
    var g = h.generator || {}, w = h.writes || {}, d = h.disconnects || {}, o = h.outage, r = h.reconnects || {};
    var codes = Object.keys(d.by_code || {}).map(function (c) { return "close code " + c + ": " + d.by_code[c]; });
    var items = [
      ["generator", g.busy, "load generator: event-loop lag p95 " + num(g.loop_lag_p95_ms, 1) + " ms (max " +
        num(g.loop_lag_max_ms, 1) + " ms), CPU " + num(g.cpu_pct, 0) + " % of a core" + (g.where ? " (" + g.where + ")" : "")],
      ["writes", w.rejected > 0 || w.unknown > 0, "rejected writes: " + thousands(w.rejected) + " of " + thousands(w.total) +
        (w.unknown ? " (" + thousands(w.unknown) + " with unknown outcome)" : "")],
      ["disconnects", d.total > 0, "unexpected disconnects: " + thousands(d.total) + (codes.length ? " (" + codes.join(", ") + ")" : "")],
      ["outage", !!o, "outages: " + (o ? "server unreachable from " + clock(o.start) + " " +
        (missing(o.seconds) ? "until the end of the run" : "for " + o.seconds.toFixed(1) + " s") + " (" +
        thousands(o.writes_refused) + " writes refused, " + thousands(o.listeners_disconnected) + " listeners disconnected)" : "none")],
      ["reconnects", r.refused > 0, "reconnects: " + thousands(r.forced) + " forced, " + thousands(r.resumes) + " resumed" +
        (r.refused ? ", " + thousands(r.refused) + " refused" : "")]];
    el.innerHTML = "<b>Run health</b>: " + items.map(function (it) {
      return "<span class='health-item" + (it[1] ? " bad" : "") + "' data-item='" + it[0] + "'>" + esc(it[2]) + "</span>";
    }).join(" · ");
  };

  LT.esc = esc;
  LT.num = num;
  LT.clock = clock;
  LT.day = day;
  LT.zone = zone;
  LT.thousands = thousands;
  LT.rate = rate;
  window.LT = LT;
})();
