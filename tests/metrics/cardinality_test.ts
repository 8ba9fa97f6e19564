/**
 * Label sets stay bounded: calls from many more peers, to methods the node
 * does not have, and connections it refuses add no series, and no label
 * holds an endpoint id or an address.
 */

import { assert, assertEquals } from "../assert.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Health, Metadata, type MethodInfo, Status } from "../../src/rpc/services.ts";
import { createEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { configOf, nodeBase, startAgent } from "../runner/helpers.ts";
import { type Exposition, parseExposition, scrape, scrapeUntil, valueOf } from "./helpers.ts";

// The Iroh clients' endpoints keep native handles the sanitizer cannot see closed in time.
const SANITIZE = { sanitizeOps: false, sanitizeResources: false };

/** Every series of the agent's own families, values left out. */
function blixardSeries(e: Exposition): string[] {
  return [...e.samples.keys()].filter((k) => k.startsWith("blixard_")).sort();
}

Deno.test({
  name: "calls from ten times more peers, to unknown methods, and refused endpoints add no series",
  ...SANITIZE,
  async fn() {
    const operatorKey = crypto.getRandomValues(new Uint8Array(32));
    await using operator = await createEndpoint({
      secretKey: operatorKey,
      bindAddr: "127.0.0.1:0",
      relayMode: "disabled",
      alpns: [],
    });
    const { base, ticket } = await nodeBase(operator.id);
    const agent = await startAgent(configOf({ ...base, mode: "dual" }));
    const iroh = new IrohRpcClient({ endpoint: operator });
    const channels: GrpcChannel[] = [];
    const strangers: { close(): Promise<void> }[] = [];
    try {
      const port = Number(agent.metricsEndpoint.address!.split(":")[1]);
      await scrapeUntil(port, (e) => valueOf(e, "blixard_ready") === 1, "ready");

      // An unknown method: a wire id this node does not serve.
      const unknown = (id: number): MethodInfo => ({ ...Health.methods[0]!, wireId: 0x0100 | id });
      /** One round of calls from `peers` new gRPC connections and the operator over Iroh. */
      const round = async (peers: number, unknownIds: number[]) => {
        for (let i = 0; i < peers; i++) {
          const channel = new GrpcChannel({ target: `127.0.0.1:${base.grpcPort}` });
          channels.push(channel);
          await createClient(Health, channel).ping({});
          await createClient(Status, channel).getRaftStatus({});
        }
        const overIroh = iroh.peer(ticket);
        await createClient(Health, overIroh).check({});
        for (const id of unknownIds) {
          await overIroh.unary(unknown(id), new Uint8Array(0)).catch(() => {});
        }
      };

      // A first write, so that the proposal series exist before the first scrape (the
      // node's own announcement of its addresses may otherwise create them in between).
      await createClient(Metadata, iroh.peer(ticket)).put({ key: "warm-up", value: "1" });
      await round(3, [0xf0]);
      const first = await scrape(port);

      await round(30, Array.from({ length: 40 }, (_, i) => 0x80 + i));
      for (let i = 0; i < 5; i++) {
        const stranger = await createEndpoint({
          secretKey: crypto.getRandomValues(new Uint8Array(32)),
          bindAddr: "127.0.0.1:0",
          relayMode: "disabled",
          alpns: [],
        });
        strangers.push(stranger);
        const client = new IrohRpcClient({ endpoint: stranger });
        await createClient(Health, client.peer(ticket)).ping({}, { deadlineMs: 2_000 }).catch(
          () => {},
        );
        client.close();
      }
      const second = await scrapeUntil(
        port,
        (e) => valueOf(e, "blixard_connections_refused_total", { transport: "iroh" }) >= 5,
        "the strangers refused",
      );

      const before = new Set(blixardSeries(first));
      assertEquals(
        blixardSeries(second).filter((k) => !before.has(k)),
        [],
        "series that appeared with more peers",
      );
      const ping = { service: "health", method: "Ping", transport: "grpc", code: "OK" };
      assertEquals(
        valueOf(second, "blixard_rpc_server_requests_total", ping) -
          valueOf(first, "blixard_rpc_server_requests_total", ping),
        30,
      );
      const unknownCalls = {
        service: "unknown",
        method: "unknown",
        transport: "iroh",
        code: "UNIMPLEMENTED",
      };
      assertEquals(valueOf(second, "blixard_rpc_server_requests_total", unknownCalls), 41);
      // No label carries who called: no endpoint id, no address.
      const labels = blixardSeries(second).join("\n");
      for (const id of [operator.id, agent.runner.irohEndpoint!.id]) {
        assert(!labels.includes(id.slice(0, 16)), `an endpoint id in a label`);
      }
      assert(!labels.includes("127.0.0.1"), "an address in a label");
    } finally {
      for (const c of channels) c.close();
      iroh.close();
      for (const s of strangers) await s.close();
      await agent.stop();
      await Deno.remove(base.dataDir, { recursive: true });
    }
  },
});

Deno.test("a stopped agent still answers its metrics and says why it is not ready", async () => {
  const { base } = await nodeBase("0".repeat(64));
  const agent = await startAgent(configOf({ ...base, mode: "grpc" }));
  await agent.stop();
  try {
    const e = parseExposition(await agent.metrics.text());
    assertEquals(valueOf(e, "blixard_ready"), 0);
    assertEquals(agent.readiness().filter((c) => !c.ok).map((c) => [c.name, c.detail]), [
      ["listeners", "shutting down"],
      ["member", "consensus is not running (starting, or stopped)"],
      ["leader", "consensus is not running (starting, or stopped)"],
    ]);
  } finally {
    await Deno.remove(base.dataDir, { recursive: true });
  }
});
