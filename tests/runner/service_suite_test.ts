/**
 * The service suite, once per transport mode (grpc, iroh, dual) from one
 * definition: a real agent on loopback serving the real Health and Status
 * implementations, called by a dual client that can use either transport.
 */

import { assert, assertEquals, rejection } from "../assert.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { ServiceId, Transport } from "../../src/rpc/gen/blixard/v1/common_pb.ts";
import { ServingStatus } from "../../src/rpc/gen/blixard/v1/health_pb.ts";
import { Health, Monitoring, Status, Vm } from "../../src/rpc/services.ts";
import {
  caller,
  configOf,
  eventually,
  freePorts,
  nodeHome,
  type NodeSpec,
  startAgent,
} from "./helpers.ts";

const MODES = [
  { mode: "grpc", serves: [Transport.GRPC], route: "grpc" },
  { mode: "iroh", serves: [Transport.IROH], route: "iroh" },
  { mode: "dual", serves: [Transport.GRPC, Transport.IROH], route: "iroh" },
] as const;

for (const { mode, serves, route } of MODES) {
  Deno.test({
    name: `[${mode}] the service suite: health, ping, status, unknown methods and bad requests`,
    async fn(t) {
      const ports = await freePorts();
      const home = await nodeHome(ports.udp);
      await using c = await caller();
      const spec: NodeSpec = {
        dataDir: home.dataDir,
        grpcPort: ports.tcp,
        irohPort: ports.udp,
        operatorId: c.operatorId,
        mode,
        preferIroh: ["health", "status"],
      };
      const agent = await startAgent(configOf(spec));
      try {
        const peer = c.peerOf(spec, home.ticket);
        const health = createClient(Health, peer);
        const status = createClient(Status, peer);

        await t.step(
          "Check says SERVING once the node, its cluster's only voter, leads",
          async () => {
            await eventually(
              "the node leads",
              async () => (await health.check({})).status === ServingStatus.SERVING,
            );
            const res = await health.check({});
            assertEquals(res.detail, "");
            assertEquals(res.nodeId, 1n);
          },
        );
        await t.step("Ping echoes 64 KiB byte for byte", async () => {
          const payload = crypto.getRandomValues(new Uint8Array(64 * 1024));
          const res = await health.ping({ payload, clientSendTimeNs: 42n });
          assertEquals(res.payload, payload);
          assertEquals(res.clientSendTimeNs, 42n);
        });
        await t.step(`Status lists the services the node implements, over ${mode}`, async () => {
          const res = await status.getClusterStatus({});
          assertEquals(res.members.length, 1);
          const self = res.members[0]!;
          assertEquals(self.grpcAddress !== "", mode !== "iroh");
          assertEquals(self.iroh?.endpointId ?? "", mode === "grpc" ? "" : home.endpointId);
          const healthServing = self.services.find((s) => s.service === ServiceId.HEALTH)!;
          assertEquals(healthServing.transports, [...serves]);
          assertEquals(self.services.map((s) => s.service), [
            ServiceId.HEALTH,
            ServiceId.STATUS,
            ServiceId.VM,
            ServiceId.MONITORING,
            ServiceId.CLUSTER,
            ServiceId.METADATA,
          ]);
          const statusServing = self.services.find((s) => s.service === ServiceId.STATUS)!;
          assertEquals(statusServing.preferred, route === "iroh" ? Transport.IROH : Transport.GRPC);
          assertEquals((await status.getRaftStatus({})).nodeId, 1n);
        });
        await t.step(
          `calls settle on ${route} once the client has learned what the node serves`,
          async () => {
            await peer.refresh();
            assertEquals(peer.route("health"), route);
          },
        );
        await t.step(
          "the Vm and Monitoring services answer from the cluster state",
          async () => {
            assertEquals((await createClient(Vm, peer).list({})).vms, []);
            const { nodes } = await createClient(Monitoring, peer).getResourceSummary({});
            assertEquals(nodes.map((n) => n.nodeId), [1n]);
          },
        );
        await t.step(
          "a call past its deadline fails with DEADLINE_EXCEEDED, not a hang",
          async () => {
            const e = await rejection(
              RpcError,
              () => health.ping({ payload: new Uint8Array(4 << 20) }, { deadlineMs: 1 }),
            );
            assert(
              [Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED].includes(e.code as 4 | 8),
              String(e),
            );
          },
        );
      } finally {
        await agent.stop();
      }
    },
  });
}
