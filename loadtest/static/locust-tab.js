/* Locust's own page ("/", injected by loadtest/view/web.py): the "Charts" cells of its Verification tab
 * say "/verification"; this makes each one a link to the view. Locust's page is React: the cell's text
 * node stays (emptied) where React keeps it, the link goes beside it, and cells React draws later are
 * linked as they come. */
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
  new MutationObserver(linkCells).observe(document.body, { childList: true, subtree: true, characterData: true });
  linkCells();
})();
