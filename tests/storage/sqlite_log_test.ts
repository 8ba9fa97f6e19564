/**
 * What only the SQLite Raft log does: its file (WAL, schema version, one
 * writer), the checks it makes of a file before trusting it, and the typed
 * refusals of writes that would make a bad log.
 */

import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals, thrown } from "../assert.ts";
import { type LogFileErrorCode, LogRequestError } from "../../src/storage/errors.ts";
import { LogFileError, SqliteLogStorage } from "../../src/storage/raft_log.ts";
import { entries, entry, view } from "./contract.ts";
import { tempDir } from "./helpers.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const conf = { voters: [1, 2, 3], learners: [] };

/** A log at `dir/raft.db` holding entries 1..=10 of term 1 (6..=10 of term 2), commit 6. */
function sampleLog(dir: string): string {
  const file = `${dir}/raft.db`;
  const log = SqliteLogStorage.open(file);
  log.save({
    entries: [...entries(1, 5, 1), ...entries(6, 10, 2)],
    hardState: { term: 2, vote: 1, commit: 6 },
  });
  log.close();
  return file;
}

/** Runs SQL on the file directly, as a damaged disk or another program would leave it. */
function tamper(file: string, sql: string): void {
  const db = new DatabaseSync(file);
  try {
    db.exec(sql);
  } finally {
    db.close();
  }
}

function openFails(file: string, code: LogFileErrorCode): LogFileError {
  const e = thrown(LogFileError, () => SqliteLogStorage.open(file));
  assertEquals(e.code, code, e.message);
  assert(e.message.includes(file), `the error does not name the file: ${e.message}`);
  return e;
}

Deno.test("a new log is a WAL-mode SQLite file marked as a Raft log of schema version 1", () => {
  using dir = tempDir();
  const file = sampleLog(dir.path);
  const db = new DatabaseSync(file);
  try {
    const pragma = (name: string) => Object.values(db.prepare(`PRAGMA ${name}`).get()!)[0];
    assertEquals(pragma("journal_mode"), "wal");
    assertEquals(pragma("user_version"), 1);
    assertEquals(pragma("application_id"), 0x4258524c);
    assertEquals(pragma("integrity_check"), "ok");
  } finally {
    db.close();
  }
});

Deno.test("a log is refused while another connection has it open, and opens once that one closes", () => {
  using dir = tempDir();
  const file = sampleLog(dir.path);
  const first = SqliteLogStorage.open(file);
  try {
    openFails(file, "LOCKED");
    assertEquals(first.lastIndex(), 10, "the refused open did not disturb the open log");
  } finally {
    first.close();
  }
  const again = SqliteLogStorage.open(file);
  assertEquals(again.lastIndex(), 10);
  again.close();
});

Deno.test("a log of an unknown schema version is refused, naming the file and both versions", () => {
  using dir = tempDir();
  const file = sampleLog(dir.path);
  tamper(file, "PRAGMA user_version = 7");
  const e = openFails(file, "UNKNOWN_SCHEMA_VERSION");
  assert(/version 7\b/.test(e.message) && /version 1\b/.test(e.message), e.message);
});

Deno.test("a file that is not a Raft log is refused: another SQLite database, or not SQLite at all", () => {
  using dir = tempDir();
  const other = `${dir.path}/other.db`;
  tamper(other, "CREATE TABLE accounts (id INTEGER PRIMARY KEY)");
  openFails(other, "NOT_A_RAFT_LOG");
  const text = `${dir.path}/notes.db`;
  Deno.writeTextFileSync(text, "these are not the pages of a database\n".repeat(200));
  openFails(text, "NOT_A_RAFT_LOG");
  assertEquals(Deno.readTextFileSync(text), "these are not the pages of a database\n".repeat(200));
});

Deno.test("a log in a directory that does not exist is refused, naming the file", () => {
  using dir = tempDir();
  openFails(`${dir.path}/missing/raft.db`, "OPEN_FAILED");
});

Deno.test("a corrupted entry row found on open is refused, naming the file and the entry", async (t) => {
  const cases: [string, string, number][] = [
    ["a gap in the indexes", "DELETE FROM entries WHERE idx = 4", 5],
    [
      "a kind that is neither normal nor config change",
      "UPDATE entries SET kind = 9 WHERE idx = 3",
      3,
    ],
    ["a term lower than the entry before", "UPDATE entries SET term = 1 WHERE idx = 8", 8],
    ["a term of 0", "UPDATE entries SET term = 0 WHERE idx = 1", 1],
    ["a term past 2^53-1", "UPDATE entries SET term = 4611686018427387904 WHERE idx = 9", 9],
    [
      "a term stored as text",
      // STRICT tables refuse text in an INTEGER column, so the damage is done
      // the way a foreign writer could: by rebuilding the table without it.
      `CREATE TABLE loose (idx INTEGER PRIMARY KEY, term INTEGER, kind INTEGER, data BLOB);
       INSERT INTO loose SELECT * FROM entries;
       UPDATE loose SET term = 'two' WHERE idx = 7;
       DROP TABLE entries;
       ALTER TABLE loose RENAME TO entries;`,
      7,
    ],
  ];
  for (const [what, sql, index] of cases) {
    await t.step(what, () => {
      using dir = tempDir();
      const file = sampleLog(dir.path);
      tamper(file, sql);
      const e = openFails(file, "CORRUPT");
      assertEquals(e.index, index, e.message);
      assert(e.message.includes(`entry ${index}`), e.message);
    });
  }
});

Deno.test("a hard state or snapshot row that breaks the log's rules is refused on open", async (t) => {
  const cases: [string, string][] = [
    ["a commit index past the last entry", "UPDATE hard_state SET commit_index = 11"],
    ["a negative vote", "UPDATE hard_state SET vote = -1"],
    ["a term past 2^53-1", "UPDATE hard_state SET term = 4611686018427387904"],
    ["a missing hard state", "DELETE FROM hard_state"],
    ["a snapshot past the end of the log", "UPDATE snapshot SET idx = 20, term = 2"],
    ["a snapshot whose term disagrees with the log", "UPDATE snapshot SET idx = 6, term = 1"],
    ["voters that are not a JSON list of ids", "UPDATE snapshot SET voters = '[3, 1]'"],
    ["entries that do not start after the log's start", "UPDATE log_start SET idx = 3, term = 1"],
  ];
  for (const [what, sql] of cases) {
    await t.step(what, () => {
      using dir = tempDir();
      const file = sampleLog(dir.path);
      tamper(file, sql);
      openFails(file, "CORRUPT");
    });
  }
});

Deno.test("writes that would make a bad log are refused with a code, and the log stays usable", async (t) => {
  using dir = tempDir();
  const file = sampleLog(dir.path);
  const log = SqliteLogStorage.open(file);
  const refuses = (code: string, write: () => void) => {
    const before = view(log);
    const e = thrown(LogRequestError, write);
    assertEquals(e.code, code, e.message);
    assertEquals(view(log), before);
  };
  try {
    await t.step("an entry that changes a committed entry's term", () => {
      refuses("COMMITTED_OVERWRITE", () => log.save({ entries: entries(6, 7, 3) }));
      // The same entries again are not a change: a leader may resend them.
      log.save({ entries: [...entries(6, 7, 2), ...entries(8, 8, 3)] });
      assertEquals([log.lastIndex(), log.term(8)], [8, 3]);
    });
    await t.step("a suffix that would cut the log below the commit index", () => {
      refuses("COMMIT_BEYOND_LOG", () => log.save({ entries: entries(5, 5, 1) }));
    });
    await t.step("an entry whose term is lower than the one before it", () => {
      refuses("TERM_REGRESSION", () => log.save({ entries: entries(9, 9, 2) }));
      refuses("TERM_REGRESSION", () => log.save({ entries: [entry(9, 3), entry(10, 2)] }));
    });
    await t.step("a hard state whose term, vote or commit goes back", () => {
      refuses(
        "HARD_STATE_REGRESSION",
        () => log.save({ entries: [], hardState: { term: 1, vote: 1, commit: 6 } }),
      );
      refuses(
        "HARD_STATE_REGRESSION",
        () => log.save({ entries: [], hardState: { term: 2, vote: 3, commit: 6 } }),
      );
      refuses(
        "HARD_STATE_REGRESSION",
        () => log.save({ entries: [], hardState: { term: 2, vote: 1, commit: 5 } }),
      );
      log.save({ entries: [], hardState: { term: 4, vote: 3, commit: 7 } });
    });
    await t.step("a commit index past the last entry", () => {
      refuses(
        "COMMIT_BEYOND_LOG",
        () => log.save({ entries: [], hardState: { term: 4, vote: 3, commit: 9 } }),
      );
    });
    await t.step("a snapshot that disagrees with a committed entry", () => {
      refuses("COMMITTED_OVERWRITE", () =>
        log.save({
          snapshot: { meta: { index: 7, term: 3, confState: conf }, data: bytes("x") },
          entries: [],
        }));
    });
    await t.step("a local snapshot past the commit index, or older than the one held", () => {
      refuses("NOT_COMMITTED", () => log.createSnapshot(8, conf, bytes("s"), 0));
      log.createSnapshot(5, conf, bytes("s5"), 0);
      refuses("SNAPSHOT_OUT_OF_DATE", () => log.createSnapshot(4, conf, bytes("s"), 0));
    });
    await t.step("entries at or below the compacted index", () => {
      refuses("COMPACTED_WRITE", () => log.save({ entries: entries(5, 6, 2) }));
    });
    await t.step("values of the wrong shape name the field and the value", () => {
      const bad: [string, () => void][] = [
        ["entries[0].index 9.5", () => log.save({ entries: [entry(9.5, 3)] })],
        [
          "entries[1].kind 2",
          () => log.save({ entries: [entry(9, 3), { ...entry(10, 3), kind: 2 as 0 }] }),
        ],
        [
          "entries[0].data",
          () => log.save({ entries: [{ ...entry(9, 3), data: "text" as unknown as Uint8Array }] }),
        ],
        [
          "hardState.commit -1",
          () => log.save({ entries: [], hardState: { term: 4, vote: 3, commit: -1 } }),
        ],
        [
          "voters [2, 1]",
          () => log.createSnapshot(6, { voters: [2, 1], learners: [] }, bytes("s"), 0),
        ],
        [
          "node 2 is both",
          () => log.createSnapshot(6, { voters: [1, 2], learners: [2] }, bytes("s"), 0),
        ],
        ["keepEntries -1", () => log.createSnapshot(6, conf, bytes("s"), -1)],
        ["term: index -1", () => log.term(-1)],
        ["lo 8 is above hi 7", () => log.entries(8, 7, 100)],
        ["maxBytes NaN", () => log.entries(6, 7, NaN)],
      ];
      for (const [named, call] of bad) {
        const e = thrown(LogRequestError, call);
        assertEquals(e.code, "INVALID_ARGUMENT");
        assert(e.message.includes(named), `"${e.message}" does not name ${named}`);
      }
    });
    assertEquals([log.firstIndex(), log.lastIndex(), log.term(8)], [6, 8, 3]);
  } finally {
    log.close();
  }
});
