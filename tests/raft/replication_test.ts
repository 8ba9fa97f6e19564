/**
 * Log replication (Raft §5.3, §5.4.2): what commits and when, batching and
 * pipelining, probing, fast backtracking by the conflict hint, and the
 * Figure 8 rule.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { EntryKind, RaftMessageKind } from "../../src/codec/raft.ts";
import type { AppendEntriesRequest, AppendEntriesResponse } from "../../src/codec/raft.ts";
import {
  type CoreMessage,
  type Entry,
  InvalidProposalError,
  MemoryStorage,
  NotLeaderError,
  ProposalDroppedError,
  RaftCore,
  RaftMessageError,
  seededRandom,
} from "../../src/raft/mod.ts";
import { SafetyChecker } from "./invariants.ts";
import { bytes, Network } from "./network.ts";

const isAppend = (m: CoreMessage): m is AppendEntriesRequest =>
  m.kind === RaftMessageKind.AppendEntriesRequest;
const isAppendResponse = (m: CoreMessage): m is AppendEntriesResponse =>
  m.kind === RaftMessageKind.AppendEntriesResponse;

/** Entries at indexes 1.. with the given terms (etcd's `index(1).terms(...)`). */
function withTerms(...terms: number[]): Entry[] {
  return terms.map((term, i) => ({
    index: i + 1,
    term,
    kind: EntryKind.Normal,
    data: bytes(`e${i + 1}`),
  }));
}

const storages = new WeakMap<RaftCore, MemoryStorage>();

/** A core whose storage holds `log` and `hardState`, in a cluster of voters 1, 2, 3. */
function coreWith(
  id: number,
  log: Entry[],
  hardState: { term: number; vote: number; commit: number },
) {
  const storage = new MemoryStorage({ confState: { voters: [1, 2, 3], learners: [] } });
  storage.save({ entries: log, hardState });
  const core = new RaftCore(
    { id, random: seededRandom(id), preVote: false, checkQuorum: false },
    storage,
  );
  storages.set(core, storage);
  return core;
}

/** Makes node 1 over `log` the leader of the term after the log's last; returns it. */
function leaderWith(log: Entry[]): RaftCore {
  const last = log[log.length - 1]!;
  const leader = coreWith(1, log, { term: last.term - 1, vote: 0, commit: last.index });
  leader.campaign();
  take(leader);
  leader.step({
    kind: RaftMessageKind.VoteResponse,
    from: 3,
    to: 1,
    term: last.term,
    granted: true,
  });
  assertEquals(leader.status().role, "leader");
  return leader;
}

/** Handles `core`'s Ready as a driver would (persist, then advance); returns its messages. */
function take(core: RaftCore): CoreMessage[] {
  const rd = core.ready();
  storages.get(core)!.save(rd);
  core.advance();
  return [...rd.messages];
}

Deno.test("a committed entry reaches every node's state machine, in order", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  for (const c of ["a", "b", "c"]) net.propose(1, c);
  for (const id of [1, 2, 3]) assertEquals(net.node(id).commands(), ["a", "b", "c"]);
});

Deno.test("the leader counts its own copy of an entry only once it is persisted", () => {
  const leader = leaderWith(withTerms(1));
  take(leader);
  const { index } = leader.propose(bytes("x"));
  const rd = leader.ready();
  storages.get(leader)!.save(rd);
  // Before the Ready is advanced (persisted), one follower's ack is not a majority of three.
  leader.step({
    kind: RaftMessageKind.AppendEntriesResponse,
    from: 2,
    to: 1,
    term: leader.status().term,
    success: true,
    matchIndex: index,
    hintIndex: 0,
    hintTerm: 0,
  });
  assertEquals(leader.status().commit, index - 1, "the new entry is not committed yet");
  assertEquals(rd.entries.map((e) => e.index), [index]);
  leader.advance();
  assertEquals(leader.status().commit, index);
});

Deno.test("Figure 8: a leader never commits an entry of an earlier term by counting its replicas", () => {
  // Raft paper, Figure 8, with five nodes. Appends carry one entry each
  // (2-byte commands, 1-byte limit), so a new leader's first entry can be
  // held back while an older entry reaches a majority.
  for (
    const variant of [
      "old entry on a majority, new leader crashes",
      "new leader's entry on a majority",
    ]
  ) {
    const net = new Network([1, 2, 3, 4, 5], {
      config: { preVote: false, checkQuorum: false, maxSizePerMsgBytes: 1 },
    });
    const checker = new SafetyChecker();
    const check = () => checker.check(net.nodes.values());
    net.campaign(1); // term 1, its empty entry at index 1 everywhere
    // (a) Node 1 appends "ab" at index 2 and replicates it to node 2 only.
    net.dropRules.push((m) => isAppend(m) && m.to !== 2);
    net.propose(1, "ab");
    net.heal();
    check();
    // (b) Node 1 crashes; node 5 wins term 2 with votes of 3 and 4, and its
    // own entry at index 2 (its empty entry) reaches no one.
    net.crash(1);
    net.dropRules.push((m) => isAppend(m) && m.from === 5);
    net.campaign(5);
    assertEquals(net.leader(), 5);
    net.crash(5);
    net.heal();
    check();
    // (c) Node 1 comes back and wins term 3 (its first try in term 2 loses).
    // Its entry of term 3 reaches no one: appends carrying it are lost unless
    // the recipient is bound to reject them anyway (which it must, to be probed back to index 2).
    net.restart(1);
    net.dropRules.push((m) => {
      if (!isAppend(m) || m.from !== 1 || !m.entries.some((e) => e.term === 3)) return false;
      const s = net.node(m.to).storage;
      return s.lastIndex() >= m.prevLogIndex && s.term(m.prevLogIndex) === m.prevLogTerm;
    });
    net.campaign(1);
    if (net.leader() !== 1) net.campaign(1);
    assertEquals([net.leader(), net.core(1).status().term], [1, 3]);
    const holders = [1, 2, 3, 4].filter((id) =>
      net.node(id).storage.lastIndex() >= 2 && net.node(id).storage.term(2) === 1
    );
    assert(holders.length >= 3, `index 2 of term 1 is on a majority: ${holders}`);
    assertEquals(
      net.core(1).status().commit,
      1,
      "counting replicas of a term-1 entry commits nothing in term 3",
    );
    check();
    if (variant === "old entry on a majority, new leader crashes") {
      // (d) Node 1 crashes; node 5 wins term 4 (its last term 2 beats term 1)
      // and overwrites index 2 everywhere: had "ab" been committed, it would be lost.
      net.crash(1);
      net.heal();
      net.restart(5);
      net.campaign(5); // term 3 is taken: loses, learns the term
      net.campaign(5);
      assertEquals(net.leader(), 5);
      net.propose(5, "after");
      check();
      for (const id of [2, 3, 4, 5]) assertEquals(net.node(id).commands(), ["after"]);
    } else {
      // (e) Node 1's entry of term 3 reaches a majority: both commit, and node 5 can no longer win.
      net.heal();
      net.tickAll(2); // heartbeat answers show what the lost appends did not deliver
      assertEquals(net.core(1).status().commit, 3);
      net.crash(1);
      net.restart(5);
      net.campaign(5);
      net.campaign(5);
      assert(net.leader() !== 5, "node 5's log is behind the committed entries");
      for (const id of [2, 3, 4]) assertEquals(net.node(id).commands(), ["ab"]);
    }
    check();
  }
});

Deno.test("proposals made between two Readies go to each follower in one append", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  for (let i = 0; i < 10; i++) net.core(1).propose(bytes(`p${i}`));
  net.process();
  const appends = net.queue.filter(isAppend);
  assertEquals(appends.map((m) => [m.to, m.entries.length]), [[2, 10], [3, 10]]);
  net.stabilize();
  assertEquals(net.node(3).commands().length, 10);
});

Deno.test("an append carries at most maxSizePerMsgBytes of entry data, and always at least one entry", () => {
  const net = new Network([1, 2], { config: { maxSizePerMsgBytes: 10, maxInflightMsgs: 100 } });
  net.campaign(1);
  for (let i = 0; i < 9; i++) net.core(1).propose(bytes(`abc${i}`)); // 4 bytes each
  net.core(1).propose(bytes("x".repeat(25))); // alone over the limit
  net.stabilize();
  const sizes = net.delivered.filter(isAppend).filter((m) => m.entries.length > 0)
    .map((m) => m.entries.reduce((n, e) => n + e.data.length, 0));
  // The new leader's empty entry, then the batches.
  assertEquals(sizes, [0, 8, 8, 8, 8, 4, 25]);
  assertEquals(net.node(2).commands().length, 10);
});

Deno.test("a leader keeps at most maxInflightMsgs appends in flight to a follower, and sends more as acks return", () => {
  const net = new Network([1, 2], { config: { maxSizePerMsgBytes: 1, maxInflightMsgs: 3 } });
  net.campaign(1); // node 2 now in replicate state
  for (let i = 0; i < 8; i++) net.core(1).propose(bytes(`c${i}`));
  net.process();
  const inFlight = net.queue.filter(isAppend);
  assertEquals(inFlight.map((m) => m.entries.map((e) => e.index)), [[2], [3], [4]]);
  assertEquals(net.core(1).status().peers.find((p) => p.id === 2)?.inflight, 3);
  // Heartbeats go on meanwhile; no more entries leave until an ack frees a slot.
  net.tick(1, 3);
  assertEquals(net.queue.filter(isAppend).filter((m) => m.entries.length > 0).length, 3);
  net.stabilize();
  assertEquals(net.node(2).commands().length, 8);
});

Deno.test("a follower in probe state gets one append at a time until it answers", () => {
  const net = new Network([1, 2, 3], { config: { maxSizePerMsgBytes: 1 } });
  net.campaign(1);
  net.core(1).reportUnreachable(2); // back to probing
  assertEquals(net.core(1).status().peers.find((p) => p.id === 2)?.state, "probe");
  for (let i = 0; i < 5; i++) net.core(1).propose(bytes(`c${i}`));
  net.process();
  assertEquals(net.queue.filter((m) => isAppend(m) && m.to === 2).length, 1);
  net.stabilize();
  assertEquals(net.core(1).status().peers.find((p) => p.id === 2)?.state, "replicate");
  assertEquals(net.node(2).commands().length, 5);
});

Deno.test("a rejected append backs off by the follower's hint, one probe per term (etcd's TestFastLogRejection)", () => {
  const cases = [
    {
      leader: [1, 2, 2, 4, 4, 4, 4],
      follower: [1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3],
      hint: [7, 3],
      next: [3, 2],
    },
    {
      leader: [1, 2, 2, 3, 4, 4, 4, 5],
      follower: [1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3],
      hint: [8, 3],
      next: [4, 3],
    },
    { leader: [1, 1, 1, 1], follower: [1, 2, 2, 4], hint: [1, 1], next: [1, 1] },
    { leader: [1, 1, 1, 1, 1, 1], follower: [1, 2, 2, 4], hint: [1, 1], next: [1, 1] },
    { leader: [1, 1, 1, 1], follower: [1, 2, 2, 4, 4, 4], hint: [1, 1], next: [1, 1] },
    { leader: [1, 1, 1, 4, 5], follower: [1, 1, 1, 4], hint: [4, 4], next: [4, 4] },
    {
      leader: [2, 5, 5, 5, 5, 5, 5, 5, 5],
      follower: [2, 4, 4, 4, 4, 4],
      hint: [6, 4],
      next: [1, 2],
    },
    { leader: [2, 2, 2, 2, 2], follower: [2, 4, 4, 4, 4, 4, 4, 4], hint: [1, 2], next: [1, 2] },
  ];
  for (const c of cases) {
    const leader = leaderWith(withTerms(...c.leader));
    const term = c.leader[c.leader.length - 1]!;
    const follower = coreWith(2, withTerms(...c.follower), { term, vote: 1, commit: 0 });
    const first = take(leader).find((m) => isAppend(m) && m.to === 2)!;
    follower.step(first);
    const rejection = take(follower).find(isAppendResponse)!;
    assertEquals(
      [rejection.success, rejection.hintIndex, rejection.hintTerm],
      [false, ...c.hint],
      JSON.stringify(c),
    );
    leader.step(rejection);
    const retry = take(leader).find((m) => isAppend(m) && m.to === 2);
    assert(retry !== undefined && isAppend(retry));
    assertEquals([retry.prevLogIndex, retry.prevLogTerm], c.next, JSON.stringify(c));
  }
});

Deno.test("fast backtracking converges in a few round trips after a long divergence", () => {
  // The leader's log and a returning follower's share only index 1; then
  // 300 entries each of diverging terms. Entry-by-entry probing would need
  // hundreds of round trips; one per term is a handful.
  const leaderLog = withTerms(
    1,
    ...Array(100).fill(2),
    ...Array(100).fill(4),
    ...Array(100).fill(6),
  );
  const followerLog = withTerms(1, ...Array(150).fill(3), ...Array(150).fill(5));
  const leader = leaderWith(leaderLog);
  const follower = coreWith(2, followerLog, { term: 6, vote: 1, commit: 1 });
  let toFollower = take(leader).filter((m) => m.to === 2);
  let rejections = 0, roundTrips = 0;
  while (toFollower.length > 0) {
    roundTrips++;
    assert(roundTrips < 20, "no convergence");
    for (const m of toFollower) follower.step(m);
    const answers = take(follower);
    rejections += answers.filter((m) => isAppendResponse(m) && !m.success).length;
    for (const m of answers) leader.step(m);
    toFollower = take(leader).filter((m) => m.to === 2 && isAppend(m));
    if (
      follower.status().lastIndex === leader.status().lastIndex &&
      follower.status().commit === leader.status().commit
    ) break;
  }
  assertEquals(follower.status().lastIndex, 302);
  assert(rejections <= 3, `${rejections} rejections`);
  assert(roundTrips <= 10, `${roundTrips} round trips`);
});

Deno.test("a follower acknowledges only what the append covered, not a longer stale tail it holds", () => {
  // Node 2 holds entries 2..5 of term 1 from an old leader; the new leader
  // (term 2) sends entry 2 alone: the tail 3..5 matches nothing it knows.
  const follower = coreWith(2, withTerms(1, 1, 1, 1, 1), { term: 2, vote: 1, commit: 1 });
  follower.step({
    kind: RaftMessageKind.AppendEntriesRequest,
    from: 1,
    to: 2,
    term: 2,
    prevLogIndex: 1,
    prevLogTerm: 1,
    leaderCommit: 1,
    entries: withTerms(1, 1).slice(1),
  });
  const ack = take(follower).find(isAppendResponse)!;
  assertEquals([ack.success, ack.matchIndex], [true, 2]);
});

Deno.test("a conflicting uncommitted suffix on a follower is replaced by the leader's entries", () => {
  const net = new Network([1, 2, 3], { config: { preVote: false, checkQuorum: false } });
  net.campaign(1);
  net.isolate(1);
  // Node 1 appends entries no one else gets, then loses leadership.
  for (const c of ["lost1", "lost2", "lost3"]) net.core(1).propose(bytes(c));
  net.stabilize();
  net.crash(1);
  net.heal();
  net.campaign(2);
  net.propose(2, "kept");
  net.restart(1);
  net.tickAll(5);
  assertEquals(net.node(1).commands(), ["kept"]);
  assertEquals(net.node(1).storage.lastIndex(), net.node(2).storage.lastIndex());
});

Deno.test("duplicated and reordered appends change nothing", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  for (const c of ["a", "b", "c", "d"]) net.core(1).propose(bytes(c));
  net.process();
  const appends = net.queue.filter((m) => m.to === 2);
  net.queue = net.queue.filter((m) => m.to !== 2);
  net.stabilize();
  // Deliver node 2's appends late, twice, and in reverse.
  for (const m of [...appends, ...appends].reverse()) net.deliver(m);
  net.stabilize();
  net.tickAll(3);
  assertEquals(net.node(2).commands(), ["a", "b", "c", "d"]);
});

Deno.test("proposals go only to the leader: followers refuse them naming the leader", () => {
  const net = new Network([1, 2, 3]);
  const e = thrown(NotLeaderError, () => net.core(2).propose(bytes("x")));
  assertEquals([e.code, e.leader], ["NOT_LEADER", 0]);
  net.campaign(1);
  const f = thrown(NotLeaderError, () => net.core(2).propose(bytes("x")));
  assertEquals(f.leader, 1);
  assert(f.message.includes("the leader is node 1"), f.message);
});

Deno.test("a leader refuses empty and oversized proposals, and drops proposals past maxUncommittedBytes", () => {
  const net = new Network([1, 2, 3], { config: { maxEntryBytes: 100, maxUncommittedBytes: 250 } });
  net.campaign(1);
  const leader = net.core(1);
  assertEquals(
    thrown(InvalidProposalError, () => leader.propose(new Uint8Array(0))).code,
    "INVALID_PROPOSAL",
  );
  assert(
    thrown(InvalidProposalError, () => leader.propose(new Uint8Array(101))).message.includes(
      "maxEntryBytes 100",
    ),
  );
  net.isolate(1); // nothing commits
  leader.propose(new Uint8Array(100));
  leader.propose(new Uint8Array(100));
  const dropped = thrown(ProposalDroppedError, () => leader.propose(new Uint8Array(100)));
  assertEquals([dropped.code, dropped.reason], ["PROPOSAL_DROPPED", "uncommitted_bytes"]);
  net.heal();
  net.tickAll(3);
  // Once applied, the room comes back.
  leader.propose(new Uint8Array(100));
});

Deno.test("a heartbeat that commits past a follower's log is refused as a message error, not applied", () => {
  const follower = coreWith(2, withTerms(1, 1), { term: 1, vote: 0, commit: 0 });
  const e = thrown(
    RaftMessageError,
    () =>
      follower.step({
        kind: RaftMessageKind.Heartbeat,
        from: 1,
        to: 2,
        term: 3,
        commit: 5,
        readContext: 0,
      }),
  );
  assertEquals(e.code, "INVALID_MESSAGE");
  // Nothing changed: not the commit, not even the term.
  const { commit, term, leader } = follower.status();
  assertEquals({ commit, term, leader }, { commit: 0, term: 1, leader: 0 });
});

Deno.test("an append whose entries do not follow its previous index is refused before anything changes", () => {
  const follower = coreWith(2, withTerms(1), { term: 2, vote: 0, commit: 0 });
  const bad = [
    {
      prevLogIndex: 1,
      prevLogTerm: 1,
      entries: [{ index: 3, term: 2, kind: EntryKind.Normal, data: bytes("x") }],
    },
    {
      prevLogIndex: 1,
      prevLogTerm: 2,
      entries: [{ index: 2, term: 1, kind: EntryKind.Normal, data: bytes("x") }],
    },
    {
      prevLogIndex: 1,
      prevLogTerm: 1,
      entries: [{ index: 2, term: 3, kind: EntryKind.Normal, data: bytes("x") }],
    },
  ];
  for (const b of bad) {
    thrown(
      RaftMessageError,
      () =>
        follower.step({
          kind: RaftMessageKind.AppendEntriesRequest,
          from: 1,
          to: 2,
          term: 2,
          leaderCommit: 0,
          ...b,
        }),
    );
    assertEquals([follower.status().lastIndex, follower.status().term], [1, 2]);
  }
  thrown(
    RaftMessageError,
    () =>
      follower.step({
        kind: RaftMessageKind.Heartbeat,
        from: 1,
        to: 3,
        term: 2,
        commit: 0,
        readContext: 0,
      }),
  );
});
