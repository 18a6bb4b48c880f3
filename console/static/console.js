// Small behaviours htmx does not cover: charts from pushed data, the new-order notice (sound
// and title), dismissing a confirmation, auto-submitting a select, and live countdowns.
(function () {
  "use strict";
  var charts = {};

  function drawCharts() {
    var node = document.getElementById("chart-data");
    if (!node || typeof Chart === "undefined") return;
    var data = JSON.parse(node.textContent);
    var palette = ["#1f5fa8", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490"];
    var placed = Object.keys(data.placed).map(function (name, i) {
      return { label: name, data: data.placed[name], borderColor: palette[i % palette.length],
               backgroundColor: palette[i % palette.length], tension: 0.2 };
    });
    placed.unshift({ label: "all channels", data: data.placed_total, borderColor: "#14213d",
                     backgroundColor: "#14213d", borderDash: [4, 3] });
    var sets = {
      "chart-placed": { labels: data.labels, datasets: placed },
      "chart-rates": { labels: data.labels, datasets: [
        { label: "stock-out rate %", data: data.stockout, borderColor: "#b91c1c", backgroundColor: "#b91c1c" },
        { label: "on-time rate %", data: data.on_time, borderColor: "#15803d", backgroundColor: "#15803d" }] },
      "chart-preparation": { labels: data.labels, datasets: [
        { label: "minutes", data: data.preparation_minutes, borderColor: "#1f5fa8", backgroundColor: "#1f5fa8" }] }
    };
    Object.keys(sets).forEach(function (id) {
      var canvas = document.getElementById(id);
      if (!canvas) return;
      if (charts[id]) {
        charts[id].data = sets[id];
        charts[id].update("none");
      } else {
        charts[id] = new Chart(canvas, { type: "line", data: sets[id],
          options: { animation: false, responsive: true, maintainAspectRatio: false,
                     scales: { y: { beginAtZero: true } } } });
      }
    });
  }

  function beep() {
    var toggle = document.getElementById("sound");
    if (toggle && !toggle.checked) return;
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.25);
    } catch (e) { /* no audio device: the visual notice stays */ }
  }

  var baseTitle = document.title;
  function flagTitle() {
    document.title = "(new order) " + baseTitle;
    window.setTimeout(function () { document.title = baseTitle; }, 10000);
  }

  function countdowns() {
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var left = Math.round((Date.parse(el.getAttribute("data-deadline")) - Date.now()) / 1000);
      var text = left <= 0 ? "Overdue: being re-sourced" :
        "Accept within " + Math.floor(left / 60) + " min " + String(left % 60).padStart(2, "0") + " s";
      if (el.textContent !== text) el.textContent = text;
      el.classList.toggle("urgent", left < 120);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    countdowns();
    window.setInterval(countdowns, 1000);
    document.querySelectorAll("select[data-autosubmit]").forEach(function (s) {
      s.addEventListener("change", function () { s.form.submit(); });
    });
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target || event.target;
    if (target.id === "charts") drawCharts();
    if (target.id === "arrivals") { beep(); flagTitle(); }
    countdowns();
  });

  // htmx-ext-sse swaps without afterSwap on some versions: listen to its own event too.
  document.addEventListener("htmx:sseMessage", function (event) {
    var target = event.target;
    if (target && target.id === "charts") drawCharts();
    if (target && target.id === "arrivals") { beep(); flagTitle(); }
    countdowns();
  });

  // A problem found in a rules draft: clicking it puts the cursor on its line in the editor.
  document.addEventListener("click", function (event) {
    var item = event.target.closest("li.has-problem[data-line]");
    var editor = document.getElementById("document");
    if (!item || !editor) return;
    var line = parseInt(item.getAttribute("data-line"), 10);
    if (!line) return;
    var lines = editor.value.split("\n");
    var start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
    editor.focus();
    editor.setSelectionRange(start, start + lines[line - 1].length);
    var lineHeight = editor.scrollHeight / Math.max(lines.length, 1);
    editor.scrollTop = Math.max(0, (line - 5) * lineHeight);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-dismiss]");
    if (!button) return;
    var box = document.getElementById(button.getAttribute("data-dismiss"));
    if (box) box.innerHTML = "";
  });
})();
