/**
 * The real consensus driver on the simulated cluster, calm network: a
 * leader is elected, a write through it is applied everywhere, and a read on
 * a follower sees it.
 */

import { assert, assertEquals } from "../assert.ts";
import { SimCluster } from "./cluster.ts";

Deno.test("three drivers elect a leader, apply a write everywhere, and a follower reads it", async () => {
  const c = new SimCluster({ seed: 1, members: [1, 2, 3] });
  c.startAll();
  await c.scheduler.runUntil(2_000, undefined, () => c.leader() !== undefined);
  const leader = c.leader();
  assert(leader, "no leader after 2 s of virtual time");
  const put = leader.driver!.propose({ kind: "metadata_put", key: "rack", value: "r7" });
  let result: unknown;
  put.then((r) => result = r);
  await c.scheduler.runUntil(c.scheduler.now() + 500, undefined, () => result !== undefined);
  assert(result && (result as { ok: boolean }).ok, JSON.stringify(result));
  const follower = c.running.find((n) => n !== leader)!;
  let read: unknown;
  follower.driver!.read((s) => s.getMetadata("rack")?.value).then((v) => read = v);
  await c.scheduler.runUntil(c.scheduler.now() + 500, undefined, () => read !== undefined);
  assertEquals(read, "r7");
  await c.scheduler.runUntil(c.scheduler.now() + 200);
  for (const n of c.running) assertEquals(n.driver!.state.getMetadata("rack")?.value, "r7");
  for (const n of c.running) n.driver!.stop();
});
