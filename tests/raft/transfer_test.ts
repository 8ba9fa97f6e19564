/**
 * Leadership transfer (thesis §3.10): the leader stops taking proposals,
 * brings the target up to date, and tells it to campaign at once; an
 * unfinished transfer is abandoned after an election timeout.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { RaftMessageKind } from "../../src/codec/raft.ts";
import { NotLeaderError, ProposalDroppedError, TransferRefusedError } from "../../src/raft/mod.ts";
import { bytes, Network } from "./network.ts";

for (
  const config of [{ preVote: true, checkQuorum: true }, { preVote: false, checkQuorum: false }]
) {
  Deno.test(`leadership moves to an up-to-date follower at once (preVote ${config.preVote}, checkQuorum ${config.checkQuorum})`, () => {
    const net = new Network([1, 2, 3], { config });
    net.campaign(1);
    net.propose(1, "a");
    net.core(1).transferLeadership(3);
    net.stabilize();
    assertEquals(net.leader(), 3);
    assertEquals(net.core(1).status().leader, 3);
    const timeoutNow = net.delivered.filter((m) => m.kind === RaftMessageKind.TimeoutNow);
    assertEquals(timeoutNow.map((m) => [m.from, m.to]), [[1, 3]]);
    net.propose(3, "b");
    assertEquals(net.node(1).commands(), ["a", "b"]);
  });
}

Deno.test("leadership moves to a lagging follower only after it is brought up to date", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.isolate(3);
  for (let i = 0; i < 5; i++) net.propose(1, `c${i}`);
  net.heal();
  net.core(1).transferLeadership(3);
  net.process();
  assertEquals(
    net.queue.filter((m) => m.kind === RaftMessageKind.TimeoutNow).length,
    0,
    "not before it catches up",
  );
  net.stabilize();
  assertEquals(net.leader(), 3);
  assertEquals(net.node(3).commands(), ["c0", "c1", "c2", "c3", "c4"]);
});

Deno.test("a leader transferring its leadership refuses proposals, and takes them again once the transfer is abandoned", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.isolate(3);
  net.core(1).transferLeadership(3);
  const e = thrown(ProposalDroppedError, () => net.core(1).propose(bytes("x")));
  assertEquals(e.reason, "transfer_in_progress");
  assertEquals(net.core(1).status().leadTransferee, 3);
  // The target never hears (its TimeoutNow is lost): after an election
  // timeout the leader gives up and stays.
  for (let i = 0; i < 10; i++) {
    net.tick(1);
    net.stabilize();
  }
  assertEquals([net.core(1).status().leadTransferee, net.core(1).status().role], [0, "leader"]);
  net.heal();
  net.propose(1, "x");
  assertEquals(net.node(2).commands(), ["x"]);
});

Deno.test("a transfer to a non-voter is refused, and only the leader can transfer", () => {
  const net = new Network([1, 2, 3], { learners: [3] });
  net.campaign(1);
  const e = thrown(TransferRefusedError, () => net.core(1).transferLeadership(3));
  assertEquals(e.code, "TRANSFER_REFUSED");
  assert(e.message.includes("not a voter"), e.message);
  thrown(TransferRefusedError, () => net.core(1).transferLeadership(9));
  assertEquals(thrown(NotLeaderError, () => net.core(2).transferLeadership(1)).leader, 1);
  net.core(1).transferLeadership(1);
  assertEquals(net.core(1).status().leadTransferee, 0, "to itself: nothing to do");
});

Deno.test("a second transfer to another node replaces the first", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.isolate(3);
  net.core(1).transferLeadership(3);
  net.heal();
  net.core(1).transferLeadership(2);
  net.stabilize();
  assertEquals(net.leader(), 2);
});
