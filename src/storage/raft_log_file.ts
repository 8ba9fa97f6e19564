/**
 * The Raft log's SQLite file: its settings, its schema (version 1), and the
 * checks a file passes before the log trusts it.
 *
 * Owns: {@link openRaftLogFile}, {@link SCHEMA_VERSION}, the table layout.
 * Imports `node:sqlite`, `node:path`, the contract's types
 * (`src/raft/storage.ts`) and `errors.ts`; uses `Deno.openSync` to sync the
 * directory of a new file.
 *
 * Layout (every table `STRICT`, so SQLite itself refuses a value of the wrong
 * type on write):
 * - `entries (idx, term, kind, data)`: the log, `idx` the row id, consecutive.
 * - `log_start (idx, term)`, one row: the last index the log has dropped and
 *   its term; entries start at `idx + 1`. It is the snapshot's index after a
 *   snapshot from the leader, lower after a local snapshot that keeps entries
 *   for lagging followers.
 * - `hard_state (term, vote, commit_index)`, one row.
 * - `snapshot (idx, term, voters, learners, data)`, one row; `voters` and
 *   `learners` are JSON arrays of node ids; index 0 and empty data when there
 *   is none.
 * `PRAGMA application_id` marks the file as a Blixard Raft log and
 * `PRAGMA user_version` holds the schema version.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import type { ConfState, HardState, SnapshotMeta } from "../raft/storage.ts";
import { LogFileError } from "./errors.ts";

/** Schema version this build writes, and the only one it reads. */
export const SCHEMA_VERSION = 1;

/** `PRAGMA application_id` of a Blixard Raft log: "BXRL". */
export const APPLICATION_ID = 0x4258524c;

/** What the log holds, as read and checked at open. */
export interface LoadedLog {
  readonly db: DatabaseSync;
  readonly hardState: HardState;
  /** Last index the log has dropped, and its term (`log_start`). */
  readonly startIndex: number;
  readonly startTerm: number;
  /** Last index held (`startIndex` when the log holds no entry), and its term. */
  readonly lastIndex: number;
  readonly lastTerm: number;
  readonly snapshot: SnapshotMeta;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const SCHEMA = `
CREATE TABLE entries (
  idx  INTEGER PRIMARY KEY,
  term INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  data BLOB NOT NULL
) STRICT;
CREATE TABLE log_start (
  id   INTEGER PRIMARY KEY CHECK (id = 1),
  idx  INTEGER NOT NULL,
  term INTEGER NOT NULL
) STRICT;
CREATE TABLE hard_state (
  id           INTEGER PRIMARY KEY CHECK (id = 1),
  term         INTEGER NOT NULL,
  vote         INTEGER NOT NULL,
  commit_index INTEGER NOT NULL
) STRICT;
CREATE TABLE snapshot (
  id       INTEGER PRIMARY KEY CHECK (id = 1),
  idx      INTEGER NOT NULL,
  term     INTEGER NOT NULL,
  voters   TEXT NOT NULL,
  learners TEXT NOT NULL,
  data     BLOB NOT NULL
) STRICT;
INSERT INTO log_start VALUES (1, 0, 0);
INSERT INTO hard_state VALUES (1, 0, 0, 0);
INSERT INTO snapshot VALUES (1, 0, 0, '[]', '[]', x'');
PRAGMA application_id = ${APPLICATION_ID};
PRAGMA user_version = ${SCHEMA_VERSION};
`;

/**
 * Opens (creating if absent) the Raft log at `path`, claims it for this
 * connection alone, and checks every row. Throws {@link LogFileError} naming
 * the file for anything it cannot trust; the connection is closed then.
 */
export function openRaftLogFile(path: string): LoadedLog {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (e) {
    throw new LogFileError("OPEN_FAILED", path, `cannot open: ${sqliteReason(e)}`);
  }
  try {
    configure(db, path);
    const created = ensureSchema(db, path);
    // SQLite syncs the directory when it creates the WAL; the database file's
    // own name is made durable here, so a power cut after the first
    // acknowledged write cannot lose the whole file.
    if (created) syncDirectory(dirname(path));
    return load(db, path);
  } catch (e) {
    db.close();
    if (e instanceof LogFileError) throw e;
    throw new LogFileError("OPEN_FAILED", path, `cannot read: ${sqliteReason(e)}`);
  }
}

function configure(db: DatabaseSync, path: string): void {
  try {
    // Exclusive before WAL: no shared-memory index is created, and the first
    // read takes a lock no other connection can share, so two agents started
    // on one data directory cannot both write the log.
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    db.exec("PRAGMA journal_mode = WAL");
    // In WAL mode, NORMAL syncs only at checkpoints: a commit could be
    // acknowledged and then lost to a power cut. FULL syncs the WAL at every
    // commit, which Raft needs before it answers a vote or an append.
    db.exec("PRAGMA synchronous = FULL");
    // A big snapshot grows the WAL; give the space back after checkpoints.
    db.exec("PRAGMA journal_size_limit = 67108864");
    const mode = db.prepare("PRAGMA journal_mode").get()?.journal_mode;
    if (mode !== "wal") {
      throw new LogFileError("OPEN_FAILED", path, `journal mode is ${mode}, expected wal`);
    }
  } catch (e) {
    if (e instanceof LogFileError) throw e;
    const reason = sqliteReason(e);
    if (/locked|busy/i.test(reason)) {
      throw new LogFileError("LOCKED", path, `in use by another connection (${reason})`);
    }
    if (/not a database/i.test(reason)) {
      throw new LogFileError("NOT_A_RAFT_LOG", path, `not a SQLite database (${reason})`);
    }
    throw e;
  }
}

/** Creates the schema in an empty file; refuses a file that is not a log of a known version. */
function ensureSchema(db: DatabaseSync, path: string): boolean {
  const appId = Number(db.prepare("PRAGMA application_id").get()?.application_id);
  const version = Number(db.prepare("PRAGMA user_version").get()?.user_version);
  const objects = Number(db.prepare("SELECT count(*) AS n FROM sqlite_schema").get()?.n);
  if (appId === 0 && version === 0 && objects === 0) {
    db.exec(`BEGIN IMMEDIATE; ${SCHEMA} COMMIT;`);
    return true;
  }
  if (appId !== APPLICATION_ID) {
    throw new LogFileError(
      "NOT_A_RAFT_LOG",
      path,
      `application_id 0x${appId.toString(16)} with ${objects} schema objects: ` +
        `not a Blixard Raft log (application_id 0x${APPLICATION_ID.toString(16)})`,
    );
  }
  if (version !== SCHEMA_VERSION) {
    throw new LogFileError(
      "UNKNOWN_SCHEMA_VERSION",
      path,
      `schema version ${version}; this build reads version ${SCHEMA_VERSION} only`,
    );
  }
  return false;
}

function syncDirectory(dir: string): void {
  const handle = Deno.openSync(dir === "" ? "." : dir, { read: true });
  try {
    handle.syncSync();
  } finally {
    handle.close();
  }
}

/** SQL that is true for a value that is not an integer in [min, 2^53-1]. */
const badInt = (column: string, min: number) =>
  `(typeof(${column}) != 'integer' OR ${column} < ${min} OR ${column} > ${MAX_SAFE})`;

function load(db: DatabaseSync, path: string): LoadedLog {
  const corrupt = (message: string, index?: number): never => {
    throw new LogFileError("CORRUPT", path, message, index);
  };
  // Integers are read as bigints until checked, so a corrupted 64-bit value
  // is reported as corrupt instead of failing to convert.
  const query = (sql: string) => {
    const statement = db.prepare(sql);
    statement.setReadBigInts(true);
    return statement;
  };

  const start = singleRow(query, path, "log_start", ["idx", "term"]);
  const hs = singleRow(query, path, "hard_state", ["term", "vote", "commit_index"]);
  const snap = singleRow(query, path, "snapshot", ["idx", "term"], {
    voters: "text",
    learners: "text",
    data: "blob",
  });
  const ids = (name: "voters" | "learners") =>
    parseNodeIds(snap[name] as string, () => corrupt(`snapshot ${name} ${snap[name]}`));
  const confState: ConfState = Object.freeze({ voters: ids("voters"), learners: ids("learners") });
  const startIndex = start.idx as number;
  const startTerm = start.term as number;

  // The first row that breaks a rule: a wrong type, a value out of range, no
  // entry before it (a gap, or a log that does not begin after its start), or
  // a term lower than the entry before. One scan with a row-id lookup per
  // row: the data blobs are not read (200,000 entries, 350 MB: ~150 ms).
  const bad = query(
    `SELECT e.idx, e.term, e.kind, typeof(e.term) AS term_type, typeof(e.kind) AS kind_type,
       typeof(e.data) AS data_type, p.idx IS NULL AS no_prev, p.term AS prev_term,
       ${badInt("e.term", 1)} AS bad_term
     FROM entries e LEFT JOIN entries p ON p.idx = e.idx - 1
     WHERE ${badInt("e.idx", 1)} OR ${badInt("e.term", 1)} OR typeof(e.kind) != 'integer'
       OR e.kind NOT IN (0, 1) OR typeof(e.data) != 'blob'
       OR (p.idx IS NULL AND e.idx != ?) OR e.term < p.term
     ORDER BY e.idx LIMIT 1`,
  ).get(startIndex + 1);
  if (bad !== undefined) {
    const at = bad.idx as bigint;
    let why: string;
    if (at < 1n || at > BigInt(MAX_SAFE)) {
      why = `index out of range: expected 1 to 2^53-1`;
    } else if (bad.no_prev === 1n && at <= startIndex) {
      why = `at or below index ${startIndex}, where the log starts`;
    } else if (bad.no_prev === 1n && at !== BigInt(startIndex + 1)) {
      why = `gap: entry ${at - 1n} is missing (the log starts after index ${startIndex})`;
    } else if (bad.term_type !== "integer") {
      why = `term is ${bad.term_type}: expected an integer`;
    } else if (bad.kind_type !== "integer") {
      why = `kind is ${bad.kind_type}: expected an integer`;
    } else if (bad.data_type !== "blob") {
      why = `data is ${bad.data_type}: expected a blob`;
    } else if (bad.kind !== 0n && bad.kind !== 1n) {
      why = `kind ${bad.kind}: expected 0 (normal) or 1 (config change)`;
    } else if (bad.bad_term === 1n) {
      why = `term ${bad.term}: expected 1 to 2^53-1`;
    } else {
      why = `term ${bad.term} is lower than the term ${bad.prev_term} of entry ${at - 1n}`;
    }
    const index = Number(at);
    corrupt(`entry ${at}: ${why}`, Number.isSafeInteger(index) ? index : undefined);
  }

  const term = db.prepare("SELECT term FROM entries WHERE idx = ?");
  const range = db.prepare("SELECT min(idx) AS lo, max(idx) AS hi FROM entries").get()!;
  let lastIndex = startIndex;
  let lastTerm = startTerm;
  if (range.lo !== null) {
    const lo = range.lo as number;
    const first = term.get(lo)!.term as number;
    if (first < startTerm) {
      corrupt(`entry ${lo}: term ${first} is lower than the start term ${startTerm}`, lo);
    }
    lastIndex = range.hi as number;
    lastTerm = term.get(lastIndex)!.term as number;
  }
  if (startIndex === 0 && startTerm !== 0) corrupt(`log_start: index 0 with term ${startTerm}`);

  const snapIndex = snap.idx as number;
  const snapTerm = snap.term as number;
  if (snapIndex < startIndex || snapIndex > lastIndex) {
    corrupt(`snapshot index ${snapIndex} is outside the log (${startIndex} to ${lastIndex})`);
  }
  const heldSnapTerm = snapIndex === startIndex ? startTerm : term.get(snapIndex)!.term;
  if (heldSnapTerm !== snapTerm) {
    corrupt(
      `snapshot term ${snapTerm} at index ${snapIndex}, but the log has term ${heldSnapTerm}`,
    );
  }
  const hardState: HardState = {
    term: hs.term as number,
    vote: hs.vote as number,
    commit: hs.commit_index as number,
  };
  if (hardState.commit > lastIndex) {
    corrupt(`hard state commit ${hardState.commit} is past the last index ${lastIndex}`);
  }
  return {
    db,
    hardState,
    startIndex,
    startTerm,
    lastIndex,
    lastTerm,
    snapshot: { index: snapIndex, term: snapTerm, confState },
  };
}

/**
 * Reads the one row of `table`: `integers` must be integers from 0 to 2^53-1
 * (returned as numbers), `others` of the SQLite types named.
 */
function singleRow(
  query: (sql: string) => StatementSync,
  path: string,
  table: string,
  integers: readonly string[],
  others: Readonly<Record<string, "text" | "blob">> = {},
): Record<string, unknown> {
  const checks = [
    ...integers.map((c) => badInt(c, 0)),
    ...Object.entries(others).map(([c, type]) => `typeof(${c}) != '${type}'`),
  ];
  const columns = [...integers, ...Object.keys(others)];
  const rows = query(`SELECT ${columns.join(", ")}, ${checks.join(" OR ")} AS bad FROM ${table}`)
    .all();
  const row = rows[0];
  if (rows.length !== 1 || row!.bad !== 0n) {
    const found = rows.length === 1
      ? integers.map((c) => `${c} ${typeof row![c] === "bigint" ? row![c] : typeof row![c]}`)
        .join(", ")
      : `${rows.length} rows`;
    const types = Object.entries(others).map(([c, t]) => `${c} a ${t}`);
    throw new LogFileError(
      "CORRUPT",
      path,
      `table ${table}: expected one row with ${integers.join(", ")} integers from 0 to ` +
        `2^53-1${types.length > 0 ? `, ${types.join(", ")}` : ""}; found ${found}`,
    );
  }
  const out: Record<string, unknown> = { ...row };
  for (const c of integers) out[c] = Number(row![c]);
  return out;
}

/** Parses a JSON array of ascending node ids; calls `fail` for anything else. */
function parseNodeIds(text: string, fail: () => never): readonly number[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    fail();
  }
  if (!Array.isArray(value)) fail();
  const ids = value as unknown[];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isSafeInteger(id) || (id as number) < 1) fail();
    if (i > 0 && (id as number) <= (ids[i - 1] as number)) fail();
  }
  return Object.freeze(ids as number[]);
}

/** The message of a `node:sqlite` error, with SQLite's own code name when it has one. */
export function sqliteReason(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const { errcode, errstr } = e as Error & { errcode?: number; errstr?: string };
  if (errcode === undefined) return e.message;
  const name = SQLITE_CODES[errcode & 0xff];
  return `${e.message} (${name ?? `SQLite code ${errcode}`}${
    errstr && errstr !== e.message ? `: ${errstr}` : ""
  })`;
}

const SQLITE_CODES: Record<number, string> = {
  1: "SQLITE_ERROR",
  5: "SQLITE_BUSY",
  6: "SQLITE_LOCKED",
  7: "SQLITE_NOMEM",
  8: "SQLITE_READONLY",
  10: "SQLITE_IOERR",
  11: "SQLITE_CORRUPT",
  13: "SQLITE_FULL",
  14: "SQLITE_CANTOPEN",
  19: "SQLITE_CONSTRAINT",
  20: "SQLITE_MISMATCH",
  26: "SQLITE_NOTADB",
};
