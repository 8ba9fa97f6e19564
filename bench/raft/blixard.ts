/**
 * A 3-node Blixard cluster for the Raft benchmark: three `blixard node`
 * processes from source on loopback, each listing the other two as
 * `[[cluster.peers]]`, fresh data directories, default Raft timing, in
 * transport mode `iroh` (services and Raft over Iroh) or `grpc`; and the
 * Metadata.Put callers that drive it, through the agent's own typed clients
 * over one connection per node.
 *
 * Owns: {@link startBlixardCluster}. Imports the agent's clients, the Iroh
 * key helpers and the generated messages, and this folder's children and
 * system contract.
 *
 * @module
 */

import dgram from "node:dgram";
import { createClient } from "../../src/rpc/client.ts";
import { Metadata, Status } from "../../src/rpc/services.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import {
  createEndpoint,
  endpointIdOf,
  formatSecretKey,
  type IrohEndpoint,
  toTicket,
} from "../../src/transport/iroh/mod.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import type { CallTransport } from "../../src/rpc/client.ts";
import { freeTcpPort } from "../../tests/ports.ts";
import { within } from "../../tests/wait.ts";
import { type Server, spawnServer } from "./children.ts";
import type { PutFn } from "./load.ts";
import { benchValue, type ClusterUnderTest, keyOf, type Member } from "./system.ts";

/** The agent's entry point, run from source as the tests run it. */
const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** Node ids of the cluster. */
const NODE_IDS = [1, 2, 3] as const;
/** Longest wait for a node to serve, and for the cluster to agree on a leader. */
const START_MS = 60_000;
/** Deadline of one benchmark write, and of a status call. */
export const CALL_DEADLINE_MS = 10_000;

/** The transport a Blixard cluster runs on: the node's `transport.mode`. */
export type BlixardMode = "iroh" | "grpc";

/** Options of {@link startBlixardCluster}. */
export interface BlixardOptions {
  readonly mode: BlixardMode;
  /** Where the nodes' data directories and config files go (removed by `stop`). */
  readonly dir: string;
  /** Start every node with the V8 inspector on a loopback port, for the CPU profile. */
  readonly inspect?: boolean;
}

/** A running Blixard node. */
interface Node extends Member {
  readonly server: Server;
  /** Its inspector port, when started with one. */
  readonly inspectPort?: number;
}

/** A cluster with its inspector ports, so the profiler can attach to the leader. */
export interface BlixardCluster extends ClusterUnderTest {
  /** Node id → inspector port (empty unless started with `inspect`). */
  readonly inspectPorts: ReadonlyMap<number, number>;
}

/** A UDP port on 127.0.0.1 nothing is bound to right now. */
async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, "127.0.0.1", () => resolve());
  });
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

interface Planned {
  readonly id: number;
  readonly dataDir: string;
  readonly config: string;
  readonly grpcPort: number;
  readonly irohPort: number;
  readonly endpointId: string;
}

/** The config of node `me`: loopback listeners, relays off, the other two as peers. */
function configOf(mode: BlixardMode, me: Planned, all: readonly Planned[], operator: string) {
  const peers = all.filter((p) => p.id !== me.id).map((p) =>
    [
      `[[cluster.peers]]`,
      `id = ${p.id}`,
      `endpoint_id = "${p.endpointId}"`,
      `addresses = ["127.0.0.1:${p.irohPort}"]`,
      `grpc_address = "127.0.0.1:${p.grpcPort}"`,
    ].join("\n")
  );
  return [
    `[node]`,
    `id = ${me.id}`,
    `data_dir = "${me.dataDir}"`,
    ``,
    `[transport]`,
    `mode = "${mode}"`,
    ``,
    `[grpc]`,
    `bind = "127.0.0.1:${me.grpcPort}"`,
    ``,
    `[iroh]`,
    `bind = "127.0.0.1:${me.irohPort}"`,
    `relay = "disabled"`,
    ``,
    `[metrics]`,
    `bind = "127.0.0.1:0"`,
    ``,
    `[cluster]`,
    `operator_keys = ["${operator}"]`,
    ``,
    ...peers,
    ``,
  ].join("\n");
}

/** Writes node keys and configs, starts the three nodes, and waits for an agreed leader. */
export async function startBlixardCluster(o: BlixardOptions): Promise<BlixardCluster> {
  const operatorKey = crypto.getRandomValues(new Uint8Array(32));
  const planned: Planned[] = [];
  for (const id of NODE_IDS) {
    const dataDir = `${o.dir}/node${id}`;
    await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
    // Each node's key is made here so every config can name its peers' endpoint ids.
    const key = crypto.getRandomValues(new Uint8Array(32));
    await Deno.writeTextFile(`${dataDir}/iroh_secret_key`, formatSecretKey(key), { mode: 0o600 });
    planned.push({
      id,
      dataDir,
      config: `${o.dir}/node${id}.toml`,
      grpcPort: freeTcpPort(),
      irohPort: await freeUdpPort(),
      endpointId: endpointIdOf(key),
    });
  }
  const operator = endpointIdOf(operatorKey);
  const nodes: Node[] = [];
  let endpoint: IrohEndpoint | null = null;
  let iroh: IrohRpcClient | null = null;
  const grpc: GrpcChannel[] = [];
  const stop = async () => {
    iroh?.close();
    for (const c of grpc) c.close();
    await endpoint?.close().catch(() => {});
    await Promise.all(nodes.map((n) => n.server.stop()));
    await Deno.remove(o.dir, { recursive: true }).catch(() => {});
  };
  try {
    for (const p of planned) {
      await Deno.writeTextFile(p.config, configOf(o.mode, p, planned, operator));
      const inspectPort = o.inspect ? freeTcpPort() : undefined;
      const flags = inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : [];
      const server = spawnServer(`node${p.id}`, Deno.execPath(), [
        "run",
        "-A",
        ...flags,
        MAIN,
        "node",
        "--config",
        p.config,
      ]);
      nodes.push({ id: p.id, pid: server.pid, server, ...(inspectPort ? { inspectPort } : {}) });
    }
    const ready = o.mode === "iroh" ? /ticket: \S+\n/ : /grpc: \S+\n/;
    await Promise.all(nodes.map((n) => n.server.waitFor(ready, START_MS, "serving")));

    const transports = new Map<number, CallTransport>();
    if (o.mode === "iroh") {
      endpoint = await createEndpoint({
        secretKey: operatorKey,
        bindAddr: "127.0.0.1:0",
        relayMode: "disabled",
      });
      iroh = new IrohRpcClient({ endpoint });
      for (const p of planned) {
        const ticket = toTicket({ id: p.endpointId, directAddresses: [`127.0.0.1:${p.irohPort}`] });
        transports.set(p.id, iroh.peer(ticket));
      }
    } else {
      for (const p of planned) {
        const channel = new GrpcChannel({ target: `127.0.0.1:${p.grpcPort}` });
        grpc.push(channel);
        transports.set(p.id, channel);
      }
    }
    const status = new Map([...transports].map(([id, t]) => [id, createClient(Status, t)]));
    const metadata = new Map([...transports].map(([id, t]) => [id, createClient(Metadata, t)]));

    const raftStatus = (id: number) =>
      status.get(id)!.getRaftStatus({}, { deadlineMs: CALL_DEADLINE_MS });
    const leader = async () => {
      const until = Date.now() + START_MS;
      for (;;) {
        const all = await Promise.all(NODE_IDS.map((id) => raftStatus(id).catch(() => null)));
        const leaders = new Set(all.map((s) => Number(s?.leaderId ?? 0)));
        const [only] = leaders;
        if (leaders.size === 1 && only !== undefined && only !== 0) {
          return { id: only, term: Math.max(...all.map((s) => Number(s!.term))) };
        }
        if (Date.now() > until) {
          throw new Error(
            `blixard ${o.mode}: the nodes did not agree on a leader within ${START_MS} ms ` +
              `(leaders seen: ${[...leaders].join(", ")})\n` +
              nodes.map((n) => n.server.output()).join("\n"),
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const value = benchValue();
    const putVia = (id: number): PutFn => {
      const client = metadata.get(id);
      if (!client) throw new Error(`blixard: no node ${id}; nodes are ${NODE_IDS.join(", ")}`);
      return async (c, seq) => {
        await client.put({ key: keyOf(c, seq), value }, { deadlineMs: CALL_DEADLINE_MS });
      };
    };

    const first = await leader();
    // Every node answers a write before the load starts (a follower forwards it).
    await within(
      Promise.all(NODE_IDS.map((id) => putVia(id)(0, id))),
      START_MS,
      `blixard ${o.mode}: a first write through every node (leader ${first.id})`,
    );
    return {
      name: `blixard ${o.mode}`,
      members: nodes.map(({ id, pid }) => ({ id, pid })),
      inspectPorts: new Map(
        nodes.flatMap((n) => n.inspectPort ? [[n.id, n.inspectPort] as const] : []),
      ),
      leader,
      committed: async () => {
        const { id } = await leader();
        return Number((await raftStatus(id)).commitIndex);
      },
      putVia,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
