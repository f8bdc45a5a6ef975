// A browser presents a wsbridge token the only way it can: as a WebSocket subprotocol.
//
// Usage: WS_URL=ws://127.0.0.1:PORT/ws TOKEN=<jwt> node token.mjs
// Environment: CHROMIUM_PATH (the browser), WSBRIDGE_TEST_TIMEOUT_SCALE (multiplies timeouts).
// Prints one JSON line: for each way of connecting, the selected subprotocol once a pong
// arrived, or the failure ({"error": ..., "code": ...}). Exit code 0 unless the script broke.

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
  const results = await page.evaluate(async ({ url, token, timeout }) => {
    const attempt = (protocols) => new Promise((resolve) => {
      const ws = new WebSocket(url, protocols);
      const timer = setTimeout(() => resolve({ error: "timeout" }), timeout);
      const done = (value) => { clearTimeout(timer); resolve(value); };
      ws.onopen = () => ws.send(JSON.stringify({ type: "ping" }));
      ws.onmessage = (event) => {
        if (JSON.parse(event.data).type === "pong") {
          done({ protocol: ws.protocol });
          ws.close();
        }
      };
      ws.onerror = () => done({ error: "error" });
      ws.onclose = (event) => done({ error: "closed", code: event.code });
    });
    return {
      token: await attempt(["wsbridge", "wsbridge.token." + token]),
      wrongToken: await attempt(["wsbridge", "wsbridge.token." + token + "x"]),
      tokenAlone: await attempt(["wsbridge.token." + token]),
      noToken: await attempt(["wsbridge"]),
    };
  }, { url: process.env.WS_URL, token: process.env.TOKEN, timeout: T(10_000) });
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
}
