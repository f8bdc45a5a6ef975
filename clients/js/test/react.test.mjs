// The React hooks in Node, rendered with react-dom/server: the first render, which is what
// a server-rendered page and a reloaded dashboard show before any effect runs. Updates after
// mount need a DOM (react-dom/client) and are tested in Chromium (tests/test_js_client.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { createElement } from "react";
import { renderToString } from "react-dom/server";

import { WsbridgeClient } from "../dist/index.js";
import { WsbridgeProvider, createHooks, useChannel, useWebSocket } from "../dist/react.js";

/** A WebSocket that opens when told and records what the client sends. */
class Socket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.protocol = "";
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    Socket.all.push(this);
  }
  send() {}
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  deliver(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

async function connectedClient() {
  Socket.all = [];
  const client = new WsbridgeClient({ url: "ws://bridge.test/ws", WebSocket: Socket });
  // The client opens its socket after asking for a token: a few ticks, bounded.
  for (let tick = 0; tick < 200 && Socket.all.length === 0; tick++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const ws = Socket.all[0];
  assert.ok(ws, "the client opened no socket");
  ws.open();
  ws.deliver({ channel: "portfolio:update", data: { total_equity: 1234.5 } });
  ws.deliver({ channel: "trade:executed", data: { symbol: "AAPL" }, offset: 7 });
  return client;
}

function Dashboard() {
  const { connected, lastMessage, client } = useWebSocket();
  const portfolio = useChannel("portfolio:update");
  return [
    connected ? "live" : "offline",
    portfolio?.total_equity ?? "none",
    lastMessage?.channel ?? "none",
    client === null ? "no client" : "client",
  ].join("|");
}

test("under a provider, useChannel shows the channel's latest value at the first render", async () => {
  const client = await connectedClient();
  try {
    const page = createElement(WsbridgeProvider, { client }, createElement(Dashboard));
    const html = renderToString(page);
    // The latest value is there at once; connected and lastMessage follow the first effect.
    assert.equal(html, "offline|1234.5|none|client");
  } finally {
    client.close();
  }
});

test("the hooks take a client as an option instead of a provider", async () => {
  const client = await connectedClient();
  const { useChannel: useTyped } = createHooks();
  function Equity() {
    return String(useTyped("portfolio:update", { client })?.total_equity);
  }
  try {
    assert.equal(renderToString(createElement(Equity)), "1234.5");
  } finally {
    client.close();
  }
});

test("without a provider, a server render opens no connection and needs no page location", () => {
  Socket.all = [];
  assert.equal(globalThis.location, undefined);
  const html = renderToString(createElement(Dashboard));
  assert.equal(html, "offline|none|none|no client");
  assert.equal(Socket.all.length, 0);
});
