/**
 * The benchmark gate: runs the codec benchmarks with `deno bench --json`,
 * compares each with its budget in bench/budgets.json, prints a table with the
 * measured figure, the budget, the predecessor's figure and the ratio, and
 * exits 1 when a budget is missed (2 when the gate itself cannot run).
 *
 * A case that misses its budget is measured again, up to four times 2 s apart, before it
 * counts as missed, so one noisy moment on a shared machine does not fail CI;
 * the table says when a figure comes from a retry.
 *
 * Usage: deno task bench:check [--json FILE]   (FILE receives the raw results)
 */

import { parseArgs } from "node:util";

interface Budget {
  readonly max_mean_ns?: number;
  readonly predecessor_ns?: number;
  readonly bytes?: number;
  readonly min_gb_per_s?: number;
  readonly predecessor_gb_per_s?: number;
}

interface BudgetFile {
  readonly file: string;
  readonly benches: Readonly<Record<string, Budget>>;
}

interface BenchReport {
  readonly cpu: string;
  readonly runtime: string;
  readonly benches: readonly {
    readonly name: string;
    readonly results: readonly { ok?: { avg: number; n: number }; failed?: unknown }[];
  }[];
}

interface Row {
  readonly name: string;
  readonly measured: string;
  readonly budget: string;
  readonly predecessor: string;
  readonly ratio: string;
  readonly status: "ok" | "MISSED" | "report";
}

/** Re-measurements of a missed case, each after a pause: a shared machine's busy moment passes. */
const MAX_RETRIES = 4;
const RETRY_PAUSE_MS = 2_000;

async function runBench(file: string, filter?: string): Promise<BenchReport> {
  const args = ["bench", "-A", "--json"];
  if (filter) args.push("--filter", filter);
  args.push(file);
  const out = await new Deno.Command(Deno.execPath(), { args, stderr: "inherit" }).output();
  if (!out.success) {
    throw new Error(`deno ${args.join(" ")} exited with ${out.code}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout)) as BenchReport;
}

function meanNs(report: BenchReport, name: string): number | undefined {
  const bench = report.benches.find((b) => b.name === name);
  return bench?.results[0]?.ok?.avg;
}

/** Returns [passes, figure text, budget text, predecessor text, ratio text]. */
function judge(budget: Budget, mean: number): [boolean | null, string, string, string, string] {
  if (budget.max_mean_ns !== undefined) {
    const pred = budget.predecessor_ns;
    return [
      mean <= budget.max_mean_ns,
      `${mean.toFixed(1)} ns`,
      `<= ${budget.max_mean_ns} ns`,
      pred === undefined ? "-" : `${pred} ns`,
      pred === undefined ? "-" : `${(pred / mean).toFixed(2)}x faster`,
    ];
  }
  const bytes = budget.bytes ?? 0;
  const gbps = bytes / mean; // bytes per ns == GB/s
  const pred = budget.predecessor_gb_per_s;
  return [
    budget.min_gb_per_s === undefined ? null : gbps >= budget.min_gb_per_s,
    `${formatGbps(gbps)} GB/s (${formatNs(mean)})`,
    budget.min_gb_per_s === undefined ? "report only" : `>= ${budget.min_gb_per_s} GB/s`,
    pred === undefined ? "-" : `${pred} GB/s`,
    pred === undefined ? "-" : `${(gbps / pred).toFixed(2)}x`,
  ];
}

function formatGbps(gbps: number): string {
  return gbps >= 100 ? gbps.toFixed(0) : gbps.toFixed(2);
}

function formatNs(ns: number): string {
  return ns >= 1e6
    ? `${(ns / 1e6).toFixed(2)} ms`
    : ns >= 1e3
    ? `${(ns / 1e3).toFixed(2)} µs`
    : `${ns.toFixed(1)} ns`;
}

function table(rows: readonly Row[]): string {
  const head = ["benchmark", "measured (mean)", "budget", "predecessor", "vs predecessor", ""];
  const cells = rows.map((r) => [r.name, r.measured, r.budget, r.predecessor, r.ratio, r.status]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]) =>
    "| " + c.map((x, i) => x.padEnd(widths[i]!)).join(" | ") + " |";
  return [
    line(head),
    "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|",
    ...cells.map(line),
  ]
    .join("\n");
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { json: { type: "string" } } });
  const budgetsPath = new URL("./budgets.json", import.meta.url);
  const budgets = JSON.parse(await Deno.readTextFile(budgetsPath)) as BudgetFile;
  const root = new URL("../", import.meta.url);
  const file = new URL(budgets.file, root).pathname;

  const report = await runBench(file);
  if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2));

  const rows: Row[] = [];
  let missed = 0;
  for (const [name, budget] of Object.entries(budgets.benches)) {
    let mean = meanNs(report, name);
    if (mean === undefined) {
      console.error(`bench:check: no result for "${name}" in ${budgets.file} (renamed or failed?)`);
      return 2;
    }
    let [pass, measured, budgetText, pred, ratio] = judge(budget, mean);
    let retried = 0;
    while (pass === false && retried < MAX_RETRIES) {
      retried++;
      await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
      const again = meanNs(await runBench(file, `/^${escapeRegExp(name)}$/`), name);
      if (again !== undefined && again < mean) mean = again;
      [pass, measured, budgetText, pred, ratio] = judge(budget, mean);
    }
    if (retried > 0) measured += ` (best of ${retried + 1} runs)`;
    if (pass === false) missed++;
    rows.push({
      name,
      measured,
      budget: budgetText,
      predecessor: pred,
      ratio,
      status: pass === null ? "report" : pass ? "ok" : "MISSED",
    });
  }

  console.log(
    `\nBenchmark gate: ${report.runtime}, ${report.cpu}, ${navigator.hardwareConcurrency} cores`,
  );
  console.log(table(rows));
  console.log(
    missed === 0
      ? `\nbench:check: all ${rows.filter((r) => r.status === "ok").length} budgets met`
      : `\nbench:check: ${missed} budget(s) MISSED`,
  );
  return missed === 0 ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`bench:check: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
