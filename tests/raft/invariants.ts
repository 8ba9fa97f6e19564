/**
 * Raft's safety properties, checked from outside the cores: what every
 * node's durable storage and state machine must satisfy after every step of
 * any run. A simulation calls {@link SafetyChecker.check} after each step;
 * it throws an Error naming the property, the nodes and the indexes.
 *
 * - Election safety: at most one leader per term.
 * - Log matching: two durable logs that hold an entry with the same index
 *   and term hold the same entries up to it.
 * - Committed entries never change: once any node durably records an entry
 *   as committed, every node that later records that index committed holds
 *   the same entry.
 * - Commit never goes back: a node's durable commit index only grows, across
 *   restarts; within one life, so does its in-memory commit index.
 * - State machine safety: every node applies the same command at each index,
 *   and each applies indexes in order without gaps.
 * - Linearizable reads: a read index is at least every index applied
 *   anywhere before the read was asked.
 */

import type { Entry, MemoryStorage, RaftCore } from "../../src/raft/mod.ts";

/** What the checker needs to see of a node. */
export interface CheckedNode {
  readonly id: number;
  readonly storage: MemoryStorage;
  readonly core: RaftCore;
  readonly applied: readonly { readonly index: number; readonly command: string }[];
  /** Changes whenever the storage is written; the log is reread only then. */
  readonly storageVersion: number;
}

interface Recorded {
  readonly term: number;
  readonly data: string;
  readonly by: number;
}

const decoder = new TextDecoder();

/** Accumulates what the run has shown and checks each new observation against it. */
export class SafetyChecker {
  readonly #leaders = new Map<number, number>();
  readonly #committed = new Map<number, Recorded>();
  readonly #appliedAt = new Map<number, { command: string; by: number }>();
  readonly #durableCommit = new Map<number, number>();
  readonly #liveCommit = new Map<RaftCore, number>();
  readonly #appliedSeen = new Map<number, number>();
  readonly #logs = new Map<number, { version: number; log: DurableLog }>();

  /** Checks every property over `nodes`. */
  check(nodes: Iterable<CheckedNode>): void {
    const list = [...nodes];
    let changed = false;
    for (const node of list) {
      this.#checkLeader(node);
      this.#checkCommitMonotonic(node);
      const cached = this.#logs.get(node.id);
      if (cached === undefined || cached.version !== node.storageVersion) {
        const first = node.storage.firstIndex();
        const last = node.storage.lastIndex();
        const entries = last >= first ? node.storage.entries(first, last + 1, Infinity) : [];
        this.#logs.set(node.id, { version: node.storageVersion, log: { first, entries } });
        this.#checkCommitted(node, entries);
        changed = true;
      }
      this.#checkApplied(node);
    }
    if (!changed) return;
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i]!, b = list[j]!;
        checkLogMatching(a.id, this.#logs.get(a.id)!.log, b.id, this.#logs.get(b.id)!.log);
      }
    }
  }

  /** The highest index any node has applied: a read asked now must be served at or after it. */
  appliedFloor(nodes: Iterable<CheckedNode>): number {
    let floor = 0;
    for (const node of nodes) {
      const last = node.applied[node.applied.length - 1];
      floor = Math.max(floor, last?.index ?? 0, node.core.status().applied);
    }
    return floor;
  }

  /** Checks a read answered at `index` that was asked when {@link appliedFloor} was `floor`. */
  checkRead(node: number, context: number, index: number, floor: number): void {
    if (index < floor) {
      throw new Error(
        `linearizable reads: node ${node} answered read ${context} at index ${index}, but index ` +
          `${floor} was already applied when the read was asked`,
      );
    }
  }

  #checkLeader(node: CheckedNode): void {
    const s = node.core.status();
    if (s.role !== "leader") return;
    const known = this.#leaders.get(s.term);
    if (known !== undefined && known !== node.id) {
      throw new Error(`election safety: nodes ${known} and ${node.id} both lead term ${s.term}`);
    }
    this.#leaders.set(s.term, node.id);
  }

  #checkCommitMonotonic(node: CheckedNode): void {
    const durable = node.storage.initialState().hardState.commit;
    const before = this.#durableCommit.get(node.id) ?? 0;
    if (durable < before) {
      throw new Error(
        `commit went back: node ${node.id}'s stored commit fell from ${before} to ${durable}`,
      );
    }
    this.#durableCommit.set(node.id, durable);
    const live = node.core.status().commit;
    const liveBefore = this.#liveCommit.get(node.core) ?? 0;
    if (live < liveBefore) {
      throw new Error(
        `commit went back: node ${node.id}'s commit fell from ${liveBefore} to ${live}`,
      );
    }
    this.#liveCommit.set(node.core, live);
  }

  #checkCommitted(node: CheckedNode, entries: readonly Entry[]): void {
    const commit = node.storage.initialState().hardState.commit;
    for (const e of entries) {
      if (e.index > commit) break;
      const data = decoder.decode(e.data);
      const known = this.#committed.get(e.index);
      if (known === undefined) {
        this.#committed.set(e.index, { term: e.term, data, by: node.id });
      } else if (known.term !== e.term || known.data !== data) {
        throw new Error(
          `committed entries changed: index ${e.index} is committed on node ${known.by} as ` +
            `(term ${known.term}, ${JSON.stringify(known.data)}) and on node ${node.id} as ` +
            `(term ${e.term}, ${JSON.stringify(data)})`,
        );
      }
    }
  }

  #checkApplied(node: CheckedNode): void {
    const applied = node.applied;
    let from = this.#appliedSeen.get(node.id) ?? 0;
    // A restarted node rebuilds its list from a snapshot: recheck it all.
    if (from > applied.length) from = 0;
    for (let i = from; i < applied.length; i++) {
      const a = applied[i]!;
      if (i > 0 && applied[i - 1]!.index >= a.index) {
        throw new Error(
          `state machine safety: node ${node.id} applied index ${a.index} after ${
            applied[i - 1]!.index
          }`,
        );
      }
      const known = this.#appliedAt.get(a.index);
      if (known === undefined) this.#appliedAt.set(a.index, { command: a.command, by: node.id });
      else if (known.command !== a.command) {
        throw new Error(
          `state machine safety: index ${a.index} applied as ${
            JSON.stringify(known.command)
          } on node ` +
            `${known.by} and as ${JSON.stringify(a.command)} on node ${node.id}`,
        );
      }
    }
    this.#appliedSeen.set(node.id, applied.length);
  }
}

/** A node's durable log: its entries from `first` on. */
interface DurableLog {
  readonly first: number;
  readonly entries: readonly Entry[];
}

function checkLogMatching(a: number, la: DurableLog, b: number, lb: DurableLog): void {
  const lo = Math.max(la.first, lb.first);
  const hi = Math.min(la.first + la.entries.length, lb.first + lb.entries.length) - 1;
  // Find the highest shared index with equal terms; everything below must be equal.
  let top = -1;
  for (let i = hi; i >= lo; i--) {
    if (la.entries[i - la.first]!.term === lb.entries[i - lb.first]!.term) {
      top = i;
      break;
    }
  }
  for (let i = top; i >= lo; i--) {
    const x = la.entries[i - la.first]!, y = lb.entries[i - lb.first]!;
    if (x.term !== y.term || x.kind !== y.kind || !sameBytes(x.data, y.data)) {
      throw new Error(
        `log matching: nodes ${a} and ${b} agree on (index ${top}, term ${
          la.entries[top - la.first]!.term
        }) ` +
          `but differ at index ${i}: (term ${x.term}, kind ${x.kind}) against (term ${y.term}, kind ${y.kind})`,
      );
    }
  }
}

function sameBytes(x: Uint8Array, y: Uint8Array): boolean {
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
