// The reference's development setup: the dev server (and `vite preview`) proxies /ws to the
// bridge, so the page connects to ws(s)://<its own host>/ws. WSBRIDGE_URL moves the bridge.
import { defineConfig } from "vite";

const bridge = process.env.WSBRIDGE_URL ?? "ws://localhost:8000";

export default defineConfig({
  // wsbridge is linked from clients/js, which has React as a development dependency of its
  // own: one copy of React for the whole page.
  resolve: { dedupe: ["react", "react-dom"] },
  server: { proxy: { "/ws": { target: bridge, ws: true } } },
  preview: { proxy: { "/ws": { target: bridge, ws: true } } },
});
