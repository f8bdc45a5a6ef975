// The wire protocol as this client reads it: every frame shape and close code in one place,
// so a change of the server's protocol is a change of this file.
/** Error codes after which the server applied nothing of the request. */
export const WHOLE_REQUEST_ERRORS = new Set([
    "invalid_field",
    "invalid_channel",
    "too_many_subscriptions",
    "invalid_json",
    "not_an_object",
    "missing_type",
    "unknown_type",
]);
/** Error codes about one channel of a request; the acknowledgement still follows. */
export const CHANNEL_ERRORS = new Set(["forbidden", "subscription_refused"]);
/** Close codes sent by wsbridge servers (docs/reference/codes.md). */
export const CloseCode = {
    NORMAL: 1000,
    GOING_AWAY: 1001,
    ABNORMAL: 1006,
    POLICY_VIOLATION: 1008,
    MESSAGE_TOO_BIG: 1009,
    SERVICE_RESTART: 1012,
    TRY_AGAIN_LATER: 1013,
    IDLE_TIMEOUT: 4000,
    TOKEN_EXPIRED: 4001,
    SLOW_CONSUMER: 4008,
};
/** The subprotocol a server selects when a token travels as a subprotocol. */
export const SUBPROTOCOL = "wsbridge";
/** Prefix of the subprotocol that carries a token: `wsbridge.token.<JWT>`. */
export const TOKEN_SUBPROTOCOL_PREFIX = "wsbridge.token.";
function isRecord(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}
function isId(value) {
    return typeof value === "string" || (typeof value === "number" && Number.isInteger(value));
}
function positionsOf(value) {
    if (!isRecord(value))
        return undefined;
    const out = {};
    for (const [channel, raw] of Object.entries(value)) {
        if (!isRecord(raw))
            continue;
        const entry = {};
        if (typeof raw["epoch"] === "string")
            entry.epoch = raw["epoch"];
        if (Number.isSafeInteger(raw["offset"]))
            entry.offset = raw["offset"];
        if (typeof raw["recovered"] === "boolean")
            entry.recovered = raw["recovered"];
        out[channel] = entry;
    }
    return out;
}
/**
 * Parse one frame from the server. Anything malformed is `other` and ignored, as the
 * protocol asks clients to ignore what they do not know.
 */
export function parseFrame(data) {
    if (typeof data !== "string")
        return { kind: "other" };
    let value;
    try {
        value = JSON.parse(data);
    }
    catch {
        return { kind: "other" };
    }
    if (!isRecord(value))
        return { kind: "other" };
    const type = value["type"];
    if (type === undefined) {
        if (typeof value["channel"] !== "string" || !("data" in value))
            return { kind: "other" };
        const frame = { channel: value["channel"], data: value["data"] };
        if (Number.isSafeInteger(value["offset"]) && value["offset"] > 0) {
            frame.offset = value["offset"];
        }
        return { kind: "event", frame };
    }
    if (type === "pong")
        return { kind: "pong" };
    if (type === "subscribed" || type === "unsubscribed") {
        const channels = value["channels"];
        if (!Array.isArray(channels) || !channels.every((c) => typeof c === "string")) {
            return { kind: "other" };
        }
        const frame = { type, channels: channels };
        if (isId(value["id"]))
            frame.id = value["id"];
        const positions = positionsOf(value["positions"]);
        if (positions !== undefined)
            frame.positions = positions;
        return { kind: "ack", frame };
    }
    if (type === "error") {
        const frame = {
            type,
            code: typeof value["code"] === "string" ? value["code"] : "unknown",
            message: typeof value["message"] === "string" ? value["message"] : "",
        };
        if (isId(value["id"]))
            frame.id = value["id"];
        if (typeof value["channel"] === "string")
            frame.channel = value["channel"];
        return { kind: "error", frame };
    }
    if (type === "position") {
        const positions = positionsOf(value["positions"]);
        if (positions === undefined)
            return { kind: "other" };
        return { kind: "position", frame: { type, positions } };
    }
    if (type === "broker" && (value["status"] === "up" || value["status"] === "down")) {
        return { kind: "broker", frame: { type, status: value["status"] } };
    }
    return { kind: "other" };
}
/** Whether `name` is a pattern (holds an unescaped `*`, `?` or `[`); patterns have no positions. */
export function isPattern(name) {
    for (let i = 0; i < name.length; i++) {
        const c = name[i];
        if (c === "\\")
            i++;
        else if (c === "*" || c === "?" || c === "[")
            return true;
    }
    return false;
}
/**
 * Whether `name` matches `pattern` as Redis does, for patterns made of literal characters,
 * `*` and `?` only, on ASCII names; `undefined` when unsure (`[`, `\`, or `?` against a
 * name that is not ASCII), so that a caller can leave the name out.
 */
export function matchesPattern(pattern, name) {
    if (pattern.includes("[") || pattern.includes("\\"))
        return undefined;
    if (pattern.includes("?") && /[^\x00-\x7f]/.test(name))
        return undefined;
    const source = pattern
        .split("")
        .map((c) => (c === "*" ? "[\\s\\S]*" : c === "?" ? "[\\s\\S]" : c.replace(/[.+^${}()|\]\\/-]/g, "\\$&")))
        .join("");
    return new RegExp(`^${source}$`).test(name);
}
/** A `subscribe` may always name this many channels in `since`. */
export const MAX_SINCE = 100;
/** The `exp` claim of a JWT in milliseconds since the epoch, or undefined if unreadable. */
export function tokenExpiry(token) {
    const part = token.split(".")[1];
    if (part === undefined)
        return undefined;
    try {
        const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
        const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
        const claims = JSON.parse(atob(padded));
        if (isRecord(claims) && typeof claims["exp"] === "number")
            return claims["exp"] * 1000;
    }
    catch {
        // not a JWT: no expiry known, so no refresh before it
    }
    return undefined;
}
