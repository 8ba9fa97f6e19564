/**
 * The error type of the Iroh transport layer and its close codes.
 *
 * Owns: {@link IrohError}, {@link IrohErrorCode}, {@link CloseCode}, and the
 * mapping from the binding's error text to a code. Imports only `binding.ts`.
 *
 * The binding reports every failure as a plain `Error` whose message is Rust
 * `Debug` text (`ConnectionLost(ApplicationClosed(…))`, `Reset(5)`). This
 * module is the only place that reads that text, so callers match on `code`.
 *
 * @module
 */

import { bindingErrorText } from "./binding.ts";

/** Machine-readable reason of an {@link IrohError}. */
export type IrohErrorCode =
  /** A caller-supplied value is unusable (bad ticket, id, address, key, ALPN). */
  | "INVALID_ARGUMENT"
  /** The endpoint could not bind its sockets. */
  | "BIND_FAILED"
  /** The handshake failed: refused, unknown ALPN, unreachable, or timed out inside QUIC. */
  | "CONNECT_FAILED"
  /** A deadline this layer enforces (`timeoutMs`) passed first. */
  | "TIMEOUT"
  /** The remote endpoint id is not on the allowlist (server), or the server said so (client). */
  | "NOT_ALLOWED"
  /** The connection is closed: by the peer, locally, by an endpoint close, or idle timeout. */
  | "CONNECTION_CLOSED"
  /** The endpoint is closed; nothing more can be dialled or accepted. */
  | "ENDPOINT_CLOSED"
  /** The peer reset the stream we read from (`closeCode` holds its code). */
  | "STREAM_RESET"
  /** The peer stopped the stream we write to (`closeCode` holds its code). */
  | "STREAM_STOPPED"
  /** The stream ended before the requested number of bytes arrived. */
  | "STREAM_FINISHED_EARLY"
  /** `readToEnd` saw more bytes than its limit. */
  | "TOO_LONG"
  /** Any other failure of the binding; the message keeps its text. */
  | "BINDING_ERROR";

/**
 * Application close codes this layer sends on a QUIC connection.
 * `NotAllowed` tells a client that the server refused its endpoint id.
 */
export const CloseCode = {
  /** Ordinary close; also what `Endpoint.close()` sends to every peer. */
  Normal: 0,
  /** The server's allowlist does not contain the client's endpoint id. */
  NotAllowed: 403,
} as const;

/** Extra facts about an {@link IrohError}. */
export interface IrohErrorDetails {
  /** The peer's endpoint id, when known. */
  readonly remoteId?: string;
  /** The application code of a connection close, stream reset or stop. */
  readonly closeCode?: number;
  /** The original error from the binding. */
  readonly cause?: unknown;
}

/**
 * A failure of the Iroh transport layer.
 *
 * @example Matching on the code
 * ```ts ignore
 * try {
 *   await stream.read();
 * } catch (e) {
 *   if (e instanceof IrohError && e.code === "CONNECTION_CLOSED") reconnect();
 *   else throw e;
 * }
 * ```
 */
export class IrohError extends Error {
  override readonly name = "IrohError";
  readonly code: IrohErrorCode;
  readonly remoteId: string | undefined;
  readonly closeCode: number | undefined;

  constructor(code: IrohErrorCode, message: string, details: IrohErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.remoteId = details.remoteId;
    this.closeCode = details.closeCode;
  }
}

/** What a connection's close reason string says, parsed. */
export interface CloseInfo {
  /** True when the peer closed it; false for a local close, an endpoint close or a timeout. */
  readonly byPeer: boolean;
  /** The application close code, when the close carried one. */
  readonly code: number | undefined;
  /** The close reason text the peer sent, or the binding's description. */
  readonly reason: string;
}

/**
 * Parses the binding's `Connection.closeReason()` / `closed()` text:
 * `"closed by peer: endpoint not allowed (code 403)"`, `"closed by peer: 0"`,
 * `"closed"` (local), `"timed out"`.
 */
export function parseCloseReason(text: string): CloseInfo {
  const peer = /^closed by peer: (.*)$/s.exec(text);
  if (peer === null) return { byPeer: false, code: undefined, reason: text };
  const body = peer[1]!;
  const withReason = /^(.*) \(code (\d+)\)$/s.exec(body);
  if (withReason !== null) {
    return { byPeer: true, code: Number(withReason[2]), reason: withReason[1]! };
  }
  if (/^\d+$/.test(body)) return { byPeer: true, code: Number(body), reason: "" };
  return { byPeer: true, code: undefined, reason: body };
}

/** Context for {@link toIrohError}. */
export interface ErrorContext {
  /** What was being done, for the message: `"read"`, `"connect to 3f2a…"`. */
  readonly operation: string;
  /** The peer's endpoint id, when known. */
  readonly remoteId?: string;
  /** The connection's current close reason (`Connection.closeReason()`), if any. */
  readonly closeReason?: string | null;
}

/**
 * Turns whatever the binding threw into an {@link IrohError} with a code.
 * An `IrohError` passes through unchanged.
 */
export function toIrohError(error: unknown, context: ErrorContext): IrohError {
  if (error instanceof IrohError) return error;
  const text = bindingErrorText(error);
  const details = { remoteId: context.remoteId, cause: error };
  const who = context.remoteId === undefined ? "" : ` (endpoint ${short(context.remoteId)})`;

  const streamCode = /^(Reset|Stopped)\((\d+)\)$/.exec(text);
  if (streamCode !== null) {
    const code = Number(streamCode[2]);
    return streamCode[1] === "Reset"
      ? new IrohError(
        "STREAM_RESET",
        `${context.operation}: stream reset by peer with code ${code}${who}`,
        { ...details, closeCode: code },
      )
      : new IrohError(
        "STREAM_STOPPED",
        `${context.operation}: stream stopped by peer with code ${code}${who}`,
        { ...details, closeCode: code },
      );
  }
  if (/^FinishedEarly\(\d+\)$/.test(text)) {
    const got = /\d+/.exec(text)![0];
    return new IrohError(
      "STREAM_FINISHED_EARLY",
      `${context.operation}: stream finished after ${got} bytes${who}`,
      details,
    );
  }
  if (text === "TooLong") {
    return new IrohError(
      "TOO_LONG",
      `${context.operation}: stream exceeds the limit${who}`,
      details,
    );
  }
  if (/Endpoint is closed/.test(text)) {
    return new IrohError(
      "ENDPOINT_CLOSED",
      `${context.operation}: the endpoint is closed`,
      details,
    );
  }

  const closeText = context.closeReason ??
    (/ConnectionLost|LocallyClosed|ApplicationClosed|TimedOut|ConnectionClosed/.test(text)
      ? text
      : null);
  if (closeText !== null) {
    const info = context.closeReason == null
      ? closeInfoFromDebug(text)
      : parseCloseReason(closeText);
    if (info.byPeer && info.code === CloseCode.NotAllowed) {
      return new IrohError(
        "NOT_ALLOWED",
        `${context.operation}: the peer refused this endpoint: ${info.reason}${who}`,
        { ...details, closeCode: info.code },
      );
    }
    const how = info.byPeer
      ? `closed by peer with code ${info.code ?? "?"}${
        info.reason === "" ? "" : `: ${info.reason}`
      }`
      : `connection ${info.reason}`;
    return new IrohError("CONNECTION_CLOSED", `${context.operation}: ${how}${who}`, {
      ...details,
      closeCode: info.code,
    });
  }
  if (/^ConnectError|^ConnectingError|handshake|refused/i.test(text)) {
    return new IrohError("CONNECT_FAILED", `${context.operation}: ${text}${who}`, details);
  }
  return new IrohError("BINDING_ERROR", `${context.operation}: ${text}${who}`, details);
}

/** `ConnectionLost(ApplicationClosed(ApplicationClose { error_code: 403, reason: b"…" }))`. */
function closeInfoFromDebug(text: string): CloseInfo {
  const app = /ApplicationClose \{ error_code: (\d+), reason: b"(.*)" \}/s.exec(text);
  if (app !== null) return { byPeer: true, code: Number(app[1]), reason: app[2]! };
  if (/LocallyClosed/.test(text)) return { byPeer: false, code: undefined, reason: "closed" };
  if (/TimedOut/.test(text)) return { byPeer: false, code: undefined, reason: "timed out" };
  return { byPeer: false, code: undefined, reason: text };
}

/** The first 10 characters of an endpoint id, as the binding's `fmtShort` prints it. */
export function short(endpointId: string): string {
  return endpointId.length > 10 ? `${endpointId.slice(0, 10)}…` : endpointId;
}
