// Compiled with the generated declarations (saved as events.d.ts next to this file) by
// tests/test_export.py, with `tsc --strict --noEmit`. Each `@ts-expect-error` line must fail
// to type-check, or the build fails: wrong narrowing is caught both ways.
import type {
  ClientFrame,
  EventChannel,
  EventPayloads,
  ServerFrame,
  TradeExecuted,
  WSMessage,
} from "./events";

export function describe(msg: WSMessage): string {
  if (msg.channel === "trade:executed") {
    const symbol: string = msg.data.symbol;
    const quantity: number = msg.data.quantity;
    const side: "BUY" | "SELL" = msg.data.side;
    return `${side} ${quantity} ${symbol} at ${msg.data.entry_price}`;
  }
  if (msg.channel === "signal:generated") {
    const strength: number = msg.data.strength;
    // Optional fields are possibly undefined or null.
    // @ts-expect-error timestamp may be missing
    const when: string = msg.data.timestamp;
    const rsi = msg.data.metadata?.indicators?.["rsi"];
    return `${strength} ${when} ${rsi ?? "-"}`;
  }
  if (msg.channel === "risk:kill_switch") {
    // @ts-expect-error a kill switch event has no symbol
    return msg.data.symbol;
  }
  if (msg.channel === "portfolio:update") {
    const positions = msg.data.positions ?? [];
    return positions.map((p) => `${p.symbol}:${p.market_value}`).join(",");
  }
  // @ts-expect-error without narrowing, data is a union: not every payload has a symbol
  return msg.data.symbol;
}

export function severity(msg: WSMessage): "info" | "warning" | "critical" | null {
  return msg.channel === "risk:alert" ? msg.data.severity : null;
}

// @ts-expect-error "HOLD" is a signal direction, not a trade side
export const wrongSide: TradeExecuted["side"] = "HOLD";

// @ts-expect-error not a registered channel
export const wrongChannel: EventChannel = "trade:unknown";

export function on<K extends EventChannel>(channel: K, handler: (data: EventPayloads[K]) => void): [K, typeof handler] {
  return [channel, handler];
}

export const handler = on("order:status", (data) => {
  const status: "PENDING" | "SUBMITTED" | "FILLED" | "CANCELLED" | "REJECTED" = data.status;
  return status;
});

export const ping: ClientFrame = { type: "ping" };
export const subscribe: ClientFrame = { type: "subscribe", channels: ["risk:*"], id: 1 };

export function controlType(frame: ServerFrame): string {
  if (!("type" in frame)) {
    return frame.channel;
  }
  if (frame.type === "error") {
    return `${frame.code}: ${frame.message}`;
  }
  return frame.type;
}
