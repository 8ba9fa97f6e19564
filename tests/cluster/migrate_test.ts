/**
 * `blixard migrate` takes a 3-node cluster on loopback through the whole
 * rollout and back while clients keep writing and reading through both
 * transports: every stage with the fleet form (node by node), a stage that
 * fails its health check on purpose and is rolled back by itself, and the
 * way back to gRPC. No call fails and no acknowledged write is lost.
 *
 * The stage that fails: a follower alone rolled back from stage `iroh`
 * straight to `rollback` while its peers stay on Iroh only. It then has no
 * transport in common with them, loses the leader, and `/readyz` fails;
 * migrate puts its file back byte for byte and the node rejoins. (The
 * migration runbook has operators roll back from stage 4 through stage 3.)
 *
 * The clients retry only what the Metadata service documents as "not
 * applied: retry" (UNAVAILABLE, ABORTED), with the same request id, and call
 * a node only over a transport it serves both before and after the step in
 * progress (a client cannot know when, within a step, its node moves).
 */

import { assert, assertEquals } from "../assert.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Code, codeName, RpcError } from "../../src/rpc/errors.ts";
import { type Client, Metadata, Status } from "../../src/rpc/services.ts";
import { RaftRole } from "../../src/rpc/gen/blixard/v1/status_pb.ts";
import { createEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import type { TransportName } from "../../src/names.ts";
import { blixard } from "../cli/helpers.ts";
import { TestCluster } from "./helpers.ts";

type StageName = "rollback" | "canary" | "expanded" | "majority" | "iroh";

const SERVES: Record<StageName, readonly TransportName[]> = {
  rollback: ["grpc"],
  canary: ["grpc", "iroh"],
  expanded: ["grpc", "iroh"],
  majority: ["grpc", "iroh"],
  iroh: ["iroh"],
};

/** What the clients did during one step. */
interface StepCounts {
  writes: Record<TransportName, number>;
  reads: Record<TransportName, number>;
  /** Attempts answered "not applied: retry", then retried with the same request id. */
  retries: number;
  failed: string[];
}

/** The codes the Metadata service documents as "the write was not applied: retry". */
const NOT_APPLIED: readonly Code[] = [Code.UNAVAILABLE, Code.ABORTED];

const WATCH = ["--watch-ms", "3000", "--interval-ms", "250"];

type MetadataClient = Client<typeof Metadata.desc>;

/** A node's metadata clients over each transport. */
interface NodeClients {
  readonly id: number;
  readonly grpc: MetadataClient;
  readonly iroh: MetadataClient;
}

/**
 * Steady client load: workers that write keys and read acknowledged ones
 * back through every node and transport the current step allows, counted
 * per step.
 */
class Load {
  readonly counts = new Map<string, StepCounts>();
  readonly acknowledged = new Map<string, string>();
  /** What the clients may call each node over now. */
  readonly usable = new Map<number, readonly TransportName[]>();
  #step = "";
  #stop = false;
  #workers: Promise<void>[] = [];
  readonly #nodes: readonly NodeClients[];

  constructor(nodes: readonly NodeClients[], workers: number) {
    this.#nodes = nodes;
    for (const n of nodes) this.usable.set(n.id, SERVES.rollback);
    this.step("start");
    this.#workers = Array.from({ length: workers }, (_, w) => this.#work(w));
  }

  /** Counts what follows under `label`. */
  step(label: string): void {
    this.#step = label;
    this.counts.set(label, {
      writes: { grpc: 0, iroh: 0 },
      reads: { grpc: 0, iroh: 0 },
      retries: 0,
      failed: [],
    });
  }

  get #tally(): StepCounts {
    return this.counts.get(this.#step)!;
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await Promise.all(this.#workers);
  }

  async #work(w: number): Promise<void> {
    for (let i = 0; !this.#stop; i++) {
      const key = `w${w}/k${i}`;
      const value = `v${i}-${crypto.randomUUID().slice(0, 8)}`;
      const requestId = crypto.randomUUID();
      const put = await this.#call(
        "writes",
        w + i,
        (m) => m.put({ key, value, requestId }, { deadlineMs: 10_000 }),
      );
      if (put !== undefined) this.acknowledged.set(key, value);
      // Read back a write acknowledged earlier, through another node or transport.
      const keys = [...this.acknowledged.keys()];
      const back = keys[(i * 7919) % keys.length];
      if (back !== undefined) {
        const got = await this.#call(
          "reads",
          w + i + 1,
          (m) => m.get({ key: back }, { deadlineMs: 10_000 }),
        );
        if (got !== undefined && got.entry?.value !== this.acknowledged.get(back)) {
          this.#tally.failed.push(`read ${back}: ${JSON.stringify(got.entry?.value)}`);
        }
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** One call, retried on "not applied" answers over the next usable node and transport. */
  async #call<T>(
    kind: "writes" | "reads",
    turn: number,
    run: (client: MetadataClient) => Promise<T>,
  ): Promise<T | undefined> {
    const started = Date.now();
    for (let attempt = 0;; attempt++) {
      const options = this.#nodes.flatMap((n) =>
        (this.usable.get(n.id) ?? []).map((t) => ({ n, t }))
      );
      const pick = options[(turn + attempt) % Math.max(1, options.length)];
      if (!pick) {
        this.#tally.failed.push("no node serves any transport");
        return undefined;
      }
      try {
        const result = await run(pick.n[pick.t]);
        this.#tally[kind][pick.t]++;
        return result;
      } catch (e) {
        const retry = e instanceof RpcError && NOT_APPLIED.includes(e.code) &&
          Date.now() - started < 20_000;
        if (!retry) {
          const what = e instanceof RpcError ? `${codeName(e.code)}: ${e.message}` : String(e);
          this.#tally.failed.push(`node ${pick.n.id} over ${pick.t}: ${what}`);
          return undefined;
        }
        this.#tally.retries++;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
}

Deno.test({
  name:
    "migrate takes a loaded 3-node cluster through every stage and back, rolls a failing stage back by itself byte for byte, and no call fails or is lost",
  // The cluster's child processes and the clients' channels outlive single steps.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using c = await TestCluster.start({ size: 3, mode: "grpc", tickMs: 50 });
    await c.waitForLeader();
    const endpoint = await createEndpoint({
      secretKey: c.operatorKey,
      bindAddr: "127.0.0.1:0",
      relayMode: "disabled",
      alpns: [],
    });
    const iroh = new IrohRpcClient({
      endpoint,
      backoff: { initialMs: 50, maxMs: 500 },
      keepaliveIntervalMs: 200,
      deadPeerTimeoutMs: 1_000,
      failFastWhileDown: true,
    });
    const fleet = `${c.nodes[0]!.dataDir}/../fleet-${crypto.randomUUID()}.toml`;
    try {
      const irohPeer = (n: (typeof c.nodes)[number]) =>
        iroh.peer({ id: n.endpointId, directAddresses: [`127.0.0.1:${n.ports.udp}`] });
      const statusOverIroh = c.nodes.map((n) => ({
        id: n.id,
        status: createClient(Status, irohPeer(n)),
      }));
      const load = new Load(
        c.nodes.map((n) => ({
          id: n.id,
          grpc: n.clients.metadata,
          iroh: createClient(Metadata, irohPeer(n)),
        })),
        3,
      );
      await Deno.writeTextFile(
        fleet,
        c.nodes.map((n) =>
          `[[node]]\nname = "node-${n.id}"\nconfig = "${n.configFile}"\nmetrics = "127.0.0.1:${n.ports.metrics}"\n`
        ).join("\n"),
      );

      const at = new Map<number, StageName>(c.nodes.map((n) => [n.id, "rollback"]));
      const watched = new Map<string, string>();
      /** One step: migrate with `args`, the clients kept to what serves before and after. */
      const migrate = async (
        label: string,
        moving: readonly number[],
        to: StageName,
        args: string[],
      ) => {
        load.step(label);
        for (const id of moving) {
          load.usable.set(id, SERVES[at.get(id)!].filter((t) => SERVES[to].includes(t)));
        }
        const r = await blixard(["migrate", "--stage", to, ...args, "--json", ...WATCH]);
        const doc = JSON.parse(r.stdout);
        const nodes: { name: string; ok: boolean; watch: Record<string, number> | null }[] =
          doc.nodes ?? [{ name: `node-${moving[0]}`, ...doc }];
        // What each node's watch saw: calls answered, RPC errors, fallbacks, leader changes.
        watched.set(
          label,
          nodes.map((n) =>
            n.watch
              ? `${n.name} ${n.watch.rpcCalls}/${n.watch.rpcErrors}/${n.watch.fallbacks}/${n.watch.leaderChanges}`
              : `${n.name} -`
          ).join(", "),
        );
        for (const id of moving) {
          if (nodes.some((n) => n.name === `node-${id}` && n.ok)) at.set(id, to);
          load.usable.set(id, SERVES[at.get(id)!]);
        }
        // Some calls in the steady state that follows, counted with the step.
        await new Promise((r) => setTimeout(r, 500));
        return { code: r.code, doc, stderr: r.stderr };
      };
      const fleetStep = async (label: string, to: StageName, percent: string, ids = [1, 2, 3]) => {
        const r = await migrate(label, ids, to, ["--fleet", fleet, "--percent", percent]);
        assertEquals(r.code, 0, `${label}: ${r.stderr}`);
        assertEquals(r.doc.ok, true);
        assertEquals(r.doc.selected, ids.length === 1 ? 1 : 3);
        return r;
      };

      while (load.acknowledged.size < 30) await new Promise((r) => setTimeout(r, 20));
      // 33% of 3 is node 1 alone; then the rest, node 1 already there.
      await fleetStep("canary 33%", "canary", "33", [1]);
      const canary = await fleetStep("canary 100%", "canary", "100", [2, 3]);
      assertEquals(
        (canary.doc.nodes as { name: string; changed: boolean }[]).map((n) => [n.name, n.changed]),
        [["node-1", false], ["node-2", true], ["node-3", true]],
      );
      await fleetStep("expanded", "expanded", "100");
      await fleetStep("majority", "majority", "100");
      await fleetStep("iroh", "iroh", "100");

      // The stage that fails: a follower rolled back alone, straight from Iroh to gRPC.
      // The leader is asked over Iroh: on stage iroh no node serves gRPC.
      let leader = 0;
      for (let tries = 0; leader === 0 && tries < 100; tries++) {
        for (const n of statusOverIroh) {
          const s = await n.status.getRaftStatus({}, { deadlineMs: 500 }).catch(() => null);
          if (s?.role === RaftRole.LEADER) leader = n.id;
        }
      }
      assert(leader !== 0, "no leader over Iroh");
      const lone = c.nodes.find((n) => n.id !== leader)!;
      const bytes = await Deno.readFile(lone.configFile);
      const failing = await migrate(
        `rollback of node ${lone.id} alone, from iroh (fails)`,
        [lone.id],
        "rollback",
        ["--config", lone.configFile, "--metrics", `127.0.0.1:${lone.ports.metrics}`],
      );
      assertEquals(failing.code, 1, failing.stderr);
      assertEquals([failing.doc.ok, failing.doc.from], [false, "iroh"]);
      assertEquals([failing.doc.rolledBack, failing.doc.rollbackFailure], [true, null]);
      assert(
        /no leader known|leader failed|listeners/.test(String(failing.doc.failure)),
        String(failing.doc.failure),
      );
      assertEquals(await Deno.readFile(lone.configFile), bytes, "the file is as it was");

      await fleetStep("majority (back)", "majority", "100");
      await fleetStep("rollback", "rollback", "100");
      load.step("end");
      await new Promise((r) => setTimeout(r, 500));
      await load.stop();

      // Every acknowledged write, read back.
      const leaderNow = await c.waitForLeader();
      for (const [key, value] of load.acknowledged) {
        const got = await c.node(leaderNow).clients.metadata.get({ key });
        assertEquals(got.entry?.value, value, `acknowledged write ${key}`);
      }

      console.log("\nper-step calls (writes and reads by transport, retries of 'not applied'):");
      console.log(
        "  step                                         writes grpc/iroh  reads grpc/iroh  retries  failed",
      );
      for (const [label, k] of load.counts) {
        console.log(
          `  ${label.padEnd(44)} ${`${k.writes.grpc}/${k.writes.iroh}`.padStart(16)} ${
            `${k.reads.grpc}/${k.reads.iroh}`.padStart(16)
          } ${String(k.retries).padStart(8)} ${String(k.failed.length).padStart(7)}`,
        );
      }
      console.log(`  acknowledged writes read back: ${load.acknowledged.size}`);
      console.log("each node's watch (calls answered/RPC errors/fallbacks/leader changes):");
      for (const [label, line] of watched) console.log(`  ${label.padEnd(44)} ${line}`);
      console.log(`  the failing step: ${failing.doc.failure}`);

      const failed = [...load.counts].flatMap(([label, k]) =>
        k.failed.map((f) => `${label}: ${f}`)
      );
      assertEquals(failed, []);
      // Both transports carried writes and reads.
      for (const t of ["grpc", "iroh"] as const) {
        assert([...load.counts.values()].some((k) => k.writes[t] > 0 && k.reads[t] > 0), t);
      }
    } finally {
      await Deno.remove(fleet).catch(() => {});
      iroh.close();
      await endpoint.close();
    }
  },
});
