/**
 * A reload of one node must not take its peers down. A reload replaces the
 * clients a node calls its peers with and closes the old ones; a gRPC
 * client closed with an HTTP/2 GOAWAY made its Deno 2.9.6 peers abort inside
 * nghttp2 (denoland/deno#36788). Channels now close at the TCP level
 * (tests/transport/grpc/close_test.ts); this is the same at cluster scale.
 */

import { assert, assertEquals } from "../assert.ts";
import { blixard } from "../cli/helpers.ts";
import { TestCluster } from "./helpers.ts";

Deno.test({
  name: "reloading one node between transport stages again and again leaves every peer running",
  // The nodes are child processes the cluster's dispose stops.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "grpc", tickMs: 50 });
    // A follower: its clients carry its answers to the leader, whose session
    // then takes the GOAWAY while busy (the case seen to abort).
    const leader = await c.waitForLeader();
    const node = c.nodes.find((n) => n.id !== leader)!;
    const grpcOnly = await Deno.readTextFile(node.configFile);
    const dual = grpcOnly.replace(
      'mode = "grpc"\n',
      'mode = "dual"\n[transport.migration]\nprefer_iroh = ["health", "status"]\n',
    );
    assert(dual !== grpcOnly);
    for (const text of [dual, grpcOnly, dual, grpcOnly]) {
      await Deno.writeTextFile(node.configFile, text);
      const r = await blixard(["reload", "--config", node.configFile]);
      assertEquals(r.code, 0, r.stderr);
      // The old peer clients are retired after limits.shutdown_timeout_ms (1 s here).
      await new Promise((r) => setTimeout(r, 1_500));
    }
    for (const n of c.nodes) {
      const exited = await Promise.race([
        n.process!.child.status.then((s) => `exited with ${s.code}`),
        new Promise<null>((r) => setTimeout(() => r(null), 100)),
      ]);
      assertEquals(exited, null, `node ${n.id}: ${n.process!.stderr().slice(-2_000)}`);
    }
    await c.waitForLeader();
  },
});
