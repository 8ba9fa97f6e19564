/**
 * The Raft core alone, on in-memory storage: what consensus itself costs in
 * CPU before any disk or network. A three-node cluster is driven
 * synchronously; every message is delivered at once.
 *
 * Run: `npx deno bench -A bench/raft_core_bench.ts`.
 */

import { EntryKind, RaftMessageKind } from "../src/codec/raft.ts";
import { type CoreMessage, MemoryStorage, RaftCore, seededRandom } from "../src/raft/mod.ts";

interface Node {
  core: RaftCore;
  storage: MemoryStorage;
}

function cluster(): Map<number, Node> {
  const nodes = new Map<number, Node>();
  for (const id of [1, 2, 3]) {
    const storage = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
    nodes.set(id, {
      storage,
      core: new RaftCore({ id, random: seededRandom(id), maxInflightMsgs: 1024 }, storage),
    });
  }
  nodes.get(1)!.core.campaign();
  settle(nodes);
  return nodes;
}

/** Handles Readies and delivers messages until nothing moves. */
function settle(nodes: Map<number, Node>): void {
  let moved = true;
  while (moved) {
    moved = false;
    const out: CoreMessage[] = [];
    for (const { core, storage } of nodes.values()) {
      if (!core.hasReady()) continue;
      moved = true;
      const rd = core.ready();
      if (rd.entries.length > 0 || rd.hardState !== undefined || rd.snapshot !== undefined) {
        storage.save(rd);
      }
      for (const m of rd.messages) out.push(m);
      core.advance();
    }
    for (const m of out) nodes.get(m.to)!.core.step(m);
  }
}

const payload = new Uint8Array(128);

for (const batch of [1, 64]) {
  const nodes = cluster();
  const leader = nodes.get(1)!.core;
  Deno.bench({
    name:
      `3 nodes, ${batch} proposal(s) of 128 B per round, until committed and applied everywhere`,
    group: "commit",
    n: batch === 1 ? 20_000 : 2_000,
    fn() {
      for (let i = 0; i < batch; i++) leader.propose(payload);
      settle(nodes);
    },
  });
}

{
  const storage = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
  const follower = new RaftCore({ id: 2, random: seededRandom(2) }, storage);
  let next = 1;
  Deno.bench({
    name: "follower: step an append of 64 entries of 128 B, persist and acknowledge",
    group: "follower",
    n: 5_000,
    fn() {
      const entries = [];
      for (let i = 0; i < 64; i++) {
        entries.push({ index: next + i, term: 1, kind: EntryKind.Normal, data: payload });
      }
      follower.step({
        kind: RaftMessageKind.AppendEntriesRequest,
        from: 1,
        to: 2,
        term: 1,
        prevLogIndex: next - 1,
        prevLogTerm: next === 1 ? 0 : 1,
        leaderCommit: next - 1,
        entries,
      });
      next += 64;
      const rd = follower.ready();
      storage.save(rd);
      follower.advance();
    },
  });
}

{
  const nodes = cluster();
  const leader = nodes.get(1)!.core;
  Deno.bench({
    name: "hasReady() on an idle leader",
    group: "idle",
    fn: () => void leader.hasReady(),
  });
  Deno.bench({
    name: "leader heartbeat round: tick, Ready, two responses",
    group: "idle",
    fn() {
      leader.tick();
      settle(nodes);
    },
  });
}
