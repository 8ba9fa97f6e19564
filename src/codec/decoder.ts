/**
 * The incremental frame decoder: bytes in arbitrary chunks in, whole frames
 * out, in order, or a typed {@link ProtocolError}.
 *
 * Owns: reassembly and validation of frames. Imports `frame.ts`, `errors.ts`.
 *
 * It is a pure function of the bytes pushed: no I/O, no timers. Its memory is
 * bounded by the bytes actually received: a payload length is checked against
 * `maxFrameBytes` as soon as its four bytes arrive, and even an accepted
 * length is never allocated up front; the payload is assembled only once all
 * of its bytes are here. A frame that lies within one pushed chunk is returned
 * as a view of that chunk, without a copy.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";
import type { ByteReader } from "./varint.ts";
import {
  DEFAULT_MAX_FRAME_BYTES,
  type Frame,
  FRAME_HEADER_BYTES,
  type FrameHeader,
  type FrameType,
  frameTypeName,
  MAX_PAYLOAD_LENGTH_FIELD,
  type Priority,
  PROTOCOL_VERSION,
  RESERVED_FLAGS_MASK,
  SUPPORTED_VERSIONS,
} from "./frame.ts";

/** Limits and labels of a {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /**
   * Largest payload accepted, in bytes (the 24-byte header not counted).
   * Default 16 MiB; at most 2^32-1.
   */
  readonly maxFrameBytes?: number;
  /** Where the bytes come from (e.g. `"endpoint 3f2a…"`), appended to error messages. */
  readonly source?: string;
}

interface PendingHeader extends FrameHeader {
  readonly payloadLength: number;
}

const EMPTY = new Uint8Array(0);

/**
 * A frame as the decoder returns it. The payload stays where it was received
 * and the `payload` view of it is made the first time it is read: on a
 * heartbeat, making that view costs as much as decoding the frame, and a Raft
 * frame never needs it (`decodeRaftFrame` reads the bytes in place). Its own
 * fields are exactly a {@link FrameHeader}'s; `payload` is an accessor, so a
 * spread copy (`{ ...frame }`) carries the header only.
 */
export class ReceivedFrame implements Frame {
  readonly #bytes: Uint8Array;
  readonly #start: number;
  readonly #end: number;
  #payload: Uint8Array | null = null;

  constructor(
    readonly type: FrameType,
    readonly flags: number,
    readonly priority: Priority,
    readonly method: number,
    readonly requestId: bigint,
    readonly deadlineMs: number,
    bytes: Uint8Array,
    start: number,
    end: number,
  ) {
    this.#bytes = bytes;
    this.#start = start;
    this.#end = end;
  }

  get payload(): Uint8Array {
    if (this.#payload === null) {
      this.#payload = this.#start === this.#end
        ? EMPTY
        : this.#start === 0 && this.#end === this.#bytes.length
        ? this.#bytes
        : this.#bytes.subarray(this.#start, this.#end);
    }
    return this.#payload;
  }

  /** Points `reader` at the payload where it lies, without making a view of it. */
  readPayload(reader: ByteReader): ByteReader {
    return reader.reset(this.#bytes, this.#start, this.#end);
  }
}

/**
 * Decodes a byte stream into frames.
 *
 * Push chunks as they arrive, then call {@link next} until it returns `null`.
 * Frames come out whole and in order whatever the chunk boundaries. A
 * malformed frame makes `next` throw a {@link ProtocolError}; the decoder then
 * stays failed and throws the same error on every later call, because a byte
 * stream cannot be trusted to resynchronise after garbage.
 *
 * @example
 * ```ts
 * import { encodeFrame, FLAG_LAST, FrameDecoder, FrameType, Priority } from "@blixard/agent";
 *
 * const bytes = encodeFrame({
 *   type: FrameType.Request, flags: FLAG_LAST, priority: Priority.Service,
 *   method: 0x0101, requestId: 1n, deadlineMs: 0,
 * }, new Uint8Array([1, 2, 3]));
 *
 * const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
 * for (const b of bytes) decoder.push(new Uint8Array([b])); // one byte at a time
 * const frame = decoder.next();
 * console.log(frame?.requestId, frame?.payload); // 1n Uint8Array(3) [1, 2, 3]
 * decoder.end(); // throws ProtocolError TRUNCATED if a frame was cut short
 * ```
 */
export class FrameDecoder {
  readonly maxFrameBytes: number;
  readonly #source: string;
  // Unread input: the first chunk in a field of its own, later ones queued
  // behind it. The common case (one chunk, consumed frame by frame) then costs
  // no array operation per frame; an array push and shift cost more than the
  // rest of decoding a heartbeat.
  #head: Uint8Array | null = null;
  #rest: Uint8Array[] = [];
  #offset = 0; // read position in #head
  #buffered = 0; // unread bytes over all chunks
  #header: PendingHeader | null = null;
  #error: ProtocolError | null = null;
  readonly #scratch = new Uint8Array(FRAME_HEADER_BYTES);

  constructor(options: FrameDecoderOptions = {}) {
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (!Number.isInteger(max) || max < 0 || max > MAX_PAYLOAD_LENGTH_FIELD) {
      throw new ProtocolError(
        "INVALID_ARGUMENT",
        `frame decoder: maxFrameBytes ${max}: expected an integer 0..${MAX_PAYLOAD_LENGTH_FIELD}`,
        { field: "maxFrameBytes", value: max },
      );
    }
    this.maxFrameBytes = max;
    this.#source = options.source ? ` (from ${options.source})` : "";
  }

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** The error that failed this decoder, if any. */
  get error(): ProtocolError | null {
    return this.#error;
  }

  /** Adds received bytes. The decoder keeps a reference; do not reuse `chunk`. */
  push(chunk: Uint8Array): void {
    if (this.#error) throw this.#error;
    if (chunk.length === 0) return;
    if (this.#head === null) this.#head = chunk;
    else this.#rest.push(chunk);
    this.#buffered += chunk.length;
  }

  /**
   * Returns the next whole frame, or `null` when more bytes are needed.
   * @throws {ProtocolError} on malformed input.
   */
  next(): Frame | null {
    if (this.#error) throw this.#error;
    // Fast path: a valid whole frame at the front of the first chunk, the common
    // case for small messages. Anything unusual falls through to the checked path.
    const first = this.#head;
    if (this.#header === null && first !== null) {
      const at = this.#offset;
      const available = first.length - at;
      if (available >= FRAME_HEADER_BYTES) {
        const length = readU32(first, at + 16);
        const end = at + FRAME_HEADER_BYTES + length;
        const type = first[at + 3]!;
        if (
          end <= first.length && length <= this.maxFrameBytes &&
          first[at] === 0x42 && first[at + 1] === 0x58 && first[at + 2] === PROTOCOL_VERSION &&
          type >= 1 && type <= 7 && (first[at + 4]! & RESERVED_FLAGS_MASK) === 0 &&
          first[at + 5]! <= 4
        ) {
          const frame = new ReceivedFrame(
            type as FrameType,
            first[at + 4]!,
            first[at + 5] as Priority,
            (first[at + 6]! << 8) | first[at + 7]!,
            readU64(first, at + 8),
            readU32(first, at + 20),
            first,
            at + FRAME_HEADER_BYTES,
            end,
          );
          this.#buffered -= end - at;
          if (end === first.length) {
            this.#dropHead();
          } else {
            this.#offset = end;
          }
          return frame;
        }
      }
    }
    return this.#nextChecked();
  }

  #nextChecked(): Frame | null {
    let header = this.#header;
    if (header === null) {
      if (this.#buffered < FRAME_HEADER_BYTES) {
        // Reject garbage as soon as the bytes that prove it arrive.
        if (this.#buffered > 0) this.#check(this.#peek(this.#buffered), 0, this.#buffered);
        return null;
      }
      const first = this.#head!;
      let bytes = first;
      let at = this.#offset;
      if (first.length - at < FRAME_HEADER_BYTES) {
        bytes = this.#peek(FRAME_HEADER_BYTES);
        at = 0;
      }
      header = this.#parse(bytes, at);
      this.#skip(FRAME_HEADER_BYTES);
      this.#header = header;
    }
    const length = header.payloadLength;
    if (this.#buffered < length) return null;
    this.#header = null;
    const payload = this.#take(length);
    return new ReceivedFrame(
      header.type,
      header.flags,
      header.priority,
      header.method,
      header.requestId,
      header.deadlineMs,
      payload,
      0,
      payload.length,
    );
  }

  /** Decodes every whole frame of `chunk` plus what was buffered before. */
  *decode(chunk: Uint8Array): Generator<Frame, void, undefined> {
    this.push(chunk);
    for (let frame = this.next(); frame !== null; frame = this.next()) yield frame;
  }

  /**
   * Declares the end of the stream.
   * @throws {ProtocolError} `TRUNCATED` if the stream stopped inside a frame.
   */
  end(): void {
    if (this.#error) throw this.#error;
    const header = this.#header;
    if (header !== null) {
      throw this.#fail(
        "TRUNCATED",
        `frame: stream ended after ${this.#buffered} of ${header.payloadLength} payload bytes ` +
          `of ${frameTypeName(header.type)} request ${header.requestId}`,
        { field: "payload", value: this.#buffered },
      );
    }
    if (this.#buffered > 0) {
      throw this.#fail(
        "TRUNCATED",
        `frame: stream ended after ${this.#buffered} of ${FRAME_HEADER_BYTES} header bytes`,
        { field: "header", value: this.#buffered },
      );
    }
  }

  /** Validates the header fields wholly inside `bytes[at..at+available)`. */
  #check(bytes: Uint8Array, at: number, available: number): void {
    if (available >= 1 && bytes[at] !== 0x42 || available >= 2 && bytes[at + 1] !== 0x58) {
      const magic = available >= 2
        ? hex4((bytes[at]! << 8) | bytes[at + 1]!)
        : hex2(bytes[at]!) + "..";
      throw this.#fail("BAD_MAGIC", `frame: magic 0x${magic}: expected 0x4258 ("BX")`, {
        field: "magic",
        value: `0x${magic}`,
      });
    }
    if (available < 3) return;
    const version = bytes[at + 2]!;
    if (!SUPPORTED_VERSIONS.includes(version)) {
      throw this.#fail(
        "UNSUPPORTED_VERSION",
        `frame: version ${version} is not supported: this node speaks version ${
          SUPPORTED_VERSIONS.join(", ")
        }`,
        { field: "version", value: version, supportedVersions: SUPPORTED_VERSIONS },
      );
    }
    if (available < 4) return;
    const type = bytes[at + 3]!;
    if (type < 1 || type > 7) {
      throw this.#fail("UNKNOWN_FRAME_TYPE", `frame: type ${type}: expected 1..7`, {
        field: "type",
        value: type,
      });
    }
    if (available < 5) return;
    const flags = bytes[at + 4]!;
    if ((flags & RESERVED_FLAGS_MASK) !== 0) {
      throw this.#fail(
        "RESERVED_FLAGS",
        `frame: flags 0x${hex2(flags)} set reserved bits 0x${hex2(flags & RESERVED_FLAGS_MASK)}: ` +
          `only bit 0 (last) is defined`,
        { field: "flags", value: flags },
      );
    }
    if (available < 6) return;
    const priority = bytes[at + 5]!;
    if (priority > 4) {
      throw this.#fail("UNKNOWN_PRIORITY", `frame: priority ${priority}: expected 0..4`, {
        field: "priority",
        value: priority,
      });
    }
    if (available < 20) return;
    const length = readU32(bytes, at + 16);
    if (length > this.maxFrameBytes) {
      throw this.#fail(
        "FRAME_TOO_LARGE",
        `frame: payload length ${length} exceeds max_frame_bytes ${this.maxFrameBytes} ` +
          `(request ${readU64(bytes, at + 8)})`,
        { field: "payload length", value: length },
      );
    }
  }

  #parse(bytes: Uint8Array, at: number): PendingHeader {
    this.#check(bytes, at, FRAME_HEADER_BYTES);
    return {
      type: bytes[at + 3] as FrameType,
      flags: bytes[at + 4]!,
      priority: bytes[at + 5] as Priority,
      method: (bytes[at + 6]! << 8) | bytes[at + 7]!,
      requestId: readU64(bytes, at + 8),
      payloadLength: readU32(bytes, at + 16),
      deadlineMs: readU32(bytes, at + 20),
    };
  }

  /** Copies the first `n` (≤ 24) unread bytes into the scratch buffer, without consuming. */
  #peek(n: number): Uint8Array {
    let filled = 0;
    let offset = this.#offset;
    for (let i = -1; i < this.#rest.length && filled < n; i++) {
      const chunk = i < 0 ? this.#head! : this.#rest[i]!;
      const take = Math.min(n - filled, chunk.length - offset);
      this.#scratch.set(chunk.subarray(offset, offset + take), filled);
      filled += take;
      offset = 0;
    }
    return this.#scratch;
  }

  /** Consumes `n` unread bytes. */
  #skip(n: number): void {
    this.#buffered -= n;
    while (n > 0) {
      const left = this.#head!.length - this.#offset;
      if (n < left) {
        this.#offset += n;
        return;
      }
      n -= left;
      this.#dropHead();
    }
  }

  /** The first chunk is consumed: the next one (if any) takes its place. */
  #dropHead(): void {
    this.#head = this.#rest.length === 0 ? null : this.#rest.shift()!;
    this.#offset = 0;
  }

  /** Consumes `n` unread bytes and returns them: a view if contiguous, else a copy. */
  #take(n: number): Uint8Array {
    if (n === 0) return EMPTY;
    const first = this.#head!;
    const start = this.#offset;
    if (first.length - start >= n) {
      this.#skip(n);
      return first.subarray(start, start + n);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#head!;
      const take = Math.min(n - filled, chunk.length - this.#offset);
      out.set(chunk.subarray(this.#offset, this.#offset + take), filled);
      filled += take;
      this.#skip(take);
    }
    return out;
  }

  #fail(
    code: ProtocolError["code"],
    message: string,
    details: ConstructorParameters<typeof ProtocolError>[2],
  ): ProtocolError {
    this.#error = new ProtocolError(code, message + this.#source, details);
    this.#head = null;
    this.#rest = [];
    this.#buffered = 0;
    this.#offset = 0;
    this.#header = null;
    return this.#error;
  }
}

function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>>
    0;
}

function readU64(bytes: Uint8Array, at: number): bigint {
  const hi = readU32(bytes, at);
  const lo = readU32(bytes, at + 4);
  // 0n is a constant: one-way Raft frames carry request id 0, and skip the allocation.
  if (hi === 0) return lo === 0 ? 0n : BigInt(lo);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, "0");
}
