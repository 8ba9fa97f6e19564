/**
 * Tests of the linearizability checker with the metadata namespace's model:
 * hand-written histories known to be illegal or legal, histories generated
 * linearizable by construction, one-output mutations decided by brute force,
 * unknown outcomes, explanations, limits and malformed input.
 */

import fc from "fast-check";
import { assert, assertEquals, thrown } from "../assert.ts";
import { CheckError, checkHistory, type CheckResult } from "./linearizability.ts";
import {
  type KeyState,
  MISSING,
  type RegisterInput,
  registerModel,
  type RegisterOperation,
  type RegisterOutput,
  stepRegister,
  UNKNOWN,
} from "./register_model.ts";
import {
  buildHistory,
  planArb,
  type PlanShape,
  TEN_CLIENTS_ONE_KEY,
  withOutput,
  wrongOutputs,
} from "./register_histories.ts";

// ---------------------------------------------------------------------------
// Building histories by hand

type Call = { readonly input: RegisterInput; readonly output: RegisterOutput };

const put = (key: string, value: string, revision?: number): Call => ({
  input: { op: "put", key, value },
  output: revision === undefined ? UNKNOWN : { kind: "put", revision },
});
const get = (key: string, seen?: readonly [string, number] | null): Call => ({
  input: { op: "get", key },
  output: seen === undefined
    ? UNKNOWN
    : seen === null
    ? { kind: "not_found" }
    : { kind: "found", value: seen[0], revision: seen[1] },
});
const del = (key: string, existed?: boolean): Call => ({
  input: { op: "delete", key },
  output: existed === undefined ? UNKNOWN : { kind: "deleted", existed },
});
const cas = (
  key: string,
  expectedRevision: number,
  value: string,
  answer?: readonly [boolean, number],
): Call => ({
  input: { op: "cas", key, expectedRevision, value },
  output: answer === undefined ? UNKNOWN : { kind: "cas", ok: answer[0], revision: answer[1] },
});

/** An operation of `clientId` over [call, returned]; no `returned` means the outcome is unknown. */
function at(
  clientId: number,
  call: number,
  returned: number | undefined,
  c: Call,
): RegisterOperation {
  return { clientId, call, return: returned ?? Infinity, ...c };
}

function check(history: readonly RegisterOperation[]): CheckResult {
  return checkHistory(registerModel, history);
}

function assertIllegal(history: readonly RegisterOperation[]): CheckResult {
  const verdict = check(history);
  assert(
    verdict.result === "illegal",
    `expected illegal, got ${verdict.result}: ${verdict.explanation}`,
  );
  return verdict;
}

function assertOk(history: readonly RegisterOperation[]): CheckResult {
  const verdict = check(history);
  assert(verdict.result === "ok", `expected ok, got ${verdict.result}: ${verdict.explanation}`);
  for (const message of linearizationProblems(history, verdict)) assert(false, message);
  return verdict;
}

// ---------------------------------------------------------------------------
// Independent oracles

/**
 * Whether `history` is linearizable, by trying every order of its operations
 * that respects real time (closed intervals), over all keys at once, with
 * unknown outcomes either placed or left out. Exponential: small histories only.
 */
function bruteForce(history: readonly RegisterOperation[]): boolean {
  const used = history.map(() => false);
  const mustPlace = history.filter((op) => op.return !== Infinity).length;
  const go = (state: ReadonlyMap<string, KeyState>, placed: number): boolean => {
    if (placed === mustPlace) return true;
    for (let i = 0; i < history.length; i++) {
      if (used[i]) continue;
      const op = history[i]!;
      const overtakes = history.some((other, j) => !used[j] && other.return < op.call);
      if (overtakes) continue;
      const [ok, next] = stepRegister(state.get(op.input.key) ?? MISSING, op.input, op.output);
      if (!ok) continue;
      used[i] = true;
      const found = go(
        new Map(state).set(op.input.key, next),
        placed + (op.return === Infinity ? 0 : 1),
      );
      used[i] = false;
      if (found) return true;
    }
    return false;
  };
  return go(new Map(), 0);
}

/**
 * Why the linearizations an "ok" verdict reports are not valid, if they are
 * not: each must hold every operation of known outcome of its partition once,
 * respect real time, and replay through the namespace's semantics.
 */
function linearizationProblems(
  history: readonly RegisterOperation[],
  verdict: CheckResult,
): string[] {
  const problems: string[] = [];
  for (const part of verdict.partitions) {
    const order = part.linearization ?? [];
    const mine = history.flatMap((op, i) => op.input.key === part.key ? [i] : []);
    const required = mine.filter((i) => history[i]!.return !== Infinity);
    const missing = required.filter((i) => !order.includes(i));
    if (missing.length > 0) {
      problems.push(`key ${part.key}: linearization lacks #${missing.join(", #")}`);
    }
    if (new Set(order).size !== order.length) problems.push(`key ${part.key}: an operation twice`);
    let state = MISSING;
    order.forEach((i, pos) => {
      const op = history[i]!;
      if (op.input.key !== part.key) problems.push(`key ${part.key}: #${i} is on another key`);
      for (const later of order.slice(pos + 1)) {
        if (history[later]!.return < op.call) {
          problems.push(`#${later} returned before #${i} was called`);
        }
      }
      const [ok, next] = stepRegister(state, op.input, op.output);
      if (!ok) {
        problems.push(
          `key ${part.key}: #${i} answers ${JSON.stringify(op.output)} in state ${
            JSON.stringify(state)
          }`,
        );
      }
      state = next;
    });
  }
  return problems;
}

// ---------------------------------------------------------------------------
// Known-bad histories

Deno.test("a read after a completed write that returns the older value is illegal", () => {
  const history = [
    at(1, 0, 10, put("k", "x", 1)),
    at(1, 20, 30, put("k", "y", 2)),
    at(2, 40, 50, get("k", ["x", 1])),
  ];
  const verdict = assertIllegal(history);
  const part = verdict.partitions[0]!;
  assertEquals(part.violation!.blocked, 2);
  assertEquals(part.violation!.prefix, [0, 1]);
  assertEquals(part.violation!.stateAfterPrefix, `"y"@2`);
});

Deno.test("a read that misses a write completed before it started is illegal", () => {
  assertIllegal([at(1, 0, 10, put("k", "x", 1)), at(2, 11, 20, get("k", null))]);
});

Deno.test("two readers that see two concurrent writes in opposite orders are illegal", () => {
  // Both writes overlap every read, so each read alone is fine; the revisions
  // say x came first, and the reader that saw x did so after another reader
  // had already seen y.
  const history = [
    at(1, 0, 100, put("k", "x", 1)),
    at(2, 0, 100, put("k", "y", 2)),
    at(3, 10, 20, get("k", ["y", 2])),
    at(4, 30, 40, get("k", ["x", 1])),
  ];
  assertIllegal(history);
  // The same reads in the other order are what a correct service gives.
  assertOk([
    history[0]!,
    history[1]!,
    at(3, 10, 20, get("k", ["x", 1])),
    at(4, 30, 40, get("k", ["y", 2])),
  ]);
});

Deno.test("a compare-and-set that succeeds against a revision already replaced is illegal", () => {
  assertIllegal([
    at(1, 0, 10, put("k", "x", 1)),
    at(2, 20, 30, put("k", "y", 2)),
    at(1, 40, 50, cas("k", 1, "z", [true, 2])),
  ]);
});

Deno.test("an acknowledged write that is lost, its revision handed out again, is illegal", () => {
  assertIllegal([
    at(1, 0, 10, put("k", "x", 1)),
    at(2, 20, 30, put("k", "y", 2)),
    at(3, 40, 50, put("k", "z", 2)),
    at(1, 60, 70, get("k", ["z", 2])),
  ]);
});

Deno.test("a read of a value never written is illegal", () => {
  assertIllegal([at(1, 0, 10, put("k", "x", 1)), at(2, 0, 20, get("k", ["w", 1]))]);
});

Deno.test("a delete that reports a missing key after a completed write is illegal", () => {
  assertIllegal([at(1, 0, 10, put("k", "x", 1)), at(2, 20, 30, del("k", false))]);
});

// ---------------------------------------------------------------------------
// Known-good histories

Deno.test("overlapping operations that only one order explains are accepted, in that order", () => {
  const history = [
    at(1, 0, 100, put("k", "x", 1)),
    at(2, 10, 110, put("k", "y", 2)),
    at(3, 20, 30, get("k", ["x", 1])),
    at(3, 40, 50, get("k", ["y", 2])),
    at(4, 45, 120, cas("k", 2, "z", [true, 3])),
    at(3, 130, 140, get("k", ["z", 3])),
  ];
  const verdict = assertOk(history);
  assertEquals(verdict.partitions[0]!.linearization, [0, 2, 1, 3, 4, 5]);
});

Deno.test("operations that share an instant are concurrent, so either order is accepted", () => {
  assertOk([at(1, 0, 10, put("k", "x", 1)), at(2, 10, 20, get("k", null))]);
  assertOk([at(1, 0, 10, put("k", "x", 1)), at(2, 10, 20, get("k", ["x", 1]))]);
});

Deno.test("a key deleted and written again gets a higher revision than it ever had", () => {
  assertOk([
    at(1, 0, 10, put("k", "x", 1)),
    at(1, 20, 30, del("k", true)),
    at(2, 40, 50, cas("k", 0, "y", [true, 3])),
    at(2, 60, 70, cas("k", 0, "z", [false, 3])),
    at(1, 80, 90, get("k", ["y", 3])),
  ]);
  // Reusing the deleted incarnation's revision would let an old compare-and-set succeed.
  assertIllegal([
    at(1, 0, 10, put("k", "x", 1)),
    at(1, 20, 30, del("k", true)),
    at(2, 40, 50, cas("k", 0, "y", [true, 1])),
  ]);
});

Deno.test("an unknown write's revision is learned from the read that shows it, not guessed", () => {
  // Two writes of the same value: the read of revision 3 is the second one's.
  assertOk([
    at(1, 0, undefined, put("k", "x")),
    at(1, 0, 0, get("k", ["x", 1])),
    at(2, 0, 0, put("k", "x", 3)),
    at(0, 0, 1, get("k", ["x", 3])),
  ]);
  // A revision that does not grow is not a write that came later.
  assertIllegal([
    at(1, 0, 10, put("k", "x", 5)),
    at(2, 20, undefined, put("k", "y")),
    at(3, 40, 50, get("k", ["y", 4])),
  ]);
});

Deno.test("keys are independent: each has its own revisions", () => {
  const verdict = assertOk([
    at(1, 0, 10, put("a", "x", 1)),
    at(2, 0, 10, put("b", "x", 1)),
    at(1, 20, 30, get("b", ["x", 1])),
    at(2, 20, 30, put("a", "y", 2)),
  ]);
  assertEquals(verdict.partitions.map((p) => [p.key, p.operations]), [["a", 2], ["b", 2]]);
});

// ---------------------------------------------------------------------------
// Unknown outcomes

Deno.test("a timed-out write that did take effect is accepted", () => {
  const history = [at(1, 0, undefined, put("k", "x")), at(2, 20, 30, get("k", ["x", 1]))];
  assertEquals(assertOk(history).partitions[0]!.linearization, [0, 1]);
});

Deno.test("a timed-out write that did not take effect is accepted", () => {
  const history = [
    at(1, 0, undefined, put("k", "x")),
    at(2, 20, 30, get("k", null)),
    at(2, 40, 50, put("k", "y", 1)),
    at(2, 60, 70, get("k", ["y", 1])),
  ];
  assertEquals(assertOk(history).partitions[0]!.linearization, [1, 2, 3]);
});

Deno.test("a timed-out write may take effect long after its client gave up", () => {
  assertOk([
    at(1, 0, undefined, put("k", "x")),
    at(1, 5, 10, get("k", null)),
    at(2, 500, 510, get("k", ["x", 1])),
  ]);
});

Deno.test("a timed-out write cannot be seen and then vanish", () => {
  assertIllegal([
    at(1, 0, undefined, put("k", "x")),
    at(2, 20, 30, get("k", ["x", 1])),
    at(2, 40, 50, get("k", null)),
  ]);
});

Deno.test("a timed-out compare-and-set takes effect only if its revision matched", () => {
  const before = [at(1, 0, 10, put("k", "x", 1)), at(2, 20, undefined, cas("k", 1, "y"))];
  assertOk([...before, at(1, 30, 40, get("k", ["y", 2]))]);
  assertOk([...before, at(1, 30, 40, get("k", ["x", 1]))]);
  assertIllegal([
    at(1, 0, 10, put("k", "x", 1)),
    at(2, 20, undefined, cas("k", 5, "y")),
    at(1, 30, 40, get("k", ["y", 2])),
  ]);
});

// ---------------------------------------------------------------------------
// Generated histories

const SEED = 20_261_203;

const smallShape: PlanShape = {
  minClients: 1,
  maxClients: 3,
  maxOpsPerClient: 3,
  keys: ["a", "b"],
  values: ["x", "y"],
  maxExpectedRevision: 2,
  maxDuration: 6,
  lostWeight: 15,
};

/** One value and many timeouts: lost writes, deletes and resets that reach the same state by many paths. */
const timeoutsShape: PlanShape = {
  minClients: 2,
  maxClients: 3,
  maxOpsPerClient: 4,
  keys: ["k"],
  values: ["x"],
  maxExpectedRevision: 1,
  maxDuration: 8,
  lostWeight: 100,
};

const mediumShape: PlanShape = {
  minClients: 2,
  maxClients: 8,
  maxOpsPerClient: 15,
  keys: ["a", "b", "c"],
  values: ["x", "y", "z"],
  maxExpectedRevision: 4,
  maxDuration: 30,
  lostWeight: 4,
};

const largeShape = TEN_CLIENTS_ONE_KEY;

Deno.test("every history of a sequential run with random effect points is accepted, with a valid linearization", () => {
  fc.assert(
    fc.property(planArb(mediumShape), (plan) => {
      assertOk(buildHistory(plan));
    }),
    { seed: SEED, numRuns: 300 },
  );
});

/** A generated history and one of its operations given a wrong output, or the history as it was. */
const mutantArb = (shape: PlanShape) =>
  fc.tuple(planArb(shape), fc.nat(), fc.nat()).map(([plan, pick, choice]) => {
    const history = buildHistory(plan);
    const targets = history.flatMap((op, i) => wrongOutputs(history, op).length > 0 ? [i] : []);
    if (targets.length === 0) return history;
    const index = targets[pick % targets.length]!;
    const wrong = wrongOutputs(history, history[index]!);
    return withOutput(history, index, wrong[choice % wrong.length]!);
  });

/**
 * Asserts that the checker agrees with brute force on each history, that
 * its linearizations are valid and its cores illegal; returns how many were
 * illegal and legal.
 */
function agreesWithBruteForce(
  arb: fc.Arbitrary<RegisterOperation[]>,
  numRuns: number,
): [number, number] {
  let illegal = 0, legal = 0;
  fc.assert(
    fc.property(arb, (history) => {
      const verdict = check(history);
      const expected = bruteForce(history) ? "ok" : "illegal";
      assert(
        verdict.result === expected,
        `checker: ${verdict.result}, brute force: ${expected}\n${verdict.explanation}`,
      );
      if (verdict.result === "ok") {
        legal++;
        for (const message of linearizationProblems(history, verdict)) assert(false, message);
      } else {
        illegal++;
        for (const part of verdict.partitions.filter((p) => p.result === "illegal")) {
          assert(!bruteForce(part.violation!.core.map((i) => history[i]!)), "core is linearizable");
        }
      }
    }),
    { seed: SEED, numRuns },
  );
  return [illegal, legal];
}

Deno.test("on small histories with one output changed the checker agrees with brute force exactly", () => {
  const [illegal, legal] = agreesWithBruteForce(mutantArb(smallShape), 1500);
  // Both kinds must be well represented for the agreement to mean something.
  assert(illegal > 300 && legal > 300, `illegal ${illegal}, legal ${legal}`);
});

Deno.test("on small histories full of timeouts the checker agrees with brute force exactly", () => {
  const arb = fc.oneof(planArb(timeoutsShape).map(buildHistory), mutantArb(timeoutsShape));
  const [illegal, legal] = agreesWithBruteForce(arb, 3000);
  assert(illegal > 300 && legal > 300, `illegal ${illegal}, legal ${legal}`);
});

Deno.test("in histories of 300 operations on one key from 10 clients, most changed outputs are found illegal", () => {
  const histories = fc.sample(mutantArb(largeShape), { seed: SEED, numRuns: 40 });
  let illegal = 0;
  for (const history of histories) {
    const verdict = checkHistory(registerModel, history, { shrinkTimeoutMs: 0 });
    assert(verdict.result !== "unknown", `seed ${SEED}: undecided: ${verdict.explanation}`);
    if (verdict.result === "illegal") illegal++;
    // A mutant accepted must come with a linearization that proves it legal.
    else {for (const message of linearizationProblems(history, verdict)) {
        assert(false, `seed ${SEED}: ${message}`);
      }}
  }
  assert(illegal >= 24, `seed ${SEED}: only ${illegal} of ${histories.length} found illegal`);
});

/**
 * A failover's history: few clients, distinct values, and half the writes
 * timed out. Each timed-out write may land anywhere after its call, so the
 * search must not try every subset of them in every order.
 */
const failoverShape: PlanShape = {
  minClients: 4,
  maxClients: 4,
  minOpsPerClient: 30,
  maxOpsPerClient: 30,
  keys: ["a"],
  values: Array.from({ length: 500 }, (_, i) => `v${i}`),
  maxExpectedRevision: 60,
  maxDuration: 40,
  lostWeight: 100,
};

Deno.test("histories of 120 operations with half of them timed out are decided, not abandoned", () => {
  // Before unknown writes overwriting each other were pruned, 4 in 300 of
  // these ran past 20 s; a failover test saw one on CI.
  const histories = fc.sample(planArb(failoverShape), { seed: SEED, numRuns: 30 }).map(
    buildHistory,
  );
  for (const history of histories) {
    const verdict = checkHistory(registerModel, history, { maxExplored: 20_000 });
    assertEquals(verdict.result, "ok", `seed ${SEED}: ${verdict.explanation}`);
  }
});

// ---------------------------------------------------------------------------
// Explanations

Deno.test("an illegal history's explanation names the key and the few operations that cause it", () => {
  const history = [
    at(1, 0, 10, put("b", "x", 1)),
    at(2, 5, 15, get("a", null)),
    at(1, 20, 30, put("a", "x", 1)),
    at(3, 21, 31, get("a", ["x", 1])),
    at(1, 40, 50, put("a", "y", 2)),
    at(3, 41, 51, get("a", ["y", 2])),
    at(2, 60, 70, get("a", ["x", 1])),
    at(3, 61, 71, get("a", ["y", 2])),
    at(3, 80, 90, get("b", ["x", 1])),
  ];
  const verdict = assertIllegal(history);
  const part = verdict.partitions.find((p) => p.key === "a")!;
  assertEquals(part.violation!.core, [2, 4, 6]);
  assertEquals(part.violation!.blocked, 6);
  for (
    const expected of [
      `partition "a" (7 operations) is illegal`,
      `these 3 operations alone are not linearizable`,
      `#6 client 2 [60, 70] get("a") -> "x"@1`,
      `ending in state "y"@2`,
      `the model rejects it in that state`,
    ]
  ) {
    assert(
      verdict.explanation.includes(expected),
      `missing ${expected} in:\n${verdict.explanation}`,
    );
  }
});

Deno.test("the explanation of a mutant in a long history shrinks to an illegal core of its writes and one read", () => {
  const histories = fc.sample(mutantArb(largeShape), { seed: SEED + 1, numRuns: 10 });
  let explained = 0;
  for (const history of histories) {
    const verdict = check(history);
    const part = verdict.partitions.find((p) => p.result === "illegal");
    if (part === undefined) continue;
    explained++;
    const core = part.violation!.core;
    const dropped = history.filter((_, i) => !core.includes(i));
    assert(
      dropped.every((op) => registerModel.readOnly!(op.input, op.output)),
      "only reads are dropped",
    );
    assertEquals(check(core.map((i) => history[i]!)).result, "illegal");
    const reads = core.filter((i) =>
      registerModel.readOnly!(history[i]!.input, history[i]!.output)
    );
    assert(reads.length <= 2, `core keeps ${reads.length} reads`);
  }
  assert(explained >= 5, `only ${explained} of 10 illegal`);
});

// ---------------------------------------------------------------------------
// Limits

Deno.test("a check that runs out of time answers unknown and says so", () => {
  let clock = 0;
  const history = buildHistory(fc.sample(planArb(largeShape), { seed: SEED, numRuns: 1 })[0]!);
  const verdict = checkHistory(registerModel, history, { timeoutMs: 50, now: () => clock += 100 });
  assertEquals(verdict.result, "unknown");
  assertEquals(verdict.partitions[0]!.undecided, "the time ran out");
  assert(verdict.explanation.startsWith("undecided:"), verdict.explanation);
});

Deno.test("a check that reaches its limit of explored configurations answers unknown", () => {
  const history = buildHistory(fc.sample(planArb(largeShape), { seed: SEED, numRuns: 1 })[0]!);
  const verdict = checkHistory(registerModel, history, { maxExplored: 10 });
  assertEquals(verdict.result, "unknown");
  const why = verdict.partitions[0]!.undecided ?? "";
  assert(why.includes("maxExplored"), why);
});

Deno.test("an illegal partition stops the check; the others are reported undecided or decided", () => {
  const history = [
    at(1, 0, 10, put("a", "x", 1)),
    at(2, 20, 30, get("a", null)),
    at(1, 20, 30, put("b", "x", 1)),
  ];
  const verdict = assertIllegal(history);
  assertEquals(verdict.partitions.find((p) => p.key === "a")!.result, "illegal");
  assert(verdict.partitions.find((p) => p.key === "b")!.result !== "illegal");
});

// ---------------------------------------------------------------------------
// Malformed input

Deno.test("malformed histories are refused with an error that names the operation, the value and what is allowed", () => {
  const cases: [RegisterOperation[], string, string][] = [
    [
      [at(1, 10, 5, get("k", null))],
      "bad_time",
      "history[0].return = 5 with call = 10: expected a number >= call",
    ],
    [
      [at(1, NaN, 5, get("k", null))],
      "bad_time",
      "history[0].call = NaN: expected a finite number",
    ],
    [
      [at(1.5, 0, 5, get("k", null))],
      "bad_client",
      "history[0].clientId = 1.5: expected an integer",
    ],
    [
      [at(1, 0, 10, get("k", null)), at(1, 5, 15, get("k", null))],
      "client_overlap",
      "client 1: history[1] is called at 5, before history[0] returned at 10",
    ],
    [
      [at(1, 0, 10, put("k", "x"))],
      "bad_operation",
      "return 10 with an unknown outcome: expected Infinity",
    ],
    [
      [{ ...at(1, 0, undefined, put("k", "x")), output: { kind: "put", revision: 1 } }],
      "bad_operation",
      "return Infinity with a known outcome",
    ],
    [
      [{ ...at(1, 0, 10, put("k", "x")), output: { kind: "not_found" } }],
      "bad_operation",
      `output kind "not_found" answers no put: expected put or unknown`,
    ],
    [[at(1, 0, 10, put("k", "x", 0))], "bad_operation", "revision 0: expected an integer >= 1"],
    [
      [at(1, 0, 10, cas("k", -1, "x", [false, 0]))],
      "bad_operation",
      "expectedRevision -1: expected an integer >= 0",
    ],
    [
      [{
        ...at(1, 0, 10, del("k")),
        output: { kind: "deleted", existed: "yes" as unknown as boolean },
      }],
      "bad_operation",
      `existed "yes": expected true or false`,
    ],
  ];
  for (const [history, code, message] of cases) {
    const error = thrown(CheckError, () => check(history));
    assertEquals(error.code, code);
    assert(error.message.includes(message), `${error.message}\nlacks\n${message}`);
  }
});

Deno.test("a timed-out operation does not count as overlapping its client's next one", () => {
  assertOk([at(1, 0, undefined, put("k", "x")), at(1, 5, 10, get("k", null))]);
});

Deno.test("a model whose partition loses an operation is refused, not trusted", () => {
  const lossy = {
    ...registerModel,
    partition: (h: readonly RegisterOperation[]) => [{ key: "k", operations: h.slice(1) }],
  };
  const error = thrown(
    CheckError,
    () => checkHistory(lossy, [at(1, 0, 10, put("k", "x", 1)), at(2, 20, 30, get("k", null))]),
  );
  assertEquals(error.code, "bad_partition");
  assert(error.message.includes("history[0] is in no partition"), error.message);
});

Deno.test("a negative timeout is refused", () => {
  const error = thrown(CheckError, () => checkHistory(registerModel, [], { timeoutMs: -1 }));
  assertEquals(error.code, "bad_option");
  assert(error.message.includes("timeoutMs = -1: expected a number >= 0"), error.message);
});
