/**
 * What every `LogStorage` promises (src/raft/storage.ts), defined once and
 * run against each implementation: `logStorageContract(name, open)`.
 *
 * Implementation-neutral: the tests use only the `LogStorage` interface and
 * the contract's error classes. A refused write is checked by its effect (it
 * throws, and the log is as it was), not by the implementation's own error
 * class. A durable implementation passes `reopen`, and every test then also
 * checks that what it saw survives closing and opening the storage again.
 */

import { assert, assertEquals, assertThrows, thrown } from "../assert.ts";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type LogStorage,
  type Snapshot,
  UnavailableError,
} from "../../src/raft/storage.ts";

/** One storage under test, empty at first. Disposing it releases everything it holds. */
export interface LogStorageSubject extends Disposable {
  /** The storage as it is now (a new object after {@link reopen}). */
  readonly storage: LogStorage;
  /** Closes `storage` and opens what it persisted; omit for a volatile storage. */
  reopen?(): void;
}

const bytes = (text: string) => new TextEncoder().encode(text);

/** An entry whose data names its index and term, so a misplaced one shows. */
export function entry(index: number, term: number, size?: number): Entry {
  const data = size === undefined ? bytes(`${index}@${term}`) : new Uint8Array(size).fill(index);
  return { index, term, kind: 0, data };
}

/** Entries `lo..=hi`, all of term `term`. */
export function entries(lo: number, hi: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = lo; i <= hi; i++) out.push(entry(i, term));
  return out;
}

const conf = (voters: number[], learners: number[] = []): ConfState => ({ voters, learners });

/** Everything a reader can see of a storage, for before/after comparisons. */
export function view(log: LogStorage) {
  const first = log.firstIndex();
  const last = log.lastIndex();
  const terms: number[] = [];
  for (let i = first - 1; i <= last; i++) terms.push(log.term(i));
  const snapshot = log.snapshot();
  return {
    first,
    last,
    terms,
    entries: log.entries(first, last + 1, Number.MAX_SAFE_INTEGER).map(plain),
    initial: log.initialState(),
    snapshot: { meta: snapshot.meta, data: [...snapshot.data] },
  };
}

const plain = (e: Entry) => ({ index: e.index, term: e.term, kind: e.kind, data: [...e.data] });

/** Defines the contract's tests for the storage `open` makes. */
export function logStorageContract(name: string, open: () => LogStorageSubject): void {
  const test = (title: string, fn: (s: LogStorageSubject) => void) =>
    Deno.test(`[${name}] ${title}`, () => {
      using subject = open();
      fn(subject);
      if (subject.reopen !== undefined) {
        const before = view(subject.storage);
        subject.reopen();
        assertEquals(view(subject.storage), before, "what the storage read changed on reopen");
      }
    });

  /** Runs `write`, which must throw, and checks the storage is as it was. */
  const refused = (log: LogStorage, write: () => void) => {
    const before = view(log);
    assertThrows(write);
    assertEquals(view(log), before, "a refused write changed the log");
  };

  test("a new log is empty: first index 1, last index 0, term 0, no snapshot, zero hard state", ({ storage: log }) => {
    assertEquals(log.firstIndex(), 1);
    assertEquals(log.lastIndex(), 0);
    assertEquals(log.term(0), 0);
    assertEquals(log.entries(1, 1, 100), []);
    const { hardState, confState } = log.initialState();
    assertEquals({ ...hardState }, { term: 0, vote: 0, commit: 0 });
    assertEquals({ voters: [...confState.voters], learners: [...confState.learners] }, conf([]));
    const snap = log.snapshot();
    assertEquals([snap.meta.index, snap.meta.term, snap.data.length], [0, 0, 0]);
  });

  test("saved entries read back as saved, in order, with their terms and kinds", ({ storage: log }) => {
    const saved = [entry(1, 1), { ...entry(2, 1), kind: 1 as const }, entry(3, 2, 0)];
    log.save({ entries: saved });
    assertEquals(log.firstIndex(), 1);
    assertEquals(log.lastIndex(), 3);
    assertEquals(log.entries(1, 4, 1 << 20).map(plain), saved.map(plain));
    assertEquals(log.entries(2, 3, 1 << 20).map(plain), [plain(saved[1]!)]);
    assertEquals([log.term(0), log.term(1), log.term(2), log.term(3)], [0, 1, 1, 2]);
  });

  test("entries returns at least one entry, then more while their data totals at most maxBytes", ({ storage: log }) => {
    log.save({ entries: [1, 2, 3, 4, 5].map((i) => entry(i, 1, 10)) });
    const indexes = (lo: number, hi: number, max: number) =>
      log.entries(lo, hi, max).map((e) => e.index);
    assertEquals(indexes(1, 6, 0), [1], "one entry even when it alone is over the budget");
    assertEquals(indexes(1, 6, 5), [1]);
    assertEquals(indexes(1, 6, 25), [1, 2]);
    assertEquals(indexes(1, 6, 30), [1, 2, 3], "a total equal to maxBytes is within it");
    assertEquals(indexes(2, 6, 1000), [2, 3, 4, 5]);
    assertEquals(indexes(3, 3, 1000), [], "an empty range is empty");
    assertEquals(indexes(6, 6, 1000), [], "the empty range after the last index is empty");
  });

  test("entries below the first index are compacted and entries past the last are unavailable", ({ storage: log }) => {
    log.save({ entries: entries(1, 5, 1), hardState: { term: 1, vote: 0, commit: 5 } });
    log.createSnapshot(3, conf([1]), bytes("state@3"), 0);
    assertEquals(log.firstIndex(), 4);
    thrown(CompactedError, () => log.entries(3, 5, 100));
    thrown(CompactedError, () => log.entries(1, 5, 100));
    thrown(UnavailableError, () => log.entries(4, 7, 100));
    assertEquals(log.entries(4, 6, 100).map((e) => e.index), [4, 5]);
  });

  test("term answers from the first index minus one to the last index, and throws outside", ({ storage: log }) => {
    log.save({ entries: [...entries(1, 4, 1), ...entries(5, 6, 2)] });
    thrown(UnavailableError, () => log.term(7));
    log.save({ hardState: { term: 2, vote: 0, commit: 6 }, entries: [] });
    log.createSnapshot(5, conf([1]), bytes("state@5"), 0);
    assertEquals(log.term(5), 2, "the snapshot's index answers the snapshot's term");
    assertEquals(log.term(6), 2);
    thrown(CompactedError, () => log.term(4));
    thrown(UnavailableError, () => log.term(7));
  });

  test("a conflicting suffix replaces every entry from its first index, including entries past its end", ({ storage: log }) => {
    log.save({ entries: entries(1, 6, 1) });
    log.save({ entries: entries(3, 4, 2) });
    assertEquals(log.lastIndex(), 4);
    assertEquals(
      log.entries(1, 5, 1 << 20).map(plain),
      [...entries(1, 2, 1), ...entries(3, 4, 2)].map(plain),
    );
    thrown(UnavailableError, () => log.term(5));
  });

  test("entries appended after the last index join what was there", ({ storage: log }) => {
    log.save({ entries: entries(1, 2, 1) });
    log.save({ entries: entries(3, 5, 1) });
    assertEquals(log.entries(1, 6, 1 << 20).map(plain), entries(1, 5, 1).map(plain));
  });

  test("an append that leaves a gap is refused and the log is unchanged", ({ storage: log }) => {
    log.save({ entries: entries(1, 3, 1) });
    refused(log, () => log.save({ entries: entries(5, 6, 1) }));
  });

  test("entries whose indexes do not follow one another are refused and the log is unchanged", ({ storage: log }) => {
    log.save({ entries: entries(1, 3, 1) });
    refused(log, () => log.save({ entries: [entry(4, 1), entry(6, 1)] }));
    refused(log, () => log.save({ entries: [entry(4, 1), entry(4, 1)] }));
    refused(log, () => log.save({ entries: [entry(5, 1), entry(4, 1)] }));
  });

  test("the hard state is saved with the entries and is the state a restart begins from", ({ storage: log }) => {
    log.save({ entries: entries(1, 2, 3), hardState: { term: 3, vote: 2, commit: 1 } });
    assertEquals({ ...log.initialState().hardState }, { term: 3, vote: 2, commit: 1 });
    log.save({ entries: [], hardState: { term: 3, vote: 2, commit: 2 } });
    assertEquals({ ...log.initialState().hardState }, { term: 3, vote: 2, commit: 2 });
    log.save({ entries: entries(3, 3, 3) });
    assertEquals(
      { ...log.initialState().hardState },
      { term: 3, vote: 2, commit: 2 },
      "a save without a hard state keeps it",
    );
  });

  const leaderSnapshot = (index: number, term: number, voters = [1, 2, 3]): Snapshot => ({
    meta: { index, term, confState: conf(voters, [4]) },
    data: bytes(`state@${index}`),
  });

  /** Saves a snapshot from a leader of `term`, the commit index it implies, and `following` entries. */
  const install = (log: LogStorage, index: number, term: number, following: Entry[] = []) =>
    log.save({
      snapshot: leaderSnapshot(index, term),
      entries: following,
      hardState: { term, vote: 0, commit: index },
    });

  test("a snapshot that agrees with the log at its index drops the entries it covers and keeps the rest", ({ storage: log }) => {
    log.save({ entries: [...entries(1, 5, 1), ...entries(6, 8, 2)] });
    install(log, 6, 2);
    assertEquals([log.firstIndex(), log.lastIndex(), log.term(6)], [7, 8, 2]);
    assertEquals(log.entries(7, 9, 1 << 20).map(plain), entries(7, 8, 2).map(plain));
    const snap = log.snapshot();
    assertEquals(snap.meta.index, 6);
    assertEquals(snap.meta.term, 2);
    assertEquals(snap.data, bytes("state@6"));
    const { confState } = log.initialState();
    assertEquals(
      [[...confState.voters], [...confState.learners]],
      [[1, 2, 3], [4]],
      "a restart begins from the snapshot's membership",
    );
  });

  test("a snapshot the log disagrees with at its index replaces the whole log", ({ storage: log }) => {
    log.save({ entries: entries(1, 8, 1) });
    install(log, 6, 2);
    assertEquals([log.firstIndex(), log.lastIndex(), log.term(6)], [7, 6, 2]);
    assertEquals(log.entries(7, 7, 1 << 20), []);
    thrown(UnavailableError, () => log.term(7));
  });

  test("a snapshot past the end of the log replaces the whole log", ({ storage: log }) => {
    log.save({ entries: entries(1, 3, 1) });
    install(log, 10, 4);
    assertEquals([log.firstIndex(), log.lastIndex(), log.term(10)], [11, 10, 4]);
    log.save({ entries: entries(11, 12, 4) });
    assertEquals(log.entries(11, 13, 1 << 20).map(plain), entries(11, 12, 4).map(plain));
  });

  test("entries saved in the same update as a snapshot follow it", ({ storage: log }) => {
    install(log, 10, 4, entries(11, 13, 4));
    assertEquals([log.firstIndex(), log.lastIndex()], [11, 13]);
    assertEquals(log.entries(11, 14, 1 << 20).map(plain), entries(11, 13, 4).map(plain));
  });

  test("a snapshot older than the one held is refused and the log is unchanged", ({ storage: log }) => {
    install(log, 10, 4, entries(11, 12, 4));
    refused(log, () => log.save({ snapshot: leaderSnapshot(8, 3), entries: [] }));
  });

  test("a refused update writes none of its parts", ({ storage: log }) => {
    log.save({ entries: entries(1, 3, 1), hardState: { term: 1, vote: 1, commit: 1 } });
    refused(log, () =>
      log.save({
        snapshot: leaderSnapshot(3, 1),
        entries: entries(6, 7, 2),
        hardState: { term: 2, vote: 0, commit: 3 },
      }));
  });

  test("createSnapshot records the snapshot and keeps keepEntries entries behind it", ({ storage: log }) => {
    log.save({ entries: entries(1, 10, 1), hardState: { term: 1, vote: 1, commit: 8 } });
    const snap = log.createSnapshot(8, conf([1, 2]), bytes("state@8"), 3);
    assertEquals([snap.meta.index, snap.meta.term], [8, 1]);
    assertEquals([...snap.meta.confState.voters], [1, 2]);
    assertEquals(snap.data, bytes("state@8"));
    assertEquals(
      log.firstIndex(),
      6,
      "entries after index - keepEntries stay for followers that lag",
    );
    assertEquals(log.lastIndex(), 10);
    assertEquals(log.entries(6, 11, 1 << 20).map(plain), entries(6, 10, 1).map(plain));
    assertEquals(log.term(5), 1);
    thrown(CompactedError, () => log.entries(5, 6, 100));
    const held = log.snapshot();
    assertEquals([held.meta.index, held.meta.term], [8, 1]);
    assertEquals(held.data, bytes("state@8"));
    assertEquals([...log.initialState().confState.voters], [1, 2]);
  });

  test("createSnapshot with keepEntries 0 compacts through its index", ({ storage: log }) => {
    log.save({ entries: entries(1, 10, 1), hardState: { term: 1, vote: 1, commit: 10 } });
    log.createSnapshot(10, conf([1]), bytes("state@10"), 0);
    assertEquals([log.firstIndex(), log.lastIndex(), log.term(10)], [11, 10, 1]);
    log.save({ entries: entries(11, 11, 2) });
    assertEquals(log.lastIndex(), 11);
  });

  test("createSnapshot keeps everything held when keepEntries reaches past the first index", ({ storage: log }) => {
    log.save({ entries: entries(1, 10, 1), hardState: { term: 1, vote: 1, commit: 9 } });
    log.createSnapshot(4, conf([1]), bytes("state@4"), 1);
    assertEquals(log.firstIndex(), 4);
    log.createSnapshot(9, conf([1]), bytes("state@9"), 100);
    assertEquals(log.firstIndex(), 4, "a later snapshot never brings compacted entries back");
    assertEquals(log.snapshot().meta.index, 9);
  });

  test("createSnapshot older than the snapshot held is refused and the log is unchanged", ({ storage: log }) => {
    log.save({ entries: entries(1, 10, 1), hardState: { term: 1, vote: 1, commit: 10 } });
    log.createSnapshot(8, conf([1]), bytes("state@8"), 2);
    refused(log, () => log.createSnapshot(7, conf([1]), bytes("state@7"), 0));
  });

  test("entry data saved from a buffer the caller reuses keeps the bytes it had when saved", ({ storage: log }) => {
    // A transport decodes entries as views of its receive buffer, which it reuses.
    const buffer = bytes("abcdef");
    log.save({ entries: [{ index: 1, term: 1, kind: 0, data: buffer.subarray(0, 3) }] });
    buffer.fill(0);
    assertEquals(log.entries(1, 2, 100)[0]!.data, bytes("abc"));
    const snapshotData = bytes("state");
    log.save({
      snapshot: { meta: { index: 5, term: 1, confState: conf([1]) }, data: snapshotData },
      entries: [],
      hardState: { term: 1, vote: 0, commit: 5 },
    });
    snapshotData.fill(0);
    assertEquals(log.snapshot().data, bytes("state"));
  });

  test("entries read back are the caller's: changing them does not change the log", ({ storage: log }) => {
    log.save({ entries: entries(1, 2, 1) });
    const read = log.entries(1, 3, 100);
    read[0]!.data.fill(0);
    read.pop();
    assertEquals(log.entries(1, 3, 100).map(plain), entries(1, 2, 1).map(plain));
  });

  test("a save with nothing in it changes nothing", ({ storage: log }) => {
    log.save({ entries: entries(1, 2, 1), hardState: { term: 1, vote: 0, commit: 1 } });
    const before = view(log);
    log.save({ entries: [] });
    assertEquals(view(log), before);
  });

  Deno.test(`[${name}] after close every call throws`, () => {
    using subject = open();
    const log = subject.storage;
    log.save({ entries: entries(1, 2, 1) });
    log.close();
    const calls: [string, () => unknown][] = [
      ["save", () => log.save({ entries: entries(3, 3, 1) })],
      ["createSnapshot", () => log.createSnapshot(1, conf([1]), bytes("x"), 0)],
      ["entries", () => log.entries(1, 2, 100)],
      ["term", () => log.term(1)],
      ["firstIndex", () => log.firstIndex()],
      ["lastIndex", () => log.lastIndex()],
      ["initialState", () => log.initialState()],
      ["snapshot", () => log.snapshot()],
    ];
    for (const [what, call] of calls) {
      let threw = false;
      try {
        call();
      } catch {
        threw = true;
      }
      assert(threw, `${what} after close did not throw`);
    }
  });
}
