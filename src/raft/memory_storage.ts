/**
 * An in-memory {@link LogStorage}: the core's tests and the simulation use
 * it. "Durable" here means "kept by this object", so a simulated crash is a
 * new core over the same storage: it loses everything the core had not saved.
 *
 * Owns: {@link MemoryStorage}, {@link InvalidLogUpdateError}. Imports
 * `storage.ts` and the codec's {@link Entry} type.
 *
 * Layout: entries after the compaction point `compactIndex` (whose term is
 * kept, so the entry after it can be checked), and the latest snapshot, at
 * or after the compaction point: `createSnapshot(..., keepEntries)` keeps
 * up to `keepEntries` entries the snapshot covers for followers that lag a
 * little, so `firstIndex() - 1` may be below the snapshot's index.
 *
 * As the contract requires, it copies the data of the entries and snapshots
 * it saves (the codec hands out views of receive buffers) and hands out
 * entries the caller owns.
 *
 * @module
 */

import type { Entry } from "../codec/raft.ts";
import {
  CompactedError,
  type ConfState,
  type HardState,
  type LogStorage,
  type LogUpdate,
  type Snapshot,
  StorageFailure,
  UnavailableError,
} from "./storage.ts";

/** A write that would leave a wrong log (a gap, a decreasing term, an old snapshot); nothing was written. */
export class InvalidLogUpdateError extends Error {
  override readonly name = "InvalidLogUpdateError";
  readonly code = "INVALID_LOG_UPDATE";
}

/** How a fresh {@link MemoryStorage} starts. */
export interface MemoryStorageOptions {
  /**
   * The membership a new cluster starts with, as if a snapshot at index 0
   * recorded it. Default: no members (a node that will join, or one
   * bootstrapped by configuration-change entries).
   */
  readonly confState?: ConfState;
}

const NO_MEMBERS: ConfState = Object.freeze({
  voters: Object.freeze([]),
  learners: Object.freeze([]),
});
const EMPTY = new Uint8Array(0);

/** The Raft log, hard state and snapshot, in memory. */
export class MemoryStorage implements LogStorage {
  #hardState: HardState = { term: 0, vote: 0, commit: 0 };
  #snapshot: Snapshot;
  /** Index of the last compacted entry; `#entries[0]` is the one after it. */
  #compactIndex = 0;
  #compactTerm = 0;
  #entries: Entry[] = [];
  #closed = false;

  /** An empty storage: no entries, term 0, and the membership of `options.confState`. */
  constructor(options: MemoryStorageOptions = {}) {
    this.#snapshot = {
      meta: { index: 0, term: 0, confState: options.confState ?? NO_MEMBERS },
      data: EMPTY,
    };
  }

  initialState(): { readonly hardState: HardState; readonly confState: ConfState } {
    this.#checkOpen();
    return { hardState: this.#hardState, confState: this.#snapshot.meta.confState };
  }

  firstIndex(): number {
    this.#checkOpen();
    return this.#compactIndex + 1;
  }

  lastIndex(): number {
    this.#checkOpen();
    return this.#compactIndex + this.#entries.length;
  }

  term(index: number): number {
    this.#checkOpen();
    if (index < this.#compactIndex) throw new CompactedError(index, this.#compactIndex + 1);
    if (index === this.#compactIndex) return this.#compactTerm;
    const last = this.lastIndex();
    if (index > last) throw new UnavailableError(index, last);
    return this.#entries[index - this.#compactIndex - 1]!.term;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    this.#checkOpen();
    const first = this.#compactIndex + 1;
    if (lo < first) throw new CompactedError(lo, first);
    const last = this.lastIndex();
    if (hi > last + 1) throw new UnavailableError(hi - 1, last);
    let end = lo, size = 0;
    for (; end < hi; end++) {
      size += this.#entries[end - first]!.data.length;
      if (end > lo && size > maxBytes) break;
    }
    return copied(this.#entries, lo - first, end - first);
  }

  snapshot(): Snapshot {
    this.#checkOpen();
    return this.#snapshot;
  }

  save(update: LogUpdate): void {
    this.#checkOpen();
    const { snapshot, entries, hardState } = update;
    // Every check comes before the first write: a refused update writes nothing.
    if (hardState !== undefined) checkHardState(hardState);
    let compactIndex = this.#compactIndex;
    let compactTerm = this.#compactTerm;
    let kept = this.#entries;
    if (snapshot !== undefined) {
      const { index, term } = snapshot.meta;
      if (
        !Number.isSafeInteger(index) || !Number.isSafeInteger(term) ||
        index < this.#snapshot.meta.index
      ) {
        throw new InvalidLogUpdateError(
          `memory storage: snapshot at index ${index} (term ${term}) is older than the one held ` +
            `(index ${this.#snapshot.meta.index})`,
        );
      }
      const agrees = index >= compactIndex && index <= this.lastIndex() &&
        this.term(index) === term;
      kept = agrees ? kept.slice(index - compactIndex) : [];
      compactIndex = index;
      compactTerm = term;
    }
    if (entries.length > 0) appendTo(kept, compactIndex, compactTerm, entries);

    if (snapshot !== undefined) {
      this.#snapshot = ownSnapshot(
        snapshot.meta.index,
        snapshot.meta.term,
        snapshot.meta.confState,
        snapshot.data,
      );
    }
    this.#compactIndex = compactIndex;
    this.#compactTerm = compactTerm;
    this.#entries = kept;
    if (hardState !== undefined) this.#hardState = hardState;
  }

  createSnapshot(
    index: number,
    confState: ConfState,
    data: Uint8Array,
    keepEntries: number,
  ): Snapshot {
    this.#checkOpen();
    const current = this.#snapshot.meta.index;
    const limit = Math.min(this.lastIndex(), this.#hardState.commit);
    if (!Number.isSafeInteger(index) || index < current || index > limit) {
      throw new InvalidLogUpdateError(
        `memory storage: snapshot index ${index}: expected ${current}..${limit} ` +
          `(the current snapshot's index to the stored commit index)`,
      );
    }
    if (!Number.isSafeInteger(keepEntries) || keepEntries < 0) {
      throw new InvalidLogUpdateError(
        `memory storage: keepEntries ${keepEntries}: expected an integer >= 0`,
      );
    }
    const snapshot = ownSnapshot(index, this.term(index), confState, data);
    const compactTo = Math.max(this.#compactIndex, index - keepEntries);
    const compactTerm = this.term(compactTo);
    this.#entries = this.#entries.slice(compactTo - this.#compactIndex);
    this.#compactIndex = compactTo;
    this.#compactTerm = compactTerm;
    this.#snapshot = snapshot;
    return snapshot;
  }

  close(): void {
    this.#closed = true;
  }

  #checkOpen(): void {
    if (this.#closed) throw new StorageFailure("memory storage: used after close()");
  }
}

/**
 * Writes `entries` over `log` (the entries after `compactIndex`), in place:
 * entries already covered by the compaction are skipped, held entries from
 * the first new index on are discarded. Checks everything before it writes.
 */
function appendTo(
  log: Entry[],
  compactIndex: number,
  compactTerm: number,
  entries: readonly Entry[],
): void {
  const first = entries[0]!.index;
  const last = compactIndex + log.length;
  if (first > last + 1) {
    throw new InvalidLogUpdateError(
      `memory storage: entries from index ${first} leave a gap after the last index ${last}`,
    );
  }
  for (let i = 1; i < entries.length; i++) {
    const e = entries[i]!, prev = entries[i - 1]!;
    if (e.index !== first + i || e.term < prev.term) {
      throw new InvalidLogUpdateError(
        `memory storage: entry ${i} is (index ${e.index}, term ${e.term}), expected index ${
          first + i
        } ` +
          `and a term of at least ${prev.term}`,
      );
    }
  }
  const skip = Math.max(0, compactIndex + 1 - first);
  if (skip >= entries.length) return;
  const start = first + skip;
  const prevTerm = start - 1 === compactIndex
    ? compactTerm
    : log[start - 1 - compactIndex - 1]!.term;
  if (entries[skip]!.term < prevTerm) {
    throw new InvalidLogUpdateError(
      `memory storage: entry ${start} has term ${
        entries[skip]!.term
      }, below the term ${prevTerm} before it`,
    );
  }
  log.length = start - compactIndex - 1;
  const copies = copied(entries, skip, entries.length);
  for (let i = 0; i < copies.length; i++) log.push(copies[i]!);
}

/**
 * Copies of `entries[from..to)` whose data share one new buffer: one
 * allocation per batch, since a typed array per entry costs far more than
 * the bytes it holds.
 */
function copied(entries: readonly Entry[], from: number, to: number): Entry[] {
  let total = 0;
  for (let i = from; i < to; i++) total += entries[i]!.data.length;
  const buffer = new Uint8Array(total);
  const out: Entry[] = new Array(to - from);
  let at = 0;
  for (let i = from; i < to; i++) {
    const e = entries[i]!;
    buffer.set(e.data, at);
    out[i - from] = {
      index: e.index,
      term: e.term,
      kind: e.kind,
      data: buffer.subarray(at, at + e.data.length),
    };
    at += e.data.length;
  }
  return out;
}

/** A snapshot that owns its data and membership. */
function ownSnapshot(
  index: number,
  term: number,
  confState: ConfState,
  data: Uint8Array,
): Snapshot {
  const members = { voters: [...confState.voters], learners: [...confState.learners] };
  return { meta: { index, term, confState: members }, data: data.slice() };
}

function checkHardState(hardState: HardState): void {
  const { term, vote, commit } = hardState;
  if (![term, vote, commit].every((v) => Number.isSafeInteger(v) && v >= 0)) {
    throw new InvalidLogUpdateError(
      `memory storage: hard state ${JSON.stringify(hardState)}: expected integers 0..2^53-1`,
    );
  }
}
