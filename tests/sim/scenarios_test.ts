/**
 * Named scenarios on the real consensus driver over the simulated cluster:
 * the situations the Raft paper and thesis single out, each set up step by
 * step rather than left to chance, with the invariants checked after every
 * event (tests/sim/invariants.ts).
 */

import { assert, assertEquals } from "../assert.ts";
import {
  type AppendEntriesRequest,
  type InstallSnapshot,
  RaftMessageKind,
} from "../../src/codec/raft.ts";
import { ConsensusError } from "../../src/consensus/driver.ts";
import { encodeSnapshot } from "../../src/consensus/snapshot_transfer.ts";
import { ConfChangeType, Role, seededRandom } from "../../src/raft/mod.ts";
import type { Command } from "../../src/state/cluster_state.ts";
import { checkHistory } from "../support/linearizability.ts";
import { registerModel } from "../support/register_model.ts";
import { HistoryRecorder, SimClient, type Tracked } from "./clients.ts";
import { SimCluster, type SimNode } from "./cluster.ts";
import { elect, outcomeOf, runFor, runUntil, stopAll } from "./drive.ts";
import { InvariantChecker } from "./invariants.ts";

/** The simulated cluster's defaults: 10 ms ticks, an election timeout of 10 to 20 ticks. */
const TICK_MS = 10;
const ELECTION_MS = 10 * TICK_MS;

function put(key: string, value: string): Command {
  return { kind: "metadata_put", key, value };
}

/** Three voters with the checker watching every event, and the leader they elect. */
async function threeNodes(seed: number) {
  const c = new SimCluster({ seed, members: [1, 2, 3] });
  const checker = new InvariantChecker(c);
  c.startAll();
  const leader = await elect(c, checker);
  return { c, checker, leader };
}

/** A new leader other than `old`, once a quorum follows it. */
async function anotherLeader(c: SimCluster, old: SimNode, checker: InvariantChecker) {
  assert(
    await runUntil(c, 20 * ELECTION_MS, () => {
      const l = c.recognizedLeader();
      return l !== undefined && l !== old;
    }, checker),
    `no leader but ${old.id}`,
  );
  return c.recognizedLeader()!;
}

/** True when `to` holds the entry an append follows, so it would take the append's entries. */
function wouldAccept(c: SimCluster, m: AppendEntriesRequest): boolean {
  const log = c.node(m.to).storage.stored;
  return m.prevLogIndex >= log.firstIndex() - 1 && m.prevLogIndex <= log.lastIndex() &&
    log.term(m.prevLogIndex) === m.prevLogTerm;
}

Deno.test("Figure 8: an old term's entry on a majority is not committed by counting replicas, and is overwritten without a client told it was applied", async () => {
  // No PreVote or CheckQuorum and elections only on demand, as in the paper's figure.
  const c = new SimCluster({
    seed: 8,
    members: [1, 2, 3, 4, 5],
    core: { electionTicks: 1_000, preVote: false, checkQuorum: false, maxSizePerMsgBytes: 1 },
  });
  const checker = new InvariantChecker(c);
  const [s1, s2, s3, , s5] = c.ids.map((id) => c.node(id)) as SimNode[];
  const isAppend = (m: { kind: number }): m is AppendEntriesRequest =>
    m.kind === RaftMessageKind.AppendEntriesRequest;
  c.startAll();
  await runFor(c, 50, checker); // the bootstrap membership applies: a node campaigns only then

  // (a) S1 leads term 2; its entry X reaches S2 only.
  s1!.driver!.campaign();
  assert(await runUntil(c, 500, () => c.recognizedLeader() === s1, checker));
  await runFor(c, 100, checker);
  const base = c.status(s1!).lastIndex;
  c.network.drop = (m) => isAppend(m) && m.from === 1 && m.to !== 2 && m.entries.length > 0;
  const x = s1!.driver!.propose(put("k", "x"));
  let xAnswer: unknown;
  x.then((v) => xAnswer = v, (e) => xAnswer = e);
  await runFor(c, 100, checker);
  assertEquals(s2!.storage.stored.term(base + 1), 2);
  assertEquals(s3!.storage.stored.lastIndex(), base);

  // (b) S5 leads term 3 with S3 and S4, and appends at X's index; none of it spreads.
  c.network.partition([1, 2], [3, 4, 5]);
  c.network.drop = (m) => isAppend(m) && m.from === 5 && m.entries.length > 0;
  s5!.driver!.campaign();
  assert(await runUntil(c, 500, () => c.status(s5!).role === Role.Leader, checker));
  const y = s5!.driver!.propose(put("k", "y"));
  await runFor(c, 100, checker);
  assertEquals(c.status(s5!).term, 3);
  assertEquals(c.status(s5!).lastIndex, base + 2);

  // (c) S2 leads term 4 with S1, S3 and S4 (S3 and S4 voted in term 3 already,
  // so it takes two campaigns). X reaches S3 and S4: a majority holds it. Its
  // own no-op reaches nobody, so X must stay uncommitted.
  c.network.heal();
  c.network.isolate(5, c.ids);
  c.network.drop = (m) =>
    isAppend(m) && m.from === 2 && m.entries.some((e) => e.term === 4) && wouldAccept(c, m);
  s2!.driver!.campaign();
  await runFor(c, 50, checker);
  s2!.driver!.campaign();
  assert(await runUntil(c, 500, () => c.recognizedLeader() === s2, checker));
  await runFor(c, 200, checker);
  assertEquals(c.status(s2!).term, 4);
  for (const id of [1, 3, 4]) assertEquals(c.node(id).storage.stored.term(base + 1), 2);
  assertEquals(c.status(s2!).commit, base, "X was committed by counting replicas of an old term");
  assertEquals(xAnswer, undefined);

  // (d) S2 is cut off; S5 hears of term 4 from its heartbeats, then wins
  // term 5 with S1, S3 and S4 (its last entry's term, 3, beats their 2),
  // overwrites X and commits Y.
  c.network.heal();
  c.network.drop = null;
  c.network.partition([2], [1, 3, 4]);
  c.network.cutOneWay([5], [2]);
  assert(await runUntil(c, 500, () => c.status(s5!).term === 4, checker));
  s5!.driver!.campaign();
  assert(await runUntil(c, 500, () => c.recognizedLeader() === s5, checker));
  assertEquals(await outcomeOf(c, y, 1_000, checker), {
    ok: true,
    kind: "metadata_put",
    revision: base + 2,
  });
  const lost = await outcomeOf(c, x, 1_000, checker);
  assert(lost instanceof ConsensusError && lost.code === "LOST", `X's proposal ended with ${lost}`);

  // (e) Healed, every node holds Y where X was, and the same state.
  c.network.heal();
  assert(
    await runUntil(c, 2_000, () => {
      const commit = c.status(s5!).commit;
      return c.running.every((n) => n.driver!.state.appliedIndex === commit);
    }, checker),
  );
  for (const n of c.running) {
    assertEquals(n.storage.stored.term(base + 1), 3);
    assertEquals(n.driver!.state.getMetadata("k")?.value, "y");
  }
  checker.logs();
  stopAll(c);
});

Deno.test("a partitioned node that rejoins does not depose the leader: under PreVote its term never rose", async () => {
  const { c, checker, leader } = await threeNodes(21);
  const term = c.status(leader).term;
  const loner = c.running.find((n) => n !== leader)!;
  c.network.isolate(loner.id, c.ids);
  await runFor(c, 20 * ELECTION_MS, checker);
  assertEquals(c.status(loner).term, term, "the isolated node raised its term");
  assert(c.status(loner).role !== Role.Leader);
  c.network.heal();
  await runFor(c, 10 * ELECTION_MS, checker);
  assertEquals(c.recognizedLeader(), leader);
  assertEquals(c.status(leader).term, term);
  const written = await outcomeOf(c, leader.driver!.propose(put("k", "after")), 1_000, checker);
  assert((written as { ok: boolean }).ok);
  await runFor(c, 50, checker);
  assertEquals(loner.driver!.state.getMetadata("k")?.value, "after");
  checker.logs();
  stopAll(c);
});

Deno.test("a leader cut off from a quorum steps down within two election timeouts, and what it took is never applied (CheckQuorum)", async () => {
  const { c, checker, leader: old } = await threeNodes(22);
  const stranded = old.driver!.propose(put("k", "stranded"));
  c.network.isolate(old.id, c.ids);
  assert(
    await runUntil(c, 2 * ELECTION_MS, () => c.status(old).role !== Role.Leader, checker),
    "the isolated leader still leads after two election timeouts",
  );
  const leader = await anotherLeader(c, old, checker);
  assert(
    (await outcomeOf(c, leader.driver!.propose(put("k", "new")), 1_000, checker) as {
      ok: boolean;
    }).ok,
  );
  c.network.heal();
  const outcome = await outcomeOf(c, stranded, 2_000, checker);
  assert(
    outcome instanceof ConsensusError && (outcome.code === "LOST" || outcome.code === "UNKNOWN"),
    `the stranded proposal ended with ${outcome}`,
  );
  const read = await outcomeOf(c, old.driver!.read((s) => s.getMetadata("k")?.value), 1_000);
  assertEquals(read, "new");
  checker.logs();
  stopAll(c);
});

Deno.test("a follower that lags behind the leader's compacted log catches up from a snapshot sent in compressed chunks", async () => {
  const chunkBytes = 256;
  const c = new SimCluster({
    seed: 31,
    members: [1, 2, 3],
    snapshotEveryEntries: 10,
    keepEntries: 2,
    snapshotTransfer: {
      chunkBytes,
      windowChunks: 2,
      maxCompressedBytes: 1 << 20,
      maxSnapshotBytes: 16 << 20,
      idleTimeoutMs: 1_000,
    },
  });
  const checker = new InvariantChecker(c);
  const chunks: InstallSnapshot[] = [];
  c.network.tap = (m) => {
    if (m.kind === RaftMessageKind.InstallSnapshot) chunks.push(m);
  };
  c.startAll();
  const leader = await elect(c, checker);
  const lagging = c.running.find((n) => n !== leader)!;
  c.crash(lagging.id);
  const held = lagging.storage.stored.lastIndex();
  // Values from a small alphabet: the state compresses, but not to nothing.
  const r = seededRandom(31);
  const letters = "abcdefgh";
  for (let i = 0; i < 60; i++) {
    const value = Array.from({ length: 300 }, () => letters[r.nextInt(letters.length)]).join("");
    const result = await outcomeOf(c, leader.driver!.propose(put(`key-${i % 40}`, value)), 1_000);
    assert((result as { ok: boolean }).ok);
  }
  await runFor(c, 50, checker);
  const snapshot = leader.storage.stored.snapshot();
  assert(
    leader.storage.stored.firstIndex() > held + 1,
    "the leader still holds what the follower needs",
  );

  c.start(lagging.id);
  assert(
    await runUntil(c, 3_000, () => {
      const s = c.status(leader);
      return s.commit === s.lastIndex && lagging.driver!.state.appliedIndex === s.commit;
    }, checker),
    "the lagging follower did not catch up",
  );
  assert(chunks.length > 1, `${chunks.length} chunk(s): the snapshot was not chunked`);
  assert(chunks.every((m) => m.to === lagging.id && m.data.length <= chunkBytes));
  const last = chunks.filter((m) => m.done).at(-1)!;
  assertEquals(last.snapshotIndex, snapshot.meta.index);
  const compressed = last.offset + last.data.length;
  const image = encodeSnapshot(snapshot).length;
  assert(compressed < image, `${compressed} bytes sent for a ${image}-byte image: not compressed`);
  assertEquals(lagging.storage.stored.snapshot().meta.index, snapshot.meta.index);
  assertEquals(lagging.driver!.state.snapshot(), leader.driver!.state.snapshot());
  checker.logs();
  stopAll(c);
});

Deno.test("a leader that removes itself steps down once the change applies, and the others lead on without it", async () => {
  const { c, checker, leader: old } = await threeNodes(41);
  const leaders: number[] = [];
  checker.onNewLeader = (node) => leaders.push(node.id);
  const removal = old.driver!.changeMembership({
    type: ConfChangeType.RemoveNode,
    nodeId: old.id,
    context: new Uint8Array(0),
  });
  assertEquals(await outcomeOf(c, removal, 1_000, checker), undefined);
  assert(c.status(old).role !== Role.Leader, "the removed leader still leads");
  const leader = await anotherLeader(c, old, checker);
  const rest = c.ids.filter((id) => id !== old.id);
  assertEquals(c.status(leader).voters, rest);
  assert(
    (await outcomeOf(c, leader.driver!.propose(put("k", "v")), 1_000, checker) as {
      ok: boolean;
    }).ok,
  );
  leaders.length = 0;
  await runFor(c, 20 * ELECTION_MS, checker);
  assert(!leaders.includes(old.id), "the removed node led again");
  for (const id of rest) assertEquals(c.node(id).driver!.state.getMetadata("k")?.value, "v");
  checker.logs();
  stopAll(c);
});

Deno.test("a leadership transfer under load hands over within an election timeout, and the history stays linearizable", async () => {
  const c = new SimCluster({ seed: 51, members: [1, 2, 3] });
  const checker = new InvariantChecker(c);
  const history = new HistoryRecorder();
  const tracked: Tracked[] = [];
  const random = seededRandom(51);
  const clients = Array.from(
    { length: 6 },
    (_, i) =>
      new SimClient(
        { id: i + 1, keys: ["k0", "k1", "k2"], random, timeoutMs: 500 },
        c,
        history,
        tracked,
      ),
  );
  c.startAll();
  const old = await elect(c, checker);
  const running = clients.map((client) => client.run());
  await runFor(c, 300, checker);
  const target = c.running.find((n) => n !== old)!;
  const before = history.stats.answered;
  old.driver!.transferLeadership(target.id);
  assert(
    await runUntil(c, ELECTION_MS, () => c.recognizedLeader() === target, checker),
    "the transfer did not complete within an election timeout",
  );
  await runFor(c, 300, checker);
  for (const client of clients) client.stop();
  await runFor(c, 600, checker);
  await Promise.all(running);
  assert(history.stats.answered > before, "no operation was answered after the transfer");
  assert(tracked.every((t) => t.settled));
  for (const key of ["k0", "k1", "k2"]) {
    const call = c.scheduler.now();
    const entry = await outcomeOf(c, target.driver!.read((s) => s.getMetadata(key)), 1_000);
    history.add({
      clientId: 100,
      input: { op: "get", key },
      output: entry === undefined ? { kind: "not_found" } : {
        kind: "found",
        value: (entry as { value: string }).value,
        revision: Number((entry as { revision: bigint }).revision),
      },
      call,
      return: c.scheduler.now(),
    });
  }
  const result = checkHistory(registerModel, history.history());
  assertEquals(result.result, "ok", result.explanation);
  checker.logs();
  stopAll(c);
});
