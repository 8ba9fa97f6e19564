/**
 * The safety properties of Raft, checked against a simulated cluster while
 * it runs (Raft §5.2 to §5.4, Figure 3):
 * - Election Safety: at most one leader per term.
 * - Leader Append-Only: a leader never overwrites or deletes entries of its
 *   own term in its log while it leads.
 * - Log Matching: two logs with an entry of the same index and term hold the
 *   same entries up to it.
 * - Leader Completeness / State Machine Safety: an entry once committed is
 *   never changed or lost, and every node applies the same entries in the
 *   same order.
 * - A node's commit index never goes back within one run of it.
 * - A node that stopped (crashed, or its disk failed) sends nothing more.
 *
 * A violation throws {@link InvariantViolation} with what was seen.
 */

import type { Entry } from "../../src/codec/raft.ts";
import type { SimCluster, SimNode } from "./cluster.ts";

/** A broken safety property. */
export class InvariantViolation extends Error {
  override readonly name = "InvariantViolation";
}

/** An entry's identity for comparison: term, kind and data. */
function fingerprint(e: Entry): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < e.data.length; i++) h = Math.imul(h ^ e.data[i]!, 0x01000193);
  return `${e.term}/${e.kind}/${e.data.length}/${h >>> 0}`;
}

function entriesOf(node: SimNode, lo: number, hi: number): Entry[] {
  if (lo > hi) return [];
  return node.storage.stored.entries(lo, hi + 1, Number.MAX_SAFE_INTEGER);
}

/** Checks a cluster as it runs; keeps what it learned between checks. */
export class InvariantChecker {
  readonly #cluster: SimCluster;
  /** term → the node that led it. */
  readonly #leaders = new Map<number, number>();
  /** index → fingerprint of the committed entry there. */
  readonly #committed = new Map<number, string>();
  /** `node/term` → entries of that term the node held while leading it. */
  readonly #ownEntries = new Map<string, Map<number, string>>();
  checks = 0;
  /** Told the first time a node is seen leading a term. */
  onNewLeader: ((node: SimNode, term: number) => void) | null = null;

  constructor(cluster: SimCluster) {
    this.#cluster = cluster;
  }

  /** The cheap checks, after every event. */
  afterEvent(): void {
    this.checks++;
    if (this.#cluster.strays.length > 0) {
      throw new InvariantViolation(`fail-stop: ${this.#cluster.strays.join("; ")}`);
    }
    for (const node of this.#cluster.running) {
      const s = this.#cluster.status(node);
      if (s.role === "leader") {
        const known = this.#leaders.get(s.term);
        if (known !== undefined && known !== node.id) {
          throw new InvariantViolation(
            `Election Safety: nodes ${known} and ${node.id} both led term ${s.term}`,
          );
        }
        if (known === undefined) {
          this.#leaders.set(s.term, node.id);
          this.onNewLeader?.(node, s.term);
        }
      }
      if (s.commit < node.commitSeen) {
        throw new InvariantViolation(
          `commit went back on node ${node.id}: ${node.commitSeen} → ${s.commit} (life ${node.lives})`,
        );
      }
      node.commitSeen = s.commit;
    }
  }

  /** The log checks, which read every log: every few events and at the end. */
  logs(): void {
    const nodes = this.#cluster.ids.map((id) => this.#cluster.nodes.get(id)!);
    for (const node of nodes) this.#checkCommitted(node);
    for (const node of this.#cluster.running) this.#checkLeaderAppendOnly(node);
    for (let i = 0; i < nodes.length; i++) {
      for (let j = i + 1; j < nodes.length; j++) this.#checkMatching(nodes[i]!, nodes[j]!);
    }
  }

  /** Committed entries, as far as this node's durable commit reaches, agree with what was committed before. */
  #checkCommitted(node: SimNode): void {
    const commit = node.storage.stored.initialState().hardState.commit;
    const first = node.storage.stored.firstIndex();
    const last = Math.min(commit, node.storage.stored.lastIndex());
    const entries = entriesOf(node, first, last);
    for (const e of entries) {
      const f = fingerprint(e);
      const before = this.#committed.get(e.index);
      if (before === undefined) this.#committed.set(e.index, f);
      else if (before !== f) {
        throw new InvariantViolation(
          `State Machine Safety: committed entry ${e.index} was ${before}, node ${node.id} holds ${f}`,
        );
      }
    }
  }

  #checkLeaderAppendOnly(node: SimNode): void {
    const s = this.#cluster.status(node);
    const key = `${node.id}/${s.term}`;
    const held = this.#ownEntries.get(key);
    if (s.role !== "leader") return;
    const first = node.storage.stored.firstIndex();
    const entries = entriesOf(node, first, node.storage.stored.lastIndex()).filter((e) =>
      e.term === s.term
    );
    const now = new Map(entries.map((e) => [e.index, fingerprint(e)]));
    if (held) {
      for (const [index, f] of held) {
        if (index < first) continue; // compacted behind a snapshot, not overwritten
        if (now.get(index) !== f) {
          throw new InvariantViolation(
            `Leader Append-Only: node ${node.id}, leading term ${s.term}, lost or changed its entry ${index}`,
          );
        }
      }
    }
    this.#ownEntries.set(key, now);
  }

  #checkMatching(a: SimNode, b: SimNode): void {
    const lo = Math.max(a.storage.stored.firstIndex(), b.storage.stored.firstIndex());
    const hi = Math.min(a.storage.stored.lastIndex(), b.storage.stored.lastIndex());
    if (lo > hi) return;
    const ea = entriesOf(a, lo, hi);
    const eb = entriesOf(b, lo, hi);
    // The highest index where both hold the same term: everything below must match.
    let top = -1;
    for (let i = ea.length - 1; i >= 0; i--) {
      if (ea[i]!.term === eb[i]!.term) {
        top = i;
        break;
      }
    }
    for (let i = 0; i <= top; i++) {
      if (fingerprint(ea[i]!) !== fingerprint(eb[i]!)) {
        throw new InvariantViolation(
          `Log Matching: nodes ${a.id} and ${b.id} agree at index ${ea[top]!.index} (term ${
            ea[top]!.term
          }) but differ at ${ea[i]!.index}: ${fingerprint(ea[i]!)} vs ${fingerprint(eb[i]!)}`,
        );
      }
    }
  }
}
