/**
 * What the core hands its driver: the {@link Ready} batch of work, the role
 * and leader ({@link SoftState}), read results ({@link ReadState}) and the
 * {@link Status} snapshot for operators.
 *
 * Owns: those types and {@link Role}. Imports `storage.ts`, `messages.ts`,
 * `progress.ts` and the codec (types only).
 *
 * @module
 */

import type { Entry } from "../codec/raft.ts";
import type { CoreMessage } from "./messages.ts";
import type { ProgressState } from "./progress.ts";
import type { HardState, LogUpdate, Snapshot } from "./storage.ts";

/** The roles of a node. */
export const Role = {
  Follower: "follower",
  PreCandidate: "pre-candidate",
  Candidate: "candidate",
  Leader: "leader",
} as const;
/** One of the values of {@link Role}. */
export type Role = typeof Role[keyof typeof Role];

/** State that need not survive a crash: who leads, and what this node is. */
export interface SoftState {
  readonly role: Role;
  /** The leader this node knows of; 0 for none. */
  readonly leader: number;
}

/** The answer to one `readIndex(context)` call. */
export interface ReadState {
  /** The caller's correlation id. */
  readonly context: number;
  /**
   * Once the local state machine has applied this index, a read of it is
   * linearizable. 0 when `ok` is false.
   */
  readonly index: number;
  /**
   * False when the read could not be confirmed (the leader stepped down, or
   * had too many reads waiting): retry it.
   */
  readonly ok: boolean;
}

/**
 * One batch of work for the driver. Do it in this order, then call
 * `advance()`:
 * 1. persist `snapshot`, `entries` and `hardState` in one durable write (a
 *    Ready is a {@link LogUpdate}: `storage.save(ready)`); if `snapshot` is
 *    set, restore the state machine from it;
 * 2. send `messages` (only now: they may promise what step 1 made durable);
 * 3. apply `committedEntries` in order, calling `applyConfChange` for each
 *    ConfigChange entry; answer `readStates` once applied reaches their index.
 */
export interface Ready extends LogUpdate {
  /** The role and leader, when they changed since the last Ready. */
  readonly softState?: SoftState;
  /** The term, vote and commit, when they changed since the last Ready. */
  readonly hardState?: HardState;
  /** Entries to append (they may replace a conflicting suffix). */
  readonly entries: readonly Entry[];
  /** A snapshot received from the leader, to persist and restore. */
  readonly snapshot?: Snapshot;
  /** Messages to send once the above is durable. */
  readonly messages: readonly CoreMessage[];
  /** Committed entries to apply, in order, after the above is durable. */
  readonly committedEntries: readonly Entry[];
  /** Answers to `readIndex` calls. */
  readonly readStates: readonly ReadState[];
}

/** A leader's view of one member. */
export interface PeerStatus {
  readonly id: number;
  /** Highest index known to match the leader's log. */
  readonly match: number;
  /** Next index the leader will send. */
  readonly next: number;
  readonly state: ProgressState;
  /** Heard from within the current quorum-check period. */
  readonly recentActive: boolean;
  /** The leader is waiting for an answer before sending more. */
  readonly paused: boolean;
  /** Appends in flight. */
  readonly inflight: number;
  readonly isLearner: boolean;
  /** In snapshot state: the index of the snapshot sent; else 0. */
  readonly pendingSnapshot: number;
}

/** A snapshot of a node's consensus state, for Status and metrics. */
export interface Status {
  readonly id: number;
  readonly term: number;
  /** Node voted for in `term`; 0 for none. */
  readonly vote: number;
  readonly role: Role;
  /** 0 when no leader is known. */
  readonly leader: number;
  readonly commit: number;
  readonly applied: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  /** Target of a leadership transfer in progress; 0 for none. */
  readonly leadTransferee: number;
  readonly voters: readonly number[];
  readonly learners: readonly number[];
  /** Every member as the leader sees it (ids ascending); empty unless this node leads. */
  readonly peers: readonly PeerStatus[];
}
