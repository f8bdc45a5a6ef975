import type { ClientFrame, ServerFrame } from "./wsbridge-events";

declare function showEquity(total: number): void;
declare function showToast(severity: "info" | "warning" | "critical", text: string): void;
declare function setBrokerBanner(down: boolean): void;

export function handle(frame: ServerFrame): void {
  if ("type" in frame) {
    // A control frame: pong, subscribed, unsubscribed, error or broker.
    if (frame.type === "broker") setBrokerBanner(frame.status === "down");
    if (frame.type === "error") console.warn(frame.code, frame.message);
    return;
  }
  // An event frame: comparing `channel` narrows `data` to that channel's payload.
  switch (frame.channel) {
    case "portfolio:update":
      showEquity(frame.data.total_equity);
      break;
    case "risk:alert":
      showToast(frame.data.severity, frame.data.reason);
      break;
  }
}

export const subscribe: ClientFrame = { type: "subscribe", channels: ["risk:*"], id: 1 };
