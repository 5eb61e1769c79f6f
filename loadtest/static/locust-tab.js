/* Locust's own page ("/", injected by loadtest/view/web.py):
 * - the "Charts" cells of its Verification tab say "/verification"; this makes each one a link to the view.
 *   Locust's page is React: the cell's text node stays (emptied) where React keeps it, the link goes beside
 *   it, and cells React draws later are linked as they come;
 * - its start form lists the load test's options under "Custom parameters" in one alphabetical run; this
 *   groups them as `python3 -m loadtest --help` does (window.LT_OPTION_GROUPS, from loadtest.options.GROUPS),
 *   a heading above each group. Their list is a flex column: the fields get a CSS order (React's nodes are
 *   never moved) and the headings are elements of our own among them. */
(function () {
  "use strict";
  var VIEW = "/verification";
  function linkCells() {
    var walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), found = [], node;
    while ((node = walk.nextNode())) {
      if (node.nodeValue.trim() === VIEW && !node.parentNode.closest("a")) found.push(node);
    }
    found.forEach(function (text) {
      var a = document.createElement("a");
      a.className = "lt-view-link";
      a.href = VIEW;
      a.textContent = VIEW;
      text.nodeValue = "";
      text.parentNode.insertBefore(a, text.nextSibling);
    });
  }
  function key(name) { return String(name).replace(/[_-]/g, "").toLowerCase(); }
  var GROUPS = window.LT_OPTION_GROUPS || [], where = {};
  GROUPS.forEach(function (g, gi) {
    g.options.forEach(function (dest, oi) { where[key(dest)] = [gi, oi]; });
  });
  function groupForm() {
    var fields = [].slice.call(document.querySelectorAll("form [name]")).filter(function (el) {
      return where[key(el.name)] !== undefined;
    });
    if (fields.length < 2) return;
    // the list: the nearest ancestor of the first field that holds the others too
    var list = fields[0].parentElement;
    while (list && !fields.every(function (f) { return list.contains(f); })) list = list.parentElement;
    if (!list || list.getAttribute("data-lt-grouped") === String(fields.length)) return;
    var present = {};
    fields.forEach(function (f) {
      var row = f;
      while (row.parentElement !== list) row = row.parentElement;
      var at = where[key(f.name)];
      row.style.order = String(at[0] * 1000 + at[1] + 1);
      present[at[0]] = true;
    });
    GROUPS.forEach(function (g, gi) {
      if (!present[gi] || list.querySelector(".lt-form-group[data-group='" + gi + "']")) return;
      var h = document.createElement("div");
      h.className = "lt-form-group";
      h.setAttribute("data-group", String(gi));
      h.textContent = g.title;
      h.style.order = String(gi * 1000);
      h.style.fontWeight = "bold";
      h.style.marginTop = gi ? "12px" : "0";
      list.appendChild(h);
    });
    list.setAttribute("data-lt-grouped", String(fields.length));
  }
  function onChange() { linkCells(); groupForm(); }
  new MutationObserver(onChange).observe(document.body, { childList: true, subtree: true, characterData: true });
  onChange();
})();
