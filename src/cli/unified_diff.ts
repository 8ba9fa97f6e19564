/**
 * A unified diff of two texts, line by line, as `diff -u` prints it: what
 * `blixard migrate --dry-run` shows of the file it would write.
 *
 * Owns: {@link unifiedDiff}. Pure; imports nothing.
 *
 * @module
 */

/** Lines of context around each change, as `diff -u`. */
const CONTEXT_LINES = 3;

/**
 * Above this many cells of the subsequence table (changed lines before times
 * changed lines after, the common head and tail left out), the middle is shown
 * as one replacement: a bound on the time and memory a huge file costs.
 */
const MAX_LCS_CELLS = 1_000_000;

type Op = { readonly kind: " " | "-" | "+"; readonly line: string };

/**
 * The unified diff turning `before` into `after`, with `---`/`+++` headers
 * naming `fromLabel` and `toLabel`; `""` when they are equal. A last line
 * without a newline is marked `\ No newline at end of file`.
 *
 * @example
 * ```ts
 * import { unifiedDiff } from "./unified_diff.ts";
 * console.log(unifiedDiff('mode = "grpc"\n', 'mode = "dual"\n', "a.toml", "a.toml (canary)"));
 * // --- a.toml
 * // +++ a.toml (canary)
 * // @@ -1 +1 @@
 * // -mode = "grpc"
 * // +mode = "dual"
 * ```
 */
export function unifiedDiff(
  before: string,
  after: string,
  fromLabel: string,
  toLabel: string,
): string {
  if (before === after) return "";
  const a = splitLines(before);
  const b = splitLines(after);
  const ops = diffLines(a, b);
  const hunks: string[] = [];
  let i = 0;
  while (i < ops.length) {
    if (ops[i]!.kind === " ") {
      i++;
      continue;
    }
    // A hunk: context before, then changes and the context between them while
    // the next change is within twice the context, then context after.
    let start = i;
    while (start > 0 && i - start < CONTEXT_LINES && ops[start - 1]!.kind === " ") start--;
    let end = i;
    for (;;) {
      while (end < ops.length && ops[end]!.kind !== " ") end++;
      let next = end;
      while (next < ops.length && ops[next]!.kind === " ") next++;
      if (next < ops.length && next - end <= 2 * CONTEXT_LINES) end = next;
      else break;
    }
    const stop = Math.min(ops.length, end + CONTEXT_LINES);
    const slice = ops.slice(start, stop);
    const aStart = ops.slice(0, start).filter((o) => o.kind !== "+").length;
    const bStart = ops.slice(0, start).filter((o) => o.kind !== "-").length;
    const aLen = slice.filter((o) => o.kind !== "+").length;
    const bLen = slice.filter((o) => o.kind !== "-").length;
    hunks.push(`@@ -${range(aStart, aLen)} +${range(bStart, bLen)} @@`);
    for (const o of slice) {
      hunks.push(`${o.kind}${o.line.replace(/\r?\n$/, "")}`);
      if (!o.line.endsWith("\n")) hunks.push("\\ No newline at end of file");
    }
    i = stop;
  }
  return [`--- ${fromLabel}`, `+++ ${toLabel}`, ...hunks].join("\n") + "\n";
}

/** `diff -u`'s range: `start,len` from 1, `start` alone for one line, `start-1,0` for none. */
function range(start: number, length: number): string {
  if (length === 1) return `${start + 1}`;
  return `${length === 0 ? start : start + 1},${length}`;
}

/** Lines with their newlines, so a missing last newline is a difference too. */
function splitLines(text: string): string[] {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/** The edit script: the common head and tail kept, the middle by longest common subsequence. */
function diffLines(a: readonly string[], b: readonly string[]): Op[] {
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (
    tail < a.length - head && tail < b.length - head &&
    a[a.length - 1 - tail] === b[b.length - 1 - tail]
  ) tail++;
  const ops: Op[] = a.slice(0, head).map((line) => ({ kind: " ", line }));
  const am = a.slice(head, a.length - tail);
  const bm = b.slice(head, b.length - tail);
  if (am.length * bm.length > MAX_LCS_CELLS) {
    ops.push(...am.map((line) => ({ kind: "-" as const, line })));
    ops.push(...bm.map((line) => ({ kind: "+" as const, line })));
  } else {
    // lcs[i][j]: the longest common subsequence of am[i..] and bm[j..].
    const lcs = Array.from({ length: am.length + 1 }, () => new Uint32Array(bm.length + 1));
    for (let i = am.length - 1; i >= 0; i--) {
      for (let j = bm.length - 1; j >= 0; j--) {
        lcs[i]![j] = am[i] === bm[j]
          ? lcs[i + 1]![j + 1]! + 1
          : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
      }
    }
    let i = 0;
    let j = 0;
    while (i < am.length || j < bm.length) {
      if (i < am.length && j < bm.length && am[i] === bm[j]) {
        ops.push({ kind: " ", line: am[i++]! });
        j++;
      } else if (i < am.length && (j === bm.length || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
        ops.push({ kind: "-", line: am[i++]! });
      } else ops.push({ kind: "+", line: bm[j++]! });
    }
  }
  ops.push(...a.slice(a.length - tail).map((line) => ({ kind: " " as const, line })));
  return ops;
}
