// concierge console: countdowns and the live timeline. The pages work without it.
"use strict";

function humanize(ms) {
  const s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  if (d > 0) return d + "d " + h + "h " + pad(m) + "m";
  if (h > 0) return h + "h " + pad(m) + "m " + pad(sec) + "s";
  return m + "m " + pad(sec) + "s";
}

function tickCountdowns() {
  const now = Date.now();
  document.querySelectorAll(".countdown[data-deadline]").forEach((el) => {
    const deadline = Date.parse(el.dataset.deadline);
    if (isNaN(deadline)) return;
    const left = deadline - now;
    el.textContent = left >= 0 ? humanize(left) + " left" : "overdue by " + humanize(left);
    const row = el.closest("tr");
    const urgent = left < 2 * 3600 * 1000;
    el.classList.toggle("urgent", urgent);
    if (row) {
      row.classList.toggle("urgent", urgent);
      row.classList.toggle("overdue", left < 0);
    }
  });
}

// The live rows. A refused stream (429/503: the server bounds live streams) or an ended
// one is not retried by EventSource itself: reconnect later, from the last row seen,
// waiting longer each time (10 s doubling to 5 min) so a busy server is not hammered.
function liveTimeline() {
  const table = document.querySelector("table#timeline[data-live]");
  if (!table || !window.EventSource) return;
  const body = table.querySelector("tbody");
  const dot = document.querySelector(".live-dot");
  let url = table.dataset.live;
  let wait = 10000;
  const connect = () => {
    const source = new EventSource(url);
    source.onopen = () => { wait = 10000; if (dot) dot.classList.add("on"); };
    source.onerror = () => {
      if (dot) dot.classList.remove("on");
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connect, wait);
        wait = Math.min(wait * 2, 300000);
      }
    };
    source.addEventListener("record", (e) => {
      if (e.lastEventId) url = url.replace(/after=\d+/, "after=" + e.lastEventId);
      const empty = body.querySelector("td.empty");
      if (empty) empty.closest("tr").remove();
      const holder = document.createElement("tbody");
      holder.innerHTML = e.data; // server-rendered, escaped row
      const row = holder.firstElementChild;
      if (!row || (row.id && document.getElementById(row.id))) return;
      row.classList.add("fresh");
      body.insertBefore(row, body.firstChild);
    });
  };
  connect();
}

// The deadlines board re-reads itself every 30 s (same page, same session), so new
// inquiries and answered guests show up without a reload.
function liveBoard() {
  if (!document.querySelector("table#inquiries")) return;
  setInterval(async () => {
    try {
      const resp = await fetch(location.pathname, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!resp.ok || resp.redirected) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = doc.querySelector("main");
      if (fresh && fresh.querySelector("table#inquiries")) {
        document.querySelector("main").replaceWith(fresh);
        tickCountdowns();
      }
    } catch (_) { /* offline for a moment: try again next time */ }
  }, 30000);
}

document.addEventListener("DOMContentLoaded", () => {
  tickCountdowns();
  setInterval(tickCountdowns, 1000);
  liveTimeline();
  liveBoard();
});
