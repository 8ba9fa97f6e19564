/**
 * A snapshot on the wire: compressed, cut into chunks paced by the
 * follower's answers, put together under a size bound, and abandoned when
 * it stops making progress.
 */

import { assert, assertEquals } from "../assert.ts";
import { zstdCompressSync } from "node:zlib";
import type { InstallSnapshot } from "../../src/codec/raft.ts";
import type { Snapshot } from "../../src/raft/storage.ts";
import {
  decodeSnapshot,
  encodeSnapshot,
  SNAPSHOT_TRANSFER_LIMITS,
  SnapshotReceiver,
  SnapshotSender,
} from "../../src/consensus/snapshot_transfer.ts";

/** State that compresses like real state does: repeated structure, a quarter noise. */
function state(bytes: number): Uint8Array {
  const noise = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 65536) {
    crypto.getRandomValues(noise.subarray(i, Math.min(i + 65536, bytes)));
  }
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) {
    out[i] = i % 16 < 12 ? "key=value;".charCodeAt(i % 10) : noise[i]!;
  }
  return out;
}

const snapshot = (data: Uint8Array): Snapshot => ({
  meta: { index: 1200, term: 7, confState: { voters: [1, 2, 3], learners: [4] } },
  data,
});

Deno.test("a snapshot's image round-trips, membership included", () => {
  const s = snapshot(state(1000));
  assertEquals(decodeSnapshot(encodeSnapshot(s)), s);
});

Deno.test("a 3 MiB snapshot crosses in compressed chunks, never more than the window unacknowledged", () => {
  const original = snapshot(state(3 << 20));
  const sender = new SnapshotSender(1, 2, 9, original, 0);
  const receiver = new SnapshotReceiver();
  assert(sender.totalBytes < original.data.length / 2, `compressed to ${sender.totalBytes} bytes`);
  const window = SNAPSHOT_TRANSFER_LIMITS.chunkBytes * SNAPSHOT_TRANSFER_LIMITS.windowChunks;
  let queue: InstallSnapshot[] = [...sender.start().chunks];
  let received: Snapshot | undefined;
  let finished: { ok: boolean } | undefined;
  let chunks = 0;
  while (queue.length > 0) {
    const chunk = queue.shift()!;
    chunks++;
    assert(chunk.offset + chunk.data.length - sender.ackedBytes <= window);
    const step = receiver.onChunk(chunk, 0);
    received ??= step.snapshot;
    const next = sender.onResponse(step.response, 0);
    queue = [...queue, ...next.chunks];
    finished ??= next.finished;
  }
  assertEquals(finished, { ok: true, reason: "" });
  assertEquals(received, original);
  assertEquals(chunks, Math.ceil(sender.totalBytes / SNAPSHOT_TRANSFER_LIMITS.chunkBytes));
});

Deno.test("a duplicated chunk is acknowledged, a chunk that skips ahead is refused", () => {
  const sender = new SnapshotSender(1, 2, 9, snapshot(state(2 << 20)), 0, {
    ...SNAPSHOT_TRANSFER_LIMITS,
    chunkBytes: 64 * 1024,
  });
  const [first, second, third] = sender.start().chunks;
  const receiver = new SnapshotReceiver();
  assertEquals(receiver.onChunk(first!, 0).response.offset, first!.data.length);
  const again = receiver.onChunk(first!, 0).response;
  assertEquals([again.offset, again.reject], [first!.data.length, false]);
  const skipped = receiver.onChunk(third!, 0).response;
  assertEquals(skipped.reject, true);
  assertEquals(receiver.heldBytes, 0, "a refused transfer frees what it held");
  const after = sender.onResponse(skipped, 0);
  assertEquals(after.finished?.ok, false);
  assert(after.finished!.reason.includes("refused the snapshot"), after.finished!.reason);
  void second;
});

Deno.test("a snapshot that decompresses past the bound is refused, not allocated", () => {
  const bomb = zstdCompressSync(encodeSnapshot(snapshot(new Uint8Array(64 << 20))));
  const receiver = new SnapshotReceiver({ ...SNAPSHOT_TRANSFER_LIMITS, maxSnapshotBytes: 1 << 20 });
  const step = receiver.onChunk({
    kind: 9,
    from: 1,
    to: 2,
    term: 9,
    snapshotIndex: 1200,
    snapshotTerm: 7,
    offset: 0,
    done: true,
    data: new Uint8Array(bomb),
  }, 0);
  assertEquals(step.response.reject, true);
  assertEquals(step.snapshot, undefined);
});

Deno.test("a transfer that stops making progress is abandoned on both sides", () => {
  const sender = new SnapshotSender(1, 2, 9, snapshot(state(2 << 20)), 0);
  const receiver = new SnapshotReceiver();
  const [first] = sender.start().chunks;
  sender.onResponse(receiver.onChunk(first!, 1_000).response, 1_000);
  assert(receiver.heldBytes > 0);
  const idle = SNAPSHOT_TRANSFER_LIMITS.idleTimeoutMs;
  assertEquals(sender.onTick(1_000 + idle - 1).finished, undefined);
  assertEquals(sender.onTick(1_000 + idle).finished?.ok, false);
  receiver.onTick(1_000 + idle);
  assertEquals(receiver.heldBytes, 0);
});
