/**
 * The metrics' own logic, without a node: totals that survive a reload
 * replacing a listener, the heartbeat round trip and leader changes as
 * consensus reports them, proposal outcomes, the readiness body, the
 * storage probe, and process metrics under Deno.
 */

import { assert, assertEquals, assertRejects } from "../assert.ts";
import { AgentMetrics, grpcServerReading } from "../../src/metrics/registry.ts";
import { readinessBody } from "../../src/metrics/server.ts";
import { RaftMessageKind } from "../../src/codec/raft.ts";
import { ConsensusError } from "../../src/consensus/driver.ts";
import { StorageProbe } from "../../src/node/readiness.ts";
import { parseExposition, valueOf } from "./helpers.ts";

const metrics = (now?: () => number) =>
  new AgentMetrics({ processMetrics: false, ...(now ? { now } : {}) });

/** A stand-in for a gRPC listener's counters: 20 bytes sent per connection. */
function grpcListener(accepted: number, connections: number) {
  const stats = {
    readsPaused: 0,
    connectionsOverflowed: 0,
    connectionsAccepted: accepted,
    protocolErrors: 0,
  };
  return {
    stats,
    connectionCount: connections,
    inflightCount: 0,
    bytes: () => ({ in: 10 * stats.connectionsAccepted, out: 20 * stats.connectionsAccepted }),
  };
}

Deno.test("a counter the transports keep never goes back when a reload replaces the listener; a level does", async () => {
  const m = metrics();
  const old = grpcListener(5, 2);
  const retire = m.transports.track(() => grpcServerReading(old));
  let e = parseExposition(await m.text());
  assertEquals(valueOf(e, "blixard_connections_accepted_total", { transport: "grpc" }), 5);
  assertEquals(valueOf(e, "blixard_connections", { transport: "grpc", side: "server" }), 2);

  // The reload: the new listener starts from zero, the old one stops with what it counted.
  const next = grpcListener(1, 1);
  m.transports.track(() => grpcServerReading(next));
  old.stats.connectionsAccepted = 7;
  retire();
  retire();
  old.stats.connectionsAccepted = 100; // a retired listener is not read again
  e = parseExposition(await m.text());
  assertEquals(valueOf(e, "blixard_connections_accepted_total", { transport: "grpc" }), 8);
  assertEquals(
    valueOf(e, "blixard_transport_bytes_total", { transport: "grpc", direction: "out" }),
    20 * 7 + 20,
  );
  assertEquals(valueOf(e, "blixard_connections", { transport: "grpc", side: "server" }), 1);
});

Deno.test("a heartbeat's round trip is timed from the oldest unanswered one to its answer, per follower", async () => {
  let now = 1_000;
  const m = metrics(() => now);
  const hb = (to: number) => ({ kind: RaftMessageKind.Heartbeat, from: 1, to });
  const answer = (from: number) => ({ kind: RaftMessageKind.HeartbeatResponse, from, to: 1 });
  m.raft.sent(hb(2));
  now += 3;
  m.raft.sent(hb(2)); // the second one, unanswered: the sample still starts at the first
  m.raft.sent(hb(3));
  now += 2;
  m.raft.received(answer(2)); // 5 ms
  m.raft.received(answer(2)); // nothing outstanding: no sample
  now += 10;
  m.raft.received(answer(3)); // 12 ms
  // A follower that was down for a minute does not report a minute-long round trip.
  m.raft.sent(hb(4));
  now += 60_000;
  m.raft.sent(hb(4));
  now += 1;
  m.raft.received(answer(4)); // 1 ms
  m.raft.received({ kind: RaftMessageKind.VoteResponse, from: 2 });
  const e = parseExposition(await m.text());
  assertEquals(valueOf(e, "blixard_raft_heartbeat_rtt_seconds_count"), 3);
  assertEquals(Math.round(valueOf(e, "blixard_raft_heartbeat_rtt_seconds_sum") * 1000), 18);
  assertEquals(valueOf(e, "blixard_raft_heartbeat_rtt_seconds_bucket", { le: "0.005" }), 2);
});

Deno.test("a leader change counts when a node learns a leader other than the one it knew just before", async () => {
  const m = metrics();
  for (const leader of [0, 2, 2, 0, 2, 3, 0, 0]) m.raft.leaderKnown(leader);
  const e = parseExposition(await m.text());
  // 0→2, 0→2 (found again after losing it), 2→3.
  assertEquals(valueOf(e, "blixard_raft_leader_changes_total"), 3);
});

Deno.test("a proposal is timed by its outcome, and an unknown failure is 'error', not a new label", async () => {
  let now = 0;
  const m = metrics(() => now);
  await m.raft.timeProposal(() => {
    now += 4;
    return Promise.resolve("applied");
  });
  await assertRejects(() =>
    m.raft.timeProposal(() => Promise.reject(new ConsensusError("NOT_LEADER", "node 2 is", 2)))
  );
  await assertRejects(() =>
    m.raft.timeProposal(() => Promise.reject(Object.assign(new Error("x"), { code: "NEW_THING" })))
  );
  await assertRejects(() => m.raft.timeProposal(() => Promise.reject(new Error("plain"))));
  const e = parseExposition(await m.text());
  assertEquals(valueOf(e, "blixard_raft_proposal_duration_seconds_count", { result: "ok" }), 1);
  assertEquals(valueOf(e, "blixard_raft_proposal_duration_seconds_sum", { result: "ok" }), 0.004);
  assertEquals(
    valueOf(e, "blixard_raft_proposal_duration_seconds_count", { result: "not_leader" }),
    1,
  );
  assertEquals(valueOf(e, "blixard_raft_proposal_duration_seconds_count", { result: "error" }), 2);
});

Deno.test("/readyz's body lists every check, passed or failed, then the verdict", () => {
  assertEquals(
    readinessBody([
      { name: "listeners", ok: true, detail: "serving over grpc" },
      { name: "leader", ok: false, detail: "no leader known" },
    ]),
    "[+]listeners ok: serving over grpc\n[-]leader failed: no leader known\nnot ready\n",
  );
  assertEquals(
    readinessBody([{ name: "storage", ok: true, detail: "synced" }]).endsWith("\nready\n"),
    true,
  );
});

Deno.test("the storage probe fails when the data directory cannot be written, and when a write hangs", async () => {
  const dir = await Deno.makeTempDir();
  let now = 0;
  const probe = new StorageProbe({ dir, stuckAfterMs: 1_000, now: () => now });
  assertEquals(probe.result(), { ok: false, detail: "not checked yet" });
  await probe.probe();
  assert(probe.result().ok, probe.result().detail);

  // While a write is under way for longer than stuckAfterMs, the disk counts as stuck.
  const running = probe.probe();
  now += 1_000;
  assertEquals(probe.result().ok, false);
  assert(probe.result().detail.includes("has not finished after 1000 ms"), probe.result().detail);
  await running;
  assert(probe.result().ok);

  await Deno.remove(dir, { recursive: true });
  await probe.probe();
  assertEquals(probe.result().ok, false);
  assert(
    probe.result().detail.startsWith(`cannot write ${dir}/.readyz-probe: `),
    probe.result().detail,
  );
});

Deno.test("process metrics are exported under Deno, without the Node ones Deno leaves empty", async () => {
  const e = parseExposition(await new AgentMetrics().text());
  assert(valueOf(e, "process_resident_memory_bytes") > 0);
  assert(valueOf(e, "process_open_fds") > 0);
  assert(valueOf(e, "process_cpu_seconds_total") > 0);
  assert(e.types.has("nodejs_eventloop_lag_p99_seconds"));
  assertEquals(e.types.has("nodejs_gc_duration_seconds"), false);
  assertEquals(e.types.has("nodejs_active_handles_total"), false);
  assertEquals(valueOf(e, "blixard_build_info", { version: "0.1.0", deno: Deno.version.deno }), 1);
});
