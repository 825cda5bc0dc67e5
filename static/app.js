// auxcord's only script: theme, small form helpers and the live "listening now" feed.
// Names from Spotify are untrusted: this file only ever writes them with textContent.
"use strict";

(function theme() {
  const root = document.documentElement;
  const saved = localStorage.getItem("auxcord-theme");
  if (saved) root.dataset.theme = saved;
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    button.addEventListener("click", () => {
      const dark = root.dataset.theme === "dark" ||
        (root.dataset.theme === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
      root.dataset.theme = dark ? "light" : "dark";
      localStorage.setItem("auxcord-theme", root.dataset.theme);
    });
  });
})();

document.addEventListener("DOMContentLoaded", () => {
  // Sign-in learns the browser's time zone, so days are the user's own days.
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const link of document.querySelectorAll("a[data-tz]")) {
    const url = new URL(link.href, location.href);
    if (zone) url.searchParams.set("tz", zone);
    link.href = url.toString();
  }
  for (const input of document.querySelectorAll("[data-autosubmit]")) {
    input.addEventListener("change", () => input.form.submit());
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      field.select();
      try { await navigator.clipboard.writeText(field.value); button.textContent = "Copied"; } catch (_) { /* selected; copy by hand */ }
    });
  }
  const feed = document.getElementById("live-feed");
  if (feed) startLiveFeed(feed);
});

function startLiveFeed(feed) {
  const names = JSON.parse(document.getElementById("member-names").textContent);
  const template = document.getElementById("feed-item-template");
  const empty = document.getElementById("feed-empty");
  const group = feed.dataset.group;
  let items = [];

  function since(item) {
    const started = new Date(item.started_at || item.observed_at);
    return "since " + started.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // Album art over https only (or http on loopback, the local simulator's): the same rule as
  // the pages' album_art filter in api/templating.py.
  function albumArt(url) {
    try {
      const parsed = new URL(url || "");
      const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(parsed.hostname);
      return parsed.protocol === "https:" || (parsed.protocol === "http:" && loopback) ? url : null;
    } catch {
      return null;
    }
  }

  function progressOf(item, now) {
    const base = item.progress_ms || 0;
    if (!item.is_playing) return base;
    return Math.min(item.duration_ms || base, base + (now - Date.parse(item.observed_at)));
  }

  function render() {
    const now = Date.now();
    const live = items.filter((item) => !item.expires_at || Date.parse(item.expires_at) > now);
    const nodes = live.map((item) => {
      const node = template.content.firstElementChild.cloneNode(true);
      node.dataset.user = item.user_id;
      const image = node.querySelector("img.art");
      const placeholder = node.querySelector(".art-none");
      const art = albumArt(item.album_image_url);
      if (art) { image.src = art; image.alt = item.album_name || ""; placeholder.remove(); }
      else image.remove();
      const who = node.querySelector(".who a");
      who.textContent = (names[item.user_id] || {}).display_name || item.user_id;
      who.href = "/groups/" + encodeURIComponent(group) + "/members/" + encodeURIComponent(item.user_id);
      if (item.is_playing) node.querySelector(".paused").remove();
      node.querySelector(".track").textContent = item.track_name || "";
      node.querySelector(".artist").textContent =
        (item.artist_name || "") + (item.album_name ? " · " + item.album_name : "");
      const bar = node.querySelector("progress");
      bar.max = item.duration_ms || 1;
      bar.value = progressOf(item, now);
      node.querySelector(".since").textContent = since(item);
      return node;
    });
    feed.replaceChildren(...nodes);
    empty.hidden = nodes.length > 0;
  }

  const source = new EventSource(feed.dataset.live);
  // The server ends the feed when this session no longer signs in a member (removed, signed
  // out everywhere): stop, and show nothing more.
  source.addEventListener("end", () => {
    source.close();
    items = [];
    render();
  });
  source.addEventListener("feed", (event) => {
    items = JSON.parse(event.data);
    render();
    // A counter the browser tests and the latency benchmark read.
    feed.dataset.updates = String(Number(feed.dataset.updates || 0) + 1);
  });
  setInterval(() => {
    const now = Date.now();
    for (const node of feed.children) {
      const item = items.find((candidate) => candidate.user_id === node.dataset.user);
      if (item) node.querySelector("progress").value = progressOf(item, now);
    }
    if (items.some((item) => item.expires_at && Date.parse(item.expires_at) <= now)) render();
  }, 1000);
}

// A history import's page follows its progress until it is done or failed.
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("import-status");
  if (!status) return;
  const words = {
    reading: "Reading the export…", publishing: "Sending plays into the pipeline…",
    storing: "Storing the plays and updating your stats…", done: "Done: your history is in.",
    failed: "The import stopped.",
  };
  async function refresh() {
    const response = await fetch(status.dataset.status, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const job = await response.json();
    status.dataset.stage = job.stage;
    document.getElementById("import-stage").textContent = words[job.stage] || job.stage;
    const bar = document.getElementById("import-progress");
    if (job.total) { bar.max = job.total; bar.value = job.done; } else if (job.stage === "done") { bar.max = 1; bar.value = 1; }
    document.getElementById("import-count").textContent = job.done + (job.total ? " of " + job.total : "") + " rows";
    const error = document.getElementById("import-error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    if (job.report) {
      const report = document.getElementById("import-report");
      report.hidden = false;
      for (const cell of report.querySelectorAll("[data-field]")) {
        const field = cell.dataset.field;
        cell.textContent = field === "days"
          ? (job.report.first_day ? job.report.first_day + " to " + job.report.last_day : "")
          : String(job.report[field]);
      }
      const reasons = document.getElementById("import-reasons");
      const items = [];
      for (const [reason, n] of Object.entries(job.report.skipped)) items.push("skipped, " + reason + ": " + n);
      for (const [reason, n] of Object.entries(job.report.rejected)) items.push("rejected, " + reason + ": " + n);
      reasons.replaceChildren(...items.map((text) => { const li = document.createElement("li"); li.textContent = text; return li; }));
    }
    if (job.stage !== "done" && job.stage !== "failed") setTimeout(refresh, 1000);
  }
  refresh();
});
