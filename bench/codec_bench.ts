/**
 * Codec benchmarks. The names are a contract: bench/budgets.json and
 * `deno task bench:check` look them up to gate CI (bench/budgets.json).
 *
 * Each case does the whole job a transport does per message: encode means
 * header and payload written into a reused buffer; decode means the frame
 * header validated and the payload decoded into a message object.
 */

import {
  type AppendEntriesRequest,
  decodeRaftFrame,
  encodeFrame,
  encodeRaftFrame,
  type Entry,
  EntryKind,
  FLAG_LAST,
  FrameDecoder,
  FrameType,
  Priority,
  RAFT_SERVICE_ID,
  raftFrameParts,
  type RaftMessage,
  RaftMessageKind,
  raftMessageMaxBytes,
} from "../mod.ts";

// deno-lint-ignore no-explicit-any
let sink: any;

const heartbeat: RaftMessage = {
  kind: RaftMessageKind.Heartbeat,
  from: 1,
  to: 2,
  term: 1_234,
  commit: 987_654,
  readContext: 0,
};
const voteRequest: RaftMessage = {
  kind: RaftMessageKind.VoteRequest,
  from: 3,
  to: 1,
  term: 1_235,
  lastLogIndex: 987_660,
  lastLogTerm: 1_234,
  transfer: false,
};

/** 64 KiB of entry data in 16 entries of 4 KiB: a typical pipelined batch. */
function appendOf(entryBytes: number, count: number): AppendEntriesRequest {
  const entries: Entry[] = [];
  for (let i = 0; i < count; i++) {
    const data = new Uint8Array(entryBytes);
    for (let j = 0; j < data.length; j++) data[j] = (i * 31 + j) & 0xff;
    entries.push({ index: 1_000_001 + i, term: 1_234, kind: EntryKind.Normal, data });
  }
  return {
    kind: RaftMessageKind.AppendEntriesRequest,
    from: 1,
    to: 2,
    term: 1_234,
    prevLogIndex: 1_000_000,
    prevLogTerm: 1_234,
    leaderCommit: 999_990,
    entries,
  };
}
const append64k = appendOf(4096, 16);

const out = new Uint8Array(24 + raftMessageMaxBytes(append64k));

function framed(msg: RaftMessage): Uint8Array {
  const buf = new Uint8Array(24 + raftMessageMaxBytes(msg));
  return buf.slice(0, encodeRaftFrame(msg, buf, 0));
}
const heartbeatBytes = framed(heartbeat);
const voteBytes = framed(voteRequest);
const appendBytes = framed(append64k);

/** Decodes one whole frame the way a transport does: through the incremental decoder. */
const decoder = new FrameDecoder();
function decodeOne(bytes: Uint8Array): RaftMessage {
  decoder.push(bytes);
  return decodeRaftFrame(decoder.next()!);
}

Deno.bench("heartbeat encode", { group: "raft small" }, () => {
  sink = encodeRaftFrame(heartbeat, out, 0);
});
Deno.bench("heartbeat decode", { group: "raft small" }, () => {
  sink = decodeOne(heartbeatBytes);
});
Deno.bench("vote request encode", { group: "raft small" }, () => {
  sink = encodeRaftFrame(voteRequest, out, 0);
});
Deno.bench("vote request decode", { group: "raft small" }, () => {
  sink = decodeOne(voteBytes);
});

Deno.bench("append 64KiB encode", { group: "raft bulk" }, () => {
  sink = encodeRaftFrame(append64k, out, 0);
});
Deno.bench("append 64KiB decode", { group: "raft bulk" }, () => {
  sink = decodeOne(appendBytes);
});

const snapshotChunk = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
const snapshotMessage: RaftMessage = {
  kind: RaftMessageKind.InstallSnapshot,
  from: 1,
  to: 2,
  term: 1_234,
  snapshotIndex: 1_000_000,
  snapshotTerm: 1_234,
  offset: 3 << 20,
  done: false,
  data: snapshotChunk,
};
Deno.bench("snapshot 1MiB frame", { group: "raft bulk" }, () => {
  // The zero-copy path: a small prefix is written, the chunk is passed by reference.
  sink = raftFrameParts(snapshotMessage);
});
const snapshotCopyOut = new Uint8Array(24 + 64 + snapshotChunk.length);
Deno.bench("snapshot 1MiB frame (copied, reference only)", { group: "raft bulk" }, () => {
  sink = encodeRaftFrame(snapshotMessage, snapshotCopyOut, 0);
});

/**
 * 1 MiB of mixed small frames (heartbeats, votes, service requests of 0 to
 * 512 bytes) arriving in 16 KiB reads whose boundaries cut frames anywhere.
 */
function mixedStream(totalBytes: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let size = 0;
  let i = 0;
  while (size < totalBytes) {
    let frame: Uint8Array;
    switch (i % 3) {
      case 0:
        frame = heartbeatBytes;
        break;
      case 1:
        frame = voteBytes;
        break;
      default:
        frame = encodeFrame({
          type: FrameType.Request,
          flags: FLAG_LAST,
          priority: Priority.Service,
          method: 0x0101,
          requestId: BigInt(i),
          deadlineMs: 1000,
        }, new Uint8Array((i * 37) % 513));
    }
    parts.push(frame);
    size += frame.length;
    i++;
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  const reads: Uint8Array[] = [];
  for (let o = 0; o < all.length; o += 16 * 1024) reads.push(all.subarray(o, o + 16 * 1024));
  return reads;
}
const stream = mixedStream(1 << 20);
Deno.bench("frame decoder 1MiB stream", { group: "stream" }, () => {
  // Each frame is used as a transport uses it: a Raft message decoded, any
  // other payload read.
  const d = new FrameDecoder();
  let used = 0;
  for (const read of stream) {
    d.push(read);
    for (let f = d.next(); f !== null; f = d.next()) {
      used += f.method >>> 8 === RAFT_SERVICE_ID ? decodeRaftFrame(f).term : f.payload.length;
    }
  }
  d.end();
  sink = used;
});

globalThis.addEventListener("unload", () => {
  if (sink === Symbol.for("never")) console.log(sink);
});
