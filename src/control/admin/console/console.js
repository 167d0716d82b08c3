// hipache-tpc web console. Dependency-free; served from the admin listener with a strict
// Content-Security-Policy, so: no inline handlers, no eval, no innerHTML with data (every value from
// the API is inserted as text). The key lives in sessionStorage (this tab only) and travels in the
// Authorization header of each API call, never in a URL or a cookie.
"use strict";
(function () {
  const KEY = "hipache-tpc-admin-key";
  const COLORS = ["#1565c0", "#2e7d32", "#f9a825", "#ef6c00", "#c62828", "#6a1b9a", "#00838f", "#5d4037"];
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const enc = encodeURIComponent;

  // ---- API ---------------------------------------------------------------------------------
  async function api(method, path, form) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = "Bearer " + key;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (form) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      init.body = new URLSearchParams(form).toString();
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      return { status: 0, ok: false, data: { error: "the admin listener did not answer: " + e } };
    }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (r.status === 401 && path !== "/") logout((data && data.error) || "the key was refused");
    return { status: r.status, ok: r.ok, data };
  }
  const errorOf = (r) => (r.data && r.data.error) || ("HTTP " + r.status);

  // ---- Login -------------------------------------------------------------------------------
  async function login(key) {
    sessionStorage.setItem(KEY, key);
    const r = await api("GET", "/");
    if (r.ok) {
      $("login").hidden = true;
      $("app").hidden = false;
      $("tabs").hidden = false;
      $("logout").hidden = false;
      $("login-error").textContent = "";
      showTab("frontends");
      loadFrontends();
      startPolling();
      return;
    }
    sessionStorage.removeItem(KEY);
    $("login-error").textContent = r.status === 401 ? "Wrong key: " + errorOf(r) : errorOf(r);
  }

  function logout(why) {
    sessionStorage.removeItem(KEY);
    stopPolling();
    $("app").hidden = true;
    $("tabs").hidden = true;
    $("logout").hidden = true;
    $("health-pill").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = why || "";
    $("key").value = "";
  }

  // ---- Tabs --------------------------------------------------------------------------------
  function showTab(name) {
    for (const b of document.querySelectorAll(".tab-button")) b.classList.toggle("active", b.dataset.tab === name);
    for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
    if (name === "traffic") drawCharts();
    if (name === "status") loadStatus();
  }

  // ---- Frontends ---------------------------------------------------------------------------
  const page = { cursors: ["0"], next: "0" };
  let searchTimer = null;

  function message(text, ok) {
    const m = $("fe-message");
    m.textContent = text;
    m.className = ok ? "ok" : "error";
  }

  const fmtTime = (unix) => new Date(unix * 1000).toLocaleTimeString();
  const ago = (unix) => {
    const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
    return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
  };

  async function loadFrontends() {
    const cursor = page.cursors[page.cursors.length - 1];
    const q = $("search").value.trim();
    const count = $("page-size").value;
    let path = "/frontends?cursor=" + enc(cursor) + "&count=" + enc(count);
    if (q) path += "&match=" + enc(q);
    const r = await api("GET", path);
    if (!r.ok) { message("Listing failed: " + errorOf(r)); return; }
    page.next = r.data.cursor;
    renderFrontends(r.data.frontends);
    const n = r.data.frontends.length;
    $("page-info").textContent = "page " + page.cursors.length + " · " + n + " frontend" + (n === 1 ? "" : "s") +
      (q ? " matching \u201c" + q + "\u201d" : "") + (page.next === "0" ? " · last page" : "");
    $("prev").disabled = page.cursors.length <= 1;
    $("next").disabled = page.next === "0";
  }

  function backendDetail(b) {
    const ck = b.checker;
    if (b.dead) {
      if (ck && ck.state === "dead") {
        return "dead per the active checker since " + fmtTime(ck.since) + " (last check " + ago(ck.lastCheck) + ")";
      }
      if (ck && ck.state === "watched") return "dead per the active checker of another instance";
      return "dead per passive marks (a proxy saw it fail)" + (b.markedAt ? ", last marked " + ago(b.markedAt) : "");
    }
    if (ck && ck.state === "dead") return "the active checker finds it dead (mark pending)";
    if (ck && ck.state === "alive") return "checked: alive (last check " + ago(ck.lastCheck) + ")";
    if (ck && ck.state === "watched") return "checked by another instance";
    return "";
  }

  function renderFrontends(list) {
    const body = $("fe-body");
    body.replaceChildren();
    if (list.length === 0) {
      const tr = el("tr");
      const td = el("td", "note", page.next === "0" ? "No frontend." : "No match on this page yet: Next continues the search.");
      td.colSpan = 3;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const f of list) {
      const tr = el("tr", "frontend");
      tr.dataset.name = f.name;
      const name = el("td", "name", f.name);
      if (f.identifier !== f.name) name.append(el("span", "ident", "id: " + f.identifier));
      const deadCount = f.backends.filter((b) => b.dead).length;
      if (deadCount) name.append(el("span", "ident error", deadCount + " dead"));
      const bcell = el("td");
      const ul = el("ul", "backends");
      for (const b of f.backends) {
        const li = el("li", "backend" + (b.dead ? " is-dead" : ""));
        li.dataset.url = b.url;
        li.append(el("span", "url", b.url));
        const state = b.dead ? "dead" : (b.checker && b.checker.state === "pending" ? "pending" : "alive");
        li.append(el("span", "badge " + state, state));
        const d = backendDetail(b);
        if (d) li.append(el("span", "detail", d));
        const rm = el("button", "danger remove-backend", "Remove");
        rm.type = "button";
        rm.addEventListener("click", () => removeBackend(f.name, b.url));
        li.append(rm);
        ul.append(li);
      }
      if (f.backendCount > f.backends.length) ul.append(el("li", "note", "… " + (f.backendCount - f.backends.length) + " more"));
      if (f.backends.length === 0) ul.append(el("li", "note", "no backend"));
      bcell.append(ul);
      const add = el("form", "add-backend");
      const input = el("input");
      input.type = "text";
      input.placeholder = "http://host:port (comma-separated for several)";
      input.className = "new-backend";
      const go = el("button", "add-backend-button", "Add backend");
      go.type = "submit";
      add.append(input, go);
      add.addEventListener("submit", (ev) => { ev.preventDefault(); addBackends(f.name, input.value); });
      bcell.append(add);
      const actions = el("td");
      const del = el("button", "danger delete-frontend", "Delete frontend");
      del.type = "button";
      del.addEventListener("click", () => {
        if (del.dataset.armed) { deleteFrontend(f.name); return; }
        del.dataset.armed = "1";
        del.textContent = "Click again to delete";
        setTimeout(() => { delete del.dataset.armed; del.textContent = "Delete frontend"; }, 4000);
      });
      actions.append(del);
      tr.append(name, bcell, actions);
      body.append(tr);
    }
  }

  async function addBackends(name, list) {
    const r = await api("POST", "/frontends/" + enc(name), { backends: list.trim() });
    message(r.ok ? name + ": " + r.data.message : name + ": " + errorOf(r), r.ok);
    if (r.ok) loadFrontends();
  }

  async function removeBackend(name, url) {
    const r = await api("DELETE", "/frontends/" + enc(name) + "/backend?backend=" + enc(url));
    message(r.ok ? name + ": " + r.data.message + " (" + url + ")" : name + ": " + errorOf(r), r.ok);
    if (r.ok) loadFrontends();
  }

  async function deleteFrontend(name) {
    const r = await api("DELETE", "/frontends/" + enc(name));
    message(r.ok ? name + ": " + r.data.message : name + ": " + errorOf(r), r.ok);
    if (r.ok) loadFrontends();
  }

  async function createFrontend() {
    const form = { host: $("new-host").value.trim() };
    const b = $("new-backends").value.trim();
    if (b) form.backends = b;
    const r = await api("POST", "/frontends", form);
    message(r.ok ? form.host + ": " + r.data.message : errorOf(r), r.ok);
    if (r.ok) {
      $("new-host").value = "";
      $("new-backends").value = "";
      loadFrontends();
    }
  }

  // ---- Traffic -----------------------------------------------------------------------------
  const SAMPLES = 60;
  const hist = { t: [], rps: [], classes: { "1xx": [], "2xx": [], "3xx": [], "4xx": [], "5xx": [] }, p50: [], p90: [], p99: [], conns: [] };
  let last = null;
  let timer = null;

  const push = (arr, v) => { arr.push(v); if (arr.length > SAMPLES) arr.shift(); };

  // The upper bound (seconds) below which fraction q of the interval's requests fell.
  function percentile(bounds, counts, q) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (total === 0) return null;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i];
      if (seen >= q * total) return i < bounds.length ? bounds[i] : bounds[bounds.length - 1] * 2;
    }
    return null;
  }

  async function pollMetrics() {
    const r = await api("GET", "/metrics?format=json");
    if (!r.ok || !r.data) return;
    const m = r.data;
    const now = performance.now() / 1000;
    const total = Object.values(m.responses).reduce((a, b) => a + b, 0);
    if (last) {
      const dt = Math.max(0.001, now - last.now);
      push(hist.rps, (total - last.total) / dt);
      for (const k of Object.keys(hist.classes)) push(hist.classes[k], (m.responses[k] - last.m.responses[k]) / dt);
      const delta = m.latency.counts.map((c, i) => c - (last.m.latency.counts[i] || 0));
      const ms = (q) => { const v = percentile(m.latency.bounds, delta, q); return v === null ? null : v * 1000; };
      push(hist.p50, ms(0.5));
      push(hist.p90, ms(0.9));
      push(hist.p99, ms(0.99));
      push(hist.conns, m.workers.map((w) => w.connections));
      push(hist.t, now);
      $("now-rps").textContent = hist.rps[hist.rps.length - 1].toFixed(1) + " req/s now · " + total + " responses in all";
      const p = (v) => (v === null ? "–" : v.toFixed(2));
      $("now-latency").textContent = "p50 " + p(hist.p50[hist.p50.length - 1]) + " · p99 " + p(hist.p99[hist.p99.length - 1]);
      if (!$("tab-traffic").hidden) drawCharts();
    }
    last = { now, total, m };
  }

  async function pollStatus() {
    const r = await api("GET", "/status");
    const pill = $("health-pill");
    if (!r.data || !r.data.status) return null;
    pill.hidden = false;
    pill.textContent = r.data.status === "ok" ? "healthy" : "degraded: " + r.data.problems.length + " problem(s)";
    pill.classList.toggle("bad", r.data.status !== "ok");
    return r.data;
  }

  function startPolling() {
    stopPolling();
    pollMetrics();
    pollStatus();
    timer = setInterval(() => {
      pollMetrics();
      if (!$("tab-status").hidden) loadStatus(); else pollStatus();
    }, 2000);
  }

  function stopPolling() {
    if (timer) clearInterval(timer);
    timer = null;
    last = null;
  }

  function legend(id, names) {
    const l = $(id);
    l.replaceChildren(...names.map((n, i) => el("span", "c" + (i % COLORS.length), n)));
  }

  // A small line chart: series = [[values...], ...] (null = no data), drawn on a canvas.
  function chart(canvas, series, unit) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, left = 48, bottom = 16;
    ctx.clearRect(0, 0, w, h);
    let max = 0;
    for (const s of series) for (const v of s) if (v !== null && v > max) max = v;
    max = max > 0 ? max * 1.15 : 1;
    ctx.strokeStyle = "#d5dbe5";
    ctx.fillStyle = "#556";
    ctx.font = "11px sans-serif";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = Math.round((h - bottom) * (1 - i / 4)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w, y); ctx.stroke();
      const v = (max * i) / 4;
      ctx.fillText((v >= 100 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2)) + unit, 2, Math.max(10, y - 2));
    }
    ctx.fillText("-2 min", left, h - 3);
    ctx.fillText("now", w - 24, h - 3);
    const step = (w - left) / (SAMPLES - 1);
    series.forEach((s, si) => {
      ctx.strokeStyle = COLORS[si % COLORS.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      let pen = false;
      const off = SAMPLES - s.length;
      s.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        const x = left + (off + i) * step, y = (h - bottom) * (1 - v / max);
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
      });
      ctx.stroke();
      // The newest point as a dot, so that a first sample shows too.
      const lastV = s.length ? s[s.length - 1] : null;
      if (lastV !== null) {
        ctx.fillStyle = COLORS[si % COLORS.length];
        ctx.beginPath();
        ctx.arc(left + (SAMPLES - 1) * step, (h - bottom) * (1 - lastV / max), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    });
    canvas.dataset.points = String(series.length ? series[0].length : 0);
  }

  function drawCharts() {
    chart($("chart-rps"), [hist.rps], "");
    legend("legend-rps", ["requests/s"]);
    const classes = Object.keys(hist.classes);
    chart($("chart-classes"), classes.map((k) => hist.classes[k]), "");
    legend("legend-classes", classes);
    chart($("chart-latency"), [hist.p50, hist.p90, hist.p99], "");
    legend("legend-latency", ["p50", "p90", "p99"]);
    const workers = hist.conns.length ? hist.conns[hist.conns.length - 1].length : 0;
    const per = [];
    for (let i = 0; i < workers; i++) per.push(hist.conns.map((c) => (i < c.length ? c[i] : null)));
    chart($("chart-conns"), per, "");
    legend("legend-conns", per.map((_, i) => "worker " + i));
  }

  // ---- Status ------------------------------------------------------------------------------
  async function loadStatus() {
    const s = await pollStatus();
    if (!s) return;
    $("status-summary").textContent = s.status === "ok" ? "All good" : "Degraded";
    $("status-summary").className = s.status === "ok" ? "ok" : "error";
    $("problems").replaceChildren(...s.problems.map((p) => el("li", "problem", p)));
    const rows = [
      ["Version", s.version + " (pid " + s.pid + ")"],
      ["Uptime", s.uptimeSeconds + " s"],
      ["Workers", s.workers.up + " of " + s.workers.configured + " responding"],
      ["Route driver", s.driver],
    ];
    if (s.redis) {
      rows.push(["Redis", s.redis.reachable ? "reachable" : "UNREACHABLE"]);
      rows.push(["Workers connected to Redis", s.redis.workersConnected + " of " + s.workers.configured]);
      rows.push(["Admin connection to Redis", s.redis.adminConnected ? "up" : "down"]);
    }
    const hc = s.healthcheck || {};
    if (hc.enabled) {
      rows.push(["Health checker", hc.owner]);
      rows.push(["Dead channel subscription", hc.subscribed ? "subscribed" : "NOT subscribed"]);
      rows.push(["Backends checked here", hc.checking + " (" + hc.dead + " dead), " + hc.watching + " watched"]);
    } else {
      rows.push(["Health checker", "off (dead marks are the proxies' passive marks)"]);
    }
    $("status-body").replaceChildren(...rows.map(([k, v]) => {
      const tr = el("tr");
      tr.append(el("td", null, k), el("td", null, v));
      return tr;
    }));
  }

  // ---- Wiring ------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("key").value); });
    $("logout").addEventListener("click", () => logout(""));
    for (const b of document.querySelectorAll(".tab-button")) b.addEventListener("click", () => showTab(b.dataset.tab));
    $("search").addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { page.cursors = ["0"]; loadFrontends(); }, 250);
    });
    $("page-size").addEventListener("change", () => { page.cursors = ["0"]; loadFrontends(); });
    $("next").addEventListener("click", () => { if (page.next !== "0") { page.cursors.push(page.next); loadFrontends(); } });
    $("prev").addEventListener("click", () => { if (page.cursors.length > 1) { page.cursors.pop(); loadFrontends(); } });
    $("refresh").addEventListener("click", () => loadFrontends());
    $("create-form").addEventListener("submit", (ev) => { ev.preventDefault(); createFrontend(); });
    const key = sessionStorage.getItem(KEY);
    if (key !== null) login(key);
  });
})();
