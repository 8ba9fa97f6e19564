/**
 * Membership of a real cluster of agent processes: a fourth node, started
 * waiting to be joined, is added by its ticket, catches up through a
 * snapshot (the log was compacted behind it), becomes a voter, and serves
 * linearizable reads; then a follower leaves, and the leader leaves (it
 * hands over first), and the cluster goes on.
 */

import { create } from "@bufbuild/protobuf";
import { assert, assertEquals } from "../assert.ts";
import { JoinRequestSchema } from "../../src/rpc/gen/blixard/v1/cluster_pb.ts";
import { eventually } from "../wait.ts";
import { TestCluster } from "./helpers.ts";

Deno.test("a fourth node joins by ticket, catches up by snapshot and votes; a follower and then the leader leave, and the cluster goes on", async () => {
  await using cluster = await TestCluster.start({
    size: 3,
    mode: "dual",
    raftTransport: "grpc",
    tickMs: 20,
    snapshotEveryEntries: 64,
    keepEntries: 8,
  });
  const leader = await cluster.waitForLeader();
  const m = cluster.node(leader).clients.metadata;
  for (let i = 0; i < 300; i++) {
    await m.put({ key: `k${i}`, value: `v${i}`, requestId: `seed-${i}` }, { deadlineMs: 5_000 });
  }
  const before = await cluster.node(leader).clients.status.getRaftStatus({});
  assert(before.snapshotIndex > 0n, "the leader compacted its log behind a snapshot");

  // The new node waits; a member adds it by its ticket.
  const fourth = await cluster.addWaitingNode();
  const joined = await cluster.node(1).clients.cluster.join(
    create(JoinRequestSchema, {
      nodeId: 4n,
      iroh: { case: "irohTicket", value: fourth.ticket },
      grpcAddress: `127.0.0.1:${fourth.ports.tcp}`,
    }),
    { deadlineMs: 10_000 },
  );
  assert(joined.members.some((x) => x.nodeId === 4n), "the membership lists the new node");

  // It catches up through a snapshot (its log starts after the compacted prefix) and becomes a voter.
  await eventually(
    "node 4 is a voter and has applied what the leader committed",
    async () => {
      const s = await fourth.clients.status.getRaftStatus({}, { deadlineMs: 500 }).catch(() =>
        null
      );
      const l = await cluster.node(await cluster.leader()).clients.status
        .getRaftStatus({}, { deadlineMs: 500 }).catch(() => null);
      return s !== null && l !== null && s.snapshotIndex > 0n &&
        s.appliedIndex >= before.commitIndex &&
        l.peers.some((p) => p.nodeId === 4n);
    },
    20_000,
  );
  await eventually("node 4 is promoted to voter", async () => {
    const cs = await fourth.clients.status.getClusterStatus({}, { deadlineMs: 500 }).catch(() =>
      null
    );
    return cs !== null && cs.leaderId !== 0n &&
      cs.members.some((x) => x.nodeId === 4n && !x.learner);
  }, 20_000);
  const read = await fourth.clients.metadata.get({ key: "k150" }, { deadlineMs: 5_000 });
  assertEquals(read.entry?.value, "v150");

  // A follower leaves.
  const follower = [1, 2, 3].find((id) => id !== leader)!;
  await cluster.node(leader).clients.cluster.leave({ nodeId: BigInt(follower) }, {
    deadlineMs: 10_000,
  });
  await eventually(`node 4 sees node ${follower} gone`, async () => {
    const cs = await fourth.clients.status.getClusterStatus({}, { deadlineMs: 500 }).catch(() =>
      null
    );
    return cs !== null && !cs.members.some((x) => x.nodeId === BigInt(follower));
  });

  // The leader leaves: it hands over first, then is removed.
  await cluster.node(leader).clients.cluster.leave({ nodeId: BigInt(leader) }, {
    deadlineMs: 10_000,
  });
  const next = await cluster.waitForLeader([leader, follower]);
  assert(next !== leader);
  const remaining = [1, 2, 3, 4].filter((id) => id !== follower && id !== leader).join(",");
  await eventually("the membership is the two nodes left", async () => {
    const cs = await cluster.node(next).clients.status.getClusterStatus({}, { deadlineMs: 500 })
      .catch(() => null);
    return cs !== null &&
      cs.members.map((x) => Number(x.nodeId)).sort().join(",") === remaining;
  });

  // The cluster goes on.
  const put = await cluster.node(next).clients.metadata.put(
    { key: "after", value: "still here", requestId: "after-1" },
    { deadlineMs: 5_000 },
  );
  assert(put.revision > before.commitIndex);
});
