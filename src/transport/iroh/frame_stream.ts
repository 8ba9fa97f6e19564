/**
 * Frames over one bidirectional Iroh stream: a read loop that feeds the
 * incremental decoder, and a write queue that coalesces frames.
 *
 * Owns: {@link FrameStream}. Imports the codec and this folder's stream
 * wrappers; knows nothing of services or calls.
 *
 * Writes: frames are appended to a pooled buffer. The first frame of an idle
 * stream schedules a flush for the end of the current turn of the event loop
 * (a microtask), so every frame queued in that turn goes out in one binding
 * call. While a write is in flight, new frames collect in a second buffer and
 * go out together when it completes: under load, batches grow by themselves;
 * at idle, a lone frame waits for nothing. The binding takes `Array<number>`,
 * so each batch is converted once, in slices of at most
 * {@link WRITE_SLICE_BYTES} to bound the size of the temporary array.
 *
 * Bounds: every byte queued and not yet taken by the binding is counted in
 * an optional {@link OutboundCount} that the connection's streams share;
 * while it is paused (the peer does not read what it was sent) the read
 * loop reads nothing, so a peer that sends requests and never reads the
 * answers is held back by QUIC's flow control, not by this node's memory.
 *
 * @module
 */

import { FrameDecoder } from "../../codec/decoder.ts";
import {
  type Frame,
  FRAME_HEADER_BYTES,
  type FrameHeader,
  FrameWriter,
} from "../../codec/frame.ts";
import { toArray } from "./bytes.ts";
import type { IrohBiStream } from "./connection.ts";

/** Largest slice converted to an array for one binding write. */
export const WRITE_SLICE_BYTES = 256 * 1024;
/** Default queue size above which {@link FrameStream.drained} makes writers wait. */
export const DEFAULT_HIGH_WATER_BYTES = 1024 * 1024;

/** What a {@link FrameStream} reports to its owner. */
export interface FrameStreamHandlers {
  /** Each whole frame, in order. Called synchronously from the read loop. */
  onFrame(frame: Frame): void;
  /**
   * The stream is done: `null` when the peer finished it cleanly, else why
   * (a `ProtocolError` for garbage, an `IrohError` for a lost connection).
   * Called once.
   */
  onClose(error: Error | null): void;
  /**
   * The peer showed a sign of life: bytes arrived (`"read"`), or the binding
   * took a slice of ours (`"written"`; QUIC takes them only within the
   * window the peer's reads keep open, though a window's worth goes even to
   * a peer that died).
   */
  onActivity?(kind: "read" | "written"): void;
}

/**
 * The outbound bytes of a connection, shared by its streams (an
 * `OutboundBuffer` of `rpc/outbound.ts` fits).
 */
export interface OutboundCount {
  /** While true, streams read nothing from the peer. */
  readonly paused: boolean;
  add(bytes: number): void;
  release(bytes: number): void;
  /** Resolves when no longer paused. */
  whenResumed(): Promise<void>;
}

/** Options of a {@link FrameStream}. */
export interface FrameStreamOptions {
  /** Largest payload accepted from the peer. */
  readonly maxFrameBytes: number;
  /** Who the peer is, for error messages (`"endpoint 3f2a…"`). */
  readonly source: string;
  /** Bytes per binding read. Default 64 KiB. */
  readonly readChunkBytes?: number;
  /** Queue size that makes {@link FrameStream.drained} wait. Default 1 MiB. */
  readonly highWaterBytes?: number;
  /** Counts this stream's unsent bytes with its connection's; reading stops while it is paused. */
  readonly outbound?: OutboundCount;
  /** Read on while `outbound` is paused (a client reads answers whatever the peer does). */
  readonly readWhilePaused?: boolean;
}

/** Where a frame the decoder refused came from, when its whole header arrived. */
export interface RefusedHeader {
  readonly method: number;
  readonly requestId: bigint;
}

/** A bidirectional stream that carries frames. */
export class FrameStream {
  readonly #stream: IrohBiStream;
  readonly #handlers: FrameStreamHandlers;
  readonly #decoder: FrameDecoder;
  readonly #readChunkBytes: number;
  readonly #highWaterBytes: number;
  readonly #outbound: OutboundCount | undefined;
  readonly #pauseReads: boolean;
  /** Bytes queued or being written, counted in `#outbound`. */
  #outboundBytes = 0;
  /** Chunks holding the bytes the decoder has not consumed, oldest first. */
  #unread: Uint8Array[] = [];
  #unreadBytes = 0;
  /** Bytes the decoder held when it was last asked for a frame. */
  #undecodedBytes = 0;
  /** Wakes a read loop waiting for the outbound count to resume. */
  #unpause: (() => void) | null = null;
  #queue = new FrameWriter(4096);
  #spare = new FrameWriter(4096);
  #flushing = false;
  #closed: Error | null | undefined = undefined; // undefined while open
  #drainWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  #flushWaiters: (() => void)[] = [];

  constructor(stream: IrohBiStream, handlers: FrameStreamHandlers, options: FrameStreamOptions) {
    this.#stream = stream;
    this.#handlers = handlers;
    this.#decoder = new FrameDecoder({
      maxFrameBytes: options.maxFrameBytes,
      source: options.source,
    });
    this.#readChunkBytes = options.readChunkBytes ?? 64 * 1024;
    this.#highWaterBytes = options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
    this.#outbound = options.outbound;
    this.#pauseReads = options.readWhilePaused !== true;
  }

  /** Starts the read loop. */
  start(): void {
    this.#readLoop().then(
      () => this.#close(null),
      (e) => this.#close(e instanceof Error ? e : new Error(String(e))),
    );
  }

  /** True once the stream is closed for any reason. */
  get isClosed(): boolean {
    return this.#closed !== undefined;
  }

  /** Bytes queued and not yet handed to the binding. */
  get queuedBytes(): number {
    return this.#queue.length;
  }

  /** Bytes queued or being written: what this stream holds for its peer. */
  get outboundBytes(): number {
    return this.#outboundBytes;
  }

  /**
   * After the decoder refused a frame: that frame's method and request id,
   * when all 24 bytes of its header arrived; else null.
   */
  refusedHeader(): RefusedHeader | null {
    const skip = this.#unreadBytes - this.#undecodedBytes;
    if (this.#decoder.error === null || this.#undecodedBytes < FRAME_HEADER_BYTES) return null;
    const header = new Uint8Array(FRAME_HEADER_BYTES);
    let filled = 0;
    let offset = skip;
    for (const chunk of this.#unread) {
      if (offset >= chunk.length) {
        offset -= chunk.length;
        continue;
      }
      const take = Math.min(FRAME_HEADER_BYTES - filled, chunk.length - offset);
      header.set(chunk.subarray(offset, offset + take), filled);
      filled += take;
      offset = 0;
      if (filled === FRAME_HEADER_BYTES) break;
    }
    const view = new DataView(header.buffer);
    return { method: view.getUint16(6), requestId: view.getBigUint64(8) };
  }

  /**
   * Queues one frame. Throws if the stream is closed: the caller then knows
   * the frame will never be delivered.
   */
  send(header: FrameHeader, payload?: Uint8Array): void {
    this.#ensureOpen();
    const before = this.#queue.length;
    this.#queue.append(header, payload);
    this.#queued(this.#queue.length - before);
  }

  /** Queues frames written directly into the pooled buffer (e.g. `appendRaftFrame`). */
  sendWith(write: (writer: FrameWriter) => void): void {
    this.#ensureOpen();
    const before = this.#queue.length;
    write(this.#queue);
    this.#queued(this.#queue.length - before);
  }

  /** Resolves when the queue is below the high-water mark; rejects if the stream closes. */
  drained(): Promise<void> {
    if (this.#closed !== undefined) return Promise.reject(this.#closedError());
    if (this.#queue.length < this.#highWaterBytes) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  /**
   * Resolves once everything queued so far was handed to the binding;
   * rejects if the stream closes first.
   */
  async flushed(): Promise<void> {
    while (this.#flushing || this.#queue.length > 0) {
      if (this.#closed !== undefined) throw this.#closedError();
      await new Promise<void>((resolve) => this.#flushWaiters.push(resolve));
    }
    if (this.#closed !== undefined) throw this.#closedError();
  }

  /** Stops reading and writing; queued frames are dropped. Idempotent. */
  close(reason: Error | null = null): void {
    this.#close(reason);
  }

  #ensureOpen(): void {
    if (this.#closed !== undefined) throw this.#closedError();
  }

  #closedError(): Error {
    return this.#closed ?? new Error("stream closed");
  }

  #queued(bytes: number): void {
    this.#outboundBytes += bytes;
    this.#outbound?.add(bytes);
    this.#schedule();
  }

  /** Counts `bytes` as taken by the binding, unless the stream closed (then all were released). */
  #written(bytes: number): void {
    if (this.#closed !== undefined) return;
    this.#outboundBytes -= bytes;
    this.#outbound?.release(bytes);
    this.#handlers.onActivity?.("written");
  }

  #schedule(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    queueMicrotask(() => this.#flush());
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0 && this.#closed === undefined) {
        // Swap buffers: frames sent while this batch is written go to the other one.
        const batch = this.#queue;
        this.#queue = this.#spare;
        this.#spare = batch;
        this.#wakeDrainWaiters();
        const bytes = batch.bytes();
        for (let at = 0; at < bytes.length; at += WRITE_SLICE_BYTES) {
          const slice = bytes.subarray(at, at + WRITE_SLICE_BYTES);
          await this.#stream.send.writeArray(toArray(slice));
          this.#written(slice.length);
        }
        batch.clear();
      }
    } catch (e) {
      this.#close(e instanceof Error ? e : new Error(String(e)));
    } finally {
      this.#flushing = false;
      const waiters = this.#flushWaiters;
      this.#flushWaiters = [];
      for (const w of waiters) w();
    }
  }

  #wakeDrainWaiters(): void {
    if (this.#drainWaiters.length === 0 || this.#queue.length >= this.#highWaterBytes) return;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w.resolve();
  }

  async #readLoop(): Promise<void> {
    const recv = this.#stream.recv;
    const decoder = this.#decoder;
    const outbound = this.#outbound;
    while (this.#closed === undefined) {
      if (outbound?.paused && this.#pauseReads) {
        // The peer is not reading what we sent: read nothing of it either.
        await new Promise<void>((resolve) => {
          this.#unpause = resolve;
          outbound.whenResumed().then(resolve);
        });
        this.#unpause = null;
        continue;
      }
      const chunk = await recv.read(this.#readChunkBytes);
      if (chunk === null) {
        decoder.end();
        return;
      }
      this.#handlers.onActivity?.("read");
      decoder.push(chunk);
      this.#unread.push(chunk);
      this.#unreadBytes += chunk.length;
      for (;;) {
        // A failing decoder forgets its input: note where the next frame starts.
        this.#undecodedBytes = decoder.bufferedBytes;
        const frame = decoder.next();
        if (frame === null) break;
        this.#handlers.onFrame(frame);
        if (this.#closed !== undefined) return;
      }
      // Keep only the chunks the decoder still reads from (for refusedHeader).
      while (this.#unreadBytes - this.#unread[0]!.length >= decoder.bufferedBytes) {
        this.#unreadBytes -= this.#unread.shift()!.length;
        if (this.#unread.length === 0) break;
      }
    }
  }

  #close(reason: Error | null): void {
    if (this.#closed !== undefined) return;
    this.#closed = reason;
    this.#outbound?.release(this.#outboundBytes);
    this.#outboundBytes = 0;
    this.#unpause?.();
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    const error = this.#closedError();
    for (const w of waiters) w.reject(error);
    for (const w of this.#flushWaiters.splice(0)) w();
    this.#handlers.onClose(reason);
  }
}
