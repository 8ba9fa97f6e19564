/**
 * A peer that sends requests and never reads the answers, against a node in
 * a child process: the node stops reading that connection once half its
 * `maxConnectionBufferBytes` waits for the peer, its memory stays within the
 * bound plus the runtime's own overhead, and another client is served all
 * along.
 */

import { assertEquals } from "../../assert.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { PingRequestSchema } from "../../../src/rpc/gen/blixard/v1/health_pb.ts";
import { encodeFrame, FLAG_LAST, FrameType, Priority } from "../../../mod.ts";
import { createClient } from "../../../src/rpc/client.ts";
import { Health, methodOf } from "../../../src/rpc/services.ts";
import { createEndpoint } from "../../../src/transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../../../src/transport/iroh/rpc_client.ts";
import { endpointIdOf } from "../../../src/transport/iroh/secret_key.ts";
import { toArray } from "../../../src/transport/iroh/bytes.ts";
import { randomKey, spawnHealthServer } from "./helpers.ts";
import { assertHeldBack, flood, measureFlood } from "../memory.ts";

/** The bound the node runs with: small, so a test can fill it many times over. */
const BOUND_BYTES = 2 << 20;
/**
 * What the node's process may grow by besides the bound: V8's heap growing
 * before it collects the binding's converted arrays, JIT code, allocator
 * high-water. Measured at 20 to 30 MiB here; without the bound the same
 * flood grows it by well over 100 MiB.
 */
const OVERHEAD_BYTES = 64 << 20;
/** The flood: 64 KiB pings, up to 48 MiB of them. */
const PAYLOAD_BYTES = 64 << 10;
const FLOOD_BYTES = 48 << 20;

const hex = (key: Uint8Array) => Array.from(key, (b) => b.toString(16).padStart(2, "0")).join("");

async function endpointWith(secretKey: Uint8Array) {
  return await createEndpoint({
    secretKey,
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
    alpns: [],
  });
}

Deno.test({
  name:
    "a client that sends requests and never reads the answers cannot grow the node past its buffer bound, and others are served meanwhile",
  async fn() {
    const floodKey = randomKey();
    const goodKey = randomKey();
    const server = await spawnHealthServer(
      hex(randomKey()),
      "127.0.0.1:0",
      [endpointIdOf(floodKey), endpointIdOf(goodKey)],
      [`--max-connection-buffer-bytes=${BOUND_BYTES}`],
    );
    const goodEndpoint = await endpointWith(goodKey);
    const floodEndpoint = await endpointWith(floodKey);
    const client = new IrohRpcClient({ endpoint: goodEndpoint });
    const health = createClient(Health, client.peer(server.ticket));
    const payload = new Uint8Array(PAYLOAD_BYTES).fill(0x61);
    try {
      // Warm up the node's paths with the same calls the flood makes.
      for (let i = 0; i < 20; i++) await health.ping({ payload });
      const conn = await floodEndpoint.connect(server.ticket);
      const bi = await conn.openBi();
      const request = toBinary(PingRequestSchema, create(PingRequestSchema, { payload }));
      const ping = methodOf(Health, "Ping").wireId;
      const measured = await measureFlood(
        server.child.pid,
        () => health.ping({ payload: new Uint8Array(32) }, { deadlineMs: 5_000 }),
        () =>
          flood(async (i) => {
            const frame = encodeFrame({
              type: FrameType.Request,
              flags: FLAG_LAST,
              priority: Priority.Service,
              method: ping,
              requestId: BigInt(i + 1),
              deadlineMs: 0,
            }, request);
            await bi.send.writeArray(toArray(frame));
            return frame.length;
          }, { maxBytes: FLOOD_BYTES, stallMs: 2_000, maxMs: 20_000 }),
      );
      conn.close();
      assertHeldBack("flood over Iroh", measured, BOUND_BYTES, OVERHEAD_BYTES);
      // Still serving.
      assertEquals((await health.check({})).agentVersion, "fixture");
    } finally {
      client.close();
      server.child.kill("SIGKILL");
      await server.child.status;
      await Promise.all([goodEndpoint.close(), floodEndpoint.close()]);
    }
  },
});
