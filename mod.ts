/**
 * Blixard's wire protocol as a library: everything another program needs to
 * speak to a Blixard agent at the byte level.
 *
 * - Frames: the 24-byte header ({@link writeFrameHeader}, {@link encodeFrame},
 *   {@link frameHeader} for zero-copy payloads, {@link FrameWriter} for pooled,
 *   coalesced writes) and the incremental {@link FrameDecoder}.
 * - Raft messages: {@link encodeRaftFrame}, {@link appendRaftFrame},
 *   {@link raftFrameParts}, {@link encodeRaftMessage}, {@link decodeRaftMessage},
 *   {@link decodeRaftFrame}, and {@link raftMessagePriority}.
 * - Errors: {@link ProtocolError} with its {@link ProtocolErrorCode}s.
 *
 * The layout is documented in docs/protocol.md. Anything not exported here is
 * internal and may change.
 *
 * @example A heartbeat, framed and decoded
 * ```ts
 * import { decodeRaftFrame, encodeRaftFrame, FrameDecoder, RaftMessageKind } from "@blixard/agent";
 *
 * const buf = new Uint8Array(128);
 * const n = encodeRaftFrame(
 *   { kind: RaftMessageKind.Heartbeat, from: 1, to: 2, term: 3, commit: 10, readContext: 0 },
 *   buf,
 *   0,
 * );
 * const decoder = new FrameDecoder();
 * decoder.push(buf.subarray(0, n));
 * const msg = decodeRaftFrame(decoder.next()!);
 * console.log(msg.kind === RaftMessageKind.Heartbeat); // true
 * ```
 *
 * @module
 */

export { ProtocolError } from "./src/codec/errors.ts";
export type { ProtocolErrorCode, ProtocolErrorDetails } from "./src/codec/errors.ts";
export {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FLAG_LAST,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  frameHeader,
  FrameType,
  frameTypeName,
  FrameWriter,
  MAX_PAYLOAD_LENGTH_FIELD,
  MAX_REQUEST_ID,
  methodId,
  Priority,
  priorityName,
  PROTOCOL_VERSION,
  RESERVED_FLAGS_MASK,
  SUPPORTED_VERSIONS,
  writeFrameHeader,
} from "./src/codec/frame.ts";
export type { Frame, FrameHeader } from "./src/codec/frame.ts";
export { FrameDecoder } from "./src/codec/decoder.ts";
export type { FrameDecoderOptions } from "./src/codec/decoder.ts";
export {
  appendRaftFrame,
  decodeRaftFrame,
  decodeRaftMessage,
  encodeRaftFrame,
  encodeRaftMessage,
  EntryKind,
  RAFT_SERVICE_ID,
  raftFrameParts,
  RaftMessageKind,
  raftMessageKindName,
  raftMessageMaxBytes,
  raftMessagePriority,
} from "./src/codec/raft.ts";
export type {
  AppendEntriesRequest,
  AppendEntriesResponse,
  Entry,
  Heartbeat,
  HeartbeatResponse,
  InstallSnapshot,
  InstallSnapshotResponse,
  PreVoteRequest,
  PreVoteResponse,
  RaftFrameOptions,
  RaftMessage,
  ReadIndexRequest,
  ReadIndexResponse,
  TimeoutNow,
  VoteRequest,
  VoteResponse,
} from "./src/codec/raft.ts";
