// shelfrank dashboard: fills the static page shells from the JSON API (issue 18).
//
// One plain script, no build step, no framework. Charts are uPlot (static/vendor/).
// Rules kept throughout: every piece of data reaches the DOM through createElement and
// textContent (never innerHTML or the like), no inline styles or handlers (the server's
// Content-Security-Policy forbids them), every API call is same-origin with the session
// cookie, POSTs carry the CSRF double-submit header, and a 401 goes to the login page.
"use strict";

(() => {
  const PAGE = document.body.dataset.page || "";
  const CSRF_COOKIE = "shelfrank_csrf";
  const REFRESH_MS = 10_000;
  const EVENT_TYPES = ["view", "add_to_cart", "purchase", "search", "dismiss"];
  const EVENT_LABELS = {
    view: "view",
    add_to_cart: "add to cart",
    purchase: "purchase",
    search: "search",
    dismiss: "dismiss",
  };
  const REASON_LABELS = {
    personalized: "personalized for this shopper",
    because_history: "because of the shopper's history",
    similar_item: "similar to the item",
    popular: "popular",
    exploration: "exploration",
    new_item: "new item",
  };
  // Okabe-Ito colours (safe for colour blindness) and line styles, so series are told
  // apart by line style and legend text as well as by colour: `dash` is the canvas
  // pattern, `css` the legend marker's border style, `name` the words in the summaries.
  const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
  const LINE_STYLES = [
    { dash: [], css: "solid", name: "solid line" },
    { dash: [10, 5], css: "dashed", name: "dashed line" },
    { dash: [2, 4], css: "dotted", name: "dotted line" },
    { dash: [14, 4, 3, 4], css: "double", name: "dash-dot line" },
    { dash: [6, 3], css: "dashed", name: "short-dashed line" },
    { dash: [1, 3], css: "dotted", name: "fine-dotted line" },
    { dash: [18, 6], css: "dashed", name: "long-dashed line" },
  ];
  const lineStyle = (index) => LINE_STYLES[index % LINE_STYLES.length];
  const DAY_S = 86_400;

  // ------------------------------------------------------------------ errors and fetch

  class ApiError extends Error {
    constructor(message, status, code) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.code = code || "";
    }
  }

  // Thrown after the browser was sent to the login page: nothing more to show.
  class Redirecting extends Error {}

  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const index = part.indexOf("=");
      if (index < 0) continue;
      if (part.slice(0, index).trim() === name) {
        try {
          return decodeURIComponent(part.slice(index + 1).trim());
        } catch {
          return part.slice(index + 1).trim();
        }
      }
    }
    return "";
  }

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(next));
  }

  async function api(path, options = {}) {
    const method = options.method || "GET";
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRF-Token"] = cookie(CSRF_COOKIE);
      init.body = JSON.stringify(options.body === undefined ? {} : options.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(`could not reach the server (${error.message})`, 0, "UNAVAILABLE");
    }
    if (response.status === 401) {
      toLogin();
      throw new Redirecting("signing in");
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && typeof data === "object" ? data.error : null;
      const message =
        error && error.message
          ? String(error.message)
          : `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
      throw new ApiError(message, response.status, error && error.code);
    }
    if (data === null) throw new ApiError("the server sent no JSON", response.status, "INTERNAL");
    return data;
  }

  // ------------------------------------------------------------------ DOM helpers

  // createElement with attributes and children; strings become text nodes. Handler
  // attributes are refused: listeners are added with addEventListener.
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    if (attributes) {
      for (const [key, value] of Object.entries(attributes)) {
        if (value === null || value === undefined || value === false) continue;
        if (key.toLowerCase().startsWith("on")) throw new Error(`no handler attributes (${key})`);
        if (key === "text") node.textContent = String(value);
        else if (key === "class") node.className = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function $(id) {
    return document.getElementById(id);
  }

  function fill(target, ...children) {
    const node = typeof target === "string" ? $(target) : target;
    if (!node) return null;
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
    return node;
  }

  function setStatus(text, kind) {
    const node = $("status");
    if (!node) return;
    node.classList.toggle("error", kind === "error");
    node.textContent = text;
  }

  function errorText(error) {
    if (error instanceof ApiError) {
      return error.code ? `${error.message} (${error.code})` : error.message;
    }
    return error && error.message ? error.message : String(error);
  }

  function showError(error, where) {
    if (error instanceof Redirecting) return;
    const text = "Error: " + errorText(error);
    setStatus(text, "error");
    if (where) fill(where, el("p", { class: "message error", text }));
  }

  function empty(text = "no data yet") {
    return el("p", { class: "empty", text });
  }

  function setTitle(text) {
    document.title = `${text} · shelfrank`;
  }

  // The id after a path prefix such as "/users/", URL-decoded (ids may contain any
  // character, "/" included as %2F).
  function idFromPath(prefix) {
    const path = location.pathname;
    if (!path.startsWith(prefix)) return "";
    return decodeURIComponent(path.slice(prefix.length));
  }

  const userHref = (id) => "/users/" + encodeURIComponent(id);
  const itemHref = (id) => "/items/" + encodeURIComponent(id);
  const itemLink = (id) => el("a", { href: itemHref(id) }, String(id));

  // A table: columns [{label, num}], rows [{cells: [...], attributes}], the first cell
  // of a row is its header cell when rowHeader is set.
  function table({ caption, columns, rows, rowHeader = false, className }) {
    const head = el(
      "thead",
      null,
      el("tr", null, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null }, c.label)))
    );
    const body = el(
      "tbody",
      null,
      rows.map((row) =>
        el(
          "tr",
          row.attributes || null,
          row.cells.map((cell, index) => {
            const header = rowHeader && index === 0;
            const column = columns[index] || {};
            const klass = column.num ? "num" : column.id ? "id" : null;
            return el(header ? "th" : "td", header ? { scope: "row", class: klass } : { class: klass }, cell);
          })
        )
      )
    );
    return el("div", { class: "table-wrap" }, el("table", { class: className || null }, el("caption", null, caption), head, body));
  }

  function facts(pairs) {
    return pairs.flatMap(([term, value]) => [el("dt", null, term), el("dd", null, value)]);
  }

  function tokenList(tokens, none) {
    if (!tokens || tokens.length === 0) return empty(none);
    return el("ul", { class: "tokens" }, tokens.map((t) => el("li", null, String(t))));
  }

  // ------------------------------------------------------------------ formatting

  const numberFormat = new Intl.NumberFormat("en-US");
  const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

  function fmtInt(value) {
    return isNumber(value) ? numberFormat.format(value) : "–";
  }

  function fmtNum(value, digits = 3) {
    if (!isNumber(value)) return value === null || value === undefined ? "–" : String(value);
    if (Number.isInteger(value)) return numberFormat.format(value);
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)) return value.toExponential(2);
    return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  function fmtSigned(value, digits = 3) {
    if (!isNumber(value)) return "–";
    return (value > 0 ? "+" : value < 0 ? "−" : "") + fmtNum(Math.abs(value), digits);
  }

  function fmtPercent(value) {
    return isNumber(value) ? `${(100 * value).toFixed(2)}%` : "–";
  }

  function fmtInterval(pair, format = fmtPercent) {
    if (!Array.isArray(pair) || pair.length !== 2) return "–";
    return `${format(pair[0])} to ${format(pair[1])}`;
  }

  function fmtPoints(value) {
    if (!isNumber(value)) return "–";
    const points = 100 * value;
    return `${points > 0 ? "+" : points < 0 ? "−" : ""}${Math.abs(points).toFixed(2)} pp`;
  }

  const pad = (n) => String(n).padStart(2, "0");

  function fmtDateTime(ms) {
    if (!isNumber(ms)) return "–";
    const d = new Date(ms);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  function fmtClock(ms) {
    if (!isNumber(ms)) return "–";
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function timeElement(ms) {
    if (!isNumber(ms)) return "–";
    return el("time", { datetime: new Date(ms).toISOString() }, fmtDateTime(ms));
  }

  // "45 seconds", "3 min 20 s", "2 h 5 min", "3 days 4 h".
  function fmtAge(seconds) {
    if (!isNumber(seconds)) return "unknown";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} second${s === 1 ? "" : "s"}`;
    const minutes = Math.floor(s / 60);
    if (minutes < 60) return `${minutes} min${s % 60 ? ` ${s % 60} s` : ""}`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours} h${minutes % 60 ? ` ${minutes % 60} min` : ""}`;
    const days = Math.floor(hours / 24);
    return `${days} days${hours % 24 ? ` ${hours % 24} h` : ""}`;
  }

  const eventLabel = (type) => EVENT_LABELS[type] || String(type);

  function reasonText(reason) {
    if (!reason) return "–";
    const label = REASON_LABELS[reason];
    return label && label !== reason ? `${label} (${reason})` : String(reason);
  }

  // ------------------------------------------------------------------ charts (uPlot)

  function haveUPlot() {
    return typeof window.uPlot === "function";
  }

  function chartWidth(container) {
    const width = container.clientWidth || (container.parentElement && container.parentElement.clientWidth) || 640;
    return Math.max(280, Math.floor(width));
  }

  const charts = new Map(); // container id -> {plot, labels}

  // Draws (or updates) a line chart in the container: data is uPlot's aligned data (x in
  // unix seconds first), series [{label}] one per y column (series i is drawn in
  // COLORS[i] and lineStyle(i)). `days`: x values are UTC days (ticks and range by day).
  function lineChart(container, { data, series, yLabel, formatValue, xFormat, yTicks, points = false, days = false }) {
    if (!haveUPlot()) {
      fill(container, el("p", { class: "message error", text: "The chart library did not load." }));
      return;
    }
    const key = container.id;
    const labels = series.map((s) => s.label).join("\u0000");
    const existing = charts.get(key);
    if (existing && existing.labels === labels) {
      existing.plot.setData(data);
      return;
    }
    if (existing) {
      existing.plot.destroy();
      charts.delete(key);
    }
    container.replaceChildren();
    const options = {
      width: chartWidth(container),
      height: 260,
      scales: { x: { time: true } },
      series: [
        { label: "Time", value: (u, v) => (v === null || v === undefined ? "–" : xFormat(v)) },
        ...series.map((s, index) => ({
          label: s.label,
          stroke: COLORS[index % COLORS.length],
          dash: lineStyle(index).dash,
          width: 2,
          spanGaps: false,
          points: { show: points, size: 7 },
          value: (u, v) => (v === null || v === undefined ? "–" : formatValue(v)),
        })),
      ],
      axes: [
        { stroke: "#1b1f24", grid: { stroke: "#e3e7ec" } },
        { label: yLabel, stroke: "#1b1f24", grid: { stroke: "#e3e7ec" }, size: 64 },
      ],
      legend: {
        show: true,
        markers: { width: 3, dash: (u, index) => lineStyle(index - 1).css },
      },
    };
    // y from zero (rates, counts and latencies are never negative), and a unit range
    // when every value is missing so the axis still shows.
    options.scales.y = {
      range: (u, min, max) =>
        max === null || !Number.isFinite(max) || max <= 0 ? [0, 1] : window.uPlot.rangeNum(0, max, 0.1, true),
    };
    if (!days) {
      // At least the last hour (what the API returns), however few samples there are yet.
      options.scales.x.range = (u) => {
        const xs = u.data && u.data[0] ? u.data[0] : [];
        if (xs.length === 0) return [0, 3600];
        const last = xs[xs.length - 1];
        return [Math.min(xs[0], last - 3600), last];
      };
    }
    if (yTicks) options.axes[1].values = (u, splits) => splits.map(yTicks);
    // Clock ticks in local 24-hour time, as in the text summaries.
    if (!days) options.axes[0].values = (u, splits) => splits.map((v) => fmtClock(v * 1000).slice(0, 5));
    if (days) {
      // One tick per day (or per 2, 7, ... days when crowded), labelled YYYY-MM-DD (UTC),
      // and half a day of room either side so a single day still has a range.
      // (From the data: uPlot widens a single x value to 1000 days when x is in seconds.)
      options.scales.x.range = (u) => {
        const xs = u.data && u.data[0] ? u.data[0] : [];
        return xs.length === 0 ? [0, DAY_S] : [xs[0] - DAY_S / 2, xs[xs.length - 1] + DAY_S / 2];
      };
      options.axes[0].incrs = [1, 2, 7, 14, 28, 91, 182, 364].map((n) => n * DAY_S);
      options.axes[0].values = (u, splits) => splits.map((v) => new Date(v * 1000).toISOString().slice(0, 10));
      options.axes[0].space = 70;
    }
    const plot = new window.uPlot(options, data, container);
    // uPlot's legend is a table: give it a caption and header scopes like the others.
    const legend = plot.root.querySelector("table.u-legend");
    if (legend) {
      legend.prepend(el("caption", { class: "visually-hidden" }, "Legend"));
      for (const th of legend.querySelectorAll("th")) th.setAttribute("scope", "row");
    }
    charts.set(key, { plot, labels });
  }

  function dropChart(container) {
    const existing = charts.get(container.id);
    if (existing) {
      existing.plot.destroy();
      charts.delete(container.id);
    }
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const [id, { plot }] of charts) {
        const container = $(id);
        if (container) plot.setSize({ width: chartWidth(container), height: 260 });
      }
    }, 150);
  });

  // ------------------------------------------------------------------ shared chrome

  function setupChrome() {
    const logout = $("logout-form");
    if (logout) {
      const field = logout.querySelector('input[name="csrf"]');
      if (field) field.value = cookie(CSRF_COOKIE);
      logout.addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          await fetch("/logout", {
            method: "POST",
            credentials: "same-origin",
            headers: {
              "X-CSRF-Token": cookie(CSRF_COOKIE),
              "Content-Type": "application/x-www-form-urlencoded",
            },
            body: new URLSearchParams({ csrf: cookie(CSRF_COOKIE) }).toString(),
          });
        } catch (error) {
          showError(error);
          return;
        }
        location.assign("/login");
      });
    }
  }

  // ------------------------------------------------------------------ overview

  function overviewPage() {
    setTitle("Overview");
    let first = true;
    let failing = false;

    async function refresh() {
      if (!document.hidden || first) {
        try {
          if (first) setStatus("Loading the overview…");
          const data = await api("/api/overview");
          renderOverview(data);
          const updated = $("updated");
          if (updated) updated.textContent = `Last updated ${fmtClock(Date.now())}.`;
          if (first || failing) setStatus("Overview loaded; it refreshes every 10 seconds.");
          failing = false;
        } catch (error) {
          if (error instanceof Redirecting) return;
          failing = true;
          showError(error);
        }
        first = false;
      }
      setTimeout(refresh, REFRESH_MS);
    }
    refresh();
  }

  function renderOverview(data) {
    const model = data.model || {};
    const trainer = data.trainer || {};
    const counts = data.counts || {};
    fill("model-version", model.version ? String(model.version) : "no model yet");
    fill(
      "model-details",
      facts([
        [
          "Age",
          isNumber(model.age_s)
            ? `${fmtAge(model.age_s)} (published ${fmtDateTime(model.published_ms)})`
            : "no model published yet",
        ],
        ["Trained", model.trained ? "yes" : "no"],
        ["Strategy", model.strategy ? String(model.strategy) : "–"],
        ["Trainer", trainer.holder ? `held by ${trainer.holder}` : "no trainer holds the lease"],
        ["This replica's role", trainer.role ? String(trainer.role) : "–"],
        ["This replica", data.this_replica ? String(data.this_replica) : "–"],
      ])
    );
    const available =
      isNumber(counts.available_items) && isNumber(counts.items)
        ? `${fmtInt(counts.available_items)} of ${fmtInt(counts.items)}`
        : fmtInt(counts.available_items);
    fill(
      "counts",
      facts([
        ["Shoppers", fmtInt(counts.users)],
        ["Items", fmtInt(counts.items)],
        ["Events", fmtInt(counts.events)],
        ["Available items", available],
      ])
    );
    const replicas = (Array.isArray(data.replicas) ? data.replicas : []).filter(
      (r) => Array.isArray(r.samples) && r.samples.length > 0
    );
    overviewChart({
      containerId: "events-chart",
      summaryId: "events-summary",
      replicas,
      columns: [{ key: "events_per_s", suffix: "" }],
      yLabel: "events/s",
      unit: "events/s",
    });
    overviewChart({
      containerId: "latency-chart",
      summaryId: "latency-summary",
      replicas,
      columns: [
        { key: "recommend_p50_ms", suffix: " p50" },
        { key: "recommend_p99_ms", suffix: " p99" },
      ],
      yLabel: "ms",
      unit: "ms",
    });
  }

  function overviewChart({ containerId, summaryId, replicas, columns, yLabel, unit }) {
    const container = $(containerId);
    const summary = $(summaryId);
    if (!container || !summary) return;
    const formatValue = (v) => `${fmtNum(v, 2)} ${unit}`;
    if (replicas.length === 0) {
      dropChart(container);
      fill(container);
      fill(summary, empty("no data yet"));
      return;
    }
    // One table per replica, aligned on time by uPlot.join (null = a gap in the line).
    const tables = replicas.map((replica) => {
      const samples = [...replica.samples].sort((a, b) => a.time_ms - b.time_ms);
      return [
        samples.map((s) => s.time_ms / 1000),
        ...columns.map((c) => samples.map((s) => (isNumber(s[c.key]) ? s[c.key] : null))),
      ];
    });
    const series = replicas.flatMap((replica) =>
      columns.map((c) => ({ label: `${replica.replica}${c.suffix}` }))
    );
    const data = haveUPlot() ? window.uPlot.join(tables) : [[]];
    lineChart(container, {
      data,
      series,
      yLabel,
      formatValue,
      xFormat: (v) => fmtClock(v * 1000),
    });
    // The text summary: each series' latest value and its line style.
    const items = replicas.flatMap((replica, replicaIndex) => {
      const samples = [...replica.samples].sort((a, b) => a.time_ms - b.time_ms);
      const last = samples[samples.length - 1];
      return columns.map((c, columnIndex) => {
        let latest = null;
        for (let i = samples.length - 1; i >= 0; i--) {
          if (isNumber(samples[i][c.key])) {
            latest = samples[i];
            break;
          }
        }
        const style = lineStyle(replicaIndex * columns.length + columnIndex).name;
        const label = `${replica.replica}${c.suffix} (${style})`;
        return el(
          "li",
          null,
          latest
            ? `${label}: ${formatValue(latest[c.key])} at ${fmtClock(latest.time_ms)}`
            : `${label}: no value yet (last sample ${fmtClock(last.time_ms)})`
        );
      });
    });
    fill(summary, el("p", null, "Latest values:"), el("ul", null, items));
  }

  // ------------------------------------------------------------------ lookups

  function lookupPage({ title, formId, inputId, param, href, noun }) {
    setTitle(title);
    const form = $(formId);
    const input = $(inputId);
    const wanted = new URLSearchParams(location.search).get(param);
    if (wanted && wanted.trim()) {
      location.replace(href(wanted.trim()));
      return;
    }
    if (!form || !input) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const id = input.value.trim();
      if (!id) {
        setStatus(`Enter ${noun} id first.`, "error");
        input.focus();
        return;
      }
      setStatus(`Opening ${id}…`);
      location.assign(href(id));
    });
  }

  // ------------------------------------------------------------------ recommendations

  function contributionsList(contributions) {
    if (!Array.isArray(contributions) || contributions.length === 0) return "–";
    const top = [...contributions]
      .filter((c) => c && isNumber(c.value))
      .sort((a, b) => Math.abs(b.value) - Math.abs(a.value))
      .slice(0, 3);
    if (top.length === 0) return "–";
    return el("ul", null, top.map((c) => el("li", null, `${c.source}: ${fmtSigned(c.value, 3)}`)));
  }

  function becauseList(because) {
    if (!Array.isArray(because) || because.length === 0) return "–";
    return el("ul", null, because.map((id) => el("li", null, itemLink(id))));
  }

  function recMeta(rec) {
    const parts = [
      ["Strategy", rec.strategy],
      ["Model version", rec.model_version],
      ["Experiment", rec.experiment || "none"],
      ["Variant", rec.variant || "none"],
    ];
    return el("dl", { class: "facts" }, facts(parts.map(([k, v]) => [k, v ? String(v) : "–"])));
  }

  // The current recommendations with their explanations; rows are tr[data-item-id].
  function recommendationsTable(rec, caption, { rowAttribute = "data-item-id", explain = true } = {}) {
    const items = rec && Array.isArray(rec.items) ? rec.items : [];
    if (items.length === 0) return empty("no recommendations");
    const columns = [
      { label: "Rank", num: true },
      { label: "Item", id: true },
      { label: "Score", num: true },
      { label: "Reason" },
    ];
    if (explain) columns.push({ label: "Because" }, { label: "Top contributions" });
    const rows = items.map((item, index) => {
      const explanation = item.explanation || {};
      const cells = [String(index + 1), itemLink(item.item_id), fmtNum(item.score, 4), reasonText(explanation.reason)];
      if (explain) cells.push(becauseList(explanation.because), contributionsList(explanation.contributions));
      return { cells, attributes: { [rowAttribute]: item.item_id } };
    });
    return table({ caption, columns, rows, rowHeader: true });
  }

  // ------------------------------------------------------------------ shopper page

  async function userPage() {
    let userId;
    try {
      userId = idFromPath("/users/");
    } catch {
      setTitle("Shopper");
      showError(new Error("the shopper id in the address is not valid URL encoding"));
      return;
    }
    setTitle(`Shopper ${userId}`);
    fill("page-title", `Shopper ${userId}`);
    const base = "/api/users/" + encodeURIComponent(userId);
    setupWhatIf(userId, base);
    setStatus(`Loading shopper ${userId}…`);
    let data;
    try {
      data = await api(`${base}?k=10`);
    } catch (error) {
      showError(error, "recommendations");
      fill("user-profile", empty("not loaded (see the error above)"));
      fill("user-events", empty("not loaded (see the error above)"));
      if (error instanceof ApiError && error.status === 404) {
        fill("user-profile", el("p", null, `There is no shopper with id “${userId}”. `, el("a", { href: "/users" }, "Look up another shopper")));
      }
      return;
    }
    renderUser(data);
    setStatus(`Shopper ${userId} loaded.`);
  }

  function renderUser(data) {
    fill("user-profile", tokenList(data.profile, "no profile tokens"));
    const events = Array.isArray(data.events) ? data.events : [];
    fill(
      "user-events",
      events.length === 0
        ? empty("no events yet")
        : table({
            caption: `The shopper's ${events.length === 1 ? "latest event" : `latest ${events.length} events`}, newest first`,
            columns: [{ label: "Time" }, { label: "Type" }, { label: "Item", id: true }, { label: "Search query" }],
            rows: events.map((e) => ({
              cells: [
                timeElement(e.time_ms),
                eventLabel(e.type),
                e.item_id ? itemLink(e.item_id) : "–",
                e.query ? el("span", { class: "event-query", text: String(e.query) }) : "–",
              ],
            })),
          })
    );
    const rec = data.recommendations || {};
    fill(
      "recommendations",
      recMeta(rec),
      recommendationsTable(rec, "Recommendations now, best first, with why each was chosen")
    );
  }

  function setupWhatIf(userId, base) {
    const form = $("what-if-form");
    const list = $("what-if-events");
    const add = $("what-if-add");
    const result = $("what-if-result");
    if (!form || !list || !add || !result) return;
    let counter = 0;

    function renumber() {
      const rows = [...list.children];
      rows.forEach((row, index) => {
        const n = index + 1;
        row.querySelector(".what-if-item-label").textContent = `Item id of event ${n}`;
        row.querySelector(".what-if-type-label").textContent = `Type of event ${n}`;
        const remove = row.querySelector("button");
        remove.textContent = `Remove event ${n}`;
        remove.hidden = rows.length === 1;
      });
    }

    function addRow(focus) {
      counter += 1;
      const itemId = `what-if-item-${counter}`;
      const typeId = `what-if-type-${counter}`;
      const input = el("input", { id: itemId, name: "item_id", type: "text", autocomplete: "off", spellcheck: "false" });
      const select = el(
        "select",
        { id: typeId, name: "type" },
        EVENT_TYPES.map((type) => el("option", { value: type }, eventLabel(type)))
      );
      const remove = el("button", { type: "button", class: "secondary" }, "Remove");
      const row = el(
        "li",
        { class: "field-row" },
        el("div", { class: "field" }, el("label", { for: itemId, class: "what-if-item-label" }, "Item id"), input),
        el("div", { class: "field" }, el("label", { for: typeId, class: "what-if-type-label" }, "Type"), select),
        el("div", { class: "field" }, remove)
      );
      remove.addEventListener("click", () => {
        const next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        renumber();
        if (next) next.querySelector("input").focus();
      });
      list.append(row);
      renumber();
      if (focus) input.focus();
    }

    addRow(false);
    add.addEventListener("click", () => addRow(true));

    let busy = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) return;
      const events = [...list.children]
        .map((row) => ({
          item_id: row.querySelector("input").value.trim(),
          type: row.querySelector("select").value,
        }))
        .filter((e) => e.item_id !== "");
      const features = $("what-if-features")
        .value.split(/[,\n]/)
        .map((t) => t.trim())
        .filter((t) => t !== "");
      const kText = $("what-if-k").value.trim();
      const k = kText === "" ? 10 : Number(kText);
      if (!Number.isInteger(k) || k < 1) {
        setStatus("Error: the number of recommendations must be a whole number of at least 1.", "error");
        $("what-if-k").focus();
        return;
      }
      busy = true;
      form.setAttribute("aria-busy", "true");
      setStatus("Working out what would change…");
      try {
        const data = await api(`${base}/what-if`, { method: "POST", body: { events, features, k } });
        renderWhatIf(result, data, events, features);
        setStatus("What-if result shown below: before and after, side by side.");
      } catch (error) {
        showError(error, result);
      } finally {
        busy = false;
        form.removeAttribute("aria-busy");
      }
    });
  }

  // Before and after side by side; moves are spelled out ("new", "up 3", "down 1",
  // "same", "dropped") so they do not depend on colour.
  function renderWhatIf(result, data, events, features) {
    const before = data.before && Array.isArray(data.before.items) ? data.before.items : [];
    const after = data.after && Array.isArray(data.after.items) ? data.after.items : [];
    const rankBefore = new Map(before.map((item, index) => [item.item_id, index + 1]));
    const rankAfter = new Map(after.map((item, index) => [item.item_id, index + 1]));
    let added = 0;
    let moved = 0;
    let dropped = 0;

    function changeAfter(id, rank) {
      const old = rankBefore.get(id);
      if (old === undefined) {
        added += 1;
        return ["new", "new"];
      }
      if (old > rank) {
        moved += 1;
        return [`up ${old - rank}`, "up"];
      }
      if (old < rank) {
        moved += 1;
        return [`down ${rank - old}`, "down"];
      }
      return ["same", "same"];
    }

    function changeBefore(id, rank) {
      const now = rankAfter.get(id);
      if (now === undefined) {
        dropped += 1;
        return ["dropped", "dropped"];
      }
      if (now === rank) return ["same", "same"];
      return [`now rank ${now}`, now < rank ? "up" : "down"];
    }

    function side(items, caption, change) {
      if (items.length === 0) return empty("no recommendations");
      return table({
        caption,
        columns: [{ label: "Rank", num: true }, { label: "Item", id: true }, { label: "Score", num: true }, { label: "Reason" }, { label: "Change" }],
        rowHeader: true,
        rows: items.map((item, index) => {
          const [text, kind] = change(item.item_id, index + 1);
          const explanation = item.explanation || {};
          return {
            attributes: { "data-what-if-item": item.item_id, "data-change": kind, class: `changed-${kind}` },
            cells: [
              String(index + 1),
              itemLink(item.item_id),
              fmtNum(item.score, 4),
              reasonText(explanation.reason),
              el("span", { class: "change" }, text),
            ],
          };
        }),
      });
    }

    const afterTable = side(after, "After: with the hypothetical events and features", changeAfter);
    const beforeTable = side(before, "Before: as recommended now", changeBefore);
    const asked = [];
    if (events.length) asked.push(`${events.length} hypothetical event${events.length === 1 ? "" : "s"}`);
    if (features.length) asked.push(`${features.length} feature${features.length === 1 ? "" : "s"}`);
    const summary =
      `With ${asked.length ? asked.join(" and ") : "nothing added"}: ` +
      `${added} new item${added === 1 ? "" : "s"}, ${moved} moved, ${dropped} dropped out.`;
    fill(
      result,
      el("h3", null, "Result"),
      el("p", { class: "message ok" }, summary),
      el("div", { class: "side-by-side two" }, el("div", null, beforeTable), el("div", null, afterTable))
    );
  }

  // ------------------------------------------------------------------ item page

  async function itemPage() {
    let itemId;
    try {
      itemId = idFromPath("/items/");
    } catch {
      setTitle("Item");
      showError(new Error("the item id in the address is not valid URL encoding"));
      return;
    }
    setTitle(`Item ${itemId}`);
    fill("page-title", `Item ${itemId}`);
    const base = "/api/items/" + encodeURIComponent(itemId);
    const state = { available: null };
    const toggle = $("availability-toggle");

    function renderAvailability() {
      const node = $("availability-state");
      if (!node) return;
      node.classList.toggle("state-available", state.available === true);
      node.classList.toggle("state-unavailable", state.available === false);
      node.textContent =
        state.available === null ? "unknown" : state.available ? "available" : "unavailable (left out of recommendations)";
      if (toggle) {
        toggle.hidden = state.available === null;
        toggle.textContent = state.available ? "Make unavailable" : "Make available";
      }
    }

    setStatus(`Loading item ${itemId}…`);
    let data;
    try {
      data = await api(base);
    } catch (error) {
      showError(error, "item-features");
      fill("availability-state", "unknown");
      for (const id of ["item-stats", "similar-items", "audit"]) fill(id, empty("not loaded (see the error above)"));
      return;
    }
    state.available = Boolean(data.available);
    renderItem(data);
    renderAvailability();
    setStatus(`Item ${itemId} loaded.`);

    if (!toggle) return;
    let busy = false;
    toggle.addEventListener("click", async () => {
      if (busy) return;
      busy = true;
      toggle.setAttribute("aria-disabled", "true");
      const wanted = !state.available;
      setStatus(`Making the item ${wanted ? "available" : "unavailable"}…`);
      try {
        const answer = await api(`${base}/availability`, { method: "POST", body: { available: wanted } });
        state.available = Boolean(answer.available);
        renderAvailability();
        const now = state.available ? "available" : "unavailable";
        setStatus(answer.changed ? `The item is now ${now}.` : `No change: the item was already ${now}.`);
        try {
          const fresh = await api(base);
          renderAudit(fresh.audit);
          renderStats(fresh);
        } catch (error) {
          showError(error, "audit");
        }
      } catch (error) {
        showError(error);
      } finally {
        busy = false;
        toggle.removeAttribute("aria-disabled");
      }
    });
  }

  function renderItem(data) {
    fill("item-features", tokenList(data.features, "no features"));
    renderStats(data);
    const similar = data.similar || {};
    fill("similar-items", recommendationsTable(similar, "Items similar to this one, most similar first", { explain: false }));
    renderAudit(data.audit);
  }

  function renderStats(data) {
    const days = isNumber(data.window_days) ? data.window_days : 7;
    const shown = data.shown;
    const clicked = data.clicked;
    const rate = isNumber(shown) && isNumber(clicked) && shown > 0 ? fmtPercent(clicked / shown) : "– (never shown)";
    fill(
      "item-stats",
      el(
        "dl",
        { class: "facts" },
        facts([
          [`Shown (last ${days} days)`, `${fmtInt(shown)} time${shown === 1 ? "" : "s"}`],
          [`Clicked (last ${days} days)`, `${fmtInt(clicked)} time${clicked === 1 ? "" : "s"}`],
          ["Clicked per showing", rate],
        ])
      )
    );
  }

  function renderAudit(audit) {
    const entries = Array.isArray(audit) ? audit : [];
    fill(
      "audit",
      entries.length === 0
        ? empty("no changes recorded yet")
        : table({
            caption: "Changes to this item, newest first",
            columns: [{ label: "Time" }, { label: "Who" }, { label: "Action" }, { label: "Detail" }],
            rows: entries.map((e) => ({
              cells: [timeElement(e.time_ms), String(e.actor ?? "–"), String(e.action ?? "–"), String(e.detail ?? "")],
            })),
          })
    );
  }

  // ------------------------------------------------------------------ experiments

  async function experimentsPage() {
    setTitle("Experiments");
    const target = $("experiments");
    setStatus("Loading the experiments report…");
    let report;
    try {
      report = await api("/api/experiments");
    } catch (error) {
      showError(error, target);
      return;
    }
    renderExperiments(target, report);
    const count = Array.isArray(report.experiments) ? report.experiments.length : 0;
    setStatus(`Experiments report loaded: ${count} experiment${count === 1 ? "" : "s"}.`);
  }

  function verdictText(comparison) {
    const metric = comparison.metric === "ctr" ? "click-through rate" : String(comparison.metric);
    const who = `${comparison.variant} vs ${comparison.control}`;
    switch (comparison.verdict) {
      case "ahead":
        return `${comparison.variant} is ahead of ${comparison.control} on ${metric}`;
      case "behind":
        return `${comparison.variant} is behind ${comparison.control} on ${metric}`;
      case "no difference yet":
        return `no difference yet between ${who.replace(" vs ", " and ")} on ${metric}`;
      default:
        return `${who}: ${comparison.verdict}`;
    }
  }

  function metricsColumns(first) {
    return [
      { label: first },
      { label: "Impressions", num: true },
      { label: "Clicks", num: true },
      { label: "CTR", num: true },
      { label: "CTR 95% interval" },
      { label: "Purchases", num: true },
      { label: "Conversion", num: true },
      { label: "Conversion 95% interval" },
    ];
  }

  function metricsCells(name, m) {
    return [
      String(name),
      fmtInt(m.impressions),
      fmtInt(m.clicks),
      fmtPercent(m.ctr),
      fmtInterval(m.ctr_ci),
      fmtInt(m.purchases),
      fmtPercent(m.conversion),
      fmtInterval(m.conversion_ci),
    ];
  }

  function dayToSeconds(day) {
    const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(day));
    if (!match) return null;
    return Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) / 1000;
  }

  function renderExperiments(target, report) {
    const experiments = Array.isArray(report.experiments) ? report.experiments : [];
    const blocks = [];
    if (experiments.length === 0) blocks.push(empty("no experiments yet: no responses were served in an experiment"));
    experiments.forEach((experiment, index) => blocks.push(experimentSection(experiment, index)));
    const surfaces = report.traffic && Array.isArray(report.traffic.surfaces) ? report.traffic.surfaces : [];
    if (surfaces.length) {
      blocks.push(
        el(
          "section",
          { "aria-labelledby": "traffic-heading" },
          el("h2", { id: "traffic-heading" }, "Traffic outside experiments"),
          table({
            caption: "Responses outside any experiment, per surface",
            columns: metricsColumns("Surface"),
            rows: surfaces.map((s) => ({ cells: metricsCells(s.surface, s) })),
            rowHeader: true,
          })
        )
      );
    }
    const notes = [];
    if (isNumber(report.generated_ms)) notes.push(`Report generated ${fmtDateTime(report.generated_ms)}.`);
    if (isNumber(report.window_ms)) notes.push(`Attribution window ${fmtAge(report.window_ms / 1000)}.`);
    const unattributed = report.unattributed && typeof report.unattributed === "object" ? Object.entries(report.unattributed) : [];
    if (unattributed.length) {
      notes.push("Events not attributed: " + unattributed.map(([k, v]) => `${k} ${fmtInt(v)}`).join(", ") + ".");
    }
    if (notes.length) blocks.push(el("p", { class: "muted" }, notes.join(" ")));
    fill(target, blocks);
    // Charts after the sections are in the document (uPlot measures its container).
    experiments.forEach((experiment, index) => experimentChart(experiment, index));
  }

  function experimentSection(experiment, index) {
    const headingId = `experiment-${index}-heading`;
    const variants = Array.isArray(experiment.variants) ? experiment.variants : [];
    const comparisons = Array.isArray(experiment.comparisons) ? experiment.comparisons : [];
    const control = experiment.control || (variants.find((v) => v.name === "control") || {}).name;
    const parts = [
      el("h2", { id: headingId }, `Experiment ${experiment.name}`),
      control ? el("p", null, `Control: ${control}`) : null,
    ];
    parts.push(
      variants.length === 0
        ? empty("no responses in this experiment yet")
        : table({
            caption: `Variants of ${experiment.name}`,
            columns: metricsColumns("Variant"),
            rows: variants.map((v) => ({ cells: metricsCells(v.name, v), attributes: { "data-variant": v.name } })),
            rowHeader: true,
          })
    );
    parts.push(
      comparisons.length === 0
        ? el("p", { class: "empty" }, "No comparisons (no control variant).")
        : table({
            caption: `Comparisons with the control in ${experiment.name}`,
            columns: [
              { label: "Variant vs control" },
              { label: "Metric" },
              { label: "Difference", num: true },
              { label: "95% interval" },
              { label: "Always-valid 95% interval" },
              { label: "p-value (always valid)", num: true },
              { label: "Verdict" },
            ],
            rows: comparisons.map((c) => ({
              cells: [
                `${c.variant} vs ${c.control}`,
                c.metric === "ctr" ? "CTR" : String(c.metric),
                fmtPoints(c.difference),
                fmtInterval(c.ci, fmtPoints),
                fmtInterval(c.always_valid_ci, fmtPoints),
                isNumber(c.p_value) ? c.p_value.toPrecision(3) : "–",
                el("strong", null, verdictText(c)),
              ],
            })),
            rowHeader: true,
          })
    );
    parts.push(
      el(
        "figure",
        { class: "chart-figure" },
        el("figcaption", null, el("h3", null, `Daily CTR per variant in ${experiment.name}`)),
        el("div", {
          id: `experiment-${index}-chart`,
          class: "chart",
          role: "img",
          "aria-label": `Line chart of the daily click-through rate of each variant of experiment ${experiment.name}; the latest day's values are listed below it.`,
        }),
        el("div", { id: `experiment-${index}-summary`, class: "chart-summary" })
      )
    );
    return el("section", { class: "experiment", "aria-labelledby": headingId, dataset: { experiment: experiment.name } }, parts);
  }

  function experimentChart(experiment, index) {
    const container = $(`experiment-${index}-chart`);
    const summary = $(`experiment-${index}-summary`);
    if (!container || !summary) return;
    const variants = (Array.isArray(experiment.variants) ? experiment.variants : []).filter(
      (v) => Array.isArray(v.by_day) && v.by_day.length > 0
    );
    if (variants.length === 0) {
      fill(summary, empty("no data yet"));
      return;
    }
    const tables = variants.map((v) => {
      const days = v.by_day
        .map((d) => ({ x: dayToSeconds(d.day), ctr: isNumber(d.ctr) ? d.ctr : null }))
        .filter((d) => d.x !== null)
        .sort((a, b) => a.x - b.x);
      return [days.map((d) => d.x), days.map((d) => d.ctr)];
    });
    const data = haveUPlot() ? window.uPlot.join(tables) : [[]];
    lineChart(container, {
      data,
      series: variants.map((v) => ({ label: String(v.name) })),
      yLabel: "CTR",
      formatValue: fmtPercent,
      yTicks: (v) => (v === null ? "" : `${(100 * v).toFixed(1)}%`),
      xFormat: (v) => new Date(v * 1000).toISOString().slice(0, 10),
      points: true,
      days: true,
    });
    const items = variants.map((v, index) => {
      const days = [...v.by_day].sort((a, b) => String(a.day).localeCompare(String(b.day)));
      const last = days[days.length - 1];
      return el(
        "li",
        null,
        `${v.name} (${lineStyle(index).name}): CTR ${fmtPercent(last.ctr)} (95% interval ${fmtInterval(last.ctr_ci)}) on ${last.day}, ` +
          `${fmtInt(last.impressions)} impressions; ${days.length} day${days.length === 1 ? "" : "s"} in all`
      );
    });
    fill(summary, el("p", null, "Latest day per variant:"), el("ul", null, items));
  }

  // ------------------------------------------------------------------ evaluations

  async function evaluationsPage() {
    setTitle("Evaluations");
    const list = $("evaluations-list");
    const view = $("evaluation-view");
    setStatus("Loading the stored evaluations…");
    let runs;
    try {
      const data = await api("/api/evaluations");
      runs = Array.isArray(data.evaluations) ? [...data.evaluations] : [];
    } catch (error) {
      showError(error, list);
      return;
    }
    runs.sort((a, b) => (b.saved_ms || 0) - (a.saved_ms || 0));
    if (runs.length === 0) {
      fill(list, empty("no evaluations stored yet (run shelfrank evaluate with --save-to)"));
      fill(view, empty("nothing to show yet"));
      setStatus("No evaluations stored yet.");
      return;
    }
    const known = new Set(runs.map((r) => r.name));
    let chosen = new URLSearchParams(location.search).getAll("run").filter((n) => known.has(n)).slice(0, 2);
    if (chosen.length === 0) chosen = [runs[0].name];

    const boxes = [];
    const form = el(
      "form",
      { id: "evaluations-form" },
      el(
        "fieldset",
        null,
        el("legend", null, "Runs, newest first (choose up to two)"),
        el(
          "ul",
          { class: "checklist" },
          runs.map((run, index) => {
            const id = `run-${index}`;
            const box = el("input", { type: "checkbox", id, name: "run", value: run.name });
            box.checked = chosen.includes(run.name);
            boxes.push(box);
            const files = Array.isArray(run.files) ? run.files.length : 0;
            return el(
              "li",
              { dataset: { run: run.name } },
              box,
              el("label", { for: id }, `${run.name} `, el("span", { class: "help" }, `saved ${fmtDateTime(run.saved_ms)}, ${files} file${files === 1 ? "" : "s"}`))
            );
          })
        )
      )
    );
    fill(list, form);

    let order = [...chosen]; // the order the runs were chosen in (oldest choice first)
    let generation = 0;
    async function show() {
      const mine = ++generation;
      const names = runs.map((r) => r.name).filter((n) => order.includes(n));
      const url = new URL(location.href);
      url.searchParams.delete("run");
      for (const name of names) url.searchParams.append("run", name);
      history.replaceState(null, "", url.pathname + url.search);
      if (names.length === 0) {
        fill(view, empty("choose a run above"));
        setStatus("No run chosen.");
        return;
      }
      setStatus(`Loading ${names.join(" and ")}…`);
      const results = await Promise.all(
        names.map((name) =>
          api("/api/evaluations/" + encodeURIComponent(name)).then(
            (data) => ({ name, data }),
            (error) => ({ name, error })
          )
        )
      );
      if (mine !== generation) return;
      if (results.some((r) => r.error instanceof Redirecting)) return;
      fill(view, el("div", { class: `side-by-side${names.length === 2 ? " two" : ""}` }, results.map(evaluationColumn)));
      const failed = results.filter((r) => r.error);
      if (failed.length) setStatus("Error: " + failed.map((r) => `${r.name}: ${errorText(r.error)}`).join("; "), "error");
      else setStatus(names.length === 2 ? `Showing ${names[0]} and ${names[1]} side by side.` : `Showing ${names[0]}.`);
    }

    form.addEventListener("change", (event) => {
      const box = event.target;
      if (!(box instanceof HTMLInputElement)) return;
      if (box.checked) {
        order = order.filter((n) => n !== box.value);
        order.push(box.value);
        while (order.length > 2) {
          const dropped = order.shift();
          const other = boxes.find((b) => b.value === dropped);
          if (other) other.checked = false;
        }
      } else {
        order = order.filter((n) => n !== box.value);
      }
      show();
    });
    form.addEventListener("submit", (event) => event.preventDefault());
    await show();
  }

  function evaluationColumn({ name, data, error }) {
    const headingId = `evaluation-${name.replace(/[^A-Za-z0-9_-]/g, "_")}-heading`;
    if (error) {
      return el("article", { class: "panel evaluation" }, el("h3", { id: headingId }, name), el("p", { class: "message error" }, "Error: " + errorText(error)));
    }
    const files = Array.isArray(data.files) ? data.files : [];
    const fileHref = (file) => `/api/evaluations/${encodeURIComponent(name)}/files/${encodeURIComponent(file)}`;
    const pngs = files.filter((f) => /\.png$/i.test(f));
    const report = data.report;
    const parts = [
      el("h3", { id: headingId }, name),
      el("p", { class: "muted" }, `Saved ${fmtDateTime(data.saved_ms)}.`),
    ];
    if (report && typeof report === "object") parts.push(...summariseReport(report, name));
    else parts.push(empty("this run has no report.json"));
    parts.push(el("h4", null, "Plots"));
    if (pngs.length === 0) parts.push(empty("no plots stored with this run"));
    for (const file of pngs) {
      parts.push(
        el(
          "figure",
          null,
          el("img", { class: "plot", src: fileHref(file), alt: `Plot ${file} of evaluation ${name}`, loading: "lazy" }),
          el("figcaption", null, file)
        )
      );
    }
    if (files.length) {
      parts.push(el("h4", null, "Files"), el("ul", null, files.map((f) => el("li", null, el("a", { href: fileHref(f) }, f)))));
    }
    const raw = el("pre", null, el("code", null, JSON.stringify(report, null, 2)));
    parts.push(el("details", null, el("summary", null, `Raw report JSON of ${name}`), raw));
    return el("article", { class: "panel evaluation", "aria-labelledby": headingId, dataset: { run: name } }, parts);
  }

  const isPlain = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const isScalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);

  function scalarText(v) {
    if (v === null) return "–";
    if (typeof v === "number") return fmtNum(v, 5);
    if (typeof v === "boolean") return v ? "yes" : "no";
    return String(v);
  }

  // A stored report (shelfrank evaluate's JSON) as tables where its shape allows: scalars
  // as a key/value table, a map of records (e.g. "models") as one row per key, a list of
  // records as one row per entry; deeper structure stays in the raw JSON.
  function summariseReport(report, runName, depth = 0, title = "Run") {
    const out = [];
    const entries = Object.entries(report);
    const scalars = entries.filter(([, v]) => isScalar(v));
    if (scalars.length) {
      out.push(
        table({
          caption: depth === 0 ? `${title} ${runName}` : title,
          columns: [{ label: "Field" }, { label: "Value" }],
          rows: scalars.map(([k, v]) => ({ cells: [k, scalarText(v)] })),
          rowHeader: true,
        })
      );
    }
    for (const [key, value] of entries) {
      if (isScalar(value)) continue;
      const label = depth === 0 ? key : `${title}: ${key}`;
      if (isPlain(value)) {
        const values = Object.values(value);
        if (values.length > 0 && values.every((v) => isPlain(v))) {
          const recordTable = recordsTable(label, "Name", Object.entries(value));
          if (recordTable) out.push(recordTable);
        } else if (depth < 1 && values.length > 0) {
          out.push(...summariseReport(value, runName, depth + 1, label));
        }
      } else if (Array.isArray(value) && value.length > 0 && value.every((v) => isPlain(v))) {
        const recordTable = recordsTable(label, "#", value.map((v, i) => [String(i + 1), v]));
        if (recordTable) out.push(recordTable);
      }
    }
    return out;
  }

  function recordsTable(caption, keyLabel, records) {
    const columns = [];
    for (const [, record] of records) {
      for (const [k, v] of Object.entries(record)) if (isScalar(v) && !columns.includes(k)) columns.push(k);
    }
    if (columns.length === 0) return null;
    const numeric = new Set(columns.filter((c) => records.every(([, r]) => r[c] === undefined || r[c] === null || isNumber(r[c]))));
    return table({
      caption,
      columns: [{ label: keyLabel }, ...columns.map((c) => ({ label: c, num: numeric.has(c) }))],
      rows: records.slice(0, 200).map(([name, record]) => ({
        cells: [name, ...columns.map((c) => (record[c] === undefined ? "" : scalarText(record[c])))],
      })),
      rowHeader: true,
    });
  }

  // ------------------------------------------------------------------ login

  const LOGIN_ERRORS = {
    invalid: "That token was not accepted. Check it and try again.",
    csrf: "The sign-in form expired (its security check failed). Please try again.",
    expired: "Your session expired. Please sign in again.",
  };

  function loginPage() {
    setTitle("Sign in");
    const form = $("login-form");
    const errorBox = $("login-error");
    const params = new URLSearchParams(location.search);
    const csrfField = $("login-csrf");
    const nextField = $("login-next");
    if (csrfField) csrfField.value = cookie(CSRF_COOKIE);
    // Passed on as given: the server redirects only to a path of this site (its
    // safe_next), and the page goes where that redirect went.
    if (nextField) nextField.value = params.get("next") || "/";

    function showLoginError(text) {
      fill(errorBox, el("p", { class: "message error", text }));
    }

    if (params.has("error")) showLoginError(LOGIN_ERRORS[params.get("error")] || LOGIN_ERRORS.invalid);
    if (!form) return;
    let busy = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) return;
      const token = $("login-token");
      if (!token.value) {
        showLoginError("Enter the access token.");
        token.focus();
        return;
      }
      const csrf = cookie(CSRF_COOKIE);
      if (!csrf) {
        showLoginError("Cookies are needed to sign in: allow them for this site and reload the page.");
        return;
      }
      if (csrfField) csrfField.value = csrf;
      busy = true;
      setStatus("Signing in…");
      fill(errorBox);
      try {
        const response = await fetch("/login", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf },
          body: new URLSearchParams(new FormData(form)).toString(),
        });
        const landed = response.redirected ? new URL(response.url) : null;
        if (response.ok && !(landed && landed.pathname === "/login")) {
          setStatus("Signed in; opening the dashboard…");
          location.assign(landed ? landed.pathname + landed.search + landed.hash : "/");
          return;
        }
        let message = LOGIN_ERRORS.invalid;
        if (landed && landed.searchParams.has("error")) {
          message = LOGIN_ERRORS[landed.searchParams.get("error")] || LOGIN_ERRORS.invalid;
        }
        if (response.status === 403) message = LOGIN_ERRORS.csrf;
        try {
          const data = JSON.parse(await response.text());
          if (data && data.error && data.error.message) message = String(data.error.message);
        } catch {
          // not JSON (an HTML page): keep the message for the status
        }
        setStatus("");
        showLoginError(message);
        token.focus();
        token.select();
      } catch (error) {
        setStatus("");
        showLoginError("Could not reach the server: " + errorText(error));
      } finally {
        busy = false;
      }
    });
  }

  // ------------------------------------------------------------------ not found

  function notFoundPage() {
    setTitle("Not found");
    const message = $("not-found-message");
    // The page's own HTTP status (the server sends this page for 404, and for a 400 id
    // that cannot exist or a 503 store away too).
    const navigation = performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
    const status = navigation && navigation.responseStatus ? navigation.responseStatus : 404;
    let text = "There is nothing at this address.";
    try {
      if (status >= 500) {
        text = `The server could not look this up right now (HTTP ${status}). Try again in a moment.`;
      } else if (status === 400) {
        text = "That id cannot exist: it is not a valid shopper or item id.";
      } else if (location.pathname.startsWith("/users/")) {
        text = `There is no shopper with id “${idFromPath("/users/")}”: no events, no profile and not in the model.`;
      } else if (location.pathname.startsWith("/items/")) {
        text = `There is no item with id “${idFromPath("/items/")}” in the catalogue.`;
      }
    } catch {
      text = "The id in the address is not valid URL encoding.";
    }
    if (message) message.textContent = text;
    setStatus(status >= 500 ? "Error: the lookup failed." : "Not found.", status >= 500 ? "error" : undefined);
  }

  // ------------------------------------------------------------------ start

  function start() {
    setupChrome();
    const pages = {
      overview: overviewPage,
      users: () =>
        lookupPage({ title: "Shoppers", formId: "user-lookup", inputId: "user-id", param: "user_id", href: userHref, noun: "a shopper" }),
      user: userPage,
      items: () =>
        lookupPage({ title: "Items", formId: "item-lookup", inputId: "item-id", param: "item_id", href: itemHref, noun: "an item" }),
      item: itemPage,
      experiments: experimentsPage,
      evaluations: evaluationsPage,
      login: loginPage,
      "not-found": notFoundPage,
    };
    const run = pages[PAGE];
    if (!run) return;
    Promise.resolve()
      .then(run)
      .catch((error) => showError(error));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
