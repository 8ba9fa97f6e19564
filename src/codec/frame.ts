/**
 * The 24-byte frame header of Blixard's wire protocol (docs/protocol.md) and
 * the encoders that write it.
 *
 * Owns: the header layout, its constants, and encoding into caller-supplied or
 * pooled buffers. Decoding lives in `decoder.ts`. Imports only `errors.ts`.
 *
 * Layout, all integers big-endian:
 *
 * | offset | size | field          |
 * |--------|------|----------------|
 * | 0      | 2    | magic `BX`     |
 * | 2      | 1    | version (1)    |
 * | 3      | 1    | type           |
 * | 4      | 1    | flags          |
 * | 5      | 1    | priority       |
 * | 6      | 2    | method         |
 * | 8      | 8    | request id     |
 * | 16     | 4    | payload length |
 * | 20     | 4    | deadline (ms)  |
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";

/** Size of every frame header in bytes. */
export const FRAME_HEADER_BYTES = 24;
/** The two magic bytes `0x42 0x58` ("BX") as one big-endian u16. */
export const FRAME_MAGIC = 0x4258;
/** The protocol version this node writes. */
export const PROTOCOL_VERSION = 1;
/** Every protocol version this node can read. */
export const SUPPORTED_VERSIONS: readonly number[] = Object.freeze([1]);

/** Frame types (header byte 3). */
export const FrameType = {
  Request: 1,
  Response: 2,
  Error: 3,
  StreamData: 4,
  StreamEnd: 5,
  Heartbeat: 6,
  Cancel: 7,
} as const;
/** One of the values of {@link FrameType}. */
export type FrameType = typeof FrameType[keyof typeof FrameType];

/** Priority classes (header byte 5); lower is more urgent. Each class gets its own stream. */
export const Priority = {
  Election: 0,
  Heartbeat: 1,
  LogAppend: 2,
  Snapshot: 3,
  Service: 4,
} as const;
/** One of the values of {@link Priority}. */
export type Priority = typeof Priority[keyof typeof Priority];

/** Flag bit 0: this frame is the last frame of its message. */
export const FLAG_LAST = 0x01;
/** Flag bits that must be zero in version 1. */
export const RESERVED_FLAGS_MASK = 0xfe;

/** Largest payload length the header can express (u32). */
export const MAX_PAYLOAD_LENGTH_FIELD = 0xffff_ffff;
/** Default largest payload a decoder accepts: 16 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Largest request id (u64). */
export const MAX_REQUEST_ID = 0xffff_ffff_ffff_ffffn;

const FRAME_TYPE_NAMES: readonly string[] = [
  "",
  "Request",
  "Response",
  "Error",
  "StreamData",
  "StreamEnd",
  "Heartbeat",
  "Cancel",
];
const PRIORITY_NAMES: readonly string[] = [
  "Election",
  "Heartbeat",
  "LogAppend",
  "Snapshot",
  "Service",
];

/** Human name of a frame type, for logs and errors ("Request", or "type 9"). */
export function frameTypeName(type: number): string {
  return FRAME_TYPE_NAMES[type] || `type ${type}`;
}

/** Human name of a priority class, for logs and errors ("Election", or "priority 7"). */
export function priorityName(priority: number): string {
  return PRIORITY_NAMES[priority] ?? `priority ${priority}`;
}

/** The fields of a frame header that a sender chooses. */
export interface FrameHeader {
  /** What the frame is (request, response, stream data, ...). */
  readonly type: FrameType;
  /** Flag bits; only {@link FLAG_LAST} is defined. */
  readonly flags: number;
  /** Which stream class carries it. */
  readonly priority: Priority;
  /** Service id in the high byte, method id in the low byte. */
  readonly method: number;
  /** Correlates responses, stream frames and cancels with their request (u64). */
  readonly requestId: bigint;
  /** Milliseconds the caller will wait; 0 means no deadline (u32). */
  readonly deadlineMs: number;
}

/** A decoded frame: its header and its payload. */
export interface Frame extends FrameHeader {
  /**
   * The payload bytes. May be a view into the buffer the decoder was given;
   * copy it if you keep it longer than that buffer. On a frame from
   * {@link FrameDecoder} it is an accessor that makes the view when first read,
   * so a spread copy (`{ ...frame }`) carries the header fields only.
   */
  readonly payload: Uint8Array;
}

/** Packs a service id and a method id into the header's method field. */
export function methodId(serviceId: number, methodIndex: number): number {
  if (
    !Number.isInteger(serviceId) || serviceId < 0 || serviceId > 0xff ||
    !Number.isInteger(methodIndex) || methodIndex < 0 || methodIndex > 0xff
  ) {
    throw new ProtocolError(
      "INVALID_ARGUMENT",
      `frame: service id ${serviceId} / method id ${methodIndex}: each must be an integer 0..255`,
      { field: "method" },
    );
  }
  return (serviceId << 8) | methodIndex;
}

function invalid(field: string, value: number | bigint, allowed: string): ProtocolError {
  return new ProtocolError(
    "INVALID_ARGUMENT",
    `frame: cannot encode ${field} ${value}: ${allowed}`,
    { field, value },
  );
}

/**
 * Writes a frame header for a payload of `payloadLength` bytes at
 * `target[offset..offset+24)`. Validates every field; never allocates.
 *
 * @example
 * ```ts
 * import { FLAG_LAST, FrameType, Priority, writeFrameHeader } from "@blixard/agent";
 * const buf = new Uint8Array(24);
 * writeFrameHeader(buf, 0, {
 *   type: FrameType.Request, flags: FLAG_LAST, priority: Priority.Service,
 *   method: 0x0101, requestId: 7n, deadlineMs: 500,
 * }, 0);
 * ```
 */
export function writeFrameHeader(
  target: Uint8Array,
  offset: number,
  header: FrameHeader,
  payloadLength: number,
): void {
  const { type, flags, priority, method, requestId, deadlineMs } = header;
  if (!((type | 0) === type && type >= 1 && type <= 7)) {
    throw invalid("type", type, "expected 1..7");
  }
  if ((flags & ~0xff) !== 0 || (flags & RESERVED_FLAGS_MASK) !== 0) {
    throw invalid("flags", flags, "only bit 0 (last) may be set");
  }
  if (!((priority | 0) === priority && priority >= 0 && priority <= 4)) {
    throw invalid("priority", priority, "expected 0..4");
  }
  if ((method & 0xffff) !== method) throw invalid("method", method, "expected 0..65535");
  if (requestId < 0n || requestId > MAX_REQUEST_ID) {
    throw invalid("request id", requestId, "expected 0..2^64-1");
  }
  if (
    !(payloadLength >= 0 && payloadLength <= MAX_PAYLOAD_LENGTH_FIELD) || payloadLength % 1 !== 0
  ) {
    throw invalid("payload length", payloadLength, "expected 0..4294967295");
  }
  if (!(deadlineMs >= 0 && deadlineMs <= 0xffff_ffff) || !Number.isInteger(deadlineMs)) {
    throw invalid("deadline", deadlineMs, "expected an integer 0..4294967295 ms");
  }
  if (offset < 0 || offset + FRAME_HEADER_BYTES > target.length) {
    throw invalid(
      "offset",
      offset,
      `need ${FRAME_HEADER_BYTES} bytes in a ${target.length}-byte buffer`,
    );
  }
  target[offset] = 0x42;
  target[offset + 1] = 0x58;
  target[offset + 2] = PROTOCOL_VERSION;
  target[offset + 3] = type;
  target[offset + 4] = flags;
  target[offset + 5] = priority;
  target[offset + 6] = method >>> 8;
  target[offset + 7] = method & 0xff;
  // Request ids below 2^32 are the common case; skip the BigInt shifts for them.
  let hi = 0;
  let lo: number;
  if (requestId <= 0xffff_ffffn) {
    lo = Number(requestId);
  } else {
    hi = Number(requestId >> 32n);
    lo = Number(requestId & 0xffff_ffffn);
  }
  writeU32(target, offset + 8, hi);
  writeU32(target, offset + 12, lo);
  writeU32(target, offset + 16, payloadLength);
  writeU32(target, offset + 20, deadlineMs);
}

function writeU32(target: Uint8Array, at: number, value: number): void {
  target[at] = value >>> 24;
  target[at + 1] = (value >>> 16) & 0xff;
  target[at + 2] = (value >>> 8) & 0xff;
  target[at + 3] = value & 0xff;
}

/**
 * Returns a new 24-byte header for a payload the caller sends separately.
 * This is the zero-copy path for large payloads such as snapshot chunks:
 * write the header, then the payload, and the payload is never copied.
 *
 * @example
 * ```ts
 * import { frameHeader, FLAG_LAST, FrameType, Priority } from "@blixard/agent";
 * const chunk = new Uint8Array(1 << 20);
 * const header = frameHeader({
 *   type: FrameType.StreamData, flags: FLAG_LAST, priority: Priority.Snapshot,
 *   method: 0x0601, requestId: 1n, deadlineMs: 0,
 * }, chunk.length);
 * // send(header); send(chunk);
 * ```
 */
export function frameHeader(header: FrameHeader, payloadLength: number): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES);
  writeFrameHeader(out, 0, header, payloadLength);
  return out;
}

/**
 * Encodes one frame (header and a copy of the payload) into a new buffer.
 * Convenient for tests and one-off messages; hot paths use {@link FrameWriter}.
 *
 * @example
 * ```ts
 * import { encodeFrame, FLAG_LAST, FrameType, Priority } from "@blixard/agent";
 * const bytes = encodeFrame({
 *   type: FrameType.Request, flags: FLAG_LAST, priority: Priority.Service,
 *   method: 0x0101, requestId: 1n, deadlineMs: 1000,
 * }, new TextEncoder().encode("hi"));
 * console.log(bytes.length); // 26
 * ```
 */
export function encodeFrame(header: FrameHeader, payload: Uint8Array = EMPTY): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  writeFrameHeader(out, 0, header, payload.length);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

const EMPTY = new Uint8Array(0);

/**
 * An append-only, reusable buffer of frames: the pooled encoding path.
 *
 * Frames queued in one turn of the event loop are appended here and written
 * to the stream as one chunk, then the writer is cleared and its memory
 * reused, so steady-state encoding allocates nothing per frame.
 *
 * @example
 * ```ts
 * import { FLAG_LAST, FrameType, FrameWriter, Priority } from "@blixard/agent";
 * const writer = new FrameWriter();
 * for (let i = 0n; i < 3n; i++) {
 *   writer.append({
 *     type: FrameType.Heartbeat, flags: FLAG_LAST, priority: Priority.Heartbeat,
 *     method: 0, requestId: i, deadlineMs: 0,
 *   });
 * }
 * const chunk = writer.bytes(); // 72 bytes, valid until the next append or clear
 * writer.clear();
 * ```
 */
export class FrameWriter {
  #buffer: Uint8Array;
  #length = 0;

  /** @param initialBytes starting capacity; the buffer doubles as needed. */
  constructor(initialBytes = 64 * 1024) {
    this.#buffer = new Uint8Array(Math.max(FRAME_HEADER_BYTES, initialBytes));
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#length;
  }

  /** The underlying buffer; valid for writes at offsets returned by {@link reserve}. */
  get buffer(): Uint8Array {
    return this.#buffer;
  }

  /** Appends one frame with a copy of `payload`. */
  append(header: FrameHeader, payload: Uint8Array = EMPTY): void {
    const at = this.reserve(FRAME_HEADER_BYTES + payload.length);
    writeFrameHeader(this.#buffer, at, header, payload.length);
    this.#buffer.set(payload, at + FRAME_HEADER_BYTES);
  }

  /**
   * Reserves `bytes` at the end and returns their offset in {@link buffer}.
   * The caller must fill them before the next call on this writer.
   */
  reserve(bytes: number): number {
    const at = this.#length;
    const end = at + bytes;
    if (end > this.#buffer.length) this.#grow(end);
    this.#length = end;
    return at;
  }

  /**
   * Gives back the last `bytes` reserved but not used (an encoder that
   * reserved an upper bound calls this with the difference).
   */
  unreserve(bytes: number): void {
    if (bytes < 0 || bytes > this.#length) {
      throw new ProtocolError("INVALID_ARGUMENT", `frame writer: cannot unreserve ${bytes} bytes`);
    }
    this.#length -= bytes;
  }

  /** A view of everything appended; valid until the next append, reserve or clear. */
  bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }

  /** Forgets the contents and keeps the memory. */
  clear(): void {
    this.#length = 0;
  }

  #grow(needed: number): void {
    let size = this.#buffer.length * 2;
    while (size < needed) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = next;
  }
}
