// Feedplane live dashboard: renders the snapshots of GET /dashboard/feed (SSE, one a second) and sends
// subscribe/unsubscribe to the control API. Plain browser JS, no build step; charts with the vendored uPlot.
// The pasted token lives in this page's memory only (never stored): ?access_token= on the feed (an EventSource
// cannot send headers), Authorization: Bearer on the control API.
"use strict";

(function () {
  const HISTORY_S = 120; // seconds of chart history
  const MAX_SERIES = 8; // topics per chart (the busiest)
  const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0550ae", "#57606a"];
  const KIND_OF_CHANNEL = { kline: "klines", trade: "trades", ticker: "ticker", bookticker: "bookticker",
    depth: "depth", order: "orders", position: "positions", balance: "balances" };
  const STATE_ICONS = { active: "\u2714", pending: "\u25F7", failed: "\u2716", stale: "\u26A0" };
  const CONN_CLASSES = { open: "ok", connecting: "warn", login: "warn", subscribing: "warn", backoff: "bad",
    stopping: "warn" };

  const secured = document.querySelector('meta[name="feedplane-auth"]').content === "secured";
  const $ = (id) => document.getElementById(id);
  let token = "";
  let source = null;
  const history = { t: [], rate: new Map(), lat: new Map() }; // topic -> array aligned with t
  const latFrom = new Map(); // topic -> "exchange" | "worker"
  const charts = { rate: null, lat: null };

  // -- helpers ---------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key === "title" || key === "aria-label") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function badge(cls, icon, text) {
    return el("span", { class: "badge " + cls }, el("span", { "aria-hidden": "true", text: icon }), text);
  }

  function age(now, then) {
    if (typeof then !== "number") return "\u2014";
    const s = Math.max(0, (now - then) / 1000);
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return (s / 3600).toFixed(1) + " h";
  }

  function fmtNum(value, digits) {
    return typeof value === "number" ? value.toLocaleString(undefined, { maximumFractionDigits: digits }) : "\u2014";
  }

  function setFeedState(cls, icon, text) {
    const node = $("feed-state");
    node.className = "badge " + cls;
    node.replaceChildren(el("span", { "aria-hidden": "true", text: icon }), " " + text);
  }

  function replaceRows(body, rows, emptyText, columns) {
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: columns, class: "muted", text: emptyText }))]));
  }

  // -- rendering -------------------------------------------------------------------------------------
  function subscriptionState(sub) {
    if (sub.state === "active" && sub.stale) return badge("warn", STATE_ICONS.stale, "active, stale");
    const cls = { active: "ok", pending: "warn", failed: "bad" }[sub.state] || "info";
    return badge(cls, STATE_ICONS[sub.state] || "?", sub.state || "unknown");
  }

  function renderSubscriptions(snap) {
    const now = snap.server_time;
    const rows = snap.subscriptions.map((sub) => {
      const latency = typeof sub.latency_ms === "number"
        ? fmtNum(sub.latency_ms, 1) + " ms" + (sub.latency_from === "worker" ? " \u2020" : "") : "\u2014";
      const button = el("button", { class: "small", type: "button", text: "Unsubscribe",
        "aria-label": "Unsubscribe " + sub.topic });
      button.addEventListener("click", () => unsubscribeTopic(sub.topic));
      return el("tr", { "data-topic": sub.topic, "data-state": sub.state },
        el("td", { class: "topic", text: sub.topic }),
        el("td", { class: "state" }, subscriptionState(sub)),
        el("td", { class: "num events", text: fmtNum(sub.events, 0) }),
        el("td", { class: "num rate", text: fmtNum(sub.rate, 1) }),
        el("td", { class: "num", text: latency }),
        el("td", { class: "num", text: age(now, sub.last_event_at) }),
        el("td", { class: "err", text: sub.error || "" }),
        el("td", {}, button));
    });
    $("subs-count").textContent = "(" + snap.subscriptions.length + ")";
    replaceRows($("subs-body"), rows, "No subscriptions yet: use the form above.", 8);
  }

  function renderConnections(snap) {
    const now = snap.server_time;
    const rows = snap.connections.map((conn) => {
      const reasons = Object.entries(conn.reasons || {}).map(([k, v]) => k + " \u00d7" + v).join(", ");
      const cls = CONN_CLASSES[conn.state] || "info";
      const icon = cls === "ok" ? "\u25CF" : cls === "bad" ? "\u21BB" : "\u25D4";
      const topics = typeof conn.topics === "number" ? conn.topics : (conn.topics || []).length;
      return el("tr", { "data-conn": conn.id },
        el("td", { text: conn.exchange || "" }),
        el("td", { text: conn.id }),
        el("td", { class: "state" }, badge(cls, icon, conn.state || "unknown")),
        el("td", { class: "num reconnects", text: String(conn.reconnects || 0) + (reasons ? " (" + reasons + ")" : "") }),
        el("td", { class: "num", text: age(now, conn.last_message_at) }),
        el("td", { class: "num", text: String(topics) }),
        el("td", { text: (conn.lease && conn.lease.owner) || conn.worker || "" }),
        el("td", { class: "err", text: conn.last_error || "" }));
    });
    replaceRows($("conns-body"), rows, "No connection open.", 8);
  }

  function renderWorkers(snap) {
    const now = snap.server_time;
    const rows = snap.workers.map((w) => el("tr", { "data-worker": w.id },
      el("td", {}, w.alive ? badge("ok", "\u25CF", "alive") : badge("bad", "\u2716", "silent"), " " + w.id),
      el("td", { text: w.host || "" }),
      el("td", { class: "num", text: age(now, w.heartbeat_at) }),
      el("td", { class: "num", text: String((w.connections || []).length) })));
    replaceRows($("workers-body"), rows, "No worker has reported.", 4);
  }

  function renderLog(snap) {
    const totals = Object.entries(snap.gaps || {}).map(([k, v]) => k + " " + v).join(", ");
    $("gap-totals").textContent = "Gaps announced since start, by reason: " + (totals || "none");
    const items = (snap.log || []).map((item) => {
      const when = new Date(item.at);
      const kind = item.kind === "reconnect" ? badge("warn", "\u21BB", "reconnect") : badge("bad", "\u26A0", "gap");
      const text = " " + item.reason + (item.count > 1 ? " \u00d7" + item.count : "") + " \u2014 " + item.source
        + (item.exchange ? " (" + item.exchange + ")" : "") + (item.detail ? ": " + item.detail : "");
      return el("li", { "data-kind": item.kind, "data-reason": item.reason },
        el("time", { dateTime: when.toISOString(), text: when.toLocaleTimeString() }), kind, text);
    });
    $("log").replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "Nothing yet." })]));
  }

  // -- charts ----------------------------------------------------------------------------------------
  function record(snap) {
    const t = snap.server_time / 1000;
    history.t.push(t);
    const seen = new Set();
    for (const sub of snap.subscriptions) {
      seen.add(sub.topic);
      for (const [name, value] of [["rate", sub.rate], ["lat", sub.latency_ms]]) {
        const map = history[name];
        if (!map.has(sub.topic)) map.set(sub.topic, new Array(history.t.length - 1).fill(null));
        map.get(sub.topic).push(typeof value === "number" ? value : null);
      }
      if (sub.latency_from) latFrom.set(sub.topic, sub.latency_from);
    }
    for (const map of [history.rate, history.lat]) {
      for (const [topic, values] of map) {
        if (!seen.has(topic)) values.push(null);
        if (values.every((v) => v === null)) map.delete(topic);
      }
    }
    while (history.t.length && history.t[0] < t - HISTORY_S) {
      history.t.shift();
      for (const map of [history.rate, history.lat]) for (const values of map.values()) values.shift();
    }
  }

  function busiest() {
    const last = (values) => values.reduce((acc, v) => (v === null ? acc : v), 0);
    return [...history.rate.keys()].sort((a, b) => last(history.rate.get(b)) - last(history.rate.get(a)))
      .slice(0, MAX_SERIES).sort();
  }

  function drawChart(name, topics, label) {
    const target = $("chart-" + name);
    const width = Math.max(240, target.clientWidth - 2);
    const data = [history.t, ...topics.map((topic) => history[name].get(topic) || history.t.map(() => null))];
    const key = topics.join("|");
    let chart = charts[name];
    if (!chart || chart.key !== key) {
      if (chart) chart.plot.destroy();
      const series = [{}, ...topics.map((topic, i) => ({ label: label(topic), stroke: COLORS[i % COLORS.length],
        width: 1.5, spanGaps: false }))];
      const plot = new uPlot({ width, height: 180, series, scales: { x: { time: true } },
        axes: [{}, { size: 50 }], legend: { live: false } }, data, target);
      charts[name] = chart = { plot, key };
    } else {
      chart.plot.setData(data);
    }
    if (Math.abs(chart.plot.width - width) > 4) chart.plot.setSize({ width, height: 180 });
  }

  function renderCharts() {
    if (typeof uPlot === "undefined" || history.t.length === 0) return;
    const topics = busiest();
    drawChart("rate", topics, (topic) => topic);
    drawChart("lat", topics, (topic) => topic + (latFrom.get(topic) === "worker" ? " \u2020" : ""));
    const fromWorker = topics.some((topic) => latFrom.get(topic) === "worker");
    $("lat-note").textContent = fromWorker
      ? "(\u2020 exchange clock not comparable, e.g. replayed recordings: worker receive \u2192 Redis)" : "";
  }

  // -- the feed --------------------------------------------------------------------------------------
  function render(snap) {
    if (snap.error) {
      setFeedState("bad", "\u2716", "server: " + snap.error);
      return;
    }
    setFeedState("ok", "\u25CF", "live");
    $("server-time").textContent = "server time " + new Date(snap.server_time).toLocaleTimeString();
    $("paused").hidden = !snap.paused;
    renderSubscriptions(snap);
    renderConnections(snap);
    renderWorkers(snap);
    renderLog(snap);
    record(snap);
    renderCharts();
  }

  function connect() {
    if (source) source.close();
    if (secured && !token) {
      setFeedState("warn", "\u25EF", "token needed");
      $("auth-note").textContent = "This server has tokens on: paste a read or control token to see it live.";
      return;
    }
    $("auth-note").textContent = secured ? "" : "Open mode: this server has no tokens (loopback).";
    const url = "/dashboard/feed" + (token ? "?access_token=" + encodeURIComponent(token) : "");
    setFeedState("warn", "\u25D4", "connecting");
    source = new EventSource(url);
    source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
    source.addEventListener("bye", () => setFeedState("warn", "\u25D4", "server restarting"));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        setFeedState("bad", "\u2716", "feed refused");
        $("auth-note").textContent = "The feed was refused: check the token (read scope) or wait a minute "
          + "(new streams per minute are limited), then Connect again.";
        $("auth-note").className = "bad";
      } else {
        setFeedState("warn", "\u21BB", "reconnecting");
      }
    });
  }

  // -- control API -----------------------------------------------------------------------------------
  async function control(kind, action, body) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const wait = action === "subscribe" ? "?wait=5" : "";
    const out = $("sub-result");
    out.className = "";
    out.textContent = action + " \u2026";
    try {
      const response = await fetch("/" + kind + "/" + action + wait, { method: "POST", headers, body: JSON.stringify(body) });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        out.className = "bad";
        out.textContent = "\u2716 " + response.status + " " + ((answer.error && answer.error.message) || response.statusText);
        return;
      }
      const states = answer.subscriptions || [];
      const detail = Array.isArray(states) ? states.map((s) => (s.topic ? s.topic + " " + s.state : String(s))).join(", ") : "";
      const summary = ["added", "already", "removed", "not_subscribed"]
        .filter((k) => Array.isArray(answer[k]) && answer[k].length).map((k) => k + ": " + answer[k].join(", ")).join("; ");
      out.className = "ok";
      out.textContent = "\u2714 " + action + " " + response.status + (summary ? " \u2014 " + summary : "") + (detail ? " \u2014 " + detail : "");
    } catch (err) {
      out.className = "bad";
      out.textContent = "\u2716 " + action + " failed: " + err;
    }
  }

  function formBody() {
    const kind = $("sub-kind").value;
    const body = { exchange: $("sub-exchange").value, symbol: $("sub-symbol").value.trim() };
    if (kind === "klines") body.tfs = $("sub-tfs").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (kind === "depth") body.levels = Number($("sub-levels").value);
    return [kind, body];
  }

  function unsubscribeTopic(topic) {
    const [exchange, channel, symbol, timeframe] = topic.split(":");
    const kind = KIND_OF_CHANNEL[channel];
    if (!kind) return;
    const body = ["orders", "positions", "balances"].includes(kind) ? { exchange, account: symbol } : { exchange, symbol };
    if (timeframe) body.tfs = [timeframe];
    control(kind, "unsubscribe", body);
  }

  function init() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token").value.trim();
      $("auth-note").className = "muted";
      connect();
    });
    $("sub-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const [kind, body] = formBody();
      control(kind, "subscribe", body);
    });
    $("sub-remove").addEventListener("click", () => {
      const [kind, body] = formBody();
      if (kind === "depth") delete body.levels;
      control(kind, "unsubscribe", body);
    });
    $("sub-kind").addEventListener("change", () => {
      $("tf-label").hidden = $("sub-kind").value !== "klines";
      $("levels-label").hidden = $("sub-kind").value !== "depth";
    });
    window.addEventListener("resize", renderCharts);
    connect();
  }

  init();
})();
