/**
 * The error type of the gRPC transport's setup (listeners, channels, TLS
 * files), and the translation between grpc-js status objects and
 * {@link RpcError}.
 *
 * Owns: {@link GrpcTransportError}, {@link GrpcTransportErrorCode},
 * {@link statusOf}, {@link fromServiceError}. Imports `rpc/errors.ts` only.
 *
 * Failures of calls are {@link RpcError}s with gRPC's own status codes, which
 * are the numbers of {@link Code}: no table is needed, only a check that a
 * number is a code.
 *
 * @module
 */

import { Code, codeName, RpcError, toRpcError } from "../../rpc/errors.ts";

/** Machine-readable reason of a {@link GrpcTransportError}. */
export type GrpcTransportErrorCode =
  /** The address is not `host:port`, or a TLS option is incomplete. */
  | "INVALID_ARGUMENT"
  /** A plaintext listener or channel on a non-loopback address without `allowInsecure`. */
  | "INSECURE"
  /** A PEM file named in the TLS options cannot be read. */
  | "TLS_FILE"
  /** The listener could not bind its address. */
  | "BIND_FAILED"
  /** `start()` after `start()` or after `shutdown()`. */
  | "BAD_STATE";

/**
 * A failure to set up the gRPC transport: the kind an operator fixes in the
 * config file, so its message names the key and the value.
 *
 * @example
 * ```ts ignore
 * try {
 *   await server.start();
 * } catch (e) {
 *   if (e instanceof GrpcTransportError && e.code === "INSECURE") console.error(e.message);
 *   throw e;
 * }
 * ```
 */
export class GrpcTransportError extends Error {
  override readonly name = "GrpcTransportError";
  readonly code: GrpcTransportErrorCode;

  constructor(code: GrpcTransportErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/** What a grpc-js handler passes to its callback (or emits) to fail a call. */
export interface GrpcStatus {
  code: number;
  details: string;
}

/** The gRPC status a failed handler answers with: its RpcError's code, else INTERNAL. */
export function statusOf(error: unknown): GrpcStatus {
  const e = toRpcError(error);
  return { code: e.code, details: e.message };
}

/**
 * grpc-js's text for a stream that died of a socket error: by errno name, or
 * by Node's message for a write to a socket the peer ended (EPIPE, which Deno
 * reports without its name).
 */
const CONNECTION_ERROR =
  /triggered by internal client error: .*(\b(EPIPE|ECONNRESET|ECONNABORTED|ENOTCONN|ETIMEDOUT)\b|socket has been ended by the other party)/;

/** What grpc-js rejects a client call with (`ServiceError`), loosely. */
interface ServiceErrorLike {
  code?: unknown;
  details?: unknown;
  message?: unknown;
}

/**
 * A grpc-js client error as an {@link RpcError} with the same code and the
 * server's message. Failures grpc-js makes up locally (deadline, lost
 * connection, cancel) get the method's `label` and the `peer` in front, so
 * the caller sees which call to whom; a message that already names the
 * method (the server's own) is kept as it is.
 */
export function fromServiceError(error: unknown, label: string, peer: string): RpcError {
  const e = (error ?? {}) as ServiceErrorLike;
  const raw = typeof e.code === "number" ? e.code : Code.UNKNOWN;
  let code = raw > 0 && raw <= Code.UNAUTHENTICATED ? raw as Code : Code.UNKNOWN;
  const details = typeof e.details === "string"
    ? e.details.replace(/\s*Resolution note:\s*$/, "")
    : typeof e.message === "string"
    ? e.message
    : String(error);
  // grpc-js reports ECONNRESET as UNAVAILABLE but a write to a connection
  // the peer has closed (EPIPE and kin) as INTERNAL; both are the transport.
  if (code === Code.INTERNAL && CONNECTION_ERROR.test(details)) code = Code.UNAVAILABLE;
  const local = code === Code.UNAVAILABLE || code === Code.DEADLINE_EXCEEDED ||
    code === Code.CANCELLED;
  const message = local && !details.startsWith(label)
    ? `${label}: ${peer}: ${details || codeName(code)}`
    : details;
  return new RpcError(code, message, { cause: error });
}
