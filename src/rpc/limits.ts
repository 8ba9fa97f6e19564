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
  /**
   * Bytes a node holds for one connection's outbound side: answers queued
   * for a peer that does not read them (Iroh: frames queued on the
   * connection's streams; gRPC: the socket's unsent bytes plus answers
   * handed to HTTP/2 and not yet sent). Past half of it the node stops
   * reading that connection's requests (gRPC also refuses its new calls with
   * RESOURCE_EXHAUSTED) until the peer reads; past all of it the node closes
   * the connection. `max_inflight_requests` does not cover this: a peer that
   * never reads can have one call in flight at a time and still make the
   * node hold every answer.
   *
   * Default 32 MiB: twice the default `maxFrameBytes`, so one answer of the
   * largest size still fits after reading stopped. Keep it at least twice
   * `maxFrameBytes`, or a single large answer closes the connection.
   */
  readonly maxConnectionBufferBytes: number;
}

/** Safe defaults. */
export const DEFAULT_RPC_LIMITS: RpcLimits = Object.freeze({
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  maxInflightRequests: 1024,
  maxConcurrentStreams: 16,
  defaultDeadlineMs: 30_000,
  maxDeadlineMs: 300_000,
  maxConnectionBufferBytes: 2 * DEFAULT_MAX_FRAME_BYTES,
});
