/**
 * A simulated node's disk: the in-memory storage, with writes and reads
 * that fail on demand. A failed write throws {@link StorageFailure} as a
 * real disk's failed fsync makes the SQLite storage do; like a failed fsync,
 * it may or may not have reached the platter, so the fault says which. A
 * failed read throws it too (the SQLite storage fails stop on a read error),
 * in the middle of whatever the core was doing.
 *
 * Owns: {@link SimDisk}. Imports the core's storage contract and
 * {@link MemoryStorage}.
 */

import {
  type ConfState,
  type Entry,
  type HardState,
  type LogReader,
  type LogStorage,
  type LogUpdate,
  MemoryStorage,
  movesCommitOnly,
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

/** Shared by a cluster's disks: faults are off while the harness looks at the nodes. */
export interface FaultSwitch {
  suspended: boolean;
}

/** A {@link LogStorage} whose writes and reads fail when told to. */
export class SimDisk implements LogStorage {
  readonly #inner = new MemoryStorage();
  readonly #switch: FaultSwitch;
  #armed: ArmedFailure | null = null;
  /** Reads to let through before one fails; -1: none armed. */
  #readsLeft = -1;
  /** Writes (saves and snapshots) taken. */
  writes = 0;
  /** Writes failed. */
  failures = 0;
  /** The commit index as of the last synced write. */
  #syncedCommit = 0;

  constructor(faults: FaultSwitch = { suspended: false }) {
    this.#switch = faults;
  }

  /** Fails the write after the next `after` ones; `landed`: the failed write is kept anyway. */
  failAfter(after: number, landed: boolean): void {
    this.#armed = { remaining: after, landed };
  }

  /** Fails the read after the next `after` ones. */
  failReadAfter(after: number): void {
    this.#readsLeft = after;
  }

  /** Forgets armed failures. */
  disarm(): void {
    this.#armed = null;
    this.#readsLeft = -1;
  }

  /** What the disk holds, read without faults: for checkers, not for nodes. */
  get stored(): LogReader {
    return this.#inner;
  }

  /** Whether a failure is armed. */
  get armed(): boolean {
    return this.#armed !== null;
  }

  /** Writes `update` without fault injection (a new cluster's bootstrap). */
  format(update: LogUpdate): void {
    this.#inner.save(update);
    this.#syncedCommit = this.#inner.initialState().hardState.commit;
  }

  initialState(): { readonly hardState: HardState; readonly confState: ConfState } {
    this.#read("initial state");
    return this.#inner.initialState();
  }

  firstIndex(): number {
    this.#read("first index");
    return this.#inner.firstIndex();
  }

  lastIndex(): number {
    this.#read("last index");
    return this.#inner.lastIndex();
  }

  term(index: number): number {
    this.#read(`term of ${index}`);
    return this.#inner.term(index);
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    this.#read(`entries ${lo}..${hi - 1}`);
    return this.#inner.entries(lo, hi, maxBytes);
  }

  snapshot(): Snapshot {
    this.#read("snapshot");
    return this.#inner.snapshot();
  }

  save(update: LogUpdate): void {
    const commitOnly = movesCommitOnly(update, this.#inner.initialState().hardState);
    this.#write("save", () => this.#inner.save(update), commitOnly);
  }

  /**
   * The machine lost power: a commit index saved without a sync since the
   * last synced write is gone (the storage contract allows it), so the node
   * restarts with the older one. Says whether one was lost.
   */
  powerLoss(): boolean {
    const hs = this.#inner.initialState().hardState;
    if (hs.commit <= this.#syncedCommit) return false;
    this.#inner.save({ entries: [], hardState: { ...hs, commit: this.#syncedCommit } });
    return true;
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

  #read(what: string): void {
    if (this.#switch.suspended || this.#readsLeft < 0 || this.#readsLeft-- > 0) return;
    this.failures++;
    throw new StorageFailure(`simulated disk: reading the ${what} failed`);
  }

  /** Takes a write; `unsynced` ones (a commit index alone) become durable with the next synced one. */
  #write(what: string, write: () => void, unsynced = false): void {
    this.writes++;
    const armed = this.#armed;
    if (armed === null || this.#switch.suspended || armed.remaining-- > 0) {
      write();
      if (!unsynced) this.#syncedCommit = this.#inner.initialState().hardState.commit;
      return;
    }
    this.#armed = null;
    this.failures++;
    if (armed.landed) {
      write();
      if (!unsynced) this.#syncedCommit = this.#inner.initialState().hardState.commit;
    }
    throw new StorageFailure(
      `simulated disk: ${what} ${this.writes} failed to sync (${
        armed.landed ? "it reached the disk" : "nothing was written"
      })`,
    );
  }
}
