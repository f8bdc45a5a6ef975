// The trading dashboard in Chromium against `wsbridge serve`, which compresses its frames.
//
// Usage: WS_PORT=PORT STATIC_DIR=src/wsbridge/demo/static node compression.mjs
// Environment: CHROMIUM_PATH (the browser), WSBRIDGE_TEST_TIMEOUT_SCALE (multiplies timeouts).
//
// `serve` only speaks WebSocket, so the page's own files (and an empty /api/state) are
// answered by the browser's request interception on the server's origin: the page then
// opens its WebSocket to `serve` itself, with Chromium's own permessage-deflate offer.
// Once the page shows "Live" and is subscribed this prints "@@ready"; the test then publishes a portfolio
// update, and once the page lists its positions this prints one JSON line: the handshake's
// Sec-WebSocket-Extensions answer, the text of every frame Chromium decoded, and what the
// page shows. Exit code 0 unless a wait timed out or the script broke.

import { readFile } from "node:fs/promises";
import path from "node:path";
import { chromium } from "playwright-core";

const SCALE = Number(process.env.WSBRIDGE_TEST_TIMEOUT_SCALE || "1") || 1;
const T = (ms) => Math.round(ms * SCALE);
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  // The page is answered by interception, so Chromium cannot tell it is a loopback page:
  // let it reach the loopback server as the real page would.
  "--disable-features=LocalNetworkAccessChecks"];
const ORIGIN = `http://127.0.0.1:${process.env.WS_PORT}`;
const STATIC = process.env.STATIC_DIR;
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH, headless: true, args: FLAGS, timeout: T(30_000),
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("console", (message) => console.error(`console.${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => console.error(`pageerror: ${error}`));
  page.on("websocket", (ws) => {
    console.error(`websocket ${ws.url()}`);
    ws.on("close", () => console.error("websocket closed"));
  });
  await page.route(`${ORIGIN}/**`, async (route) => {
    const { pathname } = new URL(route.request().url());
    if (pathname === "/api/state") {
      await route.fulfill({ status: 503, body: "" });
      return;
    }
    const file = pathname === "/" ? "index.html" : pathname.replace(/^\/static\//, "");
    // The page loads the client from a folder (static/wsbridge/): allow plain subpaths,
    // nothing hidden and no way out of the static folder.
    const parts = file.split("/");
    if (parts.some((part) => part === "" || part.startsWith("."))) {
      await route.fulfill({ status: 404, body: "" });
      return;
    }
    const body = await readFile(path.join(STATIC, ...parts));
    await route.fulfill({ status: 200, body, contentType: TYPES[path.extname(file)] });
  });
  // The page's subscriptions are in place once a ping sent after them is answered.
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    window.__subscribed = false;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener("open", () => this.send(JSON.stringify({ type: "ping" })));
        this.addEventListener("message", (event) => {
          try {
            if (JSON.parse(event.data).type === "pong") window.__subscribed = true;
          } catch {}
        });
      }
    };
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  let extensions = null;
  const frames = [];
  cdp.on("Network.webSocketHandshakeResponseReceived", (event) => {
    const headers = event.response.headers;
    const key = Object.keys(headers).find((k) => k.toLowerCase() === "sec-websocket-extensions");
    extensions = key === undefined ? null : headers[key];
  });
  cdp.on("Network.webSocketFrameReceived", (event) => frames.push(event.response.payloadData));

  await page.goto(`${ORIGIN}/`, { timeout: T(30_000) });
  await page.waitForSelector('[data-testid="connection-status"][data-state="live"]', {
    timeout: T(30_000),
  });
  await page.waitForFunction(() => window.__subscribed === true, null, { timeout: T(30_000) });
  console.log("@@ready");
  await page.waitForFunction(
    () => document.querySelector('[data-testid="positions-count"]')?.textContent === "20 open",
    null,
    { timeout: T(30_000) },
  );
  const rows = await page.locator('[data-testid="positions-table"] tbody tr').count();
  const equity = await page.locator('[data-testid="portfolio-equity"]').textContent();
  console.log(JSON.stringify({ extensions, frames, rows, equity }));
} finally {
  await browser.close();
}
