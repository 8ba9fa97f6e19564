/**
 * Leader election (Raft §5.2, §5.4.1), PreVote (thesis §9.6), CheckQuorum
 * and leader stickiness (thesis §4.2.3, §6.2): who campaigns when, who votes
 * for whom, and which disruptions the cluster shrugs off.
 */

import { assert, assertEquals } from "../assert.ts";
import { EntryKind, RaftMessageKind } from "../../src/codec/raft.ts";
import { type CoreMessage, MemoryStorage, RaftCore, seededRandom } from "../../src/raft/mod.ts";
import { Network } from "./network.ts";

const storages = new WeakMap<RaftCore, MemoryStorage>();

function lone(id: number, voters: number[], seed = 1, options = {}) {
  const storage = new MemoryStorage({ confState: { voters, learners: [] } });
  const core = new RaftCore(
    { id, random: seededRandom(seed), electionTicks: 10, ...options },
    storage,
  );
  storages.set(core, storage);
  return core;
}

/** Handles `core`'s Ready as a driver would (persist, then advance); returns its messages. */
function drain(core: RaftCore): CoreMessage[] {
  if (!core.hasReady()) return [];
  const rd = core.ready();
  storages.get(core)!.save(rd);
  core.advance();
  return [...rd.messages];
}

Deno.test("a follower that hears from no leader campaigns after a timeout drawn from [electionTicks, 2*electionTicks)", () => {
  const seen = new Set<number>();
  for (let seed = 1; seed <= 40; seed++) {
    const core = lone(1, [1, 2, 3], seed);
    let ticks = 0;
    while (core.status().role === "follower") {
      core.tick();
      ticks++;
      assert(ticks < 20, `seed ${seed}: still a follower after ${ticks} ticks`);
    }
    assert(ticks >= 10, `seed ${seed}: campaigned after ${ticks} ticks`);
    seen.add(ticks);
  }
  // Randomized: different seeds time out at different ticks, so split votes end.
  assert(seen.size >= 5, `only ${[...seen]} seen`);
});

Deno.test("with PreVote a campaign first asks for pre-votes for the next term without raising its own", () => {
  const core = lone(1, [1, 2, 3]);
  core.campaign();
  const s = core.status();
  assertEquals([s.role, s.term, s.vote], ["pre-candidate", 0, 0]);
  const requests = drain(core);
  assertEquals(requests.map((m) => [m.kind, m.to, m.term]), [
    [RaftMessageKind.PreVoteRequest, 2, 1],
    [RaftMessageKind.PreVoteRequest, 3, 1],
  ]);
});

Deno.test("a pre-candidate granted a majority campaigns for real and wins, then appends an empty entry of its term", () => {
  const core = lone(1, [1, 2, 3]);
  core.campaign();
  drain(core);
  core.step({ kind: RaftMessageKind.PreVoteResponse, from: 2, to: 1, term: 1, granted: true });
  assertEquals([core.status().role, core.status().term, core.status().vote], ["candidate", 1, 1]);
  // The vote for itself is persisted in the same Ready that asks for votes.
  const asking = core.ready();
  storages.get(core)!.save(asking);
  core.advance();
  assertEquals(asking.hardState, { term: 1, vote: 1, commit: 0 });
  assertEquals(asking.messages.map((m) => [m.kind, m.to, m.term]), [
    [RaftMessageKind.VoteRequest, 2, 1],
    [RaftMessageKind.VoteRequest, 3, 1],
  ]);
  core.step({ kind: RaftMessageKind.VoteResponse, from: 3, to: 1, term: 1, granted: true });
  assertEquals(core.status().role, "leader");
  const rd = core.ready();
  assertEquals(rd.entries.map((e) => [e.index, e.term, e.kind, e.data.length]), [[
    1,
    1,
    EntryKind.Normal,
    0,
  ]]);
  assertEquals(rd.softState, { role: "leader", leader: 1 });
  core.advance();
});

Deno.test("a candidate refused by a majority goes back to following", () => {
  const core = lone(1, [1, 2, 3], 1, { preVote: false });
  core.campaign();
  drain(core);
  core.step({ kind: RaftMessageKind.VoteResponse, from: 2, to: 1, term: 1, granted: false });
  assertEquals(core.status().role, "candidate");
  core.step({ kind: RaftMessageKind.VoteResponse, from: 3, to: 1, term: 1, granted: false });
  assertEquals([core.status().role, core.status().term], ["follower", 1]);
});

Deno.test("a node votes at most once per term, and again for the same candidate if asked twice", () => {
  const core = lone(1, [1, 2, 3]);
  const ask = (from: number) =>
    core.step({
      kind: RaftMessageKind.VoteRequest,
      from,
      to: 1,
      term: 5,
      lastLogIndex: 0,
      lastLogTerm: 0,
      transfer: false,
    });
  ask(2);
  ask(3);
  ask(2);
  const answers = drain(core).map((m) =>
    m.kind === RaftMessageKind.VoteResponse ? [m.to, m.granted] : []
  );
  assertEquals(answers, [[2, true], [3, false], [2, true]]);
  assertEquals([core.status().term, core.status().vote], [5, 2]);
});

Deno.test("a node refuses its vote to a candidate whose log is behind its own (§5.4.1)", () => {
  // Without CheckQuorum, so no lease silences the requests.
  const net = new Network([1, 2, 3], { config: { preVote: false, checkQuorum: false } });
  net.campaign(1);
  net.propose(1, "x");
  // Node 3 holds (index 2, term 1); a candidate with less is refused.
  const c3 = net.core(3);
  for (
    const [lastLogIndex, lastLogTerm, granted] of [[1, 1, false], [2, 0, false], [
      2,
      1,
      true,
    ]] as const
  ) {
    c3.step({
      kind: RaftMessageKind.VoteRequest,
      from: 2,
      to: 3,
      term: 10 + lastLogIndex * 2 + lastLogTerm,
      lastLogIndex,
      lastLogTerm,
      transfer: false,
    });
    const answer = net.node(3).processReady().find((m) => m.kind === RaftMessageKind.VoteResponse);
    assert(answer?.kind === RaftMessageKind.VoteResponse, "node 3 answered");
    assertEquals(answer.granted, granted);
  }
});

Deno.test("a partitioned node rejoining under PreVote does not disrupt the leader", () => {
  // etcd's testdata/prevote.txt and TestDisruptiveFollowerPreVote.
  for (const checkQuorum of [false, true]) {
    const net = new Network([1, 2, 3], { config: { preVote: true, checkQuorum } });
    net.campaign(1);
    net.isolate(3);
    net.propose(1, "while 3 was away");
    // Node 3 times out again and again; its pre-votes never reach anyone.
    for (let i = 0; i < 100; i++) net.tick(3);
    net.stabilize();
    assertEquals(net.core(3).status().term, 1, "a pre-candidate does not raise its term");
    net.heal();
    net.core(3).campaign();
    net.stabilize();
    // Refused: its log is behind (and, under CheckQuorum, the others have a leader).
    for (const id of [1, 2, 3]) assertEquals(net.core(id).status().term, 1);
    assertEquals(net.leader(), 1);
    net.tickAll(5);
    assertEquals(net.node(3).commands(), ["while 3 was away"]);
  }
});

Deno.test("without PreVote the same rejoining node forces a new term", () => {
  const net = new Network([1, 2, 3], { config: { preVote: false, checkQuorum: false } });
  net.campaign(1);
  net.isolate(3);
  net.propose(1, "x");
  for (let i = 0; i < 40; i++) net.tick(3);
  net.heal();
  net.core(3).campaign();
  net.stabilize();
  assert(net.core(1).status().term > 1, "the leader was deposed by the higher term");
});

Deno.test("a leader isolated from its quorum steps down under CheckQuorum, and the rest elect another", () => {
  const net = new Network([1, 2, 3], { config: { checkQuorum: true } });
  net.campaign(1);
  net.isolate(1);
  // One full quorum-check period with nobody answering.
  net.tick(1, 20);
  assertEquals([net.core(1).status().role, net.core(1).status().leader], ["follower", 0]);
  let rounds = 0;
  while (net.leader() === 0 || net.leader() === 1) {
    net.tickAll(1);
    assert(++rounds < 100, "no new leader");
  }
  const newLeader = net.leader();
  assert(newLeader === 2 || newLeader === 3);
  net.heal();
  net.tickAll(3);
  assertEquals(net.core(1).status().leader, newLeader);
});

Deno.test("a leader without CheckQuorum stays leader while cut off", () => {
  const net = new Network([1, 2, 3], { config: { checkQuorum: false } });
  net.campaign(1);
  net.isolate(1);
  net.tick(1, 100);
  assertEquals(net.core(1).status().role, "leader");
});

Deno.test("followers that heard from their leader recently ignore vote requests, except a transfer's", () => {
  const net = new Network([1, 2, 3], { config: { checkQuorum: true, preVote: false } });
  net.campaign(1);
  net.tickAll(1);
  const c2 = net.core(2);
  const request = {
    kind: RaftMessageKind.VoteRequest,
    from: 3,
    to: 2,
    term: 9,
    lastLogIndex: 99,
    lastLogTerm: 9,
  } as const;
  c2.step({ ...request, transfer: false });
  assertEquals([c2.status().term, c2.status().leader], [1, 1], "ignored inside the lease");
  c2.step({ ...request, transfer: true });
  assertEquals([c2.status().term, c2.status().vote], [9, 3], "a transfer's request is heard");
});

Deno.test("a node stuck at a higher term after a partition is freed without hurting safety (CheckQuorum without PreVote)", () => {
  // etcd's TestFreeStuckCandidateWithCheckQuorum: node 3's term runs ahead
  // while cut off; the leader ignores its votes (lease), but 3's answer to
  // the leader's next append carries the higher term and forces an election.
  const net = new Network([1, 2, 3], { config: { checkQuorum: true, preVote: false } });
  net.campaign(1);
  net.isolate(3);
  for (let i = 0; i < 60; i++) net.tick(3);
  const stuck = net.core(3).status().term;
  assert(stuck > 2, `term ${stuck}`);
  net.heal();
  net.tickAll(1);
  assert(net.core(1).status().term >= stuck, "the leader learned the higher term");
  let rounds = 0;
  while (net.leader() === 0) {
    net.tickAll(1);
    assert(++rounds < 100, "no leader after the stuck node was freed");
  }
  const terms = new Set([1, 2, 3].map((id) => net.core(id).status().term));
  assertEquals(terms.size, 1);
});

Deno.test("a learner never campaigns, however long it hears nothing", () => {
  const net = new Network([1, 2, 3], { learners: [3] });
  net.tick(3, 200);
  assertEquals([net.core(3).status().role, net.core(3).status().term], ["follower", 0]);
});

Deno.test("a node with committed but unapplied membership changes does not campaign", () => {
  const net = new Network([1, 2, 3], { bootstrap: "entries" });
  // Before its first Ready is handled, node 1 holds the bootstrap changes committed, unapplied.
  net.core(1).campaign();
  assertEquals(net.core(1).status().role, "follower");
  net.process();
  net.campaign(1);
  assertEquals(net.leader(), 1);
});

Deno.test("candidates that split the vote end up with one leader once their timeouts differ", () => {
  const net = new Network([1, 2, 3, 4], { config: { preVote: false, checkQuorum: false } });
  // 1 and 2 campaign at once; 3 and 4 split between them.
  net.core(1).campaign();
  net.core(2).campaign();
  net.process();
  const [toFirst, toSecond] = [
    net.queue.filter((m) => m.from === 1),
    net.queue.filter((m) => m.from === 2),
  ];
  net.queue = [];
  for (const m of toFirst) if (m.to === 3) net.deliver(m);
  for (const m of toSecond) if (m.to === 4) net.deliver(m);
  net.stabilize();
  assertEquals(net.leader(), 0, "no one has three of four votes");
  let rounds = 0;
  while (net.leader() === 0) {
    net.tickAll(1);
    assert(++rounds < 200, "the split vote never resolved");
  }
});
