/**
 * A Raft cluster of real `blixard node` processes on loopback for the
 * command-line tests: config files, node keys made beforehand (so every
 * node can name its peers' endpoint ids), start, stop, and who leads.
 *
 * May import: tests/assert.ts, tests/wait.ts, ./helpers.ts; of the agent
 * only the Iroh key helpers, to write node keys and tickets.
 */

import { assert } from "../assert.ts";
import { toTicket } from "../../src/transport/iroh/endpoint.ts";
import { endpointIdOf, loadOrCreateSecretKey } from "../../src/transport/iroh/secret_key.ts";
import { blixard, freeTcpPort, operatorDir, type RunningNode, startNode } from "./helpers.ts";
import { freeUdpPort } from "../ports.ts";

/** One node of a test cluster. */
export interface TestNode {
  readonly id: number;
  /** Its config file. */
  readonly config: string;
  readonly dataDir: string;
  /** `127.0.0.1:PORT` of its gRPC listener. */
  readonly addr: string;
  /** Its Iroh ticket (endpoint id and the loopback UDP address it binds). */
  readonly ticket: string;
  readonly endpointId: string;
  /** `127.0.0.1:PORT` its Iroh endpoint binds. */
  readonly irohAddress: string;
  /** The process, while it runs. */
  process?: RunningNode;
}

/** Nodes and the operator that calls them. */
export interface TestCluster extends AsyncDisposable {
  readonly dir: string;
  /** The operator key file, listed in every node's `operator_keys`. */
  readonly opKey: string;
  readonly nodes: ReadonlyMap<number, TestNode>;
  node(id: number): TestNode;
  /** Starts node `id` and waits until it serves. */
  start(id: number): Promise<void>;
  /** Stops node `id` (SIGTERM) and waits until it exited. */
  stop(id: number): Promise<void>;
}

/**
 * Writes the files of a cluster formed by `members` (each lists the others
 * as peers and bootstraps) and of `waiting` nodes (bootstrap = false, the
 * members as peers, to be joined); starts nothing. Nodes run in mode `dual`
 * with a fast Raft clock, so elections take a fraction of a second. `extra`
 * is TOML appended to every node's file (say a `[vm]` table).
 */
export async function clusterFiles(
  members: readonly number[],
  waiting: readonly number[] = [],
  extra = "",
): Promise<TestCluster> {
  const { dir, opKey, operatorId } = await operatorDir();
  const nodes = new Map<number, TestNode>();
  for (const id of [...members, ...waiting]) {
    const dataDir = `${dir}/node${id}`;
    await Deno.mkdir(dataDir, { mode: 0o700 });
    const { secretKey } = await loadOrCreateSecretKey(`${dataDir}/iroh_secret_key`);
    const endpointId = endpointIdOf(secretKey);
    const irohAddress = `127.0.0.1:${await freeUdpPort()}`;
    nodes.set(id, {
      id,
      config: `${dir}/node${id}.toml`,
      dataDir,
      addr: `127.0.0.1:${freeTcpPort()}`,
      ticket: toTicket({ id: endpointId, directAddresses: [irohAddress] }),
      endpointId,
      irohAddress,
    });
  }
  for (const n of nodes.values()) {
    const bootstrap = members.includes(n.id);
    const peers = members.filter((p) => p !== n.id).map((p) => nodes.get(p)!);
    await Deno.writeTextFile(
      n.config,
      `[node]
id = ${n.id}
data_dir = "${n.dataDir}"

[transport]
mode = "dual"

[grpc]
bind = "${n.addr}"

[iroh]
bind = "${n.irohAddress}"
relay = "disabled"

[metrics]
bind = "127.0.0.1:0"

[cluster]
operator_keys = ["${operatorId}"]
bootstrap = ${bootstrap}
${
        peers.map((p) =>
          `[[cluster.peers]]\nid = ${p.id}\nendpoint_id = "${p.endpointId}"\n` +
          `addresses = ["${p.irohAddress}"]\ngrpc_address = "${p.addr}"\n`
        ).join("")
      }
[raft]
tick_ms = 20

[limits]
shutdown_timeout_ms = 2000
${extra}`,
    );
  }
  const node = (id: number) => {
    const n = nodes.get(id);
    assert(n, `no node ${id} in this test cluster`);
    return n;
  };
  return {
    dir,
    opKey,
    nodes,
    node,
    async start(id) {
      node(id).process = await startNode(node(id).config);
    },
    async stop(id) {
      await node(id).process?.stop();
      node(id).process = undefined;
    },
    async [Symbol.asyncDispose]() {
      await Promise.all([...nodes.values()].map((n) => n.process?.stop()));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Starts `members` of `cluster` together and waits until one of them leads; returns its id. */
export async function startCluster(cluster: TestCluster, members: readonly number[]) {
  await Promise.all(members.map((id) => cluster.start(id)));
  return await leaderOf(cluster, members[0]!);
}

/** The leader as node `askId` knows it, once it knows one (polled with `blixard status`). */
export async function leaderOf(cluster: TestCluster, askId: number, ms = 20_000): Promise<number> {
  const until = Date.now() + ms;
  for (;;) {
    const r = await blixard(["status", "--addr", cluster.node(askId).addr, "--json"]);
    if (r.code === 0) {
      const leader = Number(JSON.parse(r.stdout).cluster.leaderId);
      if (leader !== 0) return leader;
    }
    if (Date.now() > until) throw new Error(`node ${askId} knows no leader after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
