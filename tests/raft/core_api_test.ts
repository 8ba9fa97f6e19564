/**
 * The core's contract with its driver: configuration checked with errors
 * that name the field, the Ready/advance cycle, what a Ready promises, and
 * restarts from storage.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { EntryKind, RaftMessageKind } from "../../src/codec/raft.ts";
import {
  MemoryStorage,
  RAFT_CONFIG_DEFAULTS,
  RaftConfigError,
  RaftCore,
  RaftMessageError,
  RaftUsageError,
  seededRandom,
  SNAPSHOT_MESSAGE,
} from "../../src/raft/mod.ts";
import { bytes, Network } from "./network.ts";

const voters = (...ids: number[]) =>
  new MemoryStorage({ confState: { voters: ids, learners: [] } });
const random = seededRandom(1);

Deno.test("a bad config field is refused with an error naming the field, the value and what is allowed", () => {
  const cases: [Record<string, unknown>, string, string][] = [
    [{ id: 0 }, "id", "raft config: id = 0: expected an integer 1..2^53-1"],
    [{ id: 1.5 }, "id", "expected an integer"],
    [{ electionTicks: 1 }, "electionTicks", "expected an integer 2..1000000"],
    [{ heartbeatTicks: 10 }, "heartbeatTicks", "expected fewer than electionTicks (10)"],
    [{ maxSizePerMsgBytes: 0 }, "maxSizePerMsgBytes", "expected an integer 1.."],
    [{ maxInflightMsgs: 1e6 }, "maxInflightMsgs", "1..65536"],
    [{ preVote: "yes" }, "preVote", 'preVote = "yes": expected true or false'],
    [{ random: undefined }, "random", "expected a RandomSource"],
    [{ applied: 5 }, "applied", "expected 0..0"],
  ];
  for (const [patch, field, text] of cases) {
    const e = thrown(
      RaftConfigError,
      () => new RaftCore({ id: 1, random, ...patch } as never, voters(1)),
    );
    assertEquals([e.code, e.field], ["INVALID_CONFIG", field]);
    assert(e.message.includes(text), `${e.message} lacks ${text}`);
  }
  assertEquals(RAFT_CONFIG_DEFAULTS.electionTicks, 10);
});

Deno.test("an idle core has no Ready, and a Ready must be advanced before the next", () => {
  const core = new RaftCore({ id: 1, random }, voters(1, 2, 3));
  assertEquals(core.hasReady(), false);
  thrown(RaftUsageError, () => core.advance());
  core.tick();
  assertEquals(core.hasReady(), false, "a tick that changes nothing visible makes no Ready");
  core.campaign();
  assert(core.hasReady());
  core.ready();
  const e = thrown(RaftUsageError, () => core.ready());
  assert(e.message.includes("before advance()"), e.message);
});

Deno.test("a vote is granted in the same Ready that persists it, so it is durable before it is sent", () => {
  const storage = voters(1, 2, 3);
  const core = new RaftCore({ id: 2, random }, storage);
  core.step({
    kind: RaftMessageKind.VoteRequest,
    from: 1,
    to: 2,
    term: 3,
    lastLogIndex: 0,
    lastLogTerm: 0,
    transfer: false,
  });
  const rd = core.ready();
  assertEquals(rd.hardState, { term: 3, vote: 1, commit: 0 });
  assertEquals(rd.messages.map((m) => m.kind === RaftMessageKind.VoteResponse && m.granted), [
    true,
  ]);
});

Deno.test("an acknowledgement of entries comes in the same Ready as the entries it acknowledges", () => {
  const core = new RaftCore({ id: 2, random }, voters(1, 2, 3));
  core.step({
    kind: RaftMessageKind.AppendEntriesRequest,
    from: 1,
    to: 2,
    term: 1,
    prevLogIndex: 0,
    prevLogTerm: 0,
    leaderCommit: 0,
    entries: [{ index: 1, term: 1, kind: EntryKind.Normal, data: bytes("a") }],
  });
  const rd = core.ready();
  assertEquals(rd.entries.map((e) => e.index), [1]);
  const ack = rd.messages[0]!;
  assert(ack.kind === RaftMessageKind.AppendEntriesResponse && ack.success && ack.matchIndex === 1);
});

Deno.test("entries appended between ready() and advance() are persisted by the next Ready, not lost", () => {
  const storage = voters(1, 2, 3);
  const core = new RaftCore({ id: 2, random }, storage);
  const append = (index: number, data: string) =>
    core.step({
      kind: RaftMessageKind.AppendEntriesRequest,
      from: 1,
      to: 2,
      term: 1,
      prevLogIndex: index - 1,
      prevLogTerm: index === 1 ? 0 : 1,
      leaderCommit: 0,
      entries: [{ index, term: 1, kind: EntryKind.Normal, data: bytes(data) }],
    });
  append(1, "a");
  const first = core.ready();
  append(2, "b"); // arrives while the driver persists the first Ready
  storage.save(first);
  core.advance();
  const second = core.ready();
  assertEquals(second.entries.map((e) => e.index), [2]);
  storage.save(second);
  core.advance();
  assertEquals(storage.lastIndex(), 2);
});

Deno.test("a node restarted from its storage keeps its term, vote, log and commit", () => {
  const net = new Network([1, 2, 3]);
  net.campaign(1);
  net.propose(1, "a");
  const before = net.core(2).status();
  net.restart(2);
  const after = net.core(2).status();
  assertEquals([after.term, after.vote, after.lastIndex, after.role, after.leader], [
    before.term,
    before.vote,
    before.lastIndex,
    "follower",
    0,
  ]);
  assert(after.commit >= net.node(2).storage.initialState().hardState.commit);
  net.tickAll(2);
  assertEquals(net.node(2).commands(), ["a"]);
});

Deno.test("messages for another node, from the node itself, or in the driver's snapshot chunks are refused unchanged", () => {
  const core = new RaftCore({ id: 2, random }, voters(1, 2, 3));
  const heartbeat = {
    kind: RaftMessageKind.Heartbeat,
    from: 1,
    to: 2,
    term: 4,
    commit: 0,
    readContext: 0,
  } as const;
  assert(
    thrown(RaftMessageError, () => core.step({ ...heartbeat, to: 3 })).message.includes(
      "addressed to node 3",
    ),
  );
  thrown(RaftMessageError, () => core.step({ ...heartbeat, from: 2 }));
  const chunk = thrown(
    RaftMessageError,
    () =>
      core.step({
        kind: RaftMessageKind.InstallSnapshot,
        from: 1,
        to: 2,
        term: 4,
        snapshotIndex: 9,
        snapshotTerm: 1,
        offset: 0,
        done: true,
        data: new Uint8Array(1),
      }),
  );
  assert(chunk.message.includes(`"${SNAPSHOT_MESSAGE}" message`), chunk.message);
  const snapshot = {
    meta: { index: 5, term: 9, confState: { voters: [1], learners: [] } },
    data: new Uint8Array(0),
  };
  thrown(
    RaftMessageError,
    () => core.step({ kind: SNAPSHOT_MESSAGE, from: 1, to: 2, term: 4, snapshot }),
  );
  assertEquals([core.status().term, core.hasReady()], [0, false]);
});

Deno.test("status shows a leader's view of each peer", () => {
  const net = new Network([1, 2, 3], { learners: [3] });
  net.campaign(1);
  net.propose(1, "a");
  const s = net.core(1).status();
  assertEquals([s.role, s.leader, s.voters, s.learners, s.commit, s.applied, s.lastIndex], [
    "leader",
    1,
    [1, 2],
    [3],
    2,
    2,
    2,
  ]);
  assertEquals(s.peers.map((p) => [p.id, p.match, p.next, p.state, p.isLearner]), [
    [1, 2, 3, "replicate", false],
    [2, 2, 3, "replicate", false],
    [3, 2, 3, "replicate", true],
  ]);
  assertEquals(net.core(2).status().peers, []);
});
