/**
 * The simulation's clients: sequential callers of the metadata namespace
 * (put, get, delete, compare-and-set on a few keys, every written value
 * unique) against random nodes, following NOT_LEADER to the leader the
 * error names, and the recorder of their history for the linearizability
 * checker.
 *
 * Owns: {@link SimClient}, {@link HistoryRecorder}. Imports the driver's
 * error type, the register model's operation types and the simulation's
 * cluster.
 *
 * What goes into the history (tests/support/linearizability.ts):
 * - an answer: the operation with its output, called just before the
 *   request went to the driver and returned when the answer came back;
 * - a refusal that proves nothing happened is left out: NOT_LEADER and
 *   REFUSED (refused before anything was proposed), LOST (another entry took
 *   the proposal's index, so it can never be applied), a node that is down
 *   (the connection is refused);
 * - any other failure of a write (a timeout, STOPPED or FAILED when its node
 *   crashed or its disk failed, UNKNOWN) is an unknown outcome, return =
 *   Infinity; if the answer arrives after the client gave up, a revision it
 *   shows is recorded, and LOST removes the operation;
 * - a read that fails or times out is left out: a read changes nothing.
 */

import type { ApplyResult } from "../../src/state/cluster_state.ts";
import { ConsensusError } from "../../src/consensus/driver.ts";
import type { RandomSource } from "../../src/raft/mod.ts";
import {
  type RegisterInput,
  type RegisterOperation,
  type RegisterOutput,
  UNKNOWN,
} from "../support/register_model.ts";
import type { SimCluster } from "./cluster.ts";

/** An operation as recorded, before the history is closed. */
interface Recorded {
  readonly clientId: number;
  input: RegisterInput;
  readonly output: RegisterOutput;
  readonly call: number;
  readonly return: number;
  /** Dropped after the fact: a late LOST proved it never happened. */
  dropped: boolean;
}

/** Counts for the run's summary. */
export interface HistoryStats {
  /** Operations answered (known outcome). */
  answered: number;
  /** Writes whose outcome the client never learned. */
  unknown: number;
  /** Attempts left out: refused, lost, failed reads, nodes down. */
  leftOut: number;
}

/** Collects the clients' operations. */
export class HistoryRecorder {
  readonly #ops: Recorded[] = [];
  readonly stats: HistoryStats = { answered: 0, unknown: 0, leftOut: 0 };

  /** Records an operation; returns it so a late answer can refine it. */
  add(op: Omit<Recorded, "dropped">): Recorded {
    const recorded = { ...op, dropped: false };
    this.#ops.push(recorded);
    if (op.return === Infinity) this.stats.unknown++;
    else this.stats.answered++;
    return recorded;
  }

  /** An attempt that is not part of the history. */
  leaveOut(): void {
    this.stats.leftOut++;
  }

  /**
   * The history: unknown writes whose unique value a read showed carry the
   * revision it showed (the checker then knows where they landed).
   */
  history(): RegisterOperation[] {
    const seen = new Map<string, number>();
    for (const op of this.#ops) {
      if (op.output.kind === "found") {
        seen.set(`${op.input.key}\n${op.output.value}`, op.output.revision);
      }
    }
    const out: RegisterOperation[] = [];
    for (const op of this.#ops) {
      if (op.dropped) continue;
      let input = op.input;
      if (
        op.output.kind === "unknown" && (input.op === "put" || input.op === "cas") &&
        input.revision === undefined
      ) {
        const revision = seen.get(`${input.key}\n${input.value}`);
        if (revision !== undefined) input = { ...input, revision };
      }
      out.push({
        clientId: op.clientId,
        input,
        output: op.output,
        call: op.call,
        return: op.return,
      });
    }
    return out;
  }
}

/** Settings of one client. */
export interface ClientOptions {
  readonly id: number;
  readonly keys: readonly string[];
  readonly random: RandomSource;
  /** How long the client waits for an answer before it gives up (unknown outcome). */
  readonly timeoutMs: number;
}

/** What the client tracks of a request it made. */
export interface Tracked {
  readonly what: string;
  readonly node: number;
  readonly at: number;
  settled: boolean;
}

type Settled<T> =
  | { readonly kind: "value"; readonly value: T }
  | { readonly kind: "error"; readonly error: unknown }
  | { readonly kind: "timeout" };

/** A sequential client. */
export class SimClient {
  readonly id: number;
  readonly #o: ClientOptions;
  readonly #cluster: SimCluster;
  readonly #history: HistoryRecorder;
  readonly #tracked: Tracked[];
  #stopped = false;
  #written = 0;
  /** The leader this client last heard of. */
  #leader = 0;
  /** The last revision this client saw per key, for compare-and-set. */
  readonly #revisions = new Map<string, number>();

  constructor(
    options: ClientOptions,
    cluster: SimCluster,
    history: HistoryRecorder,
    tracked: Tracked[],
  ) {
    this.id = options.id;
    this.#o = options;
    this.#cluster = cluster;
    this.#history = history;
    this.#tracked = tracked;
  }

  /** Issues operations until {@link stop}. */
  async run(): Promise<void> {
    while (!this.#stopped) {
      await this.#one();
      await this.#sleep(this.#o.random.nextInt(20));
    }
  }

  /** Issues nothing new; the operation under way finishes (or times out). */
  stop(): void {
    this.#stopped = true;
  }

  async #one(): Promise<void> {
    const r = this.#o.random;
    const key = this.#o.keys[r.nextInt(this.#o.keys.length)]!;
    const input = this.#input(key);
    const ids = this.#cluster.ids;
    let target = this.#leader !== 0 && r.nextInt(2) === 0
      ? this.#leader
      : ids[r.nextInt(ids.length)]!;
    // A few hops: the node asked, the leader it names, and so on.
    for (let hop = 0; hop < 4 && !this.#stopped; hop++) {
      const driver = this.#cluster.nodes.get(target)?.driver;
      if (!driver) {
        // Connection refused: nothing was asked.
        this.#history.leaveOut();
        await this.#sleep(5);
        target = ids[r.nextInt(ids.length)]!;
        continue;
      }
      const followed = input.op === "get"
        ? await this.#read(target, input)
        : await this.#write(target, input);
      if (followed === undefined) return;
      this.#leader = followed;
      if (followed === 0) {
        await this.#sleep(10);
        target = ids[r.nextInt(ids.length)]!;
      } else {
        target = followed;
      }
    }
  }

  #input(key: string): RegisterInput {
    const r = this.#o.random;
    const roll = r.nextInt(100);
    if (roll < 35) return { op: "get", key };
    if (roll < 50) return { op: "delete", key };
    const value = `c${this.id}-${++this.#written}`;
    if (roll < 75) return { op: "put", key, value };
    const known = this.#revisions.get(key) ?? 0;
    const which = r.nextInt(10);
    const expectedRevision = which < 6 ? known : which < 8 ? 0 : r.nextInt(known + 5);
    return { op: "cas", key, expectedRevision, value };
  }

  /** A read; returns the leader to follow (0: unknown), or undefined when done. */
  async #read(target: number, input: RegisterInput & { op: "get" }): Promise<number | undefined> {
    const driver = this.#cluster.nodes.get(target)!.driver!;
    const call = this.#now();
    const tracked = this.#track(`get ${input.key}`, target);
    const got = await this.#await(
      driver.read((state) => state.getMetadata(input.key)),
      tracked,
    );
    if (got.kind === "value") {
      const entry = got.value;
      const output: RegisterOutput = entry === undefined
        ? { kind: "not_found" }
        : { kind: "found", value: entry.value, revision: Number(entry.revision) };
      if (entry) this.#revisions.set(input.key, Number(entry.revision));
      this.#history.add({ clientId: this.id, input, output, call, return: this.#now() });
      return undefined;
    }
    this.#history.leaveOut();
    return got.kind === "error" && notLeader(got.error) ? leaderOf(got.error) : undefined;
  }

  /** A write; returns the leader to follow (0: unknown), or undefined when done. */
  async #write(
    target: number,
    input: Exclude<RegisterInput, { op: "get" }>,
  ): Promise<number | undefined> {
    const driver = this.#cluster.nodes.get(target)!.driver!;
    const call = this.#now();
    const tracked = this.#track(`${input.op} ${input.key}`, target);
    const proposal = driver.propose(
      input.op === "put"
        ? { kind: "metadata_put", key: input.key, value: input.value }
        : input.op === "delete"
        ? { kind: "metadata_delete", key: input.key }
        : {
          kind: "metadata_cas",
          key: input.key,
          expectedRevision: input.expectedRevision,
          value: input.value,
        },
    );
    const got = await this.#await(proposal, tracked);
    if (got.kind === "value") {
      const output = outputOf(got.value);
      if ("revision" in output && output.revision > 0) {
        this.#revisions.set(input.key, output.revision);
      }
      this.#history.add({ clientId: this.id, input, output, call, return: this.#now() });
      return undefined;
    }
    if (got.kind === "error" && provesNothing(got.error)) {
      this.#history.leaveOut();
      return notLeader(got.error) ? leaderOf(got.error) : undefined;
    }
    const recorded = this.#history.add({
      clientId: this.id,
      input,
      output: UNKNOWN,
      call,
      return: Infinity,
    });
    if (got.kind === "timeout") {
      // The answer may still come: what it shows sharpens the history.
      proposal.then((result) => {
        const output = outputOf(result);
        if (
          (recorded.input.op === "put" || recorded.input.op === "cas") &&
          (output.kind === "put" || (output.kind === "cas" && output.ok))
        ) recorded.input = { ...recorded.input, revision: output.revision };
      }, (error) => {
        if (error instanceof ConsensusError && error.code === "LOST") recorded.dropped = true;
      });
    }
    return undefined;
  }

  #track(what: string, node: number): Tracked {
    const t: Tracked = {
      what: `client ${this.id}: ${what}`,
      node,
      at: this.#now(),
      settled: false,
    };
    this.#tracked.push(t);
    return t;
  }

  /** Waits for `promise` or the client's timeout, whichever comes first. */
  #await<T>(promise: Promise<T>, tracked: Tracked): Promise<Settled<T>> {
    return new Promise((resolve) => {
      const cancel = this.#cluster.scheduler.after(
        this.#o.timeoutMs,
        () => resolve({ kind: "timeout" }),
      );
      promise.then((value) => {
        tracked.settled = true;
        cancel();
        resolve({ kind: "value", value });
      }, (error) => {
        tracked.settled = true;
        cancel();
        resolve({ kind: "error", error });
      });
    });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.#cluster.scheduler.after(ms, resolve));
  }

  #now(): number {
    return this.#cluster.scheduler.now();
  }
}

function notLeader(error: unknown): boolean {
  return error instanceof ConsensusError && error.code === "NOT_LEADER";
}

function leaderOf(error: unknown): number {
  return error instanceof ConsensusError ? error.leader : 0;
}

/** Refusals after which the write certainly did not happen. */
function provesNothing(error: unknown): boolean {
  return error instanceof ConsensusError &&
    (error.code === "NOT_LEADER" || error.code === "REFUSED" || error.code === "LOST");
}

/** The client's view of what applying its command did. */
export function outputOf(result: ApplyResult): RegisterOutput {
  if (!result.ok) throw new Error(`sim: the state machine refused a command: ${result.message}`);
  switch (result.kind) {
    case "metadata_put":
      return { kind: "put", revision: result.revision };
    case "metadata_delete":
      return { kind: "deleted", existed: result.existed };
    case "metadata_cas":
      return { kind: "cas", ok: result.succeeded, revision: result.revision };
    default:
      throw new Error(`sim: a metadata write was answered as ${result.kind}`);
  }
}
