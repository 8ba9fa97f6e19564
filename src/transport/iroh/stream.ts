/**
 * QUIC stream halves over the Iroh binding, in `Uint8Array`s.
 *
 * Owns: {@link IrohSendStream}, {@link IrohRecvStream}. Imports the binding's
 * types, `bytes.ts` and `errors.ts`.
 *
 * Thin on purpose: one binding call per method, errors mapped to
 * {@link IrohError}. Two behaviours of the binding shape how to use them:
 * - Each half holds a lock for the whole of a call. A `stop()` issued while a
 *   `read()` waits for data waits for that read to finish; keep one reader
 *   per half and stop it only when no read is pending (or close the
 *   connection, which fails the read at once).
 * - `read(limit)` allocates `limit` bytes in Rust on every call before data
 *   arrives; keep the limit near the expected chunk (64 KiB default).
 *
 * @module
 */

import type { RawConnection, RawRecvStream, RawSendStream } from "./binding.ts";
import { toArray, toBytes } from "./bytes.ts";
import { IrohError, toIrohError } from "./errors.ts";

/** Default `maxBytes` of {@link IrohRecvStream.read}. */
export const DEFAULT_READ_CHUNK_BYTES = 64 * 1024;

/** Largest value the binding takes for a read size (`u32`). */
const MAX_READ_BYTES = 0xffff_ffff;

/** The sending half of a QUIC stream. */
export class IrohSendStream {
  /** The binding's stream, for calls this wrapper does not cover. */
  readonly raw: RawSendStream;
  readonly #connection: RawConnection;
  readonly #remoteId: string;

  constructor(raw: RawSendStream, connection: RawConnection, remoteId: string) {
    this.raw = raw;
    this.#connection = connection;
    this.#remoteId = remoteId;
  }

  /** Writes all of `bytes` (converted to an array first: ~2 ns a byte). */
  write(bytes: Uint8Array): Promise<void> {
    return this.writeArray(toArray(bytes));
  }

  /**
   * Writes all of an already converted array. For hot paths that build the
   * array once (a coalesced batch of frames), or convert off the critical path.
   */
  async writeArray(bytes: number[]): Promise<void> {
    try {
      await this.raw.writeAll(bytes);
    } catch (e) {
      throw this.#error(e, "write");
    }
  }

  /** Ends the stream gracefully; the peer reads the rest, then end of stream. */
  async finish(): Promise<void> {
    try {
      await this.raw.finish();
    } catch (e) {
      throw this.#error(e, "finish");
    }
  }

  /**
   * After {@link finish}: resolves true once the peer has received
   * everything sent (or stopped the stream), false after `timeoutMs` or if
   * the connection fails. Closing the connection before that loses what the
   * peer has not acknowledged yet.
   */
  async delivered(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        this.raw.stopped().then(() => true, () => false),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), timeoutMs)),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Abandons the stream; the peer's reads fail with `STREAM_RESET` and `code`. */
  async reset(code: number): Promise<void> {
    try {
      await this.raw.reset(BigInt(code));
    } catch (e) {
      throw this.#error(e, "reset");
    }
  }

  /** Higher priority streams send first when several have data (i32, default 0). */
  async setPriority(priority: number): Promise<void> {
    try {
      await this.raw.setPriority(priority);
    } catch (e) {
      throw this.#error(e, "setPriority");
    }
  }

  #error(e: unknown, operation: string): IrohError {
    return toIrohError(e, {
      operation,
      remoteId: this.#remoteId,
      closeReason: this.#connection.closeReason(),
    });
  }
}

/** The receiving half of a QUIC stream. */
export class IrohRecvStream {
  /** The binding's stream, for calls this wrapper does not cover. */
  readonly raw: RawRecvStream;
  readonly #connection: RawConnection;
  readonly #remoteId: string;

  constructor(raw: RawRecvStream, connection: RawConnection, remoteId: string) {
    this.raw = raw;
    this.#connection = connection;
    this.#remoteId = remoteId;
  }

  /**
   * Reads the next chunk, at most `maxBytes`; `null` once the peer finished
   * the stream and everything was read.
   */
  async read(maxBytes: number = DEFAULT_READ_CHUNK_BYTES): Promise<Uint8Array | null> {
    const chunk = await this.readArray(maxBytes);
    return chunk === null ? null : toBytes(chunk);
  }

  /** {@link read} without the conversion: the binding's array as it came. */
  async readArray(maxBytes: number = DEFAULT_READ_CHUNK_BYTES): Promise<number[] | null> {
    checkReadSize(maxBytes, "maxBytes");
    let chunk: number[];
    try {
      chunk = await this.raw.read(maxBytes);
    } catch (e) {
      throw this.#error(e, "read");
    }
    // The binding maps quinn's "end of stream" to an empty array; a read
    // with a non-zero limit never returns zero bytes otherwise.
    return chunk.length === 0 ? null : chunk;
  }

  /** Reads exactly `size` bytes; `STREAM_FINISHED_EARLY` if the stream ends first. */
  async readExact(size: number): Promise<Uint8Array> {
    checkReadSize(size, "size");
    try {
      return toBytes(await this.raw.readExact(size));
    } catch (e) {
      throw this.#error(e, "readExact");
    }
  }

  /** Reads until the peer finishes the stream; `TOO_LONG` past `maxBytes`. */
  async readToEnd(maxBytes: number): Promise<Uint8Array> {
    checkReadSize(maxBytes, "maxBytes");
    try {
      return toBytes(await this.raw.readToEnd(maxBytes));
    } catch (e) {
      throw this.#error(e, "readToEnd");
    }
  }

  /**
   * Tells the peer to stop sending; its writes fail with `STREAM_STOPPED`.
   * Waits for a pending {@link read} on this half to finish first (binding lock).
   */
  async stop(code: number): Promise<void> {
    try {
      await this.raw.stop(BigInt(code));
    } catch (e) {
      throw this.#error(e, "stop");
    }
  }

  #error(e: unknown, operation: string): IrohError {
    return toIrohError(e, {
      operation,
      remoteId: this.#remoteId,
      closeReason: this.#connection.closeReason(),
    });
  }
}

function checkReadSize(value: number, name: string): void {
  if (!Number.isInteger(value) || value < 1 || value > MAX_READ_BYTES) {
    throw new IrohError(
      "INVALID_ARGUMENT",
      `read: ${name} ${value}: expected an integer from 1 to ${MAX_READ_BYTES}`,
    );
  }
}
