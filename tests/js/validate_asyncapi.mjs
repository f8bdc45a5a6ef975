// Validate AsyncAPI documents with the official parser.
// Usage: node validate_asyncapi.mjs <document> [<document> ...]
// Prints a JSON array with one report per document, in order:
//   {"path": string, "valid": bool, "version": string|null, "diagnostics": [...]}
// Exits 0 when every document parses without errors (warnings are reported, not fatal).
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const SEVERITIES = ["error", "warning", "information", "hint"];

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error("usage: node validate_asyncapi.mjs <document> [<document> ...]");
  process.exit(2);
}

const parser = new Parser();
const reports = [];
for (const path of paths) {
  const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"));
  const found = diagnostics.map((d) => ({
    severity: SEVERITIES[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join("."),
  }));
  reports.push({
    path,
    valid: document !== undefined && !found.some((d) => d.severity === "error"),
    version: document ? document.version() : null,
    diagnostics: found,
  });
}
console.log(JSON.stringify(reports, null, 2));
process.exit(reports.every((r) => r.valid) ? 0 : 1);
