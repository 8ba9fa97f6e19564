/**
 * `blixard cluster join|leave|transfer` and `blixard status` against real
 * clusters of `blixard node` processes on loopback: a node started to wait
 * is joined from its own config file and becomes a voter that serves
 * linearizable reads; leadership moves; a follower and then the leader
 * leave. Every `--json` document is checked against docs/cli.md.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { clusterFiles, leaderOf, startCluster, type TestCluster } from "./cluster_helpers.ts";
import { blixard, blixardJson as json, freeTcpPort } from "./helpers.ts";
import { assertDocumented, jsonDoc } from "./json_doc.ts";

interface Status {
  cluster: { leaderId: string; members: { nodeId: string }[] };
  raft: { voters: string[]; learners: string[]; peers: { nodeId: string }[] };
}

async function statusOf(c: TestCluster, id: number): Promise<Status> {
  return await json("status", ["status", "--addr", c.node(id).addr, "--json"]) as unknown as Status;
}

Deno.test("cluster join: a node started to wait is joined from its config file, becomes a voter and serves a read of an earlier write", async () => {
  await using c = await clusterFiles([1, 2, 3], [4]);
  const leader = await startCluster(c, [1, 2, 3]);
  const follower = c.node(leader === 1 ? 2 : 1);
  const put = await blixard(["meta", "put", "before", "joined", "--addr", c.node(leader).addr]);
  assertEquals(put.code, 0, put.stderr);
  const revision = /revision (\d+)/.exec(put.stdout)![1];

  // Node 4 is not running yet: join says where it looked, and what to check.
  const down = await blixard([
    "cluster",
    "join",
    "--config",
    c.node(4).config,
    "--addr",
    follower.addr,
  ]);
  assertEquals(down.code, 1, down.stderr);
  assert(
    down.stderr.startsWith(
      `blixard: cluster join: cannot reach node 4 at grpc ${c.node(4).addr}, as ${
        c.node(4).config
      } says: UNAVAILABLE:`,
    ),
    down.stderr,
  );
  assert(down.stderr.includes(`is it running? ('blixard node --config ${c.node(4).config}')`));

  await c.start(4);
  const waiting = await statusOf(c, 4);
  assertEquals([waiting.cluster.leaderId, waiting.raft.voters], ["0", []]);

  // A member that is not there: said before anything changes.
  const nowhere = `127.0.0.1:${freeTcpPort()}`;
  const lost = await blixard(["cluster", "join", "--config", c.node(4).config, "--addr", nowhere]);
  assertEquals(lost.code, 1);
  assert(
    lost.stderr.startsWith(
      `blixard: cluster join: cannot reach the member at grpc ${nowhere}: UNAVAILABLE:`,
    ),
    lost.stderr,
  );
  assert(lost.stderr.trimEnd().endsWith(`ECONNREFUSED ${nowhere}.`), lost.stderr);

  const joined = await blixard([
    "cluster",
    "join",
    "--config",
    c.node(4).config,
    "--addr",
    follower.addr,
    "--timeout",
    "20000",
    "--json",
  ]);
  assertEquals(joined.code, 0, joined.stderr);
  assertMatch(joined.stderr, /^asking node \d \(grpc 127\.0\.0\.1:\d+\) to add node 4 /);
  const response = JSON.parse(joined.stdout) as {
    members: { nodeId: string; iroh: { endpointId: string }; grpcAddress: string }[];
    leaderId: string;
  };
  assertDocumented("cluster join", await jsonDoc("cluster join"), response);
  assertEquals(response.members.map((m) => m.nodeId), ["1", "2", "3", "4"]);
  const four = response.members.find((m) => m.nodeId === "4")!;
  assertEquals([four.iroh.endpointId, four.grpcAddress], [c.node(4).endpointId, c.node(4).addr]);

  const after = await statusOf(c, 4);
  assertEquals(after.raft.voters, ["1", "2", "3", "4"]);
  assert(after.cluster.leaderId !== "0");
  const read = await blixard(["meta", "get", "before", "--addr", c.node(4).addr]);
  assertEquals([read.code, read.stdout], [0, `before = "joined" (revision ${revision})\n`]);

  // Again, over Iroh, for a person: the node is a member already, so its record is only refreshed.
  const again = await blixard([
    "cluster",
    "join",
    "--config",
    c.node(4).config,
    "--ticket",
    c.node(leader).ticket,
    "--key",
    c.opKey,
  ]);
  assertEquals(again.code, 0, again.stderr);
  const lines = again.stdout.split("\n");
  assertMatch(lines[0]!, /^node 4 is a voter; leader node [123], term \d+$/);
  assertMatch(again.stdout, /^ {2}4 {5}voter {3}[0-9a-f]{12}… /m);
});

Deno.test("cluster transfer moves leadership; cluster leave removes a follower, then the leader, which hands over first", async () => {
  await using c = await clusterFiles([1, 2, 3]);
  const first = await startCluster(c, [1, 2, 3]);
  const [next, other] = [1, 2, 3].filter((id) => id !== first);

  const moved = await json("cluster transfer", [
    "cluster",
    "transfer",
    "--to",
    `${next}`,
    "--addr",
    c.node(other!).addr,
    "--json",
  ]);
  assertEquals(moved.leaderId, `${next}`);
  assertEquals(await leaderOf(c, first), next);
  const human = await blixard([
    "cluster",
    "transfer",
    "--to",
    `${next}`,
    "--addr",
    c.node(first).addr,
  ]);
  assertEquals(human.code, 0, human.stderr);
  assertMatch(human.stdout, new RegExp(`^node ${next} leads, term \\d+\\n$`));

  // A follower leaves, named by its config file, through the old leader.
  const left = await json("cluster leave", [
    "cluster",
    "leave",
    "--config",
    c.node(other!).config,
    "--addr",
    c.node(first).addr,
    "--json",
  ]);
  assertEquals(left, { nodeId: `${other}` });
  const two = await statusOf(c, next!);
  assertEquals(two.cluster.members.map((m) => m.nodeId), [first, next].sort().map(String));
  assertEquals(two.raft.voters, [first, next].sort().map(String));
  await c.stop(other!);

  // The leader leaves, asked through itself: it hands over to the other voter, which removes it.
  const leader = await blixard([
    "cluster",
    "leave",
    "--node-id",
    `${next}`,
    "--addr",
    c.node(next!).addr,
  ]);
  assertEquals(
    [leader.code, leader.stdout],
    [0, `node ${next} is no longer a member\n`],
    leader.stderr,
  );
  const alone = await statusOf(c, first);
  assertEquals(alone.cluster.leaderId, `${first}`);
  assertEquals(alone.raft.voters, [`${first}`]);

  // The last voter cannot leave: asked again while the time allows, the answer stays no.
  const last = await blixard([
    "cluster",
    "leave",
    "--node-id",
    `${first}`,
    "--addr",
    c.node(first).addr,
    "--timeout",
    "1000",
  ]);
  assertEquals(last.code, 1);
  assertMatch(
    last.stderr,
    new RegExp(
      `^blixard: cluster leave: node ${first} \\(grpc [\\d.:]+\\) did not remove node ${first}: FAILED_PRECONDITION: .*only voter`,
      "m",
    ),
  );
});

Deno.test("status shows a node waiting to be joined, then each member's role and, on the leader, every peer's progress", async () => {
  await using c = await clusterFiles([1, 2], [3]);
  const leader = await startCluster(c, [1, 2]);
  const follower = leader === 1 ? 2 : 1;
  await c.start(3);
  const waiting = await blixard(["status", "--addr", c.node(3).addr]);
  assertEquals(waiting.code, 0, waiting.stderr);
  assertMatch(
    waiting.stdout,
    /^cluster: 1 member, leader none known, term 0 \(as node 3 sees it\)$/m,
  );
  assertMatch(
    waiting.stdout,
    /^ {2}node 3 is not a member of a cluster yet: it waits to be joined$/m,
  );
  assertMatch(waiting.stdout, /^ {2}3 {5}- {5}[0-9a-f]{12}… /m);

  // The form for scripts: the addresses to record are given, and the member is asked about node 3.
  const joined = await blixard([
    "cluster",
    "join",
    "--node-id",
    "3",
    "--node-ticket",
    c.node(3).ticket,
    "--node-grpc",
    c.node(3).addr,
    "--addr",
    c.node(follower).addr,
    "--timeout",
    "20000",
  ]);
  assertEquals(joined.code, 0, joined.stderr);
  assertMatch(
    joined.stdout,
    new RegExp(`^ {2}3 {5}voter {3}${c.node(3).endpointId.slice(0, 12)}… `, "m"),
  );

  const s = await blixard(["status", "--addr", c.node(leader).addr]);
  assertEquals(s.code, 0, s.stderr);
  assertMatch(
    s.stdout,
    new RegExp(
      `^cluster: 3 members, leader node ${leader}, term \\d+ \\(as node ${leader} sees it\\)\n`,
    ),
  );
  assertMatch(s.stdout, new RegExp(`^ {2}${leader} {5}leader  `, "m"));
  assertMatch(s.stdout, new RegExp(`^ {2}${follower} {5}voter {3}`, "m"));
  assertMatch(
    s.stdout,
    new RegExp(
      `^raft: node ${leader} leader, term \\d+, commit \\d+, applied \\d+, last log \\d+, snapshot 0$`,
      "m",
    ),
  );
  assertMatch(s.stdout, /^ {2}PEER {2}ROLE {3}MATCH {2}NEXT {2}LAG$/m);
  assertMatch(s.stdout, /^ {2}3 {5}voter {2}\d+ +\d+ +0$/m);
});
