/**
 * Where both transports hand over the Raft messages peers send: the one seam
 * between the transports and consensus on the receiving side.
 *
 * Owns: {@link RaftIngress}, {@link RaftOffer}. Imports the Raft codec's
 * types and this folder's errors and services' types.
 *
 * The transports only decode and report; the ingress decides. It checks that
 * the sender may send Raft at all (a configured or member peer, not an
 * operator) and that every message's `from` is the node the transport
 * authenticated, and it queues what it accepts in a bounded inbox. It never
 * blocks and never throws: a transport's read loop must not wait on
 * consensus.
 *
 * @module
 */

import type { RaftMessage } from "../codec/raft.ts";
import type { RpcError } from "./errors.ts";
import type { PeerInfo } from "./services.ts";

/** What became of one delivery. */
export interface RaftOffer {
  /** How many of the messages, from the first, were queued; the rest were dropped (inbox full). */
  readonly accepted: number;
  /**
   * Set when the sender may not send these messages (PERMISSION_DENIED):
   * then nothing was queued. The transport answers with it; the ingress has
   * already counted and logged it.
   */
  readonly denied?: RpcError;
}

/** Receives the Raft messages of one delivery (an Iroh frame, a gRPC envelope). */
export interface RaftIngress {
  /** Offers `messages`, all from `peer`, in order. Never blocks, never throws. */
  offer(messages: readonly RaftMessage[], peer: PeerInfo): RaftOffer;
}
