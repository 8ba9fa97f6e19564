/**
 * Cluster membership: who votes, who only learns, how a change is encoded in
 * a ConfigChange entry, and which changes are allowed.
 *
 * Owns: {@link ConfChange}, {@link ConfChangeType}, the entry encoding
 * ({@link encodeConfChange}, {@link decodeConfChange}), {@link Membership}
 * and {@link bootstrapUpdate}. Imports the codec's entry type, varint
 * helpers and errors, and `storage.ts` (types).
 *
 * Changes are single-server (Raft thesis §4.1): each adds or removes one
 * node, so any majority of the old voters overlaps any majority of the new.
 * A change takes effect when it is applied (once committed), and the leader
 * accepts a new change only after the previous one is applied and after it
 * committed an entry of its own term (its no-op), the fix for the
 * single-server bug of the thesis' errata.
 *
 * Entry data (entry kind ConfigChange), version 1:
 *
 * | bytes  | field                                                   |
 * | ------ | ------------------------------------------------------- |
 * | 1      | version, `1`                                            |
 * | 1      | type: 1 add voter, 2 add learner, 3 remove node         |
 * | varint | node id, 1..2^53-1                                      |
 * | varint | context length                                          |
 * | n      | context: opaque to Raft (the state machine's member data) |
 *
 * Varints are the Raft codec's (unsigned LEB128, at most 8 bytes). Nothing
 * may follow the context.
 *
 * @module
 */

import { ProtocolError } from "../codec/errors.ts";
import { ByteReader, putUvarint, uvarintSize } from "../codec/varint.ts";
import { type Entry, EntryKind } from "../codec/raft.ts";
import type { ConfState, LogUpdate } from "./storage.ts";

/** Kinds of membership change. */
export const ConfChangeType = {
  /** Adds a voter, or promotes a learner to voter. */
  AddVoter: 1,
  /** Adds a learner: it receives the log and does not vote. */
  AddLearner: 2,
  /** Removes a voter or a learner. */
  RemoveNode: 3,
} as const;
/** One of the values of {@link ConfChangeType}. */
export type ConfChangeType = typeof ConfChangeType[keyof typeof ConfChangeType];

/** One membership change, as proposed and as applied. */
export interface ConfChange {
  /** Add a voter (or promote a learner), add a learner, or remove a node. */
  readonly type: ConfChangeType;
  /** The node added, promoted or removed. */
  readonly nodeId: number;
  /** Opaque to Raft; the state machine's data about the member (its addresses). */
  readonly context: Uint8Array;
}

const VERSION = 1;
const TYPE_NAMES = ["", "add voter", "add learner", "remove node"];

/** Human description of a change, for errors and logs ("add voter 4"). */
export function describeConfChange(change: ConfChange): string {
  return `${TYPE_NAMES[change.type] ?? `type ${change.type}`} ${change.nodeId}`;
}

/**
 * The entry data of `change`.
 * @throws {ProtocolError} `INVALID_ARGUMENT` for an unknown type or a node id outside 1..2^53-1.
 */
export function encodeConfChange(change: ConfChange): Uint8Array {
  checkType(change.type);
  if (!(change.nodeId >= 1)) {
    throw new ProtocolError(
      "INVALID_ARGUMENT",
      `raft conf change: node id ${change.nodeId}: expected an integer 1..2^53-1`,
      { field: "nodeId", value: change.nodeId },
    );
  }
  const context = change.context;
  const out = new Uint8Array(
    2 + uvarintSize(change.nodeId) + uvarintSize(context.length) + context.length,
  );
  out[0] = VERSION;
  out[1] = change.type;
  let at = putUvarint(out, 2, change.nodeId, "nodeId");
  at = putUvarint(out, at, context.length, "context length");
  out.set(context, at);
  return out;
}

const reader = new ByteReader("raft conf change");

/**
 * Decodes a ConfigChange entry's data. The context is a view of `data`.
 * @throws {ProtocolError} `TRUNCATED`, `VALUE_OUT_OF_RANGE` or `TRAILING_BYTES`.
 */
export function decodeConfChange(data: Uint8Array): ConfChange {
  const r = reader.reset(data);
  const version = r.u8("version");
  if (version !== VERSION) throw r.outOfRange("version", version, `expected ${VERSION}`);
  const type = r.u8("type");
  if (type < 1 || type > 3) {
    throw r.outOfRange("type", type, "expected 1 (add voter), 2 (add learner) or 3 (remove node)");
  }
  const nodeId = r.uvarint("node id");
  if (nodeId === 0) throw r.outOfRange("node id", 0, "expected 1..2^53-1");
  const context = r.view(r.uvarint("context length"), "context");
  r.finish();
  return { type: type as ConfChangeType, nodeId, context };
}

function checkType(type: number): void {
  if (type !== 1 && type !== 2 && type !== 3) {
    throw new ProtocolError(
      "INVALID_ARGUMENT",
      `raft conf change: type ${type}: expected 1 (add voter), 2 (add learner) or 3 (remove node)`,
      { field: "type", value: type },
    );
  }
}

/** The voters and learners of a cluster, and the rules for changing them. */
export class Membership {
  /** Nodes that vote and count for commit. */
  readonly voters = new Set<number>();
  /** Nodes that receive the log only; never also voters. */
  readonly learners = new Set<number>();

  /** The membership a {@link ConfState} describes. */
  static from(state: ConfState): Membership {
    const m = new Membership();
    for (const id of state.voters) m.voters.add(id);
    for (const id of state.learners) {
      if (!m.voters.has(id)) m.learners.add(id);
    }
    return m;
  }

  /** True if `id` is a voter or a learner. */
  has(id: number): boolean {
    return this.voters.has(id) || this.learners.has(id);
  }

  /** The membership as stored, ids ascending. */
  confState(): ConfState {
    return {
      voters: [...this.voters].sort(ascending),
      learners: [...this.learners].sort(ascending),
    };
  }

  /**
   * Why `change` may not be proposed against this membership, or undefined
   * if it may. A leader proposes only changes that pass, so every node
   * applies them without surprise.
   */
  refusal(change: ConfChange): string | undefined {
    const id = change.nodeId;
    if (!Number.isSafeInteger(id) || id < 1) return `node id ${id}: expected an integer 1..2^53-1`;
    switch (change.type) {
      case ConfChangeType.AddVoter:
        return this.voters.has(id) ? `node ${id} is already a voter` : undefined;
      case ConfChangeType.AddLearner:
        if (this.voters.has(id)) {
          return `node ${id} is a voter; demoting a voter to learner is not supported`;
        }
        return this.learners.has(id) ? `node ${id} is already a learner` : undefined;
      case ConfChangeType.RemoveNode:
        if (!this.has(id)) return `node ${id} is not a member`;
        if (this.voters.has(id) && this.voters.size === 1) return `node ${id} is the last voter`;
        return undefined;
      default:
        return `type ${
          (change as ConfChange).type
        }: expected 1 (add voter), 2 (add learner) or 3 (remove node)`;
    }
  }

  /**
   * Applies a committed change. Idempotent, and total: a change that
   * {@link refusal} would refuse (it cannot come from a leader of this
   * cluster) changes what it can in the same way on every node, so all
   * members still agree on the membership.
   */
  apply(change: ConfChange): void {
    const id = change.nodeId;
    switch (change.type) {
      case ConfChangeType.AddVoter:
        this.learners.delete(id);
        this.voters.add(id);
        return;
      case ConfChangeType.AddLearner:
        if (!this.voters.has(id)) this.learners.add(id);
        return;
      case ConfChangeType.RemoveNode:
        this.voters.delete(id);
        this.learners.delete(id);
        return;
    }
  }
}

function ascending(a: number, b: number): number {
  return a - b;
}

/** One initial member of a new cluster. */
export interface InitialMember {
  /** The member's node id, 1..2^53-1. */
  readonly id: number;
  /** The member's data for the state machine (its addresses); empty by default. */
  readonly context?: Uint8Array;
}

/**
 * What a fresh storage must hold to start a new cluster: one committed
 * "add voter" entry per initial member (indexes 1..n, term 1) and a hard
 * state committing them. Every initial member saves the same update, built
 * from the same list in the same order, before its core starts; nodes that
 * join later start empty and learn the membership from the log (or from a
 * snapshot) like any other entry. The core applies the entries through the
 * first Ready's committedEntries.
 *
 * @throws {RangeError} for no members, or an id that is repeated or not an integer 1..2^53-1.
 */
export function bootstrapUpdate(members: readonly InitialMember[]): LogUpdate {
  if (members.length === 0) throw new RangeError("raft bootstrap: expected at least one member");
  const seen = new Set<number>();
  const entries: Entry[] = members.map((m, i) => {
    if (!Number.isSafeInteger(m.id) || m.id < 1 || seen.has(m.id)) {
      throw new RangeError(
        `raft bootstrap: member ${i} has id ${m.id}: expected distinct integers 1..2^53-1`,
      );
    }
    seen.add(m.id);
    const data = encodeConfChange({
      type: ConfChangeType.AddVoter,
      nodeId: m.id,
      context: m.context ?? new Uint8Array(0),
    });
    return { index: i + 1, term: 1, kind: EntryKind.ConfigChange, data };
  });
  return { entries, hardState: { term: 1, vote: 0, commit: entries.length } };
}
