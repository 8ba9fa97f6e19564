/**
 * The limits every transport enforces on what a peer controls (docs/configuration.md,
 * `[limits]`), with their safe defaults. The config's `[limits]` section
 * fills them in.
 *
 * Owns: {@link RpcLimits}, {@link DEFAULT_RPC_LIMITS}. Imports the codec's default.
 *
 * @module
 */

import { DEFAULT_MAX_FRAME_BYTES } from "../codec/frame.ts";

/** Per-connection limits of an RPC server and client. */
export interface RpcLimits {
  /** Largest frame payload accepted, in bytes. */
  readonly maxFrameBytes: number;
  /** Calls a connection may have running at once; more are refused with RESOURCE_EXHAUSTED. */
  readonly maxInflightRequests: number;
  /** Streams a connection may open; more are refused. Five priority classes need five. */
  readonly maxConcurrentStreams: number;
  /** Deadline of a call whose caller gave none, in ms. */
  readonly defaultDeadlineMs: number;
  /** Longest deadline honoured, in ms; longer ones are cut to it. */
  readonly maxDeadlineMs: number;
}

/** Safe defaults. */
export const DEFAULT_RPC_LIMITS: RpcLimits = Object.freeze({
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  maxInflightRequests: 1024,
  maxConcurrentStreams: 16,
  defaultDeadlineMs: 30_000,
  maxDeadlineMs: 300_000,
});
