// The djqueue overview refreshes itself: every few seconds it fetches the page again and swaps
// in its live part (figures, charts, workers), without reloading the page. It pauses while the
// tab is hidden or the box is unticked, and says so when a refresh fails (and tries again).
(function () {
  "use strict";
  var live = document.getElementById("djqueue-live");
  if (!live) {
    return;
  }
  var every = parseInt(live.getAttribute("data-refresh"), 10) * 1000;
  if (!every) {
    return;  // ?refresh=0
  }
  var toggle = document.getElementById("djqueue-auto-refresh");
  var status = document.getElementById("djqueue-refresh-status");

  function schedule() {
    window.setTimeout(refresh, every);
  }

  function refresh() {
    if (document.hidden || (toggle && !toggle.checked)) {
      schedule();
      return;
    }
    window.fetch(window.location.href, {credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.getElementById("djqueue-live");
        if (!fresh) {
          throw new Error("the page came back without figures (logged out?)");
        }
        live.innerHTML = fresh.innerHTML;
        live.setAttribute("data-refreshes", String((parseInt(live.getAttribute("data-refreshes"), 10) || 0) + 1));
        status.textContent = "";
      })
      .catch(function (error) {
        status.textContent = "— refresh failed (" + error.message + "); trying again.";
      })
      .then(schedule);
  }

  schedule();
}());
