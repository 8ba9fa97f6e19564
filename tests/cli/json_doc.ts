/**
 * docs/cli.md as a check: each command's `--json` document is described
 * there by a table after a `<!-- json: COMMAND -->` marker, one row per key
 * (`a.b`, `a[].b`) with its type (`string`, `integer`, `number`, `boolean`,
 * `object`, `string[]`, `object[]`, joined by "or", with `null` and `absent`).
 * {@link assertDocumented} fails on a key the table does not have, a key it
 * requires that is missing, and a value of another type.
 *
 * May import: tests/assert.ts.
 */

import { assert } from "../assert.ts";

const DOC = new URL("../../docs/cli.md", import.meta.url);

/** Key path → the types the table allows. */
export type JsonDoc = ReadonlyMap<string, readonly string[]>;

/** The table of `command` in docs/cli.md. */
export async function jsonDoc(command: string): Promise<JsonDoc> {
  const text = await Deno.readTextFile(DOC);
  const marker = `<!-- json: ${command} -->`;
  const at = text.indexOf(marker);
  assert(at >= 0, `docs/cli.md has no ${marker}`);
  const rows = new Map<string, string[]>();
  const lines = text.slice(at + marker.length).trimStart().split("\n");
  for (const line of lines) {
    if (!line.startsWith("|")) break;
    const [path, type] = line.split("|").slice(1, 3).map((c) => c.trim());
    const key = /^`(.+)`$/.exec(path!)?.[1];
    if (key === undefined) continue; // the header and its rule
    rows.set(key, type!.split(" or ").map((t) => t.trim()));
  }
  assert(rows.size > 0, `docs/cli.md: the table after ${marker} is empty`);
  return rows;
}

/** Throws, naming every difference, unless `value` is as the table of `command` says. */
export function assertDocumented(command: string, doc: JsonDoc, value: unknown): void {
  const problems: string[] = [];
  walk(value, "", doc, problems);
  assert(
    problems.length === 0,
    `${command} --json differs from docs/cli.md:\n  ${problems.join("\n  ")}\n${
      JSON.stringify(value)
    }`,
  );
}

function walk(value: unknown, path: string, doc: JsonDoc, problems: string[]): void {
  // An array's elements (`a[]`) were checked with the array's row (`object[]`).
  if (path !== "" && !path.endsWith("[]")) {
    const types = doc.get(path)!;
    if (!types.some((t) => hasType(value, t))) {
      problems.push(`${path}: expected ${types.join(" or ")}, got ${JSON.stringify(value)}`);
      return;
    }
  }
  if (Array.isArray(value)) {
    for (const element of value) if (isObject(element)) walk(element, `${path}[]`, doc, problems);
    return;
  }
  if (!isObject(value)) return;
  const prefix = path === "" ? "" : `${path}.`;
  const keys = [...doc.keys()]
    .filter((k) => k.startsWith(prefix) && /^[^.[\]]+$/.test(k.slice(prefix.length)))
    .map((k) => k.slice(prefix.length));
  // A documented object whose keys the table does not list is opaque (config check's `config`).
  if (keys.length === 0 && path !== "") return;
  for (const key of Object.keys(value)) {
    if (!keys.includes(key)) problems.push(`${prefix}${key}: not in docs/cli.md`);
  }
  for (const key of keys) {
    if (key in value) walk(value[key], `${prefix}${key}`, doc, problems);
    else if (!doc.get(`${prefix}${key}`)!.includes("absent")) {
      problems.push(`${prefix}${key}: missing`);
    }
  }
}

function hasType(value: unknown, type: string): boolean {
  if (type.endsWith("[]")) {
    return Array.isArray(value) && value.every((v) => hasType(v, type.slice(0, -2)));
  }
  switch (type) {
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "integer":
      return Number.isInteger(value);
    case "boolean":
      return typeof value === "boolean";
    case "null":
      return value === null;
    case "object":
      return isObject(value);
    case "absent":
      return false;
    default:
      throw new Error(`docs/cli.md: unknown type "${type}"`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
