// The JavaScript client in Chromium, on a page of the same origin as a refusing endpoint:
// it learns why from its plain GET, which a browser sends without an Origin header.
//
// Usage: PAGE_URL=http://127.0.0.1:PORT/ WAIT_FOR=close|stopped node refusal.mjs
// Environment: CHROMIUM_PATH (the browser), WSBRIDGE_TEST_TIMEOUT_SCALE (multiplies timeouts).
// The page's server has the built client at /client/index.js and the endpoint at /ws.
// Prints one JSON line: with WAIT_FOR=close, the first close reason that names a refusal
// and the state then; with WAIT_FOR=stopped, the reason the client stopped. Exit code 0
// unless the script broke.

import { chromium } from "playwright-core";

const SCALE = Number(process.env.WSBRIDGE_TEST_TIMEOUT_SCALE || "1") || 1;
const T = (ms) => Math.round(ms * SCALE);
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH, headless: true, args: FLAGS, timeout: T(30_000),
});
try {
  const page = await browser.newPage();
  await page.goto(process.env.PAGE_URL, { timeout: T(30_000) });
  const result = await page.evaluate(async ({ timeout, waitFor }) => {
    const { WsbridgeClient } = await import("/client/index.js");
    const url = `ws://${location.host}/ws`;
    const client = new WsbridgeClient({ url, reconnectDelay: 100, maxReconnectDelay: 300 });
    try {
      return await new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ error: "timeout" }), timeout);
        const done = (value) => { clearTimeout(timer); resolve(value); };
        if (waitFor === "close") {
          client.addListener("close", ({ reason }) => {
            if (reason.startsWith("handshake refused")) done({ close: reason, state: client.state });
          });
        }
        client.addListener("stopped", ({ reason }) => done({ stopped: reason }));
      });
    } finally {
      client.close();
    }
  }, { timeout: T(20_000), waitFor: process.env.WAIT_FOR });
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
