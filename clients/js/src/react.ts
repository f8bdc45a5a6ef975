/**
 * React hooks over {@link WsbridgeClient}: the reference dashboard's `useWebSocket` shape
 * (`lastMessage`, `connected`) and `useChannel`, the latest value of one channel.
 *
 * Without a provider, the hooks of a page share one connection per url (by default `/ws` on
 * the page's host); `<WsbridgeProvider client={client}>` gives them a client of your own.
 */

import { createContext, createElement, useContext, useEffect, useState } from "react";
import type { ReactNode } from "react";

import { WsbridgeClient } from "./index.js";
import type { ChannelEvent, ClientOptions } from "./index.js";

/** The union of the event messages of `Events`: comparing `channel` narrows `data`. */
export type MessageOf<Events extends object> = {
  [C in keyof Events & string]: ChannelEvent<C, Events[C]>;
}[keyof Events & string];

const ClientContext = createContext<WsbridgeClient<object> | null>(null);

/** Props of {@link WsbridgeProvider}. */
export interface WsbridgeProviderProps {
  /** The client the hooks below the provider use; the application opens and closes it. */
  client: WsbridgeClient<object>;
  children?: ReactNode;
}

/** Give the hooks below a shared client. */
export function WsbridgeProvider(props: WsbridgeProviderProps): ReactNode {
  return createElement(ClientContext.Provider, { value: props.client }, props.children);
}

/** Options of {@link useWebSocket}: a client's options, `url` optional. */
export type UseWebSocketOptions<Events extends object> = Partial<ClientOptions> & {
  /** Use this client instead of the provider's or a new one. */
  client?: WsbridgeClient<Events>;
};

/** What {@link useWebSocket} returns. */
export interface UseWebSocketResult<Events extends object> {
  /** The most recent event, or null before the first one. */
  lastMessage: MessageOf<Events> | null;
  /** Whether the connection is open and its subscriptions resumed. */
  connected: boolean;
  /** The client, null until the first effect ran. */
  client: WsbridgeClient<Events> | null;
  /** Send a frame; resolves once sent (queued while disconnected). */
  send: (frame: Record<string, unknown>) => Promise<void>;
}

/** ws(s)://<this page's host>/ws, where the development server proxies the bridge. */
export function defaultUrl(): string {
  const location = (globalThis as { location?: { protocol: string; host: string } }).location;
  if (location === undefined) throw new Error("no page location: pass the url option");
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

// Hooks without a provider or a client share one client per url, closed with its last user.
const shared = new Map<string, { client: WsbridgeClient<object>; users: number }>();

function acquire(url: string, options: Partial<ClientOptions>): WsbridgeClient<object> {
  let entry = shared.get(url);
  if (entry === undefined) {
    entry = { client: new WsbridgeClient<object>({ ...options, url }), users: 0 };
    shared.set(url, entry);
  }
  entry.users++;
  return entry.client;
}

function release(url: string): void {
  const entry = shared.get(url);
  if (entry === undefined || --entry.users > 0) return;
  shared.delete(url);
  entry.client.close();
}

/**
 * The client of `options.client`, or of the nearest provider, or else the client shared by
 * every hook of the page with the same url (made with the first user's options on mount,
 * closed when its last user unmounts).
 */
export function useWsbridgeClient<Events extends object = Record<string, unknown>>(
  options: UseWebSocketOptions<Events> = {},
): WsbridgeClient<Events> | null {
  const context = useContext(ClientContext) as WsbridgeClient<Events> | null;
  const given = options.client ?? context;
  const [own, setOwn] = useState<WsbridgeClient<Events> | null>(null);
  const url = options.url;
  useEffect(() => {
    if (given !== null) return undefined;
    const { client: _ignored, ...rest } = options;
    const key = url ?? defaultUrl();
    setOwn(acquire(key, rest) as WsbridgeClient<Events>);
    return () => {
      setOwn(null);
      release(key);
    };
    // The options are read when the client is made; only the url and the given client renew it.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [given, url]);
  return given ?? own;
}

/** The reference dashboard's hook: the latest event and whether the connection is up. */
export function useWebSocket<Events extends object = Record<string, unknown>>(
  options: UseWebSocketOptions<Events> = {},
): UseWebSocketResult<Events> {
  const client = useWsbridgeClient<Events>(options);
  const [lastMessage, setLastMessage] = useState<MessageOf<Events> | null>(null);
  const [connected, setConnected] = useState(false);
  useEffect(() => {
    if (client === null) return undefined;
    setConnected(client.state === "open");
    const offState = client.addListener("state", (state) => setConnected(state === "open"));
    const offMessage = client.addListener("message", (event) =>
      setLastMessage(event as MessageOf<Events>),
    );
    return () => {
      offState();
      offMessage();
    };
  }, [client]);
  const send = (frame: Record<string, unknown>): Promise<void> =>
    client === null ? Promise.reject(new Error("not connected yet")) : client.send(frame);
  return { lastMessage, connected, client, send };
}

/**
 * The latest value published on `channel` (a state channel such as `portfolio:update`),
 * or undefined before the first one. Listens only: the channel must be subscribed, as the
 * server's default channels are.
 */
export function useChannel<
  Events extends object = Record<string, unknown>,
  C extends keyof Events & string = keyof Events & string,
>(
  channel: C,
  options: UseWebSocketOptions<Events> = {},
): Events[C] | undefined {
  const client = useWsbridgeClient<Events>(options);
  const [value, setValue] = useState<Events[C] | undefined>(() => client?.latest(channel));
  useEffect(() => {
    if (client === null) return undefined;
    setValue(client.latest(channel));
    return client.on(channel, (data) => setValue(() => data));
  }, [client, channel]);
  return value;
}

/** The hooks bound to one event map: `const { useWebSocket, useChannel } = createHooks<EventPayloads>()`. */
export interface Hooks<Events extends object> {
  useWebSocket: (options?: UseWebSocketOptions<Events>) => UseWebSocketResult<Events>;
  useChannel: <C extends keyof Events & string>(
    channel: C,
    options?: UseWebSocketOptions<Events>,
  ) => Events[C] | undefined;
}

/** Hooks typed with `Events`, so that `useChannel("portfolio:update")` knows its payload. */
export function createHooks<Events extends object>(): Hooks<Events> {
  return {
    useWebSocket: (options) => useWebSocket<Events>(options),
    useChannel: (channel, options) => useChannel<Events, typeof channel>(channel, options),
  };
}
