/**
 * The effective configuration as TOML: every key with its value, defaults
 * filled in, in the schema's order, so `blixard config check FILE` shows what
 * the agent will really do. Parsing the output gives an equal config.
 *
 * Owns: printing an {@link AgentConfig}. Pure. May import: smol-toml, zod and
 * the other files of src/config/.
 *
 * @module
 */

import { stringify } from "smol-toml";
import { z } from "zod";
import { child, docOf, tableKeys, unwrap } from "./introspect.ts";
import { configSchema, humanize } from "./schema.ts";
import type { AgentConfig } from "./types.ts";

/** Keys whose integers read better with their unit alongside. */
const UNITS: Readonly<Record<string, "bytes" | "ms">> = {
  max_frame_bytes: "bytes",
  max_connection_buffer_bytes: "bytes",
  request_deadline_ms: "ms",
  max_request_deadline_ms: "ms",
  shutdown_timeout_ms: "ms",
  tick_ms: "ms",
};

/**
 * Prints a config back as a complete TOML file. Optional keys that are not
 * set appear as comments; outside mode `dual` the ignored `[transport.migration]`
 * keys are left out with a note, and so are keys that are not supported yet.
 *
 * @example
 * ```ts
 * import { configOrThrow, formatEffectiveConfig, parseConfig } from "./mod.ts";
 * const text = formatEffectiveConfig(configOrThrow(parseConfig("[node]\nid = 1")));
 * console.log(text.includes('bind = "127.0.0.1:7400"')); // true
 * ```
 */
export function formatEffectiveConfig(config: AgentConfig): string {
  const out = ["# Effective configuration: every key, defaults filled in."];
  emitTable(configSchema, snakeCase(config) as Record<string, unknown>, [], out, config);
  return out.join("\n") + "\n";
}

function emitTable(
  schema: z.core.$ZodType,
  value: Record<string, unknown>,
  path: string[],
  out: string[],
  config: AgentConfig,
  header?: string,
): void {
  const keys = tableKeys(schema) ?? [];
  const notSupported = keys.map((k) => docOf(child(schema, k)!).notSupported);
  if (header !== undefined && keys.length > 0 && notSupported.every((n) => n !== undefined)) {
    // No key of the table may be set, so the header is a comment too.
    out.push("", `# ${header}: not supported yet (${notSupported[0]!.until})`);
    return;
  }
  if (header !== undefined) out.push("", header);
  const { mode } = config.transport;
  if (path.join(".") === "transport.migration" && mode !== "dual") {
    out.push(
      `# ignored in mode "${mode}": every service and raft use ${
        mode === "iroh" ? "Iroh" : "gRPC"
      }`,
    );
    return;
  }
  const tables: string[] = [];
  const arrays: string[] = [];
  keys.forEach((key, i) => {
    const keySchema = unwrap(child(schema, key)!);
    if (keySchema instanceof z.ZodObject) tables.push(key);
    else if (keySchema instanceof z.ZodArray && unwrap(keySchema.element) instanceof z.ZodObject) {
      arrays.push(key);
    } else if (notSupported[i] !== undefined) {
      out.push(`# ${key}: not supported yet (${notSupported[i].until})`);
    } else if (value[key] === undefined) out.push(`# ${key}: not set`);
    else out.push(`${key} = ${tomlValue(value[key])}${unitComment(key, value[key])}`);
  });
  for (const key of tables) {
    const sub = [...path, key];
    emitTable(
      child(schema, key)!,
      value[key] as Record<string, unknown>,
      sub,
      out,
      config,
      `[${sub.join(".")}]`,
    );
  }
  for (const key of arrays) {
    const sub = [...path, key];
    const element = (unwrap(child(schema, key)!) as z.ZodArray).element;
    const items = value[key] as Record<string, unknown>[];
    if (items.length === 0) out.push("", `# [[${sub.join(".")}]]: none`);
    for (const item of items) emitTable(element, item, sub, out, config, `[[${sub.join(".")}]]`);
  }
}

function tomlValue(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(", ")}]`;
  // stringify escapes strings as TOML requires; it prints `v = <value>`.
  return stringify({ v: value }).trim().slice("v = ".length);
}

function unitComment(key: string, value: unknown): string {
  const unit = UNITS[key];
  return unit === undefined || typeof value !== "number" ? "" : `  # ${humanize(value, unit)}`;
}

/** The config's keys back in the file's snake_case; values unchanged. */
function snakeCase(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snakeCase);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value).map((
      [k, v],
    ) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeCase(v)]),
  );
}
