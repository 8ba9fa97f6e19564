/**
 * A node's view of its log: what the storage holds durably, plus the tail
 * (and at most one snapshot) not yet persisted; and the commit and apply
 * positions.
 *
 * Owns: {@link RaftLog}. Imports `storage.ts` (types), the codec's
 * {@link Entry} and `errors.ts`.
 *
 * Layout: the storage answers for every index below `offset`; the unstable
 * tail holds `offset ..= lastIndex()`. When a snapshot has been received but
 * not persisted, it stands in for everything up to its index and the storage
 * is not read at all. After a conflicting suffix was replaced, the storage
 * may still hold stale entries at or above `offset` until the next save
 * discards them; they are never read.
 *
 * What was handed out in a Ready is marked, so entries appended (or
 * truncated) between `ready()` and `advance()` are handled exactly: only the
 * entries the driver actually persisted, and that are still in the log with
 * the same term, become stable.
 *
 * @module
 */

import type { Entry } from "../codec/raft.ts";
import { RaftInvariantError } from "./errors.ts";
import type { LogReader, Snapshot } from "./storage.ts";

const NO_ENTRIES: readonly Entry[] = Object.freeze([]);

/** The log of one node. */
export class RaftLog {
  readonly storage: LogReader;
  /** Highest index known committed. */
  committed: number;
  /** Highest index the driver reported applied (through `advance()`). */
  applied: number;
  /** Highest index handed out to apply; at least `applied`. */
  applying: number;

  #unstable: Entry[] = [];
  /** Index of `#unstable[0]`; everything below is in the storage (or the pending snapshot). */
  #offset: number;
  /** First unstable index not yet handed out in a Ready. */
  #handedOut: number;
  /** A snapshot received from the leader and not yet persisted. */
  #snapshot: Snapshot | undefined;
  #snapshotHandedOut = false;

  constructor(storage: LogReader, committed: number, applied: number) {
    this.storage = storage;
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    if (first < 1 || last < first - 1) {
      throw new RaftInvariantError(`storage reports first index ${first} and last index ${last}`);
    }
    if (committed > last) {
      throw new RaftInvariantError(
        `the stored commit index ${committed} is past the last stored index ${last}: the log lost entries`,
      );
    }
    this.#offset = last + 1;
    this.#handedOut = last + 1;
    this.committed = committed;
    this.applied = applied;
    this.applying = applied;
  }

  /** Index of the first entry still held (the snapshot's index + 1). */
  firstIndex(): number {
    return this.#snapshot !== undefined ? this.#snapshot.meta.index + 1 : this.storage.firstIndex();
  }

  /** Index of the last entry (the snapshot's index if no entry follows it). */
  lastIndex(): number {
    return this.#offset + this.#unstable.length - 1;
  }

  /**
   * Highest index known durable and matching this log: what a leader may
   * count as its own replica. 0 while a received snapshot is not persisted
   * (only followers receive snapshots).
   */
  stableIndex(): number {
    return this.#snapshot !== undefined ? 0 : this.#offset - 1;
  }

  /** Term of entry `index`, or undefined if it is compacted or past the end. */
  term(index: number): number | undefined {
    const offset = this.#offset;
    if (index >= offset) {
      const i = index - offset;
      return i < this.#unstable.length ? this.#unstable[i]!.term : undefined;
    }
    const snapshot = this.#snapshot;
    if (snapshot !== undefined) {
      return index === snapshot.meta.index ? snapshot.meta.term : undefined;
    }
    if (index < this.storage.firstIndex() - 1) return undefined;
    return this.storage.term(index);
  }

  /** Term of the last entry. */
  lastTerm(): number {
    const term = this.term(this.lastIndex());
    if (term === undefined) {
      throw new RaftInvariantError(`no term for the last index ${this.lastIndex()}`);
    }
    return term;
  }

  /** True if the log holds entry `index` with term `term` (index 0 matches term 0). */
  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /**
   * True if a log ending at (`lastIndex`, `lastTerm`) is at least as
   * up to date as this one (Raft §5.4.1).
   */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Entries `lo <= index < hi`: at least one when `lo < hi`, then more while
   * their data totals at most `maxBytes`. `lo` must be at least
   * `firstIndex()` and `hi` at most `lastIndex() + 1`.
   */
  entries(lo: number, hi: number, maxBytes: number): readonly Entry[] {
    if (lo < this.firstIndex() || hi > this.lastIndex() + 1 || lo > hi) {
      throw new RaftInvariantError(
        `log: entries [${lo}, ${hi}) outside [${this.firstIndex()}, ${this.lastIndex() + 1})`,
      );
    }
    if (lo === hi) return NO_ENTRIES;
    const offset = this.#offset;
    if (lo >= offset) return this.#unstableSlice(lo, hi, maxBytes, 0, []);
    const cut = Math.min(hi, offset);
    const stored = this.storage.entries(lo, cut, maxBytes);
    if (stored.length === 0 || stored[0]!.index !== lo) {
      throw new RaftInvariantError(
        `storage returned ${stored.length} entries from ${stored[0]?.index} for [${lo}, ${cut})`,
      );
    }
    if (hi <= offset || stored.length < cut - lo) return stored;
    let size = 0;
    for (let i = 0; i < stored.length; i++) size += stored[i]!.data.length;
    return this.#unstableSlice(offset, hi, maxBytes, size, stored);
  }

  #unstableSlice(lo: number, hi: number, maxBytes: number, size: number, out: Entry[]): Entry[] {
    const unstable = this.#unstable;
    const offset = this.#offset;
    for (let i = lo; i < hi; i++) {
      const e = unstable[i - offset]!;
      size += e.data.length;
      if (out.length > 0 && size > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** The snapshot to send a lagging follower: the pending one, else the storage's. */
  snapshot(): Snapshot {
    return this.#snapshot ?? this.storage.snapshot();
  }

  /** True while a received snapshot is not yet persisted. */
  hasPendingSnapshot(): boolean {
    return this.#snapshot !== undefined;
  }

  /**
   * The first index in `entries` (which follow entry `prevIndex`) whose term
   * differs from this log's, or which this log does not have; 0 if the log
   * already holds them all.
   */
  findConflict(entries: readonly Entry[]): number {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (this.term(e.index) !== e.term) return e.index;
    }
    return 0;
  }

  /**
   * The highest index `j` in `[lo, index]` whose term is at most `term`,
   * and that term: where a log could still agree with one whose entry
   * `index` (or later) has term `term`. Terms never decrease along a log, so
   * this is a binary search. Returns `[lo - 1, 0]` if no such index is held.
   */
  findConflictByTerm(index: number, term: number, lo: number): [number, number] {
    lo = Math.max(lo, this.firstIndex() - 1);
    if (index < lo) return [Math.max(lo - 1, 0), 0];
    const atLo = this.term(lo);
    if (atLo === undefined || atLo > term) return [Math.max(lo - 1, 0), 0];
    let hi = index;
    while (lo < hi) {
      const mid = lo + Math.ceil((hi - lo) / 2);
      const t = this.term(mid);
      if (t !== undefined && t <= term) lo = mid;
      else hi = mid - 1;
    }
    return [lo, this.term(lo)!];
  }

  /**
   * Appends `entries` (consecutive, the first at most `lastIndex() + 1`),
   * replacing whatever the log holds from the first one's index. Never
   * replaces a committed entry.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0]!.index;
    if (first <= this.committed) {
      throw new RaftInvariantError(
        `log: appending from index ${first} would overwrite committed entries (commit ${this.committed})`,
      );
    }
    const last = this.lastIndex();
    if (first > last + 1) {
      throw new RaftInvariantError(`log: appending from index ${first} leaves a gap after ${last}`);
    }
    for (let i = 1; i < entries.length; i++) {
      const e = entries[i]!;
      if (e.index !== first + i || e.term < entries[i - 1]!.term) {
        throw new RaftInvariantError(
          `log: entry ${i} of an append from ${first} is (index ${e.index}, term ${e.term}), ` +
            `expected index ${first + i} and a term of at least ${entries[i - 1]!.term}`,
        );
      }
    }
    const prevTerm = this.term(first - 1);
    if (prevTerm === undefined || entries[0]!.term < prevTerm) {
      throw new RaftInvariantError(
        `log: entry ${first} of term ${entries[0]!.term} cannot follow term ${prevTerm} at ${
          first - 1
        }`,
      );
    }
    const offset = this.#offset;
    if (first === offset + this.#unstable.length) {
      // The common case: the tail grows.
    } else if (first <= offset) {
      // Replaces everything unstable, and stored entries from `first` on.
      this.#unstable = [];
      this.#offset = first;
    } else {
      this.#unstable.length = first - offset;
    }
    if (this.#handedOut > first) this.#handedOut = first;
    const unstable = this.#unstable;
    for (let i = 0; i < entries.length; i++) unstable.push(entries[i]!);
  }

  /** Replaces the whole log with `snapshot` (received from the leader, newer than the commit). */
  restore(snapshot: Snapshot): void {
    const index = snapshot.meta.index;
    if (index <= this.committed) {
      throw new RaftInvariantError(
        `log: restoring snapshot ${index} at or below the commit index ${this.committed}`,
      );
    }
    this.committed = index;
    this.#snapshot = snapshot;
    this.#snapshotHandedOut = false;
    this.#unstable = [];
    this.#offset = index + 1;
    this.#handedOut = index + 1;
  }

  /** Raises the commit index to `index` (never lowers it). */
  commitTo(index: number): void {
    if (index <= this.committed) return;
    if (index > this.lastIndex()) {
      throw new RaftInvariantError(
        `log: commit ${index} is past the last index ${this.lastIndex()}; was the log truncated or lost?`,
      );
    }
    this.committed = index;
  }

  /** True if some entries were never handed out in a Ready to persist. */
  hasUnpersisted(): boolean {
    return this.#handedOut <= this.lastIndex();
  }

  /** True if a received snapshot was not yet handed out. */
  hasSnapshotToHandOut(): boolean {
    return this.#snapshot !== undefined && !this.#snapshotHandedOut;
  }

  /** Hands out the entries not yet handed out (a copy: the tail keeps changing). */
  takeUnpersisted(): readonly Entry[] {
    const from = this.#handedOut - this.#offset;
    if (from >= this.#unstable.length) return NO_ENTRIES;
    this.#handedOut = this.lastIndex() + 1;
    return this.#unstable.slice(from);
  }

  /** Hands out the pending snapshot, once. */
  takeSnapshot(): Snapshot | undefined {
    if (this.#snapshot === undefined || this.#snapshotHandedOut) return undefined;
    this.#snapshotHandedOut = true;
    return this.#snapshot;
  }

  /** The driver persisted `snapshot`: the storage now answers for its index. */
  snapshotPersisted(snapshot: Snapshot): void {
    if (this.#snapshot === snapshot) this.#snapshot = undefined;
    const index = snapshot.meta.index;
    if (this.applied < index) this.applied = index;
    if (this.applying < index) this.applying = index;
  }

  /**
   * The driver persisted the entries handed out up to (`index`, `term`).
   * If the log still holds that entry, everything up to it is stable; if it
   * was replaced meanwhile, the replacement will be persisted by a later Ready.
   */
  stableTo(index: number, term: number): void {
    // Entries after a snapshot become stable only once the snapshot is.
    if (this.#snapshot !== undefined) return;
    const offset = this.#offset;
    if (index < offset || index >= offset + this.#unstable.length) return;
    if (this.#unstable[index - offset]!.term !== term) return;
    this.#unstable.splice(0, index + 1 - offset);
    this.#offset = index + 1;
    if (this.#handedOut < this.#offset) this.#handedOut = this.#offset;
  }

  /** True if committed entries wait to be handed out for applying. */
  hasCommittedToApply(): boolean {
    return this.#snapshot === undefined && this.applying < this.committed;
  }

  /**
   * Hands out committed entries after `applying`, their data totalling at
   * most `maxBytes` (at least one). None while a snapshot is pending: the
   * state machine must restore it first.
   */
  takeCommitted(maxBytes: number): readonly Entry[] {
    if (!this.hasCommittedToApply()) return NO_ENTRIES;
    const entries = this.entries(this.applying + 1, this.committed + 1, maxBytes);
    this.applying = entries[entries.length - 1]!.index;
    return entries;
  }

  /** The driver applied everything up to `index`. */
  appliedTo(index: number): void {
    if (index > this.committed || index < this.applied) {
      throw new RaftInvariantError(
        `log: applied ${index} outside [${this.applied}, commit ${this.committed}]`,
      );
    }
    this.applied = index;
  }
}
