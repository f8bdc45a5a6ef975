// Drives the built React example (examples/react, served by `vite preview`, which proxies
// /ws to a real bridge) in Debian's Chromium. Run by tests/test_js_client.py.
// It asks its driver for each publication on stdout ("ACTION <name>") and waits for "ok".
// Usage: PAGE_URL=http://127.0.0.1:4173/ CHROMIUM_PATH=/usr/bin/chromium node react_example.mjs
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const SCALE = Number(process.env.WSBRIDGE_TEST_TIMEOUT_SCALE || "1");
const T = (ms) => Math.round(ms * SCALE);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function action(name) {
  console.log(`ACTION ${name}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== "ok") throw new Error(`the driver answered ${value} to ${name}`);
}

const tid = (id) => `[data-testid="${id}"]`;
const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  timeout: T(30_000),
});
let code = 1;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(T(10_000));
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  await page.goto(process.env.PAGE_URL);
  await page.locator(tid("status")).filter({ hasText: "Live" }).waitFor();
  await action("publish-portfolio");
  await page.locator(tid("equity")).filter({ hasText: "25000.00" }).waitFor();
  await action("publish-trade");
  await page.locator(tid("trades")).filter({ hasText: "BUY 10 AAPL" }).waitFor();
  // A fresh page gets the latest portfolio from the bridge at once.
  await page.reload();
  await page.locator(tid("equity")).filter({ hasText: "25000.00" }).waitFor({ timeout: T(5_000) });
  if (problems.length > 0) throw new Error(problems.join("\n"));
  console.log("RESULT ok");
  code = 0;
} catch (err) {
  console.error(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}
process.exit(code);
