/**
 * What is wrong with a config file, said so an operator can fix it: the key
 * path, the bad value and what is allowed, one line per problem.
 *
 * Owns: {@link ConfigIssue}, {@link ConfigError}, turning zod's issues into
 * config issues, and "did you mean" suggestions. May import: zod,
 * ./schema.ts, ./introspect.ts.
 *
 * @module
 */

import { z } from "zod";
import { configSchema, type RuleCode } from "./schema.ts";
import {
  allowedOf,
  keyPaths,
  oneOf,
  sameType,
  schemaAt,
  tableKeys,
  typeName,
  unwrap,
} from "./introspect.ts";

/**
 * Kinds of config problems; tests and callers match on these, not on text.
 *
 * - `unreadable_file`: the config file, or a file it names, cannot be read.
 * - `unwritable_path`: a file or directory the node creates (its secret key,
 *   its data directory) cannot be created where the config puts it.
 * - `toml_syntax`: the text is not TOML (the issue has `line` and `column`).
 * - `missing_key`: a required key is absent.
 * - `unknown_key`: a key the schema does not have (often a typo).
 * - `wrong_type`: e.g. a string where an integer belongs.
 * - `invalid_value`: right type, value not allowed (enum, format, URL, address).
 * - `out_of_range`: a number outside its bounds.
 * - `duplicate`: a peer id, endpoint id or operator key given twice.
 * - `conflict`: keys that contradict each other.
 * - `not_supported`: a key whose feature is not built yet.
 * - `insecure`: a listener exposed without protection (an error), or
 *   exposed on purpose (a warning); a secret key file others can access.
 * - `ignored_key`: a key that has no effect in this configuration (warning).
 * - `implied_mode`: `transport.mode` was not set and was taken as `"dual"`
 *   because the file has a `[transport.migration]` section (warning).
 * - `relative_path`: a path that depends on the working directory (warning).
 * - `unreachable_peer`: a peer the agent has no way to dial yet (warning).
 */
export type ConfigIssueCode =
  | "unreadable_file"
  | "unwritable_path"
  | "toml_syntax"
  | "missing_key"
  | "unknown_key"
  | "wrong_type"
  | "out_of_range"
  | "not_supported"
  | "ignored_key"
  | "implied_mode"
  | "relative_path"
  | "unreachable_peer"
  | RuleCode;

/** One problem with a config file. */
export interface ConfigIssue {
  readonly code: ConfigIssueCode;
  /**
   * The key as the file writes it, `"transport.migration.raft_transport"`,
   * `"cluster.peers[1].id"`; `""` for the file as a whole.
   */
  readonly path: string;
  /** The whole line for the operator, starting with the source (file path or `config`). */
  readonly message: string;
  /** 1-based, for `toml_syntax`. */
  readonly line?: number;
  /** 1-based, for `toml_syntax`. */
  readonly column?: number;
}

/**
 * A config that cannot be used, for callers that throw rather than branch on
 * a result. The message is every issue's message, one per line.
 *
 * @example
 * ```ts
 * import { ConfigError, configOrThrow, parseConfig } from "./mod.ts";
 * try {
 *   configOrThrow(parseConfig("[node]\nid = 0"));
 * } catch (e) {
 *   if (e instanceof ConfigError) console.log(e.issues[0]!.code); // out_of_range
 * }
 * ```
 */
export class ConfigError extends Error {
  override name = "ConfigError";
  /** Every problem found, in file order as far as the schema allows. */
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    super(issues.map((i) => i.message).join("\n"));
    this.issues = issues;
  }
}

/**
 * The message zod is told to give every issue whose schema sets no message
 * of its own; an issue carrying it gets its text from {@link toConfigIssues}.
 */
export const DEFAULT_MESSAGE = "\u0000default";

/** `["cluster", "peers", 1, "id"]` → `cluster.peers[1].id`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else {
      const name = String(key);
      const bare = /^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name);
      out += out === "" ? bare : `.${bare}`;
    }
  }
  return out;
}

/** A value as TOML would write it, shortened for a message. */
export function formatValue(value: unknown, limit = 80): string {
  const text = render(value);
  return text.length <= limit ? text : `${text.slice(0, limit - 1)}…`;
}

function render(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(render).join(", ")}]`;
  if (value instanceof Date) return value.toISOString();
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).map(([k, v]) => `${formatPath([k])} = ${render(v)}`);
    return entries.length === 0 ? "{}" : `{ ${entries.join(", ")} }`;
  }
  return String(value);
}

/** What kind of TOML value this is, with its article: "a string", "an integer". */
export function describeValue(value: unknown): string {
  if (typeof value === "string") return "a string";
  if (typeof value === "number") return Number.isInteger(value) ? "an integer" : "a float";
  if (typeof value === "boolean") return "a boolean";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Date) return "a date-time";
  return "a table";
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const key of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

/**
 * Turns zod's issues into config issues, each naming the key, the value found
 * in `input` (the parsed TOML) and what is allowed.
 */
export function toConfigIssues(
  issues: readonly z.core.$ZodIssue[],
  input: unknown,
  source: string,
): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of issues) convert(issue, [], input, source, out);
  return out;
}

function convert(
  issue: z.core.$ZodIssue,
  base: readonly PropertyKey[],
  input: unknown,
  source: string,
  out: ConfigIssue[],
): void {
  const path = [...base, ...issue.path];
  const at = formatPath(path);
  const schema = schemaAt(configSchema, path);
  const allowed = schema === undefined ? undefined : allowedOf(schema);
  const value = valueAt(input, path);
  const own = issue.message !== DEFAULT_MESSAGE;
  const push = (code: ConfigIssueCode, what: string, showValue = true) =>
    out.push({
      code,
      path: at,
      message: `${source}: ${
        at === "" ? "" : showValue ? `${at} = ${formatValue(value)}: ` : `${at}: `
      }${what}`,
    });

  switch (issue.code) {
    case "unrecognized_keys":
      for (const key of issue.keys) {
        const keyPath = formatPath([...path, key]);
        out.push({
          code: "unknown_key",
          path: keyPath,
          message: `${source}: ${keyPath}: unknown key; ${unknownKeyHint(path, key)}`,
        });
      }
      return;
    case "invalid_type":
      if (value === undefined) {
        push("missing_key", `missing; expected ${allowed ?? issue.expected}`, false);
      } else {
        const expected = own ? issue.message : `expected ${allowed ?? issue.expected}`;
        push("wrong_type", `${expected}, got ${describeValue(value)}`);
      }
      return;
    case "invalid_union": {
      // The option of the value's type (a list of URLs, not a name) says what is wrong inside it.
      const union = schema === undefined ? undefined : unwrap(schema);
      const options = union instanceof z.ZodUnion ? union.options : [];
      const index = options.findIndex((o) => sameType(o, value));
      const branch = index >= 0 ? issue.errors[index] : undefined;
      if (branch !== undefined && branch.some((i) => i.path.length > 0)) {
        for (const inner of branch) convert(inner, path, input, source, out);
      } else if (branch !== undefined) {
        push("invalid_value", `expected ${allowed ?? "another value"}`);
      } else {
        push("wrong_type", `expected ${allowed ?? "another value"}, got ${describeValue(value)}`);
      }
      return;
    }
    case "custom": {
      const code = (issue.params?.code as RuleCode | undefined) ?? "invalid_value";
      const table = value !== null && typeof value === "object" && !Array.isArray(value);
      push(code, own ? issue.message : `expected ${allowed ?? "another value"}`, !table);
      return;
    }
    case "too_small":
    case "too_big":
      push(
        issue.origin === "number" ? "out_of_range" : "invalid_value",
        own ? issue.message : `expected ${allowed ?? "another value"}`,
      );
      return;
    case "invalid_value": {
      let what = own ? issue.message : `expected ${allowed ?? oneOf(issue.values.map(String))}`;
      const candidates = issue.values.filter((v): v is string => typeof v === "string");
      const guess = typeof value === "string" ? suggest(value, candidates) : undefined;
      if (!own && guess !== undefined) what += `; did you mean "${guess}"?`;
      push("invalid_value", what);
      return;
    }
    default:
      push("invalid_value", own ? issue.message : `expected ${allowed ?? "another value"}`);
  }
}

/** "did you mean …" for an unknown key, or the keys the table allows. */
function unknownKeyHint(table: readonly PropertyKey[], key: string): string {
  const tableSchema = schemaAt(configSchema, table);
  const keys = (tableSchema && tableKeys(tableSchema)) ?? [];
  const near = suggest(key, keys);
  if (near !== undefined) return `did you mean "${near}"?`;
  // The right key in the wrong table: `[transport] prefer_iroh`, a top-level `[migration]`.
  const elsewhere = keyPaths(configSchema).filter((p) => p.at(-1) === key);
  if (elsewhere.length === 1) {
    const where = elsewhere[0]!;
    const tablePath = where.slice(0, -1).join(".");
    return tableKeys(schemaAt(configSchema, where)!) === undefined
      ? `did you mean ${where.join(".")} (under [${tablePath}])?`
      : `did you mean [${where.join(".")}]?`;
  }
  const what = tableSchema === undefined ? "" : ` (${typeName(tableSchema)})`;
  return keys.length === 0
    ? `this table allows no keys${what}`
    : `allowed keys here: ${keys.map((k) => `"${k}"`).join(", ")}`;
}

/**
 * The candidate the user most likely meant by `word`: the same name in
 * another case or with dashes, a near spelling (edit distance, a swap of two
 * letters counting as one edit), or the one candidate it abbreviates.
 *
 * @example
 * ```ts
 * import { suggest } from "./issues.ts";
 * suggest("relays", ["bind", "relay", "alpn"]); // "relay"
 * suggest("dataDir", ["id", "data_dir"]);       // "data_dir"
 * ```
 */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const normal = word.replace(/([a-z0-9])([A-Z])/g, "$1_$2").replaceAll("-", "_").toLowerCase();
  const exact = candidates.find((c) => c === normal);
  if (exact !== undefined) return exact;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(normal, c);
    if (d <= Math.max(1, Math.floor(c.length / 3)) && d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  if (best !== undefined) return best;
  if (normal.length < 3) return undefined;
  const prefixed = candidates.filter((c) => c.startsWith(normal) || normal.startsWith(c));
  return prefixed.length === 1 ? prefixed[0] : undefined;
}

/** Optimal string alignment distance: insert, delete, substitute, swap neighbours. */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d = new Array<number>(rows * cols);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(
        d[(i - 1) * cols + j]! + 1,
        d[i * cols + j - 1]! + 1,
        d[(i - 1) * cols + j - 1]! + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, d[(i - 2) * cols + j - 2]! + 1);
      }
      d[i * cols + j] = v;
    }
  }
  return d[rows * cols - 1]!;
}
