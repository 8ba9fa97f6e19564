/**
 * The compact binary codec of Raft's consensus messages, carried unchanged by
 * both transports (as a frame payload on Iroh, as a bytes field on gRPC).
 *
 * Owns: the Raft message types, their byte layout and their priority classes.
 * Imports `frame.ts`, `varint.ts`, `errors.ts` and `src/names.ts`; nothing of
 * the transports.
 *
 * Payload layout: `kind` (u8), then `from`, `to`, `term` as varints, then the
 * kind's own fields in the order of its interface below. Integers are unsigned
 * LEB128 varints (at most 8 bytes, values up to 2^53-1), booleans one byte
 * (0 or 1), byte strings a varint length then the bytes, except the snapshot
 * chunk's data, which runs to the end of the payload so a 1 MiB chunk can be
 * framed without a copy ({@link raftFrameParts}). docs/protocol.md has every
 * layout.
 *
 * Decoded byte fields (entry data, snapshot data) are views of the input;
 * copy them to keep them longer than the input buffer.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";
import {
  FLAG_LAST,
  type Frame,
  FRAME_HEADER_BYTES,
  FrameType,
  type FrameWriter,
  Priority,
  PROTOCOL_VERSION,
  writeFrameHeader,
} from "./frame.ts";
import { ByteReader, MAX_VARINT_BYTES, putUvarint } from "./varint.ts";
import { ReceivedFrame } from "./decoder.ts";
import { RAFT_SERVICE_ID } from "../names.ts";

/** Service id of Raft in the frame header's method field (high byte). */
export { RAFT_SERVICE_ID };

/** Raft message kinds; the payload's first byte and the method id's low byte. */
export const RaftMessageKind = {
  PreVoteRequest: 1,
  PreVoteResponse: 2,
  VoteRequest: 3,
  VoteResponse: 4,
  AppendEntriesRequest: 5,
  AppendEntriesResponse: 6,
  Heartbeat: 7,
  HeartbeatResponse: 8,
  InstallSnapshot: 9,
  InstallSnapshotResponse: 10,
  TimeoutNow: 11,
  ReadIndexRequest: 12,
  ReadIndexResponse: 13,
} as const;
/** One of the values of {@link RaftMessageKind}. */
export type RaftMessageKind = typeof RaftMessageKind[keyof typeof RaftMessageKind];
type K = typeof RaftMessageKind;

const KIND_NAMES: readonly string[] = [
  "",
  ...Object.keys(RaftMessageKind),
];

/** Human name of a Raft message kind ("Heartbeat", or "kind 99"). */
export function raftMessageKindName(kind: number): string {
  return KIND_NAMES[kind] || `kind ${kind}`;
}

/**
 * The priority class of each kind: the one place transports look it up so a
 * vote is never queued behind a snapshot.
 */
const PRIORITY_BY_KIND: readonly Priority[] = [
  Priority.Service, // unused 0
  Priority.Election, // PreVoteRequest
  Priority.Election, // PreVoteResponse
  Priority.Election, // VoteRequest
  Priority.Election, // VoteResponse
  Priority.LogAppend, // AppendEntriesRequest
  Priority.LogAppend, // AppendEntriesResponse
  Priority.Heartbeat, // Heartbeat
  Priority.Heartbeat, // HeartbeatResponse
  Priority.Snapshot, // InstallSnapshot
  Priority.Snapshot, // InstallSnapshotResponse
  Priority.Election, // TimeoutNow: starts an election at once
  Priority.Heartbeat, // ReadIndexRequest: small and latency-bound, like heartbeats
  Priority.Heartbeat, // ReadIndexResponse
];

/** The priority class a message of `kind` travels in. */
export function raftMessagePriority(kind: RaftMessageKind): Priority {
  const priority = PRIORITY_BY_KIND[kind];
  if (priority === undefined || (kind as number) === 0) {
    throw new ProtocolError("INVALID_ARGUMENT", `raft: unknown message kind ${kind}`, {
      field: "kind",
      value: kind,
    });
  }
  return priority;
}

/** Fields every Raft message has. Node ids, terms and indexes are integers 0..2^53-1. */
interface Envelope<Kind extends RaftMessageKind> {
  readonly kind: Kind;
  /** Sender's node id. */
  readonly from: number;
  /** Recipient's node id. */
  readonly to: number;
  /** Sender's current term (for PreVoteRequest: the term it would campaign in). */
  readonly term: number;
}

/** Shared fields of PreVote and Vote requests (Raft §5.2, §5.4.1; thesis §9.6). */
interface CampaignFields {
  /** Index of the candidate's last log entry. */
  readonly lastLogIndex: number;
  /** Term of the candidate's last log entry. */
  readonly lastLogTerm: number;
  /** Set when campaigning after TimeoutNow: voters skip their leader-lease check. */
  readonly transfer: boolean;
}

/** Asks whether peers would vote, without disrupting the current term. */
export interface PreVoteRequest extends Envelope<K["PreVoteRequest"]>, CampaignFields {}
/** Asks for a vote in `term`. */
export interface VoteRequest extends Envelope<K["VoteRequest"]>, CampaignFields {}
/** Answer to a PreVoteRequest. */
export interface PreVoteResponse extends Envelope<K["PreVoteResponse"]> {
  readonly granted: boolean;
}
/** Answer to a VoteRequest. */
export interface VoteResponse extends Envelope<K["VoteResponse"]> {
  readonly granted: boolean;
}

/** Kinds of log entries. */
export const EntryKind = {
  /** An application command (empty data: the leader's no-op of a new term). */
  Normal: 0,
  /** A membership change. */
  ConfigChange: 1,
} as const;
/** One of the values of {@link EntryKind}. */
export type EntryKind = typeof EntryKind[keyof typeof EntryKind];

/** One log entry. */
export interface Entry {
  readonly index: number;
  readonly term: number;
  readonly kind: EntryKind;
  readonly data: Uint8Array;
}

/** Replicates entries (Raft §5.3). */
export interface AppendEntriesRequest extends Envelope<K["AppendEntriesRequest"]> {
  /** Index of the entry just before `entries`. */
  readonly prevLogIndex: number;
  /** Term of that entry. */
  readonly prevLogTerm: number;
  /** Leader's commit index. */
  readonly leaderCommit: number;
  /** May be empty (a probe). */
  readonly entries: readonly Entry[];
}

/** Answer to AppendEntries, with a hint for fast backtracking (Raft §5.3, last paragraph). */
export interface AppendEntriesResponse extends Envelope<K["AppendEntriesResponse"]> {
  readonly success: boolean;
  /**
   * On success: the follower's last index now matching the leader (the last
   * index the request covered). On rejection: the rejected request's
   * `prevLogIndex`, so the leader can ignore a stale rejection.
   */
  readonly matchIndex: number;
  /** On rejection: the index the leader should retry from (first index of `hintTerm`, or log end). */
  readonly hintIndex: number;
  /** On rejection: the follower's term at `hintIndex` (0 when its log is shorter). */
  readonly hintTerm: number;
}

/** Leader's heartbeat; also confirms leadership for ReadIndex rounds. */
export interface Heartbeat extends Envelope<K["Heartbeat"]> {
  /** min(follower's match index, leader commit): never ahead of the follower's log. */
  readonly commit: number;
  /** ReadIndex round this heartbeat confirms; 0 for none. */
  readonly readContext: number;
}

/** Answer to a Heartbeat. */
export interface HeartbeatResponse extends Envelope<K["HeartbeatResponse"]> {
  readonly readContext: number;
}

/** One chunk of a snapshot (Raft §7). */
export interface InstallSnapshot extends Envelope<K["InstallSnapshot"]> {
  /** Last log index the snapshot covers. */
  readonly snapshotIndex: number;
  /** Term of that index. */
  readonly snapshotTerm: number;
  /** Byte offset of `data` within the snapshot. */
  readonly offset: number;
  /** Set on the last chunk. */
  readonly done: boolean;
  readonly data: Uint8Array;
}

/** Answer to a snapshot chunk. */
export interface InstallSnapshotResponse extends Envelope<K["InstallSnapshotResponse"]> {
  readonly snapshotIndex: number;
  /** Bytes of the snapshot the follower holds: the offset of the next chunk it expects. */
  readonly offset: number;
  /** Set when the follower refuses the snapshot (stale, or a chunk out of order). */
  readonly reject: boolean;
}

/** Tells the target to campaign at once (leadership transfer, thesis §3.10). */
export type TimeoutNow = Envelope<K["TimeoutNow"]>;

/** A follower asks the leader for a read index (thesis §6.4). */
export interface ReadIndexRequest extends Envelope<K["ReadIndexRequest"]> {
  /** Caller-chosen id that correlates the response. */
  readonly readContext: number;
}

/** The leader's answer: reads at or after `readIndex` are linearizable. */
export interface ReadIndexResponse extends Envelope<K["ReadIndexResponse"]> {
  readonly readContext: number;
  readonly readIndex: number;
  /** False when the node is not (or no longer) the leader. */
  readonly ok: boolean;
}

/** Any Raft message; `kind` tells which. */
export type RaftMessage =
  | PreVoteRequest
  | PreVoteResponse
  | VoteRequest
  | VoteResponse
  | AppendEntriesRequest
  | AppendEntriesResponse
  | Heartbeat
  | HeartbeatResponse
  | InstallSnapshot
  | InstallSnapshotResponse
  | TimeoutNow
  | ReadIndexRequest
  | ReadIndexResponse;

const V = MAX_VARINT_BYTES;
const ENVELOPE_MAX = 1 + 3 * V;

/**
 * An upper bound on the payload bytes of `msg`: what a caller-supplied buffer
 * needs beyond the 24-byte header.
 */
export function raftMessageMaxBytes(msg: RaftMessage): number {
  switch (msg.kind) {
    case RaftMessageKind.PreVoteRequest:
    case RaftMessageKind.VoteRequest:
      return ENVELOPE_MAX + 2 * V + 1;
    case RaftMessageKind.PreVoteResponse:
    case RaftMessageKind.VoteResponse:
      return ENVELOPE_MAX + 1;
    case RaftMessageKind.AppendEntriesRequest: {
      let size = ENVELOPE_MAX + 4 * V;
      const entries = msg.entries;
      for (let i = 0; i < entries.length; i++) size += 3 * V + 1 + entries[i]!.data.length;
      return size;
    }
    case RaftMessageKind.AppendEntriesResponse:
      return ENVELOPE_MAX + 1 + 3 * V;
    case RaftMessageKind.Heartbeat:
      return ENVELOPE_MAX + 2 * V;
    case RaftMessageKind.HeartbeatResponse:
    case RaftMessageKind.ReadIndexRequest:
      return ENVELOPE_MAX + V;
    case RaftMessageKind.InstallSnapshot:
      return ENVELOPE_MAX + 3 * V + 1 + msg.data.length;
    case RaftMessageKind.InstallSnapshotResponse:
      return ENVELOPE_MAX + 2 * V + 1;
    case RaftMessageKind.TimeoutNow:
      return ENVELOPE_MAX;
    case RaftMessageKind.ReadIndexResponse:
      return ENVELOPE_MAX + 2 * V + 1;
    default:
      throw unknownKind((msg as { kind: number }).kind);
  }
}

function unknownKind(kind: number): ProtocolError {
  return new ProtocolError("INVALID_ARGUMENT", `raft: cannot encode unknown message kind ${kind}`, {
    field: "kind",
    value: kind,
  });
}

/**
 * Writes the payload of `msg` at `buf[at..]` and returns the offset after it.
 * With `omitSnapshotData`, an InstallSnapshot's data is left out so the caller
 * can send it separately (it is the payload's tail).
 */
function writeMessage(buf: Uint8Array, at: number, msg: RaftMessage, omitSnapshotData: boolean) {
  buf[at++] = msg.kind;
  at = putUvarint(buf, at, msg.from, "from");
  at = putUvarint(buf, at, msg.to, "to");
  at = putUvarint(buf, at, msg.term, "term");
  switch (msg.kind) {
    case RaftMessageKind.PreVoteRequest:
    case RaftMessageKind.VoteRequest:
      at = putUvarint(buf, at, msg.lastLogIndex, "lastLogIndex");
      at = putUvarint(buf, at, msg.lastLogTerm, "lastLogTerm");
      buf[at++] = msg.transfer ? 1 : 0;
      return at;
    case RaftMessageKind.PreVoteResponse:
    case RaftMessageKind.VoteResponse:
      buf[at++] = msg.granted ? 1 : 0;
      return at;
    case RaftMessageKind.AppendEntriesRequest: {
      at = putUvarint(buf, at, msg.prevLogIndex, "prevLogIndex");
      at = putUvarint(buf, at, msg.prevLogTerm, "prevLogTerm");
      at = putUvarint(buf, at, msg.leaderCommit, "leaderCommit");
      const entries = msg.entries;
      at = putUvarint(buf, at, entries.length, "entry count");
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i]!;
        at = putUvarint(buf, at, e.index, "entry index");
        at = putUvarint(buf, at, e.term, "entry term");
        if (e.kind !== EntryKind.Normal && e.kind !== EntryKind.ConfigChange) {
          throw new ProtocolError(
            "INVALID_ARGUMENT",
            `raft: cannot encode entry kind ${e.kind}: expected 0 (normal) or 1 (config change)`,
            { field: "entry kind", value: e.kind },
          );
        }
        buf[at++] = e.kind;
        at = putUvarint(buf, at, e.data.length, "entry data length");
        buf.set(e.data, at);
        at += e.data.length;
      }
      return at;
    }
    case RaftMessageKind.AppendEntriesResponse:
      buf[at++] = msg.success ? 1 : 0;
      at = putUvarint(buf, at, msg.matchIndex, "matchIndex");
      at = putUvarint(buf, at, msg.hintIndex, "hintIndex");
      return putUvarint(buf, at, msg.hintTerm, "hintTerm");
    case RaftMessageKind.Heartbeat:
      at = putUvarint(buf, at, msg.commit, "commit");
      return putUvarint(buf, at, msg.readContext, "readContext");
    case RaftMessageKind.HeartbeatResponse:
    case RaftMessageKind.ReadIndexRequest:
      return putUvarint(buf, at, msg.readContext, "readContext");
    case RaftMessageKind.InstallSnapshot:
      at = putUvarint(buf, at, msg.snapshotIndex, "snapshotIndex");
      at = putUvarint(buf, at, msg.snapshotTerm, "snapshotTerm");
      at = putUvarint(buf, at, msg.offset, "offset");
      buf[at++] = msg.done ? 1 : 0;
      if (omitSnapshotData) return at;
      buf.set(msg.data, at);
      return at + msg.data.length;
    case RaftMessageKind.InstallSnapshotResponse:
      at = putUvarint(buf, at, msg.snapshotIndex, "snapshotIndex");
      at = putUvarint(buf, at, msg.offset, "offset");
      buf[at++] = msg.reject ? 1 : 0;
      return at;
    case RaftMessageKind.TimeoutNow:
      return at;
    case RaftMessageKind.ReadIndexResponse:
      at = putUvarint(buf, at, msg.readContext, "readContext");
      at = putUvarint(buf, at, msg.readIndex, "readIndex");
      buf[at++] = msg.ok ? 1 : 0;
      return at;
    default:
      throw unknownKind((msg as { kind: number }).kind);
  }
}

/** Options for the frame that carries a Raft message. */
export interface RaftFrameOptions {
  /** Request id for tracing; Raft messages are one-way, so 0n (the default) is fine. */
  readonly requestId?: bigint;
  /** Deadline in ms; 0 (the default) for none. */
  readonly deadlineMs?: number;
}

/**
 * Writes the header of a Raft frame. Without options every field is a
 * constant of the message kind (request id 0, no deadline), already known to
 * be valid, so it is written directly: on the heartbeat path the generic
 * writer's object and its checks cost as much as the payload.
 */
function writeRaftHeader(
  buf: Uint8Array,
  at: number,
  msg: RaftMessage,
  options: RaftFrameOptions | undefined,
  payloadLength: number,
): void {
  if (options !== undefined) {
    writeFrameHeader(buf, at, frameHeaderOf(msg, options), payloadLength);
    return;
  }
  buf[at] = 0x42;
  buf[at + 1] = 0x58;
  buf[at + 2] = PROTOCOL_VERSION;
  buf[at + 3] = FrameType.Request;
  buf[at + 4] = FLAG_LAST;
  buf[at + 5] = raftMessagePriority(msg.kind);
  buf[at + 6] = RAFT_SERVICE_ID;
  buf[at + 7] = msg.kind;
  // Request id 0 and no deadline; single stores, since a fill() call costs more.
  for (let i = at + 8; i < at + 16; i++) buf[i] = 0;
  buf[at + 16] = payloadLength >>> 24;
  buf[at + 17] = (payloadLength >>> 16) & 0xff;
  buf[at + 18] = (payloadLength >>> 8) & 0xff;
  buf[at + 19] = payloadLength & 0xff;
  for (let i = at + 20; i < at + 24; i++) buf[i] = 0;
}

function frameHeaderOf(msg: RaftMessage, options: RaftFrameOptions | undefined) {
  return {
    type: FrameType.Request,
    flags: FLAG_LAST,
    priority: raftMessagePriority(msg.kind),
    method: (RAFT_SERVICE_ID << 8) | msg.kind,
    requestId: options?.requestId ?? 0n,
    deadlineMs: options?.deadlineMs ?? 0,
  } as const;
}

/**
 * Encodes `msg` as a whole frame (header and payload) into `target` at
 * `offset`; returns the bytes written. `target` needs
 * `24 + raftMessageMaxBytes(msg)` bytes from `offset`. Does not allocate.
 *
 * @example
 * ```ts
 * import { encodeRaftFrame, RaftMessageKind } from "@blixard/agent";
 * const buf = new Uint8Array(256);
 * const n = encodeRaftFrame({
 *   kind: RaftMessageKind.Heartbeat, from: 1, to: 2, term: 5, commit: 42, readContext: 0,
 * }, buf, 0);
 * console.log(n); // 30: a 24-byte header and a 6-byte payload
 * ```
 */
export function encodeRaftFrame(
  msg: RaftMessage,
  target: Uint8Array,
  offset: number,
  options?: RaftFrameOptions,
): number {
  const needed = FRAME_HEADER_BYTES + raftMessageMaxBytes(msg);
  if (offset < 0 || target.length - offset < needed) {
    throw new ProtocolError(
      "INVALID_ARGUMENT",
      `raft: ${raftMessageKindName(msg.kind)} needs up to ${needed} bytes at offset ${offset}, ` +
        `buffer has ${target.length - offset}`,
      { field: "target", value: target.length },
    );
  }
  const start = offset + FRAME_HEADER_BYTES;
  const end = writeMessage(target, start, msg, false);
  writeRaftHeader(target, offset, msg, options, end - start);
  return end - offset;
}

/**
 * Appends `msg` as a whole frame to a pooled {@link FrameWriter}: the path
 * transports use to coalesce many messages into one write.
 */
export function appendRaftFrame(
  writer: FrameWriter,
  msg: RaftMessage,
  options?: RaftFrameOptions,
): void {
  const reserved = FRAME_HEADER_BYTES + raftMessageMaxBytes(msg);
  const at = writer.reserve(reserved);
  const buf = writer.buffer;
  let end: number;
  try {
    end = writeMessage(buf, at + FRAME_HEADER_BYTES, msg, false);
    writeRaftHeader(buf, at, msg, options, end - at - FRAME_HEADER_BYTES);
  } catch (e) {
    writer.unreserve(reserved);
    throw e;
  }
  writer.unreserve(reserved - (end - at));
}

/**
 * Frames `msg` as two parts to send back to back: a small prefix (header and
 * fields) and the message's bulk bytes, which are not copied. For an
 * InstallSnapshot chunk `data` is `msg.data`; for every other kind the prefix
 * is the whole frame and `data` is empty.
 *
 * @example
 * ```ts
 * import { raftFrameParts, RaftMessageKind } from "@blixard/agent";
 * const chunk = new Uint8Array(1 << 20);
 * const { prefix, data } = raftFrameParts({
 *   kind: RaftMessageKind.InstallSnapshot, from: 1, to: 2, term: 3,
 *   snapshotIndex: 1000, snapshotTerm: 3, offset: 0, done: false, data: chunk,
 * });
 * console.log(data === chunk); // true: the chunk is not copied
 * ```
 */
export function raftFrameParts(
  msg: RaftMessage,
  options?: RaftFrameOptions,
): { prefix: Uint8Array; data: Uint8Array } {
  if (msg.kind !== RaftMessageKind.InstallSnapshot) {
    const buf = new Uint8Array(FRAME_HEADER_BYTES + raftMessageMaxBytes(msg));
    const n = encodeRaftFrame(msg, buf, 0, options);
    return { prefix: buf.subarray(0, n), data: EMPTY };
  }
  const buf = new Uint8Array(FRAME_HEADER_BYTES + ENVELOPE_MAX + 3 * V + 1);
  const end = writeMessage(buf, FRAME_HEADER_BYTES, msg, true);
  const payloadLength = end - FRAME_HEADER_BYTES + msg.data.length;
  writeFrameHeader(buf, 0, frameHeaderOf(msg, options), payloadLength);
  return { prefix: buf.subarray(0, end), data: msg.data };
}

const EMPTY = new Uint8Array(0);

/**
 * Encodes the payload of `msg` alone into a new buffer of exactly its size:
 * the bytes the gRPC transport carries in its Raft envelope.
 */
export function encodeRaftMessage(msg: RaftMessage): Uint8Array {
  const buf = new Uint8Array(raftMessageMaxBytes(msg));
  const end = writeMessage(buf, 0, msg, false);
  return end === buf.length ? buf : buf.slice(0, end);
}

const reader = new ByteReader("raft");

/** Smallest encoding of one entry: index, term, kind, data length, one byte each. */
const MIN_ENTRY_BYTES = 4;

/**
 * Decodes one Raft message from its payload bytes, `payload[start..end)`
 * (all of it by default). Byte fields (entry data, snapshot data) are views
 * into `payload`.
 * @throws {ProtocolError} with code `TRUNCATED`, `UNKNOWN_MESSAGE_KIND`,
 *   `VALUE_OUT_OF_RANGE` or `TRAILING_BYTES`.
 *
 * @example
 * ```ts
 * import { decodeRaftMessage, encodeRaftMessage, RaftMessageKind } from "@blixard/agent";
 * const bytes = encodeRaftMessage({ kind: RaftMessageKind.TimeoutNow, from: 1, to: 2, term: 9 });
 * const msg = decodeRaftMessage(bytes);
 * if (msg.kind === RaftMessageKind.TimeoutNow) console.log(msg.term); // 9
 * ```
 */
export function decodeRaftMessage(
  payload: Uint8Array,
  start = 0,
  end = payload.length,
): RaftMessage {
  return decodeFrom(reader.reset(payload, start, end));
}

function decodeFrom(r: ByteReader): RaftMessage {
  const kind = r.u8("kind") as RaftMessageKind;
  if (kind < 1 || kind > 13) {
    throw new ProtocolError(
      "UNKNOWN_MESSAGE_KIND",
      `raft: message kind ${kind}: expected 1..13`,
      { field: "kind", value: kind },
    );
  }
  const from = r.uvarint("from");
  const to = r.uvarint("to");
  const term = r.uvarint("term");
  let msg: RaftMessage;
  switch (kind) {
    case RaftMessageKind.PreVoteRequest:
    case RaftMessageKind.VoteRequest:
      msg = {
        kind,
        from,
        to,
        term,
        lastLogIndex: r.uvarint("lastLogIndex"),
        lastLogTerm: r.uvarint("lastLogTerm"),
        transfer: r.bool("transfer"),
      };
      break;
    case RaftMessageKind.PreVoteResponse:
    case RaftMessageKind.VoteResponse:
      msg = { kind, from, to, term, granted: r.bool("granted") };
      break;
    case RaftMessageKind.AppendEntriesRequest: {
      const prevLogIndex = r.uvarint("prevLogIndex");
      const prevLogTerm = r.uvarint("prevLogTerm");
      const leaderCommit = r.uvarint("leaderCommit");
      const count = r.uvarint("entry count");
      // A hostile count must not make us allocate: every entry takes bytes.
      if (count > r.remaining / MIN_ENTRY_BYTES) {
        throw new ProtocolError(
          "TRUNCATED",
          `raft: entry count ${count} needs at least ${count * MIN_ENTRY_BYTES} bytes, ` +
            `${r.remaining} left`,
          { field: "entry count", value: count },
        );
      }
      const entries: Entry[] = new Array(count);
      for (let i = 0; i < count; i++) {
        const index = r.uvarint("entry index");
        const entryTerm = r.uvarint("entry term");
        const entryKind = r.u8("entry kind");
        if (entryKind > 1) {
          throw r.outOfRange("entry kind", entryKind, "expected 0 (normal) or 1 (config change)");
        }
        const data = r.view(r.uvarint("entry data length"), "entry data");
        entries[i] = { index, term: entryTerm, kind: entryKind as EntryKind, data };
      }
      msg = { kind, from, to, term, prevLogIndex, prevLogTerm, leaderCommit, entries };
      break;
    }
    case RaftMessageKind.AppendEntriesResponse:
      msg = {
        kind,
        from,
        to,
        term,
        success: r.bool("success"),
        matchIndex: r.uvarint("matchIndex"),
        hintIndex: r.uvarint("hintIndex"),
        hintTerm: r.uvarint("hintTerm"),
      };
      break;
    case RaftMessageKind.Heartbeat:
      msg = {
        kind,
        from,
        to,
        term,
        commit: r.uvarint("commit"),
        readContext: r.uvarint("readContext"),
      };
      break;
    case RaftMessageKind.HeartbeatResponse:
    case RaftMessageKind.ReadIndexRequest:
      msg = { kind, from, to, term, readContext: r.uvarint("readContext") };
      break;
    case RaftMessageKind.InstallSnapshot:
      msg = {
        kind,
        from,
        to,
        term,
        snapshotIndex: r.uvarint("snapshotIndex"),
        snapshotTerm: r.uvarint("snapshotTerm"),
        offset: r.uvarint("offset"),
        done: r.bool("done"),
        data: r.rest(),
      };
      break;
    case RaftMessageKind.InstallSnapshotResponse:
      msg = {
        kind,
        from,
        to,
        term,
        snapshotIndex: r.uvarint("snapshotIndex"),
        offset: r.uvarint("offset"),
        reject: r.bool("reject"),
      };
      break;
    case RaftMessageKind.TimeoutNow:
      msg = { kind, from, to, term };
      break;
    default: // ReadIndexResponse, the last kind
      msg = {
        kind: RaftMessageKind.ReadIndexResponse,
        from,
        to,
        term,
        readContext: r.uvarint("readContext"),
        readIndex: r.uvarint("readIndex"),
        ok: r.bool("ok"),
      };
  }
  r.finish();
  return msg;
}

/**
 * Decodes the Raft message a frame carries, checking that the frame's method
 * names the Raft service and the same kind as the payload.
 */
export function decodeRaftFrame(frame: Frame): RaftMessage {
  if (frame.method >>> 8 !== RAFT_SERVICE_ID) {
    throw new ProtocolError(
      "VALUE_OUT_OF_RANGE",
      `raft: frame method 0x${frame.method.toString(16)} is not the Raft service ` +
        `(0x${RAFT_SERVICE_ID.toString(16).padStart(2, "0")}xx)`,
      { field: "method", value: frame.method },
    );
  }
  // A frame fresh from the decoder is read where it was received, without a view.
  const msg = decodeFrom(
    frame instanceof ReceivedFrame ? frame.readPayload(reader) : reader.reset(frame.payload),
  );
  if ((frame.method & 0xff) !== msg.kind) {
    throw new ProtocolError(
      "VALUE_OUT_OF_RANGE",
      `raft: frame method names kind ${frame.method & 0xff} but the payload is ` +
        `${raftMessageKindName(msg.kind)} (${msg.kind})`,
      { field: "method", value: frame.method },
    );
  }
  return msg;
}
