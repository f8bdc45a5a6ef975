// Copy the built module into the Python package's trading demo, which ships it as static
// files so that its users need no build step. Run after `npm run build`: npm run demo
import { copyFileSync, mkdirSync } from "node:fs";

const target = new URL("../../../src/wsbridge/demo/static/wsbridge/", import.meta.url);
mkdirSync(target, { recursive: true });
for (const file of ["index.js", "protocol.js"]) {
  copyFileSync(new URL(`../dist/${file}`, import.meta.url), new URL(file, target));
}
