/**
 * The reconciler's plan, without processes: what it starts, stops, adopts
 * and forgets, what it reports, how it bounds concurrent work, and how it
 * backs off restarts.
 */

import fc from "fast-check";
import { assert, assertEquals } from "../assert.ts";
import { VmState } from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import {
  type ActualVm,
  backoffMs,
  DEFAULT_PLAN_LIMITS,
  type DesiredVm,
  type PlanInput,
  planVms,
  type ReportedState,
  type RetryState,
  type VmAction,
  type WorkKind,
} from "../../src/vm/plan.ts";
import { spec, type SpecOptions } from "./helpers.ts";

const NOW = 100_000;

function want(name: string, o: SpecOptions & { generation?: number; force?: boolean } = {}) {
  return { spec: spec(name, o), generation: o.generation ?? 1, forceStop: o.force } as DesiredVm;
}

function plan(p: Partial<PlanInput>) {
  return planVms({
    desired: [],
    actual: new Map(),
    inProgress: new Map(),
    retries: new Map(),
    reported: new Map(),
    nowMs: NOW,
    ...p,
  });
}

/** The work actions as `kind name`, and the reports as `name STATE reason`. */
function summary(actions: readonly VmAction[]) {
  return {
    work: actions.filter((a) => a.kind !== "report").map((a) => `${a.kind} ${a.name}`),
    reports: actions.flatMap((a) =>
      a.kind === "report" ? [`${a.name} ${VmState[a.state]}${a.reason ? ` ${a.reason}` : ""}`] : []
    ),
  };
}

const running = (generation = 1, sinceMs = NOW - 1000): ActualVm => ({
  kind: "running",
  generation,
  sinceMs,
});
const failed = (reason = "command: exit code 1", generation = 1): ActualVm => ({
  kind: "failed",
  generation,
  reason,
});
const stopped = (reason = "command: exit code 0", generation = 1): ActualVm => ({
  kind: "stopped",
  generation,
  reason,
});

Deno.test("a new VM is started and reported STARTING", () => {
  const p = plan({ desired: [want("web")] });
  assertEquals(summary(p.actions), { work: ["start web"], reports: ["web STARTING"] });
  const start = p.actions[0]!;
  assert(start.kind === "start" && start.generation === 1 && start.spec.name === "web");
});

Deno.test("a running VM is left alone, and RUNNING is reported once", () => {
  const actual = new Map([["web", running()]]);
  const first = plan({ desired: [want("web")], actual });
  assertEquals(summary(first.actions), { work: [], reports: ["web RUNNING"] });
  const reported = new Map<string, ReportedState>([["web", {
    state: VmState.RUNNING,
    reason: "",
  }]]);
  assertEquals(plan({ desired: [want("web")], actual, reported }).actions, []);
});

Deno.test("a VM whose desired state is stopped is stopped with its own timeout, or killed when forced", () => {
  const actual = new Map([["a", running()], ["b", running()]]);
  const p = plan({
    desired: [
      want("a", { desired: "stopped", options: { stop_timeout_ms: "1500" } }),
      want("b", { desired: "stopped", force: true }),
    ],
    actual,
  });
  assertEquals(summary(p.actions), {
    work: ["stop a", "kill b"],
    reports: ["a STOPPING", "b STOPPING"],
  });
  const stop = p.actions.find((a) => a.kind === "stop");
  assert(stop?.kind === "stop" && stop.timeoutMs === 1500);
});

Deno.test("a stopped VM that should be stopped needs nothing, and keeps the reason it stopped", () => {
  const p = plan({
    desired: [want("a", { desired: "stopped" }), want("b", { desired: "stopped" })],
    actual: new Map([["a", failed("command: killed by SIGKILL (signal 9)")]]),
  });
  assertEquals(summary(p.actions), {
    work: [],
    reports: ["a STOPPED command: killed by SIGKILL (signal 9)", "b STOPPED"],
  });
});

Deno.test("a VM no longer desired here is stopped, then forgotten, and never reported", () => {
  const p = plan({ actual: new Map([["gone", running()], ["ended", stopped()]]) });
  assertEquals(summary(p.actions), { work: ["stop gone", "forget ended"], reports: [] });
});

Deno.test("a VM recorded by an earlier agent is adopted before anything else, never started", () => {
  for (const desired of [[want("web")], [want("web", { desired: "stopped" })], []]) {
    const p = plan({ desired, actual: new Map([["web", { kind: "recorded" }]]) });
    assertEquals(summary(p.actions), { work: ["adopt web"], reports: [] });
  }
});

Deno.test("a record that cannot be adopted is reported FAILED and retried with backoff, never started", () => {
  const actual = new Map<string, ActualVm>([["web", {
    kind: "recorded",
    error: "cannot adopt: no qemu backend",
  }]]);
  const first = plan({ desired: [want("web")], actual });
  assertEquals(summary(first.actions), {
    work: ["adopt web"],
    reports: ["web FAILED cannot adopt: no qemu backend"],
  });
  const waiting = plan({ desired: [want("web")], actual, retries: first.retries, nowMs: NOW + 1 });
  assertEquals(summary(waiting.actions).work, []);
  assertEquals(waiting.wakeAtMs, NOW + DEFAULT_PLAN_LIMITS.backoffBaseMs);
});

Deno.test("nothing is planned for a VM with work in progress; it shows STARTING or STOPPING", () => {
  const inProgress = new Map<string, WorkKind>([["a", "start"], ["b", "stop"], ["c", "adopt"]]);
  const p = plan({
    desired: [want("a"), want("b", { desired: "stopped" }), want("c")],
    actual: new Map([["b", running()], ["c", { kind: "recorded" }]]),
    inProgress,
  });
  assertEquals(summary(p.actions), { work: [], reports: ["a STARTING", "b STOPPING"] });
});

Deno.test("at most maxInProgress actions run: adopts first, then stops, forgets, starts, by name", () => {
  const p = plan({
    desired: [
      want("s1"),
      want("s2"),
      want("s3"),
      want("st", { desired: "stopped" }),
      want("x", { desired: "stopped" }),
    ],
    actual: new Map<string, ActualVm>([
      ["st", running()],
      ["old", stopped()],
      ["rec", { kind: "recorded" }],
      ["x", running()],
    ]),
    inProgress: new Map([["x", "stop"]]),
    limits: { maxInProgress: 4 },
  });
  assertEquals(summary(p.actions), {
    work: ["adopt rec", "stop st", "forget old"],
    // s1..s3 wait for a slot: PENDING says so.
    reports: ["s1 PENDING", "s2 PENDING", "s3 PENDING", "st STOPPING", "x STOPPING"],
  });
});

Deno.test("restart policy: on-failure restarts a failure only, always restarts any end, never none", () => {
  const cases: [string, ActualVm, boolean][] = [
    ["on-failure", failed(), true],
    ["on-failure", stopped(), false],
    ["always", failed(), true],
    ["always", stopped(), true],
    ["never", failed(), false],
    ["never", stopped(), false],
  ];
  for (const [restart, have, restarts] of cases) {
    const p = plan({
      desired: [want("web", { options: { restart } })],
      actual: new Map([["web", have]]),
    });
    const s = summary(p.actions);
    assertEquals(s.work, restarts ? ["start web"] : [], `${restart} after ${have.kind}`);
    const shown = have.kind === "failed"
      ? "FAILED command: exit code 1"
      : "STOPPED command: exit code 0";
    assertEquals(s.reports, restarts ? [`web ${shown}`, "web STARTING"] : [`web ${shown}`]);
  }
});

Deno.test("the restart policy defaults to on-failure", () => {
  assertEquals(
    summary(plan({ desired: [want("a")], actual: new Map([["a", failed()]]) }).actions).work,
    ["start a"],
  );
  assertEquals(
    summary(plan({ desired: [want("a")], actual: new Map([["a", stopped()]]) }).actions).work,
    [],
  );
});

Deno.test("a crashing VM is restarted at once, then after 1 s, 2 s, 4 s ... up to the cap", () => {
  const limits = { backoffBaseMs: 1000, backoffMaxMs: 5000 };
  const desired = [want("web")];
  const actual = new Map([["web", failed()]]);
  let retries: ReadonlyMap<string, RetryState> = new Map();
  let now = NOW;
  const gaps: number[] = [];
  let last = now;
  for (let restarts = 0; restarts < 6;) {
    const p = plan({ desired, actual, retries, nowMs: now, limits });
    if (summary(p.actions).work.length === 1) {
      gaps.push(now - last);
      last = now;
      restarts++;
      retries = p.retries;
      now += 1; // the start is attempted, and the VM fails again at once
      continue;
    }
    assert(
      p.wakeAtMs !== undefined && p.wakeAtMs > now,
      "a waiting restart says when to plan again",
    );
    now = p.wakeAtMs;
  }
  assertEquals(gaps, [0, 1000, 2000, 4000, 5000, 5000]);
  assertEquals([1, 2, 3, 4].map((n) => backoffMs(n, { ...DEFAULT_PLAN_LIMITS, ...limits })), [
    1000,
    2000,
    4000,
    5000,
  ]);
});

Deno.test("a start held back by the concurrency bound does not use up a retry", () => {
  const retries = new Map([["b", { attempts: 2, lastAttemptMs: 0 }]]);
  const p = plan({
    desired: [want("a"), want("b")],
    actual: new Map([["b", failed()]]),
    retries,
    limits: { maxInProgress: 1 },
  });
  assertEquals(summary(p.actions).work, ["start a"]);
  assertEquals(p.retries.get("b"), { attempts: 2, lastAttemptMs: 0 });
});

Deno.test("a VM that has run stably has its backoff reset", () => {
  const retries = new Map([["web", { attempts: 5, lastAttemptMs: 0 }]]);
  const shortRun = plan({
    desired: [want("web")],
    actual: new Map([["web", running(1, NOW - 10)]]),
    retries,
  });
  assertEquals(shortRun.retries.get("web"), { attempts: 5, lastAttemptMs: 0 });
  const longRun = plan({
    desired: [want("web")],
    actual: new Map([["web", running(1, NOW - DEFAULT_PLAN_LIMITS.stableAfterMs)]]),
    retries,
  });
  assertEquals(longRun.retries.has("web"), false);
});

Deno.test("the operator starting a VM again (a newer generation) starts it whatever its policy and backoff", () => {
  const retries = new Map([["web", { attempts: 9, lastAttemptMs: NOW }]]);
  for (const have of [failed("x", 3), stopped("y", 3)]) {
    const p = plan({
      desired: [want("web", { generation: 4, options: { restart: "never" } })],
      actual: new Map([["web", have]]),
      retries,
    });
    assertEquals(summary(p.actions).work, ["start web"]);
    assertEquals(p.retries.has("web"), false);
  }
});

Deno.test("stopping a VM clears its backoff, and so does removing it", () => {
  const retries = new Map([["a", { attempts: 3, lastAttemptMs: NOW }], ["b", {
    attempts: 3,
    lastAttemptMs: NOW,
  }]]);
  const p = plan({
    desired: [want("a", { desired: "stopped" })],
    actual: new Map([["a", failed()]]),
    retries,
  });
  assertEquals([...p.retries.keys()], []);
});

// Properties over random worlds: the rules every plan keeps.
const NAMES = ["a", "b", "c", "d", "e", "f"];
const actualArb = fc.oneof(
  fc.constant<ActualVm>({ kind: "recorded" }),
  fc.constant<ActualVm>({ kind: "recorded", error: "bad" }),
  fc.integer({ min: 0, max: 3 }).map((g): ActualVm => running(g)),
  fc.integer({ min: 0, max: 3 }).map((g): ActualVm => failed("f", g)),
  fc.integer({ min: 0, max: 3 }).map((g): ActualVm => stopped("s", g)),
);
const worldArb = fc.record({
  desired: fc.subarray(NAMES).chain((names) =>
    fc.tuple(
      ...names.map((n) =>
        fc.record({
          desired: fc.constantFrom("running" as const, "stopped" as const),
          restart: fc.constantFrom("never", "on-failure", "always"),
          generation: fc.integer({ min: 0, max: 3 }),
        }).map((o) =>
          want(n, { desired: o.desired, generation: o.generation, options: { restart: o.restart } })
        )
      ),
    )
  ),
  actual: fc.dictionary(fc.constantFrom(...NAMES), actualArb),
  busy: fc.dictionary(
    fc.constantFrom(...NAMES),
    fc.constantFrom<WorkKind>("adopt", "start", "stop", "kill", "forget"),
  ),
  max: fc.integer({ min: 0, max: 5 }),
});

Deno.test("every plan keeps the rules: bounded work, one action per VM, no start of a running, recorded or busy VM", () => {
  fc.assert(
    fc.property(worldArb, (w) => {
      const actual = new Map(Object.entries(w.actual));
      const inProgress = new Map(Object.entries(w.busy));
      const input = { desired: w.desired, actual, inProgress, limits: { maxInProgress: w.max } };
      const p = plan(input);
      const work = p.actions.filter((a) => a.kind !== "report");
      assert(work.length <= Math.max(0, w.max - inProgress.size), "bounded");
      assertEquals(new Set(work.map((a) => a.name)).size, work.length, "one action per VM");
      for (const a of work) {
        assert(!inProgress.has(a.name), `${a.name} is busy`);
        const have = actual.get(a.name);
        if (a.kind === "start") {
          assert(
            have === undefined || have.kind === "failed" || have.kind === "stopped",
            `start of ${have?.kind}`,
          );
        }
        if (have?.kind === "recorded") assertEquals(a.kind, "adopt");
        if (a.kind === "forget") assert(!w.desired.some((d) => d.spec.name === a.name));
      }
      const reportedNames = p.actions.filter((a) => a.kind === "report").map((a) => a.name);
      assert(
        reportedNames.every((n) => w.desired.some((d) => d.spec.name === n)),
        "reports only desired VMs",
      );
      assertEquals(
        planVms({ ...input, retries: new Map(), reported: new Map(), nowMs: NOW }),
        p,
        "deterministic",
      );
    }),
    { numRuns: 500 },
  );
});
