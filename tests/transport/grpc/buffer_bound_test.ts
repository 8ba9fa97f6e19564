/**
 * A gRPC client that sends requests and never reads the answers, against a
 * node in a child process: whether its windows let the node push every
 * answer into the socket or keep them waiting inside HTTP/2, the node's
 * memory stays within `maxConnectionBufferBytes` plus the runtime's own
 * overhead, and another client is served all along.
 */

import { assertEquals } from "../../assert.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { PingRequestSchema } from "../../../src/rpc/gen/blixard/v1/health_pb.ts";
import { createClient } from "../../../src/rpc/client.ts";
import { Health, methodOf } from "../../../src/rpc/services.ts";
import { GrpcChannel } from "../../../src/transport/grpc/client.ts";
import { firstMatch, within } from "../../wait.ts";
import { assertHeldBack, flood, measureFlood } from "../memory.ts";
import { NonReadingGrpcClient } from "./raw_h2.ts";

/** The bound the node runs with: small, so a test can fill it many times over. */
const BOUND_BYTES = 2 << 20;
/**
 * What the node's process may grow by besides the bound: reading the
 * requests that arrived before it stopped, JIT code, allocator high-water.
 * Measured at 20 to 50 MiB here; without the bound the same flood grows it
 * by 150 MiB and more.
 */
const OVERHEAD_BYTES = 64 << 20;
/** The flood: 16 KiB pings (a stream's window holds one whole), up to 48 MiB of them. */
const PAYLOAD_BYTES = 16_000;
const FLOOD_BYTES = 48 << 20;

async function spawnGrpcServer(): Promise<{ child: Deno.ChildProcess; port: number }> {
  const script = new URL("../../fixtures/grpc_health_server.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, `--max-connection-buffer-bytes=${BOUND_BYTES}`],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const port = await within(
    firstMatch(child.stdout, /READY (\d+)/, "the server's READY line"),
    15_000,
    "the server process to be ready",
  );
  return { child, port: Number(port) };
}

for (const window of ["open", "closed"] as const) {
  Deno.test({
    name:
      `a gRPC client that never reads, with its flow-control windows ${window}, cannot grow the node past its buffer bound, and others are served meanwhile`,
    async fn() {
      const server = await spawnGrpcServer();
      const channel = new GrpcChannel({ target: `127.0.0.1:${server.port}` });
      const health = createClient(Health, channel);
      const payload = new Uint8Array(PAYLOAD_BYTES).fill(0x61);
      let flooder: NonReadingGrpcClient | null = null;
      try {
        for (let i = 0; i < 50; i++) await health.ping({ payload });
        const client = flooder = await NonReadingGrpcClient.connect(server.port, window);
        const request = toBinary(PingRequestSchema, create(PingRequestSchema, { payload }));
        const path = methodOf(Health, "Ping").path;
        const measured = await measureFlood(
          server.child.pid,
          () => health.ping({ payload: new Uint8Array(32) }, { deadlineMs: 5_000 }),
          () =>
            flood(() => client.call(path, request), {
              maxBytes: FLOOD_BYTES,
              stallMs: 2_000,
              maxMs: 15_000,
            }),
        );
        assertHeldBack(`flood over gRPC, windows ${window}`, measured, BOUND_BYTES, OVERHEAD_BYTES);
        assertEquals((await health.check({})).agentVersion, "fixture");
      } finally {
        flooder?.close();
        channel.close();
        server.child.kill("SIGKILL");
        await server.child.status;
      }
    },
  });
}
