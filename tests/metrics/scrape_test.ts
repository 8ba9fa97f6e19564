/**
 * A 3-node cluster of real `blixard node` processes in mode dual, scraped
 * over HTTP as Prometheus would: the families move when the thing they
 * count happens (calls by service, method, transport and code; Raft's
 * heartbeats, queues and leader changes; a refused Iroh endpoint; Iroh's
 * direct paths and bytes; VMs by state), and Monitoring.GetMetrics answers
 * the same exposition over both transports.
 */

import { create } from "@bufbuild/protobuf";
import { assert, assertEquals } from "../assert.ts";
import { eventually } from "../wait.ts";
import { VmSpecSchema, VmState } from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { Health, Monitoring } from "../../src/rpc/services.ts";
import { createEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { TestCluster } from "../cluster/helpers.ts";
import {
  type Exposition,
  parseExposition,
  scrape,
  scrapeUntil,
  series,
  seriesOf,
  valueOf,
} from "./helpers.ts";

// The cluster's processes and the test's Iroh clients keep timers and native
// handles across steps; the cluster's disposal ends them.
const SANITIZE = { sanitizeOps: false, sanitizeResources: false };

const calls = (e: Exposition, service: string, method: string, transport: string, code = "OK") =>
  valueOf(e, "blixard_rpc_server_requests_total", { service, method, transport, code });

Deno.test({
  name:
    "a scraped cluster counts calls by service, method, transport and code, Raft's heartbeats and queues, refused endpoints, paths and VMs",
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "dual" });
    const leader = await c.waitForVmCapacity();
    const port = (id: number) => c.node(id).ports.metrics;

    // Calls: three over gRPC, two over Iroh (as the operator), one that fails.
    const before = await scrape(port(1));
    for (let i = 0; i < 3; i++) await c.node(1).clients.status.getRaftStatus({});
    const irohStatus = c.operatorClient(Monitoring, 1);
    for (let i = 0; i < 2; i++) await irohStatus.getResourceSummary({ nodeId: 1n });
    const missing = await c.node(1).clients.vm.get({ name: "no-such-vm" }).catch((e) => e);
    assert(missing instanceof RpcError && missing.code === Code.NOT_FOUND, String(missing));
    const after = await scrapeUntil(
      port(1),
      (e) =>
        calls(e, "vm", "Get", "grpc", "NOT_FOUND") ===
          calls(before, "vm", "Get", "grpc", "NOT_FOUND") + 1,
      "the failed call counted",
    );
    assertEquals(
      calls(after, "status", "GetRaftStatus", "grpc") -
        calls(before, "status", "GetRaftStatus", "grpc"),
      3,
    );
    assertEquals(
      calls(after, "monitoring", "GetResourceSummary", "iroh") -
        calls(before, "monitoring", "GetResourceSummary", "iroh"),
      2,
    );
    const timed = { service: "status", method: "GetRaftStatus", transport: "grpc" };
    assert(
      valueOf(after, "blixard_rpc_server_duration_seconds_count", timed) >=
        valueOf(before, "blixard_rpc_server_duration_seconds_count", timed) + 3,
    );

    // The operator's Iroh connection: accepted, direct on loopback, bytes moved.
    assert(valueOf(after, "blixard_connections_accepted_total", { transport: "iroh" }) >= 1);
    assert(
      valueOf(after, "blixard_iroh_connection_paths", { side: "server", path: "direct" }) >= 1,
    );
    assert(valueOf(after, "blixard_iroh_connections_direct_total") >= 1);
    assert(
      valueOf(after, "blixard_transport_bytes_total", { transport: "iroh", direction: "in" }) > 0,
    );
    assert(
      valueOf(after, "blixard_transport_bytes_total", { transport: "grpc", direction: "in" }) > 0,
    );

    // An endpoint that is neither a member nor an operator key is refused, and counted.
    const refusedBefore = valueOf(after, "blixard_connections_refused_total", {
      transport: "iroh",
    });
    {
      await using stranger = await createEndpoint({
        secretKey: crypto.getRandomValues(new Uint8Array(32)),
        bindAddr: "127.0.0.1:0",
        relayMode: "disabled",
        alpns: [],
      });
      const client = new IrohRpcClient({ endpoint: stranger });
      try {
        const health = createClient(Health, client.peer(c.node(1).ticket));
        await health.ping({}, { deadlineMs: 3_000 }).then(
          () => assert(false, "a stranger was served"),
          () => {},
        );
      } finally {
        client.close();
      }
    }
    await scrapeUntil(
      port(1),
      (e) => valueOf(e, "blixard_connections_refused_total", { transport: "iroh" }) > refusedBefore,
      "the stranger's connection counted as refused",
    );

    // Raft: the leader times heartbeats and sends through the outbox; followers take them in.
    const follower = c.nodes.find((n) => n.id !== leader)!.id;
    const lead = await scrapeUntil(
      port(leader),
      (e) => valueOf(e, "blixard_raft_heartbeat_rtt_seconds_count") > 0,
      "heartbeat round trips on the leader",
    );
    assertEquals(valueOf(lead, "blixard_raft_is_leader"), 1);
    assertEquals(valueOf(lead, "blixard_raft_role", { role: "leader" }), 1);
    assert(valueOf(lead, "blixard_raft_outbox_sent_total", { class: "heartbeat" }) > 0);
    assert(valueOf(lead, "blixard_raft_outbox_sent_by_transport_total", { transport: "grpc" }) > 0);
    assertEquals(valueOf(lead, "blixard_raft_members", { kind: "voter" }), 3);
    const f = await scrape(port(follower));
    assertEquals(valueOf(f, "blixard_raft_role", { role: "follower" }), 1);
    assert(valueOf(f, "blixard_raft_inbox_accepted_total", { class: "heartbeat" }) > 0);
    assert(valueOf(f, "blixard_raft_commit_index") > 0);
    assertEquals(valueOf(f, "blixard_raft_term"), valueOf(lead, "blixard_raft_term"));

    // A VM, placed on a follower: counted by state on the node that runs it, and in every
    // replica's view of the cluster.
    await c.node(leader).clients.vm.create({
      spec: create(VmSpecSchema, {
        name: "counted",
        vcpus: 1,
        memoryMib: 64n,
        backend: "process",
        nodeId: BigInt(follower),
        backendOptions: { command: JSON.stringify(["/bin/sleep", "3600"]) },
      }),
    });
    const host = follower;
    await eventually("the VM runs", async () => {
      const vm = (await c.node(leader).clients.vm.get({ name: "counted" })).vm!;
      return vm.status!.state === VmState.RUNNING && Number(vm.status!.nodeId) === host;
    }, 20_000);
    for (const n of c.nodes) {
      const e = await scrapeUntil(
        port(n.id),
        (e) => valueOf(e, "blixard_cluster_vms", { state: "running" }) === 1,
        `node ${n.id} sees the VM running`,
      );
      assertEquals(valueOf(e, "blixard_node_vms", { state: "running" }), n.id === host ? 1 : 0);
    }
    // Its node reported it to the leader over Iroh (vm prefers Iroh): a client call, over a
    // connection it dialled and timed.
    const e = await scrape(port(host));
    const reported = { service: "vm", method: "ReportStatus", transport: "iroh", code: "OK" };
    assert(valueOf(e, "blixard_rpc_client_requests_total", reported) > 0, `node ${host}`);
    assert(valueOf(e, "blixard_connect_duration_seconds_count", { transport: "iroh" }) > 0);
    assert(valueOf(e, "blixard_connections", { transport: "iroh", side: "client" }) > 0);
  },
});

Deno.test({
  name: "Monitoring.GetMetrics answers the same exposition as /metrics, over gRPC and over Iroh",
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({ size: 1, mode: "dual" });
    await c.waitForLeader();
    for (
      const monitoring of [c.node(1).clients.monitoring, c.operatorClient(Monitoring, 1)]
    ) {
      const answer = await monitoring.getMetrics({});
      const http = await fetch(`http://127.0.0.1:${c.node(1).ports.metrics}/metrics`);
      assertEquals(answer.contentType, http.headers.get("content-type"));
      const viaRpc = parseExposition(answer.text);
      const viaHttp = parseExposition(await http.text());
      // Same families, described the same way.
      assertEquals([...viaRpc.types].sort(), [...viaHttp.types].sort());
      assertEquals([...viaRpc.help].sort(), [...viaHttp.help].sort());
      // Every series of the earlier answer is in the later one, no counter lower.
      for (const [key, value] of viaRpc.samples) {
        assert(viaHttp.samples.has(key), `/metrics lacks ${key}`);
        const name = key.slice(0, key.indexOf("{"));
        const family = name.replace(/_(bucket|sum|count|total)$/, "");
        const type = viaRpc.types.get(name) ?? viaRpc.types.get(family);
        if (type === "counter" || type === "histogram") {
          assert(
            viaHttp.samples.get(key)! >= value,
            `${key}: ${viaHttp.samples.get(key)} < ${value}`,
          );
        }
      }
      assert(viaRpc.samples.has(series("blixard_raft_term")));
    }
  },
});

Deno.test({
  name:
    "killing the leader is counted as a leader change, in a higher term, on the nodes that remain",
  ...SANITIZE,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "grpc" });
    const first = await c.waitForLeader();
    const others = c.nodes.map((n) => n.id).filter((id) => id !== first);
    const before = new Map<number, Exposition>();
    for (const id of others) before.set(id, await scrape(c.node(id).ports.metrics));

    await c.signal(first, "SIGKILL");
    const next = await c.waitForLeader([first]);
    for (const id of others) {
      const was = before.get(id)!;
      const now = await scrapeUntil(
        c.node(id).ports.metrics,
        (e) =>
          valueOf(e, "blixard_raft_has_leader") === 1 &&
          valueOf(e, "blixard_raft_term") > valueOf(was, "blixard_raft_term"),
        `node ${id} knows the new leader`,
      );
      assert(
        valueOf(now, "blixard_raft_leader_changes_total") >
          valueOf(was, "blixard_raft_leader_changes_total"),
        `node ${id} counted no leader change`,
      );
      assertEquals(valueOf(now, "blixard_raft_is_leader"), id === next ? 1 : 0);
      // Messages to the dead node could not be delivered: dropped and counted, not queued forever.
      if (id === next) {
        await scrapeUntil(
          c.node(id).ports.metrics,
          (e) =>
            seriesOf(e, "blixard_raft_outbox_dropped_total").some((s) => e.samples.get(s)! > 0),
          "messages to the killed node dropped",
        );
      }
    }
  },
});
