/**
 * The series a PromQL expression reads: a tokenizer that knows what in an
 * expression is not a metric name (functions, aggregations, keywords, label
 * names in matchers and in `by`/`on` lists, strings, numbers, durations,
 * Grafana variables), and a check of those names against what a node
 * exports and what the rules record.
 *
 * Owns: reading metric names out of PromQL; the rules of what a name may be.
 * May import nothing of the agent.
 */

/** A vector selector of an expression: the metric it names and the labels its matchers test. */
export interface Selector {
  readonly name: string;
  readonly labels: readonly string[];
}

/** An expression this module cannot read; the message names the expression and the place. */
export class PromqlError extends Error {
  readonly code = "PROMQL_UNREADABLE";
  constructor(message: string) {
    super(message);
    this.name = "PromqlError";
  }
}

type Token =
  | { kind: "ident"; text: string; at: number }
  | { kind: "string"; text: string; at: number }
  | { kind: "number"; text: string; at: number }
  | { kind: "punct"; text: string; at: number };

/** Keywords that are never metric names (PromQL's lexer reads them case-insensitively). */
const KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "atan2",
  "inf",
  "nan",
]);
/** Keywords followed by a parenthesised list of label names. */
const LABEL_LISTS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);

const PUNCT = ["==", "!=", "<=", ">=", "=~", "!~", "(", ")", "{", "}", "[", "]", ",", "+", "-", "*"]
  .concat(["/", "%", "^", "<", ">", "=", "@", ":"]);

/**
 * Replaces Grafana's variables with what PromQL accepts in their place:
 * interval variables become a duration, any other variable a label-value-like
 * word (they only ever stand inside strings or for durations in our files).
 */
export function withoutGrafanaVariables(expr: string): string {
  return expr
    .replace(/\$__(rate_interval|interval|range)(_ms|_s)?\b/g, "5m")
    .replace(/\$\{__(rate_interval|interval|range)(_ms|_s)?\}/g, "5m")
    .replace(/\$\{(\w+)(:[^}]*)?\}/g, "grafana_$1")
    .replace(/\[\[(\w+)\]\]/g, "grafana_$1")
    .replace(/\$(\w+)/g, "grafana_$1");
}

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const fail = (what: string): never => {
    throw new PromqlError(`${what} at offset ${i} of: ${expr}`);
  };
  while (i < expr.length) {
    const c = expr[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === "#") {
      while (i < expr.length && expr[i] !== "\n") i++;
    } else if (c === '"' || c === "'" || c === "`") {
      const start = i++;
      while (i < expr.length && expr[i] !== c) i += c !== "`" && expr[i] === "\\" ? 2 : 1;
      if (i >= expr.length) fail(`unterminated string`);
      tokens.push({ kind: "string", text: expr.slice(start + 1, i), at: start });
      i++;
    } else if (/[0-9.]/.test(c)) {
      // Numbers (1, 0.5, 1e-3, 0x1f) and durations (5m, 1h30m, 500ms) alike.
      const m =
        /^(0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?(?:(?:ms|[smhdwy])(?:[0-9]+(?:ms|[smhdwy]))*)?)/
          .exec(expr.slice(i));
      if (!m) fail(`unreadable number "${c}"`);
      tokens.push({ kind: "number", text: m![0], at: i });
      i += m![0].length;
    } else if (/[a-zA-Z_:]/.test(c)) {
      const m = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(expr.slice(i))!;
      tokens.push({ kind: "ident", text: m[0], at: i });
      i += m[0].length;
    } else {
      const p = PUNCT.find((p) => expr.startsWith(p, i));
      if (p === undefined) fail(`unexpected "${c}"`);
      tokens.push({ kind: "punct", text: p!, at: i });
      i += p!.length;
    }
  }
  return tokens;
}

/** Index of the token closing the bracket opened at `open`. */
function closing(tokens: readonly Token[], open: number, expr: string): number {
  const pairs: Record<string, string> = { "(": ")", "{": "}", "[": "]" };
  const stack: string[] = [];
  for (let i = open; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.kind !== "punct") continue;
    if (pairs[t.text]) stack.push(pairs[t.text]!);
    else if (t.text === ")" || t.text === "}" || t.text === "]") {
      if (stack.pop() !== t.text) {
        throw new PromqlError(`unbalanced "${t.text}" at offset ${t.at} of: ${expr}`);
      }
      if (stack.length === 0) return i;
    }
  }
  throw new PromqlError(
    `"${tokens[open]!.text}" at offset ${tokens[open]!.at} is never closed in: ${expr}`,
  );
}

/** The label names tested by the matchers between `{` at `open` and its `}`; `__name__="x"` names the metric. */
function matchers(
  tokens: readonly Token[],
  open: number,
  close: number,
  expr: string,
): { labels: string[]; name: string | null } {
  const labels: string[] = [];
  let name: string | null = null;
  for (let i = open + 1; i < close;) {
    const label = tokens[i];
    const op = tokens[i + 1];
    const value = tokens[i + 2];
    if (
      label?.kind !== "ident" || op?.kind !== "punct" ||
      !["=", "!=", "=~", "!~"].includes(op.text) ||
      value?.kind !== "string"
    ) {
      throw new PromqlError(
        `not a label matcher at offset ${label?.at ?? "end"} of: ${expr}`,
      );
    }
    if (label.text === "__name__") {
      if (op.text !== "=") {
        throw new PromqlError(`a __name__ matcher other than "=" names no one metric: ${expr}`);
      }
      name = value.text;
    } else labels.push(label.text);
    i += 3;
    if (tokens[i]?.kind === "punct" && tokens[i]!.text === ",") i++;
  }
  return { labels, name };
}

/**
 * The vector selectors of a PromQL expression (Grafana variables allowed), in
 * order of appearance. Throws {@link PromqlError} on what it cannot read, so a
 * name is never silently missed.
 *
 * @example
 * ```ts
 * selectorsOf('sum by (le) (rate(x_bucket{job="a"}[5m]))');
 * // [{ name: "x_bucket", labels: ["job"] }]
 * ```
 */
export function selectorsOf(expression: string): Selector[] {
  const expr = withoutGrafanaVariables(expression);
  const tokens = tokenize(expr);
  // Every bracket closed, in order: the walk below skips whole bracketed spans.
  const all = [{ kind: "punct", text: "(", at: 0 } as Token, ...tokens, {
    kind: "punct",
    text: ")",
    at: expr.length,
  } as Token];
  if (closing(all, 0, expr) !== all.length - 1) {
    throw new PromqlError(`unbalanced brackets in: ${expr}`);
  }
  const out: Selector[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    const next = tokens[i + 1];
    if (t.kind === "punct" && t.text === "[") {
      // Ranges and subqueries: durations only.
      i = closing(tokens, i, expr);
    } else if (t.kind === "punct" && t.text === "{") {
      // A selector without a name before its braces: `{__name__="x"}`.
      const end = closing(tokens, i, expr);
      const m = matchers(tokens, i, end, expr);
      if (m.name === null) throw new PromqlError(`a selector names no metric in: ${expr}`);
      out.push({ name: m.name, labels: m.labels });
      i = end;
    } else if (t.kind === "ident") {
      const word = t.text.toLowerCase();
      if (LABEL_LISTS.has(word)) {
        if (next?.kind === "punct" && next.text === "(") i = closing(tokens, i + 1, expr);
      } else if (KEYWORDS.has(word)) {
        continue;
      } else if (next?.kind === "punct" && next.text === "(") {
        continue; // A function or an aggregation: its arguments follow.
      } else if (next?.kind === "ident" && LABEL_LISTS.has(next.text.toLowerCase())) {
        continue; // An aggregation with its grouping first: `sum by (x) (…)`.
      } else if (next?.kind === "punct" && next.text === "{") {
        const end = closing(tokens, i + 1, expr);
        const m = matchers(tokens, i + 1, end, expr);
        out.push({ name: t.text, labels: m.labels });
        i = end;
      } else {
        out.push({ name: t.text, labels: [] });
      }
    }
  }
  return out;
}

/** What names and labels an expression may use. */
export interface Catalog {
  /** Sample names a node exports (`foo_total`, `foo_bucket`, `foo`), each with the labels seen on it. */
  readonly exported: ReadonlyMap<string, ReadonlySet<string>>;
  /** Family name → type (`counter`, `histogram`, …), from `# TYPE`. */
  readonly types: ReadonlyMap<string, string>;
  /** Names the recording rules record. */
  readonly recorded: ReadonlySet<string>;
  /** Series Prometheus writes itself for each target (`up`). */
  readonly prometheus: ReadonlySet<string>;
  /** Labels Prometheus adds to every scraped series (`job`, `instance`, `cluster`). */
  readonly targetLabels: ReadonlySet<string>;
}

/**
 * What is wrong with the names and labels of `expr`'s selectors, one line
 * each, naming the selector and, for an unknown name, the closest exported one.
 */
export function problemsOf(expr: string, catalog: Catalog): string[] {
  const problems: string[] = [];
  for (const s of selectorsOf(expr)) {
    if (catalog.recorded.has(s.name) || catalog.prometheus.has(s.name)) continue;
    if (s.name.includes(":")) {
      problems.push(`${s.name}: no recording rule records it`);
      continue;
    }
    const labels = catalog.exported.get(s.name);
    if (labels === undefined) {
      const type = catalog.types.get(s.name);
      problems.push(
        type === "histogram" || type === "summary"
          ? `${s.name}: a ${type} has no series of that name; use ${s.name}_bucket, _sum or _count`
          : `${s.name}: no node exports it${hint(s.name, catalog)}`,
      );
      continue;
    }
    for (const label of s.labels) {
      if (!labels.has(label) && !catalog.targetLabels.has(label)) {
        problems.push(
          `${s.name}{${label}=…}: ${s.name} has no label ${label} (it has: ${
            [...labels].sort().join(", ") || "none"
          })`,
        );
      }
    }
  }
  return problems;
}

function hint(name: string, catalog: Catalog): string {
  let best = "";
  let bestDistance = Infinity;
  for (const candidate of [...catalog.exported.keys(), ...catalog.recorded]) {
    const d = distance(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= Math.max(3, name.length / 4) ? ` (closest: ${best})` : "";
}

/** Levenshtein distance. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        row[j]! + 1,
        next[j - 1]! + 1,
        row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length]!;
}
