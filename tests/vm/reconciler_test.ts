/**
 * The reconciler over real backends and real processes, with a clock the
 * test moves: what it reports, how it restarts a crashing VM, and what a
 * new reconciler over the same data directory does after an agent restart.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { VmDesiredState, VmState } from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import type { VmBackend } from "../../src/vm/backend.ts";
import type { DesiredVm } from "../../src/vm/plan.ts";
import { isRunning } from "../../src/vm/proc.ts";
import { ProcessBackend } from "../../src/vm/process.ts";
import { QemuBackend } from "../../src/vm/qemu.ts";
import { VmReconciler, type VmStatusChange } from "../../src/vm/reconciler.ts";
import { vmIdentity } from "../../src/vm/supervisor.ts";
import { dataDir, guestSpec, ManualClock, shellSpec, spec } from "./helpers.ts";

/** A reconciler over `backends` with a manual clock, and the changes it reported. */
function reconciler(dir: string, backends?: VmBackend[], clock = new ManualClock()) {
  const changes: VmStatusChange[] = [];
  const r = new VmReconciler({
    dataDir: dir,
    backends: backends ?? [new ProcessBackend({ dataDir: dir })],
    clock,
    onChange: (c) => changes.push(c),
    limits: { backoffBaseMs: 1000 },
  });
  /** The reported states of `name`, as `STATE reason`. */
  const of = (name: string) =>
    changes.filter((c) => c.name === name).map((c) =>
      `${VmState[c.state]}${c.reason ? ` ${c.reason}` : ""}`
    );
  return { r, changes, of, clock };
}

/** Runs rounds (each waiting for its actions) until `done()`; fails after `ms` of real time. */
async function roundsUntil(r: VmReconciler, done: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!done()) {
    if (Date.now() > until) throw new Error(`reconciler did not get there in ${ms} ms`);
    await r.reconcile();
    await r.idle();
    await new Promise((res) => setTimeout(res, 10));
  }
}

const want = (s: DesiredVm["spec"], generation = 1, forceStop = false): DesiredVm => ({
  spec: s,
  generation,
  forceStop,
});

/**
 * As an agent before a restart: a reconciler that runs `desired` until
 * `name` is RUNNING, then closes. Returns the VM's handle.
 */
async function runThenStop(
  dir: string,
  desired: DesiredVm[],
  name: string,
  backends?: () => VmBackend[],
  ms?: number,
) {
  const before = reconciler(dir, backends?.());
  await before.r.open();
  before.r.setDesired(desired);
  await roundsUntil(before.r, () => before.of(name).includes("RUNNING"), ms);
  const handle = before.r.handle(name)!;
  await before.r.close();
  return handle;
}

/** As an agent after a restart: a new reconciler over the same data directory, opened. */
async function restarted(dir: string, desired: DesiredVm[], backends?: () => VmBackend[]) {
  const after = reconciler(dir, backends?.());
  await after.r.open();
  after.r.setDesired(desired);
  return after;
}

Deno.test("a desired VM is started and reported STARTING, then RUNNING, with the clock's time", async () => {
  await using dir = await dataDir();
  const { r, of, changes, clock } = reconciler(dir.path);
  await r.open();
  r.setDesired([want(spec("web"))]);
  await roundsUntil(r, () => of("web").includes("RUNNING"));
  assertEquals(of("web"), ["STARTING", "RUNNING"]);
  assert(changes.every((c) => c.atMs === clock.nowMs));
  r.setDesired([want(spec("web", { desired: "stopped" }), 2)]);
  await roundsUntil(r, () => of("web").at(-1)?.startsWith("STOPPED") ?? false);
  assertEquals(of("web").slice(2), [
    "STOPPING",
    "STOPPED stopped (SIGTERM): killed by SIGTERM (signal 15)",
  ]);
  await r.close();
});

Deno.test("a crashing VM is reported FAILED with its reason, restarted at once, then only after the backoff", async () => {
  await using dir = await dataDir();
  const { r, of, clock } = reconciler(dir.path);
  await r.open();
  r.setDesired([want(shellSpec("crashy", "echo oops >&2; exit 4"))]);
  const failures = () => of("crashy").filter((s) => s.startsWith("FAILED")).length;
  await roundsUntil(r, () => failures() === 2);
  assertEquals(of("crashy"), [
    "STARTING",
    "FAILED command: exit code 4: oops",
    "STARTING", // the first restart comes at once
    "FAILED command: exit code 4: oops",
  ]);
  // The second restart waits for the backoff: rounds alone do not bring it.
  for (let i = 0; i < 3; i++) {
    const plan = await r.reconcile();
    assertEquals(plan.wakeAtMs, clock.nowMs + 1000);
  }
  assertEquals(of("crashy").length, 4);
  clock.nowMs += 1000;
  await roundsUntil(r, () => failures() === 3);
  assertEquals(of("crashy").slice(4), ["STARTING", "FAILED command: exit code 4: oops"]);
  r.setDesired([]);
  await r.reconcile();
  await r.idle();
  await r.close();
});

Deno.test("a start that fails is reported FAILED with why", async () => {
  await using dir = await dataDir();
  const { r, of } = reconciler(dir.path);
  await r.open();
  r.setDesired([
    want(spec("ghost", { options: { command: '["/nonexistent/run"]', restart: "never" } })),
  ]);
  await roundsUntil(r, () => of("ghost").length === 2);
  assertEquals(of("ghost"), [
    "STARTING",
    'FAILED start failed: vm "ghost": program /nonexistent/run does not exist',
  ]);
  await r.close();
});

Deno.test("after an agent restart, a running VM is adopted from its vm.json and not started again", async () => {
  await using dir = await dataDir();
  const desired = [want(spec("web"))];
  const handle = await runThenStop(dir.path, desired, "web");

  const after = await restarted(dir.path, desired);
  const first = await after.r.reconcile();
  assertEquals(first.actions.map((a) => a.kind), ["adopt"]);
  await after.r.idle();
  await roundsUntil(after.r, () => after.of("web").includes("RUNNING"));
  assertEquals(after.of("web"), ["RUNNING"]);
  assertEquals(after.r.handle("web"), handle);
  assert(await isRunning(vmIdentity(handle)));

  after.r.setDesired([]);
  await roundsUntil(after.r, () => !after.r.handle("web"));
  assert(!await isRunning(vmIdentity(handle)), "a VM removed from the desired set is stopped");
  assertEquals(await Deno.stat(`${dir.path}/vms/web`).catch((e) => e.name), "NotFound");
  await after.r.close();
});

Deno.test("a VM killed while the agent was down is reported FAILED with the signal that killed it", async () => {
  await using dir = await dataDir();
  const desired = [want(spec("web", { options: { restart: "never" } }))];
  const handle = await runThenStop(dir.path, desired, "web");

  Deno.kill(handle.pid, "SIGKILL"); // while "the agent is down"
  while (await isRunning(vmIdentity(handle))) await new Promise((res) => setTimeout(res, 10));

  const after = await restarted(dir.path, desired);
  await roundsUntil(after.r, () => after.of("web").length > 0);
  assertEquals(after.of("web"), [
    "FAILED ended while the agent was not running: command: killed by SIGKILL (signal 9)",
  ]);
  await after.r.close();
});

Deno.test("a record that cannot be read is reported FAILED and never started over", async () => {
  await using dir = await dataDir();
  await Deno.mkdir(`${dir.path}/vms/web`, { recursive: true });
  await Deno.writeTextFile(`${dir.path}/vms/web/vm.json`, "{ not json");
  const { r, of } = reconciler(dir.path);
  await r.open();
  r.setDesired([want(spec("web"))]);
  await roundsUntil(r, () => of("web").length > 0);
  assertEquals(of("web").length, 1);
  assertMatch(of("web")[0]!, /^FAILED cannot adopt: vm "web": .*vm.json is not JSON/);
  assertEquals(r.handle("web"), undefined);
  await r.close();
});

Deno.test("after an agent restart, a running qemu VM is adopted over QMP, not booted again, then killed on a forced stop", async () => {
  await using dir = await dataDir();
  const qemu = () => [new QemuBackend({ dataDir: dir.path })];
  const desired = [want(await guestSpec("guest"))];
  const handle = await runThenStop(dir.path, desired, "guest", qemu, 20_000);

  const after = await restarted(dir.path, desired, qemu);
  await roundsUntil(after.r, () => after.of("guest").includes("RUNNING"), 20_000);
  assertEquals(after.of("guest"), ["RUNNING"]);
  assertEquals(after.r.handle("guest")?.pid, handle.pid);

  const stop = await guestSpec("guest");
  stop.desiredState = VmDesiredState.STOPPED;
  after.r.setDesired([want(stop, 2, true)]);
  await roundsUntil(
    after.r,
    () => after.of("guest").at(-1)?.startsWith("STOPPED") ?? false,
    20_000,
  );
  assertEquals(after.of("guest").slice(1), [
    "STOPPING",
    "STOPPED stopped (SIGKILL): killed by SIGKILL (signal 9)",
  ]);
  await after.r.close();
});
