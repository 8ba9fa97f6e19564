/**
 * Linearizable reads by ReadIndex (thesis §6.4): the leader records its
 * commit index, confirms it still leads with a heartbeat round, and only
 * then releases the read; followers ask the leader. No lease reads.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { RaftMessageKind } from "../../src/codec/raft.ts";
import { NotLeaderError, RaftUsageError } from "../../src/raft/mod.ts";
import { Network } from "./network.ts";

const heartbeats = (net: Network) => net.queue.filter((m) => m.kind === RaftMessageKind.Heartbeat);

Deno.test("ReadIndex from a follower: the leader confirms its leadership, then the follower gets the read index", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.propose(1, "a");
  net.core(3).readIndex(42);
  net.stabilize();
  const commit = net.core(1).status().commit;
  assertEquals(net.node(3).readStates, [{ context: 42, index: commit, ok: true }]);
  const requests = net.delivered.filter((m) => m.kind === RaftMessageKind.ReadIndexRequest);
  assertEquals(requests.map((m) => [m.from, m.to]), [[3, 1]]);
});

Deno.test("a leader releases a read only after a quorum answered a heartbeat sent after the read", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.core(1).readIndex(7);
  net.process();
  const round = heartbeats(net);
  assertEquals(round.length, 2);
  assert(round.every((m) => m.kind === RaftMessageKind.Heartbeat && m.readContext > 0));
  assertEquals(net.node(1).readStates, []);
  // One follower's answer plus the leader itself is a quorum of three.
  net.queue = net.queue.filter((m) => m.to === 2);
  net.deliverAll();
  net.deliverAll();
  assertEquals(net.node(1).readStates.map((r) => [r.context, r.ok]), [[7, true]]);
});

Deno.test("a leader cut off from its quorum never confirms a read", () => {
  const net = new Network([1, 2, 3], { config: { checkQuorum: false } });
  net.campaign(1);
  net.isolate(1);
  net.core(1).readIndex(1);
  net.tick(1, 30);
  net.stabilize();
  assertEquals(net.node(1).readStates, []);
});

Deno.test("a new leader holds reads until an entry of its term commits", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.propose(1, "a");
  // Node 2 takes over; its first entry reaches no one for now.
  net.dropRules.push((m) => m.kind === RaftMessageKind.AppendEntriesRequest && m.from === 2);
  net.core(1).transferLeadership(2);
  net.stabilize();
  assertEquals(net.leader(), 2);
  net.core(2).readIndex(5);
  net.tick(2, 3);
  net.stabilize();
  assertEquals(net.node(2).readStates, [], "its commit index may still lag the old leader's");
  net.heal();
  net.tickAll(2);
  const s = net.core(2).status();
  assertEquals(net.node(2).readStates, [{ context: 5, index: s.commit, ok: true }]);
});

Deno.test("a burst of reads between two Readies costs one heartbeat per follower", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  for (let i = 1; i <= 50; i++) net.core(1).readIndex(i);
  net.process();
  assertEquals(heartbeats(net).length, 2);
  net.stabilize();
  assertEquals(
    net.node(1).readStates.map((r) => r.context),
    Array.from({ length: 50 }, (_, i) => i + 1),
  );
});

Deno.test("a leader that steps down fails the reads it holds, and the follower that asked learns it", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.core(1).readIndex(1);
  net.core(3).readIndex(2);
  net.process();
  // The follower's request reaches the leader; every confirming heartbeat is lost.
  net.queue = net.queue.filter((m) => m.kind === RaftMessageKind.ReadIndexRequest);
  net.deliverAll();
  net.queue = [];
  net.core(1).transferLeadership(2);
  net.stabilize();
  assertEquals(net.leader(), 2);
  assertEquals(net.node(1).readStates, [{ context: 1, index: 0, ok: false }]);
  assertEquals(net.node(3).readStates, [{ context: 2, index: 0, ok: false }]);
});

Deno.test("a node that knows no leader refuses a read, and reads past maxPendingReads are refused", () => {
  const net = new Network([1, 2, 3], { config: { maxPendingReads: 2 } });
  const e = thrown(NotLeaderError, () => net.core(2).readIndex(1));
  assertEquals(e.leader, 0);
  thrown(RaftUsageError, () => net.core(2).readIndex(-1));
  net.campaign(1);
  net.isolate(1);
  for (const context of [1, 2, 3]) net.core(1).readIndex(context);
  net.process();
  assertEquals(net.node(1).readStates, [{ context: 3, index: 0, ok: false }]);
});

Deno.test("a single-voter leader answers reads as soon as its first entry commits", () => {
  const net = new Network([1]);
  net.campaign(1);
  net.propose(1, "a");
  net.core(1).readIndex(9);
  net.process();
  assertEquals(net.node(1).readStates, [{
    context: 9,
    index: net.core(1).status().commit,
    ok: true,
  }]);
});
