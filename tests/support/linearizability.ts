/**
 * A linearizability checker for client histories, after Porcupine
 * (github.com/anishathalye/porcupine): the Wing & Gong search over a history's
 * call and return events, with the two improvements of Lowe ("Testing for
 * linearizability", 2017): P-compositionality (each partition, e.g. each key,
 * is checked on its own; Herlihy & Wing §3.3 show a history is linearizable
 * iff every per-object sub-history is) and memoization (a search state is the
 * set of operations already linearized plus the model state they lead to;
 * one reached before is not explored again).
 *
 * Owns: {@link Model}, {@link Operation}, {@link checkHistory} and its result
 * and error types. Imports nothing of the agent: models (such as the metadata
 * namespace's, `register_model.ts`) live beside it and import it.
 *
 * Time: operations are closed intervals [call, return], so two operations that
 * share an instant are concurrent. An operation whose outcome is unknown (a
 * timeout, the crash of its node) has `return = Infinity`: it may have taken
 * effect at any time after its call, or never. The search places it like any
 * other operation, and stops with success once every operation with a known
 * outcome is placed, so the unknown ones left over are taken not to have
 * happened.
 *
 * Recording a history (the simulation, the real-cluster tests):
 * - Take `call` just before the request leaves and `return` just after the
 *   answer arrives, from one clock for all clients (run the clients in the
 *   test process, not in the nodes: clocks of different processes disagree).
 * - A client is sequential. One that goes on after a timeout keeps its id;
 *   the timed-out operation (output unknown, `return = Infinity`) does not
 *   count as overlapping the next.
 * - An error that proves the operation did not happen (refused before it was
 *   proposed) may be left out; any other error is an unknown outcome.
 * - Write a distinct value each time: the search and the explanations are
 *   then much sharper than with values reused.
 *
 * @module
 */

/** One client operation of a history. */
export interface Operation<Input, Output> {
  /** The sequential client that issued it; one client's operations with known outcomes must not overlap. */
  readonly clientId: number;
  readonly input: Input;
  /** The recorded result; for `return = Infinity`, a value the model reads as "unknown". */
  readonly output: Output;
  /** When the client issued it (finite). */
  readonly call: number;
  /** When the client saw the result, `>= call`; `Infinity` when the outcome is unknown. */
  readonly return: number;
}

/** The operations of one partition (one key), the same objects as in the history. */
export interface Partition<Input, Output> {
  /** Names the partition in results and messages, e.g. the key. */
  readonly key: string;
  readonly operations: readonly Operation<Input, Output>[];
}

/**
 * A sequential specification. Its functions must be pure: `step` returns a
 * new state and never changes the one it is given (the search keeps old
 * states and returns to them).
 */
export interface Model<State, Input, Output> {
  /** The state every partition starts from. */
  init(): State;
  /**
   * Whether `input` applied to `state` may produce `output`, and the state
   * after it. An unknown output must be accepted (the operation took effect,
   * its result unseen); whether it took effect at all is the checker's concern.
   */
  step(state: State, input: Input, output: Output): readonly [ok: boolean, next: State];
  /**
   * Splits a history into independent parts such that the history is
   * linearizable iff every part is (e.g. one per key). Every operation must be
   * in exactly one part. Without it the history is one partition named "".
   */
  partition?(history: readonly Operation<Input, Output>[]): readonly Partition<Input, Output>[];
  /** State equality, for the cache of explored states. */
  equal(a: State, b: State): boolean;
  /** A 32-bit hash of a state, equal for {@link Model.equal} states. */
  hash(state: State): number;
  /** One operation for messages, e.g. `put("a", "x") -> revision 1`. */
  describe(input: Input, output: Output): string;
  /** One state for messages; `String(state)` without it. */
  describeState?(state: State): string;
  /**
   * True when an accepted step with this input and output never changes the
   * state (a read, a failed compare-and-set). Dropping such operations from a
   * history can only make it more linearizable, so the checker may drop them
   * to shrink an illegal history to a smaller one that is still illegal.
   * Without it, the explanation does not shrink.
   */
  readOnly?(input: Input, output: Output): boolean;
  /**
   * Why an operation is malformed (an output that answers another input, an
   * unknown outcome with a finite return, ...), or undefined if it is not.
   */
  validate?(operation: Operation<Input, Output>): string | undefined;
}

/** Options of {@link checkHistory}. */
export interface CheckOptions {
  /** Give up after this long and answer "unknown" (unless a partition is already illegal). No limit by default. */
  readonly timeoutMs?: number;
  /**
   * Give up on a partition after exploring this many configurations (each
   * costs a few hundred bytes of memory). Default {@link DEFAULT_MAX_EXPLORED}.
   */
  readonly maxExplored?: number;
  /**
   * Time spent shrinking an illegal partition to a smaller illegal set of
   * operations, for the explanation; 0 skips it. Default {@link DEFAULT_SHRINK_TIMEOUT_MS}.
   */
  readonly shrinkTimeoutMs?: number;
  /** The clock, in milliseconds; `performance.now` by default. Tests inject one. */
  readonly now?: () => number;
}

/** Default of {@link CheckOptions.shrinkTimeoutMs}. */
export const DEFAULT_SHRINK_TIMEOUT_MS = 2_000;

/** Default of {@link CheckOptions.maxExplored}: about a gigabyte at worst. */
export const DEFAULT_MAX_EXPLORED = 3_000_000;

/** Why a partition is not linearizable; every number is an index into the checked history. */
export interface Violation {
  /** The longest sequence of operations the search could linearize, in order. */
  readonly prefix: readonly number[];
  /** The model state after {@link Violation.prefix}, described. */
  readonly stateAfterPrefix: string;
  /**
   * Of the operations with a known outcome not in the prefix, the one that
   * returned first: it must take effect before anything called after that,
   * and neither it nor any other pending operation can go next and lead to
   * a linearization.
   */
  readonly blocked: number;
  /** Why {@link Violation.blocked} cannot follow the prefix. */
  readonly reason: string;
  /**
   * A subset of the partition that is itself not linearizable, by call time:
   * the partition without the read-only operations not needed to make it
   * illegal (see {@link Model.readOnly}). The whole partition if shrinking was
   * skipped or not possible.
   */
  readonly core: readonly number[];
}

/** The verdict on one partition. */
export interface PartitionResult {
  readonly key: string;
  /** How many operations the partition holds. */
  readonly operations: number;
  /** "unknown": not decided; {@link PartitionResult.undecided} says why. */
  readonly result: "ok" | "illegal" | "unknown";
  /**
   * For "ok": the history indexes of a valid linearization, in order.
   * Operations with unknown outcomes that are missing from it did not take effect.
   */
  readonly linearization?: readonly number[];
  /** For "illegal". */
  readonly violation?: Violation;
  /** For "unknown": the time ran out, the configurations explored reached the limit, or another partition was illegal first. */
  readonly undecided?: string;
}

/** The verdict on a history. */
export interface CheckResult {
  /** "illegal" if a partition is; else "unknown" if one is undecided; else "ok". */
  readonly result: "ok" | "illegal" | "unknown";
  readonly partitions: readonly PartitionResult[];
  /** For a person: on "illegal", the illegal partition with its core, prefix and blocked operation. */
  readonly explanation: string;
}

/** What was wrong with the input to {@link checkHistory}. */
export type CheckErrorCode =
  | "bad_option"
  | "bad_time"
  | "bad_client"
  | "client_overlap"
  | "bad_operation"
  | "bad_partition";

/** A malformed history, model or option: a bug in the recorder or the model, never a verdict. */
export class CheckError extends Error {
  override readonly name = "CheckError";
  constructor(readonly code: CheckErrorCode, message: string) {
    super(message);
  }
}

/** The last operations of the prefix an explanation shows; the result holds them all. */
const SHOWN_PREFIX = 25;

/** The most operations of a core an explanation lists; the result holds them all. */
const SHOWN_CORE = 40;

/** How many search steps run between two looks at the clock. */
const CLOCK_EVERY_STEPS = 1024;

/** How many search steps a partition runs before the next one gets its turn. */
const SLICE_STEPS = 16 * CLOCK_EVERY_STEPS;

/**
 * Decides whether `history` is linearizable with respect to `model`.
 *
 * Partitions are searched in turns, a slice of steps each, and the check
 * stops at the first illegal one (as Porcupine, which searches them in
 * parallel): some illegal histories are quick to refute in one partition and
 * take hours to exhaust in another.
 *
 * @example
 * ```ts
 * import { type RegisterOperation, registerModel } from "./register_model.ts";
 *
 * // A read that misses a write completed before it started.
 * const history: RegisterOperation[] = [
 *   { clientId: 1, call: 0, return: 10, input: { op: "put", key: "k", value: "x" }, output: { kind: "put", revision: 1 } },
 *   { clientId: 2, call: 20, return: 30, input: { op: "get", key: "k" }, output: { kind: "not_found" } },
 * ];
 * const verdict = checkHistory(registerModel, history, { timeoutMs: 10_000 });
 * if (verdict.result !== "illegal") throw new Error(verdict.explanation);
 * console.log(verdict.explanation); // names key "k", the read, and the state "x"@1 it missed
 * ```
 */
export function checkHistory<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  options: CheckOptions = {},
): CheckResult {
  const now = options.now ?? (() => performance.now());
  const timeoutMs = nonNegative("timeoutMs", options.timeoutMs ?? Infinity);
  const shrinkTimeoutMs = nonNegative(
    "shrinkTimeoutMs",
    options.shrinkTimeoutMs ?? DEFAULT_SHRINK_TIMEOUT_MS,
  );
  const maxExplored = nonNegative("maxExplored", options.maxExplored ?? DEFAULT_MAX_EXPLORED);
  const where = validateHistory(model, history);
  const partitions = partitionOf(model, history, where);
  const deadline = now() + timeoutMs;

  const searches = partitions.map((part) => ({
    part,
    resume: startSearch(model, part.operations, maxExplored),
    outcome: undefined as Search | undefined,
  }));
  let pending = searches;
  while (pending.length > 0) {
    for (const s of pending) {
      s.outcome = s.resume(SLICE_STEPS, deadline, now);
      if (s.outcome?.kind === "illegal") break;
    }
    if (searches.some((s) => s.outcome?.kind === "illegal")) break;
    pending = pending.filter((s) => s.outcome === undefined);
  }

  const results = searches.map(({ part, outcome }): PartitionResult => {
    const indexes = part.operations.map((op) => where.get(op)!);
    const base = { key: part.key, operations: indexes.length };
    if (outcome === undefined) {
      return { ...base, result: "unknown", undecided: "another partition is illegal" };
    }
    if (outcome.kind === "ok") {
      return { ...base, result: "ok", linearization: outcome.order.map((i) => indexes[i]!) };
    }
    if (outcome.kind === "undecided") return { ...base, result: "unknown", undecided: outcome.why };
    const core = shrink(model, part.operations, outcome.blocked, {
      deadline: now() + shrinkTimeoutMs,
      now,
      maxExplored,
    });
    const after = replay(model, part.operations, outcome.prefix);
    const blocked = part.operations[outcome.blocked]!;
    return {
      ...base,
      result: "illegal",
      violation: {
        prefix: outcome.prefix.map((i) => indexes[i]!),
        stateAfterPrefix: describeState(model, after),
        blocked: indexes[outcome.blocked]!,
        reason: model.step(after, blocked.input, blocked.output)[0]
          ? "the model accepts it in that state, but then no order of the pending operations works"
          : "the model rejects it in that state, and no pending operation can go first and change that",
        core: core.map((i) => indexes[i]!),
      },
    };
  });

  const result = results.some((r) => r.result === "illegal")
    ? "illegal"
    : results.some((r) => r.result === "unknown")
    ? "unknown"
    : "ok";
  return { result, partitions: results, explanation: explain(model, history, results) };
}

function nonNegative(name: string, value: number): number {
  if (!(value >= 0)) {
    throw new CheckError("bad_option", `${name} = ${value}: expected a number >= 0`);
  }
  return value;
}

/**
 * Throws a {@link CheckError} for the first malformed operation; returns each
 * operation's index. Operations are told apart by identity, so equal-looking
 * ones are fine but one object must not appear twice.
 */
function validateHistory<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
): Map<object, number> {
  const where = new Map<object, number>();
  const byClient = new Map<number, number[]>();
  history.forEach((op, i) => {
    if (where.has(op)) {
      throw new CheckError(
        "bad_operation",
        `history[${i}] is the same object as history[${
          where.get(op)
        }]: expected one object per operation`,
      );
    }
    where.set(op, i);
    if (typeof op.call !== "number" || !Number.isFinite(op.call)) {
      throw new CheckError("bad_time", `history[${i}].call = ${op.call}: expected a finite number`);
    }
    if (typeof op.return !== "number" || !(op.return >= op.call)) {
      throw new CheckError(
        "bad_time",
        `history[${i}].return = ${op.return} with call = ${op.call}: expected a number >= call, or Infinity for an unknown outcome`,
      );
    }
    if (!Number.isSafeInteger(op.clientId)) {
      throw new CheckError(
        "bad_client",
        `history[${i}].clientId = ${op.clientId}: expected an integer`,
      );
    }
    const problem = model.validate?.(op);
    if (problem !== undefined) {
      throw new CheckError("bad_operation", `history[${i}] ${safeDescribe(model, op)}: ${problem}`);
    }
    if (op.return !== Infinity) {
      const list = byClient.get(op.clientId) ?? [];
      list.push(i);
      byClient.set(op.clientId, list);
    }
  });
  for (const [client, list] of byClient) {
    list.sort((a, b) => history[a]!.call - history[b]!.call);
    for (let k = 1; k < list.length; k++) {
      const prev = history[list[k - 1]!]!, next = history[list[k]!]!;
      if (next.call < prev.return) {
        throw new CheckError(
          "client_overlap",
          `client ${client}: history[${list[k]}] is called at ${next.call}, before history[${
            list[k - 1]
          }] returned at ${prev.return}: a client is sequential; give each concurrent caller its own clientId`,
        );
      }
    }
  }
  return where;
}

function safeDescribe<S, I, O>(model: Model<S, I, O>, op: Operation<I, O>): string {
  try {
    return model.describe(op.input, op.output);
  } catch {
    return JSON.stringify({ input: op.input, output: op.output });
  }
}

function partitionOf<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  where: Map<object, number>,
): readonly Partition<I, O>[] {
  if (model.partition === undefined) return [{ key: "", operations: history }];
  const parts = model.partition(history);
  const seen = new Set<object>();
  for (const part of parts) {
    for (const op of part.operations) {
      if (!where.has(op)) {
        throw new CheckError(
          "bad_partition",
          `partition ${
            quote(part.key)
          } holds an operation that is not in the history: the model's partition() must return the history's own objects`,
        );
      }
      if (seen.has(op)) {
        throw new CheckError(
          "bad_partition",
          `history[${where.get(op)}] is in more than one partition: expected exactly one`,
        );
      }
      seen.add(op);
    }
  }
  if (seen.size !== history.length) {
    const missing = history.findIndex((op) => !seen.has(op));
    throw new CheckError(
      "bad_partition",
      `history[${missing}] is in no partition: the model's partition() must place every operation`,
    );
  }
  return parts;
}

type Search =
  | { readonly kind: "ok"; readonly order: readonly number[] }
  | { readonly kind: "undecided"; readonly why: string }
  | { readonly kind: "illegal"; readonly prefix: readonly number[]; readonly blocked: number };

/**
 * Runs up to `steps` more steps of a search: its outcome, or undefined if it
 * needs more. Gives up ("undecided") once the clock passes `deadline`.
 */
type Resume = (steps: number, deadline: number, now: () => number) => Search | undefined;

/**
 * The Wing & Gong search with Lowe's cache over one partition. Indexes in the
 * answer are into `ops`.
 *
 * Operations with a known outcome: their events (a call and a return each)
 * sit in a doubly linked list sorted by time, calls before returns at the
 * same instant. Walking it from the front, each call is a candidate to
 * linearize next, up to the first return, R: its operation returned earliest
 * among those pending and must be linearized before anything called later.
 * Operations with an unknown outcome are candidates while their call is not
 * after R; they come after the known ones, since most never took effect.
 * When every candidate has failed the search backtracks. Linearizing a known
 * operation unlinks both its events (dancing links), and backtracking relinks
 * them in reverse order.
 *
 * Four prunings, each losing no linearization:
 * - The cache (Lowe): a configuration is the known operations linearized,
 *   the state, and the unknown ones linearized. It is skipped when one with
 *   the same known operations and state and a subset of its unknown ones was
 *   explored: whatever completes the larger completes the smaller, whose
 *   extra pending unknown operations are optional and constrain nobody.
 *   (Porcupine skips only equal configurations; with many timeouts that is
 *   exponential.)
 * - A read-only candidate ({@link Model.readOnly}) that the model accepts,
 *   leaving the state as it was, is linearized at once, without trying the
 *   others: moving it to the front of any completion keeps every step of that
 *   completion valid. Without this, concurrent reads, which commute, make the
 *   search try their subsets. (A read that changes the model's state, such as
 *   one that shows a revision the model did not know yet, is tried like any
 *   other operation.)
 * - An unknown candidate that leaves the state as it is is not tried: the
 *   configuration it leads to is dominated by the current one.
 * - Right after an unknown operation, an unknown candidate that reaches the
 *   same state as it would have alone (a write overwriting the one just
 *   placed) is not tried: the previous frame tries it alone, with one
 *   unknown operation fewer spent. Without this, the search tries every
 *   subset of timed-out writes in every order before it finds none of them
 *   mattered (a failover history of 171 operations, 34 timed out, ran past
 *   60 s; it now takes milliseconds).
 */
function startSearch<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  maxExplored: number,
): Resume {
  const known: number[] = [], unknown: number[] = [];
  ops.forEach((op, i) => (op.return === Infinity ? unknown : known).push(i));
  if (known.length === 0) return () => ({ kind: "ok", order: [] });
  unknown.sort((a, b) => ops[a]!.call - ops[b]!.call || a - b);
  const k = known.length, u = unknown.length;
  const readOnly = new Uint8Array(k);
  if (model.readOnly !== undefined) {
    known.forEach((i, j) => readOnly[j] = model.readOnly!(ops[i]!.input, ops[i]!.output) ? 1 : 0);
  }

  // Node 0 is the head; nodes 1..2k are the events of known operations in
  // time order. Event 2j is the call of known[j], 2j+1 its return.
  const events: number[] = [];
  for (let j = 0; j < k; j++) events.push(2 * j, 2 * j + 1);
  const timeOf = (e: number) => e & 1 ? ops[known[e >> 1]!]!.return : ops[known[e >> 1]!]!.call;
  events.sort((a, b) => timeOf(a) - timeOf(b) || (a & 1) - (b & 1) || a - b);
  const size = 2 * k + 1;
  const next = new Int32Array(size), prev = new Int32Array(size);
  const knownOf = new Int32Array(size), isCall = new Uint8Array(size);
  const returnNode = new Int32Array(k);
  for (let e = 0; e < size; e++) {
    next[e] = e + 1 < size ? e + 1 : -1;
    prev[e] = e - 1;
  }
  events.forEach((e, at) => {
    knownOf[at + 1] = e >> 1;
    isCall[at + 1] = e & 1 ? 0 : 1;
    if (e & 1) returnNode[e >> 1] = at + 1;
  });
  const lift = (call: number) => {
    next[prev[call]!] = next[call]!;
    prev[next[call]!] = prev[call]!; // a call is never last: its return follows it
    const ret = returnNode[knownOf[call]!]!;
    next[prev[ret]!] = next[ret]!;
    if (next[ret]! !== -1) prev[next[ret]!] = prev[ret]!;
  };
  const unlift = (call: number) => {
    const ret = returnNode[knownOf[call]!]!;
    next[prev[ret]!] = ret;
    if (next[ret]! !== -1) prev[next[ret]!] = ret;
    next[prev[call]!] = call;
    prev[next[call]!] = call;
  };

  // Linearized operations as two bitsets, known and unknown; the known one
  // with a Zobrist hash kept up to date in O(1) per change.
  const knownBits = new Uint32Array((k + 31) >>> 5);
  const unknownBits = new Uint32Array((u + 31) >>> 5);
  const zobrist = new Int32Array(k);
  let seed = 0x2545f491;
  for (let j = 0; j < k; j++) {
    seed ^= seed << 13, seed ^= seed >>> 17, seed ^= seed << 5;
    zobrist[j] = seed;
  }
  let knownHash = 0;
  const flip = (bits: Uint32Array, j: number) => bits[j >>> 5]! ^= 1 << (j & 31);
  interface Explored {
    readonly knownBits: Uint32Array;
    readonly state: S;
    readonly unknownSets: Uint32Array[];
  }
  const cache = new Map<number, Explored[]>();
  let explored = 0;
  /** Records the current configuration; false if it or one that dominates it was explored. */
  const explore = (state: S): boolean => {
    const key = (knownHash ^ Math.imul(model.hash(state) | 0, 0x9e3779b1)) | 0;
    let bucket = cache.get(key);
    if (bucket === undefined) cache.set(key, bucket = []);
    for (const entry of bucket) {
      if (!sameBits(entry.knownBits, knownBits) || !model.equal(entry.state, state)) continue;
      if (entry.unknownSets.some((set) => isSubset(set, unknownBits))) return false;
      entry.unknownSets.push(unknownBits.slice());
      explored++;
      return true;
    }
    explored++;
    bucket.push({ knownBits: knownBits.slice(), state, unknownSets: [unknownBits.slice()] });
    return true;
  };

  // One frame per configuration on the current path: its state, its candidates (a call
  // node >= 1, or -1 - j for unknown[j]) with the states they lead to, the
  // next one to try, and the return node R that bounded them.
  interface Frame {
    readonly state: S;
    readonly bound: number;
    readonly moves: number[];
    readonly afters: S[];
    tried: number;
  }
  const opOf = (move: number) => move >= 0 ? known[knownOf[move]!]! : unknown[-1 - move]!;
  /**
   * The frame of `state`; `parent` is the state before the move that led
   * here when that move was an unknown operation.
   */
  const frameAt = (state: S, parent?: S): Frame => {
    const moves: number[] = [], afters: S[] = [];
    let entry = next[0]!;
    for (; isCall[entry]; entry = next[entry]!) {
      const op = ops[known[knownOf[entry]!]!]!;
      const [ok, after] = model.step(state, op.input, op.output);
      if (!ok) continue;
      // Only a read that leaves the state as it is commutes with everything:
      // one that learns something (an unknown revision) may learn it wrong here.
      if (readOnly[knownOf[entry]!] && model.equal(after, state)) {
        return { state, bound: entry, moves: [entry], afters: [after], tried: 0 };
      }
      moves.push(entry);
      afters.push(after);
    }
    const boundTime = ops[known[knownOf[entry]!]!]!.return;
    for (let j = 0; j < u && ops[unknown[j]!]!.call <= boundTime; j++) {
      if (unknownBits[j >>> 5]! & (1 << (j & 31))) continue;
      const op = ops[unknown[j]!]!;
      const [ok, after] = model.step(state, op.input, op.output);
      if (!ok || model.equal(after, state)) continue;
      if (parent !== undefined) {
        // Overwriting the unknown operation just placed: the parent frame
        // tries this one alone, reaching the same state with fewer unknown
        // operations spent, which dominates.
        const [alone, afterAlone] = model.step(parent, op.input, op.output);
        if (alone && model.equal(afterAlone, after)) continue;
      }
      moves.push(-1 - j);
      afters.push(after);
    }
    return { state, bound: entry, moves, afters, tried: 0 };
  };
  const apply = (move: number) => {
    if (move >= 0) {
      const j = knownOf[move]!;
      flip(knownBits, j);
      knownHash ^= zobrist[j]!;
    } else {
      flip(unknownBits, -1 - move);
    }
  };

  const path: Frame[] = [frameAt(model.init())];
  const chosen: number[] = [];
  let remaining = k;
  let longest: number[] = [];
  let blocked = -1;
  let outcome: Search | undefined;
  const run = (steps: number, deadline: number, now: () => number): Search | undefined => {
    for (let step = 0; step < steps; step++) {
      if (step % CLOCK_EVERY_STEPS === 0 && now() > deadline) {
        return { kind: "undecided", why: "the time ran out" };
      }
      if (explored > maxExplored) {
        return { kind: "undecided", why: `explored ${explored} configurations (maxExplored)` };
      }
      const frame = path[path.length - 1]!;
      if (frame.tried < frame.moves.length) {
        const at = frame.tried++;
        const move = frame.moves[at]!, after = frame.afters[at]!;
        apply(move);
        if (!explore(after)) {
          apply(move);
          continue;
        }
        chosen.push(move);
        if (move >= 0) {
          lift(move);
          if (--remaining === 0) return { kind: "ok", order: chosen.map(opOf) };
        }
        if (chosen.length > longest.length) {
          longest = chosen.map(opOf);
          blocked = -1;
        }
        path.push(frameAt(after, move < 0 ? path[path.length - 1]!.state : undefined));
        continue;
      }
      // Every candidate failed: this prefix cannot be extended.
      if (chosen.length === longest.length && blocked === -1) {
        blocked = known[knownOf[frame.bound]!]!;
      }
      path.pop();
      const move = chosen.pop();
      if (move === undefined) return { kind: "illegal", prefix: longest, blocked };
      apply(move);
      if (move >= 0) {
        unlift(move);
        remaining++;
      }
    }
    return undefined;
  };
  return (steps, deadline, now) => {
    outcome ??= run(steps, deadline, now);
    return outcome;
  };
}

function sameBits(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isSubset(small: Uint32Array, large: Uint32Array): boolean {
  for (let i = 0; i < small.length; i++) if ((small[i]! & ~large[i]!) !== 0) return false;
  return true;
}

function replay<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  order: readonly number[],
): S {
  let state = model.init();
  for (const i of order) state = model.step(state, ops[i]!.input, ops[i]!.output)[1];
  return state;
}

function describeState<S, I, O>(model: Model<S, I, O>, state: S): string {
  return model.describeState ? model.describeState(state) : String(state);
}

/**
 * Shrinks an illegal partition by dropping read-only operations while it stays
 * illegal (chunks of halving size, as in delta debugging). Sound: the history
 * is the core plus read-only operations, and adding those cannot make an
 * illegal history linearizable. Returns indexes into `ops`, by call time.
 */
function shrink<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  blocked: number,
  limits: { readonly deadline: number; readonly now: () => number; readonly maxExplored: number },
): number[] {
  const { deadline, now, maxExplored } = limits;
  const all = ops.map((_, i) => i).sort((a, b) => ops[a]!.call - ops[b]!.call || a - b);
  const readOnly = model.readOnly;
  if (readOnly === undefined) return all;
  const keep = new Set(all);
  const illegalWithout = (drop: readonly number[]): boolean => {
    const dropped = new Set(drop);
    const rest = all.filter((i) => keep.has(i) && !dropped.has(i)).map((i) => ops[i]!);
    return startSearch(model, rest, maxExplored)(Infinity, deadline, now)?.kind === "illegal";
  };
  let candidates = all.filter((i) => readOnly(ops[i]!.input, ops[i]!.output));
  // Many violations need one bad read: try keeping only that one first.
  const others = candidates.filter((i) => i !== blocked);
  if (others.length > 0 && illegalWithout(others)) {
    for (const i of others) keep.delete(i);
    candidates = candidates.filter((i) => i === blocked);
  }
  for (let chunk = Math.ceil(candidates.length / 2); chunk >= 1 && now() <= deadline;) {
    let removed = false;
    for (let at = 0; at < candidates.length && now() <= deadline;) {
      const trial = candidates.slice(at, at + chunk);
      if (illegalWithout(trial)) {
        for (const i of trial) keep.delete(i);
        candidates = [...candidates.slice(0, at), ...candidates.slice(at + chunk)];
        removed = true;
      } else {
        at += chunk;
      }
    }
    if (chunk === 1 && !removed) break;
    chunk = Math.ceil(chunk / 2);
  }
  return all.filter((i) => keep.has(i));
}

function explain<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  results: readonly PartitionResult[],
): string {
  const illegal = results.filter((r) => r.result === "illegal");
  const unknown = results.filter((r) => r.result === "unknown");
  const summary = `${history.length} operations in ${results.length} partition(s)`;
  if (illegal.length === 0 && unknown.length === 0) return `linearizable: ${summary}`;
  const undecided = unknown.map((r) =>
    `  partition ${quote(r.key)} (${r.operations} operations): ${r.undecided}`
  );
  if (illegal.length === 0) {
    return [`undecided: ${unknown.length} of ${summary} not decided:`, ...undecided].join("\n");
  }
  const line = (i: number) => {
    const op = history[i]!;
    const ret = op.return === Infinity ? "never returned" : String(op.return);
    return `    #${i} client ${op.clientId} [${op.call}, ${ret}] ${
      model.describe(op.input, op.output)
    }`;
  };
  const lines = [`not linearizable: ${summary}`];
  for (const r of illegal) {
    const v = r.violation!;
    lines.push(
      `partition ${quote(r.key)} (${r.operations} operations) is illegal:`,
      `  after the longest linearizable prefix (${v.prefix.length} operations, ending in state ${v.stateAfterPrefix}),`,
      `  this operation returned first of those left, so it must take effect next or after`,
      `  operations still pending, and no order works:`,
      line(v.blocked),
      `    ${v.reason}.`,
      `  the end of that prefix, in order:`,
      ...tail(v.prefix, SHOWN_PREFIX, "prefix").map((i) => typeof i === "number" ? line(i) : i),
    );
    const dropped = r.operations - v.core.length;
    const why = dropped > 0
      ? `; the ${dropped} others change no state (reads, failed writes) and cannot cause it`
      : "";
    if (v.core.length <= SHOWN_CORE) {
      lines.push(
        `  these ${v.core.length} operations alone are not linearizable${why}:`,
        ...v.core.map(line),
      );
    } else {
      lines.push(
        `  ${v.core.length} operations alone are not linearizable (violation.core)${why}.`,
      );
    }
  }
  if (undecided.length > 0) lines.push("not decided:", ...undecided);
  return lines.join("\n");
}

/** The last `max` of `items`, after a line that says how many are left out. */
function tail(items: readonly number[], max: number, field: string): (number | string)[] {
  if (items.length <= max) return [...items];
  return [
    `    ... ${items.length - max} before (violation.${field} lists them all)`,
    ...items.slice(-max),
  ];
}

function quote(key: string): string {
  return JSON.stringify(key);
}
