// Use: in examples/react, npm ci && npm run dev (with the bridge on port 8000); see README.md.
//
// The reference dashboard's useWebSocket hook, on the wsbridge client's React binding and
// typed with the declarations wsbridge generates from its event registry. Regenerate them
// after a schema change: wsbridge schema --format typescript -o examples/react/src/wsmessage.d.ts
//
//   const { lastMessage, connected } = useWebSocket();
//   if (lastMessage?.channel === "portfolio:update") lastMessage.data.total_equity; // a number
//
// The binding connects on mount to ws(s)://<this page's host>/ws (the dev server proxies it
// to the bridge), pings every 30 s, reconnects 3 s after a close and resumes the channels
// with history, so trades published during a drop still arrive; it closes on unmount.

import { createHooks } from "wsbridge/react";
import type { UseWebSocketOptions } from "wsbridge/react";
import type { ClientFrame, EventPayloads, WSMessage } from "./wsmessage";

const hooks = createHooks<EventPayloads>();

export interface UseWebSocketResult {
  /** The most recent event frame, or null before the first one. */
  lastMessage: WSMessage | null;
  /** Whether the connection is open (and its channels resumed). */
  connected: boolean;
  /** Send a frame; queued while disconnected, rejected when the queue is full. */
  send: (frame: ClientFrame) => Promise<void>;
}

export function useWebSocket(options: UseWebSocketOptions<EventPayloads> = {}): UseWebSocketResult {
  const { lastMessage, connected, send } = hooks.useWebSocket(options);
  return { lastMessage, connected, send: (frame) => send({ ...frame }) };
}

/** The latest value of a channel, such as the portfolio, or undefined before the first one. */
export const useChannel = hooks.useChannel;
