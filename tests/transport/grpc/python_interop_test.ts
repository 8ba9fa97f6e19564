/**
 * An independent client proves the gRPC side is real gRPC: Python's grpcio
 * (Debian's python3-grpcio), with messages compiled from proto/ by Debian's
 * protoc at test time, calls a GrpcRpcServer serving the real Health and
 * Status implementations. See tests/fixtures/python/grpc_client.py.
 *
 * CI installs: apt-get install -y python3-grpcio protobuf-compiler libprotobuf-dev.
 * Without them this test fails and says so; it never skips.
 */

import { assert, assertEquals } from "../../assert.ts";
import { GrpcRpcServer } from "../../../src/transport/grpc/server.ts";
import { RpcRouter } from "../../../src/rpc/router.ts";
import { Health, Status } from "../../../src/rpc/services.ts";
import { healthService } from "../../../src/services/health.ts";
import { statusService } from "../../../src/services/status.ts";

const APT = "apt-get install -y python3-grpcio protobuf-compiler libprotobuf-dev";
/** Debian's Python: the `python3` on PATH may be another build that cannot see Debian's modules. */
const PYTHON = "/usr/bin/python3";
const root = new URL("../../../", import.meta.url).pathname;

Deno.test({
  name: "Python's grpcio, with stubs compiled from proto/, calls Health and Status on a node",
  async fn() {
    const router = new RpcRouter()
      .register(
        Health,
        healthService({
          nodeId: 42n,
          agentVersion: "interop",
          startedAtMs: Date.now() - 5_000,
          readiness: () => ({ ready: true, detail: "" }),
        }),
      )
      .register(
        Status,
        // The real Status implementation over fixed read models: a leader, a term, two members.
        statusService({
          listeners: {
            listeners: () => ["grpc", "iroh"],
            serving: new Map([["health", { transports: ["grpc", "iroh"], preferred: "grpc" }]]),
            grpcAddress: () => "127.0.0.1:7400",
            irohEndpoint: {
              id: "ab".repeat(32),
              addr: () => ({ directAddresses: ["127.0.0.1:7401"] }),
            },
          },
          membership: {
            nodeId: 42n,
            peers: () => [{
              nodeId: 43n,
              endpointId: "",
              addresses: [],
              grpcAddress: "10.0.0.3:7400",
            }],
            leaderId: () => 43n,
            term: () => 7n,
            raftStatus: () => ({ nodeId: 42n }),
          },
          implements: (service) => service === "health",
        }),
      );
    const server = new GrpcRpcServer({ router, bind: "127.0.0.1:0", allowInsecure: false });
    const { port } = await server.start();
    try {
      let out: Deno.CommandOutput;
      try {
        out = await new Deno.Command(PYTHON, {
          args: [
            `${root}tests/fixtures/python/grpc_client.py`,
            `127.0.0.1:${port}`,
            `${root}proto`,
          ],
          stdout: "piped",
          stderr: "piped",
          // Stay out of the user's Python setup (pyenv, PYTHONPATH).
          env: { PATH: "/usr/bin:/bin", PYTHONNOUSERSITE: "1" },
          clearEnv: true,
        }).output();
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) {
          throw new Error(
            `${PYTHON} is missing; install it with: apt-get install -y python3 && ${APT}`,
          );
        }
        throw e;
      }
      const stderr = new TextDecoder().decode(out.stderr);
      if (!out.success) {
        throw new Error(`the Python gRPC client exited with ${out.code}:\n${stderr}`);
      }
      const result = JSON.parse(new TextDecoder().decode(out.stdout));

      assertEquals(result.check.status, "SERVING_STATUS_SERVING");
      assertEquals(result.check.node_id, "42");
      assertEquals(result.check.agent_version, "interop");
      assert(Number(result.check.uptime_ms) >= 5_000, JSON.stringify(result.check));

      assertEquals(result.ping, {
        payload_echoed: true,
        client_send_time_ns: String(2n ** 64n - 1n),
        node_id: "42",
      });

      const members = result.cluster.members;
      assertEquals(members.map((m: { node_id: string }) => m.node_id), ["42", "43"]);
      assertEquals(members[0].grpc_address, "127.0.0.1:7400");
      assertEquals(members[0].iroh.endpoint_id, "ab".repeat(32));
      assertEquals(members[1].grpc_address, "10.0.0.3:7400");
      assertEquals(members[0].services, [{
        service: "SERVICE_ID_HEALTH",
        transports: ["TRANSPORT_GRPC", "TRANSPORT_IROH"],
        preferred: "TRANSPORT_GRPC",
      }]);
      assertEquals(result.cluster.node_id, "42");
      assertEquals(result.cluster.leader_id, "43");
      assertEquals(result.cluster.term, "7");

      // A service this node does not serve: grpcio sees the standard status.
      assertEquals(result.vm_list.code, "UNIMPLEMENTED");
      assertEquals(server.stats.callsStarted, 3);
    } finally {
      await server.shutdown(100);
    }
  },
});
