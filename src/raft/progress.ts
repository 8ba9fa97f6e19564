/**
 * What a leader knows about each follower's log, and how fast it may send:
 * the per-peer replication state machine (probe, replicate, snapshot) and
 * the bounded window of appends in flight.
 *
 * Owns: {@link Progress}, {@link Inflights}, {@link ProgressState}. Imports
 * `errors.ts`.
 *
 * - probe: the leader does not know where the follower's log matches; it
 *   sends one append at a time and waits for the answer (or a heartbeat
 *   response) before the next.
 * - replicate: the follower's log matches up to `match`; the leader streams
 *   appends optimistically, up to `maxInflightMsgs` unacknowledged.
 * - snapshot: the follower needs entries the leader compacted; nothing is
 *   sent until the snapshot is reported done (`reportSnapshot`) or the
 *   follower's answer shows it caught up.
 *
 * @module
 */

import { RaftInvariantError } from "./errors.ts";

/** The replication state of one follower, as its leader sees it. */
export const ProgressState = {
  Probe: "probe",
  Replicate: "replicate",
  Snapshot: "snapshot",
} as const;
/** One of the values of {@link ProgressState}. */
export type ProgressState = typeof ProgressState[keyof typeof ProgressState];

/**
 * A ring of the last index of each append in flight, oldest first. Sized
 * lazily: most followers keep only a few appends in flight.
 */
export class Inflights {
  readonly capacity: number;
  #buffer: Float64Array;
  #start = 0;
  #count = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.#buffer = new Float64Array(Math.min(capacity, 8));
  }

  /** Appends in flight. */
  get count(): number {
    return this.#count;
  }

  /** True when no further append may be sent until one is acknowledged. */
  full(): boolean {
    return this.#count === this.capacity;
  }

  /** Records an append whose last entry is `lastIndex` (higher than every one in flight). */
  add(lastIndex: number): void {
    if (this.#count === this.capacity) {
      throw new RaftInvariantError(
        `inflights: add(${lastIndex}) with all ${this.capacity} slots in use`,
      );
    }
    if (this.#count > 0 && lastIndex <= this.#at(this.#count - 1)) {
      throw new RaftInvariantError(
        `inflights: add(${lastIndex}) is not above the newest in flight (${
          this.#at(this.#count - 1)
        })`,
      );
    }
    if (this.#count === this.#buffer.length) this.#grow();
    this.#buffer[(this.#start + this.#count) % this.#buffer.length] = lastIndex;
    this.#count++;
  }

  /** Frees every append whose last index is at most `index` (acknowledged). */
  freeUpTo(index: number): void {
    const length = this.#buffer.length;
    while (this.#count > 0 && this.#buffer[this.#start]! <= index) {
      this.#start = (this.#start + 1) % length;
      this.#count--;
    }
    if (this.#count === 0) this.#start = 0;
  }

  /** Forgets everything in flight (the follower changed state). */
  reset(): void {
    this.#start = 0;
    this.#count = 0;
  }

  #at(i: number): number {
    return this.#buffer[(this.#start + i) % this.#buffer.length]!;
  }

  #grow(): void {
    const bigger = new Float64Array(Math.min(this.capacity, this.#buffer.length * 2));
    for (let i = 0; i < this.#count; i++) bigger[i] = this.#at(i);
    this.#buffer = bigger;
    this.#start = 0;
  }
}

/** A leader's view of one member (itself included). */
export class Progress {
  /** Highest index known to match the leader's log. */
  match = 0;
  /** Index of the next entry to send. Invariant: `match < next`. */
  next: number;
  state: ProgressState = ProgressState.Probe;
  /** In snapshot state: the index of the snapshot sent. */
  pendingSnapshot = 0;
  /** Heard from since the last quorum check (CheckQuorum). */
  recentActive = false;
  /**
   * Set after an append in probe state, or when the inflight window filled
   * in replicate state; cleared by an answer or a heartbeat response.
   */
  paused = false;
  /** Highest commit index sent to this follower, so a lagging commit is re-sent promptly. */
  sentCommit = 0;
  /** A learner receives the log but does not vote or count for commit. */
  isLearner: boolean;
  readonly inflights: Inflights;

  constructor(next: number, maxInflight: number, isLearner: boolean) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
    this.isLearner = isLearner;
  }

  /** Back to probing from the last known match (or past a snapshot just sent). */
  becomeProbe(): void {
    const from = this.state === ProgressState.Snapshot
      ? Math.max(this.match + 1, this.pendingSnapshot + 1)
      : this.match + 1;
    this.#reset(ProgressState.Probe);
    this.next = from;
    this.sentCommit = Math.min(this.sentCommit, this.next - 1);
  }

  /** Streams appends from just after `match`. */
  becomeReplicate(): void {
    this.#reset(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  /** Waits for the snapshot at `index` to be installed. */
  becomeSnapshot(index: number): void {
    this.#reset(ProgressState.Snapshot);
    this.pendingSnapshot = index;
    this.next = index + 1;
    this.sentCommit = index;
  }

  /**
   * Records that the follower matches up to `index`; false if that is old
   * news (a duplicate or reordered answer).
   */
  maybeUpdate(index: number): boolean {
    if (index <= this.match) return false;
    this.match = index;
    if (this.next <= index) this.next = index + 1;
    this.paused = false;
    return true;
  }

  /**
   * Handles a rejected append whose previous index was `rejected`, with the
   * follower's hint that its log may match up to `hint`. Returns false for a
   * stale rejection (one about an append older than the current attempt).
   */
  maybeDecreaseTo(rejected: number, hint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      // In replicate state everything up to match is known to agree, so a
      // rejection at or below it is stale; otherwise restart from match.
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      this.sentCommit = Math.min(this.sentCommit, this.next - 1);
      return true;
    }
    // In probe state only the answer to the latest probe counts.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1);
    this.sentCommit = Math.min(this.sentCommit, this.next - 1);
    this.paused = false;
    return true;
  }

  /** True when the leader must not send appends now. */
  isPaused(): boolean {
    return this.state === ProgressState.Snapshot || this.paused;
  }

  /** Records an append of `count` entries ending at `lastIndex` (when `count > 0`). */
  sentEntries(count: number, lastIndex: number): void {
    if (this.state === ProgressState.Replicate) {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex);
      }
      this.paused = this.inflights.full();
    } else if (this.state === ProgressState.Probe) {
      if (count > 0) this.paused = true;
    } else {
      throw new RaftInvariantError(`progress: append sent in state ${this.state}`);
    }
  }

  /** True if the follower may not know `commit` yet and can be told it in an append. */
  canBumpCommit(commit: number): boolean {
    return commit > this.sentCommit && this.sentCommit < this.next - 1;
  }

  #reset(state: ProgressState): void {
    this.paused = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }
}
