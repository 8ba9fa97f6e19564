/**
 * Membership changes (thesis §4.1, single-server): learners that catch up
 * and are promoted, removals (of the leader too), one change at a time,
 * the rule that a leader first commits an entry of its own term, and the
 * encoding of a change in its log entry.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { ProtocolError } from "../../src/codec/errors.ts";
import {
  bootstrapUpdate,
  type ConfChange,
  ConfChangeRefusedError,
  ConfChangeType,
  decodeConfChange,
  encodeConfChange,
  MemoryStorage,
} from "../../src/raft/mod.ts";
import { bytes, Network } from "./network.ts";

const addLearner = (nodeId: number): ConfChange => ({
  type: ConfChangeType.AddLearner,
  nodeId,
  context: bytes(`addr ${nodeId}`),
});
const addVoter = (nodeId: number): ConfChange => ({
  type: ConfChangeType.AddVoter,
  nodeId,
  context: bytes(`addr ${nodeId}`),
});
const remove = (nodeId: number): ConfChange => ({
  type: ConfChangeType.RemoveNode,
  nodeId,
  context: new Uint8Array(0),
});

/** A bootstrapped three-voter cluster led by node 1, plus empty nodes `joiners`. */
function cluster(joiners: number[] = []) {
  const net = new Network([1, 2, 3], { bootstrap: "entries" });
  for (const id of joiners) net.addNode(id);
  net.process();
  net.campaign(1);
  return net;
}

Deno.test("a change encodes as version, type, node id and context, and decodes to the same", () => {
  const change: ConfChange = {
    type: ConfChangeType.AddLearner,
    nodeId: 300,
    context: bytes("10.0.0.4:7400"),
  };
  const data = encodeConfChange(change);
  assertEquals([...data.subarray(0, 5)], [1, 2, 0xac, 0x02, 13]);
  assertEquals(decodeConfChange(data), change);
});

Deno.test("malformed change data is a typed error naming the field", () => {
  const good = encodeConfChange(addVoter(4));
  const cases: [Uint8Array, string, string][] = [
    [new Uint8Array([2, ...good.subarray(1)]), "VALUE_OUT_OF_RANGE", "version"],
    [new Uint8Array([1, 9, 4, 0]), "VALUE_OUT_OF_RANGE", "type"],
    [new Uint8Array([1, 1, 0, 0]), "VALUE_OUT_OF_RANGE", "node id"],
    [good.subarray(0, 3), "TRUNCATED", "context length"],
    [new Uint8Array([...good, 7]), "TRAILING_BYTES", "unexpected bytes"],
  ];
  for (const [data, code, names] of cases) {
    const e = thrown(ProtocolError, () => decodeConfChange(data));
    assertEquals(e.code, code);
    assert(e.message.includes(names), e.message);
  }
});

Deno.test("a new cluster starts from one committed add-voter entry per member", () => {
  const update = bootstrapUpdate([{ id: 1 }, { id: 2, context: bytes("b") }]);
  assertEquals(update.hardState, { term: 1, vote: 0, commit: 2 });
  assertEquals(update.entries.map((e) => decodeConfChange(e.data)), [
    { type: ConfChangeType.AddVoter, nodeId: 1, context: new Uint8Array(0) },
    { type: ConfChangeType.AddVoter, nodeId: 2, context: bytes("b") },
  ]);
  thrown(RangeError, () => bootstrapUpdate([{ id: 1 }, { id: 1 }]));
  thrown(RangeError, () => bootstrapUpdate([]));
  const net = cluster();
  assertEquals(net.core(2).status().voters, [1, 2, 3]);
});

Deno.test("a learner catches up from an empty log, does not count for commit, and is promoted to voter", () => {
  const net = cluster([4]);
  net.propose(1, "before 4");
  net.proposeConfChange(1, addLearner(4));
  net.tickAll(2);
  // It learned the whole membership history from the log.
  assertEquals([net.core(4).status().voters, net.core(4).status().learners], [[1, 2, 3], [4]]);
  assertEquals(net.node(4).commands(), ["before 4"]);
  // Its acknowledgements do not make a quorum: with two voters cut off, nothing commits.
  net.partition([1, 4], [2, 3]);
  const commit = net.core(1).status().commit;
  net.core(1).propose(bytes("needs a voter"));
  net.stabilize();
  assertEquals(net.core(1).status().commit, commit);
  assertEquals(net.core(4).status().lastIndex, net.core(1).status().lastIndex);
  net.heal();
  net.tickAll(2);
  // Caught up: promote it.
  const peer4 = net.core(1).status().peers.find((p) => p.id === 4)!;
  assertEquals([peer4.isLearner, peer4.match], [true, net.core(1).status().lastIndex]);
  net.proposeConfChange(1, addVoter(4));
  for (const id of [1, 2, 3, 4]) assertEquals(net.core(id).status().voters, [1, 2, 3, 4]);
  // Now it counts: 1 and 4 alone are not a majority of four, 1, 2 and 4 are.
  net.partition([1, 4], [2, 3]);
  net.core(1).propose(bytes("two of four"));
  net.stabilize();
  assert(net.core(1).status().commit < net.core(1).status().lastIndex);
  net.heal();
  net.cut(1, 3);
  net.tickAll(2);
  assertEquals(net.node(4).commands(), ["before 4", "needs a voter", "two of four"]);
});

Deno.test("a learner added after the log was compacted gets the snapshot, then the entries that added it", () => {
  const net = cluster([4]);
  net.propose(1, "a");
  net.node(1).compact();
  net.proposeConfChange(1, addLearner(4));
  net.tickAll(3);
  assertEquals(net.node(4).commands(), ["a"]);
  assertEquals(net.core(4).status().learners, [4]);
});

Deno.test("a removed leader steps down once it applies its removal, and the rest elect a leader without it", () => {
  const net = cluster();
  net.propose(1, "a");
  net.proposeConfChange(1, remove(1));
  assertEquals(net.core(1).status().role, "follower");
  assertEquals(net.core(2).status().voters, [2, 3]);
  let rounds = 0;
  while (net.leader() === 0) {
    net.tickAll(1);
    assert(++rounds < 100, "no new leader");
  }
  const leader = net.leader();
  assert(leader === 2 || leader === 3);
  net.propose(leader, "b");
  assertEquals(net.node(leader === 2 ? 3 : 2).commands(), ["a", "b"]);
  // The removed node never campaigns again.
  net.tick(1, 100);
  assertEquals(net.core(1).status().role, "follower");
});

Deno.test("removing a follower shrinks the quorum to the remaining voters", () => {
  const net = cluster();
  net.proposeConfChange(1, remove(3));
  net.crash(3);
  net.propose(1, "with two of two");
  assertEquals(net.node(2).commands(), ["with two of two"]);
  assertEquals(net.core(1).status().peers.map((p) => p.id), [1, 2]);
});

Deno.test("a second membership change is refused while the first is not applied", () => {
  const net = cluster([4, 5]);
  net.core(1).proposeConfChange(addLearner(4));
  const e = thrown(ConfChangeRefusedError, () => net.core(1).proposeConfChange(addLearner(5)));
  assertEquals(e.code, "CONF_CHANGE_PENDING");
  net.stabilize();
  net.proposeConfChange(1, addLearner(5));
  assertEquals(net.core(1).status().learners, [4, 5]);
});

Deno.test("a new leader refuses a membership change until it has committed an entry of its own term", () => {
  const net = cluster([4]);
  // Node 2 takes over; the appends that would commit its first entry are held back.
  net.dropRules.push((m) => m.kind === 5 && m.from === 2);
  net.core(1).transferLeadership(2);
  net.stabilize();
  assertEquals(net.leader(), 2);
  const e = thrown(ConfChangeRefusedError, () => net.core(2).proposeConfChange(addLearner(4)));
  assertEquals(e.code, "CONF_CHANGE_TOO_EARLY");
  assert(e.message.includes("has not committed an entry of its term"), e.message);
  net.heal();
  net.tickAll(2);
  net.proposeConfChange(2, addLearner(4));
  assertEquals(net.core(2).status().learners, [4]);
});

Deno.test("changes that make no sense are refused, naming why", () => {
  const net = cluster();
  const leader = net.core(1);
  const cases: [ConfChange, string][] = [
    [addVoter(2), "node 2 is already a voter"],
    [remove(9), "node 9 is not a member"],
  ];
  for (const [change, why] of cases) {
    const e = thrown(ConfChangeRefusedError, () => leader.proposeConfChange(change));
    assertEquals(e.code, "CONF_CHANGE_INVALID");
    assert(e.message.includes(why), e.message);
  }
  net.proposeConfChange(1, addLearner(4));
  assert(
    thrown(ConfChangeRefusedError, () => leader.proposeConfChange(addLearner(4))).message.includes(
      "already a learner",
    ),
  );
  assert(
    thrown(ConfChangeRefusedError, () => leader.proposeConfChange(addLearner(2))).message.includes(
      "not supported",
    ),
  );
  net.proposeConfChange(1, remove(2));
  net.proposeConfChange(1, remove(3));
  assert(
    thrown(ConfChangeRefusedError, () => leader.proposeConfChange(remove(1))).message.includes(
      "the last voter",
    ),
  );
});

Deno.test("the change's context reaches every node with the committed entry", () => {
  const net = cluster([4]);
  net.proposeConfChange(1, addLearner(4));
  for (const id of [1, 2, 3]) {
    const entries = net.node(id).readies.flatMap((r) => r.committedEntries).filter((e) =>
      e.kind === 1
    );
    const last = decodeConfChange(entries.at(-1)!.data);
    assertEquals(new TextDecoder().decode(last.context), "addr 4");
  }
});

Deno.test("a node restarted after membership changes has the same membership", () => {
  const net = cluster([4]);
  net.proposeConfChange(1, addLearner(4));
  net.proposeConfChange(1, addVoter(4));
  net.proposeConfChange(1, remove(3));
  net.node(2).compact();
  net.crash(2);
  net.restart(2);
  net.process();
  assertEquals([net.core(2).status().voters, net.core(2).status().learners], [[1, 2, 4], []]);
  // The same through a storage that keeps only the bootstrap entries' effect in its log.
  const storage = new MemoryStorage();
  storage.save(bootstrapUpdate([{ id: 7 }]));
  assertEquals(
    storage.initialState().confState.voters,
    [],
    "membership comes from the log, not the snapshot",
  );
});

Deno.test("a candidate that applies its own removal stops campaigning", () => {
  const net = new Network([1, 2, 3], { config: { preVote: false } });
  net.core(3).campaign();
  assertEquals(net.core(3).status().role, "candidate");
  net.core(3).applyConfChange(remove(3));
  assertEquals(net.core(3).status().role, "follower");
  // The votes it asked for no longer make it leader.
  net.stabilize();
  assert(net.leader() !== 3);
});
