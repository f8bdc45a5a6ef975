// Integration scenarios against a real `wsbridge serve` and a real redis-server, run by
// tests/test_js_client.py. The scenario asks its driver for each action on stdout
// ("ACTION <name> [args]") and waits for "ok" on stdin; it ends with "RESULT <json>".
// Usage: node scenario.mjs <name> <ws url>
import assert from "node:assert/strict";
import { createInterface } from "node:readline";

import { WsbridgeClient } from "../../dist/index.js";

const [name, url] = process.argv.slice(2);
const WAIT = Number(process.env.SCENARIO_WAIT_MS ?? 30_000);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Ask the driver to act; resolves with what it answers after "ok". */
async function action(...words) {
  console.log(`ACTION ${words.join(" ")}`);
  const { value, done } = await lines.next();
  const answer = done ? undefined : value.trim();
  if (answer === undefined || !(answer === "ok" || answer.startsWith("ok "))) {
    throw new Error(`the driver answered ${value} to ${words}`);
  }
  return answer.slice(3);
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), WAIT);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function next(client, event, predicate = () => true) {
  return within(
    new Promise((resolve) => {
      const off = client.addListener(event, (value) => {
        if (predicate(value)) {
          off();
          resolve(value);
        }
      });
    }),
    `a ${event} event`,
  );
}

/** Collects trade:executed events; `until(n)` waits for the n-th. */
function collector(client) {
  const seen = [];
  const waiters = [];
  client.on("trade:executed", (data, event) => {
    seen.push({ id: data.id, offset: event.offset });
    for (const w of waiters.filter((w) => seen.length >= w.n)) w.resolve();
  });
  return {
    seen,
    until: (n) =>
      within(
        new Promise((resolve) => {
          if (seen.length >= n) resolve();
          else waiters.push({ n, resolve });
        }),
        `${n} trades (have ${seen.length})`,
      ),
  };
}

function client(options = {}) {
  return new WsbridgeClient({
    url,
    channels: ["trade:executed"],
    reconnectDelay: 100,
    maxReconnectDelay: 500,
    ...options,
  });
}

const scenarios = {
  // Killed and restarted server: every trade exactly once, in order, and requests made while
  // disconnected go out after the resume.
  async resume() {
    const c = client();
    const trades = collector(c);
    await next(c, "open");
    await action("publish", 1, 5);
    await trades.until(5);
    const closed = next(c, "close");
    await action("kill-server");
    await closed;
    await action("publish", 6, 10);
    const queued = c.subscribe(["risk:alert"]);
    const reopened = next(c, "open");
    await action("start-server");
    const { resumed } = await reopened;
    const ack = await within(queued, "the queued subscribe");
    await trades.until(10);
    await action("publish", 11, 15);
    await trades.until(15);
    c.close();
    return { seen: trades.seen, resumed, queued: ack.channels };
  },

  // The history is gone (Redis flushed) while the client was away: it is told, with the new
  // position, and live events follow.
  async unrecoverable() {
    const c = client();
    const trades = collector(c);
    await next(c, "open");
    await action("publish", 1, 3);
    await trades.until(3);
    const before = c.position("trade:executed");
    await action("kill-server");
    await action("flush-redis");
    await action("publish", 4, 5);
    const unrecovered = next(c, "unrecovered");
    const reopened = next(c, "open");
    await action("start-server");
    const lost = await unrecovered;
    await reopened;
    await action("publish", 6, 6);
    await trades.until(4);
    c.close();
    return { before, lost, seen: trades.seen };
  },

  // The history is lost while the client is connected: the server's position frame is
  // reported as unrecovered, with the new epoch, and the new epoch's events follow.
  async "lost-while-connected"() {
    const c = client();
    const trades = collector(c);
    await next(c, "open");
    await action("publish", 1, 2);
    await trades.until(2);
    const before = c.position("trade:executed");
    const unrecovered = next(c, "unrecovered");
    await action("flush-redis");
    await action("publish", 3, 3);
    const lost = await unrecovered;
    await trades.until(3);
    const after = c.position("trade:executed");
    c.close();
    return { before, lost, after, seen: trades.seen };
  },

  // Through a pattern: the client learns each channel's position from the server and
  // resumes it with the pattern after the server was killed and restarted.
  async "pattern-resume"() {
    const c = client({ channels: ["trade:*"] });
    const trades = collector(c);
    await next(c, "open");
    await action("publish", 1, 3);
    await trades.until(3);
    const before = c.position("trade:executed");
    const closed = next(c, "close");
    await action("kill-server");
    await closed;
    await action("publish", 4, 6);
    const reopened = next(c, "open");
    await action("start-server");
    await reopened;
    await trades.until(6);
    await action("publish", 7, 7);
    await trades.until(7);
    const after = c.position("trade:executed");
    c.close();
    return { before, after, seen: trades.seen };
  },

  // A server that stops answering (SIGSTOP): the missing pong closes the connection, and
  // the client connects again once the server runs again.
  async "ping-timeout"() {
    const c = client({ pingInterval: 200, pongTimeout: 500, connectTimeout: 1_000 });
    await next(c, "open");
    const closed = next(c, "close");
    await action("stop-server");
    const started = Date.now();
    const { reason } = await closed;
    const detectedMs = Date.now() - started;
    const reopened = next(c, "open");
    await action("continue-server");
    await reopened;
    const trades = collector(c);
    await action("publish", 1, 1);
    await trades.until(1);
    c.close();
    return { reason, detectedMs };
  },
};

/**
 * A token that expires soon, then fresh ones from the token function: the client comes
 * back with a new token (before the expiry, or after the server's 4001) and resumes.
 */
async function tokens(tokenRefreshMargin) {
  let asked = 0;
  const token = async () => {
    asked++;
    return action("token");
  };
  const c = client({ token, tokenRefreshMargin });
  const trades = collector(c);
  const closes = [];
  c.addListener("close", ({ code, reason }) => closes.push({ code, reason }));
  await next(c, "open");
  await action("publish", 1, 2);
  await trades.until(2);
  const reopened = next(c, "open");
  await within(
    new Promise((resolve) => c.addListener("close", resolve)),
    "the close at the token's expiry",
  );
  await reopened;
  await action("publish", 3, 4);
  await trades.until(4);
  c.close();
  return { asked, closes, seen: trades.seen };
}

// A handshake the server refuses: the client stops and says why.
scenarios.refused = async () => {
  const c = client({ token: "not-a-token" });
  const { reason } = await next(c, "stopped");
  return { reason, state: c.state };
};

// A server at its connection limit: the client says why (503) and retries until a slot frees.
scenarios.busy = async () => {
  const c = client();
  const refused = await next(c, "close", (e) => e.reason.startsWith("handshake refused"));
  const reopened = next(c, "open");
  await action("free-slot");
  await reopened;
  c.close();
  return { reason: refused.reason, retried: refused.reconnectIn !== undefined };
};

scenarios["token-refresh"] = () => tokens(1_500);
scenarios["token-expired"] = () => tokens(-1);

const scenario = scenarios[name];
assert.ok(scenario, `unknown scenario ${name}`);
try {
  const result = await scenario();
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(0);
} catch (error) {
  console.error(error);
  process.exit(1);
}
