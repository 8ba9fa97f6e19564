/**
 * The replicated cluster state: what every node agrees on, changed only by
 * applying committed Raft entries in log order. Members (how to reach each
 * node, what it declares it can run) and the metadata namespace (key →
 * value with a revision) live here; VMs join in a later issue.
 *
 * Owns: {@link ClusterState}, the {@link Command}s of the log, their
 * encoding (proto/blixard/v1/state.proto) and the metadata limits. Pure:
 * imports the generated messages and `@bufbuild/protobuf`; no I/O, no clock,
 * no randomness, so every node that applies the same entries holds the same
 * state, byte for byte in its snapshot.
 *
 * Revisions: a metadata key's revision is the log index of the write that
 * last changed it (proto/blixard/v1/metadata.proto).
 *
 * @module
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MetadataEntry } from "../rpc/gen/blixard/v1/metadata_pb.ts";
import {
  type AppliedWrite,
  AppliedWriteSchema,
  type MemberRecord,
  MemberRecordSchema,
  type StateCommand,
  StateCommandSchema,
  StateSnapshotSchema,
  VmCreateCommandSchema,
  VmDeleteCommandSchema,
  VmDesiredCommandSchema,
  VmPlaceCommandSchema,
  type VmRecord,
  VmReportCommandSchema,
} from "../rpc/gen/blixard/v1/state_pb.ts";
import { type VmEvent, VmSpecSchema } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { msOf, timestampOf, type VmApplyResult, type VmCommand, VmTable } from "./vms.ts";

export type { MemberRecord };

/** Bounds of the metadata namespace, the same on every node. */
export const METADATA_LIMITS = Object.freeze({
  maxKeyBytes: 256,
  maxValueBytes: 64 * 1024,
  maxKeys: 100_000,
  /** Keys and values together, UTF-8 bytes. */
  maxTotalBytes: 64 * 1024 * 1024,
  /** Most entries one List answers. */
  maxListEntries: 1000,
  /** Writes whose results are kept by request id, to answer retries. */
  maxRecentWrites: 10_000,
  /** Longest request id, ASCII characters. */
  maxRequestIdBytes: 64,
});

/** The snapshot format this code writes and reads. */
export const SNAPSHOT_FORMAT_VERSION = 1;

/** A command of the Raft log. Metadata writes may carry an idempotency key. */
export type Command =
  | {
    readonly kind: "metadata_put";
    readonly key: string;
    readonly value: string;
    readonly requestId?: string;
  }
  | { readonly kind: "metadata_delete"; readonly key: string; readonly requestId?: string }
  | {
    readonly kind: "metadata_cas";
    readonly key: string;
    readonly expectedRevision: number;
    readonly value: string;
    readonly requestId?: string;
  }
  | { readonly kind: "member_update"; readonly member: MemberRecord }
  | VmCommand;

/** What applying an entry did, for the proposer's answer. */
export type ApplyResult =
  | { readonly ok: true; readonly kind: "noop" }
  | { readonly ok: true; readonly kind: "metadata_put"; readonly revision: number }
  | { readonly ok: true; readonly kind: "metadata_delete"; readonly existed: boolean }
  | {
    readonly ok: true;
    readonly kind: "metadata_cas";
    readonly succeeded: boolean;
    readonly revision: number;
  }
  | { readonly ok: true; readonly kind: "member_update" }
  | Extract<VmApplyResult, { ok: true }>
  | { readonly ok: false; readonly code: StateErrorCode; readonly message: string };

/** Why a command was refused (deterministically, on every node). */
export type StateErrorCode =
  | "INVALID_ARGUMENT"
  | "RESOURCE_EXHAUSTED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "DATA_LOSS";

/** A refused command or a bad encoding, with a code callers match on. */
export class StateError extends Error {
  override readonly name = "StateError";
  readonly code: StateErrorCode;
  constructor(code: StateErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** Encodes a command as an entry's data. */
export function encodeCommand(command: Command): Uint8Array {
  const requestId = "requestId" in command ? command.requestId ?? "" : "";
  switch (command.kind) {
    case "metadata_put":
      return toBinary(
        StateCommandSchema,
        create(StateCommandSchema, {
          requestId,
          command: { case: "metadataPut", value: { key: command.key, value: command.value } },
        }),
      );
    case "metadata_delete":
      return toBinary(
        StateCommandSchema,
        create(StateCommandSchema, {
          requestId,
          command: { case: "metadataDelete", value: { key: command.key } },
        }),
      );
    case "metadata_cas":
      return toBinary(
        StateCommandSchema,
        create(StateCommandSchema, {
          requestId,
          command: {
            case: "metadataCompareAndSet",
            value: {
              key: command.key,
              expectedRevision: BigInt(command.expectedRevision),
              value: command.value,
            },
          },
        }),
      );
    case "member_update":
      return toBinary(
        StateCommandSchema,
        create(StateCommandSchema, { command: { case: "memberUpdate", value: command.member } }),
      );
    default:
      return toBinary(
        StateCommandSchema,
        create(StateCommandSchema, { requestId, command: vmCommandOf(command) }),
      );
  }
}

/** A VM command as its state.proto message. */
function vmCommandOf(c: VmCommand): StateCommand["command"] {
  const at = timestampOf(c.atMs);
  switch (c.kind) {
    case "vm_create":
      return {
        case: "vmCreate",
        value: create(VmCreateCommandSchema, { spec: c.spec, nodeId: BigInt(c.nodeId), at }),
      };
    case "vm_desired":
      return {
        case: "vmDesired",
        value: create(VmDesiredCommandSchema, {
          name: c.name,
          desiredState: c.desiredState,
          force: c.force,
          at,
        }),
      };
    case "vm_delete":
      return { case: "vmDelete", value: create(VmDeleteCommandSchema, { name: c.name, at }) };
    case "vm_report":
      return {
        case: "vmReport",
        value: create(VmReportCommandSchema, {
          name: c.name,
          nodeId: BigInt(c.nodeId),
          state: c.state,
          exitReason: c.reason,
          at,
        }),
      };
    case "vm_place":
      return {
        case: "vmPlace",
        value: create(VmPlaceCommandSchema, {
          name: c.name,
          fromNodeId: BigInt(c.fromNodeId),
          nodeId: BigInt(c.nodeId),
          reason: c.reason,
          at,
        }),
      };
  }
}

/** Decodes an entry's data; empty data is the leader's no-op (null). */
export function decodeCommand(data: Uint8Array): Command | null {
  if (data.length === 0) return null;
  let message;
  try {
    message = fromBinary(StateCommandSchema, data);
  } catch (e) {
    throw new StateError(
      "DATA_LOSS",
      `state: malformed command (${data.length} bytes): ${(e as Error).message}`,
    );
  }
  const c = message.command;
  const id = message.requestId ? { requestId: message.requestId } : {};
  switch (c.case) {
    case "metadataPut":
      return { kind: "metadata_put", key: c.value.key, value: c.value.value, ...id };
    case "metadataDelete":
      return { kind: "metadata_delete", key: c.value.key, ...id };
    case "metadataCompareAndSet":
      return {
        kind: "metadata_cas",
        key: c.value.key,
        expectedRevision: Number(c.value.expectedRevision),
        value: c.value.value,
        ...id,
      };
    case "memberUpdate":
      return { kind: "member_update", member: c.value };
    case "vmCreate":
      return {
        kind: "vm_create",
        spec: c.value.spec ?? create(VmSpecSchema, {}),
        nodeId: Number(c.value.nodeId),
        atMs: msOf(c.value.at),
        ...id,
      };
    case "vmDesired":
      return {
        kind: "vm_desired",
        name: c.value.name,
        desiredState: c.value.desiredState,
        force: c.value.force,
        atMs: msOf(c.value.at),
        ...id,
      };
    case "vmDelete":
      return { kind: "vm_delete", name: c.value.name, atMs: msOf(c.value.at), ...id };
    case "vmReport":
      return {
        kind: "vm_report",
        name: c.value.name,
        nodeId: Number(c.value.nodeId),
        state: c.value.state,
        reason: c.value.exitReason,
        atMs: msOf(c.value.at),
        ...id,
      };
    case "vmPlace":
      return {
        kind: "vm_place",
        name: c.value.name,
        fromNodeId: Number(c.value.fromNodeId),
        nodeId: Number(c.value.nodeId),
        reason: c.value.reason,
        atMs: msOf(c.value.at),
        ...id,
      };
    default:
      throw new StateError(
        "DATA_LOSS",
        "state: a command of a kind this version does not know (a newer node wrote it?)",
      );
  }
}

/** UTF-8 length of `s` without encoding it. */
export function utf8Bytes(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/**
 * Whether `key` is a valid metadata key: 1 to 256 bytes of UTF-8, no
 * control characters. Returns the problem, or null.
 */
export function metadataKeyProblem(key: string): string | null {
  const bytes = utf8Bytes(key);
  if (bytes === 0) return "metadata key: empty; expected 1 to 256 bytes";
  if (bytes > METADATA_LIMITS.maxKeyBytes) {
    return `metadata key: ${bytes} bytes; expected at most ${METADATA_LIMITS.maxKeyBytes}`;
  }
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) {
    return `metadata key ${JSON.stringify(key)}: control characters are not allowed`;
  }
  return null;
}

/** Whether `id` is a valid request id: 1 to 64 printable ASCII characters. Returns the problem, or null. */
export function requestIdProblem(id: string): string | null {
  return /^[\x21-\x7e]{1,64}$/.test(id)
    ? null
    : `request id ${
      JSON.stringify(id.slice(0, 80))
    }: expected 1 to ${METADATA_LIMITS.maxRequestIdBytes} printable ASCII characters`;
}

/** Whether `value` fits: at most 64 KiB of UTF-8. Returns the problem, or null. */
export function metadataValueProblem(value: string): string | null {
  const bytes = utf8Bytes(value);
  return bytes > METADATA_LIMITS.maxValueBytes
    ? `metadata value: ${bytes} bytes; expected at most ${METADATA_LIMITS.maxValueBytes}`
    : null;
}

interface Stored {
  readonly value: string;
  readonly revision: number;
  readonly bytes: number;
}

/** The state machine. */
export class ClusterState {
  #applied = 0;
  readonly #metadata = new Map<string, Stored>();
  #metadataBytes = 0;
  readonly #members = new Map<number, MemberRecord>();
  /** Results of the most recent writes with a request id, oldest first (insertion order). */
  readonly #recent = new Map<string, ApplyResult>();
  #vms = new VmTable();

  /** The last log index applied. */
  get appliedIndex(): number {
    return this.#applied;
  }

  /**
   * Applies the command in entry `index`'s data (empty data: a no-op).
   * Entries must come in log order, each once.
   * @throws {StateError} DATA_LOSS for data that is not a command, or an index out of order.
   */
  apply(index: number, data: Uint8Array): ApplyResult {
    this.#advance(index);
    const command = decodeCommand(data);
    if (command === null) return { ok: true, kind: "noop" };
    const requestId = "requestId" in command ? command.requestId : undefined;
    if (requestId === undefined) return this.#run(index, command);
    const bad = requestIdProblem(requestId);
    if (bad) return refused("INVALID_ARGUMENT", bad);
    // A retry of a write already applied: the first result, and no change.
    const seen = this.#recent.get(requestId);
    if (seen) return seen;
    const result = this.#run(index, command);
    this.#remember(requestId, result);
    return result;
  }

  /** The result of the write with `requestId`, if it is among the most recent ones. */
  recentWrite(requestId: string): ApplyResult | undefined {
    return this.#recent.get(requestId);
  }

  #remember(requestId: string, result: ApplyResult): void {
    this.#recent.set(requestId, result);
    if (this.#recent.size > METADATA_LIMITS.maxRecentWrites) {
      this.#recent.delete(this.#recent.keys().next().value!);
    }
  }

  /**
   * Applies a membership entry at `index`: records or forgets a member. The
   * consensus core has already changed who votes; this is the address book.
   */
  applyMembership(
    index: number,
    change: { readonly nodeId: number; readonly record?: MemberRecord },
  ): void {
    this.#advance(index);
    if (change.record) this.#members.set(change.nodeId, change.record);
    else this.#members.delete(change.nodeId);
  }

  /** Marks `index` applied without a command (an entry of no concern to the state). */
  skip(index: number): void {
    this.#advance(index);
  }

  /** The key's value and revision, if it exists. */
  getMetadata(key: string): MetadataEntry | undefined {
    const s = this.#metadata.get(key);
    return s ? metadataEntry(key, s) : undefined;
  }

  /** Keys starting with `prefix`, in key order, at most `limit` (capped at 1,000). */
  listMetadata(prefix: string, limit: number): { entries: MetadataEntry[]; truncated: boolean } {
    const max = Math.min(
      limit > 0 ? limit : METADATA_LIMITS.maxListEntries,
      METADATA_LIMITS.maxListEntries,
    );
    const keys = [...this.#metadata.keys()].filter((k) => k.startsWith(prefix)).sort();
    return {
      entries: keys.slice(0, max).map((k) => metadataEntry(k, this.#metadata.get(k)!)),
      truncated: keys.length > max,
    };
  }

  /** How many keys the namespace holds. */
  get metadataSize(): number {
    return this.#metadata.size;
  }

  /** The members' records, by node id ascending. */
  members(): MemberRecord[] {
    return [...this.#members.values()].sort((a, b) => Number(a.nodeId - b.nodeId));
  }

  /** The record of member `nodeId`. */
  member(nodeId: number): MemberRecord | undefined {
    return this.#members.get(nodeId);
  }

  /** The VMs, by name. */
  vms(): VmRecord[] {
    return this.#vms.list();
  }

  /** The VM named `name`. */
  vm(name: string): VmRecord | undefined {
    return this.#vms.get(name);
  }

  /**
   * The VM events after `revision`, oldest first; null when the kept
   * history no longer reaches back that far.
   */
  vmEventsAfter(revision: number): VmEvent[] | null {
    return this.#vms.eventsAfter(revision);
  }

  /** The index of the newest VM event: it grows with every VM change. */
  get vmRevision(): number {
    return this.#vms.revision;
  }

  /** The whole state as of {@link appliedIndex}, deterministic byte for byte. */
  snapshot(): Uint8Array {
    const keys = [...this.#metadata.keys()].sort();
    const vms = this.#vms.snapshot();
    return toBinary(
      StateSnapshotSchema,
      create(StateSnapshotSchema, {
        formatVersion: SNAPSHOT_FORMAT_VERSION,
        appliedIndex: BigInt(this.#applied),
        members: this.members(),
        metadata: keys.map((k) => metadataEntry(k, this.#metadata.get(k)!)),
        recentWrites: [...this.#recent].map(([requestId, r]) => appliedWrite(requestId, r)),
        vms: vms.vms,
        vmEvents: vms.events,
        vmEventsDroppedThrough: BigInt(vms.droppedThrough),
      }),
    );
  }

  /**
   * The state a snapshot holds.
   * @throws {StateError} DATA_LOSS for bytes that are not a snapshot, or of an unknown format.
   */
  static restore(bytes: Uint8Array): ClusterState {
    let snap;
    try {
      snap = fromBinary(StateSnapshotSchema, bytes);
    } catch (e) {
      throw new StateError(
        "DATA_LOSS",
        `state: malformed snapshot (${bytes.length} bytes): ${(e as Error).message}`,
      );
    }
    if (snap.formatVersion !== SNAPSHOT_FORMAT_VERSION) {
      throw new StateError(
        "DATA_LOSS",
        `state: snapshot format ${snap.formatVersion}; this version reads format ${SNAPSHOT_FORMAT_VERSION}`,
      );
    }
    const state = new ClusterState();
    state.#applied = Number(snap.appliedIndex);
    for (const m of snap.members) state.#members.set(Number(m.nodeId), m);
    for (const e of snap.metadata) {
      const bytes = utf8Bytes(e.key) + utf8Bytes(e.value);
      state.#metadata.set(e.key, { value: e.value, revision: Number(e.revision), bytes });
      state.#metadataBytes += bytes;
    }
    for (const w of snap.recentWrites) state.#recent.set(w.requestId, applyResultOf(w));
    state.#vms = VmTable.restore(snap.vms, snap.vmEvents, Number(snap.vmEventsDroppedThrough));
    return state;
  }

  #advance(index: number): void {
    if (index !== this.#applied + 1) {
      throw new StateError(
        "DATA_LOSS",
        `state: entry ${index} applied after ${this.#applied}; entries must come in log order, each once`,
      );
    }
    this.#applied = index;
  }

  #run(index: number, command: Command): ApplyResult {
    switch (command.kind) {
      case "metadata_put":
        return this.#write(index, command.key, command.value, (revision) => ({
          ok: true,
          kind: "metadata_put",
          revision,
        }));
      case "metadata_cas": {
        const current = this.#metadata.get(command.key)?.revision ?? 0;
        if (current !== command.expectedRevision) {
          const problem = metadataKeyProblem(command.key);
          if (problem) return refused("INVALID_ARGUMENT", problem);
          return { ok: true, kind: "metadata_cas", succeeded: false, revision: current };
        }
        return this.#write(index, command.key, command.value, (revision) => ({
          ok: true,
          kind: "metadata_cas",
          succeeded: true,
          revision,
        }));
      }
      case "metadata_delete": {
        const problem = metadataKeyProblem(command.key);
        if (problem) return refused("INVALID_ARGUMENT", problem);
        const s = this.#metadata.get(command.key);
        if (s) {
          this.#metadata.delete(command.key);
          this.#metadataBytes -= s.bytes;
        }
        return { ok: true, kind: "metadata_delete", existed: s !== undefined };
      }
      case "vm_create":
      case "vm_desired":
      case "vm_delete":
      case "vm_report":
      case "vm_place":
        return this.#vms.apply(index, command);
      case "member_update": {
        const id = Number(command.member.nodeId);
        if (!this.#members.has(id)) {
          return refused("NOT_FOUND", `node ${id} is not a member; join it first`);
        }
        this.#members.set(id, create(MemberRecordSchema, command.member));
        return { ok: true, kind: "member_update" };
      }
    }
  }

  #write(
    index: number,
    key: string,
    value: string,
    ok: (revision: number) => ApplyResult,
  ): ApplyResult {
    const problem = metadataKeyProblem(key) ?? metadataValueProblem(value);
    if (problem) return refused("INVALID_ARGUMENT", problem);
    const old = this.#metadata.get(key);
    const bytes = utf8Bytes(key) + utf8Bytes(value);
    if (!old && this.#metadata.size >= METADATA_LIMITS.maxKeys) {
      return refused(
        "RESOURCE_EXHAUSTED",
        `metadata: ${METADATA_LIMITS.maxKeys} keys already; delete some first`,
      );
    }
    const total = this.#metadataBytes - (old?.bytes ?? 0) + bytes;
    if (total > METADATA_LIMITS.maxTotalBytes) {
      return refused(
        "RESOURCE_EXHAUSTED",
        `metadata: the namespace would hold ${total} bytes; the limit is ${METADATA_LIMITS.maxTotalBytes}`,
      );
    }
    this.#metadata.set(key, { value, revision: index, bytes });
    this.#metadataBytes = total;
    return ok(index);
  }
}

/** A write's result as the snapshot keeps it. */
function appliedWrite(requestId: string, r: ApplyResult): AppliedWrite {
  const result: AppliedWrite["result"] = !r.ok
    ? { case: "refusedCode", value: r.code }
    : r.kind === "vm" || r.kind === "vm_deleted" || r.kind === "vm_unchanged"
    ? { case: "vmApplied", value: true }
    : r.kind === "metadata_put"
    ? { case: "revision", value: BigInt(r.revision) }
    : r.kind === "metadata_cas"
    ? r.succeeded
      ? { case: "revision", value: BigInt(r.revision) }
      : { case: "failedCasRevision", value: BigInt(r.revision) }
    : r.kind === "metadata_delete"
    ? { case: "existed", value: r.existed }
    : { case: undefined };
  return create(AppliedWriteSchema, {
    requestId,
    result,
    refusedMessage: r.ok ? "" : r.message,
    cas: r.ok && r.kind === "metadata_cas",
  });
}

/** The result a snapshot kept, as applying gave it. */
function applyResultOf(w: AppliedWrite): ApplyResult {
  switch (w.result.case) {
    case "refusedCode":
      return { ok: false, code: w.result.value as StateErrorCode, message: w.refusedMessage };
    case "revision":
      return w.cas
        ? { ok: true, kind: "metadata_cas", succeeded: true, revision: Number(w.result.value) }
        : { ok: true, kind: "metadata_put", revision: Number(w.result.value) };
    case "failedCasRevision":
      return { ok: true, kind: "metadata_cas", succeeded: false, revision: Number(w.result.value) };
    case "existed":
      return { ok: true, kind: "metadata_delete", existed: w.result.value };
    case "vmApplied":
      return { ok: true, kind: "vm_unchanged" };
    default:
      return { ok: true, kind: "noop" };
  }
}

function refused(code: StateErrorCode, message: string): ApplyResult {
  return { ok: false, code, message };
}

function metadataEntry(key: string, s: Stored): MetadataEntry {
  return {
    $typeName: "blixard.v1.MetadataEntry",
    key,
    value: s.value,
    revision: BigInt(s.revision),
  };
}
