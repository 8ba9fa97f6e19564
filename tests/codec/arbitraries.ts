/**
 * fast-check generators shared by the codec tests: frames, Raft messages, and
 * ways to cut a byte stream into chunks.
 */

import fc from "fast-check";
import {
  type Entry,
  type FrameHeader,
  FrameType,
  MAX_REQUEST_ID,
  type Priority,
  type RaftMessage,
  RaftMessageKind,
} from "@blixard/agent";

export const u64 = fc.bigInt({ min: 0n, max: MAX_REQUEST_ID });

export const frameHeaderArb: fc.Arbitrary<FrameHeader> = fc.record({
  type: fc.constantFrom(...Object.values(FrameType)),
  flags: fc.constantFrom(0, 1),
  priority: fc.integer({ min: 0, max: 4 }).map((p) => p as Priority),
  method: fc.integer({ min: 0, max: 0xffff }),
  requestId: u64,
  deadlineMs: fc.nat({ max: 0xffff_ffff }),
});

export const frameArb = fc.record({
  header: frameHeaderArb,
  payload: fc.uint8Array({ maxLength: 2048 }),
});

/** Integers the Raft codec carries: biased toward small values, up to 2^53-1. */
const num = fc.oneof(
  fc.nat({ max: 200 }),
  fc.nat(),
  fc.maxSafeNat(),
  fc.constant(Number.MAX_SAFE_INTEGER),
);

const envelope = { from: num, to: num, term: num };

const entryArb: fc.Arbitrary<Entry> = fc.record({
  index: num,
  term: num,
  kind: fc.constantFrom(0, 1) as fc.Arbitrary<0 | 1>,
  data: fc.uint8Array({ maxLength: 512 }),
});

const K = RaftMessageKind;

/** Every Raft message kind with random contents. */
export const raftMessageArb: fc.Arbitrary<RaftMessage> = fc.oneof(
  fc.record({
    kind: fc.constantFrom(K.PreVoteRequest, K.VoteRequest),
    ...envelope,
    lastLogIndex: num,
    lastLogTerm: num,
    transfer: fc.boolean(),
  }),
  fc.record({
    kind: fc.constantFrom(K.PreVoteResponse, K.VoteResponse),
    ...envelope,
    granted: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant(K.AppendEntriesRequest),
    ...envelope,
    prevLogIndex: num,
    prevLogTerm: num,
    leaderCommit: num,
    entries: fc.array(entryArb, { maxLength: 8 }),
  }),
  fc.record({
    kind: fc.constant(K.AppendEntriesResponse),
    ...envelope,
    success: fc.boolean(),
    matchIndex: num,
    hintIndex: num,
    hintTerm: num,
  }),
  fc.record({ kind: fc.constant(K.Heartbeat), ...envelope, commit: num, readContext: num }),
  fc.record({ kind: fc.constant(K.HeartbeatResponse), ...envelope, readContext: num }),
  fc.record({
    kind: fc.constant(K.InstallSnapshot),
    ...envelope,
    snapshotIndex: num,
    snapshotTerm: num,
    offset: num,
    done: fc.boolean(),
    data: fc.uint8Array({ maxLength: 4096 }),
  }),
  fc.record({
    kind: fc.constant(K.InstallSnapshotResponse),
    ...envelope,
    snapshotIndex: num,
    offset: num,
    reject: fc.boolean(),
  }),
  fc.record({ kind: fc.constant(K.TimeoutNow), ...envelope }),
  fc.record({ kind: fc.constant(K.ReadIndexRequest), ...envelope, readContext: num }),
  fc.record({
    kind: fc.constant(K.ReadIndexResponse),
    ...envelope,
    readContext: num,
    readIndex: num,
    ok: fc.boolean(),
  }),
) as fc.Arbitrary<RaftMessage>;

/** Cut points for splitting a stream: sizes of successive chunks (0 allowed). */
export const chunkSizesArb = fc.array(fc.nat({ max: 300 }), { minLength: 1, maxLength: 64 });

/** Splits `bytes` into chunks of the given sizes, cycling them; a 0 yields an empty chunk. */
export function split(bytes: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length]!;
    chunks.push(bytes.slice(at, at + size));
    at += size;
    if (i > bytes.length + sizes.length * 2) {
      chunks.push(bytes.slice(at));
      break;
    }
  }
  return chunks;
}

/** Joins byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
