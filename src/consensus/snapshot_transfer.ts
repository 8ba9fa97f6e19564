/**
 * Moving a whole snapshot from a leader to a lagging follower: the core
 * hands over one {@link Snapshot}; on the wire it travels as zstd-compressed
 * InstallSnapshot chunks in the Snapshot priority class, paced by the
 * follower's acknowledgements, and is put together again on the follower
 * under a size bound before the core sees it.
 *
 * Owns: {@link SnapshotSender}, {@link SnapshotReceiver}, the snapshot's
 * byte image ({@link encodeSnapshot}, {@link decodeSnapshot}) and
 * {@link SNAPSHOT_TRANSFER_LIMITS}. Imports the Raft codec, the storage
 * contract's types and `node:zlib`; no I/O, and time only through the `now`
 * callers pass in, so the simulation drives it like the real node.
 *
 * Why compressed: the Iroh binding moves bulk bytes at a few MiB/s (every
 * byte crosses into a JS array), so fewer bytes is the only way to go faster
 * (docs/iroh-binding.md); zstd takes ~2 ms for 1 MiB of state here.
 *
 * The protocol (docs/raft.md, "Snapshots on the wire"):
 * - The leader sends chunks of at most `chunkBytes` of the compressed image,
 *   `offset` counting compressed bytes, at most `windowChunks` unacknowledged.
 * - The follower answers each chunk with InstallSnapshotResponse: `offset`
 *   is how many bytes of that snapshot it now holds; `reject` when the chunk
 *   does not follow (or the snapshot is too large), and the leader gives up.
 * - The last chunk has `done`; when the follower holds all of it, the leader
 *   reports success to its core, and the follower steps the whole snapshot
 *   into its own.
 * - A transfer with no progress for `idleTimeoutMs` is abandoned on both sides.
 *
 * @module
 */

import { zstdCompressSync, zstdDecompressSync } from "node:zlib";
import {
  type InstallSnapshot,
  type InstallSnapshotResponse,
  RaftMessageKind,
} from "../codec/raft.ts";
import { ByteReader, putUvarint, uvarintSize } from "../codec/varint.ts";
import type { ConfState, Snapshot } from "../raft/storage.ts";

/** Bounds of a transfer. */
export interface SnapshotTransferLimits {
  /** Compressed bytes per chunk. */
  readonly chunkBytes: number;
  /** Chunks sent and not yet acknowledged. */
  readonly windowChunks: number;
  /** Largest compressed image a follower accepts. */
  readonly maxCompressedBytes: number;
  /** Largest decompressed image a follower accepts. */
  readonly maxSnapshotBytes: number;
  /** A transfer without progress this long is abandoned, ms. */
  readonly idleTimeoutMs: number;
}

/**
 * Defaults: 256 KiB chunks keep a chunk's trip short on either transport and
 * four in flight keep the pipe full; 1 GiB decompressed is far above what the
 * cluster state needs and stops a hostile leader from exhausting memory.
 */
export const SNAPSHOT_TRANSFER_LIMITS: SnapshotTransferLimits = Object.freeze({
  chunkBytes: 256 * 1024,
  windowChunks: 4,
  maxCompressedBytes: 256 * 1024 * 1024,
  maxSnapshotBytes: 1024 * 1024 * 1024,
  idleTimeoutMs: 30_000,
});

/** Refused or broken snapshot bytes. */
export class SnapshotTransferError extends Error {
  override readonly name = "SnapshotTransferError";
  readonly code: "MALFORMED" | "TOO_LARGE";
  constructor(code: "MALFORMED" | "TOO_LARGE", message: string) {
    super(message);
    this.code = code;
  }
}

const IMAGE_VERSION = 1;

/** The uncompressed image: version, index, term, voters, learners, then the state machine's data. */
export function encodeSnapshot(snapshot: Snapshot): Uint8Array {
  const { index, term, confState } = snapshot.meta;
  let size = 1 + uvarintSize(index) + uvarintSize(term) + uvarintSize(confState.voters.length) +
    uvarintSize(confState.learners.length);
  for (const id of confState.voters) size += uvarintSize(id);
  for (const id of confState.learners) size += uvarintSize(id);
  const out = new Uint8Array(size + snapshot.data.length);
  out[0] = IMAGE_VERSION;
  let at = putUvarint(out, 1, index, "snapshot index");
  at = putUvarint(out, at, term, "snapshot term");
  at = putUvarint(out, at, confState.voters.length, "voter count");
  for (const id of confState.voters) at = putUvarint(out, at, id, "voter");
  at = putUvarint(out, at, confState.learners.length, "learner count");
  for (const id of confState.learners) at = putUvarint(out, at, id, "learner");
  out.set(snapshot.data, at);
  return out;
}

/** The snapshot an image holds. */
export function decodeSnapshot(image: Uint8Array): Snapshot {
  const r = new ByteReader("snapshot").reset(image);
  try {
    const version = r.u8("version");
    if (version !== IMAGE_VERSION) {
      throw new SnapshotTransferError(
        "MALFORMED",
        `snapshot: image version ${version}; this node reads version ${IMAGE_VERSION}`,
      );
    }
    const index = r.uvarint("index");
    const term = r.uvarint("term");
    const ids = (what: string) => {
      const n = r.uvarint(`${what} count`);
      if (n > r.remaining) {
        throw new SnapshotTransferError(
          "MALFORMED",
          `snapshot: ${n} ${what}s in ${r.remaining} bytes`,
        );
      }
      const list: number[] = [];
      for (let i = 0; i < n; i++) list.push(r.uvarint(what));
      return list;
    };
    const confState: ConfState = { voters: ids("voter"), learners: ids("learner") };
    return { meta: { index, term, confState }, data: image.slice(r.pos) };
  } catch (e) {
    if (e instanceof SnapshotTransferError) throw e;
    throw new SnapshotTransferError("MALFORMED", `snapshot: ${(e as Error).message}`);
  }
}

/** What the sender wants done now. */
export interface SendStep {
  /** Chunks to send, in order. */
  readonly chunks: readonly InstallSnapshot[];
  /** Set once the transfer ended: whether the follower holds the whole snapshot. */
  readonly finished?: { readonly ok: boolean; readonly reason: string };
}

/** The leader's side of one transfer to one follower. */
export class SnapshotSender {
  readonly from: number;
  readonly to: number;
  readonly term: number;
  readonly snapshotIndex: number;
  readonly snapshotTerm: number;
  readonly #image: Uint8Array;
  readonly #limits: SnapshotTransferLimits;
  /** Next offset to send. */
  #next = 0;
  /** Bytes the follower acknowledged holding. */
  #acked = 0;
  #lastProgressMs: number;
  #finished: { ok: boolean; reason: string } | null = null;

  constructor(
    from: number,
    to: number,
    term: number,
    snapshot: Snapshot,
    nowMs: number,
    limits: SnapshotTransferLimits = SNAPSHOT_TRANSFER_LIMITS,
  ) {
    this.from = from;
    this.to = to;
    this.term = term;
    this.snapshotIndex = snapshot.meta.index;
    this.snapshotTerm = snapshot.meta.term;
    this.#image = new Uint8Array(zstdCompressSync(encodeSnapshot(snapshot)));
    this.#limits = limits;
    this.#lastProgressMs = nowMs;
  }

  /** Compressed size of the image. */
  get totalBytes(): number {
    return this.#image.length;
  }

  /** Bytes the follower acknowledged. */
  get ackedBytes(): number {
    return this.#acked;
  }

  /** The first chunks (up to the window). */
  start(): SendStep {
    return { chunks: this.#fill() };
  }

  /** A response from the follower: more chunks, or the end. */
  onResponse(response: InstallSnapshotResponse, nowMs: number): SendStep {
    if (this.#finished || response.snapshotIndex !== this.snapshotIndex) return { chunks: [] };
    if (response.reject) {
      return this.#finish(false, `node ${this.to} refused the snapshot at byte ${response.offset}`);
    }
    if (response.offset > this.#acked) {
      this.#acked = Math.min(response.offset, this.#image.length);
      this.#lastProgressMs = nowMs;
    }
    if (this.#acked === this.#image.length) return this.#finish(true, "");
    return { chunks: this.#fill() };
  }

  /** Time passes: a transfer without progress is abandoned. */
  onTick(nowMs: number): SendStep {
    if (this.#finished) return { chunks: [] };
    if (nowMs - this.#lastProgressMs >= this.#limits.idleTimeoutMs) {
      return this.#finish(
        false,
        `no progress from node ${this.to} for ${this.#limits.idleTimeoutMs} ms`,
      );
    }
    return { chunks: [] };
  }

  /** The transfer failed for a reason outside (the peer is unreachable, a new term). */
  abort(reason: string): SendStep {
    return this.#finished ? { chunks: [] } : this.#finish(false, reason);
  }

  #finish(ok: boolean, reason: string): SendStep {
    this.#finished = { ok, reason };
    return { chunks: [], finished: this.#finished };
  }

  #fill(): InstallSnapshot[] {
    const { chunkBytes, windowChunks } = this.#limits;
    const out: InstallSnapshot[] = [];
    while (
      this.#next < this.#image.length && this.#next - this.#acked < chunkBytes * windowChunks
    ) {
      const end = Math.min(this.#next + chunkBytes, this.#image.length);
      out.push({
        kind: RaftMessageKind.InstallSnapshot,
        from: this.from,
        to: this.to,
        term: this.term,
        snapshotIndex: this.snapshotIndex,
        snapshotTerm: this.snapshotTerm,
        offset: this.#next,
        done: end === this.#image.length,
        data: this.#image.subarray(this.#next, end),
      });
      this.#next = end;
    }
    return out;
  }
}

/** What the receiver wants done with one chunk. */
export interface ReceiveStep {
  /** The answer to send the leader. */
  readonly response: InstallSnapshotResponse;
  /** The whole snapshot, once the last chunk arrived: step it into the core. */
  readonly snapshot?: Snapshot;
}

/** The follower's side: puts chunks together, one transfer at a time. */
export class SnapshotReceiver {
  readonly #limits: SnapshotTransferLimits;
  #current: {
    from: number;
    term: number;
    index: number;
    chunks: Uint8Array[];
    bytes: number;
    lastChunkMs: number;
  } | null = null;

  constructor(limits: SnapshotTransferLimits = SNAPSHOT_TRANSFER_LIMITS) {
    this.#limits = limits;
  }

  /** Bytes held for the transfer under way. */
  get heldBytes(): number {
    return this.#current?.bytes ?? 0;
  }

  /** Takes one chunk. */
  onChunk(chunk: InstallSnapshot, nowMs: number): ReceiveStep {
    const answer = (offset: number, reject: boolean): InstallSnapshotResponse => ({
      kind: RaftMessageKind.InstallSnapshotResponse,
      from: chunk.to,
      to: chunk.from,
      term: chunk.term,
      snapshotIndex: chunk.snapshotIndex,
      offset,
      reject,
    });
    let t = this.#current;
    // A new transfer (another snapshot, leader or term) replaces the old one.
    if (
      t === null || t.index !== chunk.snapshotIndex || t.from !== chunk.from ||
      t.term !== chunk.term
    ) {
      if (chunk.offset !== 0) return { response: answer(0, true) };
      t = this.#current = {
        from: chunk.from,
        term: chunk.term,
        index: chunk.snapshotIndex,
        chunks: [],
        bytes: 0,
        lastChunkMs: nowMs,
      };
    }
    if (chunk.offset < t.bytes) return { response: answer(t.bytes, false) }; // a duplicate
    if (chunk.offset > t.bytes) {
      this.#current = null;
      return { response: answer(t.bytes, true) };
    }
    if (t.bytes + chunk.data.length > this.#limits.maxCompressedBytes) {
      this.#current = null;
      return { response: answer(t.bytes, true) };
    }
    t.chunks.push(chunk.data.slice());
    t.bytes += chunk.data.length;
    t.lastChunkMs = nowMs;
    if (!chunk.done) return { response: answer(t.bytes, false) };
    this.#current = null;
    const compressed = concat(t.chunks, t.bytes);
    let snapshot: Snapshot;
    try {
      const image = zstdDecompressSync(compressed, {
        maxOutputLength: this.#limits.maxSnapshotBytes,
      });
      snapshot = decodeSnapshot(new Uint8Array(image.buffer, image.byteOffset, image.byteLength));
    } catch {
      return { response: answer(t.bytes, true) };
    }
    if (snapshot.meta.index !== chunk.snapshotIndex || snapshot.meta.term !== chunk.snapshotTerm) {
      return { response: answer(t.bytes, true) };
    }
    return { response: answer(t.bytes, false), snapshot };
  }

  /** Time passes: a transfer idle past the timeout is dropped, freeing its memory. */
  onTick(nowMs: number): void {
    if (this.#current && nowMs - this.#current.lastChunkMs >= this.#limits.idleTimeoutMs) {
      this.#current = null;
    }
  }
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
