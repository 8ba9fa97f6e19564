/**
 * What `blixard migrate` reads from a node's `/metrics` while it watches a
 * stage, and when it calls the stage failed: each criterion on its own, and
 * a limit reached is still within it.
 */

import { assert, assertEquals, thrown } from "../assert.ts";
import { AgentMetrics } from "../../src/metrics/registry.ts";
import {
  ExpositionError,
  judge,
  parseExposition,
  type Reading,
  readingOf,
} from "../../src/cli/migrate_health.ts";
import { STAGES } from "../../src/cli/migrate_stages.ts";

Deno.test("the agent's own exposition reads back: counters by label, and the process start time", async () => {
  const metrics = new AgentMetrics({ processMetrics: true });
  metrics.rpcFallbacks.inc({ service: "metadata", from: "iroh", to: "grpc" }, 3);
  metrics.configReloads.inc({ result: "ok" });
  const samples = parseExposition(await metrics.text());
  assert(samples.length > 20);
  const reading = readingOf(samples);
  assertEquals(reading.fallbacks, 3);
  assert(reading.startTimeSeconds > 0, "process_start_time_seconds is read");
  const reloads = samples.find((s) =>
    s.name === "blixard_config_reloads_total" && s.labels.result === "ok"
  );
  assertEquals(reloads?.value, 1);
});

Deno.test("the text format's corners parse: escapes, NaN in any case, infinities, timestamps, no labels", () => {
  const samples = parseExposition(
    [
      "# HELP x a help line, skipped",
      "# TYPE x counter",
      'x{a="q\\"uote",b="back\\\\slash",c="new\\nline"} 1',
      "y Nan",
      "z NaN 1700000000000",
      'h_bucket{le="+Inf"} +Inf',
      "m -Inf",
      "",
    ].join("\n"),
  );
  assertEquals(samples[0]!.labels, { a: 'q"uote', b: "back\\slash", c: "new\nline" });
  assert(Number.isNaN(samples[1]!.value) && Number.isNaN(samples[2]!.value));
  assertEquals(samples[3]!.value, Infinity);
  assertEquals(samples[4]!.value, -Infinity);
  const e = thrown(ExpositionError, () => parseExposition("ok 1\nbroken line here\n"));
  assertEquals([e.code, e.line], ["bad_exposition", 2]);
  assertEquals(thrown(ExpositionError, () => parseExposition("x one\n")).line, 1);
});

const base: Reading = {
  startTimeSeconds: 1_700_000_000,
  hasLeader: true,
  listeners: ["grpc", "iroh"],
  rpcCalls: 100,
  rpcErrors: 2,
  fallbacks: 1,
  leaderChanges: 4,
  raftSent: { grpc: 50, iroh: 0 },
};
const ready = { ok: true, body: "[+]listeners ok\nready" };
const canary = STAGES.canary;

Deno.test("a node that stays within the stage's criteria passes, at its limits too", () => {
  const now: Reading = {
    ...base,
    rpcCalls: 900,
    rpcErrors: base.rpcErrors + canary.limits.rpcErrors,
    fallbacks: base.fallbacks + canary.limits.fallbacks,
    leaderChanges: base.leaderChanges + canary.limits.leaderChanges,
    raftSent: { grpc: 80, iroh: 0 },
  };
  assertEquals(judge(canary, canary.limits, base, now, ready, base), {
    ok: true,
    totals: { rpcCalls: 800, rpcErrors: 5, fallbacks: 5, leaderChanges: 1 },
  });
});

Deno.test("each criterion fails the stage on its own, saying which and by how much", () => {
  const cases: [string, Reading, { ok: boolean; body: string }, RegExp][] = [
    ["readyz", base, {
      ok: false,
      body: "[+]listeners ok\n[-]leader failed: no leader known\nnot ready",
    }, /^\/readyz is not 200: leader failed: no leader known$/],
    ["restart", { ...base, startTimeSeconds: base.startTimeSeconds + 5 }, ready, /restarted/],
    ["leader", { ...base, hasLeader: false }, ready, /no leader known/],
    [
      "listeners",
      { ...base, listeners: ["grpc"] },
      ready,
      /listeners serving: grpc; stage canary serves on grpc and iroh/,
    ],
    [
      "raft",
      { ...base, raftSent: { grpc: 50, iroh: 3 } },
      ready,
      /3 Raft message\(s\) left over iroh, which stage canary does not use/,
    ],
    ["errors", { ...base, rpcErrors: 8 }, ready, /RPC errors .* rose by 6 \(limit 5\)/],
    ["fallbacks", { ...base, fallbacks: 7 }, ready, /fallbacks .* rose by 6 \(limit 5\)/],
    [
      "leader changes",
      { ...base, leaderChanges: 6 },
      ready,
      /leader changes .* rose by 2 \(limit 1\)/,
    ],
  ];
  for (const [what, now, r, reason] of cases) {
    const verdict = judge(canary, canary.limits, base, now, r, base);
    assert(!verdict.ok, `${what} passed`);
    assert(reason.test(verdict.reason), `${what}: ${verdict.reason}`);
  }
});

Deno.test("Raft messages over another transport fail the stage between readings, not before the first", () => {
  const late = { ...base, raftSent: { grpc: 52, iroh: 9 } };
  assert(
    judge(canary, canary.limits, base, late, ready, null).ok,
    "the first reading: still draining",
  );
  const verdict = judge(
    canary,
    canary.limits,
    base,
    { ...late, raftSent: { grpc: 60, iroh: 10 } },
    ready,
    late,
  );
  assert(
    !verdict.ok && /1 Raft message\(s\) left over iroh/.test(verdict.reason),
    JSON.stringify(verdict),
  );
});

Deno.test("an operator's limit of 0 fails a stage on the first fallback", () => {
  const limits = { ...canary.limits, fallbacks: 0 };
  const verdict = judge(
    canary,
    limits,
    base,
    { ...base, fallbacks: base.fallbacks + 1 },
    ready,
    null,
  );
  assert(!verdict.ok);
  assertEquals(verdict.totals.fallbacks, 1);
});
