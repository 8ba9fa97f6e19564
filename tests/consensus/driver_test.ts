/**
 * The consensus driver's promises to its callers, on the simulated cluster
 * (tests/sim/): real drivers, cores and state machines over a virtual
 * clock, network and disk.
 */

import { assert, assertEquals } from "../assert.ts";
import { ConsensusError } from "../../src/consensus/driver.ts";
import { SimCluster } from "../sim/cluster.ts";

/** Runs `c` until a leader a quorum follows exists. */
async function elect(c: SimCluster) {
  await c.scheduler.runUntil(
    c.scheduler.now() + 2_000,
    undefined,
    () => c.recognizedLeader() !== undefined,
  );
  const leader = c.recognizedLeader();
  assert(leader, "no leader after 2 s of virtual time");
  // Let the followers' drivers hand out the Ready that names the leader.
  await c.scheduler.runUntil(c.scheduler.now() + 50);
  return leader;
}

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
  for (const n of c.running) n.driver!.stop();
});
