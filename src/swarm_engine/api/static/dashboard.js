/* swarm-engine dashboard: the few things htmx does not do by itself. */
(function () {
  "use strict";
  // Log events carry JSON ({"text": ...}); add the text as a text node (never as HTML).
  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    var log = evt.target;
    if (!log || log.id !== "log") return;
    evt.preventDefault();
    var message = evt.detail;
    var data = {};
    try { data = JSON.parse(message.data); } catch (e) { data = {text: String(message.data)}; }
    var line;
    if (message.type === "log") {
      line = data.text || "";
    } else if (message.type === "end") {
      line = "\n-- ticket " + data.status + (data.error ? ": " + data.error : "") + " --\n";
      log.dataset.ended = data.status || "";
    } else {
      line = "\n-- log stream error: " + (data.message || "") + " --\n";
    }
    var follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(document.createTextNode(line));
    if (follow) log.scrollTop = log.scrollHeight;
  });
  // Polling replaces the ticket rows: keep the boxes the user checked.
  var checked = [];
  document.addEventListener("htmx:beforeSwap", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "rows") {
      checked = Array.prototype.map.call(
        evt.detail.target.querySelectorAll("input[name=id]:checked"), function (b) { return b.value; });
    }
  });
  document.addEventListener("htmx:afterSwap", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "rows") {
      checked.forEach(function (id) {
        var box = evt.detail.target.querySelector("input[name=id][value='" + id + "']");
        if (box && !box.disabled) box.checked = true;
      });
    }
  });
})();
