/**
 * The contract between the Raft core and the storage that makes it durable.
 * The core reads the stable log through {@link LogReader}; the driver writes
 * through {@link LogStorage}. Implementations: an in-memory one for the core's
 * tests and the simulation, and a `node:sqlite` one for real nodes.
 *
 * Owns: {@link HardState}, {@link ConfState}, {@link Snapshot} and the two
 * interfaces. Imports the Raft codec's {@link Entry} only; no I/O here.
 *
 * Every method is synchronous: the core is a pure, synchronous state machine
 * and reads entries while it steps (`node:sqlite` is synchronous too).
 *
 * Indexes: entries are numbered from 1. A snapshot at index S covers every
 * entry up to S. The log holds entries from `firstIndex()` to `lastIndex()`:
 * S+1 onwards after a snapshot installed from a leader, or a few entries
 * before S after `createSnapshot` kept some for followers that lag a little.
 * `term(firstIndex() - 1)` stays answerable (the snapshot's term, or the last
 * compacted entry's) so appends after it can be checked.
 *
 * Entry data is copied on save: the codec hands out views of receive
 * buffers, which a storage must not keep.
 *
 * @module
 */

import type { Entry } from "../codec/raft.ts";

export type { Entry };

/** What must survive a crash besides the log (Raft §5, Figure 2). */
export interface HardState {
  /** Latest term this node has seen. */
  readonly term: number;
  /** Node voted for in `term`; 0 for none. */
  readonly vote: number;
  /** Highest index known committed. Persisted so a restart need not re-learn it. */
  readonly commit: number;
}

/** The membership a log prefix establishes. */
export interface ConfState {
  /** Nodes that vote, ascending. */
  readonly voters: readonly number[];
  /** Nodes that receive the log but do not vote (catching up before promotion), ascending. */
  readonly learners: readonly number[];
}

/** Where a snapshot stands in the log. */
export interface SnapshotMeta {
  /** Last index the snapshot covers; 0 when there is no snapshot. */
  readonly index: number;
  /** Term of that entry; 0 when there is no snapshot. */
  readonly term: number;
  /** The membership as of `index`. */
  readonly confState: ConfState;
}

/** A state machine image and where it stands in the log. */
export interface Snapshot {
  readonly meta: SnapshotMeta;
  /** The state machine's own encoding of its state; empty for "no snapshot". */
  readonly data: Uint8Array;
}

/** Thrown when asked for entries a snapshot has already compacted. */
export class CompactedError extends Error {
  override readonly name = "CompactedError";
  readonly code = "COMPACTED";
  constructor(index: number, firstIndex: number) {
    super(`raft log: index ${index} is compacted (first index ${firstIndex})`);
  }
}

/** Thrown when asked for entries past the end of the log. */
export class UnavailableError extends Error {
  override readonly name = "UnavailableError";
  readonly code = "UNAVAILABLE";
  constructor(index: number, lastIndex: number) {
    super(`raft log: index ${index} is past the last index ${lastIndex}`);
  }
}

/**
 * Thrown by a write that may not have reached the disk. The node must stop
 * (fail-stop): it may not acknowledge anything it did not persist.
 */
export class StorageFailure extends Error {
  override readonly name = "StorageFailure";
  readonly code = "STORAGE_FAILURE";
}

/** The stable log as the core reads it. */
export interface LogReader {
  /** The durable state a node restarts from. */
  initialState(): { readonly hardState: HardState; readonly confState: ConfState };
  /** Index of the first entry still held: one past the last compacted entry. */
  firstIndex(): number;
  /** Index of the last entry; the snapshot's index when no entry follows it. */
  lastIndex(): number;
  /**
   * Term of entry `index`, for `firstIndex() - 1 <= index <= lastIndex()`
   * (`firstIndex() - 1` answers the term of the last compacted entry, or of
   * the snapshot; index 0 answers 0 while nothing is compacted).
   * @throws {CompactedError} below that range.
   * @throws {UnavailableError} above it.
   */
  term(index: number): number;
  /**
   * Entries `lo <= index < hi`: at least one when `lo < hi`, then more while
   * their data totals at most `maxBytes`.
   * @throws {CompactedError} if `lo < firstIndex()`.
   * @throws {UnavailableError} if `hi > lastIndex() + 1`.
   */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** The latest snapshot; index 0 and empty data when there is none. */
  snapshot(): Snapshot;
}

/** One Ready's worth of writes, applied atomically. */
export interface LogUpdate {
  /**
   * A snapshot received from the leader: it replaces every entry it covers
   * (and, if the log does not agree with it at its index, the whole log).
   */
  readonly snapshot?: Snapshot;
  /**
   * New entries, consecutive. Entries already held at `entries[0].index` or
   * later are discarded first (a conflicting suffix the leader overwrote).
   */
  readonly entries: readonly Entry[];
  readonly hardState?: HardState;
}

/**
 * Whether `update` only moves the commit index of `current` (no entries, no
 * snapshot, the same term and vote): the one save {@link LogStorage.save}
 * need not sync.
 */
export function movesCommitOnly(update: LogUpdate, current: HardState): boolean {
  const next = update.hardState;
  return update.snapshot === undefined && update.entries.length === 0 && next !== undefined &&
    next.term === current.term && next.vote === current.vote;
}

/** The stable log as the driver writes it. */
export interface LogStorage extends LogReader {
  /**
   * Persists `update` in one transaction, durable (fsynced) when it returns.
   * Writes that arrive together are given together: that is the group commit.
   *
   * One exception (etcd's MustSync rule): an update that only moves the
   * commit index (no entries, no snapshot, the same term and vote) need not
   * be synced. It is kept in order, so the next durable write makes it
   * durable too; a crash of the machine before that may lose it, and the
   * node restarts with an older commit index, which it learns again from the
   * leader. Nothing a node acknowledged to a peer depends on it.
   * @throws {StorageFailure} when it cannot be sure the write is durable.
   */
  save(update: LogUpdate): void;
  /**
   * Records a snapshot the state machine produced at `index` (at most the
   * applied index, so at most the saved commit index; at least the current
   * snapshot's) and compacts the log
   * behind it, keeping entries after `index - keepEntries` for followers that
   * lag a little. Durable when it returns.
   * @throws {StorageFailure}
   */
  createSnapshot(
    index: number,
    confState: ConfState,
    data: Uint8Array,
    keepEntries: number,
  ): Snapshot;
  /** Releases the storage; later calls throw. */
  close(): void;
}
