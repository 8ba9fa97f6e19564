import { assert, assertEquals, thrown } from "../assert.ts";
import fc from "fast-check";
import {
  appendRaftFrame,
  decodeRaftFrame,
  decodeRaftMessage,
  encodeFrame,
  encodeRaftFrame,
  encodeRaftMessage,
  EntryKind,
  FLAG_LAST,
  FrameDecoder,
  FrameType,
  FrameWriter,
  Priority,
  ProtocolError,
  raftFrameParts,
  type RaftMessage,
  RaftMessageKind,
  raftMessageMaxBytes,
  raftMessagePriority,
} from "@blixard/agent";
import { chunkSizesArb, concat, raftMessageArb, split } from "./arbitraries.ts";

const K = RaftMessageKind;

/** Messages compared as plain data (byte fields as number arrays). */
function plain(msg: RaftMessage): unknown {
  return JSON.parse(JSON.stringify(msg, (_k, v) => v instanceof Uint8Array ? Array.from(v) : v));
}

function framed(msg: RaftMessage): Uint8Array {
  const buf = new Uint8Array(24 + raftMessageMaxBytes(msg));
  return buf.slice(0, encodeRaftFrame(msg, buf, 0));
}

function decodeStream(chunks: readonly Uint8Array[]): RaftMessage[] {
  const decoder = new FrameDecoder();
  const out: RaftMessage[] = [];
  for (const chunk of chunks) {
    decoder.push(chunk);
    for (let f = decoder.next(); f !== null; f = decoder.next()) out.push(decodeRaftFrame(f));
  }
  decoder.end();
  return out;
}

/** A heartbeat whose commit index takes two varint bytes. */
function heartbeatBytes(): Uint8Array {
  return encodeRaftMessage({
    kind: K.Heartbeat,
    from: 1,
    to: 2,
    term: 3,
    commit: 300,
    readContext: 0,
  });
}

function errorOf(fn: () => unknown): ProtocolError {
  return thrown(ProtocolError, fn);
}

Deno.test("every Raft message kind round-trips through frames cut at random boundaries", () => {
  fc.assert(
    fc.property(
      fc.array(raftMessageArb, { minLength: 1, maxLength: 12 }),
      chunkSizesArb,
      (msgs, sizes) => {
        const stream = concat(msgs.map(framed));
        assertEquals(decodeStream(split(stream, sizes)).map(plain), msgs.map(plain));
      },
    ),
    { numRuns: 400 },
  );
});

Deno.test("payload-only encoding (the gRPC carriage) round-trips every kind", () => {
  fc.assert(
    fc.property(raftMessageArb, (msg) => {
      assertEquals(plain(decodeRaftMessage(encodeRaftMessage(msg))), plain(msg));
    }),
    { numRuns: 500 },
  );
});

Deno.test("messages appended to a pooled writer decode in order, and a failed append leaves it intact", () => {
  fc.assert(
    fc.property(fc.array(raftMessageArb, { maxLength: 20 }), (msgs) => {
      const writer = new FrameWriter(64);
      for (const m of msgs) appendRaftFrame(writer, m);
      const before = writer.length;
      const e = errorOf(() =>
        appendRaftFrame(writer, { kind: K.TimeoutNow, from: -1, to: 0, term: 0 })
      );
      assertEquals(e.code, "INVALID_ARGUMENT");
      assertEquals(writer.length, before);
      assertEquals(decodeStream([writer.bytes().slice()]).map(plain), msgs.map(plain));
    }),
    { numRuns: 200 },
  );
});

Deno.test("a snapshot chunk framed in two parts equals the one-piece frame, and its data is not copied", () => {
  const data = new Uint8Array(1 << 20).map((_, i) => (i * 7) & 0xff);
  const msg: RaftMessage = {
    kind: K.InstallSnapshot,
    from: 1,
    to: 2,
    term: 7,
    snapshotIndex: 123_456,
    snapshotTerm: 6,
    offset: 5 << 20,
    done: true,
    data,
  };
  const { prefix, data: tail } = raftFrameParts(msg);
  assert(tail === data);
  assert(prefix.length < 64, `prefix is ${prefix.length} bytes`);
  assertEquals(concat([prefix, tail]), framed(msg));
  const [decoded] = decodeStream([prefix, tail]);
  assertEquals(plain(decoded!), plain(msg));
});

Deno.test("a heartbeat frame is tens of bytes, not hundreds", () => {
  const hb = framed({
    kind: K.Heartbeat,
    from: 3,
    to: 5,
    term: 48_211,
    commit: 9_876_543,
    readContext: 0,
  });
  assert(hb.length <= 40, `heartbeat frame is ${hb.length} bytes`);
  const vote = framed({
    kind: K.VoteRequest,
    from: 3,
    to: 5,
    term: 48_212,
    lastLogIndex: 9_876_600,
    lastLogTerm: 48_211,
    transfer: false,
  });
  assert(vote.length <= 40, `vote request frame is ${vote.length} bytes`);
});

Deno.test("each message kind travels in its priority class, in the frame header too", () => {
  const expected: Record<number, number> = {
    [K.PreVoteRequest]: Priority.Election,
    [K.PreVoteResponse]: Priority.Election,
    [K.VoteRequest]: Priority.Election,
    [K.VoteResponse]: Priority.Election,
    [K.TimeoutNow]: Priority.Election,
    [K.Heartbeat]: Priority.Heartbeat,
    [K.HeartbeatResponse]: Priority.Heartbeat,
    [K.ReadIndexRequest]: Priority.Heartbeat,
    [K.ReadIndexResponse]: Priority.Heartbeat,
    [K.AppendEntriesRequest]: Priority.LogAppend,
    [K.AppendEntriesResponse]: Priority.LogAppend,
    [K.InstallSnapshot]: Priority.Snapshot,
    [K.InstallSnapshotResponse]: Priority.Snapshot,
  };
  for (const kind of Object.values(K)) {
    assertEquals(raftMessagePriority(kind), expected[kind], `kind ${kind}`);
  }
  fc.assert(fc.property(raftMessageArb, (msg) => {
    const frame = new FrameDecoder();
    frame.push(framed(msg));
    const f = frame.next()!;
    assertEquals(f.priority, raftMessagePriority(msg.kind));
    assertEquals(f.method, 0x0600 | msg.kind);
    assertEquals(f.type, FrameType.Request);
  }));
});

Deno.test("an append with no entries and one with a 1 MiB entry both round-trip", () => {
  const empty: RaftMessage = {
    kind: K.AppendEntriesRequest,
    from: 1,
    to: 2,
    term: 3,
    prevLogIndex: 10,
    prevLogTerm: 3,
    leaderCommit: 9,
    entries: [],
  };
  assertEquals(plain(decodeStream([framed(empty)])[0]!), plain(empty));
  const big = new Uint8Array(1 << 20).map((_, i) => i % 251);
  const one: RaftMessage = {
    ...empty,
    entries: [{ index: 11, term: 3, kind: EntryKind.ConfigChange, data: big }],
  };
  const [decoded] = decodeStream(split(framed(one), [4096]));
  assert(decoded!.kind === K.AppendEntriesRequest);
  assertEquals(decoded.entries[0]!.data.length, 1 << 20);
  assertEquals(decoded.entries[0]!.data[999_999], 999_999 % 251);
  assertEquals(decoded.entries[0]!.kind, EntryKind.ConfigChange);
});

Deno.test("integers up to 2^53-1 round-trip; larger ones are refused on both sides", () => {
  const max = Number.MAX_SAFE_INTEGER;
  const msg: RaftMessage = {
    kind: K.Heartbeat,
    from: max,
    to: max,
    term: max,
    commit: max,
    readContext: max,
  };
  assertEquals(plain(decodeRaftMessage(encodeRaftMessage(msg))), plain(msg));

  const e = errorOf(() => encodeRaftMessage({ ...msg, term: max + 1 }));
  assertEquals(e.code, "INVALID_ARGUMENT");
  assertEquals(e.field, "term");
  assertEquals(errorOf(() => encodeRaftMessage({ ...msg, commit: 1.5 })).field, "commit");

  // A well-formed 8-byte varint of 2^56-1 for "term": past the safe range.
  const bytes = new Uint8Array([
    K.TimeoutNow,
    1,
    2,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0x7f,
  ]);
  const r = errorOf(() => decodeRaftMessage(bytes));
  assertEquals(r.code, "VALUE_OUT_OF_RANGE");
  assertEquals(r.field, "term");
  // Nine continuation bytes: longer than any varint we write.
  const long = new Uint8Array([
    K.TimeoutNow,
    1,
    2,
    0x80,
    0x80,
    0x80,
    0x80,
    0x80,
    0x80,
    0x80,
    0x80,
    0x01,
  ]);
  assertEquals(errorOf(() => decodeRaftMessage(long)).code, "VALUE_OUT_OF_RANGE");
});

Deno.test("malformed Raft payloads become typed errors that name the field", () => {
  const hb = heartbeatBytes();
  let e = errorOf(() => decodeRaftMessage(new Uint8Array([99, 1, 2, 3])));
  assertEquals(e.code, "UNKNOWN_MESSAGE_KIND");
  assert(e.message.includes("kind 99"), e.message);

  e = errorOf(() => decodeRaftMessage(concat([hb, new Uint8Array([0])])));
  assertEquals(e.code, "TRAILING_BYTES");

  e = errorOf(() => decodeRaftMessage(new Uint8Array([K.VoteResponse, 1, 2, 3, 2])));
  assertEquals(e.code, "VALUE_OUT_OF_RANGE");
  assertEquals(e.field, "granted");

  e = errorOf(() => decodeRaftMessage(new Uint8Array(0)));
  assertEquals(e.code, "TRUNCATED");
  assertEquals(e.field, "kind");
});

Deno.test("every truncation of every kind of message is a TRUNCATED error, never a crash", () => {
  fc.assert(
    fc.property(raftMessageArb, (msg) => {
      const bytes = encodeRaftMessage(msg);
      const cuts = msg.kind === K.InstallSnapshot ? bytes.length - msg.data.length : bytes.length;
      for (let cut = 0; cut < cuts; cut++) {
        const e = errorOf(() => decodeRaftMessage(bytes.subarray(0, cut)));
        assertEquals(e.code, "TRUNCATED", `${msg.kind} cut at ${cut}: ${e.message}`);
      }
    }),
    { numRuns: 200 },
  );
});

Deno.test("a hostile entry count is refused without allocating for it", () => {
  // AppendEntries claiming 2^40 entries in a 12-byte payload.
  const count = [0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
  const bytes = new Uint8Array([K.AppendEntriesRequest, 1, 2, 3, 4, 3, 4, ...count, 0]);
  const e = errorOf(() => decodeRaftMessage(bytes));
  assertEquals(e.code, "TRUNCATED");
  assertEquals(e.field, "entry count");
  assertEquals(e.value, 2 ** 40);
  // An entry whose data length runs past the payload.
  const entry = new Uint8Array([
    K.AppendEntriesRequest,
    1,
    2,
    3,
    4,
    3,
    4,
    1,
    5,
    3,
    0,
    0xff,
    0x7f,
    1,
    2,
  ]);
  const t = errorOf(() => decodeRaftMessage(entry));
  assertEquals(t.code, "TRUNCATED");
  assertEquals(t.field, "entry data");
});

Deno.test("a Raft frame is decoded where it lies in a chunk: never past its own payload, errors counted from it", () => {
  const header = {
    type: FrameType.Request,
    flags: FLAG_LAST,
    priority: Priority.Heartbeat,
    method: 0x0600 | K.Heartbeat,
    requestId: 0n,
    deadlineMs: 0,
  };
  const hb = heartbeatBytes();
  const append = encodeRaftMessage({
    kind: K.AppendEntriesRequest,
    from: 1,
    to: 2,
    term: 3,
    prevLogIndex: 9,
    prevLogTerm: 3,
    leaderCommit: 9,
    entries: [{ index: 10, term: 3, kind: EntryKind.Normal, data: new Uint8Array([7, 8, 9]) }],
  });
  // A heartbeat cut two bytes short, then a whole one: the cut message must not
  // borrow the next frame's bytes to complete itself.
  const chunk = concat([
    framed({ kind: K.TimeoutNow, from: 1, to: 2, term: 3 }),
    encodeFrame(header, hb.subarray(0, hb.length - 2)),
    encodeFrame(header, hb),
  ]);
  const decoder = new FrameDecoder();
  decoder.push(chunk);
  assertEquals(decodeRaftFrame(decoder.next()!).kind, K.TimeoutNow);
  const e = errorOf(() => decodeRaftFrame(decoder.next()!));
  assertEquals(e.code, "TRUNCATED");
  assert(e.message.endsWith(`inside commit (at byte 4 of ${hb.length - 2})`), e.message);
  const whole = decoder.next()!;
  assertEquals(plain(decodeRaftFrame(whole)), plain(decodeRaftMessage(hb)));
  assertEquals(Array.from(whole.payload), Array.from(hb));

  // Entry data is a view of the chunk received, not a copy.
  const second = concat([
    framed({ kind: K.TimeoutNow, from: 1, to: 2, term: 3 }),
    encodeFrame({
      ...header,
      priority: Priority.LogAppend,
      method: 0x0600 | K.AppendEntriesRequest,
    }, append),
  ]);
  decoder.push(second);
  decoder.next();
  const msg = decodeRaftFrame(decoder.next()!);
  assert(msg.kind === K.AppendEntriesRequest);
  assertEquals(Array.from(msg.entries[0]!.data), [7, 8, 9]);
  assert(msg.entries[0]!.data.buffer === second.buffer, "entry data was copied");
});

Deno.test("a frame whose method disagrees with its payload is refused", () => {
  const payload = encodeRaftMessage({ kind: K.TimeoutNow, from: 1, to: 2, term: 3 });
  const header = {
    type: FrameType.Request,
    flags: FLAG_LAST,
    priority: Priority.Election,
    requestId: 0n,
    deadlineMs: 0,
  };
  const decoder = new FrameDecoder();
  decoder.push(encodeFrame({ ...header, method: 0x0601 }, payload));
  decoder.push(encodeFrame({ ...header, method: 0x0101 }, payload));
  let e = errorOf(() => decodeRaftFrame(decoder.next()!));
  assertEquals(e.field, "method");
  assert(e.message.includes("TimeoutNow"), e.message);
  e = errorOf(() => decodeRaftFrame(decoder.next()!));
  assert(e.message.includes("not the Raft service"), e.message);
});

Deno.test("encoding into a buffer that is too small fails cleanly instead of truncating", () => {
  const msg: RaftMessage = {
    kind: K.Heartbeat,
    from: 1,
    to: 2,
    term: 3,
    commit: 4,
    readContext: 0,
  };
  const e = errorOf(() => encodeRaftFrame(msg, new Uint8Array(30), 0));
  assertEquals(e.code, "INVALID_ARGUMENT");
  assert(e.message.includes("Heartbeat needs up to"), e.message);
});
