/**
 * Small steps for tests that drive a simulated cluster by hand: run for a
 * while, run until something holds, wait for a leader, wait for a promise.
 * Every run checks the cheap invariants after each event when given a
 * checker.
 *
 * Owns: {@link runFor}, {@link runUntil}, {@link elect}, {@link outcomeOf},
 * {@link stopAll}. Imports the simulated cluster and the invariant checker.
 */

import { assert } from "../assert.ts";
import type { SimCluster, SimNode } from "./cluster.ts";
import type { InvariantChecker } from "./invariants.ts";

/** Runs `ms` of virtual time. */
export async function runFor(c: SimCluster, ms: number, checker?: InvariantChecker): Promise<void> {
  await c.scheduler.runUntil(c.scheduler.now() + ms, () => checker?.afterEvent());
}

/** Runs until `done()` holds, at most `ms` of virtual time; returns whether it held. */
export async function runUntil(
  c: SimCluster,
  ms: number,
  done: () => boolean,
  checker?: InvariantChecker,
): Promise<boolean> {
  if (done()) return true;
  await c.scheduler.runUntil(c.scheduler.now() + ms, () => checker?.afterEvent(), done);
  return done();
}

/**
 * Runs until a leader a quorum follows exists, then until the followers'
 * drivers have handed out the Ready that names it.
 */
export async function elect(c: SimCluster, checker?: InvariantChecker): Promise<SimNode> {
  await runUntil(c, 2_000, () => c.recognizedLeader() !== undefined, checker);
  const leader = c.recognizedLeader();
  assert(leader, "no leader after 2 s of virtual time");
  await runFor(c, 50, checker);
  return leader;
}

/** Runs until `p` settles (at most `ms`); returns its value, its error, or "never settled". */
export async function outcomeOf(
  c: SimCluster,
  p: Promise<unknown>,
  ms = 5_000,
  checker?: InvariantChecker,
): Promise<unknown> {
  let outcome: unknown = "never settled";
  let settled = false;
  p.then((v) => outcome = v, (e) => outcome = e).finally(() => settled = true);
  await runUntil(c, ms, () => settled, checker);
  return outcome;
}

/** Stops every running node (its waiters fail with STOPPED). */
export function stopAll(c: SimCluster): void {
  for (const n of c.running) n.driver!.stop();
}
