/**
 * A simulated node's disk: the in-memory storage, with writes that fail on
 * demand. A failed write throws {@link StorageFailure} as a real disk's
 * failed fsync makes the SQLite storage do; like a failed fsync, it may or
 * may not have reached the platter, so the fault says which.
 *
 * Owns: {@link SimDisk}. Imports the core's storage contract and
 * {@link MemoryStorage}.
 */

import {
  type ConfState,
  type Entry,
  type HardState,
  type LogStorage,
  type LogUpdate,
  MemoryStorage,
  type Snapshot,
  StorageFailure,
} from "../../src/raft/mod.ts";

/** A write the disk will fail. */
interface ArmedFailure {
  /** Writes to let through first. */
  remaining: number;
  /** Whether the failed write reached the disk all the same. */
  readonly landed: boolean;
}

/** A {@link LogStorage} whose writes fail when told to. */
export class SimDisk implements LogStorage {
  readonly #inner = new MemoryStorage();
  #armed: ArmedFailure | null = null;
  /** Writes (saves and snapshots) taken. */
  writes = 0;
  /** Writes failed. */
  failures = 0;

  /** Fails the write after the next `after` ones; `landed`: the failed write is kept anyway. */
  failAfter(after: number, landed: boolean): void {
    this.#armed = { remaining: after, landed };
  }

  /** Forgets an armed failure. */
  disarm(): void {
    this.#armed = null;
  }

  /** Whether a failure is armed. */
  get armed(): boolean {
    return this.#armed !== null;
  }

  /** Writes `update` without fault injection (a new cluster's bootstrap). */
  format(update: LogUpdate): void {
    this.#inner.save(update);
  }

  initialState(): { readonly hardState: HardState; readonly confState: ConfState } {
    return this.#inner.initialState();
  }

  firstIndex(): number {
    return this.#inner.firstIndex();
  }

  lastIndex(): number {
    return this.#inner.lastIndex();
  }

  term(index: number): number {
    return this.#inner.term(index);
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    return this.#inner.entries(lo, hi, maxBytes);
  }

  snapshot(): Snapshot {
    return this.#inner.snapshot();
  }

  save(update: LogUpdate): void {
    this.#write("save", () => this.#inner.save(update));
  }

  createSnapshot(
    index: number,
    confState: ConfState,
    data: Uint8Array,
    keepEntries: number,
  ): Snapshot {
    let snapshot: Snapshot | undefined;
    this.#write("snapshot", () => {
      snapshot = this.#inner.createSnapshot(index, confState, data, keepEntries);
    });
    return snapshot!;
  }

  close(): void {
    this.#inner.close();
  }

  #write(what: string, write: () => void): void {
    this.writes++;
    const armed = this.#armed;
    if (armed === null || armed.remaining-- > 0) {
      write();
      return;
    }
    this.#armed = null;
    this.failures++;
    if (armed.landed) write();
    throw new StorageFailure(
      `simulated disk: ${what} ${this.writes} failed to sync (${
        armed.landed ? "it reached the disk" : "nothing was written"
      })`,
    );
  }
}
