/*
 * wsbridge trading demo: the dashboard's client side. Plain modern JavaScript, no build step.
 *
 * The connection is the wsbridge JavaScript client (clients/js in the repository), whose
 * built module is shipped in ./wsbridge/: it connects to ws(s)://<host>/ws, pings every
 * 30 s, reconnects 3 s after a close (then with backoff), and resumes the event channels
 * after a reconnect, so trades and orders published meanwhile still arrive. A channel it
 * cannot resume, and a broker that comes back, make the page reload its state.
 * Event frames are {"channel": "...", "data": {...}}.
 */
import { WsbridgeClient } from "./wsbridge/index.js";

(() => {
  const MAX_ROWS = 60;
  const MAX_SIGNALS = 60;
  const MAX_ALERTS = 40;
  const MAX_TOASTS = 5;
  const MAX_CHART_POINTS = 720;
  const TOAST_MS = { info: 6_000, warning: 9_000, critical: 15_000 };

  // -- small helpers ------------------------------------------------------------------------

  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

  /** Build an element: h("td", {class: "num"}, "text", childNode, ...). Text is never HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return el;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const usdCompact = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", notation: "compact", maximumFractionDigits: 1 });
  const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const dec = (digits) => new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const dec2 = dec(2);

  const money = (v) => (isNum(v) ? usd.format(v) : "—");
  const signedMoney = (v) => (isNum(v) ? (v > 0 ? "+" : v < 0 ? "−" : "") + usd.format(Math.abs(v)) : "—");
  const signedPct = (v) => (isNum(v) ? (v > 0 ? "+" : v < 0 ? "−" : "") + dec2.format(Math.abs(v)) + "%" : "");
  const pct = (v) => (isNum(v) ? dec2.format(v) + "%" : "—");
  const qty = (v) => (isNum(v) ? int.format(v) : "—");
  const tone = (v) => (!isNum(v) || v === 0 ? "flat" : v > 0 ? "up" : "down");
  const text = (v, fallback = "—") => (v === undefined || v === null || v === "" ? fallback : String(v));

  function parseTime(value) {
    if (typeof value !== "string") return null;
    const t = Date.parse(value);
    return Number.isNaN(t) ? null : new Date(t);
  }
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  const clock = (value) => {
    const d = value instanceof Date ? value : parseTime(value);
    return d ? timeFmt.format(d) : "—";
  };
  const titleCase = (value) => text(value, "").replace(/[_:]+/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());

  function setTone(el, value) {
    el.classList.remove("up", "down", "flat");
    el.classList.add(tone(value));
  }

  function markNew(el) {
    el.classList.add("is-new");
    setTimeout(() => el.classList.remove("is-new"), 1300);
  }

  async function postJSON(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let payload = null;
    try { payload = await response.json(); } catch { payload = null; }
    if (!response.ok) {
      let detail = payload && payload.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
      throw new Error(detail ? String(detail) : `HTTP ${response.status}`);
    }
    return payload;
  }

  // -- state ----------------------------------------------------------------------------------

  const state = {
    killSwitch: null, // the activating payload while active
    breakers: new Map(), // name -> payload
    approvals: [], // pending approval payloads, oldest first
    equity: [], // {t: ms, v: number}
    lastPrice: new Map(), // symbol -> last traded or marked price
    refPrice: new Map(), // symbol -> a moving average from signals, when no price is known
    lastPositionPrice: new Map(),
  };

  const tradingHalted = () => state.killSwitch !== null || state.breakers.size > 0;

  // -- connection ----------------------------------------------------------------------------

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  function connect() {
    const client = new WsbridgeClient({
      url: socketUrl(),
      // Asked explicitly (they are also the server's defaults) so that the client learns
      // their positions and resumes them after a reconnect.
      channels: Object.keys(HANDLERS),
    });
    client.addListener("state", (value) => setConnected(value === "open"));
    client.addListener("open", () => refreshState());
    client.addListener("message", (event) => handleEvent(event.channel, event.data));
    client.addListener("broker", ({ status }) => {
      setBroker(status !== "down");
      if (status === "up") refreshState();
    });
    client.addListener("unrecovered", () => refreshState());
    client.addListener("stopped", ({ reason }) => console.warn("wsbridge demo: stopped:", reason));
    return client;
  }

  function setConnected(connected) {
    const el = $("connection-status");
    // As in the reference hook: anything but an open connection reads "Reconnecting..."
    // (the page's initial "Connecting..." lasts until the first attempt ends).
    el.textContent = connected ? "Live" : "Reconnecting...";
    el.className = "pill " + (connected ? "pill--ok pill--live" : "pill--bad");
    el.dataset.state = connected ? "live" : "reconnecting";
    if (!connected) setBroker(true);
  }

  async function refreshState() {
    try {
      const response = await fetch("/api/state", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const snapshot = await response.json();
      setFeed(snapshot.feed_connected !== false);
      state.breakers.clear();
      for (const [name, reason] of Object.entries(snapshot.circuit_breakers || {})) {
        state.breakers.set(name, { breaker: name, action: "activated", reason });
      }
      renderBreakers();
      if (snapshot.kill_switch) {
        if (!state.killSwitch) onKillSwitch(snapshot.kill_switch);
      } else if (state.killSwitch) {
        onKillSwitch({ action: "deactivate", operator: "system", reason: "Kill switch released" });
      }
      renderTradingState();
    } catch (err) {
      console.warn("wsbridge demo: could not load /api/state", err);
    }
  }

  function handleEvent(channel, data) {
    if (!data || typeof data !== "object") return;
    const handler = HANDLERS[channel];
    if (!handler) return;
    try {
      handler(data);
      $("last-update").textContent = `Updated ${clock(new Date())}`;
    } catch (err) {
      console.warn(`wsbridge demo: could not show a ${channel} event`, err);
    }
  }

  function setBroker(up) {
    $("broker-status").hidden = up;
  }

  // -- header indicators ----------------------------------------------------------------------

  function setFeed(connected, detail) {
    const el = $("feed-status");
    el.textContent = connected ? "Feed Connected" : "Feed Disconnected";
    el.className = "pill " + (connected ? "pill--ok" : "pill--bad");
    el.dataset.state = connected ? "connected" : "disconnected";
    el.title = detail || "";
  }

  function renderTradingState() {
    const halted = tradingHalted();
    const el = $("trading-state");
    el.textContent = state.killSwitch ? "Trading halted" : halted ? "Trading paused" : "Trading active";
    el.className = "pill " + (state.killSwitch ? "pill--bad" : halted ? "pill--warn" : "pill--ok");
    el.dataset.state = halted ? "halted" : "active";
    document.body.classList.toggle("trading-halted", halted);
    for (const button of document.querySelectorAll("[data-trading-action]")) {
      button.disabled = halted || button.dataset.busy === "1";
      button.title = halted ? "Trading is halted" : "";
    }
    $("approval-halted").hidden = !halted;
    $("kill-switch-button").disabled = state.killSwitch !== null;
  }

  // -- portfolio -----------------------------------------------------------------------------------

  function onPortfolio(d) {
    const set = (id, value) => { $(id).textContent = value; };
    set("portfolio-equity", money(d.total_equity));
    set("portfolio-cash", money(d.cash));
    set("portfolio-positions-value", money(d.positions_value));
    set("portfolio-daily-pnl", signedMoney(d.daily_pnl));
    set("portfolio-daily-pnl-pct", signedPct(d.daily_pnl_pct));
    set("portfolio-total-pnl", signedMoney(d.total_pnl));
    set("portfolio-total-pnl-pct", signedPct(d.total_pnl_pct));
    set("portfolio-max-drawdown", isNum(d.max_drawdown_pct) ? signedPct(d.max_drawdown_pct) : "—");
    for (const id of ["portfolio-daily-pnl", "portfolio-daily-pnl-pct"]) setTone($(id), d.daily_pnl);
    for (const id of ["portfolio-total-pnl", "portfolio-total-pnl-pct"]) setTone($(id), d.total_pnl);
    setTone($("portfolio-max-drawdown"), isNum(d.max_drawdown_pct) && d.max_drawdown_pct < 0 ? -1 : 0);

    if (Array.isArray(d.positions)) renderPositions(d.positions, d.total_equity);
    const cashPct = isNum(d.cash) && isNum(d.total_equity) && d.total_equity > 0 ? (d.cash / d.total_equity) * 100 : null;
    if (d.sector_exposure && typeof d.sector_exposure === "object") renderSectors(d.sector_exposure, cashPct);
    if (isNum(d.total_equity)) addEquityPoint(d.total_equity);
  }

  function renderPositions(positions, equity) {
    const body = $("positions-table").tBodies[0];
    const rows = positions.map((p) => {
      const price = p.current_price;
      const previous = state.lastPositionPrice.get(p.symbol);
      if (isNum(price)) {
        state.lastPositionPrice.set(p.symbol, price);
        state.lastPrice.set(p.symbol, price);
      }
      const cost = isNum(p.quantity) && isNum(p.entry_price) ? p.quantity * p.entry_price : null;
      const pnlPct = isNum(p.unrealized_pnl_pct) ? p.unrealized_pnl_pct : cost && isNum(p.unrealized_pnl) ? (p.unrealized_pnl / cost) * 100 : null;
      const weight = isNum(equity) && equity > 0 && isNum(p.market_value) ? (p.market_value / equity) * 100 : null;
      const priceCell = h("td", { class: "num", "data-testid": "position-price" }, money(price));
      if (isNum(previous) && isNum(price) && previous !== price) priceCell.classList.add(price > previous ? "flash-up" : "flash-down");
      return h(
        "tr",
        { "data-testid": "position-row", "data-symbol": text(p.symbol, "") },
        h("td", { class: "sym" }, text(p.symbol)),
        h("td", { class: "hide-sm" }, text(p.sector)),
        h("td", { class: "num", "data-testid": "position-quantity" }, qty(p.quantity)),
        h("td", { class: "num hide-sm" }, money(p.entry_price)),
        priceCell,
        h("td", { class: "num", "data-testid": "position-value" }, money(p.market_value),
          weight === null ? null : h("span", { class: "sub" }, `${dec(1).format(weight)}% of equity`)),
        h("td", { class: `num ${tone(p.unrealized_pnl)}`, "data-testid": "position-pnl" }, signedMoney(p.unrealized_pnl),
          pnlPct === null ? null : h("span", { class: "sub" }, signedPct(pnlPct))),
      );
    });
    body.replaceChildren(...rows);
    $("positions-count").textContent = `${positions.length} open`;
  }

  function renderSectors(exposure, cashPct) {
    const list = $("sector-exposure");
    const entries = Object.entries(exposure).filter(([, v]) => isNum(v)).sort((a, b) => b[1] - a[1]);
    const top = Math.max(...entries.map(([, v]) => Math.abs(v)), 1);
    const total = entries.reduce((sum, [, v]) => sum + v, 0);
    list.replaceChildren(
      ...entries.map(([sector, value]) =>
        h("li", { class: "sector", "data-testid": "sector-row", "data-sector": sector },
          h("span", { class: "sector__name" }, sector),
          h("span", { class: "sector__pct", "data-testid": "sector-value" }, pct(value)),
          h("span", { class: "sector__bar", role: "presentation" },
            h("span", { class: "sector__fill", style: `width:${Math.max(2, (Math.abs(value) / top) * 100).toFixed(1)}%` })),
        ),
      ),
    );
    if (entries.length) {
      list.append(h("li", { class: "sector-total", "data-testid": "sector-total" }, h("span", null, "Invested"), h("span", null, pct(total))));
    }
    $("sector-exposure-empty").hidden = entries.length > 0;
    renderAllocation(entries, cashPct);
  }

  /** One stacked bar: each sector's share of equity, then cash. */
  function renderAllocation(entries, cashPct) {
    const bar = $("allocation-bar");
    const legend = $("allocation-legend");
    const parts = entries.filter(([, v]) => v > 0).map(([name, v], i) => ({ name, v, cls: `alloc--${Math.min(i, 5)}` }));
    if (isNum(cashPct) && cashPct > 0) parts.push({ name: "Cash", v: cashPct, cls: "alloc--cash" });
    const sum = parts.reduce((acc, p) => acc + p.v, 0);
    bar.replaceChildren(...parts.map((p) => h("span", { class: `alloc ${p.cls}`, style: `width:${((p.v / (sum || 1)) * 100).toFixed(2)}%`, title: `${p.name} ${pct(p.v)}` })));
    legend.replaceChildren(...parts.map((p) => h("li", null, h("span", { class: `dot ${p.cls}` }), `${p.name} `, h("b", null, pct(p.v)))));
    $("allocation").hidden = parts.length === 0;
  }

  // -- equity chart ---------------------------------------------------------------------------------

  let hoverIndex = null;

  function addEquityPoint(value) {
    state.equity.push({ t: Date.now(), v: value });
    if (state.equity.length > MAX_CHART_POINTS) state.equity.splice(0, state.equity.length - MAX_CHART_POINTS);
    drawChart();
  }

  function niceStep(range, ticks) {
    const raw = range / Math.max(ticks, 1);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  }

  function drawChart() {
    const svg = $("equity-chart");
    const points = state.equity;
    svg.dataset.points = String(points.length);
    $("equity-chart-empty").hidden = points.length >= 2;
    const { width, height } = svg.getBoundingClientRect();
    if (points.length < 2 || width < 40 || height < 40) {
      svg.replaceChildren();
      return;
    }
    const pad = { l: 78, r: 14, t: 12, b: 26 };
    const w = width - pad.l - pad.r;
    const hgt = height - pad.t - pad.b;
    const values = points.map((p) => p.v);
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    const span = Math.max(hi - lo, Math.abs(hi) * 0.0005, 1);
    lo -= span * 0.12;
    hi += span * 0.12;
    const t0 = points[0].t;
    const t1 = Math.max(points[points.length - 1].t, t0 + 1);
    const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * w;
    const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * hgt;

    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const first = values[0];
    const last = values[values.length - 1];
    const up = last >= first;
    const color = up ? "var(--up)" : "var(--down)";
    const gradId = "equity-fill";
    const children = [
      s("defs", {},
        s("linearGradient", { id: gradId, x1: 0, y1: 0, x2: 0, y2: 1 },
          s("stop", { offset: "0%", "stop-color": color, "stop-opacity": 0.28 }),
          s("stop", { offset: "100%", "stop-color": color, "stop-opacity": 0 }))),
    ];
    const step = niceStep(hi - lo, 4);
    for (let v = Math.ceil(lo / step) * step, i = 0; v <= hi && i < 12; v += step, i += 1) {
      children.push(s("line", { class: "grid-line", x1: pad.l, x2: pad.l + w, y1: y(v), y2: y(v) }));
      children.push(s("text", { class: "axis-label", x: pad.l - 8, y: y(v) + 4, "text-anchor": "end" }, usdCompactOrFull(v, step)));
    }
    children.push(s("line", { class: "baseline", x1: pad.l, x2: pad.l + w, y1: y(first), y2: y(first) }));
    const line = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
    const area = `${line}L${x(t1).toFixed(1)},${pad.t + hgt}L${x(t0).toFixed(1)},${pad.t + hgt}Z`;
    children.push(s("path", { d: area, fill: `url(#${gradId})` }));
    children.push(s("path", { class: `line ${up ? "line--up" : "line--down"}`, d: line, "data-testid": "equity-line" }));
    children.push(s("circle", { class: "last-dot", cx: x(t1), cy: y(last), r: 4.5, fill: color }));
    children.push(s("text", { class: "axis-label", x: pad.l, y: height - 6 }, clock(new Date(t0))));
    children.push(s("text", { class: "axis-label", x: pad.l + w, y: height - 6, "text-anchor": "end" }, clock(new Date(t1))));

    if (hoverIndex !== null && points[hoverIndex]) {
      const p = points[hoverIndex];
      const hx = x(p.t);
      const hy = y(p.v);
      const label = `${money(p.v)} · ${clock(new Date(p.t))}`;
      const boxW = label.length * 6.6 + 16;
      const bx = Math.min(Math.max(hx - boxW / 2, pad.l), pad.l + w - boxW);
      const by = hy - 38 < pad.t ? hy + 12 : hy - 38;
      children.push(s("line", { class: "hover-line", x1: hx, x2: hx, y1: pad.t, y2: pad.t + hgt }));
      children.push(s("circle", { cx: hx, cy: hy, r: 4, fill: color }));
      children.push(s("g", { class: "tooltip" },
        s("rect", { x: bx, y: by, width: boxW, height: 26, rx: 6 }),
        s("text", { x: bx + 8, y: by + 17 }, label)));
    }
    svg.replaceChildren(...children);

    const change = last - first;
    $("equity-chart-range").textContent = `${signedMoney(change)} (${signedPct((change / first) * 100)}) this session`;
    $("equity-chart-range").className = `panel__meta ${tone(change)}`;
    $("equity-chart-summary").textContent =
      `Equity over ${points.length} updates: from ${money(first)} to ${money(last)}, low ${money(Math.min(...values))}, high ${money(Math.max(...values))}.`;
  }

  function usdCompactOrFull(v, step) {
    return step >= 1000 ? usdCompact.format(v) : usd.format(v).replace(/\.00$/, "");
  }

  function setupChart() {
    const svg = $("equity-chart");
    new ResizeObserver(() => drawChart()).observe(svg);
    svg.addEventListener("mousemove", (event) => {
      const points = state.equity;
      if (points.length < 2) return;
      const rect = svg.getBoundingClientRect();
      const t0 = points[0].t;
      const t1 = Math.max(points[points.length - 1].t, t0 + 1);
      const frac = (event.clientX - rect.left - 78) / Math.max(rect.width - 78 - 14, 1);
      const target = t0 + Math.min(Math.max(frac, 0), 1) * (t1 - t0);
      let best = 0;
      for (let i = 1; i < points.length; i += 1) {
        if (Math.abs(points[i].t - target) < Math.abs(points[best].t - target)) best = i;
      }
      hoverIndex = best;
      drawChart();
    });
    svg.addEventListener("mouseleave", () => { hoverIndex = null; drawChart(); });
  }

  // -- trades, orders, signals ------------------------------------------------------------------

  function sideBadge(side) {
    const value = text(side, "").toUpperCase();
    const kind = value === "BUY" ? "buy" : value === "SELL" ? "sell" : "hold";
    return h("span", { class: `side-badge side-badge--${kind}` }, value || "—");
  }

  function trimRows(body, max) {
    while (body.rows.length > max) body.rows[body.rows.length - 1].remove();
  }

  function onTrade(d) {
    const body = $("trades-table").tBodies[0];
    const id = text(d.id, "");
    if (id && body.querySelector(`tr[data-trade-id="${CSS.escape(id)}"]`)) return;
    if (isNum(d.entry_price) && d.symbol) state.lastPrice.set(d.symbol, d.entry_price);
    const notional = isNum(d.entry_price) && isNum(d.quantity) ? d.entry_price * d.quantity : null;
    const row = h("tr", { "data-testid": "trade-row", "data-trade-id": id, "data-symbol": text(d.symbol, "") },
      h("td", { class: "hide-sm" }, clock(d.entry_time), h("span", { class: "sub id" }, id)),
      h("td", { class: "sym" }, text(d.symbol), h("span", { class: "sub", "data-testid": "trade-strategy" }, text(d.strategy_name))),
      h("td", { "data-testid": "trade-side" }, sideBadge(d.side)),
      h("td", { class: "num", "data-testid": "trade-quantity" }, qty(d.quantity)),
      h("td", { class: "num", "data-testid": "trade-price" }, money(d.entry_price),
        notional === null ? null : h("span", { class: "sub" }, money(notional))),
    );
    body.prepend(row);
    markNew(row);
    trimRows(body, MAX_ROWS);
    $("trades-count").textContent = String(body.rows.length);
  }

  function orderCells(d) {
    const status = text(d.status, "UNKNOWN").toUpperCase();
    const filled = status === "FILLED" || (isNum(d.filled_quantity) && d.filled_quantity > 0);
    return [
      h("td", {}, h("span", { class: "id" }, text(d.id)), h("span", { class: "sub id" }, d.broker_order_id ? `#${d.broker_order_id}` : "not routed")),
      h("td", { class: "sym" }, text(d.symbol)),
      h("td", {}, h("span", { class: `status status--${status.toLowerCase()}`, "data-testid": "order-status" }, status)),
      h("td", { class: "num" }, filled
        ? [h("span", { "data-testid": "order-filled-quantity" }, qty(d.filled_quantity)), " @ ",
          h("span", { "data-testid": "order-filled-price" }, money(d.filled_price))]
        : "—"),
      h("td", { class: "num hide-sm" }, d.filled_at ? clock(d.filled_at) : clock(new Date())),
    ];
  }

  function onOrder(d) {
    const body = $("orders-table").tBodies[0];
    const id = text(d.id, "");
    if (!id) return;
    if (isNum(d.filled_price) && d.symbol) state.lastPrice.set(d.symbol, d.filled_price);
    let row = body.querySelector(`tr[data-order-id="${CSS.escape(id)}"]`);
    if (row) {
      row.replaceChildren(...orderCells(d));
    } else {
      row = h("tr", { "data-testid": "order-row", "data-order-id": id }, ...orderCells(d));
      body.prepend(row);
      trimRows(body, MAX_ROWS);
    }
    row.dataset.status = text(d.status, "").toUpperCase();
    row.dataset.symbol = text(d.symbol, "");
    markNew(row);
    $("orders-count").textContent = String(body.rows.length);
  }

  const INDICATOR_LABELS = { rsi: "RSI", macd: "MACD", macd_signal: "Signal", sma_20: "SMA20" };
  const indicatorLabel = (name) => INDICATOR_LABELS[name] || name.replace(/_/g, " ").toUpperCase();

  function onSignal(d) {
    const list = $("signals-feed");
    const strength = isNum(d.strength) ? Math.min(Math.max(d.strength, 0), 1) : null;
    const indicators = d.metadata && d.metadata.indicators && typeof d.metadata.indicators === "object" ? d.metadata.indicators : {};
    if (d.symbol && isNum(indicators.sma_20) && !state.lastPrice.has(d.symbol)) state.refPrice.set(d.symbol, indicators.sma_20);
    const chips = Object.entries(indicators).slice(0, 6).map(([name, value]) =>
      h("span", { class: "chip", "data-testid": "signal-indicator", "data-name": name },
        `${indicatorLabel(name)} `, h("b", null, isNum(value) ? dec(Math.abs(value) >= 100 ? 1 : 2).format(value) : text(value))));
    const item = h("li", { class: "signal", "data-testid": "signal-item", "data-symbol": text(d.symbol, ""), "data-direction": text(d.direction, "") },
      h("div", { class: "signal__top" },
        sideBadge(d.direction),
        h("span", { class: "signal__sym" }, text(d.symbol)),
        h("span", { class: "signal__strategy" }, text(d.strategy_name)),
        h("span", { class: "signal__time" }, clock(d.timestamp))),
      h("div", { class: "signal__bottom" },
        h("span", { class: "meter", title: "Signal strength" },
          h("span", { class: "meter__fill", style: `width:${((strength ?? 0) * 100).toFixed(0)}%` })),
        h("span", { class: "signal__strength", "data-testid": "signal-strength" }, strength === null ? "—" : dec2.format(strength)),
        h("span", { class: "chips" }, chips)),
    );
    list.prepend(item);
    markNew(item);
    while (list.children.length > MAX_SIGNALS) list.lastElementChild.remove();
    $("signals-empty").hidden = true;
  }

  // -- risk: alerts, breakers, kill switch ----------------------------------------------------

  const SEVERITIES = new Set(["info", "warning", "critical"]);

  function onAlert(d) {
    const severity = SEVERITIES.has(d.severity) ? d.severity : "info";
    const title = titleCase(d.type || "risk alert");
    const facts = [];
    if (d.symbol) facts.push(d.symbol);
    if (isNum(d.current_value) && isNum(d.limit_value) && d.limit_value !== 0) facts.push(`${dec2.format(d.current_value)} vs limit ${dec2.format(d.limit_value)}`);
    const item = h("li", { class: "alert", "data-testid": "alert-item", "data-severity": severity },
      h("span", { class: `sev sev--${severity} alert__sev` }, severity),
      h("span", { class: "alert__reason" }, text(d.reason, title)),
      h("span", { class: "alert__time" }, clock(d.timestamp)),
      h("span", { class: "alert__meta" }, [title, ...facts].join(" · ")),
    );
    const list = $("risk-alerts-list");
    list.prepend(item);
    markNew(item);
    while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
    $("risk-alerts-empty").hidden = true;
    toast(severity, title, text(d.reason, ""), d.symbol);
  }

  const TOAST_ICONS = {
    info: "M12 8v.5M12 11v6M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18z",
    warning: "M12 3l10 18H2L12 3zM12 10v5M12 18v.5",
    critical: "M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zM12 7v6M12 16.5v.5",
  };

  function toast(severity, title, body, symbol) {
    const container = $("toast-container");
    const close = h("button", { type: "button", class: "toast__close", "aria-label": "Dismiss notification" }, "×");
    const icon = s("svg", { viewBox: "0 0 24 24", class: "icon toast__icon", "aria-hidden": "true" }, s("path", { d: TOAST_ICONS[severity] }));
    const el = h("div", {
      class: `toast toast--${severity}`,
      "data-testid": "toast",
      "data-severity": severity,
      role: severity === "critical" ? "alert" : "status",
    }, icon, h("span", { class: "toast__title" }, title + (symbol ? ` · ${symbol}` : "")), close, h("span", { class: "toast__body" }, body));
    let timer = null;
    const dismiss = () => {
      clearTimeout(timer);
      if (!el.isConnected || el.classList.contains("is-leaving")) return;
      el.classList.add("is-leaving");
      setTimeout(() => el.remove(), 220);
    };
    close.addEventListener("click", dismiss);
    el.addEventListener("mouseenter", () => clearTimeout(timer));
    el.addEventListener("mouseleave", () => { timer = setTimeout(dismiss, 2500); });
    container.prepend(el);
    timer = setTimeout(dismiss, TOAST_MS[severity] || TOAST_MS.info);
    const live = [...container.children].filter((t) => !t.classList.contains("is-leaving"));
    for (const old of live.slice(MAX_TOASTS)) old.remove();
  }

  const BREAKER_LABELS = { vix_spike: "VIX spike", stale_data: "Stale data", reconciliation_failed: "Reconciliation failed" };
  const breakerLabel = (name) => BREAKER_LABELS[name] || titleCase(name);

  function onBreaker(d) {
    const name = text(d.breaker, "breaker");
    if (d.action === "activated") {
      state.breakers.set(name, d);
    } else if (d.action === "deactivated") {
      if (state.breakers.delete(name)) toast("info", `${breakerLabel(name)} cleared`, text(d.reason, "Circuit breaker deactivated"));
    }
    renderBreakers();
    renderTradingState();
  }

  function renderBreakers() {
    const banner = $("circuit-breaker-banner");
    const list = $("circuit-breaker-list");
    list.replaceChildren(
      ...[...state.breakers.values()].map((b) =>
        h("li", { "data-testid": "circuit-breaker-item", "data-breaker": text(b.breaker, "") },
          h("b", null, breakerLabel(b.breaker)), " — ", text(b.reason, "active"),
          b.timestamp ? ` (since ${clock(b.timestamp)})` : "")),
    );
    banner.hidden = state.breakers.size === 0;
  }

  function onKillSwitch(d) {
    if (d.action === "activate") {
      state.killSwitch = d;
      $("kill-switch-banner-reason").textContent = `${text(d.reason, "")} — by ${text(d.operator, "unknown")} at ${clock(d.timestamp)}`;
      $("resume-reason").textContent = text(d.reason);
      $("resume-operator").textContent = titleCase(text(d.operator));
      $("resume-since").textContent = clock(d.timestamp);
      closeDialog("kill-modal");
      closeDialog("approval-modal");
      openResume();
    } else if (d.action === "deactivate") {
      const wasActive = state.killSwitch !== null;
      state.killSwitch = null;
      closeDialog("resume-modal");
      if (wasActive) toast("info", "Trading resumed", text(d.reason, "Kill switch released"));
      maybeShowApproval();
    }
    $("kill-switch-banner").hidden = state.killSwitch === null;
    renderTradingState();
  }

  // -- dialogs ----------------------------------------------------------------------------------

  function dialog(id) { return document.getElementById(id); }
  function openDialog(id) {
    const el = dialog(id);
    if (!el.open) el.showModal();
  }
  function closeDialog(id) {
    const el = dialog(id);
    if (el.open) el.close();
  }
  const anyConfirmOpen = () => dialog("kill-modal").open || dialog("resume-modal").open;

  function setupConfirm({ input, button, word, error }) {
    const inputEl = $(input);
    const buttonEl = $(button);
    const update = () => {
      const match = inputEl.value.trim().toUpperCase() === word;
      buttonEl.disabled = !match || buttonEl.dataset.busy === "1";
      inputEl.classList.toggle("is-match", match);
      $(error).hidden = true;
    };
    inputEl.addEventListener("input", update);
    inputEl.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        if (!buttonEl.disabled) buttonEl.click();
      }
    });
    return () => { inputEl.value = ""; update(); };
  }

  function showError(id, err) {
    const el = $(id);
    el.textContent = err instanceof Error ? err.message : String(err);
    el.hidden = false;
  }

  const resetKill = setupConfirm({ input: "kill-confirm-input", button: "kill-confirm-button", word: "KILL", error: "kill-error" });
  const resetResume = setupConfirm({ input: "resume-confirm-input", button: "resume-confirm-button", word: "RESUME", error: "resume-error" });

  function openKill() {
    if (state.killSwitch) return openResume();
    resetKill();
    $("kill-reason-input").value = "";
    closeDialog("approval-modal");
    openDialog("kill-modal");
    $("kill-confirm-input").focus();
  }

  function openResume() {
    if (!state.killSwitch) return;
    resetResume();
    openDialog("resume-modal");
    $("resume-confirm-input").focus();
  }

  async function submitKillSwitch(action, buttonId, errorId, reason) {
    const button = $(buttonId);
    button.dataset.busy = "1";
    button.disabled = true;
    try {
      const body = { action };
      if (reason) body.reason = reason;
      const snapshot = await postJSON("/api/kill-switch", body);
      // The WebSocket event updates the page; the response covers a missed event.
      if (snapshot && action === "activate" && snapshot.kill_switch && !state.killSwitch) onKillSwitch(snapshot.kill_switch);
      if (snapshot && action === "deactivate" && !snapshot.kill_switch && state.killSwitch) onKillSwitch({ action: "deactivate", operator: "human" });
    } catch (err) {
      showError(errorId, err);
    } finally {
      button.dataset.busy = "0";
      const input = action === "activate" ? "kill-confirm-input" : "resume-confirm-input";
      $(input).dispatchEvent(new Event("input"));
    }
  }

  function setupKillSwitch() {
    $("kill-switch-button").addEventListener("click", openKill);
    $("kill-cancel-button").addEventListener("click", () => { closeDialog("kill-modal"); maybeShowApproval(); });
    $("kill-confirm-button").addEventListener("click", () =>
      submitKillSwitch("activate", "kill-confirm-button", "kill-error", $("kill-reason-input").value.trim() || undefined));
    $("resume-confirm-button").addEventListener("click", () =>
      submitKillSwitch("deactivate", "resume-confirm-button", "resume-error"));
    $("resume-minimize-button").addEventListener("click", () => closeDialog("resume-modal"));
    $("resume-open-button").addEventListener("click", openResume);
    // Escape closes either modal: the kill modal like Cancel; the resume modal is only
    // minimised, since the banner keeps offering "Resume trading…".
    dialog("kill-modal").addEventListener("close", () => resetKill());
  }

  // -- approvals ------------------------------------------------------------------------------

  const approvalKey = (d) => [d.symbol, d.side, d.quantity, d.strategy_name, d.requires_approval_by].join("|");

  function onPendingApproval(d) {
    const key = approvalKey(d);
    if (state.approvals.some((a) => approvalKey(a) === key)) return;
    state.approvals.push(d);
    renderApprovalsButton();
    maybeShowApproval();
    if (dialog("approval-modal").open) renderApproval();
  }

  function renderApprovalsButton() {
    const count = state.approvals.length;
    $("approvals-count").textContent = String(count);
    $("approvals-button").hidden = count === 0;
  }

  function maybeShowApproval() {
    expireApprovals();
    if (!state.approvals.length || anyConfirmOpen() || dialog("approval-modal").open) return;
    renderApproval();
    openDialog("approval-modal");
  }

  function expireApprovals() {
    const now = Date.now();
    const before = state.approvals.length;
    state.approvals = state.approvals.filter((a) => {
      const deadline = parseTime(a.requires_approval_by);
      return !deadline || deadline.getTime() > now;
    });
    if (state.approvals.length !== before) {
      toast("info", "Approval expired", `${before - state.approvals.length} trade(s) not decided in time`);
      renderApprovalsButton();
    }
  }

  function renderApproval() {
    const d = state.approvals[0];
    if (!d) return;
    $("approval-queue").textContent = state.approvals.length > 1 ? `1 of ${state.approvals.length}` : "";
    const side = $("approval-side");
    side.textContent = text(d.side);
    side.className = `side-badge side-badge--${String(d.side).toUpperCase() === "SELL" ? "sell" : "buy"}`;
    $("approval-quantity").textContent = qty(d.quantity);
    $("approval-symbol").textContent = text(d.symbol);
    $("approval-strategy").textContent = text(d.strategy_name);
    const strength = isNum(d.signal_strength) ? Math.min(Math.max(d.signal_strength, 0), 1) : 0;
    $("approval-strength").textContent = isNum(d.signal_strength) ? dec2.format(d.signal_strength) : "—";
    $("approval-strength-bar").style.width = `${(strength * 100).toFixed(0)}%`;
    const price = state.lastPrice.get(d.symbol) ?? state.refPrice.get(d.symbol);
    $("approval-notional").textContent = isNum(price) && isNum(d.quantity) ? `≈ ${money(price * d.quantity)}` : "—";
    $("approval-deadline").textContent = deadlineText(d.requires_approval_by);
    const checks = d.risk_assessment && typeof d.risk_assessment === "object" ? d.risk_assessment : {};
    const labels = { position_limit_ok: "Position limit", portfolio_limit_ok: "Portfolio limit", pdt_ok: "PDT rule" };
    $("approval-risk").replaceChildren(
      ...Object.entries(checks).map(([name, ok]) =>
        h("li", { class: `check ${ok ? "check--ok" : "check--fail"}`, "data-testid": "approval-check", "data-check": name, "data-ok": String(Boolean(ok)) },
          ok ? "✓" : "✕", " ", labels[name] || titleCase(name.replace(/_ok$/, "")))),
    );
    $("approval-error").hidden = true;
    renderTradingState();
  }

  function deadlineText(value) {
    const deadline = parseTime(value);
    if (!deadline) return "—";
    const left = deadline.getTime() - Date.now();
    if (left > 24 * 3600 * 1000) return deadline.toISOString().slice(0, 16).replace("T", " ") + " UTC";
    const minutes = Math.max(0, Math.round(left / 60_000));
    return `${clock(deadline)} (in ${minutes} min)`;
  }

  async function decide(decision) {
    const d = state.approvals[0];
    if (!d) return;
    const buttons = [$("approval-approve"), $("approval-reject")];
    for (const b of buttons) { b.dataset.busy = "1"; b.disabled = true; }
    try {
      await postJSON("/api/approvals", {
        symbol: d.symbol,
        side: d.side,
        quantity: d.quantity,
        strategy_name: d.strategy_name,
        decision,
      });
      state.approvals.shift();
      renderApprovalsButton();
      closeDialog("approval-modal");
      maybeShowApproval();
    } catch (err) {
      showError("approval-error", err);
    } finally {
      for (const b of buttons) b.dataset.busy = "0";
      $("approval-reject").disabled = false;
      renderTradingState();
    }
  }

  function setupApprovals() {
    $("approval-approve").addEventListener("click", () => decide("approve"));
    $("approval-reject").addEventListener("click", () => decide("reject"));
    $("approval-later").addEventListener("click", () => closeDialog("approval-modal"));
    $("approvals-button").addEventListener("click", () => {
      expireApprovals();
      if (!state.approvals.length) return;
      renderApproval();
      openDialog("approval-modal");
    });
    setInterval(expireApprovals, 5_000);
  }

  // -- wiring ---------------------------------------------------------------------------------

  const HANDLERS = {
    "portfolio:update": onPortfolio,
    "trade:executed": onTrade,
    "trade:pending_approval": onPendingApproval,
    "order:status": onOrder,
    "signal:generated": onSignal,
    "risk:alert": onAlert,
    "risk:circuit_breaker": onBreaker,
    "risk:kill_switch": onKillSwitch,
    "system:feed:disconnected": (d) => setFeed(false, `${text(d.reason, "Disconnected")} at ${clock(d.timestamp)}`),
    "system:feed:reconnected": (d) => setFeed(true, isNum(d.symbol_count) ? `${d.symbol_count} symbols since ${clock(d.timestamp)}` : ""),
  };

  function start() {
    $("ws-url").textContent = socketUrl();
    setupChart();
    setupKillSwitch();
    setupApprovals();
    renderTradingState();
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
