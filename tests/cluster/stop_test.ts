/**
 * A leader stopped with SIGTERM hands leadership to another voter before it
 * goes, so the cluster keeps a leader, and every write acknowledged before,
 * during and after is kept.
 */

import { assert, assertEquals } from "../assert.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { TestCluster } from "./helpers.ts";

Deno.test({
  name:
    "a leader stopped with SIGTERM hands over leadership, exits 0, and no acknowledged write is lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "dual", raftTransport: "iroh" });
    const leader = await c.waitForLeader();
    const writer = c.nodes.find((n) => n.id !== leader)!;
    const acknowledged: string[] = [];
    let failed = 0;
    let stop = false;
    const writes = (async () => {
      for (let i = 0; !stop; i++) {
        const key = `k${i}`;
        // A careful client: the same request id until the outcome is known.
        const requestId = crypto.randomUUID();
        for (let attempt = 0;; attempt++) {
          try {
            await writer.clients.metadata.put({ key, value: "v", requestId }, {
              deadlineMs: 2_000,
            });
            acknowledged.push(key);
            break;
          } catch (e) {
            const retry = e instanceof RpcError &&
              [Code.UNAVAILABLE, Code.ABORTED, Code.UNKNOWN, Code.DEADLINE_EXCEEDED].includes(
                e.code as 14,
              );
            if (!retry || attempt >= 50) {
              failed++;
              break;
            }
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }
    })();
    while (acknowledged.length < 20) await new Promise((r) => setTimeout(r, 10));

    const node = c.node(leader).process!;
    const code = await node.stop();
    c.node(leader).process = null;
    assertEquals(code, 0, node.stderr());
    assert(
      node.stderr().includes("handed leadership over before stopping"),
      `no handover in the log:\n${node.stderr()}`,
    );
    const next = await c.waitForLeader([leader]);
    assert(next !== leader);
    const before = acknowledged.length;
    while (acknowledged.length < before + 20) await new Promise((r) => setTimeout(r, 10));
    stop = true;
    await writes;

    assertEquals(failed, 0);
    for (const key of acknowledged) {
      const got = await c.node(next).clients.metadata.get({ key });
      assert(got.found, `acknowledged write ${key} is missing`);
    }
  },
});
