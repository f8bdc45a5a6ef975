// Run: WSBRIDGE_JWT_SECRET=... node examples/tokens/issue_token.mjs SUBJECT [CHANNEL|PATTERN ...]
//
// Issues an HS256 token for `wsbridge serve --jwt-secret` (or wsbridge.tokens.TokenAuth)
// from a Node.js back end, with node:crypto only. The channels claim lists what the
// client may subscribe to; the token expires after WSBRIDGE_TOKEN_TTL seconds (default
// 300). Hand it to the browser, which connects with
//   new WebSocket("wss://host/ws", ["wsbridge", "wsbridge.token." + token])
import { createHmac } from "node:crypto";

const secret = process.env.WSBRIDGE_JWT_SECRET;
if (!secret || Buffer.byteLength(secret) < 32) {
  console.error("issue_token: set WSBRIDGE_JWT_SECRET to a secret of at least 32 bytes");
  process.exit(2);
}
const [subject, ...channels] = process.argv.slice(2);
if (!subject) {
  console.error("usage: issue_token.mjs SUBJECT [CHANNEL|PATTERN ...]");
  process.exit(2);
}
const ttl = Number(process.env.WSBRIDGE_TOKEN_TTL ?? 300);
const now = Math.floor(Date.now() / 1000);

const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const header = encode({ alg: "HS256", typ: "JWT" });
const payload = encode({ sub: subject, channels, iat: now, exp: now + ttl });
const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
console.log(`${header}.${payload}.${signature}`);
