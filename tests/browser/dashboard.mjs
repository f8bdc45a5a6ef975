// Browser checks of the wsbridge trading demo, in the system's Chromium driven by playwright-core.
//
// Run by tests/test_demo_browser.py, which starts the demo server. To run it by hand:
//
//   python -c "from wsbridge.demo import serve; serve(port=8000, seed=7, simulate=False, debug_publish=True)"
//   DEMO_URL=http://127.0.0.1:8000/ node tests/browser/dashboard.mjs --mode=events
//
// Modes:
//   --mode=events  (server with simulate=False, debug_publish=True) publishes a deterministic
//                  event on each of the ten channels and checks where it shows, then the
//                  approval, circuit-breaker and kill-switch flows, then (with DEMO_CONTROL=stdio)
//                  a server restart: "Reconnecting..." and then "Live" again.
//   --mode=live    (server with the simulator running) checks that simulated data fills the page.
//
// Environment: DEMO_URL (required), CHROMIUM_PATH (default: "chromium" on PATH), SCREENSHOT_DIR
// (default artifacts/screenshots), WSBRIDGE_TEST_TIMEOUT_SCALE (multiplies every timeout),
// DEMO_CONTROL=stdio (restart the server by asking the parent process: this script prints
// "@@control stop" or "@@control start" and waits for a line "ok" on stdin).
//
// Output is TAP-like: "ok N - name" per check, "not ok N - name" and the error on the first
// failure; the exit code is 0 only when every check passed.

import { access, mkdir } from "node:fs/promises";
import { constants } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { chromium } from "playwright-core";

const BASE = process.env.DEMO_URL;
if (!BASE) {
  console.error("DEMO_URL is not set (for example http://127.0.0.1:8000/)");
  process.exit(2);
}
const MODE = (process.argv.find((a) => a.startsWith("--mode=")) || "--mode=events").slice(7);
const SCALE = Number(process.env.WSBRIDGE_TEST_TIMEOUT_SCALE || "1") || 1;
const SHOTS = process.env.SCREENSHOT_DIR || path.join("artifacts", "screenshots");
const CONTROL = process.env.DEMO_CONTROL === "stdio";
const T = (ms) => Math.round(ms * SCALE);
const url = (p) => new URL(p, BASE).toString();

const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

async function findChromium() {
  const candidates = process.env.CHROMIUM_PATH
    ? [process.env.CHROMIUM_PATH]
    : (process.env.PATH || "").split(path.delimiter).filter(Boolean).flatMap((dir) =>
        ["chromium", "chromium-browser"].map((name) => path.join(dir, name)));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new Error("no Chromium found: install Debian's chromium package or set CHROMIUM_PATH");
}

// -- a tiny step runner ------------------------------------------------------------------------

let passed = 0;
let page = null;

async function step(name, fn) {
  const number = passed + 1;
  try {
    await fn();
    passed += 1;
    console.log(`ok ${number} - ${name}`);
  } catch (err) {
    console.log(`not ok ${number} - ${name}`);
    for (const line of String(err && err.stack ? err.stack : err).split("\n").slice(0, 12)) console.log(`  # ${line}`);
    if (page) {
      try {
        await page.screenshot({ path: path.join(SHOTS, `failure-${MODE}.png`), fullPage: true });
        console.log(`  # screenshot: ${path.join(SHOTS, `failure-${MODE}.png`)}`);
      } catch {
        // the page may be gone
      }
    }
    throw err;
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// -- page helpers ------------------------------------------------------------------------------

const tid = (id) => `[data-testid="${id}"]`;

async function waitText(selector, expected, timeout = T(10_000)) {
  try {
    await page.waitForFunction(
      ([sel, want]) => {
        const el = document.querySelector(sel);
        return el !== null && el.textContent.trim() === want;
      },
      [selector, expected],
      { timeout },
    );
  } catch (err) {
    const actual = await page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => null);
    throw new Error(`${selector}: expected text ${JSON.stringify(expected)}, got ${JSON.stringify(actual && actual.trim())}\n${err.message}`);
  }
}

async function textOf(selector) {
  return ((await page.locator(selector).first().textContent({ timeout: T(5_000) })) || "").trim();
}

async function visible(selector, timeout = T(10_000)) {
  await page.locator(selector).first().waitFor({ state: "visible", timeout });
}

async function hidden(selector, timeout = T(10_000)) {
  await page.locator(selector).first().waitFor({ state: "hidden", timeout });
}

async function count(selector) {
  return page.locator(selector).count();
}

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, name) });
}

async function publish(channel, data) {
  const response = await fetch(url("api/debug/publish"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  if (!response.ok) throw new Error(`publish ${channel}: HTTP ${response.status} ${await response.text()}`);
}

async function post(pathname, body) {
  const response = await fetch(url(pathname), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

// -- talking to the parent process (server restarts) -------------------------------------------

const stdinLines = (() => {
  if (!CONTROL) return null;
  const rl = readline.createInterface({ input: process.stdin });
  const queue = [];
  const waiters = [];
  rl.on("line", (line) => (waiters.length ? waiters.shift()(line) : queue.push(line)));
  rl.on("close", () => { while (waiters.length) waiters.shift()(null); });
  return {
    next(timeout) {
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer from the parent in ${timeout} ms`)), timeout);
        waiters.push((line) => { clearTimeout(timer); resolve(line); });
      });
    },
    close() { rl.close(); },
  };
})();

async function control(command) {
  console.log(`@@control ${command}`);
  const answer = await stdinLines.next(T(60_000));
  if (answer !== "ok") throw new Error(`the parent could not ${command} the server: ${answer}`);
}

// -- the deterministic event checks ------------------------------------------------------------

const TS = "2026-03-12T14:30:00Z";
const FAR = "2099-01-01T00:00:00Z";

const PORTFOLIO = {
  total_equity: 125000.5,
  cash: 25000.25,
  positions_value: 100000.25,
  daily_pnl: 250.0,
  daily_pnl_pct: 0.2,
  total_pnl: 1500.0,
  total_pnl_pct: 1.21,
  max_drawdown_pct: -2.5,
  positions: [
    { symbol: "AAPL", quantity: 100, entry_price: 170.0, current_price: 178.42, market_value: 17842.0, unrealized_pnl: 842.0, sector: "Technology" },
    { symbol: "XOM", quantity: 50, entry_price: 110.0, current_price: 112.44, market_value: 5622.0, unrealized_pnl: 122.0, sector: "Energy" },
  ],
  sector_exposure: { Technology: 14.27, Energy: 4.5 },
};

async function eventChecks() {
  await step("the page loads and shows Live", async () => {
    await page.goto(BASE);
    await waitText(tid("connection-status"), "Live");
    await waitText(tid("feed-status"), "Feed Connected");
    await waitText(tid("trading-state"), "Trading active");
    assert(await page.locator(tid("kill-switch-button")).isEnabled(), "the kill switch button is disabled");
    await shot("01-live-empty.png");
  });

  await step("portfolio:update fills the portfolio panel, positions, sectors and chart", async () => {
    await publish("portfolio:update", PORTFOLIO);
    await waitText(tid("portfolio-equity"), "$125,000.50");
    assert((await textOf(tid("portfolio-cash"))) === "$25,000.25", "cash");
    assert((await textOf(tid("portfolio-positions-value"))) === "$100,000.25", "positions value");
    assert((await textOf(tid("portfolio-daily-pnl"))) === "+$250.00", "daily P&L");
    assert((await textOf(tid("portfolio-daily-pnl-pct"))) === "+0.20%", "daily P&L %");
    assert((await textOf(tid("portfolio-total-pnl"))) === "+$1,500.00", "total P&L");
    assert((await textOf(tid("portfolio-total-pnl-pct"))) === "+1.21%", "total P&L %");
    assert((await textOf(tid("portfolio-max-drawdown"))) === "\u22122.50%", "max drawdown");
    assert((await count(`${tid("position-row")}`)) === 2, "two position rows");
    const aapl = `${tid("position-row")}[data-symbol="AAPL"]`;
    assert((await textOf(`${aapl} ${tid("position-quantity")}`)) === "100", "AAPL quantity");
    assert((await textOf(`${aapl} ${tid("position-price")}`)) === "$178.42", "AAPL price");
    assert((await textOf(`${aapl} ${tid("position-pnl")}`)).startsWith("+$842.00"), "AAPL P&L");
    assert((await textOf(`${tid("sector-row")}[data-sector="Technology"] ${tid("sector-value")}`)) === "14.27%", "Technology exposure");
    await publish("portfolio:update", { ...PORTFOLIO, total_equity: 126250.5, positions_value: 101250.25 });
    await waitText(tid("portfolio-equity"), "$126,250.50");
    await page.waitForFunction((sel) => Number(document.querySelector(sel).dataset.points) >= 2, tid("equity-chart"), { timeout: T(5_000) });
    await visible(`${tid("equity-chart")} ${tid("equity-line")}`);
  });

  await step("a reloaded page shows the latest portfolio at once, before any new event", async () => {
    await page.reload();
    await waitText(tid("connection-status"), "Live");
    await waitText(tid("portfolio-equity"), "$126,250.50", T(5_000));
  });

  await step("trade:executed adds a trade row", async () => {
    await publish("trade:executed", { id: "trade-e2e-1", symbol: "AAPL", side: "BUY", quantity: 10, entry_price: 178.42, entry_time: TS, strategy_name: "mean_reversion" });
    const row = `${tid("trade-row")}[data-trade-id="trade-e2e-1"]`;
    await visible(row);
    assert((await textOf(`${row} ${tid("trade-side")}`)) === "BUY", "side");
    assert((await textOf(`${row} ${tid("trade-quantity")}`)) === "10", "quantity");
    assert((await textOf(`${row} ${tid("trade-price")}`)).startsWith("$178.42"), "price");
    assert((await textOf(`${row} ${tid("trade-strategy")}`)) === "mean_reversion", "strategy");
  });

  await step("order:status updates one row in place, by order id", async () => {
    const row = `${tid("order-row")}[data-order-id="order-e2e-1"]`;
    await publish("order:status", { id: "order-e2e-1", symbol: "MSFT", status: "PENDING" });
    await waitText(`${row} ${tid("order-status")}`, "PENDING");
    await publish("order:status", { id: "order-e2e-1", broker_order_id: "12345678", symbol: "MSFT", status: "SUBMITTED" });
    await waitText(`${row} ${tid("order-status")}`, "SUBMITTED");
    await publish("order:status", { id: "order-e2e-1", broker_order_id: "12345678", symbol: "MSFT", status: "FILLED", filled_at: "2026-03-12T14:32:11Z", filled_price: 415.67, filled_quantity: 5 });
    await waitText(`${row} ${tid("order-status")}`, "FILLED");
    assert((await count(row)) === 1, "the order has more than one row");
    assert((await textOf(`${row} ${tid("order-filled-price")}`)) === "$415.67", "fill price");
    assert((await textOf(`${row} ${tid("order-filled-quantity")}`)) === "5", "fill quantity");
  });

  await step("signal:generated adds a signal with its indicators", async () => {
    await publish("signal:generated", { symbol: "TSLA", direction: "BUY", strength: 0.75, strategy_name: "momentum_crossover", timestamp: TS, metadata: { indicators: { rsi: 42.5, macd: 2.3 } } });
    const item = `${tid("signal-item")}[data-symbol="TSLA"]`;
    await visible(item);
    assert((await textOf(`${item} ${tid("signal-strength")}`)) === "0.75", "strength");
    assert((await textOf(`${item} ${tid("signal-indicator")}[data-name="rsi"]`)).includes("42.50"), "rsi");
    assert((await textOf(`${item} ${tid("signal-indicator")}[data-name="macd"]`)).includes("2.30"), "macd");
  });

  await step("risk:alert raises a toast coloured by severity", async () => {
    const colours = {};
    for (const severity of ["warning", "critical", "info"]) {
      const reason = `e2e ${severity} alert`;
      await publish("risk:alert", { type: "position_limit", severity, reason, symbol: "AAPL", current_value: 6.2, limit_value: 5.0, timestamp: TS });
      const toast = page.locator(`${tid("toast")}.toast--${severity}`, { hasText: reason });
      await toast.waitFor({ state: "visible", timeout: T(5_000) });
      colours[severity] = await toast.evaluate((el) => getComputedStyle(el).borderLeftColor);
      await visible(`${tid("alert-item")}[data-severity="${severity}"]`);
    }
    assert(colours.warning === "rgb(245, 165, 36)", `warning toast is not amber: ${colours.warning}`);
    assert(colours.critical === "rgb(240, 71, 92)", `critical toast is not red: ${colours.critical}`);
    assert(colours.info !== colours.warning && colours.info !== colours.critical, `info toast is coloured: ${colours.info}`);
    await shot("02-events-and-toasts.png");
  });

  await step("system:feed:disconnected and reconnected switch the header indicator", async () => {
    await publish("system:feed:disconnected", { timestamp: "2026-03-12T16:00:00Z", reason: "IB Gateway connection closed (market close)" });
    await waitText(tid("feed-status"), "Feed Disconnected");
    await shot("03-feed-disconnected.png");
    await publish("system:feed:reconnected", { timestamp: "2026-03-13T09:30:00Z", symbol_count: 503 });
    await waitText(tid("feed-status"), "Feed Connected");
  });

  const pending = (symbol, side, quantity) => ({
    symbol, side, quantity, signal_strength: 0.82, strategy_name: "ml_signal",
    risk_assessment: { position_limit_ok: true, portfolio_limit_ok: true, pdt_ok: false },
    requires_approval_by: FAR,
  });

  await step("trade:pending_approval opens the modal; Reject publishes an info alert", async () => {
    await publish("trade:pending_approval", pending("AAPL", "BUY", 10));
    await visible(tid("approval-modal"));
    await waitText(tid("approval-symbol"), "AAPL");
    assert((await textOf(tid("approval-quantity"))) === "10", "quantity");
    assert((await page.locator(`${tid("approval-check")}[data-check="pdt_ok"]`).getAttribute("data-ok")) === "false", "pdt check");
    await shot("04-approval-modal.png");
    await page.locator(tid("approval-reject")).click();
    await hidden(tid("approval-modal"));
    await page.locator(`${tid("toast")}.toast--info`, { hasText: "rejected by operator" }).waitFor({ state: "visible", timeout: T(5_000) });
  });

  await step("Approve carries the trade out: order FILLED and a trade row", async () => {
    await publish("trade:pending_approval", pending("MSFT", "BUY", 5));
    await waitText(tid("approval-symbol"), "MSFT");
    await page.locator(tid("approval-approve")).click();
    await hidden(tid("approval-modal"));
    await visible(`${tid("order-row")}[data-symbol="MSFT"][data-status="FILLED"]:not([data-order-id="order-e2e-1"])`);
    const trade = page.locator(`${tid("trade-row")}[data-symbol="MSFT"]`, { hasText: "ml_signal" });
    await trade.waitFor({ state: "visible", timeout: T(5_000) });
    assert((await trade.locator(tid("trade-quantity")).textContent()).trim() === "5", "approved quantity");
  });

  await step("risk:circuit_breaker shows the banner and disables trading actions", async () => {
    await publish("risk:circuit_breaker", { breaker: "vix_spike", action: "activated", reason: "VIX crossed threshold: 37.2 > 35", timestamp: "2026-03-12T14:50:00Z" });
    await visible(tid("circuit-breaker-banner"));
    assert((await textOf(tid("circuit-breaker-banner"))).includes("VIX crossed threshold: 37.2 > 35"), "banner reason");
    await waitText(tid("trading-state"), "Trading paused");
    await shot("05-circuit-breaker.png");
    await publish("trade:pending_approval", pending("JPM", "BUY", 3));
    await waitText(tid("approval-symbol"), "JPM");
    assert(await page.locator(tid("approval-approve")).isDisabled(), "Approve is enabled during a circuit breaker");
    assert(await page.locator(tid("approval-reject")).isEnabled(), "Reject is disabled");
    await visible(tid("approval-halted"));
    assert(await page.locator(tid("kill-switch-button")).isEnabled(), "the kill switch must stay usable");
    const refused = await post("api/approvals", { symbol: "JPM", side: "BUY", quantity: 3, strategy_name: "ml_signal", decision: "approve" });
    assert(refused.status === 409, `the server accepted a trade during a circuit breaker: ${refused.status}`);
    await shot("06-approval-disabled.png");
    await publish("risk:circuit_breaker", { breaker: "vix_spike", action: "deactivated", reason: "VIX back below 30", timestamp: "2026-03-12T15:05:00Z" });
    await hidden(tid("circuit-breaker-banner"));
    await waitText(tid("trading-state"), "Trading active");
    assert(await page.locator(tid("approval-approve")).isEnabled(), "Approve stays disabled after the breaker cleared");
    await page.locator(tid("approval-reject")).click();
    await hidden(tid("approval-modal"));
  });

  await step("the kill switch demands the typed word KILL, then RESUME", async () => {
    await page.locator(tid("kill-switch-button")).click();
    await visible(tid("kill-modal"));
    const box = await page.locator(tid("kill-modal")).boundingBox();
    const viewport = page.viewportSize();
    assert(box && box.width >= viewport.width - 1 && box.height >= viewport.height - 1, "the kill switch modal is not full-screen");
    const confirm = page.locator(tid("kill-confirm-button"));
    assert(await confirm.isDisabled(), "confirm enabled before typing");
    await page.locator(tid("kill-confirm-input")).fill("KIL");
    assert(await confirm.isDisabled(), "confirm enabled with KIL");
    await page.locator(tid("kill-confirm-input")).fill("STOP");
    assert(await confirm.isDisabled(), "confirm enabled with STOP");
    await page.locator(tid("kill-confirm-input")).fill("KILL");
    assert(await confirm.isEnabled(), "confirm disabled with KILL");
    await shot("07-kill-confirm.png");
    await confirm.click();
    await visible(tid("resume-modal"));
    await hidden(tid("kill-modal"));
    await waitText(tid("resume-operator"), "Human");
    await waitText(tid("trading-state"), "Trading halted");
    const resume = page.locator(tid("resume-confirm-button"));
    assert(await resume.isDisabled(), "resume enabled before typing");
    await page.locator(tid("resume-confirm-input")).fill("RESUM");
    assert(await resume.isDisabled(), "resume enabled with RESUM");
    await page.locator(tid("resume-confirm-input")).fill("RESUME");
    assert(await resume.isEnabled(), "resume disabled with RESUME");
    await shot("08-kill-switch-active.png");
    await resume.click();
    await hidden(tid("resume-modal"));
    await hidden(tid("kill-switch-banner"));
    await waitText(tid("trading-state"), "Trading active");
  });

  await step("a system kill switch from the broker opens the RESUME modal", async () => {
    await publish("risk:kill_switch", { action: "activate", reason: "Automatic halt: drawdown breached hard limit", operator: "system", timestamp: "2026-03-12T15:00:00Z" });
    await visible(tid("resume-modal"));
    await waitText(tid("resume-operator"), "System");
    await page.locator(tid("resume-minimize-button")).click();
    await hidden(tid("resume-modal"));
    await visible(tid("kill-switch-banner"));
    await page.locator(tid("resume-open-button")).click();
    await visible(tid("resume-modal"));
    await page.locator(tid("resume-confirm-input")).fill("RESUME");
    await page.locator(tid("resume-confirm-button")).click();
    await hidden(tid("resume-modal"));
    await waitText(tid("trading-state"), "Trading active");
  });

  if (!CONTROL) {
    console.log("# DEMO_CONTROL is not stdio: the restart check is skipped");
    return;
  }

  await step("stopping the server shows Reconnecting..., restarting it shows Live again", async () => {
    await control("stop");
    await waitText(tid("connection-status"), "Reconnecting...");
    await shot("09-reconnecting.png");
    await control("start");
    // The client waits 3 s before each attempt.
    await waitText(tid("connection-status"), "Live", T(20_000));
    await publish("signal:generated", { symbol: "NVDA", direction: "SELL", strength: 0.66, strategy_name: "after_restart", timestamp: TS });
    await visible(`${tid("signal-item")}[data-symbol="NVDA"]`);
    await shot("10-live-again.png");
  });
}

// -- the live simulator checks ---------------------------------------------------------------------

async function liveChecks() {
  await step("the page loads and shows Live", async () => {
    await page.goto(BASE);
    await waitText(tid("connection-status"), "Live");
  });

  await step("the simulator fills the dashboard", async () => {
    const deadline = T(30_000);
    await page.waitForFunction((sel) => /^\$[\d,]+\.\d\d$/.test(document.querySelector(sel).textContent.trim()), tid("portfolio-equity"), { timeout: deadline });
    await page.waitForFunction((sel) => Number(document.querySelector(sel).dataset.points) >= 10, tid("equity-chart"), { timeout: deadline });
    await page.locator(tid("position-row")).first().waitFor({ state: "visible", timeout: deadline });
    await page.locator(tid("sector-row")).first().waitFor({ state: "visible", timeout: deadline });
    await page.locator(tid("signal-item")).first().waitFor({ state: "visible", timeout: deadline });
    await page.locator(tid("order-row")).first().waitFor({ state: "visible", timeout: deadline });
    await page.locator(tid("trade-row")).first().waitFor({ state: "visible", timeout: deadline });
  });

  await step("screenshots of the live dashboard", async () => {
    if (await page.locator(tid("approval-modal")).isVisible()) await page.locator(tid("approval-later")).click();
    await shot("live-desktop.png");
    await page.screenshot({ path: path.join(SHOTS, "live-desktop-full.png"), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await waitText(tid("connection-status"), "Live");
    await page.screenshot({ path: path.join(SHOTS, "live-mobile.png"), fullPage: true });
  });
}

// -- main --------------------------------------------------------------------------------------------

// While the server is down (the restart check), Chromium logs the refused connections.
const IGNORED_CONSOLE = [/WebSocket connection to .* failed/i, /net::ERR_CONNECTION_REFUSED/i];
const problems = [];
let browser = null;
let exitCode = 1;
try {
  await mkdir(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: await findChromium(), headless: true, args: CHROMIUM_FLAGS, timeout: T(30_000) });
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, reducedMotion: "reduce" });
  context.setDefaultTimeout(T(10_000));
  page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !IGNORED_CONSOLE.some((re) => re.test(msg.text()))) problems.push(`console error: ${msg.text()}`);
  });
  if (MODE === "events") await eventChecks();
  else if (MODE === "live") await liveChecks();
  else throw new Error(`unknown mode ${MODE}`);
  await step("no JavaScript errors on the page", async () => {
    assert(problems.length === 0, problems.join("\n"));
  });
  console.log(`# all ${passed} checks passed`);
  exitCode = 0;
} catch (err) {
  if (passed === 0 && !String(err).includes("not ok")) console.log(`# ${err && err.stack ? err.stack : err}`);
  for (const problem of problems) console.log(`# ${problem}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (stdinLines) stdinLines.close();
}
process.exit(exitCode);
