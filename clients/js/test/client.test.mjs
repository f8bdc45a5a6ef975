// Unit tests of the client's logic against a scripted WebSocket (the integration tests in
// the Python suite run it against a real server). Run with: npm test
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { CloseCode, VERSION, WsbridgeClient, parseFrame, tokenExpiry } from "../dist/index.js";
import { matchesPattern } from "../dist/protocol.js";

const WAIT = 2_000; // ms: every wait below is bounded by this

/** A WebSocket whose other side is the test. */
class ScriptedSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.protocol = "";
    this.sent = [];
    this.closedWith = undefined;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    ScriptedSocket.all.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }
  // the server's side
  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }
  deliver(frame) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  fail() {
    this.onerror?.({});
  }
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

function until(predicate, what) {
  const deadline = Date.now() + WAIT;
  return new Promise((resolve, reject) => {
    const check = () => {
      const value = predicate();
      if (value) resolve(value);
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(check, 2);
    };
    check();
  });
}

function nextEvent(client, name) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${name} event`)), WAIT);
    const off = client.addListener(name, (value) => {
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

function newClient(options = {}) {
  ScriptedSocket.all = [];
  return new WsbridgeClient({
    url: "ws://bridge.test/ws",
    WebSocket: ScriptedSocket,
    reconnectDelay: 5,
    jitter: 0,
    ...options,
  });
}

async function socketNumber(n) {
  return until(() => ScriptedSocket.all[n], `connection ${n + 1}`);
}

async function openWithResume(ws, positions = {}) {
  ws.accept();
  const resume = ws.frames("subscribe").at(-1);
  if (resume !== undefined) {
    ws.deliver({ type: "subscribed", channels: resume.channels, id: resume.id, positions });
  }
  return resume;
}

test("the version is the package's version", () => {
  const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url)));
  assert.equal(VERSION, manifest.version);
});

test("subscribe resolves with the acknowledgement and its positions", async () => {
  const client = newClient();
  const ws = await socketNumber(0);
  ws.accept();
  const pending = client.subscribe(["trade:executed"]);
  const [frame] = ws.frames("subscribe");
  assert.deepEqual(frame.channels, ["trade:executed"]);
  ws.deliver({
    type: "subscribed",
    channels: ["trade:executed"],
    id: frame.id,
    positions: { "trade:executed": { epoch: "e1", offset: 4 } },
  });
  const result = await pending;
  assert.deepEqual(result.channels, ["trade:executed"]);
  assert.deepEqual(client.position("trade:executed"), { epoch: "e1", offset: 4 });
  client.close();
});

test("events reach typed listeners; offsets advance; a repeated offset is dropped", async () => {
  const client = newClient({ channels: ["trade:executed"] });
  const ws = await socketNumber(0);
  await openWithResume(ws, { "trade:executed": { epoch: "e1", offset: 0 } });
  const seen = [];
  client.on("trade:executed", (data, event) => seen.push([data.n, event.offset]));
  ws.deliver({ channel: "trade:executed", data: { n: 1 }, offset: 1 });
  ws.deliver({ channel: "trade:executed", data: { n: 1 }, offset: 1 });
  ws.deliver({ channel: "trade:executed", data: { n: 2 }, offset: 2 });
  ws.deliver({ channel: "other", data: { n: 9 } });
  assert.deepEqual(seen, [
    [1, 1],
    [2, 2],
  ]);
  assert.deepEqual(client.position("trade:executed"), { epoch: "e1", offset: 2 });
  client.close();
});

test("after a drop the client resumes from its last offset, then sends what was queued, in order", async () => {
  const client = newClient({ channels: ["trade:executed", "risk:*"] });
  const first = await socketNumber(0);
  await openWithResume(first, { "trade:executed": { epoch: "e1", offset: 7 } });
  first.deliver({ channel: "trade:executed", data: {}, offset: 8 });
  first.drop(1001, "server shutting down");
  assert.equal(client.state, "waiting");
  const sub = client.subscribe(["news:markets"]);
  const msg = client.send({ type: "ping" });
  const second = await socketNumber(1);
  second.accept();
  assert.equal(second.sent.length, 1, "nothing but the resume before its acknowledgement");
  const [resume] = second.sent;
  assert.deepEqual(resume.channels, ["trade:executed", "risk:*"]);
  assert.deepEqual(resume.since, { "trade:executed": { epoch: "e1", offset: 8 } });
  second.deliver({
    type: "subscribed",
    channels: resume.channels,
    id: resume.id,
    positions: { "trade:executed": { epoch: "e1", offset: 10, recovered: true } },
  });
  assert.deepEqual(
    second.sent.slice(1).map((f) => f.type),
    ["subscribe", "ping"],
  );
  await msg;
  second.deliver({ type: "subscribed", channels: ["news:markets"], id: second.sent[1].id });
  assert.deepEqual((await sub).channels, ["news:markets"]);
  // the missed events follow the acknowledgement and advance the offset
  second.deliver({ channel: "trade:executed", data: {}, offset: 9 });
  assert.deepEqual(client.position("trade:executed"), { epoch: "e1", offset: 9 });
  client.close();
});

test("a channel that cannot be recovered is reported with its new position", async () => {
  const client = newClient({ channels: ["order:status"] });
  const first = await socketNumber(0);
  await openWithResume(first, { "order:status": { epoch: "e1", offset: 3 } });
  first.drop();
  const second = await socketNumber(1);
  const unrecovered = nextEvent(client, "unrecovered");
  await openWithResume(second, { "order:status": { epoch: "e2", offset: 1, recovered: false } });
  assert.deepEqual(await unrecovered, {
    channel: "order:status",
    position: { epoch: "e2", offset: 1 },
  });
  assert.deepEqual(client.position("order:status"), { epoch: "e2", offset: 1 });
  client.close();
});

test("a position frame reports a gap the server could not fill, and moves the position", async () => {
  const client = newClient({ channels: ["trade:executed"] });
  const ws = await socketNumber(0);
  await openWithResume(ws, { "trade:executed": { epoch: "e1", offset: 5 } });
  ws.deliver({ channel: "trade:executed", data: {}, offset: 6 });
  const unrecovered = nextEvent(client, "unrecovered");
  ws.deliver({
    type: "position",
    positions: { "trade:executed": { epoch: "e2", offset: 0, recovered: false } },
  });
  assert.deepEqual(await unrecovered, {
    channel: "trade:executed",
    position: { epoch: "e2", offset: 0 },
  });
  assert.deepEqual(client.position("trade:executed"), { epoch: "e2", offset: 0 });
  const offsets = [];
  client.on("trade:executed", (_data, event) => offsets.push(event.offset));
  ws.deliver({ channel: "trade:executed", data: {}, offset: 1 });
  assert.deepEqual(offsets, [1], "the new epoch's first event is not taken for a repeat");
  // Without "recovered" and in the same epoch, nothing was lost: no event, no change.
  let reported = 0;
  client.addListener("unrecovered", () => reported++);
  ws.deliver({ type: "position", positions: { "trade:executed": { epoch: "e2", offset: 1 } } });
  assert.equal(reported, 0);
  assert.deepEqual(client.position("trade:executed"), { epoch: "e2", offset: 1 });
  client.close();
});

test("channels reached through a pattern resume with it, from the position the server gave", async () => {
  const client = newClient({ channels: ["trade:*"] });
  const first = await socketNumber(0);
  await openWithResume(first);
  let reported = 0;
  client.addListener("unrecovered", () => reported++);
  first.deliver({ type: "position", positions: { "trade:executed": { epoch: "e1", offset: 0 } } });
  first.deliver({ channel: "trade:executed", data: {}, offset: 1 });
  first.deliver({ type: "position", positions: { "other:x": { epoch: "e9", offset: 0 } } });
  assert.equal(reported, 0);
  assert.deepEqual(client.position("trade:executed"), { epoch: "e1", offset: 1 });
  assert.equal(client.position("other:x"), undefined, "no pattern of the client covers it");
  first.drop();
  const second = await socketNumber(1);
  second.accept();
  const [resume] = second.frames("subscribe");
  assert.deepEqual(resume.channels, ["trade:*"]);
  assert.deepEqual(resume.since, { "trade:executed": { epoch: "e1", offset: 1 } });
  client.close();
});

test("matchesPattern is sure only of literal, * and ? patterns", () => {
  assert.equal(matchesPattern("trade:*", "trade:executed"), true);
  assert.equal(matchesPattern("trade:*", "trades"), false);
  assert.equal(matchesPattern("a?c.d", "abc.d"), true);
  assert.equal(matchesPattern("a?c.d", "abcxd"), false);
  assert.equal(matchesPattern("a[b]c", "abc"), undefined);
  assert.equal(matchesPattern("a\\*", "a*"), undefined);
  assert.equal(matchesPattern("?", "é"), undefined);
});

test("what does not fit in the queue is rejected, not dropped", async () => {
  const client = newClient({ maxQueue: 2 });
  await socketNumber(0); // never opens
  const a = client.send({ type: "ping" });
  const b = client.subscribe(["x"]);
  await assert.rejects(client.send({ type: "ping" }), { code: "queue_full" });
  client.close();
  await assert.rejects(a, { code: "closed" });
  await assert.rejects(b, { code: "closed" });
});

test("error frames reject a refused request; refused channels are listed", async () => {
  const client = newClient();
  const ws = await socketNumber(0);
  ws.accept();
  const bad = client.subscribe(["bad channel"]);
  ws.deliver({ type: "error", code: "invalid_channel", message: "no", id: ws.sent[0].id });
  await assert.rejects(bad, { code: "invalid_channel" });
  const partly = client.subscribe(["a", "secret"]);
  const id = ws.sent[1].id;
  ws.deliver({ type: "error", code: "forbidden", message: "no", id, channel: "secret" });
  ws.deliver({ type: "subscribed", channels: ["a"], id });
  const result = await partly;
  assert.deepEqual(result.channels, ["a"]);
  assert.deepEqual(result.refused, [{ channel: "secret", code: "forbidden", message: "no" }]);
  assert.deepEqual(client.channels, ["a"]);
  client.close();
});

test("a missing pong means a dead connection: the client reconnects", async () => {
  const client = newClient({ pingInterval: 10, pongTimeout: 20 });
  const ws = await socketNumber(0);
  ws.accept();
  const closed = await nextEvent(client, "close");
  assert.match(closed.reason, /ping timeout/);
  assert.ok(ws.frames("ping").length >= 1);
  const again = await socketNumber(1);
  assert.notEqual(again, ws);
  client.close();
});

test("pongs keep the connection", async () => {
  const client = newClient({ pingInterval: 5, pongTimeout: 50 });
  const ws = await socketNumber(0);
  ws.accept();
  let closes = 0;
  client.addListener("close", () => closes++);
  let pongs = 0;
  const answered = () => {
    for (const _ of ws.sent.splice(0)) {
      ws.deliver({ type: "pong" });
      pongs++;
    }
    return pongs >= 20 || closes > 0;
  };
  await until(answered, "20 pings");
  assert.equal(closes, 0);
  client.close();
});

test("repeated failures back off, from the reference's delay up to the maximum", async () => {
  globalThis.fetch = undefined;
  const client = newClient({ reconnectDelay: 4, maxReconnectDelay: 20, backoffAfter: 1 });
  const delays = [];
  client.addListener("close", (e) => delays.push(e.reconnectIn));
  try {
    for (let n = 0; n < 5; n++) (await socketNumber(n)).fail();
    await until(() => delays.length === 5, "five close events");
    assert.deepEqual(delays, [4, 8, 16, 20, 20]);
    const ok = await socketNumber(5);
    await openWithResume(ok);
    ok.drop(1001);
    assert.equal(delays.at(-1), 4, "a connection that opened resets the backoff");
  } finally {
    client.close();
    delete globalThis.fetch;
  }
});

test("4001: a fresh token from the token function, at once", async () => {
  let n = 0;
  const client = newClient({ token: async () => `tok${++n}` });
  const first = await socketNumber(0);
  assert.deepEqual(first.protocols, ["wsbridge", "wsbridge.token.tok1"]);
  first.accept();
  first.drop(CloseCode.TOKEN_EXPIRED, "token expired");
  const second = await socketNumber(1);
  assert.deepEqual(second.protocols, ["wsbridge", "wsbridge.token.tok2"]);
  client.close();
});

test("4001 with a fixed token stops the client and says why", async () => {
  const client = newClient({ token: "fixed", tokenTransport: "query" });
  const first = await socketNumber(0);
  assert.equal(first.url, "ws://bridge.test/ws?token=fixed");
  first.accept();
  const stopped = nextEvent(client, "stopped");
  first.drop(CloseCode.TOKEN_EXPIRED, "token expired");
  assert.match((await stopped).reason, /token expired/);
  assert.equal(client.state, "stopped");
});

test("a token is refreshed before it expires", async () => {
  const jwt = (exp) =>
    `e30.${Buffer.from(JSON.stringify({ exp })).toString("base64url")}.sig`;
  const tokens = [jwt(Date.now() / 1000 + 0.05), jwt(Date.now() / 1000 + 3600)];
  let calls = 0;
  const client = newClient({ token: () => tokens[calls++], tokenRefreshMargin: 0 });
  (await socketNumber(0)).accept();
  const second = await socketNumber(1);
  assert.equal(second.protocols[1], `wsbridge.token.${tokens[1]}`);
  assert.equal(calls, 2);
  client.close();
});

test("a refused handshake stops the client with the server's reason", async () => {
  globalThis.fetch = async () => new Response("origin not allowed", { status: 403 });
  try {
    const client = newClient();
    const stopped = nextEvent(client, "stopped");
    const closes = [];
    client.addListener("close", (e) => closes.push(e.reason));
    for (let n = 0; n < 3; n++) (await socketNumber(n)).fail();
    assert.equal((await stopped).reason, "handshake refused: HTTP 403 (origin not allowed)");
    assert.equal(closes.length, 2, "two more attempts before giving up");
    assert.equal(ScriptedSocket.all.length, 3);
  } finally {
    delete globalThis.fetch;
  }
});

test("a server that cannot be reached is retried", async () => {
  globalThis.fetch = async () => {
    throw new TypeError("fetch failed");
  };
  try {
    const client = newClient();
    (await socketNumber(0)).fail();
    await socketNumber(1);
    client.close();
  } finally {
    delete globalThis.fetch;
  }
});

test("broker frames and error frames reach the application", async () => {
  const client = newClient();
  const ws = await socketNumber(0);
  ws.accept();
  const broker = nextEvent(client, "broker");
  ws.deliver({ type: "broker", status: "down" });
  assert.deepEqual(await broker, { status: "down" });
  const error = nextEvent(client, "error");
  ws.deliver({ type: "error", code: "invalid_json", message: "not JSON" });
  assert.equal((await error).code, "invalid_json");
  client.close();
});

test("hostile frames are ignored", () => {
  for (const raw of ["", "nope", "[1]", "null", '{"type":5}', '{"channel":1,"data":2}', '{"type":"subscribed","channels":[1]}']) {
    assert.equal(parseFrame(raw).kind, "other", raw);
  }
  assert.equal(parseFrame(new Uint8Array(2)).kind, "other");
  const event = parseFrame('{"channel":"c","data":null,"offset":-3}');
  assert.deepEqual(event, { kind: "event", frame: { channel: "c", data: null } });
  for (const raw of ['{"type":"position"}', '{"type":"position","positions":[1]}']) {
    assert.equal(parseFrame(raw).kind, "other", raw);
  }
  const position = parseFrame('{"type":"position","positions":{"c":{"epoch":7,"offset":-1},"d":3}}');
  // Members of the wrong type are left out; the client skips an entry without epoch and offset.
  assert.deepEqual(position, { kind: "position", frame: { type: "position", positions: { c: { offset: -1 } } } });
});

test("tokenExpiry reads a JWT's exp and nothing else", () => {
  const payload = Buffer.from(JSON.stringify({ exp: 10 })).toString("base64url");
  assert.equal(tokenExpiry(`x.${payload}.y`), 10_000);
  assert.equal(tokenExpiry("opaque"), undefined);
  assert.equal(tokenExpiry("a.!!!.b"), undefined);
});

test("a listener that throws does not stop the others", async () => {
  const errors = [];
  const original = globalThis.reportError;
  globalThis.reportError = (e) => errors.push(e);
  try {
    const client = newClient();
    const ws = await socketNumber(0);
    ws.accept();
    const seen = [];
    client.on("c", () => {
      throw new Error("boom");
    });
    client.on("c", (data) => seen.push(data));
    ws.deliver({ channel: "c", data: 1 });
    assert.deepEqual(seen, [1]);
    assert.equal(errors.length, 1);
    client.close();
  } finally {
    globalThis.reportError = original;
  }
});

test("4008 (slow consumer): reconnect after the delay and resume", async () => {
  const client = newClient({ channels: ["trade:executed"] });
  const first = await socketNumber(0);
  await openWithResume(first, { "trade:executed": { epoch: "e1", offset: 2 } });
  const closed = nextEvent(client, "close");
  first.drop(CloseCode.SLOW_CONSUMER, "slow consumer: outbound buffer full");
  assert.deepEqual(await closed, {
    code: 4008,
    reason: "slow consumer: outbound buffer full",
    reconnectIn: 5,
  });
  const second = await socketNumber(1);
  second.accept();
  assert.deepEqual(second.sent[0].since, { "trade:executed": { epoch: "e1", offset: 2 } });
  client.close();
});

test("1008 (the client sent too much) backs off like a failure", async () => {
  const client = newClient({ reconnectDelay: 4, backoffAfter: 0 });
  const first = await socketNumber(0);
  first.accept();
  const closed = nextEvent(client, "close");
  first.drop(CloseCode.POLICY_VIOLATION, "too many messages");
  assert.equal((await closed).reconnectIn, 8);
  client.close();
});

test("a request without an acknowledgement is rejected after requestTimeout", async () => {
  const client = newClient({ requestTimeout: 20 });
  const ws = await socketNumber(0);
  ws.accept();
  await assert.rejects(client.subscribe(["a"]), { code: "timeout" });
  client.close();
});

test("the probe asks https:// for wss://, with the token; a 404 is retried", async () => {
  let asked;
  globalThis.fetch = async (url) => {
    asked = url;
    return new Response("", { status: 404 });
  };
  try {
    const client = newClient({ url: "wss://bridge.test/ws?x=1", token: "t" });
    (await socketNumber(0)).fail();
    await socketNumber(1);
    assert.equal(asked, "https://bridge.test/ws?x=1&token=t");
    client.close();
  } finally {
    delete globalThis.fetch;
  }
});

test("a refusal worth retrying (503) is retried, its reason told in the close event", async () => {
  globalThis.fetch = async () => new Response("too many connections", { status: 503 });
  try {
    const client = newClient();
    const closed = nextEvent(client, "close");
    (await socketNumber(0)).fail();
    const { reason, reconnectIn } = await closed;
    assert.equal(reason, "handshake refused: HTTP 503 (too many connections)");
    assert.ok(reconnectIn !== undefined);
    await socketNumber(1);
    assert.equal(client.state, "connecting");
    client.close();
  } finally {
    delete globalThis.fetch;
  }
});

test("a refusal's body is shown only when it is plain text", async () => {
  globalThis.fetch = async () =>
    new Response("<html>Forbidden</html>", {
      status: 403,
      headers: { "content-type": "text/html" },
    });
  try {
    const client = newClient();
    const stopped = nextEvent(client, "stopped");
    for (let n = 0; n < 3; n++) (await socketNumber(n)).fail();
    assert.equal((await stopped).reason, "handshake refused: HTTP 403");
  } finally {
    delete globalThis.fetch;
  }
});

test("426 (the handshake would be accepted) is no refusal: retried with the close's reason", async () => {
  globalThis.fetch = async () =>
    new Response("WebSocket endpoint: connect with a WebSocket client", { status: 426 });
  try {
    const client = newClient();
    const closed = nextEvent(client, "close");
    (await socketNumber(0)).fail();
    assert.equal((await closed).reason, "the connection could not be opened");
    await socketNumber(1);
    client.close();
  } finally {
    delete globalThis.fetch;
  }
});
