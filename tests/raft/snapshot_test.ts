/**
 * Snapshots (Raft §7): a follower that needs compacted entries gets the
 * leader's snapshot, installs it and continues from the log; stale or
 * redundant snapshots change nothing; a restarted node rebuilds from its
 * snapshot and log.
 */

import { assert, assertEquals } from "../assert.ts";
import { RaftMessageKind } from "../../src/codec/raft.ts";
import { SNAPSHOT_MESSAGE } from "../../src/raft/mod.ts";
import { bytes, Network } from "./network.ts";

function lagging(keepEntries = 0) {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.propose(1, "before");
  net.isolate(3);
  for (let i = 0; i < 20; i++) net.propose(1, `while 3 was away ${i}`);
  const snapshot = net.node(1).compact(keepEntries);
  return { net, snapshot };
}

Deno.test("a lagging follower is fed by a snapshot, then by the log", () => {
  const { net, snapshot } = lagging();
  assert(
    net.node(1).storage.firstIndex() > net.node(3).storage.lastIndex() + 1,
    "node 3 needs compacted entries",
  );
  net.heal();
  net.tickAll(3);
  const sent = net.delivered.filter((m) => m.kind === SNAPSHOT_MESSAGE);
  assertEquals(
    sent.map((m) => [m.from, m.to, m.kind === SNAPSHOT_MESSAGE && m.snapshot.meta.index]),
    [
      [1, 3, snapshot.meta.index],
    ],
  );
  assertEquals(net.node(3).storage.snapshot().meta.index, snapshot.meta.index);
  net.propose(1, "after");
  assertEquals(net.node(3).commands(), net.node(1).commands());
  assertEquals(net.node(3).commands().at(-1), "after");
  const peer = net.core(1).status().peers.find((p) => p.id === 3)!;
  assertEquals([peer.state, peer.match], ["replicate", net.core(1).status().lastIndex]);
});

Deno.test("a follower lagging less than the entries kept behind a snapshot gets entries, not the snapshot", () => {
  const { net } = lagging(50);
  net.heal();
  net.tickAll(3);
  assertEquals(net.delivered.filter((m) => m.kind === SNAPSHOT_MESSAGE).length, 0);
  assertEquals(net.node(3).commands(), net.node(1).commands());
});

Deno.test("a snapshot lost in transit is reported, and the leader sends it again once the follower answers", () => {
  const { net } = lagging();
  net.heal();
  let lost = 0;
  net.dropRules.push((m) => m.kind === SNAPSHOT_MESSAGE && lost++ === 0);
  net.tickAll(1);
  assertEquals(lost, 1);
  const peer = net.core(1).status().peers.find((p) => p.id === 3)!;
  assertEquals(peer.state, "probe", "a failed report sends the leader back to probing");
  net.tickAll(3);
  assertEquals(net.delivered.filter((m) => m.kind === SNAPSHOT_MESSAGE).length, 1);
  assertEquals(net.node(3).commands(), net.node(1).commands());
});

Deno.test("a follower ignores a snapshot at or below its commit index and tells the leader how far it is", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.propose(1, "a");
  net.propose(1, "b");
  const old = net.node(1).compact();
  net.propose(1, "c");
  const c2 = net.core(2);
  const commit = c2.status().commit;
  c2.step({ kind: SNAPSHOT_MESSAGE, from: 1, to: 2, term: 1, snapshot: old });
  const rd = c2.ready();
  c2.advance();
  assertEquals(rd.snapshot, undefined);
  const answer = rd.messages[0]!;
  assert(answer.kind === RaftMessageKind.AppendEntriesResponse);
  assertEquals([answer.success, answer.matchIndex], [true, commit]);
  assertEquals(net.node(2).commands(), ["a", "b", "c"]);
});

Deno.test("a follower that already holds a snapshot's last entry keeps its log and only commits up to it", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.propose(1, "a");
  // Node 2 receives "b" but never hears that it committed.
  net.core(1).propose(bytes("b"));
  net.deliverAll();
  net.dropRules.push((m) => m.to === 2);
  net.stabilize();
  const c2 = net.core(2);
  const snapshot = net.node(1).compact();
  assertEquals(c2.status().lastIndex, snapshot.meta.index);
  assert(c2.status().commit < snapshot.meta.index);
  c2.step({ kind: SNAPSHOT_MESSAGE, from: 1, to: 2, term: 1, snapshot });
  const rd = c2.ready();
  assertEquals(rd.snapshot, undefined, "no restore: the log agrees at the snapshot's index");
  assertEquals(rd.committedEntries.map((e) => e.index), [snapshot.meta.index]);
  c2.advance();
  assertEquals(c2.status().commit, snapshot.meta.index);
});

Deno.test("a restarted node rebuilds its state machine from its snapshot and log, losing nothing it persisted", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  for (let i = 0; i < 5; i++) net.propose(1, `c${i}`);
  net.node(2).compact(1);
  for (let i = 5; i < 8; i++) net.propose(1, `c${i}`);
  const before = net.node(2).commands();
  net.crash(2);
  net.restart(2);
  net.process();
  assertEquals(net.node(2).commands(), before);
  assertEquals(net.core(2).status().commit, net.core(1).status().commit);
});
