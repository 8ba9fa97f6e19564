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
 * @module
 */

import { FrameDecoder } from "../../codec/decoder.ts";
import { type Frame, type FrameHeader, FrameWriter } from "../../codec/frame.ts";
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
}

/** A bidirectional stream that carries frames. */
export class FrameStream {
  readonly #stream: IrohBiStream;
  readonly #handlers: FrameStreamHandlers;
  readonly #decoder: FrameDecoder;
  readonly #readChunkBytes: number;
  readonly #highWaterBytes: number;
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

  /**
   * Queues one frame. Throws if the stream is closed: the caller then knows
   * the frame will never be delivered.
   */
  send(header: FrameHeader, payload?: Uint8Array): void {
    this.#ensureOpen();
    this.#queue.append(header, payload);
    this.#schedule();
  }

  /** Queues frames written directly into the pooled buffer (e.g. `appendRaftFrame`). */
  sendWith(write: (writer: FrameWriter) => void): void {
    this.#ensureOpen();
    write(this.#queue);
    this.#schedule();
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
          await this.#stream.send.writeArray(toArray(bytes.subarray(at, at + WRITE_SLICE_BYTES)));
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
    while (this.#closed === undefined) {
      const chunk = await recv.read(this.#readChunkBytes);
      if (chunk === null) {
        decoder.end();
        return;
      }
      decoder.push(chunk);
      for (let frame = decoder.next(); frame !== null; frame = decoder.next()) {
        this.#handlers.onFrame(frame);
        if (this.#closed !== undefined) return;
      }
    }
  }

  #close(reason: Error | null): void {
    if (this.#closed !== undefined) return;
    this.#closed = reason;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    const error = this.#closedError();
    for (const w of waiters) w.reject(error);
    for (const w of this.#flushWaiters.splice(0)) w();
    this.#handlers.onClose(reason);
  }
}
