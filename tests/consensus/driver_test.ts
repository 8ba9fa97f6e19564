/**
 * The consensus driver's promises to its callers, on the simulated cluster
 * (tests/sim/): real drivers, cores and state machines over a virtual
 * clock, network and disk.
 */

import { assert, assertEquals } from "../assert.ts";
import { ConsensusError } from "../../src/consensus/driver.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { RaftMessageKind } from "../../src/codec/raft.ts";
import { MemberRecordSchema } from "../../src/rpc/gen/blixard/v1/state_pb.ts";
import { ConfChangeType, StorageFailure } from "../../src/raft/mod.ts";
import { SimCluster } from "../sim/cluster.ts";
import { elect, outcomeOf, runFor, runUntil, stopAll } from "../sim/drive.ts";

Deno.test("a read a follower forwarded to a leader that crashed fails with UNAVAILABLE instead of waiting forever", async () => {
  const c = new SimCluster({ seed: 3, members: [1, 2, 3] });
  c.startAll();
  const leader = await elect(c);
  const follower = c.running.find((n) => n !== leader)!;
  assertEquals(follower.driver!.role.leader, leader.id);
  c.crash(leader.id);
  let outcome: unknown;
  follower.driver!.read((s) => s.appliedIndex).then((v) => outcome = v, (e) => outcome = e);
  await c.scheduler.runUntil(c.scheduler.now() + 5_000, undefined, () => outcome !== undefined);
  assert(outcome instanceof ConsensusError, `the read ended with ${outcome}`);
  assertEquals(outcome.code, "UNAVAILABLE");
  stopAll(c);
});

/** Runs until `p` settles and checks it failed with `code`. */
async function expectFailure(c: SimCluster, p: Promise<unknown>, code: ConsensusError["code"]) {
  const outcome = await outcomeOf(c, p);
  assert(outcome instanceof ConsensusError, `the proposal ended with ${outcome}`);
  assertEquals(outcome.code, code);
}

/** Isolates the leader with two proposals it accepted and never sent, and waits for a new leader. */
async function strandProposals(c: SimCluster) {
  const old = await elect(c);
  await c.scheduler.runUntil(c.scheduler.now() + 100);
  const before = old.driver!.status().lastIndex;
  const first = old.driver!.propose({ kind: "metadata_put", key: "a", value: "first" });
  const second = old.driver!.propose({ kind: "metadata_put", key: "a", value: "second" });
  c.network.isolate(old.id, c.ids);
  await c.scheduler.runUntil(c.scheduler.now() + 2_000, undefined, () => {
    const l = c.recognizedLeader();
    return l !== undefined && l !== old;
  });
  const leader = c.recognizedLeader();
  assert(leader && leader !== old, "no new leader while the old one is isolated");
  return { old, leader, before, first, second };
}

Deno.test("a proposal whose index a new leader's membership change took is answered LOST", async () => {
  const c = new SimCluster({ seed: 11, members: [1, 2, 3] });
  c.startAll();
  const { leader, before, first, second } = await strandProposals(c);
  // The new leader's no-op takes the first proposal's index once it commits;
  // its membership change then takes the second's.
  await c.scheduler.runUntil(c.scheduler.now() + 100);
  c.addEmptyNode(4);
  c.start(4);
  const change = leader.driver!.changeMembership({
    type: ConfChangeType.AddLearner,
    nodeId: 4,
    context: new Uint8Array(0),
  });
  assertEquals(leader.driver!.status().lastIndex, before + 2);
  assertEquals(await outcomeOf(c, change), undefined);
  c.network.heal();
  await expectFailure(c, first, "LOST");
  await expectFailure(c, second, "LOST");
  stopAll(c);
});

Deno.test("a proposal a leader's snapshot covers before its node applied it is answered UNKNOWN", async () => {
  const c = new SimCluster({
    seed: 12,
    members: [1, 2, 3],
    snapshotEveryEntries: 5,
    keepEntries: 0,
  });
  c.startAll();
  const { leader, first, second } = await strandProposals(c);
  // The new leader compacts its log far past the stranded entries.
  for (let i = 0; i < 20; i++) {
    const put = leader.driver!.propose({ kind: "metadata_put", key: "b", value: `v${i}` });
    assert(((await outcomeOf(c, put)) as { ok: boolean }).ok);
  }
  assert(leader.driver!.status().firstIndex > leader.driver!.status().lastIndex - 5);
  c.network.heal();
  await expectFailure(c, first, "UNKNOWN");
  await expectFailure(c, second, "UNKNOWN");
  stopAll(c);
});

Deno.test("a proposal cut from its node's log in a quiet cluster is answered UNKNOWN once its time is up", async () => {
  const c = new SimCluster({ seed: 13, members: [1, 2, 3], driver: { proposalTimeoutMs: 1_000 } });
  c.startAll();
  const { first, second } = await strandProposals(c);
  c.network.heal();
  // The new leader's no-op takes the first proposal's index: a definite answer.
  await expectFailure(c, first, "LOST");
  // Nothing is ever written at the second's index.
  await expectFailure(c, second, "UNKNOWN");
  stopAll(c);
});

Deno.test("a disk read that fails while the core steps a message stops the node instead of going on", async () => {
  const c = new SimCluster({ seed: 14, members: [1, 2, 3] });
  const failures: Error[] = [];
  c.onNodeFailure = (_, error) => failures.push(error);
  c.startAll();
  const leader = await elect(c);
  await c.scheduler.runUntil(c.scheduler.now() + 100);
  const follower = c.running.find((n) => n !== leader)!;
  const s = c.status(follower);
  follower.storage.failReadAfter(0);
  // An append after the follower's last stable entry: checking it reads the disk.
  follower.driver!.receive({
    kind: RaftMessageKind.AppendEntriesRequest,
    from: leader.id,
    to: follower.id,
    term: s.term,
    prevLogIndex: s.lastIndex,
    prevLogTerm: follower.storage.stored.term(s.lastIndex),
    leaderCommit: s.commit,
    entries: [],
  });
  assertEquals(failures.length, 1, "the driver went on after a failed read");
  assert(failures[0] instanceof StorageFailure);
  assert(!follower.up, "the node still runs");
  stopAll(c);
});

/** Adds node 4 with an empty disk as a learner, through the leader; returns the leader. */
async function addLearner(c: SimCluster) {
  const leader = await elect(c);
  c.addEmptyNode(4);
  c.start(4);
  const record = create(MemberRecordSchema, { nodeId: 4n, grpcAddress: "10.0.0.4:7400" });
  const added = leader.driver!.changeMembership({
    type: ConfChangeType.AddLearner,
    nodeId: 4,
    context: toBinary(MemberRecordSchema, record),
  });
  assertEquals(await outcomeOf(c, added), undefined);
  return leader;
}

Deno.test("a node added as a learner becomes a voter once it caught up, with no second step, keeping the record it joined with", async () => {
  const c = new SimCluster({ seed: 15, members: [1, 2, 3] });
  c.startAll();
  const leader = await addLearner(c);
  await runUntil(c, 2_000, () => c.status(leader).voters.includes(4));
  const s = c.status(leader);
  assertEquals(s.voters, [1, 2, 3, 4]);
  assertEquals(s.learners, []);
  await runFor(c, 50);
  for (const id of [1, 2, 3, 4]) {
    assertEquals(c.node(id).driver!.state.member(4)?.grpcAddress, "10.0.0.4:7400");
  }
  stopAll(c);
});

Deno.test("with promoteLearners off, a learner that caught up stays a learner", async () => {
  const c = new SimCluster({ seed: 15, members: [1, 2, 3], driver: { promoteLearners: false } });
  c.startAll();
  const leader = await addLearner(c);
  await runFor(c, 2_000);
  const s = c.status(leader);
  assertEquals(s.learners, [4]);
  assertEquals(s.peers.find((p) => p.id === 4)?.match, s.lastIndex);
  stopAll(c);
});
