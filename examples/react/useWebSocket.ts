// Use: copy useWebSocket.ts and wsmessage.d.ts into your React app (e.g. src/hooks/).
// Type-check here: npx -p typescript -p @types/react tsc -p examples/react
// Regenerate the types after a schema change:
//   wsbridge schema --format typescript -o examples/react/wsmessage.d.ts
//
// The reference dashboard's useWebSocket hook, typed with the WSMessage declarations that
// wsbridge generates from its event registry: comparing lastMessage.channel with a channel
// name narrows lastMessage.data to that channel's payload type.
//
//   const { lastMessage, connected } = useWebSocket();
//   useEffect(() => {
//     if (lastMessage?.channel === "portfolio:update") {
//       console.log("equity", lastMessage.data.total_equity); // typed as number
//     }
//   }, [lastMessage]);
//   return <div>{connected ? "Live" : "Reconnecting..."}</div>;
//
// Behaviour, as the reference describes it: connects on mount; sends {"type": "ping"}
// every 30 s; ignores {"type": "pong"} (and every other control frame) so they cause no
// re-render; reconnects 3 s after a close or an error; cleans up on unmount.

import { useCallback, useEffect, useRef, useState } from "react";
import type { ClientFrame, ServerFrame, WSMessage } from "./wsmessage";

export interface UseWebSocketOptions {
  /** The endpoint. Default: ws(s)://<this page's host>/ws (the dev server proxies /ws). */
  url?: string;
  /** Milliseconds between two pings. Default: 30 000. */
  pingInterval?: number;
  /** Milliseconds before reconnecting after a close or an error. Default: 3 000. */
  reconnectDelay?: number;
}

export interface UseWebSocketResult {
  /** The most recent event frame, or null before the first one. */
  lastMessage: WSMessage | null;
  /** Whether the WebSocket is open. */
  connected: boolean;
  /** Send a frame (subscribe / unsubscribe / ping); false when not connected. */
  send: (frame: ClientFrame) => boolean;
}

const PING: ClientFrame = { type: "ping" };

function defaultUrl(): string {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${window.location.host}/ws`;
}

/** Event frames have no `type`; every control frame (pong, acks, errors, broker) has one. */
function isEvent(frame: ServerFrame): frame is WSMessage {
  return !("type" in frame);
}

function parse(data: unknown): ServerFrame | null {
  if (typeof data !== "string") return null; // the protocol is text only
  try {
    const value: unknown = JSON.parse(data);
    return typeof value === "object" && value !== null ? (value as ServerFrame) : null;
  } catch {
    return null; // malformed frames are ignored, as the reference's client does
  }
}

export function useWebSocket(options: UseWebSocketOptions = {}): UseWebSocketResult {
  const { url = defaultUrl(), pingInterval = 30_000, reconnectDelay = 3_000 } = options;
  const [lastMessage, setLastMessage] = useState<WSMessage | null>(null);
  const [connected, setConnected] = useState(false);
  const socketRef = useRef<WebSocket | null>(null);

  useEffect(() => {
    let disposed = false;
    let socket: WebSocket | null = null;
    let pingTimer: number | undefined;
    let reconnectTimer: number | undefined;

    const connect = (): void => {
      const ws = new WebSocket(url);
      socket = ws;
      socketRef.current = ws;
      ws.onopen = () => {
        if (disposed) return;
        setConnected(true);
        pingTimer = window.setInterval(() => {
          if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(PING));
        }, pingInterval);
      };
      ws.onmessage = (message: MessageEvent<unknown>) => {
        const frame = parse(message.data);
        if (frame !== null && isEvent(frame)) setLastMessage(frame);
      };
      // An error is always followed by a close, which schedules the reconnection.
      ws.onerror = () => ws.close();
      ws.onclose = () => {
        window.clearInterval(pingTimer);
        if (socketRef.current === ws) socketRef.current = null;
        if (disposed) return;
        setConnected(false);
        reconnectTimer = window.setTimeout(connect, reconnectDelay);
      };
    };

    connect();
    return () => {
      disposed = true;
      window.clearTimeout(reconnectTimer);
      window.clearInterval(pingTimer);
      socket?.close(1000, "unmounted");
    };
  }, [url, pingInterval, reconnectDelay]);

  const send = useCallback((frame: ClientFrame): boolean => {
    const ws = socketRef.current;
    if (ws === null || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }, []);

  return { lastMessage, connected, send };
}
