/**
 * Call failures as both transports report them.
 *
 * Owns: {@link RpcError}, {@link Code}, and the Error frame payload codec.
 * Imports the generated `RpcStatus` message only.
 *
 * Codes are gRPC's status codes, so a handler throws one error and the gRPC
 * adapter and the Iroh adapter report the same failure the same way. Whether
 * a failure was the transport's (safe to retry elsewhere) or the
 * application's (never retried) is {@link isTransportFailure}.
 *
 * @module
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { RpcStatusSchema } from "./gen/blixard/v1/common_pb.ts";

/** gRPC status codes. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
/** One of the values of {@link Code}. */
export type Code = typeof Code[keyof typeof Code];

const CODE_NAMES = Object.fromEntries(Object.entries(Code).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

/** The name of a status code ("DEADLINE_EXCEEDED", or "code 99"). */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `code ${code}`;
}

/**
 * A failed call. Handlers throw it to choose the status; anything else a
 * handler throws becomes `INTERNAL` with the error's message.
 *
 * @example
 * ```ts
 * import { Code, RpcError } from "./errors.ts";
 * function getVm(name: string): never {
 *   throw new RpcError(Code.NOT_FOUND, `vm "${name}" does not exist`);
 * }
 * ```
 */
export class RpcError extends Error {
  override readonly name = "RpcError";
  readonly code: Code;
  /** Set on a protocol version mismatch: the versions the remote side speaks. */
  readonly supportedVersions: readonly number[];

  constructor(
    code: Code,
    message: string,
    options: { supportedVersions?: readonly number[]; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.supportedVersions = options.supportedVersions ?? [];
  }

  /** `"DEADLINE_EXCEEDED: call to health.Ping timed out after 50 ms"`. */
  override toString(): string {
    return `${codeName(this.code)}: ${this.message}`;
  }
}

/** Whatever a handler threw, as an RpcError (unknown errors become INTERNAL). */
export function toRpcError(error: unknown): RpcError {
  if (error instanceof RpcError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new RpcError(Code.INTERNAL, message, { cause: error });
}

/**
 * True when the call failed because of the transport (the peer could not be
 * reached, the connection dropped), not because the service said no: such a
 * call may be retried over another transport. Application errors never are.
 */
export function isTransportFailure(error: unknown): boolean {
  return error instanceof RpcError && error.code === Code.UNAVAILABLE;
}

/** Encodes an error as the payload of an Error frame. */
export function encodeStatus(error: RpcError): Uint8Array {
  return toBinary(
    RpcStatusSchema,
    create(RpcStatusSchema, {
      code: error.code,
      message: error.message,
      supportedVersions: [...error.supportedVersions],
    }),
  );
}

/** Decodes an Error frame's payload; a malformed one becomes an INTERNAL error saying so. */
export function decodeStatus(payload: Uint8Array, context: string): RpcError {
  try {
    const status = fromBinary(RpcStatusSchema, payload);
    const code = status.code in CODE_NAMES && status.code !== 0
      ? status.code as Code
      : Code.UNKNOWN;
    return new RpcError(code, status.message, { supportedVersions: status.supportedVersions });
  } catch (e) {
    return new RpcError(
      Code.INTERNAL,
      `${context}: malformed error payload: ${(e as Error).message}`,
    );
  }
}
