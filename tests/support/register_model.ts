/**
 * The model of the replicated metadata namespace for the linearizability
 * checker: keys with a value and a per-key revision; put, get, delete and
 * compare-and-set. Histories recorded by the Raft simulation and by real
 * clusters are checked against it.
 *
 * Owns: the operation types, {@link applyRegister} (the namespace's semantics,
 * in that one function) and {@link registerModel}. Imports the checker's types.
 *
 * @module
 */

import type { Model, Operation, Partition } from "./linearizability.ts";

/** One key's state; a missing key has `value` null and `revision` 0. */
export interface KeyState {
  readonly value: string | null;
  readonly revision: number;
}

/** The state of a key never written, or deleted. */
export const MISSING: KeyState = Object.freeze({ value: null, revision: 0 });

/** What a client asked. Values are compared as strings: record bytes as hex or base64. */
export type RegisterInput =
  | { readonly op: "put"; readonly key: string; readonly value: string }
  | { readonly op: "get"; readonly key: string }
  | { readonly op: "delete"; readonly key: string }
  | {
    readonly op: "cas";
    readonly key: string;
    /** The revision the key must have for the write to happen; 0: the key must be missing. */
    readonly expectedRevision: number;
    readonly value: string;
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

/**
 * The semantics of the namespace, for one key: the output the service must
 * give for `input` in `state`, and the state after. The model, the history
 * generators and the brute-force oracle of the tests all use this function,
 * so a change of the real service's semantics is a change here only.
 *
 * - A missing key has revision 0. Each put and each successful cas increases
 *   the key's revision by one; put on a missing key gives revision 1.
 * - get returns the value and revision, or not found.
 * - delete is a write that does not increase the revision: it makes the key
 *   missing again (revision 0), so a key created again starts at revision 1
 *   (as etcd's per-key `version`). It answers whether the key existed; delete
 *   of a missing key changes nothing.
 * - cas(expectedRevision, value) writes when the key's revision equals
 *   `expectedRevision` (0: only if missing) and answers the new revision;
 *   otherwise it writes nothing and answers the current revision (0 if missing).
 */
export function applyRegister(
  state: KeyState,
  input: RegisterInput,
): readonly [output: RegisterOutput, next: KeyState] {
  switch (input.op) {
    case "put": {
      const revision = state.revision + 1;
      return [{ kind: "put", revision }, { value: input.value, revision }];
    }
    case "get":
      return [
        state.value === null
          ? { kind: "not_found" }
          : { kind: "found", value: state.value, revision: state.revision },
        state,
      ];
    case "delete":
      return [{ kind: "deleted", existed: state.value !== null }, MISSING];
    case "cas": {
      if (state.revision !== input.expectedRevision) {
        return [{ kind: "cas", ok: false, revision: state.revision }, state];
      }
      const revision = state.revision + 1;
      return [{ kind: "cas", ok: true, revision }, { value: input.value, revision }];
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
  step(state, input, output) {
    const [expected, next] = applyRegister(state, input);
    return [output.kind === "unknown" || sameOutput(expected, output), next];
  },
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
  equal: (a, b) => a.revision === b.revision && a.value === b.value,
  hash(state) {
    // FNV-1a over the value, mixed with the revision.
    let h = 0x811c9dc5 ^ state.revision;
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
    state.value === null ? "missing" : `${JSON.stringify(state.value)}@${state.revision}`,
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
