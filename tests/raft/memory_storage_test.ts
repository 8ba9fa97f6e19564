/**
 * The in-memory storage against the rules of `LogStorage` (src/raft/storage.ts):
 * reads and their bounds, one-transaction saves that replace a conflicting
 * suffix, snapshots received and created, and refused writes that write nothing.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { EntryKind } from "../../src/codec/raft.ts";
import {
  CompactedError,
  type Entry,
  InvalidLogUpdateError,
  MemoryStorage,
  type Snapshot,
  StorageFailure,
  UnavailableError,
} from "../../src/raft/mod.ts";

const entry = (index: number, term: number, data = `e${index}`): Entry => ({
  index,
  term,
  kind: EntryKind.Normal,
  data: new TextEncoder().encode(data),
});
const terms = (s: MemoryStorage) => {
  const out: number[] = [];
  for (let i = s.firstIndex(); i <= s.lastIndex(); i++) out.push(s.term(i));
  return out;
};
const confState = { voters: [1, 2, 3], learners: [] };

function filled(): MemoryStorage {
  const s = new MemoryStorage({ confState });
  s.save({
    entries: [entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)],
    hardState: { term: 2, vote: 1, commit: 3 },
  });
  return s;
}

Deno.test("a fresh storage starts empty with the membership it was given", () => {
  const s = new MemoryStorage({ confState });
  assertEquals([s.firstIndex(), s.lastIndex(), s.term(0)], [1, 0, 0]);
  assertEquals(s.initialState(), { hardState: { term: 0, vote: 0, commit: 0 }, confState });
  assertEquals(s.snapshot().meta.index, 0);
});

Deno.test("reads outside the held range throw the contract's typed errors", () => {
  const s = filled();
  assertEquals(terms(s), [1, 1, 2, 2]);
  assertEquals(thrown(UnavailableError, () => s.term(5)).code, "UNAVAILABLE");
  thrown(UnavailableError, () => s.entries(3, 6, Infinity));
  s.createSnapshot(2, confState, new Uint8Array([9]), 0);
  assertEquals(thrown(CompactedError, () => s.term(1)).code, "COMPACTED");
  thrown(CompactedError, () => s.entries(2, 3, Infinity));
  assertEquals(s.term(2), 1, "the snapshot's own index still answers its term");
});

Deno.test("entries() returns at least one entry, then more while their data fits in maxBytes", () => {
  const s = filled(); // 2 bytes of data each
  assertEquals(s.entries(1, 5, 0).map((e) => e.index), [1]);
  assertEquals(s.entries(1, 5, 5).map((e) => e.index), [1, 2]);
  assertEquals(s.entries(1, 5, 8).map((e) => e.index), [1, 2, 3, 4]);
  assertEquals(s.entries(2, 2, 100), []);
});

Deno.test("a save replaces the entries from its first index on, as a leader overwrites a conflicting suffix", () => {
  const s = filled();
  s.save({ entries: [entry(3, 3, "new"), entry(4, 3)] });
  assertEquals(terms(s), [1, 1, 3, 3]);
  s.save({ entries: [entry(2, 3)] });
  assertEquals(terms(s), [1, 3]);
  assertEquals(s.initialState().hardState, { term: 2, vote: 1, commit: 3 }, "no hard state: kept");
});

Deno.test("a refused save writes nothing: a gap, a term going back, an old snapshot, a bad hard state", () => {
  const s = filled();
  const snapshot: Snapshot = { meta: { index: 3, term: 2, confState }, data: new Uint8Array(0) };
  s.save({ snapshot, entries: [] });
  const bad = [
    { entries: [entry(6, 2)] },
    { entries: [entry(5, 1)] },
    { entries: [entry(5, 2), entry(7, 2)] },
    { snapshot: { meta: { index: 2, term: 1, confState }, data: new Uint8Array(0) }, entries: [] },
    { entries: [entry(5, 3)], hardState: { term: -1, vote: 0, commit: 0 } },
  ];
  for (const update of bad) {
    const e = thrown(InvalidLogUpdateError, () => s.save(update));
    assertEquals(e.code, "INVALID_LOG_UPDATE");
    assertEquals([s.firstIndex(), s.lastIndex(), terms(s)], [4, 4, [2]]);
  }
});

Deno.test("a received snapshot keeps the log after it if the log agrees at its index, else replaces the whole log", () => {
  const agrees = filled();
  agrees.save({
    snapshot: { meta: { index: 3, term: 2, confState }, data: new Uint8Array(0) },
    entries: [],
  });
  assertEquals([agrees.firstIndex(), agrees.lastIndex()], [4, 4]);
  const disagrees = filled();
  disagrees.save({
    snapshot: {
      meta: { index: 3, term: 5, confState: { voters: [1], learners: [] } },
      data: new Uint8Array(0),
    },
    entries: [entry(4, 5)],
    hardState: { term: 5, vote: 0, commit: 4 },
  });
  assertEquals([
    disagrees.firstIndex(),
    disagrees.lastIndex(),
    disagrees.term(3),
    disagrees.term(4),
  ], [4, 4, 5, 5]);
  assertEquals(disagrees.initialState().confState.voters, [1]);
});

Deno.test("createSnapshot compacts behind the snapshot but keeps keepEntries for lagging followers", () => {
  const s = filled();
  const snapshot = s.createSnapshot(3, confState, new Uint8Array([1, 2]), 1);
  assertEquals([snapshot.meta.index, snapshot.meta.term], [3, 2]);
  assertEquals([s.firstIndex(), s.lastIndex()], [3, 4], "entry 3 is kept; 1 and 2 are gone");
  assertEquals(s.term(2), 1);
  assertEquals(s.snapshot(), snapshot);
  const e = thrown(
    InvalidLogUpdateError,
    () => s.createSnapshot(4, confState, new Uint8Array(0), 0),
  );
  assert(e.message.includes("expected 3..3"), e.message);
  thrown(InvalidLogUpdateError, () => s.createSnapshot(2, confState, new Uint8Array(0), 0));
});

Deno.test("a closed storage refuses every call", () => {
  const s = filled();
  s.close();
  thrown(StorageFailure, () => s.lastIndex());
  thrown(StorageFailure, () => s.save({ entries: [] }));
});
