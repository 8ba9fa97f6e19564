/**
 * The files of `monitoring/` as the tests read them: the rules of
 * iroh_rules.yml (a reader of the YAML that rule files use, which refuses
 * what it does not know rather than skip a rule), the same file with one
 * alert's expression replaced, the dashboard's expressions, and the exposition
 * of live nodes as a catalog of names.
 *
 * Owns: those readers. May import: tests/monitoring/promql.ts,
 * tests/metrics/helpers.ts.
 */

import type { Exposition } from "../metrics/helpers.ts";
import type { Catalog } from "./promql.ts";

/** The `monitoring/` directory. */
export const MONITORING = new URL("../../monitoring/", import.meta.url).pathname;
export const RULES_FILE = `${MONITORING}iroh_rules.yml`;
export const RULES_TEST_FILE = `${MONITORING}iroh_rules_test.yml`;
export const SCRAPE_CONFIG = `${MONITORING}prometheus-iroh.yml`;
export const DASHBOARD = `${MONITORING}grafana-iroh-dashboard.json`;

/** The sections of runbooks/operations.md that the alerts' `runbook` annotations link to. */
export const ALERT_RUNBOOK_SECTIONS: readonly string[] = [
  "no-leader",
  "leader-flapping",
  "rpc-errors",
  "iroh-latency",
  "direct-paths",
  "fallbacks",
  "failed-reloads",
  "vms-failed",
];

/** One recording rule or alert. */
export interface Rule {
  readonly kind: "record" | "alert";
  /** What it records, or the alert's name. */
  readonly name: string;
  readonly expr: string;
  /** An alert's `for:` as written (`1m`), "" when it has none. */
  readonly for: string;
  readonly group: string;
  readonly annotations: ReadonlyMap<string, string>;
  readonly labels: ReadonlyMap<string, string>;
  /** The lines of its `expr:` key and value, [first, end), 0-based. */
  readonly exprLines: readonly [number, number];
}

/** A rules file this reader does not understand; the message names the line. */
export class RulesFileError extends Error {
  readonly code = "RULES_FILE_UNREADABLE";
  constructor(message: string) {
    super(message);
    this.name = "RulesFileError";
  }
}

const indentOf = (line: string) => line.length - line.trimStart().length;
const blankOrComment = (line: string) => /^\s*(#.*)?$/.test(line);

/**
 * A scalar value starting at `lines[at]` after its key (`rest`), whose key is
 * at `keyIndent`: plain, quoted, or a block (`|`, `>`, with chomping); the
 * lines it spans end at the returned `end`.
 */
function scalar(
  lines: readonly string[],
  at: number,
  rest: string,
  keyIndent: number,
): { value: string; end: number } {
  let end = at + 1;
  const more: string[] = [];
  while (
    end < lines.length && (blankOrComment(lines[end]!) || indentOf(lines[end]!) > keyIndent)
  ) {
    more.push(lines[end]!);
    end++;
  }
  // Trailing blank or comment lines belong to what follows.
  while (more.length > 0 && blankOrComment(more[more.length - 1]!)) {
    more.pop();
    end--;
  }
  const block = /^([|>])([+-]?)\s*(#.*)?$/.exec(rest);
  if (block) {
    const body = more.filter((l) => l.trim() !== "");
    const indent = Math.min(...body.map(indentOf));
    const text = more.map((l) => l.slice(indent));
    const joined = block[1] === "|" ? text.join("\n") : text.join(" ");
    return { value: block[2] === "-" ? joined.trimEnd() : joined.trimEnd() + "\n", end };
  }
  if (rest.startsWith('"') || rest.startsWith("'")) {
    if (more.length > 0) {
      throw new RulesFileError(`line ${at + 1}: a quoted value over several lines is not read`);
    }
    if (rest.startsWith('"')) {
      const m = /^("(?:[^"\\]|\\.)*")\s*(#.*)?$/.exec(rest);
      if (!m) throw new RulesFileError(`line ${at + 1}: unreadable quoted value ${rest}`);
      return { value: JSON.parse(m[1]!), end };
    }
    const m = /^'((?:[^']|'')*)'\s*(#.*)?$/.exec(rest);
    if (!m) throw new RulesFileError(`line ${at + 1}: unreadable quoted value ${rest}`);
    return { value: m[1]!.replaceAll("''", "'"), end };
  }
  // A plain scalar, folded over its continuation lines.
  const plain = [rest.replace(/\s+#.*$/, ""), ...more.map((l) => l.trim())].join(" ");
  return { value: plain.trim(), end };
}

/**
 * The rules of a Prometheus rules file, in file order. Reads the block YAML
 * rule files are written in (a mapping per rule under `rules:`, with plain,
 * quoted or block values, `labels:` and `annotations:` one level deep) and
 * throws {@link RulesFileError} naming the line on anything else.
 */
export function readRules(text: string): Rule[] {
  const lines = text.split("\n");
  const rules: Rule[] = [];
  let group = "";
  let rulesIndent = -1;
  for (let i = 0; i < lines.length;) {
    const line = lines[i]!;
    const groupName = /^\s*-\s+name:\s*(.+?)\s*$/.exec(line);
    if (groupName) group = groupName[1]!.replace(/^["']|["']$/g, "");
    const rulesKey = /^(\s*)rules:\s*$/.exec(line);
    if (rulesKey) rulesIndent = rulesKey[1]!.length;
    const item = /^(\s*)-\s+(\w+):/.exec(line);
    if (!item || rulesIndent < 0 || item[1]!.length < rulesIndent || groupName) {
      i++;
      continue;
    }
    // One rule: keys at the indent after "- ", until a line indented less.
    const keyIndent = line.indexOf(item[2]!);
    const fields = new Map<string, string>();
    const maps = new Map<string, Map<string, string>>();
    let exprLines: [number, number] = [-1, -1];
    let j = i;
    while (j < lines.length) {
      const raw = j === i ? " ".repeat(keyIndent) + line.slice(keyIndent) : lines[j]!;
      if (j !== i && blankOrComment(raw)) {
        j++;
        continue;
      }
      if (j !== i && indentOf(raw) < keyIndent) break;
      if (j !== i && indentOf(raw) > keyIndent) {
        throw new RulesFileError(`line ${j + 1}: unexpected indentation: ${raw.trim()}`);
      }
      if (j !== i && /^\s*-/.test(raw)) break;
      const kv = /^\s*(\w+):\s*(.*)$/.exec(raw);
      if (!kv) throw new RulesFileError(`line ${j + 1}: not a key: ${raw.trim()}`);
      const [, key, rest] = kv as unknown as [string, string, string];
      if ((key === "labels" || key === "annotations") && /^\s*(#.*)?$/.test(rest)) {
        const map = new Map<string, string>();
        let k = j + 1;
        while (k < lines.length && (blankOrComment(lines[k]!) || indentOf(lines[k]!) > keyIndent)) {
          if (blankOrComment(lines[k]!)) {
            k++;
            continue;
          }
          const entry = /^(\s*)(\w+):\s*(.*)$/.exec(lines[k]!);
          if (!entry) throw new RulesFileError(`line ${k + 1}: not a key: ${lines[k]!.trim()}`);
          const v = scalar(lines, k, entry[3]!, entry[1]!.length);
          map.set(entry[2]!, v.value);
          k = v.end;
        }
        maps.set(key, map);
        j = k;
        continue;
      }
      const v = scalar(lines, j, rest, keyIndent);
      fields.set(key, v.value);
      if (key === "expr") exprLines = [j, v.end];
      j = v.end;
    }
    const kind = fields.has("alert") ? "alert" : "record";
    const name = fields.get(kind);
    const expr = fields.get("expr");
    if (name === undefined || expr === undefined) {
      throw new RulesFileError(`line ${i + 1}: a rule needs record or alert, and expr`);
    }
    rules.push({
      kind,
      name,
      expr,
      for: fields.get("for") ?? "",
      group,
      annotations: maps.get("annotations") ?? new Map(),
      labels: maps.get("labels") ?? new Map(),
      exprLines,
    });
    i = j;
  }
  return rules;
}

/** `text` (a rules file) with `rule`'s expression replaced by `expr` (one line). */
export function withExpr(text: string, rule: Rule, expr: string): string {
  const lines = text.split("\n");
  const [first, end] = rule.exprLines;
  // Keep what is before the key: its indentation, and "- " when expr is the rule's first key.
  const before = /^\s*(?:-\s+)?/.exec(lines[first]!)![0];
  lines.splice(first, end - first, `${before}expr: ${expr}`);
  return lines.join("\n");
}

/** One query of the dashboard: a panel's target or a variable's. */
export interface DashboardQuery {
  /** Where it is, for messages: `panel "Title" target A`, `variable cluster`. */
  readonly where: string;
  readonly expr: string;
}

/** Grafana's panel, as far as the tests read it. */
export interface Panel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly datasource?: { type?: string; uid?: string };
  readonly targets?: {
    expr?: string;
    refId?: string;
    datasource?: { type?: string; uid?: string };
  }[];
  readonly panels?: Panel[];
}

/** Every panel of a dashboard, those inside rows included. */
export function panelsOf(dashboard: { panels: Panel[] }): Panel[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/**
 * Every PromQL expression of a dashboard: the panels' targets, and the
 * variables' queries (`label_values(SELECTOR, label)` gives its selector).
 */
export function dashboardQueries(
  dashboard: {
    panels: Panel[];
    templating?: { list: { name: string; query?: string | { query?: string } }[] };
  },
): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  for (const p of panelsOf(dashboard)) {
    for (const t of p.targets ?? []) {
      if (t.expr !== undefined) {
        out.push({ where: `panel "${p.title}" target ${t.refId}`, expr: t.expr });
      }
    }
  }
  for (const v of dashboard.templating?.list ?? []) {
    const query = typeof v.query === "string" ? v.query : v.query?.query;
    if (query === undefined) continue;
    const labelValues = /^\s*label_values\((.*),\s*\w+\s*\)\s*$/.exec(query);
    out.push({ where: `variable ${v.name}`, expr: labelValues ? labelValues[1]! : query });
  }
  return out;
}

/**
 * The names, labels and types of the expositions of live nodes; the rules'
 * recorded names; `up`; and the target labels the scrape configs add.
 */
export function catalogOf(expositions: readonly Exposition[], rules: readonly Rule[]): Catalog {
  const exported = new Map<string, Set<string>>();
  const types = new Map<string, string>();
  for (const e of expositions) {
    for (const key of e.samples.keys()) {
      const brace = key.indexOf("{");
      const name = key.slice(0, brace);
      const labels = exported.get(name) ?? new Set<string>();
      for (const m of key.slice(brace).matchAll(/([a-zA-Z_]\w*)="(?:[^"\\]|\\.)*"/g)) {
        labels.add(m[1]!);
      }
      exported.set(name, labels);
    }
    for (const [name, type] of e.types) types.set(name, type);
  }
  return {
    exported,
    types,
    recorded: new Set(rules.filter((r) => r.kind === "record").map((r) => r.name)),
    prometheus: new Set(["up"]),
    targetLabels: new Set(["job", "instance", "cluster"]),
  };
}
