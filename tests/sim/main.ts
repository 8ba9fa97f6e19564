/**
 * `deno task sim`: runs seeds of the simulation outside the test runner.
 *
 *   npx deno task sim --seed N [--nodes 3|5] [--verbose]   replay one seed
 *   npx deno task sim --seeds N [--from S] [--nodes 3|5] [--verbose]   a soak
 *
 * A soak prints a summary: seeds per second, faults injected, operations
 * checked, the slowest linearizability check; every failing seed with the
 * command that replays it. Exit status 1 if any seed failed, 2 on bad usage.
 *
 * Owns: the command line of the simulation. Imports `run.ts` and
 * `node:util`'s argument parser.
 */

import { parseArgs } from "node:util";
import { replayCommand, type RunResult, runSeed, SimFailure } from "./run.ts";

function usage(problem: string): never {
  console.error(
    `sim: ${problem}\nusage: npx deno task sim --seed N [--nodes 3|5] [--verbose]\n` +
      `       npx deno task sim --seeds N [--from S] [--nodes 3|5] [--verbose]`,
  );
  Deno.exit(2);
}

function integer(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) {
    usage(`--${name} ${JSON.stringify(value)}: expected an integer >= ${min}`);
  }
  return n;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: {
        seed: { type: "string" },
        seeds: { type: "string" },
        from: { type: "string" },
        nodes: { type: "string" },
        verbose: { type: "boolean", default: false },
      },
      strict: true,
    });
  } catch (e) {
    usage((e as Error).message);
  }
  const v = parsed.values;
  const seed = integer("seed", v.seed, 0);
  const seeds = integer("seeds", v.seeds, 1);
  const from = integer("from", v.from, 0) ?? 0;
  const nodesValue = integer("nodes", v.nodes, 0);
  if (nodesValue !== undefined && nodesValue !== 3 && nodesValue !== 5) {
    usage(`--nodes ${nodesValue}: expected 3 or 5`);
  }
  const nodes = nodesValue as 3 | 5 | undefined;
  if ((seed === undefined) === (seeds === undefined)) usage("give either --seed or --seeds");
  if (seed !== undefined && v.from !== undefined) usage("--from goes with --seeds");
  const log = v.verbose ? (line: string) => console.log(line) : undefined;

  if (seed !== undefined) {
    try {
      const r = await runSeed({ seed, nodes, log });
      console.log(
        `seed ${seed}: ok: ${r.nodes} nodes, ${r.virtualMs} ms virtual, ${r.steps} events, ` +
          `${r.operations} operations (${r.unknown} unknown) checked in ${
            r.checkMs.toFixed(1)
          } ms, leader ${r.leaderTicks} ticks after healing; faults ${formatCounts(r.faults)}`,
      );
      return 0;
    } catch (e) {
      console.error(e instanceof SimFailure ? e.message : e);
      return 1;
    }
  }

  const started = performance.now();
  const failures: SimFailure[] = [];
  const faults: Record<string, number> = {};
  let operations = 0, unknown = 0, steps = 0, virtualMs = 0;
  let slowest: RunResult | undefined;
  /** The longest election after healing, with PreVote and without. */
  const longest = new Map<boolean, RunResult>();
  for (let s = from; s < from + seeds!; s++) {
    try {
      const r = await runSeed({ seed: s, nodes, log });
      operations += r.operations;
      unknown += r.unknown;
      steps += r.steps;
      virtualMs += r.virtualMs;
      if (r.leaderTicks > (longest.get(r.preVote)?.leaderTicks ?? -1)) longest.set(r.preVote, r);
      for (const [k, n] of Object.entries(r.faults)) faults[k] = (faults[k] ?? 0) + n;
      if (!slowest || r.checkMs > slowest.checkMs) slowest = r;
    } catch (e) {
      if (!(e instanceof SimFailure)) throw e;
      failures.push(e);
      console.error(`FAIL ${e.message}\n`);
    }
    const done = s - from + 1;
    if (done % 500 === 0) {
      const secs = (performance.now() - started) / 1000;
      console.log(`${done} seeds, ${failures.length} failed, ${(done / secs).toFixed(1)} seeds/s`);
    }
  }
  const secs = (performance.now() - started) / 1000;
  const injected = Object.values(faults).reduce((a, b) => a + b, 0);
  console.log(
    [
      `seeds ${from}..${from + seeds! - 1}${nodes ? ` (${nodes} nodes)` : ""}: ${
        seeds! - failures.length
      } passed, ${failures.length} failed, in ${secs.toFixed(1)} s (${
        (seeds! / secs).toFixed(1)
      } seeds/s)`,
      `virtual time ${(virtualMs / 1000).toFixed(0)} s, ${steps} events`,
      `faults injected: ${injected} (${formatCounts(faults)})`,
      `operations checked: ${operations} (${unknown} with unknown outcome)`,
      `slowest linearizability check: ${
        slowest
          ? `${
            slowest.checkMs.toFixed(1)
          } ms (seed ${slowest.seed}, ${slowest.operations} operations)`
          : "-"
      }`,
      `longest election after healing: ${
        [true, false].map((preVote) => {
          const r = longest.get(preVote);
          return `${r ? `${r.leaderTicks} ticks (seed ${r.seed})` : "-"} ${
            preVote ? "with" : "without"
          } PreVote`;
        }).join(", ")
      }`,
      ...failures.map((f) => `failed: ${replayCommand(f.seed, nodes)}`),
    ].join("\n"),
  );
  return failures.length === 0 ? 0 : 1;
}

function formatCounts(counts: Record<string, number>): string {
  return Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k} ${n}`)
    .join(", ");
}

Deno.exit(await main());
