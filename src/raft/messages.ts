/**
 * The messages the Raft core speaks: the wire's {@link RaftMessage}s,
 * unchanged, plus one internal message that carries a whole snapshot.
 *
 * Owns: {@link SnapshotMessage}, {@link CoreMessage}, and the names the core
 * and its tests use for message kinds. Imports the Raft codec's types and
 * `storage.ts`'s {@link Snapshot}.
 *
 * A snapshot can be far larger than one frame, so it never crosses the wire
 * as one message: the driver compresses `snapshot.data` and moves it in
 * InstallSnapshot chunks (flow-controlled by InstallSnapshotResponse),
 * reassembles it on the follower, and steps the whole {@link SnapshotMessage}
 * into the follower's core. The core never emits nor accepts the chunk kinds
 * (InstallSnapshot, InstallSnapshotResponse). The follower's answer is an
 * ordinary AppendEntriesResponse.
 *
 * @module
 */

import { type RaftMessage, RaftMessageKind, raftMessageKindName } from "../codec/raft.ts";
import type { Snapshot } from "./storage.ts";

/** The `kind` of a {@link SnapshotMessage}: a string, so it can never be mistaken for a wire kind. */
export const SNAPSHOT_MESSAGE = "snapshot";

/** A leader sends a follower its whole snapshot (Raft §7); the driver chunks it. */
export interface SnapshotMessage {
  /** Always {@link SNAPSHOT_MESSAGE}. */
  readonly kind: typeof SNAPSHOT_MESSAGE;
  /** The leader. */
  readonly from: number;
  /** The follower. */
  readonly to: number;
  /** The leader's term. */
  readonly term: number;
  /** The snapshot, its metadata (index, term, membership) and the state machine's data. */
  readonly snapshot: Snapshot;
}

/** Everything the core emits from `ready()` and accepts in `step()`. */
export type CoreMessage = RaftMessage | SnapshotMessage;

/** Human name of a message's kind, for errors and logs ("Heartbeat", "snapshot"). */
export function coreMessageKindName(msg: CoreMessage): string {
  return msg.kind === SNAPSHOT_MESSAGE ? "snapshot" : raftMessageKindName(msg.kind);
}

/** Kinds the core never emits nor accepts: the driver's chunked snapshot transfer. */
export function isSnapshotChunkKind(kind: CoreMessage["kind"]): boolean {
  return kind === RaftMessageKind.InstallSnapshot ||
    kind === RaftMessageKind.InstallSnapshotResponse;
}
