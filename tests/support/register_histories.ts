/**
 * Histories of the metadata namespace that are linearizable by construction,
 * for the checker's tests and benchmark: concurrent sequential clients whose
 * operations each take effect at a random instant inside [call, return], in
 * the order of those instants, through {@link applyRegister}. Also plausible
 * wrong outputs, to turn such a history into one that is probably not
 * linearizable.
 *
 * Owns: {@link planArb} and its shapes, {@link buildHistory}, {@link wrongOutputs}.
 * Imports fast-check and the register model.
 *
 * @module
 */

import fc from "fast-check";
import {
  applyRegister,
  type KeyState,
  MISSING,
  type RegisterInput,
  type RegisterOperation,
  type RegisterOutput,
  sameOutput,
  UNKNOWN,
} from "./register_model.ts";

/** What happens to an operation: its client sees the result, or times out after it took effect or before. */
export type Fate = "seen" | "lost_applied" | "lost_unapplied";

/** One operation of a client's plan. Times are integers so that instants are often shared. */
export interface PlannedOperation {
  readonly input: RegisterInput;
  /** Time between the previous operation's return (or 0) and this call. */
  readonly gap: number;
  /** return - call. */
  readonly duration: number;
  /** Where in [call, return] it takes effect, from 0 to `duration`. */
  readonly effectAt: number;
  /** Orders operations that take effect at the same instant. */
  readonly tieBreak: number;
  readonly fate: Fate;
}

/** A plan: one list of operations per client. */
export type Plan = readonly (readonly PlannedOperation[])[];

/** Shape of generated plans. */
export interface PlanShape {
  readonly minClients: number;
  readonly maxClients: number;
  readonly minOpsPerClient?: number;
  readonly maxOpsPerClient: number;
  readonly keys: readonly string[];
  readonly values: readonly string[];
  /** Highest expected revision a cas names. */
  readonly maxExpectedRevision: number;
  /** Longest operation; gaps are up to half of it. */
  readonly maxDuration: number;
  /** Weight of lost operations (timeouts) against 100 seen ones; 0 for none. */
  readonly lostWeight: number;
}

/**
 * Ten clients, 30 operations each, on one key with three values: the size of
 * history the simulation records, with values reused so that many orders
 * look alike (harder than unique values), and about 3% timeouts.
 */
export const TEN_CLIENTS_ONE_KEY: PlanShape = {
  minClients: 10,
  maxClients: 10,
  minOpsPerClient: 30,
  maxOpsPerClient: 30,
  keys: ["k"],
  values: ["x", "y", "z"],
  maxExpectedRevision: 8,
  maxDuration: 40,
  lostWeight: 3,
};

/** Plans for a generated history. */
export function planArb(shape: PlanShape): fc.Arbitrary<Plan> {
  const key = fc.constantFrom(...shape.keys);
  const value = fc.constantFrom(...shape.values);
  const input: fc.Arbitrary<RegisterInput> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ op: fc.constant("put" as const), key, value }) },
    { weight: 4, arbitrary: fc.record({ op: fc.constant("get" as const), key }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("delete" as const), key }) },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("cas" as const),
        key,
        expectedRevision: fc.nat({ max: shape.maxExpectedRevision }),
        value,
      }),
    },
  );
  const fate: fc.Arbitrary<Fate> = shape.lostWeight === 0 ? fc.constant("seen") : fc.oneof(
    { weight: 100, arbitrary: fc.constant("seen" as const) },
    {
      weight: shape.lostWeight,
      arbitrary: fc.constantFrom("lost_applied" as const, "lost_unapplied" as const),
    },
  );
  const operation: fc.Arbitrary<PlannedOperation> = fc
    .record({
      input,
      gap: fc.nat({ max: Math.max(0, Math.floor(shape.maxDuration / 2)) }),
      duration: fc.nat({ max: shape.maxDuration }),
      effectFraction: fc.double({ min: 0, max: 1, noNaN: true }),
      tieBreak: fc.nat(),
      fate,
    })
    .map(({ effectFraction, ...rest }) => ({
      ...rest,
      effectAt: Math.round(effectFraction * rest.duration),
    }));
  return fc.array(
    fc.array(operation, {
      minLength: shape.minOpsPerClient ?? 0,
      maxLength: shape.maxOpsPerClient,
    }),
    {
      minLength: shape.minClients,
      maxLength: shape.maxClients,
    },
  );
}

/**
 * The history a plan produces: every operation that takes effect is applied
 * in the order of its instant, so the history is linearizable. A lost
 * operation is recorded with an unknown output and `return = Infinity`; its
 * client goes on when it gives up, at the planned return.
 */
export function buildHistory(plan: Plan): RegisterOperation[] {
  interface Timed {
    readonly planned: PlannedOperation;
    readonly clientId: number;
    readonly call: number;
    readonly returned: number;
    output: RegisterOutput;
  }
  const timed: Timed[] = [];
  plan.forEach((ops, clientId) => {
    let t = 0;
    for (const planned of ops) {
      const call = t + planned.gap;
      t = call + planned.duration;
      timed.push({ planned, clientId, call, returned: t, output: UNKNOWN });
    }
  });
  const effective = timed
    .filter((op) => op.planned.fate !== "lost_unapplied")
    .sort((a, b) =>
      a.call + a.planned.effectAt - (b.call + b.planned.effectAt) ||
      a.planned.tieBreak - b.planned.tieBreak
    );
  // Every write lands at the next log index, as in the service: revisions grow across keys.
  const state = new Map<string, KeyState>();
  let logIndex = 0;
  for (const op of effective) {
    const [output, next] = applyRegister(
      state.get(op.planned.input.key) ?? MISSING,
      op.planned.input,
      ++logIndex,
    );
    state.set(op.planned.input.key, next);
    op.output = output;
  }
  return timed
    .sort((a, b) => a.call - b.call || a.clientId - b.clientId)
    .map((op) =>
      op.planned.fate === "seen"
        ? {
          clientId: op.clientId,
          input: op.planned.input,
          output: op.output,
          call: op.call,
          return: op.returned,
        }
        : {
          clientId: op.clientId,
          input: op.planned.input,
          output: UNKNOWN,
          call: op.call,
          return: Infinity,
        }
    );
}

/**
 * Outputs a faulty service could plausibly have given instead of `op`'s:
 * an off-by-one revision, another written value, a flipped flag. Empty for
 * an unknown output.
 */
export function wrongOutputs(
  history: readonly RegisterOperation[],
  op: RegisterOperation,
): RegisterOutput[] {
  const out = op.output;
  const values = [
    ...new Set(
      history.flatMap((o) => o.input.op === "put" || o.input.op === "cas" ? [o.input.value] : []),
    ),
  ];
  const candidates: RegisterOutput[] = [];
  switch (out.kind) {
    case "put":
      candidates.push({ kind: "put", revision: out.revision + 1 });
      if (out.revision > 1) candidates.push({ kind: "put", revision: out.revision - 1 });
      break;
    case "found":
      candidates.push({ kind: "not_found" }, {
        kind: "found",
        value: out.value,
        revision: out.revision + 1,
      });
      if (out.revision > 1) {
        candidates.push({ kind: "found", value: out.value, revision: out.revision - 1 });
      }
      for (const value of values) candidates.push({ kind: "found", value, revision: out.revision });
      break;
    case "not_found":
      for (const value of values) candidates.push({ kind: "found", value, revision: 1 });
      break;
    case "deleted":
      candidates.push({ kind: "deleted", existed: !out.existed });
      break;
    case "cas":
      candidates.push({ kind: "cas", ok: !out.ok, revision: out.revision });
      candidates.push({ kind: "cas", ok: out.ok, revision: out.revision + 1 });
      if (out.revision > 0) {
        candidates.push({ kind: "cas", ok: out.ok, revision: out.revision - 1 });
      }
      break;
    case "unknown":
      break;
  }
  return candidates.filter((c, i) =>
    !sameOutput(c, out) && candidates.findIndex((d) => sameOutput(c, d)) === i &&
    !(c.kind === "cas" && c.ok && c.revision === 0)
  );
}

/** `history` with the output of `history[index]` replaced. */
export function withOutput(
  history: readonly RegisterOperation[],
  index: number,
  output: RegisterOutput,
): RegisterOperation[] {
  return history.map((op, i) => i === index ? { ...op, output } : op);
}
