/**
 * How long the linearizability checker takes on histories of the size the
 * simulation records: 10 clients, 300 operations on one key, about 3% of them
 * timed out. Each iteration checks the next of 20 generated histories, so the
 * mean is over histories and the max is the slowest one.
 *
 * Run: `npx deno bench -A tests/support/linearizability_bench.ts`.
 */

import fc from "fast-check";
import { checkHistory } from "./linearizability.ts";
import { registerModel, type RegisterOperation } from "./register_model.ts";
import {
  buildHistory,
  planArb,
  TEN_CLIENTS_ONE_KEY,
  withOutput,
  wrongOutputs,
} from "./register_histories.ts";

const SEED = 20_261_203;
const plans = fc.sample(planArb(TEN_CLIENTS_ONE_KEY), { seed: SEED, numRuns: 20 });
const legal = plans.map(buildHistory);

/** Each history with one output changed, the first change (in a fixed order) that makes it illegal. */
const illegal = legal.map((history, n) => {
  for (let k = 0; k < history.length; k++) {
    const index = (n * 7919 + k * 104_729) % history.length;
    for (const wrong of wrongOutputs(history, history[index]!)) {
      const mutant = withOutput(history, index, wrong);
      if (checkHistory(registerModel, mutant, { shrinkTimeoutMs: 0 }).result === "illegal") {
        return mutant;
      }
    }
  }
  throw new Error(`seed ${SEED}: history ${n} has no illegal mutant`);
});

function cycling(histories: readonly RegisterOperation[][], shrinkTimeoutMs?: number): () => void {
  let next = 0;
  return () => {
    const history = histories[next++ % histories.length]!;
    const verdict = checkHistory(
      registerModel,
      history,
      shrinkTimeoutMs === undefined ? {} : { shrinkTimeoutMs },
    );
    if (verdict.result === "unknown") throw new Error(verdict.explanation);
  };
}

Deno.bench("linearizable, 300 ops on one key from 10 clients", {
  group: "lincheck",
  baseline: true,
}, cycling(legal));
Deno.bench("one wrong output: verdict only", { group: "lincheck" }, cycling(illegal, 0));
Deno.bench(
  "one wrong output: verdict and shrunk explanation",
  { group: "lincheck" },
  cycling(illegal),
);
