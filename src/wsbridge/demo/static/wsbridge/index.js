/**
 * wsbridge: the client of a wsbridge WebSocket endpoint, for browsers and Node.
 *
 * It keeps one connection open: pings, reconnects with a delay and then backoff, acknowledges
 * subscriptions as promises, resumes every channel with history from its last offset after a
 * reconnect, and queues what is sent while disconnected. Type it with the declarations that
 * `wsbridge schema --format typescript` writes: `new WsbridgeClient<EventPayloads>(...)`.
 */
import { CHANNEL_ERRORS, CloseCode, SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX, MAX_SINCE, WHOLE_REQUEST_ERRORS, isPattern, matchesPattern, parseFrame, tokenExpiry, } from "./protocol.js";
export { CloseCode, isPattern, parseFrame, tokenExpiry } from "./protocol.js";
/** The package's version, the same as the Python package's. */
export const VERSION = "0.1.0-dev.0";
/** An error from the server (its `code`) or from the client (`closed`, `queue_full`, ...). */
export class WsbridgeError extends Error {
    /** The protocol's error code, or the client's own: `closed`, `queue_full`, `timeout`, `token`, `refused`. */
    code;
    /** The channel the error is about, when it names one. */
    channel;
    constructor(code, message, channel) {
        super(message);
        this.name = "WsbridgeError";
        this.code = code;
        this.channel = channel;
    }
}
const OPEN = 1;
/** Failed openings in a row, each explained by a 401 or 403, after which the client stops. */
const REFUSALS_BEFORE_STOP = 3;
/**
 * A connection to a wsbridge endpoint that stays open.
 *
 * `Events` maps channel names to payload types, such as the `EventPayloads` interface that
 * `wsbridge schema --format typescript` generates; `on("portfolio:update", ...)` then gets
 * a typed payload.
 */
export class WsbridgeClient {
    options;
    tokenSource;
    WebSocketImpl;
    socket;
    currentState = "idle";
    wanted = new Set();
    positions = new Map();
    latestValues = new Map();
    queue = [];
    inflight = new Map();
    nextId = 1;
    resumeId;
    failures = 0;
    attempt = 0;
    lastToken;
    refusals = 0;
    timers = new Set();
    pingTimer;
    pongTimer;
    channelListeners = new Map();
    clientListeners = new Map();
    constructor(options) {
        this.options = {
            url: options.url,
            tokenTransport: options.tokenTransport ?? "subprotocol",
            tokenRefreshMargin: options.tokenRefreshMargin ?? 30_000,
            pingInterval: options.pingInterval ?? 30_000,
            pongTimeout: options.pongTimeout ?? 10_000,
            connectTimeout: options.connectTimeout ?? 10_000,
            requestTimeout: options.requestTimeout ?? 10_000,
            reconnectDelay: options.reconnectDelay ?? 3_000,
            backoffAfter: options.backoffAfter ?? 1,
            maxReconnectDelay: options.maxReconnectDelay ?? 30_000,
            jitter: Math.min(1, Math.max(0, options.jitter ?? 0.5)),
            maxQueue: options.maxQueue ?? 100,
        };
        this.tokenSource = options.token;
        const impl = options.WebSocket ?? globalThis.WebSocket;
        if (impl === undefined) {
            throw new WsbridgeError("no_websocket", "no global WebSocket: pass the WebSocket option (Node 20 needs --experimental-websocket)");
        }
        this.WebSocketImpl = impl;
        for (const channel of options.channels ?? [])
            this.wanted.add(channel);
        if (options.autoConnect ?? true)
            this.connect();
    }
    /** The connection's state: `open` once connected and resumed. */
    get state() {
        return this.currentState;
    }
    /** The channels held (acknowledged, or asked with the `channels` option). */
    get channels() {
        return [...this.wanted];
    }
    /** The last position seen on each channel with history. */
    position(channel) {
        const p = this.positions.get(channel);
        return p === undefined ? undefined : { ...p };
    }
    /** The latest payload received on `channel` (an exact channel name), or undefined. */
    latest(channel) {
        return this.latestValues.get(channel);
    }
    /** Open the connection (again, after `close()` or a stop). */
    connect() {
        if (this.currentState !== "idle" && this.currentState !== "stopped")
            return;
        this.failures = 0;
        void this.open();
    }
    /** Close the connection for good; pending requests are rejected with `closed`. */
    close() {
        this.stop("closed by the application", undefined);
    }
    /** Listen to a channel's events; returns a function that removes the listener. */
    on(channel, listener) {
        return this.listen(this.channelListeners, channel, listener);
    }
    /** Listen to one of the client's own events ({@link ClientEvents}). */
    addListener(name, listener) {
        return this.listen(this.clientListeners, name, listener);
    }
    /**
     * Subscribe to channels and patterns. Resolves with the acknowledgement; rejects on an
     * error frame that refused the whole request, on timeout, or when the queue is full.
     */
    subscribe(channels) {
        return this.enqueue("subscribe", [...channels], undefined);
    }
    /** Unsubscribe from channels and patterns. Resolves with the acknowledgement. */
    unsubscribe(channels) {
        return this.enqueue("unsubscribe", [...channels], undefined);
    }
    /**
     * Send any frame the server accepts. Resolves once written to the connection, in order
     * with subscribe requests; queued while disconnected; rejects when the queue is full.
     */
    async send(frame) {
        await this.enqueue("send", [], frame);
    }
    // ---- listeners ----
    listen(table, key, listener) {
        let set = table.get(key);
        if (set === undefined) {
            set = new Set();
            table.set(key, set);
        }
        set.add(listener);
        return () => {
            set.delete(listener);
        };
    }
    emit(name, value) {
        for (const listener of [...(this.clientListeners.get(name) ?? [])]) {
            try {
                listener(value);
            }
            catch (error) {
                reportListenerError(error);
            }
        }
    }
    setState(state) {
        if (state === this.currentState)
            return;
        this.currentState = state;
        this.emit("state", state);
    }
    // ---- connection ----
    async open() {
        this.setState("connecting");
        let token;
        try {
            token = await this.freshToken();
        }
        catch (error) {
            this.emit("error", new WsbridgeError("token", `the token function failed: ${String(error)}`));
            this.scheduleReconnect(CloseCode.ABNORMAL, "no token", true);
            return;
        }
        if (this.currentState !== "connecting")
            return; // closed meanwhile
        this.attempt++;
        this.lastToken = token;
        let url = this.options.url;
        let protocols;
        if (token !== undefined) {
            if (this.options.tokenTransport === "query") {
                url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
            }
            else {
                protocols = [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token];
            }
        }
        let ws;
        try {
            ws = protocols === undefined ? new this.WebSocketImpl(url) : new this.WebSocketImpl(url, protocols);
        }
        catch (error) {
            this.stop(`cannot open ${this.options.url}: ${String(error)}`, undefined);
            return;
        }
        this.socket = ws;
        let opened = false;
        const connectTimer = this.later(() => {
            if (!opened)
                this.dead(ws, "connection timeout");
        }, this.options.connectTimeout);
        ws.onopen = () => {
            opened = true;
            this.clear(connectTimer);
            this.onOpen(ws, token);
        };
        ws.onmessage = (event) => {
            if (this.socket === ws)
                this.onMessage(event.data);
        };
        ws.onerror = () => {
            // Browsers follow an error with a close event, some runtimes do not before the
            // connection opened: a failed opening is handled here, once.
            if (!opened && this.socket === ws) {
                this.clear(connectTimer);
                this.onClose(CloseCode.ABNORMAL, "the connection could not be opened", false);
            }
        };
        ws.onclose = (event) => {
            this.clear(connectTimer);
            if (this.socket === ws)
                this.onClose(event.code, event.reason, opened);
        };
    }
    /**
     * After a failed opening, ask the endpoint over plain HTTP why: a WebSocket hides the
     * status of a refused handshake, and every wsbridge server answers a plain GET with the
     * handshake's decision. Resolves with the status and a reason to show, or undefined when
     * there is nothing to learn: no answer (a server down, a cross-origin fetch the browser
     * blocks), or 426 (the handshake would be accepted: the failure was elsewhere).
     */
    async refusal(token) {
        const fetchImpl = globalThis.fetch;
        if (fetchImpl === undefined)
            return undefined;
        try {
            const base = globalThis.location?.href;
            const url = new URL(this.options.url, base);
            if (url.protocol === "ws:")
                url.protocol = "http:";
            else if (url.protocol === "wss:")
                url.protocol = "https:";
            if (token !== undefined)
                url.searchParams.set("token", token);
            const response = await fetchImpl(url.toString(), {
                signal: AbortSignal.timeout(this.options.connectTimeout),
            });
            const { status } = response;
            if (status < 400 || status === 426)
                return undefined;
            // wsbridge's reasons are short plain text; a page of HTML says nothing useful here.
            const plain = (response.headers.get("content-type") ?? "").startsWith("text/plain");
            const text = plain ? (await response.text()).slice(0, 200).trim() : "";
            const reason = `handshake refused: HTTP ${status}${text === "" ? "" : ` (${text})`}`;
            return { status, reason };
        }
        catch {
            return undefined;
        }
    }
    onOpen(ws, token) {
        this.setState("resuming");
        this.pingTimer = setInterval(() => this.ping(ws), this.options.pingInterval);
        if (token !== undefined)
            this.scheduleTokenRefresh(ws, token);
        const channels = [...this.wanted];
        if (channels.length === 0) {
            this.ready([]);
            return;
        }
        // One request resumes every channel held; queued frames wait for its answer.
        const id = this.id();
        this.resumeId = id;
        const frame = { type: "subscribe", channels, id };
        const since = this.since(channels);
        if (since !== undefined)
            frame["since"] = since;
        ws.send(JSON.stringify(frame));
        const timer = this.later(() => {
            if (this.resumeId === id)
                this.dead(ws, "no acknowledgement of the resume");
        }, this.options.requestTimeout);
        this.inflight.set(id, {
            kind: "subscribe",
            channels,
            payload: undefined,
            refused: [],
            timer,
            resolve: (result) => this.ready(result.channels),
            reject: (error) => {
                this.emit("error", error);
                this.ready([]);
            },
        });
    }
    ready(resumed) {
        this.resumeId = undefined;
        this.failures = 0;
        this.refusals = 0;
        this.setState("open");
        this.emit("open", { resumed });
        this.flush();
    }
    since(channels) {
        const since = {};
        let count = 0;
        for (const channel of channels) {
            const p = this.positions.get(channel);
            if (p !== undefined) {
                since[channel] = { ...p };
                count++;
            }
        }
        // Channels reached through a pattern of the request resume with it, as many as every
        // server accepts; one left out shows a gap, if any, by its next offset.
        const patterns = channels.filter(isPattern);
        const room = Math.max(channels.length, MAX_SINCE);
        for (const [channel, p] of this.positions) {
            if (count >= room || patterns.length === 0)
                break;
            if (!(channel in since) && this.coveredBy(patterns, channel)) {
                since[channel] = { ...p };
                count++;
            }
        }
        return count > 0 ? since : undefined;
    }
    coveredBy(patterns, channel) {
        for (const pattern of patterns) {
            if (isPattern(pattern) && matchesPattern(pattern, channel) === true)
                return true;
        }
        return false;
    }
    ping(ws) {
        if (ws.readyState !== OPEN || this.pongTimer !== undefined)
            return;
        ws.send('{"type":"ping"}');
        this.pongTimer = setTimeout(() => {
            this.pongTimer = undefined;
            this.dead(ws, "ping timeout: no pong");
        }, this.options.pongTimeout);
    }
    /** Give up on a connection that does not answer: do not wait for its closing handshake. */
    dead(ws, reason) {
        if (this.socket !== ws)
            return;
        try {
            ws.close(4000, reason);
        }
        catch {
            // already closing
        }
        this.onClose(CloseCode.ABNORMAL, reason, ws.readyState !== 0);
    }
    onClose(code, reason, opened) {
        const ws = this.socket;
        if (ws !== undefined) {
            ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        }
        this.socket = undefined;
        this.stopTimers();
        this.requeueInflight();
        if (this.currentState === "stopped" || this.currentState === "idle")
            return;
        if (code === CloseCode.TOKEN_EXPIRED && typeof this.tokenSource !== "function") {
            this.stop("the token expired and no token function can give a fresh one", code);
            return;
        }
        if (code === CloseCode.TOKEN_EXPIRED) {
            // Ask for a fresh token and come back at once: the events missed meanwhile are resumed.
            this.emit("close", { code, reason, reconnectIn: 0 });
            this.setState("waiting");
            this.later(() => void this.open(), 0);
            return;
        }
        if (!opened) {
            void this.afterFailedOpening(code, reason);
            return;
        }
        this.scheduleReconnect(code, reason, false);
    }
    async afterFailedOpening(code, reason) {
        this.setState("waiting");
        const attempt = this.attempt;
        const refused = await this.refusal(this.lastToken);
        if (attempt !== this.attempt || this.currentState !== "waiting")
            return;
        if (refused === undefined || (refused.status !== 401 && refused.status !== 403)) {
            // Worth retrying (503 too many connections, say): the close event tells the reason.
            this.refusals = 0;
            this.scheduleReconnect(code, refused?.reason ?? reason, true);
        }
        else if (++this.refusals < REFUSALS_BEFORE_STOP) {
            // A refusal can be passing (a token that expired in between, a probe answered
            // differently from the handshake): try again, with a fresh token if there is a function.
            this.scheduleReconnect(code, refused.reason, true);
        }
        else {
            this.stop(refused.reason, code);
        }
    }
    scheduleReconnect(code, reason, failed) {
        // A connection that never opened, or that the server closed for the client's own
        // fault, counts as a failure: the delay grows until one succeeds.
        if (failed || code === CloseCode.POLICY_VIOLATION || code === CloseCode.MESSAGE_TOO_BIG) {
            this.failures++;
        }
        const delay = this.delay();
        this.emit("close", { code, reason, reconnectIn: delay });
        this.setState("waiting");
        this.later(() => void this.open(), delay);
    }
    delay() {
        const { reconnectDelay, backoffAfter, maxReconnectDelay, jitter } = this.options;
        const over = this.failures - backoffAfter;
        if (over <= 0)
            return reconnectDelay;
        const full = Math.min(maxReconnectDelay, reconnectDelay * 2 ** Math.min(over, 30));
        return Math.round(full * (1 - jitter * Math.random()));
    }
    stop(reason, code) {
        const ws = this.socket;
        this.socket = undefined;
        if (ws !== undefined) {
            ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
            try {
                ws.close(CloseCode.NORMAL, "client closed");
            }
            catch {
                // already closing
            }
        }
        this.stopTimers();
        for (const timer of this.timers)
            clearTimeout(timer);
        this.timers.clear();
        const closed = new WsbridgeError("closed", `the client stopped: ${reason}`);
        for (const request of [...this.inflight.values(), ...this.queue]) {
            clearTimeout(request.timer);
            request.reject(closed);
        }
        this.inflight.clear();
        this.queue.length = 0;
        this.resumeId = undefined;
        this.attempt++;
        const was = this.currentState;
        this.setState("stopped");
        if (was !== "stopped")
            this.emit("stopped", { reason, code });
    }
    stopTimers() {
        clearInterval(this.pingTimer);
        this.pingTimer = undefined;
        clearTimeout(this.pongTimer);
        this.pongTimer = undefined;
    }
    later(fn, ms) {
        const timer = setTimeout(() => {
            this.timers.delete(timer);
            fn();
        }, ms);
        this.timers.add(timer);
        return timer;
    }
    clear(timer) {
        clearTimeout(timer);
        this.timers.delete(timer);
    }
    // ---- token ----
    async freshToken() {
        const source = this.tokenSource;
        if (source === undefined)
            return undefined;
        const token = typeof source === "string" ? source : await source();
        if (typeof token !== "string" || token === "") {
            throw new Error("the token function returned no token");
        }
        return token;
    }
    scheduleTokenRefresh(ws, token) {
        if (typeof this.tokenSource !== "function" || this.options.tokenRefreshMargin < 0)
            return;
        const expiry = tokenExpiry(token);
        if (expiry === undefined)
            return;
        const due = Math.max(0, expiry - this.options.tokenRefreshMargin - Date.now());
        // Timers above 2^31 ms fire at once; a token valid that long needs no early refresh.
        if (due > 2 ** 31 - 1)
            return;
        this.later(() => {
            if (this.socket !== ws)
                return;
            // No refresh message exists on the wire: reconnect with a fresh token and resume.
            this.onClose(CloseCode.TOKEN_EXPIRED, "token refresh", true);
            try {
                ws.close(CloseCode.NORMAL, "token refresh");
            }
            catch {
                // already closing
            }
        }, due);
    }
    // ---- requests ----
    id() {
        return `c${this.nextId++}`;
    }
    enqueue(kind, channels, payload) {
        return new Promise((resolve, reject) => {
            if (this.currentState === "stopped" || this.currentState === "idle") {
                reject(new WsbridgeError("closed", "the client is not connected: call connect()"));
                return;
            }
            if (kind !== "send" && channels.length === 0) {
                reject(new WsbridgeError("invalid_field", "channels must not be empty"));
                return;
            }
            const request = {
                kind,
                channels,
                payload,
                resolve,
                reject,
                refused: [],
                timer: undefined,
            };
            if (this.currentState === "open" && this.queue.length === 0) {
                this.transmit(request);
                return;
            }
            if (this.queue.length + this.inflight.size >= this.options.maxQueue) {
                reject(new WsbridgeError("queue_full", `${this.options.maxQueue} requests wait for the connection already`));
                return;
            }
            this.queue.push(request);
        });
    }
    flush() {
        while (this.currentState === "open" && this.queue.length > 0) {
            const request = this.queue.shift();
            if (request !== undefined)
                this.transmit(request);
        }
    }
    transmit(request) {
        const ws = this.socket;
        if (ws === undefined || ws.readyState !== OPEN) {
            this.queue.unshift(request);
            return;
        }
        if (request.kind === "send") {
            ws.send(JSON.stringify(request.payload));
            request.resolve({ channels: [], refused: [], positions: {} });
            return;
        }
        const id = this.id();
        const frame = { type: request.kind, channels: request.channels, id };
        if (request.kind === "subscribe") {
            const since = this.since(request.channels);
            if (since !== undefined)
                frame["since"] = since;
        }
        request.refused = [];
        request.timer = this.later(() => {
            if (this.inflight.get(id) === request) {
                this.inflight.delete(id);
                request.reject(new WsbridgeError("timeout", `no acknowledgement of ${request.kind}`));
            }
        }, this.options.requestTimeout);
        this.inflight.set(id, request);
        ws.send(JSON.stringify(frame));
    }
    /** Requests sent but not acknowledged go out again, first, on the next connection. */
    requeueInflight() {
        const again = [...this.inflight.entries()]
            .filter(([id]) => id !== this.resumeId)
            .map(([, request]) => request);
        for (const request of this.inflight.values()) {
            if (request.timer !== undefined)
                this.clear(request.timer);
        }
        this.inflight.clear();
        this.resumeId = undefined;
        this.queue.unshift(...again);
    }
    // ---- frames ----
    onMessage(data) {
        const parsed = parseFrame(data);
        switch (parsed.kind) {
            case "event":
                this.onEvent(parsed.frame);
                break;
            case "pong":
                clearTimeout(this.pongTimer);
                this.pongTimer = undefined;
                break;
            case "ack":
                this.onAck(parsed.frame);
                break;
            case "error":
                this.onError(parsed.frame);
                break;
            case "broker":
                this.emit("broker", { status: parsed.frame.status });
                break;
            case "position":
                this.onPosition(parsed.frame);
                break;
            case "other":
                break;
        }
    }
    onEvent(frame) {
        if (frame.offset !== undefined) {
            const p = this.positions.get(frame.channel);
            if (p !== undefined) {
                if (frame.offset <= p.offset)
                    return; // seen already: a resume never repeats an event
                p.offset = frame.offset;
            }
        }
        this.latestValues.set(frame.channel, frame.data);
        const event = { channel: frame.channel, data: frame.data };
        if (frame.offset !== undefined)
            event.offset = frame.offset;
        this.emit("message", event);
        for (const listener of [...(this.channelListeners.get(frame.channel) ?? [])]) {
            try {
                listener(frame.data, event);
            }
            catch (error) {
                reportListenerError(error);
            }
        }
    }
    onAck(frame) {
        const id = frame.id === undefined ? undefined : String(frame.id);
        const request = id === undefined ? undefined : this.inflight.get(id);
        if (id === undefined || request === undefined)
            return;
        this.inflight.delete(id);
        if (request.timer !== undefined)
            this.clear(request.timer);
        const positions = frame.positions ?? {};
        if (frame.type === "subscribed") {
            for (const channel of frame.channels) {
                this.wanted.add(channel);
                this.track(channel, positions[channel]);
            }
            for (const refused of request.refused)
                this.wanted.delete(refused.channel);
        }
        else {
            for (const channel of frame.channels) {
                this.wanted.delete(channel);
                this.positions.delete(channel);
            }
            for (const channel of [...this.positions.keys()]) {
                if (!this.wanted.has(channel) && !this.coveredBy(this.wanted, channel)) {
                    this.positions.delete(channel); // its pattern is gone too
                }
            }
        }
        request.resolve({ channels: frame.channels, refused: request.refused, positions });
    }
    /** Record a channel's position from an acknowledgement. */
    track(channel, ack) {
        if (isPattern(channel) || ack?.epoch === undefined || ack.offset === undefined)
            return;
        const known = this.positions.get(channel);
        const fresh = { epoch: ack.epoch, offset: ack.offset };
        if (ack.recovered === true)
            return; // the missed events follow and advance the offset
        if (ack.recovered === false) {
            this.positions.set(channel, fresh);
            this.emit("unrecovered", { channel, position: { ...fresh } });
            return;
        }
        if (known === undefined) {
            this.positions.set(channel, fresh);
        }
        else if (known.epoch !== ack.epoch) {
            // The history was lost since this client last saw the channel.
            this.positions.set(channel, fresh);
            this.emit("unrecovered", { channel, position: { ...fresh } });
        }
        // Same epoch, held already: events in flight carry on from the known offset.
    }
    /** The server says where channels' next events start; `recovered: false`: some were lost. */
    onPosition(frame) {
        for (const [channel, found] of Object.entries(frame.positions)) {
            if (found.epoch === undefined || found.offset === undefined || found.offset < 0)
                continue;
            const known = this.positions.get(channel);
            const lost = found.recovered === false || (known !== undefined && known.epoch !== found.epoch);
            const fresh = { epoch: found.epoch, offset: found.offset };
            if (known === undefined) {
                // The first event of a channel reached through a pattern: resumable from now on.
                const through = !this.wanted.has(channel) && this.coveredBy(this.wanted, channel);
                if (through && this.positions.size < 10_000)
                    this.positions.set(channel, fresh);
            }
            else if (lost) {
                this.positions.set(channel, fresh);
            }
            if (lost)
                this.emit("unrecovered", { channel, position: { ...fresh } });
        }
    }
    onError(frame) {
        const error = new WsbridgeError(frame.code, frame.message, frame.channel);
        const id = frame.id === undefined ? undefined : String(frame.id);
        const request = id === undefined ? undefined : this.inflight.get(id);
        if (id !== undefined && request !== undefined) {
            if (CHANNEL_ERRORS.has(frame.code) && frame.channel !== undefined) {
                request.refused.push({ channel: frame.channel, code: frame.code, message: frame.message });
            }
            else if (WHOLE_REQUEST_ERRORS.has(frame.code)) {
                this.inflight.delete(id);
                if (request.timer !== undefined)
                    this.clear(request.timer);
                request.reject(error);
            }
        }
        this.emit("error", error);
    }
}
function reportListenerError(error) {
    // A listener's exception must not break the client: report it as browsers do.
    const report = globalThis.reportError;
    if (report !== undefined)
        report(error);
    else
        console.error(error);
}
