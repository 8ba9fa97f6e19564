/**
 * Generates docs/configuration.md from the config schema, or checks that it
 * is current, so the reference and the code cannot drift apart.
 *
 *   deno run -A scripts/config_docs.ts gen     write docs/configuration.md
 *   deno run -A scripts/config_docs.ts check   exit 1 if it is stale
 *
 * Every key's type, default, allowed values and description come from
 * src/config/schema.ts; this script only lays them out (and runs `deno fmt`
 * on the result, so the file is also formatted as CI expects). Exit codes: 0
 * ok, 1 stale or a tool failed, 2 usage error.
 *
 * May import: src/config/ only.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { configOrThrow, formatEffectiveConfig, parseConfig } from "../src/config/mod.ts";
import { configSchema, RULES } from "../src/config/schema.ts";
import {
  allowedOf,
  child,
  defaultOf,
  docOf,
  isOptional,
  tableKeys,
  typeName,
  unwrap,
} from "../src/config/introspect.ts";
import { z } from "zod";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DOC = "docs/configuration.md";
const USAGE = "usage: deno run -A scripts/config_docs.ts gen|check";

type Schema = z.core.$ZodType;

/** docs/configuration.md as the schema says it should read, before formatting. */
export function renderConfigReference(): string {
  const out: string[] = [
    "<!-- Generated from src/config/schema.ts by scripts/config_docs.ts; do not edit by hand.",
    "     `deno run -A scripts/config_docs.ts gen` rewrites it, `check` fails if it is stale. -->",
    "",
    "# Configuration",
    "",
    "One TOML file configures an agent. `blixard config check FILE` validates it without starting",
    "anything and prints the effective configuration, every key with defaults filled in. A running",
    "agent re-reads the file on SIGHUP; an invalid new file is rejected and the old configuration",
    "keeps running.",
    "",
    "Keys are snake_case, units last (`request_deadline_ms`). Every problem is reported at once,",
    "each naming the key, the bad value and what is allowed, e.g.",
    '`config: transport.migration.raft_transport = "quic": expected "grpc", "iroh" or "adaptive"`.',
    "Unknown keys are errors, with a suggestion when the key looks like a known one. Some valid",
    "settings draw warnings (ignored keys, plaintext listeners, relative paths, peers with no way",
    "to reach them).",
    "",
    "The predecessor's keys work unchanged. `deploy/examples/` holds a complete file for each stage",
    "of the gRPC → Iroh rollout (`stage1-canary.toml` … `stage4-iroh.toml`) and for rolling back",
    "(`rollback.toml`).",
    "",
    "## Rules across keys",
    "",
    ...RULES.map((r) => `- ${r}`),
  ];
  section(configSchema, [], out, false);
  out.push(
    "",
    "## Defaults as a file",
    "",
    "The effective configuration of a file that sets only `[node] id = 1`:",
    "",
    "```toml",
    formatEffectiveConfig(configOrThrow(parseConfig("[node]\nid = 1\n"))).trimEnd(),
    "```",
    "",
  );
  return out.join("\n");
}

function section(schema: Schema, path: string[], out: string[], arrayOfTables: boolean): void {
  const keys = tableKeys(schema) ?? [];
  const leaves = keys.filter((k) => kind(child(schema, k)!) === "value");
  if (path.length > 0) {
    const name = path.join(".");
    out.push("", `## ${arrayOfTables ? `[[${name}]]` : `[${name}]`}`, "");
    const description = docOf(schema).description;
    if (description !== undefined) out.push(description, "");
    for (const key of leaves) entry(`${name}.${key}`, child(schema, key)!, out);
  }
  for (const key of keys) {
    const value = child(schema, key)!;
    const k = kind(value);
    if (k === "table") section(value, [...path, key], out, false);
    if (k === "tables") {
      section((unwrap(value) as z.ZodArray).element, [...path, key], out, true);
    }
  }
}

function kind(schema: Schema): "value" | "table" | "tables" {
  const s = unwrap(schema);
  if (s instanceof z.ZodObject) return "table";
  if (s instanceof z.ZodArray && unwrap(s.element) instanceof z.ZodObject) return "tables";
  return "value";
}

function entry(name: string, schema: Schema, out: string[]): void {
  const doc = docOf(schema);
  const constant = defaultOf(schema);
  const fallback = doc.defaultText !== undefined
    ? `\`${doc.defaultText}\``
    : constant !== undefined
    ? `\`${toml(constant)}\``
    : isOptional(schema)
    ? "not set"
    : "**required**";
  out.push(
    "",
    `### \`${name}\``,
    "",
    `- type: ${typeName(schema).replace(/^an? /, "")}; default: ${fallback}`,
    `- allowed: ${allowedOf(schema)}`,
  );
  if (doc.description !== undefined) out.push("", doc.description);
}

function toml(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(toml).join(", ")}]`;
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/** Runs `deno fmt` on markdown text with the repository's settings. */
async function format(markdown: string): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--ext=md", "-"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(markdown));
  await writer.close();
  const { success, stdout, stderr } = await child.output();
  if (!success) throw new Error(`deno fmt failed: ${new TextDecoder().decode(stderr)}`);
  return new TextDecoder().decode(stdout);
}

async function main(args: string[]): Promise<number> {
  const mode = args[0];
  if (args.length !== 1 || (mode !== "gen" && mode !== "check")) {
    console.error(
      `config_docs: expected one argument "gen" or "check", got ${JSON.stringify(args)}`,
    );
    console.error(USAGE);
    return 2;
  }
  const fresh = await format(renderConfigReference());
  if (mode === "gen") {
    await Deno.writeTextFile(`${ROOT}${DOC}`, fresh);
    console.log(`config_docs: wrote ${DOC}`);
    return 0;
  }
  let current = "";
  try {
    current = await Deno.readTextFile(`${ROOT}${DOC}`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (current !== fresh) {
    console.error(
      `config_docs: ${DOC} does not match src/config/schema.ts; run \`deno run -A scripts/config_docs.ts gen\` and commit the result`,
    );
    return 1;
  }
  console.log(`config_docs: ${DOC} is up to date`);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`config_docs: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
