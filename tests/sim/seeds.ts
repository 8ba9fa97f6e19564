/**
 * The seeds CI runs: fixed ranges, so CI is repeatable, split over a few
 * test files so the parallel test runner spreads them over the cores.
 *
 * Owns: {@link CI_SEEDS}, {@link testSeeds}. Imports `run.ts`.
 */

import { runSeed, SimFailure } from "./run.ts";

/** Seeds 0 to 999, in four files of 250. */
export const CI_SEEDS = Object.freeze({ from: 0, count: 1_000, files: 4 });

/**
 * Registers one test that runs the `index`th range of {@link CI_SEEDS}. A
 * failure lists every failing seed with the command that replays it.
 */
export function testSeeds(index: number): void {
  const per = CI_SEEDS.count / CI_SEEDS.files;
  const from = CI_SEEDS.from + index * per;
  const to = from + per - 1;
  Deno.test(`seeds ${from} to ${to}: under faults, every run keeps Raft's safety properties, recovers once healed and answers linearizably`, async () => {
    const failures: string[] = [];
    for (let seed = from; seed <= to; seed++) {
      try {
        await runSeed({ seed });
      } catch (e) {
        if (!(e instanceof SimFailure)) throw e;
        failures.push(e.message);
      }
    }
    if (failures.length > 0) {
      throw new Error(
        `${failures.length} of ${per} seeds failed:\n\n${failures.join("\n\n")}`,
      );
    }
  });
}
