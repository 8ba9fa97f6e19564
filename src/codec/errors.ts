/**
 * The one error type of the wire codecs (frames and Raft messages).
 *
 * Owns: {@link ProtocolError} and its codes. Imports nothing.
 *
 * Every malformed input the codecs can see becomes a `ProtocolError` whose
 * `code` callers match on and whose message names the field, the value found
 * and what is allowed. Transports turn it into an Error frame or a closed
 * connection; they never have to parse message text.
 *
 * @module
 */

/** Machine-readable reason of a {@link ProtocolError}. */
export type ProtocolErrorCode =
  /** The first two bytes of a frame were not `0x42 0x58` ("BX"). */
  | "BAD_MAGIC"
  /** The frame's version byte is not one this node speaks. */
  | "UNSUPPORTED_VERSION"
  /** The frame's type byte is not one of the seven frame types. */
  | "UNKNOWN_FRAME_TYPE"
  /** A reserved flag bit (bits 1 to 7) was set. */
  | "RESERVED_FLAGS"
  /** The priority byte is not one of the five priority classes. */
  | "UNKNOWN_PRIORITY"
  /** The payload length exceeds the configured maximum. */
  | "FRAME_TOO_LARGE"
  /** The stream (or a message) ended in the middle of a frame or field. */
  | "TRUNCATED"
  /** A Raft message's kind byte is unknown. */
  | "UNKNOWN_MESSAGE_KIND"
  /** A field's value is outside what the codec allows (too big, bad enum, bad length). */
  | "VALUE_OUT_OF_RANGE"
  /** Bytes were left over after a complete message. */
  | "TRAILING_BYTES"
  /** The caller passed something the encoder cannot represent. */
  | "INVALID_ARGUMENT";

/** Extra facts about a {@link ProtocolError}, for logs and tests. */
export interface ProtocolErrorDetails {
  /** Name of the field that was wrong, e.g. `"payload length"`. */
  readonly field?: string;
  /** The value that was found. */
  readonly value?: number | bigint | string;
  /** Versions this node speaks; set on `UNSUPPORTED_VERSION`. */
  readonly supportedVersions?: readonly number[];
}

/**
 * A malformed frame or message. Once a stream's decoder raises one, the stream
 * cannot be trusted to resynchronise and should be closed.
 *
 * @example Matching on the code
 * ```ts
 * import { FrameDecoder, ProtocolError } from "@blixard/agent";
 *
 * const decoder = new FrameDecoder();
 * decoder.push(new Uint8Array(24)); // 24 zero bytes: bad magic
 * try {
 *   decoder.next();
 * } catch (e) {
 *   if (e instanceof ProtocolError && e.code === "BAD_MAGIC") {
 *     console.log(e.message); // frame: magic 0x0000: expected 0x4258 ("BX")
 *   }
 * }
 * ```
 */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  readonly code: ProtocolErrorCode;
  readonly field: string | undefined;
  readonly value: number | bigint | string | undefined;
  readonly supportedVersions: readonly number[] | undefined;

  constructor(code: ProtocolErrorCode, message: string, details: ProtocolErrorDetails = {}) {
    super(message);
    this.code = code;
    this.field = details.field;
    this.value = details.value;
    this.supportedVersions = details.supportedVersions;
  }
}
