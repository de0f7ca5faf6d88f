// Refresh the page content every few seconds without losing filters: fetch the same URL
// (query string included) and swap the <main> element. Pages work without it; a page opts in
// with <main data-refresh="SECONDS">. Nothing refreshes while the user is typing, has
// changed a form, or the tab is hidden, so no edit and no one-time secret is ever wiped.
(function () {
  "use strict";

  var main = document.querySelector("main[data-refresh]");
  if (!main || !window.fetch || !window.DOMParser) {
    return;
  }
  var seconds = parseInt(main.getAttribute("data-refresh"), 10);
  if (!(seconds > 0)) {
    seconds = 15;
  }
  var dirty = false;

  function watch(element) {
    element.addEventListener("input", function () { dirty = true; });
    element.addEventListener("change", function () { dirty = true; });
  }

  function busy() {
    if (dirty || document.hidden) {
      return true;
    }
    var active = document.activeElement;
    return Boolean(active && active !== document.body && active.closest("form"));
  }

  function schedule() {
    window.setTimeout(refresh, seconds * 1000);
  }

  function refresh() {
    if (busy()) {
      schedule();
      return;
    }
    window.fetch(window.location.href, {
      credentials: "same-origin",
      headers: { "Accept": "text/html" },
      cache: "no-store"
    }).then(function (response) {
      if (response.redirected && response.url.indexOf("/dashboard/login") !== -1) {
        window.location.assign(response.url);
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (!html || busy()) {
        return;
      }
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var next = fresh.querySelector("main[data-refresh]");
      if (!next) {
        return;
      }
      main.replaceWith(document.adoptNode(next));
      main = next;
      watch(main);
      document.title = fresh.title;
      document.dispatchEvent(new CustomEvent("fleetplane:refreshed"));
    }).catch(function () {
      // A failed refresh leaves the page as it is; the next one tries again.
    }).then(schedule);
  }

  watch(main);
  schedule();
}());
