/**
 * Unsigned LEB128 varints limited to JavaScript's safe integers, and a
 * bounds-checked byte reader. Internal to the codecs.
 *
 * Owns: the integer encoding of Raft messages. Imports `errors.ts`.
 *
 * Terms, indexes, node ids and offsets are plain numbers up to 2^53-1
 * (`Number.MAX_SAFE_INTEGER`): at a million log entries a second that is
 * 285 years of indexes, and numbers keep the hot path free of BigInt. A varint
 * is at most 8 bytes (56 bits); anything longer or above 2^53-1 is rejected.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";

/** Longest varint this codec writes or accepts. */
export const MAX_VARINT_BYTES = 8;

/** Writes `value` at `at`, returns the offset after it. The caller checked bounds. */
export function putUvarint(buf: Uint8Array, at: number, value: number, field: string): number {
  if (!(value >= 0 && value <= Number.MAX_SAFE_INTEGER) || value % 1 !== 0) {
    throw new ProtocolError(
      "INVALID_ARGUMENT",
      `raft: cannot encode ${field} ${value}: expected an integer 0..2^53-1`,
      { field, value },
    );
  }
  while (value > 0x7fff_ffff) {
    buf[at++] = (value % 128) | 0x80;
    value = Math.floor(value / 128);
  }
  while (value >= 0x80) {
    buf[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  buf[at++] = value;
  return at;
}

/** Bytes `putUvarint` needs for `value`. */
export function uvarintSize(value: number): number {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

const EMPTY = new Uint8Array(0);

const POW7: readonly number[] = Array.from({ length: MAX_VARINT_BYTES }, (_, i) => 2 ** (7 * i));

/** Reads fields from one message's bytes; every read is bounds-checked. */
export class ByteReader {
  bytes: Uint8Array = EMPTY;
  /** Where the message starts in {@link bytes}; error messages count from here. */
  start = 0;
  pos = 0;
  end = 0;
  readonly #what: string;

  /** @param what names the message kind in errors, e.g. `"raft"`. */
  constructor(what: string) {
    this.#what = what;
  }

  /**
   * Points the reader at the message in `bytes[start..end)` (all of `bytes` by
   * default). A range spares the caller a view of a larger buffer: on a
   * heartbeat, making that view costs as much as decoding it. Decoders keep one
   * reader and reset it per message: decoding is synchronous, so it is never shared.
   */
  reset(bytes: Uint8Array, start = 0, end = bytes.length): this {
    this.bytes = bytes;
    this.start = start;
    this.pos = start;
    this.end = end;
    return this;
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.end - this.pos;
  }

  uvarint(field: string): number {
    const bytes = this.bytes;
    let pos = this.pos;
    if (pos < this.end) {
      const first = bytes[pos]!;
      if (first < 0x80) {
        this.pos = pos + 1;
        return first;
      }
    }
    let result = 0;
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      if (pos >= this.end) throw this.truncated(field);
      const b = bytes[pos++]!;
      result += (b & 0x7f) * POW7[i]!;
      if (b < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) {
          throw this.outOfRange(field, result, "expected at most 2^53-1");
        }
        this.pos = pos;
        return result;
      }
    }
    throw this.outOfRange(field, result, `varint longer than ${MAX_VARINT_BYTES} bytes`);
  }

  u8(field: string): number {
    if (this.pos >= this.end) throw this.truncated(field);
    return this.bytes[this.pos++]!;
  }

  bool(field: string): boolean {
    const b = this.u8(field);
    if (b > 1) throw this.outOfRange(field, b, "expected 0 or 1");
    return b === 1;
  }

  /** A view of the next `length` bytes (no copy). */
  view(length: number, field: string): Uint8Array {
    if (length > this.end - this.pos) {
      throw new ProtocolError(
        "TRUNCATED",
        `${this.#what}: ${field} length ${length} exceeds the ${this.end - this.pos} bytes left`,
        { field, value: length },
      );
    }
    const out = this.bytes.subarray(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  /** Everything not read yet, as a view. */
  rest(): Uint8Array {
    const out = this.bytes.subarray(this.pos, this.end);
    this.pos = this.end;
    return out;
  }

  /** Throws if bytes are left over. */
  finish(): void {
    if (this.pos !== this.end) {
      throw new ProtocolError(
        "TRAILING_BYTES",
        `${this.#what}: ${this.end - this.pos} unexpected bytes after the last field`,
        { value: this.end - this.pos },
      );
    }
  }

  truncated(field: string): ProtocolError {
    return new ProtocolError(
      "TRUNCATED",
      `${this.#what}: message ends inside ${field} ` +
        `(at byte ${this.pos - this.start} of ${this.end - this.start})`,
      { field },
    );
  }

  outOfRange(field: string, value: number, allowed: string): ProtocolError {
    return new ProtocolError("VALUE_OUT_OF_RANGE", `${this.#what}: ${field} ${value}: ${allowed}`, {
      field,
      value,
    });
  }
}
