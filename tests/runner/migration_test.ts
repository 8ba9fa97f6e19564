/**
 * The rollout an operator runs, end to end: one node flips
 * grpc → dual(health, status) → dual(all_except_raft) → iroh → grpc (the
 * rollback), one reload at each step, while a client keeps calling it. Every
 * call must get a correct answer (a fallback is allowed); none may be lost.
 */

import { assert, assertEquals, rejection } from "../assert.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Health, Status } from "../../src/rpc/services.ts";
import { ServiceId, Transport } from "../../src/rpc/gen/blixard/v1/common_pb.ts";
import { caller, configOf, eventually, nodeBase, type NodeSpec, startAgent } from "./helpers.ts";
import { Agent } from "../../src/node/agent.ts";
import { silentLogger } from "../../src/util/log.ts";

const STEPS: readonly {
  name: string;
  spec: Pick<NodeSpec, "mode" | "preferIroh" | "raftTransport">;
}[] = [
  { name: "grpc", spec: { mode: "grpc" } },
  { name: "dual(health, status)", spec: { mode: "dual", preferIroh: ["health", "status"] } },
  {
    name: "dual(all_except_raft)",
    spec: { mode: "dual", preferIroh: ["all_except_raft"], raftTransport: "adaptive" },
  },
  { name: "iroh", spec: { mode: "iroh" } },
  { name: "grpc (rollback)", spec: { mode: "grpc" } },
];

Deno.test({
  name:
    "a client loop survives grpc → dual → dual(all) → iroh → grpc reloads: every call answered, none lost",
  async fn() {
    await using c = await caller();
    const { base, ticket } = await nodeBase(c.operatorId);
    const agent = await startAgent(configOf({ ...base, ...STEPS[0]!.spec }));
    const peer = c.peerOf({ ...base, mode: "grpc" }, ticket);
    const health = createClient(Health, peer);
    const status = createClient(Status, peer);

    let sent = 0;
    let answered = 0;
    const failures: string[] = [];
    let running = true;
    // Four callers in parallel, each checking its answers byte for byte.
    const loops = Array.from({ length: 4 }, async (_, w) => {
      while (running) {
        const id = `${w}:${sent++}`;
        try {
          const payload = new TextEncoder().encode(id);
          const res = await health.ping({ payload }, { deadlineMs: 5000 });
          if (new TextDecoder().decode(res.payload) !== id) failures.push(`${id}: wrong answer`);
          else answered++;
          if (sent % 10 === 0) {
            const s = await status.getClusterStatus({}, { deadlineMs: 5000 });
            if (s.nodeId !== 1n) failures.push(`${id}: status from node ${s.nodeId}`);
          }
        } catch (e) {
          failures.push(`${id}: ${e}`);
        }
      }
    });
    try {
      await eventually("the client loop is under way", () => answered >= 20, 10_000);
      for (const step of STEPS.slice(1)) {
        const before = answered;
        const result = await agent.reload(configOf({ ...base, ...step.spec }));
        assert(result.ok, `reload to ${step.name}: ${!result.ok && result.error}`);
        await eventually(
          `calls are answered after the reload to ${step.name}`,
          () => answered >= before + 200,
          10_000,
        );
        // The node says what it serves now.
        const expected = step.spec.mode === "grpc"
          ? [Transport.GRPC]
          : step.spec.mode === "iroh"
          ? [Transport.IROH]
          : [Transport.GRPC, Transport.IROH];
        const self = (await status.getClusterStatus({})).members[0]!;
        assertEquals(
          self.services.find((s) => s.service === ServiceId.HEALTH)!.transports,
          expected,
          step.name,
        );
      }
    } finally {
      running = false;
      await Promise.all(loops);
      await agent.stop();
    }
    assertEquals(failures, []);
    assertEquals(answered, sent, "every call sent was answered");
    assert(answered > 100, `only ${answered} calls were made`);
    assert((await agent.metrics.text()).includes('blixard_config_reloads_total{result="ok"} 4'));
    // Both transports carried calls, and the switches were absorbed by retries.
    assert((c.client.stats.calls.get("iroh") ?? 0) > 0, "no call went over iroh");
    assert((c.client.stats.calls.get("grpc") ?? 0) > 0, "no call went over grpc");
  },
});

Deno.test({
  name: "starting from a config gives the same serving state as reloading into it",
  async fn() {
    await using c = await caller();
    const servedBy = async (spec: NodeSpec, ticket: string) => {
      const status = createClient(Status, c.peerOf(spec, ticket));
      return (await status.getClusterStatus({})).members[0]!.services;
    };
    const { base: a, ticket: ticketA } = await nodeBase(c.operatorId);
    const reloaded = await startAgent(configOf({ ...a, ...STEPS[0]!.spec }));
    const { base: b, ticket: ticketB } = await nodeBase(c.operatorId);
    const fresh = await Agent.start(configOf({ ...b, ...STEPS[2]!.spec }), silentLogger);
    try {
      for (const step of STEPS.slice(1, 3)) {
        assert((await reloaded.reload(configOf({ ...a, ...step.spec }))).ok);
      }
      assertEquals(reloaded.runner.listeners(), fresh.runner.listeners());
      assertEquals([...reloaded.runner.serving], [...fresh.runner.serving]);
      assertEquals(
        await servedBy({ ...a, mode: "dual" }, ticketA),
        await servedBy({ ...b, mode: "dual" }, ticketB),
      );
    } finally {
      await Promise.all([reloaded.stop(), fresh.stop()]);
    }
  },
});

Deno.test({
  name: "a reload that cannot apply leaves the old configuration running, and is counted",
  async fn() {
    await using c = await caller();
    const { base, ticket } = await nodeBase(c.operatorId);
    const agent = await startAgent(configOf({ ...base, mode: "dual", preferIroh: ["health"] }));
    try {
      const changedId = await agent.reload(configOf({ ...base, mode: "grpc", nodeId: 2 }));
      assert(!changedId.ok);
      assert(
        changedId.error.includes("node.id cannot change while the node runs"),
        changedId.error,
      );

      // A port another process holds: the new listener cannot start.
      const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const busy = (blocker.addr as Deno.NetAddr).port;
      const badPort = await agent.reload(
        configOf({ ...base, grpcPort: busy, mode: "dual", preferIroh: ["health"] }),
      );
      blocker.close();
      assert(!badPort.ok);
      assert(badPort.error.includes("cannot start a listener"), badPort.error);

      assertEquals(agent.runner.listeners(), ["grpc", "iroh"]);
      assertEquals(agent.runner.grpcAddress(), `127.0.0.1:${base.grpcPort}`);
      const health = createClient(Health, c.peerOf(base as NodeSpec, ticket));
      assertEquals((await health.check({})).nodeId, 1n);
      assert(
        (await agent.metrics.text()).includes('blixard_config_reloads_total{result="failed"} 2'),
      );
    } finally {
      await agent.stop();
    }
  },
});

Deno.test({
  name: "a reload that removes an operator key closes that operator's open connection",
  async fn() {
    await using c = await caller(["iroh"]);
    const { base, ticket } = await nodeBase(c.operatorId);
    const agent = await startAgent(configOf({ ...base, mode: "iroh" }));
    try {
      const health = createClient(Health, c.peerOf({ ...base, mode: "iroh" }, ticket));
      assertEquals((await health.check({})).nodeId, 1n);
      const result = await agent.reload(
        configOf({ ...base, mode: "iroh", operatorId: "ab".repeat(32) }),
      );
      assert(result.ok);
      assert(
        result.changes.some((x) => x.includes("closed 1 connection(s)")),
        result.changes.join("; "),
      );
      const e = await rejection(RpcError, () => health.check({}, { deadlineMs: 3000 }));
      // Refused outright, or (the channel already knows) unreachable because it was refused.
      assert([Code.PERMISSION_DENIED, Code.UNAVAILABLE].includes(e.code as 7 | 14), String(e));
      assert(e.message.includes("not on its allowlist"), e.message);
    } finally {
      await agent.stop();
    }
  },
});

Deno.test({
  name:
    "after a reload to grpc, an Iroh caller is told the node no longer serves Iroh, and where it serves gRPC",
  async fn() {
    await using c = await caller(["iroh"]);
    const { base, ticket } = await nodeBase(c.operatorId);
    const agent = await startAgent(configOf({ ...base, mode: "dual", preferIroh: ["health"] }));
    try {
      const health = createClient(Health, c.peerOf({ ...base, mode: "iroh" }, ticket));
      assertEquals((await health.check({})).nodeId, 1n);
      const result = await agent.reload(configOf({ ...base, mode: "grpc" }));
      assert(result.ok);
      assertEquals(result.summary, "health: iroh → grpc; iroh listener parked");
      const e = await rejection(RpcError, () => health.check({}, { deadlineMs: 3000 }));
      assertEquals(e.code, Code.UNAVAILABLE, String(e));
      assert(
        e.message.includes(
          `this node no longer serves Iroh; it serves gRPC at 127.0.0.1:${base.grpcPort}`,
        ),
        e.message,
      );
    } finally {
      await agent.stop();
    }
  },
});
