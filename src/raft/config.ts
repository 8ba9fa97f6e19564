/**
 * The configuration of one Raft core: its id, its clocks in ticks, its
 * limits, and its injected random source; validated once, with errors that
 * name the field.
 *
 * Owns: {@link RaftConfig}, {@link ResolvedRaftConfig}, the defaults and
 * {@link resolveRaftConfig}. Imports `errors.ts` and `random.ts` (a type).
 *
 * @module
 */

import { RaftConfigError } from "./errors.ts";
import type { RandomSource } from "./random.ts";

/** How a driver configures a {@link RaftCore}. Only `id` and `random` are required. */
export interface RaftConfig {
  /** This node's id: an integer 1..2^53-1, unique in the cluster. */
  readonly id: number;
  /** The only source of randomness (election timeouts); seed it to replay a run. */
  readonly random: RandomSource;
  /**
   * Ticks without a word from a leader before a follower campaigns. Each
   * election draws its timeout from `[electionTicks, 2 * electionTicks)`; a
   * leader checks its quorum every `electionTicks`. Default 10.
   */
  readonly electionTicks?: number;
  /** Ticks between a leader's heartbeats; less than `electionTicks`. Default 1. */
  readonly heartbeatTicks?: number;
  /**
   * Entry data per AppendEntries message, in bytes. A message always carries
   * at least one entry, then more while their data stays within this. Default 1 MiB.
   */
  readonly maxSizePerMsgBytes?: number;
  /** AppendEntries in flight to one follower before the leader waits for acks. Default 256. */
  readonly maxInflightMsgs?: number;
  /**
   * Data bytes the leader holds appended but not yet applied; proposals
   * past it are dropped (`uncommitted_bytes`) so a slow quorum cannot make
   * the leader's log grow without bound. Default 16 MiB.
   */
  readonly maxUncommittedBytes?: number;
  /** Largest entry data a proposal may carry, in bytes. Default 1 MiB. */
  readonly maxEntryBytes?: number;
  /** Data bytes of committed entries one Ready hands out to apply. Default 4 MiB. */
  readonly maxCommittedBytesPerReady?: number;
  /** ReadIndex requests a leader holds unanswered; more are refused (`ok: false`). Default 4096. */
  readonly maxPendingReads?: number;
  /**
   * A leader that has not heard from a quorum within `electionTicks` steps
   * down; followers that heard from a leader within `electionTicks` ignore
   * (pre)vote requests not marked `transfer`. Default true.
   */
  readonly checkQuorum?: boolean;
  /** Campaign with a PreVote round first (thesis §9.6), so a rejoining node cannot force a new term. Default true. */
  readonly preVote?: boolean;
  /**
   * The last index the driver's state machine has applied when the core
   * starts; the first Ready hands out the committed entries after it. Between
   * the storage's snapshot index and its commit index. Default: the
   * snapshot index (a state machine restored from the snapshot).
   */
  readonly applied?: number;
}

/** A {@link RaftConfig} with every default filled in and every field checked. */
export interface ResolvedRaftConfig {
  readonly id: number;
  readonly random: RandomSource;
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  readonly maxSizePerMsgBytes: number;
  readonly maxInflightMsgs: number;
  readonly maxUncommittedBytes: number;
  readonly maxEntryBytes: number;
  readonly maxCommittedBytesPerReady: number;
  readonly maxPendingReads: number;
  readonly checkQuorum: boolean;
  readonly preVote: boolean;
  /** Undefined: the storage's snapshot index, known only once the core reads it. */
  readonly applied: number | undefined;
}

const MiB = 1024 * 1024;

/** The defaults of every optional field. */
export const RAFT_CONFIG_DEFAULTS = Object.freeze({
  electionTicks: 10,
  heartbeatTicks: 1,
  maxSizePerMsgBytes: 1 * MiB,
  maxInflightMsgs: 256,
  maxUncommittedBytes: 16 * MiB,
  maxEntryBytes: 1 * MiB,
  maxCommittedBytesPerReady: 4 * MiB,
  maxPendingReads: 4096,
  checkQuorum: true,
  preVote: true,
});

/** Bounds of the counts and sizes: large enough for any real cluster, small enough to stay exact. */
const MAX_TICKS = 1_000_000;
const MAX_BYTES = 2 ** 31;
const MAX_INFLIGHT = 65_536;
const MAX_PENDING_READS = 1_000_000;

/**
 * Checks `config` and fills in the defaults.
 * @throws {RaftConfigError} naming the first field that is wrong.
 */
export function resolveRaftConfig(config: RaftConfig): ResolvedRaftConfig {
  const id = integer("id", config.id, 1, Number.MAX_SAFE_INTEGER);
  const random = config.random;
  if (typeof random !== "object" || random === null || typeof random.nextInt !== "function") {
    throw new RaftConfigError("random", random, "expected a RandomSource with nextInt(bound)");
  }
  const setting = (field: IntegerField, min: number, max: number) =>
    integer(field, config[field] ?? RAFT_CONFIG_DEFAULTS[field], min, max);
  const electionTicks = setting("electionTicks", 2, MAX_TICKS);
  const heartbeatTicks = setting("heartbeatTicks", 1, MAX_TICKS);
  if (heartbeatTicks >= electionTicks) {
    throw new RaftConfigError(
      "heartbeatTicks",
      heartbeatTicks,
      `expected fewer than electionTicks (${electionTicks}), or followers time out between heartbeats`,
    );
  }
  return {
    id,
    random,
    electionTicks,
    heartbeatTicks,
    maxSizePerMsgBytes: setting("maxSizePerMsgBytes", 1, MAX_BYTES),
    maxInflightMsgs: setting("maxInflightMsgs", 1, MAX_INFLIGHT),
    maxUncommittedBytes: setting("maxUncommittedBytes", 1, MAX_BYTES),
    maxEntryBytes: setting("maxEntryBytes", 1, MAX_BYTES),
    maxCommittedBytesPerReady: setting("maxCommittedBytesPerReady", 1, MAX_BYTES),
    maxPendingReads: setting("maxPendingReads", 1, MAX_PENDING_READS),
    checkQuorum: boolean("checkQuorum", config.checkQuorum ?? RAFT_CONFIG_DEFAULTS.checkQuorum),
    preVote: boolean("preVote", config.preVote ?? RAFT_CONFIG_DEFAULTS.preVote),
    applied: config.applied === undefined
      ? undefined
      : integer("applied", config.applied, 0, Number.MAX_SAFE_INTEGER),
  };
}

/** The integer fields that have a default. */
type IntegerField = Exclude<keyof typeof RAFT_CONFIG_DEFAULTS, "checkQuorum" | "preVote">;

function integer(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const upper = max === Number.MAX_SAFE_INTEGER ? "2^53-1" : String(max);
    throw new RaftConfigError(field, value, `expected an integer ${min}..${upper}`);
  }
  return value;
}

function boolean(field: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw new RaftConfigError(field, value, "expected true or false");
  return value;
}
