/**
 * VMs across a cluster of real agent processes (process backend): created
 * through any node, placed on others, running as real processes, every
 * transition in WatchEvents; a node whose agent is killed has its VMs moved
 * or marked LOST by their policy, and taken up again, never started twice,
 * when it comes back; bad specs and callers change nothing.
 */

import { create } from "@bufbuild/protobuf";
import { assert, assertEquals, assertMatch, rejection } from "../assert.ts";
import { eventually } from "../wait.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import {
  type Vm,
  VmDesiredState,
  type VmEvent,
  VmEventKind,
  VmSpecSchema,
  VmState,
} from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import { waitForVm } from "../../src/cli/vm_wait.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Vm as VmService } from "../../src/rpc/services.ts";
import { createEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { makePki } from "../transport/grpc/helpers.ts";
import { alive, recordedVms, TestCluster, type TestCluster as Cluster } from "./helpers.ts";

const SANITIZE = { sanitizeOps: false, sanitizeResources: false };

/** A process-backend VM running `sleep`, with a restart policy. */
function sleeper(name: string, o: { restart?: string; vcpus?: number; nodeId?: bigint } = {}) {
  return create(VmSpecSchema, {
    name,
    vcpus: o.vcpus ?? 1,
    memoryMib: 64n,
    backend: "process",
    nodeId: o.nodeId ?? 0n,
    backendOptions: {
      command: JSON.stringify(["/bin/sleep", "3600"]),
      ...(o.restart ? { restart: o.restart } : {}),
    },
  });
}

async function getVm(c: Cluster, via: number, name: string): Promise<Vm> {
  return (await c.node(via).clients.vm.get({ name })).vm!;
}

async function waitForState(
  c: Cluster,
  via: number,
  name: string,
  state: VmState,
  ms = 20_000,
): Promise<Vm> {
  let last: Vm | undefined;
  let error: unknown;
  try {
    await eventually(`vm ${name} is ${VmState[state]}`, async () => {
      try {
        last = await getVm(c, via, name);
      } catch (e) {
        error = e;
        return false;
      }
      return last.status?.state === state;
    }, ms);
  } catch (e) {
    const seen = last
      ? `${VmState[last.status!.state]} on node ${last.status!.nodeId}: ${last.status!.exitReason}`
      : `never read (${error})`;
    throw new Error(`${(e as Error).message}; last seen: ${seen}`);
  }
  return last!;
}

/** Collects a node's WatchEvents stream until `stop` aborts it. */
function watch(c: Cluster, via: number, stop: AbortController): VmEvent[] {
  const events: VmEvent[] = [];
  (async () => {
    for await (
      const e of c.node(via).clients.vm.watchEvents({ includeExisting: true }, {
        signal: stop.signal,
        deadlineMs: 120_000,
      })
    ) events.push(e);
  })().catch(() => {});
  return events;
}

Deno.test({
  name:
    "VMs created through one node are placed across the cluster, run there, and every transition is watched",
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "grpc" });
    const leader = await c.waitForVmCapacity();
    const follower = c.nodes.find((n) => n.id !== leader)!.id;
    const stop = new AbortController();
    const events = watch(c, leader, stop);

    for (const name of ["web-1", "web-2", "web-3"]) {
      const created = await c.node(follower).clients.vm.create({ spec: sleeper(name) });
      assertEquals(created.vm?.status?.state, VmState.PENDING);
    }
    const nodes = new Set<bigint>();
    for (const name of ["web-1", "web-2", "web-3"]) {
      const vm = await waitForState(c, 3, name, VmState.RUNNING);
      nodes.add(vm.status!.nodeId);
      // A real process runs on the node it is placed on.
      const record = (await recordedVms(c.node(Number(vm.status!.nodeId)).dataDir)).get(name);
      assert(record && alive(record.pid), `${name}: no live process on its node`);
    }
    assertEquals(nodes.size, 3, "three equal VMs spread over three equal nodes");

    // Each node's resources: measured by the node itself, allocation from the state.
    const summary = await c.node(follower).clients.monitoring.getResourceSummary({});
    assertEquals(summary.nodes.map((n) => n.nodeId), [1n, 2n, 3n]);
    for (const n of summary.nodes) {
      assertEquals(n.cpuCores, navigator.hardwareConcurrency);
      assert(n.memoryTotalMib > 0n && n.memoryUsedMib > 0n && n.memoryUsedMib <= n.memoryTotalMib);
      assert(n.reportedAt !== undefined, `node ${n.nodeId} did not answer for itself`);
      assertEquals([n.vcpusCapacity, n.memoryCapacityMib, n.vmBackends], [8, 8192n, ["process"]]);
      assertEquals([n.vcpusAllocated, n.memoryAllocatedMib], [1, 64n]);
      assertEquals(n.vmCounts.map((v) => [v.state, v.count]), [[VmState.RUNNING, 1]]);
    }
    const one = await c.node(1).clients.monitoring.getResourceSummary({ nodeId: 3n });
    assertEquals(one.nodes.map((n) => [n.nodeId, n.vcpusAllocated]), [[3n, 1]]);

    const listed = await c.node(follower).clients.vm.list({});
    assertEquals(listed.vms.map((v) => v.spec!.name), ["web-1", "web-2", "web-3"]);
    assertEquals(listed.nextPageToken, "");
    const page = await c.node(follower).clients.vm.list({ pageSize: 2 });
    assertEquals([page.vms.length, page.nextPageToken], [2, "web-2"]);
    assertEquals(
      (await c.node(follower).clients.vm.list({ pageToken: "web-2" })).vms.map((v) => v.spec!.name),
      ["web-3"],
    );

    // Stop: the process ends and the VM is STOPPED.
    const web2 = await getVm(c, 1, "web-2");
    const web2Node = c.node(Number(web2.status!.nodeId));
    const pid = (await recordedVms(web2Node.dataDir)).get("web-2")!.pid;
    await c.node(follower).clients.vm.stop({ name: "web-2" });
    await waitForState(c, 1, "web-2", VmState.STOPPED);
    assert(!alive(pid), "the stopped VM's process still runs");

    // Start again: a new process.
    await c.node(leader).clients.vm.start({ name: "web-2" });
    await waitForState(c, 1, "web-2", VmState.RUNNING);
    const again = (await recordedVms(web2Node.dataDir)).get("web-2")!;
    assert(again.pid !== pid && alive(again.pid));

    // Delete: gone from the state; its node ends it and removes its directory.
    const web3 = await getVm(c, 1, "web-3");
    const web3Node = c.node(Number(web3.status!.nodeId));
    const web3Pid = (await recordedVms(web3Node.dataDir)).get("web-3")!.pid;
    await c.node(follower).clients.vm.delete({ name: "web-3" });
    const missing = await rejection(RpcError, () => c.node(2).clients.vm.get({ name: "web-3" }));
    assertEquals(missing.code, Code.NOT_FOUND);
    await eventually(
      "web-3's process ended and its record is gone",
      async () => !alive(web3Pid) && !(await recordedVms(web3Node.dataDir)).has("web-3"),
      10_000,
    );

    // The watcher saw each VM go PENDING -> STARTING -> RUNNING, and web-3 deleted.
    await eventually(
      "the watcher saw the delete",
      () => events.some((e) => e.kind === VmEventKind.DELETED && e.vm?.spec?.name === "web-3"),
    );
    stop.abort();
    const states = (name: string) =>
      events.filter((e) => e.vm?.spec?.name === name && e.kind !== VmEventKind.SPEC_CHANGED)
        .map((e) => VmState[e.vm!.status!.state]);
    assertEquals(states("web-1"), ["PENDING", "STARTING", "RUNNING"]);
    assertEquals(states("web-2"), [
      "PENDING",
      "STARTING",
      "RUNNING",
      "STOPPING",
      "STOPPED",
      "STARTING",
      "RUNNING",
    ]);
    const indexes = events.map((e) => Number(e.index));
    assertEquals(indexes, [...indexes].sort((a, b) => a - b), "events come in commit order");
  },
});

Deno.test({
  name:
    "a lost node's VMs move or are marked LOST by policy, and it takes its own up again on return, never twice",
  ...SANITIZE,
  async fn() {
    // Node 3 is the roomiest, so placement puts both VMs there.
    await using c = await TestCluster.start({
      size: 3,
      mode: "dual",
      raftTransport: "iroh",
      vm: (id) =>
        `backends = ["process"]\nvcpus = ${
          id === 3 ? 64 : 8
        }\nmemory_mib = 65536\nnode_lost_after_ms = 2000\n`,
    });
    let leader = await c.waitForVmCapacity();
    if (leader === 3) {
      await c.node(3).clients.cluster.transferLeadership({ targetNodeId: 1n });
      leader = await c.waitForLeader([3]);
    }
    await c.node(leader).clients.vm.create({ spec: sleeper("mover", { restart: "always" }) });
    await c.node(leader).clients.vm.create({ spec: sleeper("stayer", { restart: "never" }) });
    for (const name of ["mover", "stayer"]) {
      const vm = await waitForState(c, leader, name, VmState.RUNNING);
      assertEquals(vm.status?.nodeId, 3n, `${name} is placed on the roomiest node`);
    }
    const before = await recordedVms(c.node(3).dataDir);

    const stop = new AbortController();
    const events = watch(c, leader, stop);
    await c.signal(3, "SIGKILL");
    // Its VMs outlive the agent; the leader stops hearing from it.
    await eventually("mover runs on another node", async () => {
      const vm = await getVm(c, leader, "mover");
      return vm.status?.nodeId !== 3n && vm.status?.state === VmState.RUNNING;
    }, 30_000);
    const move = events.find((e) => e.vm?.spec?.name === "mover" && e.vm.status?.nodeId !== 3n)!;
    assertEquals(VmState[move.vm!.status!.state], "PENDING");
    assertMatch(
      move.vm!.status!.exitReason,
      /^node 3 not heard from for \d+ s: moved to node [12] \(restart policy "always"\)$/,
    );
    const lost = await waitForState(c, leader, "stayer", VmState.LOST, 30_000);
    assertEquals(lost.status?.nodeId, 3n);
    assertMatch(lost.status!.exitReason, /restart policy "never" keeps it there/);

    // Node 3's agent comes back: it ends its copy of the moved VM, and takes up
    // the one still placed on it, the same process, not a second one.
    await c.startNode(3);
    await waitForState(c, leader, "stayer", VmState.RUNNING, 30_000);
    const after = await recordedVms(c.node(3).dataDir);
    assertEquals(after.get("stayer")?.pid, before.get("stayer")!.pid);
    assert(alive(before.get("stayer")!.pid));
    await eventually(
      "node 3's copy of mover has ended",
      async () =>
        !alive(before.get("mover")!.pid) && !(await recordedVms(c.node(3).dataDir)).has("mover"),
      20_000,
    );
    const mover = await getVm(c, leader, "mover");
    assert(mover.status?.nodeId !== 3n && mover.status?.state === VmState.RUNNING);
    stop.abort();
  },
});

Deno.test({
  name:
    "a create that fits only on a member that has not announced itself yet waits for it, within a bound, instead of failing",
  ...SANITIZE,
  async fn() {
    // Node 3 is a voter in the config but not running: it has announced nothing.
    await using c = await TestCluster.start({ size: 3, mode: "grpc", started: [1, 2] });
    const leader = await c.waitForLeader();
    const vm = c.node(leader).clients.vm;
    // Pinned to node 3 while it never comes: refused with the placement's
    // reason once the wait is over, well before the call's deadline.
    const refused = await rejection(
      RpcError,
      () => vm.create({ spec: sleeper("early", { nodeId: 3n }) }, { deadlineMs: 30_000 }),
    );
    assertEquals(refused.code, Code.FAILED_PRECONDITION, refused.message);
    assertMatch(refused.message, /node 3/);
    // Pinned to node 3 while it starts: created once node 3 has announced.
    const created = vm.create({ spec: sleeper("late", { nodeId: 3n }) }, { deadlineMs: 30_000 });
    created.catch(() => {}); // awaited below, after node 3 is started
    await c.startNode(3);
    assertEquals((await created).vm?.status?.nodeId, 3n);
    await waitForState(c, leader, "late", VmState.RUNNING);
    assertEquals((await vm.list({})).vms.map((v) => v.spec!.name), ["late"]);
  },
});

Deno.test({
  name:
    "a bad spec, a name in use and a VM too big for any node are refused, naming what was wrong, and nothing is created",
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({ size: 1, mode: "grpc" });
    await c.waitForVmCapacity();
    const vm = c.node(1).clients.vm;
    await vm.create({ spec: sleeper("keep") });

    const bad = create(VmSpecSchema, {
      name: "Bad_Name",
      vcpus: 0,
      memoryMib: 8n,
      backend: "qemu",
    });
    const invalid = await rejection(RpcError, () => vm.create({ spec: bad }));
    assertEquals(invalid.code, Code.INVALID_ARGUMENT);
    for (const field of ["name", "vcpus", "memory_mib", "kernel"]) {
      assert(invalid.message.includes(`${field}: `), `${field} not named: ${invalid.message}`);
    }
    const taken = await rejection(RpcError, () => vm.create({ spec: sleeper("keep") }));
    assertEquals(taken.code, Code.ALREADY_EXISTS);
    const big = await rejection(RpcError, () => vm.create({ spec: sleeper("big", { vcpus: 9 }) }));
    assertEquals(big.code, Code.RESOURCE_EXHAUSTED);
    assertEquals(
      big.message,
      'vm.Create: no node can run vm "big" (9 vcpus, 64 MiB, backend "process"): node 1: 7 vcpus and 8128 MiB free',
    );
    const pinned = await rejection(
      RpcError,
      () => vm.create({ spec: sleeper("p", { nodeId: 7n }) }),
    );
    assertEquals(pinned.code, Code.INVALID_ARGUMENT);
    assertMatch(pinned.message, /on node 7: no such member \(members: 1\)/);
    const nothing = await rejection(RpcError, () => vm.start({ name: "ghost" }));
    assertEquals(nothing.code, Code.NOT_FOUND);

    assertEquals((await vm.list({})).vms.map((v) => v.spec!.name), ["keep"]);
  },
});

Deno.test({
  name:
    "changes need an authenticated caller: a TLS client without a certificate, an unknown key and an operator reporting as a node change nothing",
  ...SANITIZE,
  async fn() {
    await using pki = await testPki();
    await using c = await TestCluster.start({
      size: 1,
      mode: "dual",
      raftTransport: "iroh",
      grpcTls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, caFile: pki.caFile },
    });
    await c.waitForVmCapacity();
    // gRPC's clients here pass server-only TLS: they may read, not change.
    const overGrpc = c.node(1).clients.vm;
    const denied = await rejection(RpcError, () => overGrpc.create({ spec: sleeper("nope") }));
    assertEquals(denied.code, Code.PERMISSION_DENIED);
    assertEquals(
      denied.message,
      "vm.Create: vm.Create needs an authenticated caller, and this node's gRPC listener authenticates none (TLS without grpc.tls.ca_file): use mutual TLS, or Iroh with an operator key",
    );
    const put = await rejection(
      RpcError,
      () => c.node(1).clients.metadata.put({ key: "k", value: "v" }),
    );
    assertEquals(put.code, Code.PERMISSION_DENIED);

    // The operator key over Iroh may.
    const operator = c.operatorClient(VmService, 1);
    await operator.create({ spec: sleeper("ok") });
    const running = await waitForState(c, 1, "ok", VmState.RUNNING);

    // ...but may not report VM states as a node.
    const report = await rejection(RpcError, () =>
      operator.reportStatus({
        nodeId: 1n,
        reports: [{ name: "ok", state: VmState.FAILED, exitReason: "forged" }],
      }));
    assertEquals(report.code, Code.PERMISSION_DENIED);
    assertMatch(report.message, /operators may not report VM states/);

    // A key that is neither a peer nor an operator is refused at the handshake.
    await using stranger = await strangerClient(c.node(1));
    const refused = await rejection(RpcError, () => stranger.vm.create({ spec: sleeper("x") }));
    assertEquals(refused.code, Code.PERMISSION_DENIED);

    const after = await overGrpc.list({});
    assertEquals(after.vms.map((v) => [v.spec!.name, v.status!.state]), [["ok", VmState.RUNNING]]);
    assertEquals(after.vms[0]!.status!.stateChangedAt, running.status!.stateChangedAt);
  },
});

async function testPki() {
  const pki = await makePki();
  return { ...pki, [Symbol.asyncDispose]: () => Deno.remove(pki.dir, { recursive: true }) };
}

/** A client of `node`'s Vm service over Iroh with a key the node does not know. */
async function strangerClient(node: { endpointId: string; ports: { udp: number } }) {
  const endpoint = await createEndpoint({
    secretKey: crypto.getRandomValues(new Uint8Array(32)),
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
    alpns: [],
  });
  const client = new IrohRpcClient({ endpoint });
  const peer = client.peer({
    id: node.endpointId,
    directAddresses: [`127.0.0.1:${node.ports.udp}`],
  });
  return {
    vm: createClient(VmService, peer),
    async [Symbol.asyncDispose]() {
      client.close();
      await endpoint.close();
    },
  };
}

Deno.test({
  name:
    'with on_agent_stop = "stop", SIGTERM stops the node\'s VMs and the next start starts them again',
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({
      size: 1,
      mode: "grpc",
      vm: 'backends = ["process"]\nvcpus = 4\nmemory_mib = 4096\non_agent_stop = "stop"\n',
    });
    await c.waitForVmCapacity();
    await c.node(1).clients.vm.create({ spec: sleeper("svc") });
    await waitForState(c, 1, "svc", VmState.RUNNING);
    const first = (await recordedVms(c.node(1).dataDir)).get("svc")!.pid;

    const p1 = c.node(1).process!;
    assertEquals(await p1.stop(), 0);
    assert(!alive(first), "the VM still runs after a graceful stop with on_agent_stop = stop");

    await c.startNode(1);
    await eventually("svc runs again as a new process", async () => {
      const h = (await recordedVms(c.node(1).dataDir)).get("svc");
      return h !== undefined && h.pid !== first && alive(h.pid);
    }, 20_000);
    await waitForState(c, 1, "svc", VmState.RUNNING);
  },
});

Deno.test({
  name:
    "a wait for a start through a follower outlasts a frozen leader: the watch is opened again where it was, and the VM is seen running",
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "grpc" });
    const leader = await c.waitForVmCapacity();
    const follower = c.nodes.find((n) => n.id !== leader)!.id;
    const client = c.node(follower).clients.vm;
    const spec = sleeper("patient", { nodeId: BigInt(follower) });
    spec.desiredState = VmDesiredState.STOPPED;
    await client.create({ spec });

    // Frozen, the leader confirms no read: the follower's watch fails UNAVAILABLE until another
    // leader is elected.
    await c.signal(leader, "SIGSTOP");
    try {
      const lines: string[] = [];
      const result = await waitForVm({
        client,
        name: "patient",
        goal: "running",
        change: () => client.start({ name: "patient" }, { deadlineMs: 10_000 }),
        timeoutMs: 30_000,
        startedAt: performance.now(),
        progress: (line) => lines.push(line),
      });
      assertEquals(result.outcome, "reached", lines.join("\n"));
      assertEquals(result.vm?.status?.state, VmState.RUNNING);
    } finally {
      await c.signal(leader, "SIGCONT");
    }
  },
});
