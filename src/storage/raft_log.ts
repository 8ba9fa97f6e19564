/**
 * The Raft log on disk: {@link SqliteLogStorage}, the `LogStorage` of real
 * nodes, one SQLite file per node under its data directory.
 *
 * Owns: how a `LogUpdate` and a local snapshot become one durable
 * transaction, the checks that keep a bad log from being written, the
 * in-memory view that makes reads cheap, and fail-stop after a failed write.
 * Imports `node:sqlite` (through `raft_log_file.ts`), the contract
 * (`src/raft/storage.ts`) and `errors.ts`; nothing of the transports.
 *
 * Durability: every write is one transaction committed with
 * `synchronous = FULL` in WAL mode, so the WAL is fsynced before `save()` or
 * `createSnapshot()` returns. The cost is one fsync per call whatever its
 * size, which is why a driver should hand over everything one Ready holds in
 * one `save()` (group commit; see `bench/storage_bench.ts`). A save that only
 * moves the commit index is committed with `synchronous = NORMAL`: written
 * to the WAL (a killed process loses nothing), not fsynced; the next fsync of
 * the WAL covers it (the contract in `src/raft/storage.ts` allows this).
 *
 * @module
 */

import type { DatabaseSync, StatementSync } from "node:sqlite";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type LogStorage,
  type LogUpdate,
  movesCommitOnly,
  type Snapshot,
  type SnapshotMeta,
  StorageFailure,
  UnavailableError,
} from "../raft/storage.ts";
import { EntryKind } from "../codec/raft.ts";
import { LogRequestError } from "./errors.ts";
import { openRaftLogFile, sqliteReason } from "./raft_log_file.ts";

export { LogFileError, LogRequestError } from "./errors.ts";

/**
 * A {@link LogStorage} in one SQLite file.
 *
 * Reads come from prepared statements and an in-memory copy of the first and
 * last index, their terms, the hard state and the snapshot's meta, so
 * `firstIndex`, `lastIndex` and the terms at either end never touch the file.
 *
 * Writes are checked before anything is written: a gap, an index that does
 * not follow, a term that goes down, a changed committed entry, an older
 * snapshot, a hard state that goes back are refused with a
 * {@link LogRequestError} and leave the log as it was. A write or read that
 * fails in SQLite (disk full, I/O error) throws `StorageFailure`, and from
 * then on every call but `close()` throws `StorageFailure` naming that first
 * failure: after a failed commit the file may hold more than the cache says,
 * so neither can be trusted, and the node must stop.
 *
 * @example
 * ```ts
 * import { SqliteLogStorage } from "./raft_log.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * const log = SqliteLogStorage.open(`${dir}/raft.db`);
 * log.save({
 *   entries: [{ index: 1, term: 1, kind: 0, data: new Uint8Array([42]) }],
 *   hardState: { term: 1, vote: 1, commit: 1 },
 * });
 * console.log(log.lastIndex(), log.term(1)); // 1 1
 * log.close();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export class SqliteLogStorage implements LogStorage {
  /** The file this log lives in. */
  readonly path: string;
  readonly #db: DatabaseSync;
  readonly #sql: Statements;
  /** Last index dropped from the log (entries start after it), and its term. */
  #startIndex: number;
  #startTerm: number;
  #lastIndex: number;
  #lastTerm: number;
  #hardState: HardState;
  #snapshot: SnapshotMeta;
  /** Why the storage refuses calls: it was closed, or a write failed. */
  #refusal: string | undefined;
  #closed = false;

  private constructor(path: string) {
    const loaded = openRaftLogFile(path);
    this.path = path;
    this.#db = loaded.db;
    this.#sql = prepare(loaded.db);
    this.#startIndex = loaded.startIndex;
    this.#startTerm = loaded.startTerm;
    this.#lastIndex = loaded.lastIndex;
    this.#lastTerm = loaded.lastTerm;
    this.#hardState = copyHardState(loaded.hardState);
    this.#snapshot = loaded.snapshot;
  }

  /**
   * Opens the log at `path`, creating an empty one if the file does not
   * exist (its directory must).
   * @throws {LogFileError} if the file is not a Raft log, has a schema version
   *   this build does not know, breaks the log's rules, or is open elsewhere.
   */
  static open(path: string): SqliteLogStorage {
    return new SqliteLogStorage(path);
  }

  initialState(): { readonly hardState: HardState; readonly confState: ConfState } {
    this.#usable("initialState");
    return { hardState: this.#hardState, confState: this.#snapshot.confState };
  }

  firstIndex(): number {
    this.#usable("firstIndex");
    return this.#startIndex + 1;
  }

  lastIndex(): number {
    this.#usable("lastIndex");
    return this.#lastIndex;
  }

  term(index: number): number {
    this.#usable("term");
    checkIndex("term: index", index, 0);
    if (index < this.#startIndex) throw new CompactedError(index, this.#startIndex + 1);
    if (index > this.#lastIndex) throw new UnavailableError(index, this.#lastIndex);
    return this.#heldTerm(index);
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    this.#usable("entries");
    checkIndex("entries: lo", lo, 0);
    checkIndex("entries: hi", hi, 0);
    if (lo > hi) {
      throw new LogRequestError("INVALID_ARGUMENT", `entries: lo ${lo} is above hi ${hi}`);
    }
    if (!(maxBytes >= 0)) {
      throw new LogRequestError(
        "INVALID_ARGUMENT",
        `entries: maxBytes ${maxBytes}: expected a number >= 0`,
      );
    }
    if (lo <= this.#startIndex) throw new CompactedError(lo, this.#startIndex + 1);
    if (hi > this.#lastIndex + 1) throw new UnavailableError(hi - 1, this.#lastIndex);
    const out: Entry[] = [];
    if (lo === hi) return out;
    let bytes = 0;
    // Read in pages sized from the budget left and the sizes seen so far, so
    // a small budget reads few rows past it and a large one few pages.
    let next = lo;
    let page = 16;
    while (next < hi) {
      const end = Math.min(hi, next + page);
      const rows = this.#read("entries", () => this.#sql.range.all(next, end)) as unknown as Row[];
      if (rows.length === 0) break;
      for (const row of rows) {
        const data = row[3];
        if (out.length > 0 && bytes + data.byteLength > maxBytes) return out;
        bytes += data.byteLength;
        out.push({ index: row[0], term: row[1], kind: row[2] as EntryKind, data });
      }
      next += rows.length;
      const meanBytes = Math.max(1, bytes / out.length);
      page = Math.max(1, Math.min(MAX_PAGE_ROWS, Math.ceil((maxBytes - bytes) / meanBytes) + 1));
    }
    return out;
  }

  snapshot(): Snapshot {
    this.#usable("snapshot");
    const row = this.#read("snapshot", () => this.#sql.snapshotData.get()) as unknown as [
      Uint8Array,
    ];
    return { meta: this.#snapshot, data: row[0] };
  }

  save(update: LogUpdate): void {
    this.#usable("save");
    const plan = this.#plan(update);
    if (plan === undefined) return;
    const sql = this.#sql;
    const commitOnly = movesCommitOnly(update, this.#hardState);
    this.#write("save", () => {
      const snap = plan.snapshot;
      if (snap !== undefined) {
        writeSnapshot(sql, snap.meta, snap.data);
        if (snap.keepsLog) sql.deleteThrough.run(snap.meta.index);
        else sql.deleteAll.run();
        sql.setStart.run(snap.meta.index, snap.meta.term);
      }
      if (plan.truncateFrom !== undefined) sql.deleteFrom.run(plan.truncateFrom);
      for (const e of update.entries) sql.insert.run(e.index, e.term, e.kind, e.data);
      const hs = update.hardState;
      if (hs !== undefined) sql.setHardState.run(hs.term, hs.vote, hs.commit);
    }, commitOnly);
    this.#startIndex = plan.startIndex;
    this.#startTerm = plan.startTerm;
    this.#lastIndex = plan.lastIndex;
    this.#lastTerm = plan.lastTerm;
    if (plan.snapshot !== undefined) this.#snapshot = plan.snapshot.meta;
    if (update.hardState !== undefined) this.#hardState = copyHardState(update.hardState);
  }

  createSnapshot(
    index: number,
    confState: ConfState,
    data: Uint8Array,
    keepEntries: number,
  ): Snapshot {
    this.#usable("createSnapshot");
    checkIndex("createSnapshot: index", index, 0);
    checkIndex("createSnapshot: keepEntries", keepEntries, 0);
    const conf = checkConfState("createSnapshot: confState", confState);
    checkBytes("createSnapshot: data", data);
    if (index < this.#snapshot.index) {
      throw new LogRequestError(
        "SNAPSHOT_OUT_OF_DATE",
        `createSnapshot: index ${index} is older than the snapshot held at ${this.#snapshot.index}`,
      );
    }
    const committed = Math.max(this.#hardState.commit, this.#snapshot.index);
    if (index > committed) {
      throw new LogRequestError(
        "NOT_COMMITTED",
        `createSnapshot: index ${index} is past the commit index ${committed}: ` +
          `a snapshot may cover applied entries only`,
      );
    }
    const meta: SnapshotMeta = { index, term: this.#heldTerm(index), confState: conf };
    const startIndex = Math.max(this.#startIndex, index - keepEntries);
    const startTerm = this.#heldTerm(startIndex);
    const sql = this.#sql;
    this.#write("createSnapshot", () => {
      writeSnapshot(sql, meta, data);
      if (startIndex > this.#startIndex) {
        sql.deleteThrough.run(startIndex);
        sql.setStart.run(startIndex, startTerm);
      }
    });
    this.#snapshot = meta;
    this.#startIndex = startIndex;
    this.#startTerm = startTerm;
    return { meta, data };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#refusal = "it was closed";
    try {
      this.#db.close();
    } catch {
      // Closing checkpoints the WAL; if that fails the WAL stays and the next
      // open replays it, so there is nothing more to do here.
    }
  }

  /** Throws `StorageFailure` if the storage was closed or a write failed. */
  #usable(op: string): void {
    if (this.#refusal !== undefined) {
      throw new StorageFailure(`raft log ${this.path}: ${op} refused: ${this.#refusal}`);
    }
  }

  /** Runs a query; an error from SQLite (an I/O error, say) makes the storage fail-stop. */
  #read<T>(op: string, query: () => T): T {
    try {
      return query();
    } catch (e) {
      const reason = sqliteReason(e);
      this.#refusal = `an earlier ${op} failed to read the file: ${reason}`;
      throw new StorageFailure(`raft log ${this.path}: ${op} failed to read: ${reason}`, {
        cause: e,
      });
    }
  }

  /**
   * Runs `body` in one transaction, fsynced unless `unsynced`; any error
   * makes the storage fail-stop.
   */
  #write(op: string, body: () => void, unsynced = false): void {
    const sql = this.#sql;
    try {
      if (unsynced) sql.syncNormal.run();
      sql.begin.run();
      body();
      sql.commit.run();
      if (unsynced) sql.syncFull.run();
    } catch (e) {
      const reason = sqliteReason(e);
      this.#refusal = `an earlier ${op} failed: ${reason}`;
      try {
        if (this.#db.isTransaction) sql.rollback.run();
      } catch {
        // The storage is already refusing everything; a failed rollback
        // leaves the file to SQLite's recovery at the next open.
      }
      throw new StorageFailure(
        `raft log ${this.path}: ${op} failed, the write may not be durable: ${reason}`,
        { cause: e },
      );
    }
  }

  /** Term of a held index (start index to last index), from the cache or the file. */
  #heldTerm(index: number): number {
    if (index === this.#lastIndex) return this.#lastTerm;
    if (index === this.#startIndex) return this.#startTerm;
    const row = this.#read("term", () => this.#sql.term.get(index)) as unknown as
      | [number]
      | undefined;
    if (row === undefined) {
      // The cache says the entry is held; a missing row means the file
      // changed under us, and nothing read from it can be trusted.
      this.#refusal = `entry ${index} went missing from the file`;
      throw new StorageFailure(`raft log ${this.path}: entry ${index} is missing from the file`);
    }
    return row[0];
  }

  /** Checks `update` against the log and works out what it changes; undefined for nothing. */
  #plan(update: LogUpdate): Plan | undefined {
    if (typeof update !== "object" || update === null || !Array.isArray(update.entries)) {
      throw new LogRequestError("INVALID_ARGUMENT", "save: expected a LogUpdate with entries[]");
    }
    const { entries, hardState } = update;
    if (update.snapshot === undefined && entries.length === 0 && hardState === undefined) {
      return undefined;
    }
    let startIndex = this.#startIndex;
    let startTerm = this.#startTerm;
    let lastIndex = this.#lastIndex;
    let lastTerm = this.#lastTerm;
    let committed = Math.max(this.#hardState.commit, this.#snapshot.index);
    // Terms of held entries as the log stands after the snapshot: entries it
    // keeps are still in the file unchanged, so the file answers for them.
    const termAt = (i: number) =>
      i === startIndex ? startTerm : i === lastIndex ? lastTerm : this.#heldTerm(i);

    let snapshot: Plan["snapshot"];
    if (update.snapshot !== undefined) {
      const meta = checkSnapshot(update.snapshot);
      if (meta.index < this.#snapshot.index) {
        throw new LogRequestError(
          "SNAPSHOT_OUT_OF_DATE",
          `save: snapshot at index ${meta.index} is older than the one held at ${this.#snapshot.index}`,
        );
      }
      const keepsLog = meta.index <= lastIndex && termAt(meta.index) === meta.term;
      if (!keepsLog && meta.index <= Math.min(lastIndex, committed)) {
        throw new LogRequestError(
          "COMMITTED_OVERWRITE",
          `save: snapshot at index ${meta.index} has term ${meta.term}, but committed entry ` +
            `${meta.index} has term ${termAt(meta.index)}`,
        );
      }
      snapshot = { meta, data: update.snapshot.data, keepsLog };
      if (!keepsLog) {
        lastIndex = meta.index;
        lastTerm = meta.term;
      }
      startIndex = meta.index;
      startTerm = meta.term;
      committed = Math.max(committed, meta.index);
    }

    let truncateFrom: number | undefined;
    if (entries.length > 0) {
      const first = checkEntry(entries, 0);
      if (first.index <= startIndex) {
        throw new LogRequestError(
          "COMPACTED_WRITE",
          `save: entry ${first.index} is at or below index ${startIndex}, which the log has ` +
            `compacted; the first index is ${startIndex + 1}`,
        );
      }
      if (first.index > lastIndex + 1) {
        throw new LogRequestError(
          "LOG_GAP",
          `save: entry ${first.index} would leave a gap after the last index ${lastIndex}`,
        );
      }
      let prevIndex = first.index - 1;
      let prevTerm = termAt(prevIndex);
      for (let i = 0; i < entries.length; i++) {
        const e = i === 0 ? first : checkEntry(entries, i);
        if (e.index !== prevIndex + 1) {
          throw new LogRequestError(
            "NOT_CONSECUTIVE",
            `save: entries[${i}] has index ${e.index}, expected ${prevIndex + 1}`,
          );
        }
        if (e.term < prevTerm) {
          throw new LogRequestError(
            "TERM_REGRESSION",
            `save: entry ${e.index} has term ${e.term}, lower than the term ${prevTerm} ` +
              `of entry ${prevIndex}`,
          );
        }
        if (e.index <= committed && e.index <= lastIndex && termAt(e.index) !== e.term) {
          throw new LogRequestError(
            "COMMITTED_OVERWRITE",
            `save: entry ${e.index} has term ${e.term}, but committed entry ${e.index} ` +
              `has term ${termAt(e.index)}`,
          );
        }
        prevIndex = e.index;
        prevTerm = e.term;
      }
      if (first.index <= lastIndex) truncateFrom = first.index;
      lastIndex = prevIndex;
      lastTerm = prevTerm;
    }

    const hs = this.#hardState;
    if (hardState !== undefined) {
      const next = checkHardState(hardState);
      const back = next.term < hs.term
        ? `term ${next.term} is lower than ${hs.term}`
        : next.term === hs.term && hs.vote !== 0 && next.vote !== hs.vote
        ? `vote changes from ${hs.vote} to ${next.vote} within term ${hs.term}`
        : next.commit < hs.commit
        ? `commit ${next.commit} is lower than ${hs.commit}`
        : undefined;
      if (back !== undefined) {
        throw new LogRequestError("HARD_STATE_REGRESSION", `save: hard state: ${back}`);
      }
    }
    const commit = (hardState ?? hs).commit;
    if (commit > lastIndex) {
      throw new LogRequestError(
        "COMMIT_BEYOND_LOG",
        `save: commit index ${commit} would be past the last index ${lastIndex}`,
      );
    }
    return { snapshot, truncateFrom, startIndex, startTerm, lastIndex, lastTerm };
  }
}

/** What a checked `save()` changes. */
interface Plan {
  readonly snapshot:
    | { readonly meta: SnapshotMeta; readonly data: Uint8Array; readonly keepsLog: boolean }
    | undefined;
  /** Index from which held entries are dropped before the new ones go in. */
  readonly truncateFrom: number | undefined;
  readonly startIndex: number;
  readonly startTerm: number;
  readonly lastIndex: number;
  readonly lastTerm: number;
}

type Row = [number, number, number, Uint8Array];

/** Most rows `entries()` reads in one query. */
const MAX_PAGE_ROWS = 4096;

interface Statements {
  readonly begin: StatementSync;
  readonly syncNormal: StatementSync;
  readonly syncFull: StatementSync;
  readonly commit: StatementSync;
  readonly rollback: StatementSync;
  readonly term: StatementSync;
  readonly range: StatementSync;
  readonly snapshotData: StatementSync;
  readonly insert: StatementSync;
  readonly deleteFrom: StatementSync;
  readonly deleteThrough: StatementSync;
  readonly deleteAll: StatementSync;
  readonly setStart: StatementSync;
  readonly setHardState: StatementSync;
  readonly setSnapshot: StatementSync;
}

function prepare(db: DatabaseSync): Statements {
  const arrays = (s: StatementSync) => {
    s.setReturnArrays(true);
    return s;
  };
  return {
    begin: db.prepare("BEGIN IMMEDIATE"),
    syncNormal: db.prepare("PRAGMA synchronous = NORMAL"),
    syncFull: db.prepare("PRAGMA synchronous = FULL"),
    commit: db.prepare("COMMIT"),
    rollback: db.prepare("ROLLBACK"),
    term: arrays(db.prepare("SELECT term FROM entries WHERE idx = ?")),
    range: arrays(
      db.prepare(
        "SELECT idx, term, kind, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
      ),
    ),
    snapshotData: arrays(db.prepare("SELECT data FROM snapshot WHERE id = 1")),
    insert: db.prepare("INSERT INTO entries (idx, term, kind, data) VALUES (?, ?, ?, ?)"),
    deleteFrom: db.prepare("DELETE FROM entries WHERE idx >= ?"),
    deleteThrough: db.prepare("DELETE FROM entries WHERE idx <= ?"),
    deleteAll: db.prepare("DELETE FROM entries"),
    setStart: db.prepare("UPDATE log_start SET idx = ?, term = ? WHERE id = 1"),
    setHardState: db.prepare(
      "UPDATE hard_state SET term = ?, vote = ?, commit_index = ? WHERE id = 1",
    ),
    setSnapshot: db.prepare(
      "UPDATE snapshot SET idx = ?, term = ?, voters = ?, learners = ?, data = ? WHERE id = 1",
    ),
  };
}

function writeSnapshot(sql: Statements, meta: SnapshotMeta, data: Uint8Array): void {
  const { voters, learners } = meta.confState;
  sql.setSnapshot.run(
    meta.index,
    meta.term,
    JSON.stringify(voters),
    JSON.stringify(learners),
    data,
  );
}

function checkIndex(what: string, value: unknown, min: number): asserts value is number {
  if (!Number.isSafeInteger(value) || (value as number) < min) {
    throw new LogRequestError(
      "INVALID_ARGUMENT",
      `${what} ${value}: expected an integer from ${min} to 2^53-1`,
    );
  }
}

function checkBytes(what: string, value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new LogRequestError("INVALID_ARGUMENT", `${what}: expected a Uint8Array, got ${value}`);
  }
}

function checkEntry(entries: readonly Entry[], i: number): Entry {
  const e = entries[i];
  if (typeof e !== "object" || e === null) {
    throw new LogRequestError("INVALID_ARGUMENT", `save: entries[${i}] is ${e}, not an entry`);
  }
  checkIndex(`save: entries[${i}].index`, e.index, 1);
  checkIndex(`save: entries[${i}].term`, e.term, 1);
  if (e.kind !== EntryKind.Normal && e.kind !== EntryKind.ConfigChange) {
    throw new LogRequestError(
      "INVALID_ARGUMENT",
      `save: entries[${i}].kind ${e.kind}: expected 0 (normal) or 1 (config change)`,
    );
  }
  checkBytes(`save: entries[${i}].data`, e.data);
  return e;
}

function checkHardState(hs: HardState): HardState {
  if (typeof hs !== "object" || hs === null) {
    throw new LogRequestError("INVALID_ARGUMENT", `save: hardState is ${hs}, not a hard state`);
  }
  checkIndex("save: hardState.term", hs.term, 0);
  checkIndex("save: hardState.vote", hs.vote, 0);
  checkIndex("save: hardState.commit", hs.commit, 0);
  return hs;
}

function copyHardState(hs: HardState): HardState {
  return Object.freeze({ term: hs.term, vote: hs.vote, commit: hs.commit });
}

function checkSnapshot(snapshot: Snapshot): SnapshotMeta {
  const meta = snapshot?.meta;
  if (typeof meta !== "object" || meta === null) {
    throw new LogRequestError("INVALID_ARGUMENT", "save: snapshot has no meta");
  }
  checkIndex("save: snapshot.meta.index", meta.index, 0);
  checkIndex("save: snapshot.meta.term", meta.term, meta.index === 0 ? 0 : 1);
  if (meta.index === 0 && meta.term !== 0) {
    throw new LogRequestError(
      "INVALID_ARGUMENT",
      `save: snapshot at index 0 has term ${meta.term}: expected 0`,
    );
  }
  checkBytes("save: snapshot.data", snapshot.data);
  const confState = checkConfState("save: snapshot.meta.confState", meta.confState);
  return Object.freeze({ index: meta.index, term: meta.term, confState });
}

/** Checks a conf state and returns a frozen copy the caller cannot change under us. */
function checkConfState(what: string, conf: ConfState): ConfState {
  if (typeof conf !== "object" || conf === null) {
    throw new LogRequestError("INVALID_ARGUMENT", `${what} is ${conf}, not a conf state`);
  }
  const ids = (name: string, list: readonly number[]): readonly number[] => {
    if (!Array.isArray(list)) {
      throw new LogRequestError("INVALID_ARGUMENT", `${what}.${name} is not an array`);
    }
    for (let i = 0; i < list.length; i++) {
      const id = list[i];
      if (!Number.isSafeInteger(id) || id! < 1 || (i > 0 && id! <= list[i - 1]!)) {
        throw new LogRequestError(
          "INVALID_ARGUMENT",
          `${what}.${name} [${list.join(", ")}]: expected ascending node ids from 1 to 2^53-1`,
        );
      }
    }
    return Object.freeze([...list]);
  };
  const voters = ids("voters", conf.voters);
  const learners = ids("learners", conf.learners);
  const both = voters.find((id) => learners.includes(id));
  if (both !== undefined) {
    throw new LogRequestError(
      "INVALID_ARGUMENT",
      `${what}: node ${both} is both a voter and a learner`,
    );
  }
  return Object.freeze({ voters, learners });
}
