// gpubroker dashboard: shared helpers for every page (fetching the JSON API, exact decimal money,
// formatting, tables, charts, polling). Pages hold no figures of their own: everything shown comes
// from /v1/... with the session cookie, re-read every refresh.
"use strict";

const gpb = (() => {
  const body = document.body;
  const refreshMs = Math.max(250, 1000 * Number(body.dataset.refreshSeconds || 10));

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  async function get(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      // The key was revoked or the cookie expired: sign in again, then come back here.
      const here = location.pathname + location.search;
      location.assign("/login?next=" + encodeURIComponent(here));
      throw new ApiError(401, { title: "Signed out" });
    }
    if (!response.ok) {
      let problem = null;
      try { problem = await response.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, problem);
    }
    return response.json();
  }

  // Every page of a keyset-paged list (items + next_cursor), up to maxPages.
  async function getAll(path, maxPages = 20) {
    const items = [];
    let cursor = null;
    for (let i = 0; i < maxPages; i++) {
      const sep = path.includes("?") ? "&" : "?";
      const page = await get(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
      items.push(...page.items);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    return items;
  }

  // Exact decimals (money is never a float): BigInt scaled by 10^12. The API sends decimal strings.
  const SCALE = 12n;
  const ONE = 10n ** SCALE;
  const dec = {
    parse(value) {
      if (value === null || value === undefined || value === "") return null;
      let s = String(value).trim();
      let exp = 0;
      const e = s.search(/[eE]/);
      if (e >= 0) { exp = parseInt(s.slice(e + 1), 10); s = s.slice(0, e); }
      let neg = false;
      if (s[0] === "-" || s[0] === "+") { neg = s[0] === "-"; s = s.slice(1); }
      let [whole, frac = ""] = s.split(".");
      let digits = (whole || "0") + frac;
      let point = frac.length - exp; // digits after the decimal point
      if (point < 0) { digits += "0".repeat(-point); point = 0; }
      let n = BigInt(digits);
      const shift = Number(SCALE) - point;
      n = shift >= 0 ? n * 10n ** BigInt(shift) : n / 10n ** BigInt(-shift);
      return neg ? -n : n;
    },
    add(a, b) { return (a ?? 0n) + (b ?? 0n); },
    mulInt(a, k) { return a * BigInt(k); },
    cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; },
    // Rounded half away from zero to `places`, with thousands separators.
    format(n, places = 2) {
      if (n === null || n === undefined) return "–";
      const neg = n < 0n;
      let v = neg ? -n : n;
      const unit = 10n ** (SCALE - BigInt(places));
      v = (v + unit / 2n) / unit;
      let s = v.toString().padStart(places + 1, "0");
      const whole = s.slice(0, s.length - places).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
      const frac = places ? "." + s.slice(s.length - places) : "";
      return (neg && v !== 0n ? "-" : "") + whole + frac;
    },
    toNumber(n) { return n === null ? null : Number(n) / Number(ONE); },
  };

  const fmt = {
    usd(value, places = 2) {
      // "-$1,234.56", as an accountant writes a negative amount (not "$-1,234.56").
      const n = typeof value === "bigint" ? value : dec.parse(value);
      if (n === null) return "–";
      const text = dec.format(n, places);
      return text.startsWith("-") ? "-$" + text.slice(1) : "$" + text;
    },
    pct(value, places = 1) { const n = typeof value === "bigint" ? value : dec.parse(value); return n === null ? "–" : dec.format(n, places) + " %"; },
    num(value, places = 0) { const n = typeof value === "bigint" ? value : dec.parse(value); return n === null ? "–" : dec.format(n, places); },
    int(value) { return Number(value).toLocaleString("en-US"); },
    time(iso) { return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"; },
    age(seconds) {
      if (seconds === null || seconds === undefined) return "–";
      if (seconds < 120) return `${seconds} s`;
      if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
      if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
      return `${Math.round(seconds / 86400)} days`;
    },
  };

  // A DOM element: el("td", {class: "num"}, "text", child, ...). Text is always text (no HTML).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "href" || k === "scope" || k === "type" || k === "title") node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function $(selector) { return document.querySelector(selector); }

  // Replace a table's body with rows (arrays of cells: a string, a Node, or {text, class, ...attrs}).
  function fillTable(selector, rows) {
    const tbody = $(selector).querySelector("tbody");
    tbody.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((c) => {
      if (c instanceof Node || typeof c !== "object" || c === null) return el("td", {}, c ?? "–");
      const { text, ...attrs } = c;
      return el("td", attrs, text ?? "–");
    }))));
    $(selector).hidden = rows.length === 0;
  }

  function show(selector, visible) { $(selector).hidden = !visible; }

  function plot(id, data, layout) {
    if (!window.Plotly) return;
    const base = { margin: { l: 48, r: 12, t: 8, b: 40 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { size: 12 } };
    window.Plotly.react(id, data, Object.assign(base, layout || {}), { displaylogo: false, responsive: true });
  }

  function status(text, isError) {
    const node = $("#status");
    if (!node) return;
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  // Run render now and again every refresh, never two at once; skip timed refreshes while the tab is hidden.
  // Returns `refresh`, for the page's own controls: asked while a render runs, it queues exactly one more,
  // so the table always ends up drawn from the latest inputs (a slow timed render cannot overwrite a newer one).
  function poll(render) {
    let busy = false;
    let again = false;
    let count = 0;
    async function tick(asked) {
      if (busy) { again = again || asked; return; }
      if (!asked && document.hidden && count > 0) return;
      busy = true;
      try {
        do {
          again = false;
          try {
            await render();
            count += 1;
            body.dataset.refreshes = String(count); // tests wait on this: the page has drawn `count` times
            status("Updated " + new Date().toLocaleTimeString("en-GB") + ".");
          } catch (error) {
            if (!(error instanceof ApiError && error.status === 401)) status("Could not refresh: " + error.message, true);
          }
        } while (again);
      } finally {
        busy = false;
      }
    }
    tick(true);
    setInterval(() => tick(false), refreshMs);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(false); });
    return () => tick(true);
  }

  return { ApiError, get, getAll, dec, fmt, el, $, fillTable, show, plot, poll, status };
})();
