/**
 * The model of the replicated metadata namespace for the linearizability
 * checker: keys with a value and a per-key revision; put, get, delete and
 * compare-and-set. Histories recorded by the Raft simulation and by real
 * clusters are checked against it.
 *
 * Owns: the operation types, the namespace's semantics ({@link applyRegister}
 * to generate answers, {@link stepRegister} to check them, side by side) and
 * {@link registerModel}. Imports the checker's types.
 *
 * @module
 */

import type { Model, Operation, Partition } from "./linearizability.ts";

/**
 * One key's state. A missing key has `value` null and `revision` 0.
 * `revision` is null after a write whose revision the history never showed
 * (an unknown outcome): it is fixed but not known, and the first answer that
 * shows it (a read, a failed compare-and-set) says what it is.
 */
export interface KeyState {
  readonly value: string | null;
  readonly revision: number | null;
  /** The highest revision the key ever had (deletes included): later writes get higher ones. */
  readonly floor: number;
}

/** The state of a key never written. */
export const MISSING: KeyState = Object.freeze({ value: null, revision: 0, floor: 0 });

/** What a client asked. Values are compared as strings: record bytes as hex or base64. */
export type RegisterInput =
  | {
    readonly op: "put";
    readonly key: string;
    readonly value: string;
    /**
     * The revision the service gave this write, when the recorder knows it
     * although the client did not see the answer (a later read showed the
     * value it wrote). Known outputs carry their own.
     */
    readonly revision?: number;
  }
  | { readonly op: "get"; readonly key: string }
  | { readonly op: "delete"; readonly key: string }
  | {
    readonly op: "cas";
    readonly key: string;
    /** The revision the key must have for the write to happen; 0: the key must be missing. */
    readonly expectedRevision: number;
    readonly value: string;
    /** As for put: the revision of the write, when learned from a later read. */
    readonly revision?: number;
  };

/** What the client saw; `unknown` when it never learned (timeout, crash), with `return = Infinity`. */
export type RegisterOutput =
  | { readonly kind: "put"; readonly revision: number }
  | { readonly kind: "found"; readonly value: string; readonly revision: number }
  | { readonly kind: "not_found" }
  | { readonly kind: "deleted"; readonly existed: boolean }
  | { readonly kind: "cas"; readonly ok: boolean; readonly revision: number }
  | { readonly kind: "unknown" };

/** An operation on the namespace, as recorded. */
export type RegisterOperation = Operation<RegisterInput, RegisterOutput>;

/** The output of an operation whose outcome the client never learned. */
export const UNKNOWN: RegisterOutput = Object.freeze({ kind: "unknown" });

/*
 * The semantics of the namespace (proto/blixard/v1/metadata.proto), for one
 * key, in the two functions below:
 * - A key's revision is the Raft log index of the write that last changed
 *   it: a write's revision is higher than every revision the key had before,
 *   deleted incarnations included, and no two writes share one. A missing key
 *   has revision 0.
 * - get returns the value and revision, or not found.
 * - put sets the value; its answer is its revision.
 * - delete makes the key missing (revision 0) and answers whether it
 *   existed; delete of a missing key changes nothing.
 * - cas(expectedRevision, value) writes when the key's revision equals
 *   `expectedRevision` (0: only if missing), answering the new revision;
 *   otherwise it writes nothing and answers the current revision (0 if
 *   missing).
 */

/**
 * What the service answers to `input` in `state`, and the state after,
 * when a write is given revision `revision` (the log index it lands at;
 * above `state.floor`). For generating histories, where every revision is known.
 */
export function applyRegister(
  state: KeyState,
  input: RegisterInput,
  revision: number,
): readonly [output: RegisterOutput, next: KeyState] {
  switch (input.op) {
    case "put":
      return [{ kind: "put", revision }, { value: input.value, revision, floor: revision }];
    case "get":
      return [
        state.value === null
          ? { kind: "not_found" }
          : { kind: "found", value: state.value, revision: state.revision! },
        state,
      ];
    case "delete":
      return [{ kind: "deleted", existed: state.value !== null }, {
        ...MISSING,
        floor: state.floor,
      }];
    case "cas": {
      const current = state.value === null ? 0 : state.revision!;
      if (current !== input.expectedRevision) {
        return [{ kind: "cas", ok: false, revision: current }, state];
      }
      return [{ kind: "cas", ok: true, revision }, {
        value: input.value,
        revision,
        floor: revision,
      }];
    }
  }
}

/**
 * Whether the service may answer `output` to `input` in `state`, and the
 * state after: the model's step. An unknown output means the operation took
 * effect unseen (the checker also tries it not happening at all).
 */
export function stepRegister(
  state: KeyState,
  input: RegisterInput,
  output: RegisterOutput,
): readonly [ok: boolean, next: KeyState] {
  const no = [false, state] as const;
  /** A write landing at `revision` (null: not known), if that revision can come next. */
  const written = (value: string, revision: number | undefined) =>
    revision !== undefined && revision <= state.floor
      ? no
      : [true, { value, revision: revision ?? null, floor: revision ?? state.floor }] as const;
  /** The state with its unknown revision learned to be `revision`, if it can be. */
  const learned = (revision: number): KeyState | null =>
    state.revision !== null
      ? state.revision === revision ? state : null
      : revision > state.floor
      ? { ...state, revision, floor: revision }
      : null;
  switch (input.op) {
    case "put":
      if (output.kind === "unknown") return written(input.value, input.revision);
      if (output.kind !== "put") return no;
      if (input.revision !== undefined && input.revision !== output.revision) return no;
      return written(input.value, output.revision);
    case "get": {
      if (output.kind === "unknown") return [true, state];
      if (state.value === null) return [output.kind === "not_found", state];
      if (output.kind !== "found" || output.value !== state.value) return no;
      const next = learned(output.revision);
      return next ? [true, next] : no;
    }
    case "delete":
      if (output.kind !== "unknown") {
        if (output.kind !== "deleted" || output.existed !== (state.value !== null)) return no;
      }
      return [true, { ...MISSING, floor: state.floor }];
    case "cas": {
      let base: KeyState = state;
      if (state.value === null) {
        // Missing: revision 0, known.
        if (output.kind === "cas" && !output.ok) {
          return input.expectedRevision !== 0 && output.revision === 0 ? [true, state] : no;
        }
        if (input.expectedRevision !== 0) return no;
      } else if (output.kind === "cas" && !output.ok) {
        if (output.revision === input.expectedRevision) return no;
        const next = learned(output.revision);
        return next ? [true, next] : no;
      } else {
        // It wrote, so the key had the expected revision.
        const had = input.expectedRevision === 0 ? null : learned(input.expectedRevision);
        if (!had) return no;
        base = had;
      }
      const revision = output.kind === "cas" ? output.revision : input.revision;
      if (output.kind !== "unknown" && output.kind !== "cas") return no;
      if (output.kind === "cas" && input.revision !== undefined && input.revision !== revision) {
        return no;
      }
      if (revision !== undefined && revision <= base.floor) return no;
      return [true, {
        value: input.value,
        revision: revision ?? null,
        floor: revision ?? base.floor,
      }];
    }
  }
}

/** Whether two outputs are the same answer. */
export function sameOutput(a: RegisterOutput, b: RegisterOutput): boolean {
  switch (a.kind) {
    case "put":
      return b.kind === "put" && a.revision === b.revision;
    case "found":
      return b.kind === "found" && a.value === b.value && a.revision === b.revision;
    case "not_found":
    case "unknown":
      return b.kind === a.kind;
    case "deleted":
      return b.kind === "deleted" && a.existed === b.existed;
    case "cas":
      return b.kind === "cas" && a.ok === b.ok && a.revision === b.revision;
  }
}

/** The output kinds each input may be answered with, besides `unknown`. */
const OUTPUT_KINDS: Readonly<Record<RegisterInput["op"], readonly RegisterOutput["kind"][]>> = {
  put: ["put"],
  get: ["found", "not_found"],
  delete: ["deleted"],
  cas: ["cas"],
};

function isRevision(n: unknown): boolean {
  return Number.isSafeInteger(n) && (n as number) >= 0;
}

/** The metadata namespace as a checker model, partitioned by key. */
export const registerModel: Model<KeyState, RegisterInput, RegisterOutput> = {
  init: () => MISSING,
  step: stepRegister,
  partition(history) {
    const byKey = new Map<string, RegisterOperation[]>();
    for (const op of history) {
      const list = byKey.get(op.input.key);
      if (list === undefined) byKey.set(op.input.key, [op]);
      else list.push(op);
    }
    return [...byKey].map(([key, operations]): Partition<RegisterInput, RegisterOutput> => ({
      key,
      operations,
    }));
  },
  equal: (a, b) => a.revision === b.revision && a.value === b.value && a.floor === b.floor,
  hash(state) {
    // FNV-1a over the value, mixed with the revisions.
    let h = 0x811c9dc5 ^ (state.revision ?? -1) ^ Math.imul(state.floor, 0x9e3779b1);
    const value = state.value ?? "";
    for (let i = 0; i < value.length; i++) h = Math.imul(h ^ value.charCodeAt(i), 0x01000193);
    return state.value === null ? ~h : h;
  },
  describe(input, output) {
    const key = JSON.stringify(input.key);
    const call = input.op === "put"
      ? `put(${key}, ${JSON.stringify(input.value)})`
      : input.op === "cas"
      ? `cas(${key}, expect ${input.expectedRevision}, ${JSON.stringify(input.value)})`
      : `${input.op}(${key})`;
    return `${call} -> ${describeOutput(output)}`;
  },
  describeState: (state) =>
    state.value === null
      ? `missing (last revision ${state.floor})`
      : `${JSON.stringify(state.value)}@${state.revision ?? "?"}`,
  // A read or a failed cas changes no value; one that shows an unknown revision
  // only learns what was already fixed, so dropping it can only make the
  // history more linearizable.
  readOnly(input, output) {
    if (output.kind === "unknown") return input.op === "get";
    return input.op === "get" || (output.kind === "cas" && !output.ok) ||
      (output.kind === "deleted" && !output.existed);
  },
  validate({ input, output, return: returned }) {
    const ops = Object.keys(OUTPUT_KINDS);
    if (typeof input !== "object" || input === null || !ops.includes(input.op)) {
      return `input ${JSON.stringify(input)}: expected op to be one of ${ops.join(", ")}`;
    }
    if (typeof input.key !== "string") return `key ${JSON.stringify(input.key)}: expected a string`;
    if ((input.op === "put" || input.op === "cas") && typeof input.value !== "string") {
      return `value ${JSON.stringify(input.value)}: expected a string`;
    }
    if (input.op === "cas" && !isRevision(input.expectedRevision)) {
      return `expectedRevision ${input.expectedRevision}: expected an integer >= 0`;
    }
    if (
      (input.op === "put" || input.op === "cas") && input.revision !== undefined &&
      !(isRevision(input.revision) && input.revision > 0)
    ) {
      return `revision ${input.revision}: expected an integer >= 1`;
    }
    const allowed = OUTPUT_KINDS[input.op];
    if (output?.kind !== "unknown" && !allowed.includes(output?.kind)) {
      return `output kind ${JSON.stringify(output?.kind)} answers no ${input.op}: expected ${
        [...allowed, "unknown"].join(" or ")
      }`;
    }
    if ((output.kind === "unknown") !== (returned === Infinity)) {
      return output.kind === "unknown"
        ? `return ${returned} with an unknown outcome: expected Infinity (it may take effect at any later time)`
        : `return Infinity with a known outcome: expected the time the client saw it`;
    }
    if (
      "revision" in output &&
      (!isRevision(output.revision) || (output.kind !== "cas" && output.revision === 0))
    ) {
      return `revision ${output.revision}: expected an integer >= ${output.kind === "cas" ? 0 : 1}`;
    }
    if (output.kind === "found" && typeof output.value !== "string") {
      return `value ${JSON.stringify(output.value)}: expected a string`;
    }
    const flag = output.kind === "deleted"
      ? output.existed
      : output.kind === "cas"
      ? output.ok
      : false;
    if (typeof flag !== "boolean") {
      return `${output.kind === "deleted" ? "existed" : "ok"} ${
        JSON.stringify(flag)
      }: expected true or false`;
    }
    return undefined;
  },
};

function describeOutput(output: RegisterOutput): string {
  switch (output.kind) {
    case "put":
      return `revision ${output.revision}`;
    case "found":
      return `${JSON.stringify(output.value)}@${output.revision}`;
    case "not_found":
      return "not found";
    case "deleted":
      return output.existed ? "existed" : "was missing";
    case "cas":
      return `${output.ok ? "ok" : "failed"}, revision ${output.revision}`;
    case "unknown":
      return "? (outcome unknown)";
  }
}
