/**
 * Clusters of real agent processes on loopback for the end-to-end tests:
 * keys and configs written, `blixard node` started per node, typed clients
 * to each over the transport the test asks for, and signals to kill, stop
 * and continue nodes.
 */

import { createClient } from "../../src/rpc/client.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import {
  type Client,
  Cluster,
  Metadata,
  Monitoring,
  type ServiceInfo,
  Status,
  Vm,
} from "../../src/rpc/services.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import { createEndpoint, type IrohEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { endpointIdOf } from "../../src/transport/iroh/secret_key.ts";
import { RaftRole } from "../../src/rpc/gen/blixard/v1/status_pb.ts";
import type { CallTransport } from "../../src/rpc/client.ts";
import type { VmHandle } from "../../src/vm/backend.ts";
import { listRecords } from "../../src/vm/supervisor.ts";
import { freeTcpPort, type RunningNode, startNode } from "../cli/helpers.ts";
import { freePorts, nodeHome } from "../runner/helpers.ts";

/** How the cluster's nodes talk, and how the test's clients reach them. */
export interface ClusterSpec {
  readonly size: number;
  readonly mode: "grpc" | "iroh" | "dual";
  /** In dual mode. */
  readonly raftTransport?: "grpc" | "iroh" | "adaptive";
  /** Virtual time of one Raft tick; elections take 10 to 20 ticks. */
  readonly tickMs?: number;
  readonly snapshotEveryEntries?: number;
  readonly keepEntries?: number;
  /** The `[vm]` table's body, or one per node id; default: the process backend, 8 vcpus and 8 GiB per node. */
  readonly vm?: string | ((id: number) => string);
  /**
   * Serve gRPC with TLS (server only, no client certificates): the nodes use
   * `certFile`/`keyFile`, the test's clients trust `caFile`.
   */
  readonly grpcTls?: { certFile: string; keyFile: string; caFile: string };
  /** The nodes {@link TestCluster.start} starts; default all (the others are configured, not run). */
  readonly started?: readonly number[];
}

/** A node's ports. */
export interface Ports {
  readonly tcp: number;
  readonly udp: number;
  readonly metrics: number;
}

/** Free ports for a node: gRPC, Iroh, metrics. */
async function nodePorts(): Promise<Ports> {
  return { ...(await freePorts()), metrics: freeTcpPort() };
}

/** The `[vm]` body of test clusters unless a test gives its own. */
export const TEST_VM_TABLE = 'backends = ["process"]\nvcpus = 8\nmemory_mib = 8192\n';

/** One node of a test cluster. */
export interface TestNode {
  readonly id: number;
  readonly dataDir: string;
  readonly configFile: string;
  /** gRPC (tcp), Iroh (udp), and the HTTP metrics endpoint (metrics). */
  readonly ports: Ports;
  readonly endpointId: string;
  process: RunningNode | null;
  /** Set by the first start: the ticket it printed. */
  ticket: string;
  /** Clients of its services, over the test's transport. */
  readonly clients: {
    metadata: ReturnType<typeof createClient<typeof Metadata>>;
    status: ReturnType<typeof createClient<typeof Status>>;
    cluster: ReturnType<typeof createClient<typeof Cluster>>;
    vm: ReturnType<typeof createClient<typeof Vm>>;
    monitoring: ReturnType<typeof createClient<typeof Monitoring>>;
  };
}

/** A cluster of agent processes. */
export class TestCluster implements AsyncDisposable {
  readonly nodes: TestNode[] = [];
  readonly spec: ClusterSpec;
  readonly #closers: (() => void | Promise<void>)[] = [];
  operatorKey = crypto.getRandomValues(new Uint8Array(32));
  #endpoint: IrohEndpoint | null = null;
  #iroh: IrohRpcClient | null = null;

  constructor(spec: ClusterSpec) {
    this.spec = spec;
  }

  /** Writes every node's key and config, and starts them (all, unless `spec.started` says). */
  static async start(spec: ClusterSpec): Promise<TestCluster> {
    const c = new TestCluster(spec);
    const homes = [];
    for (let id = 1; id <= spec.size; id++) {
      const ports = await nodePorts();
      homes.push({ id, ports, ...(await nodeHome(ports.udp)) });
    }
    if (spec.mode !== "grpc") {
      c.#endpoint = await createEndpoint({
        secretKey: c.operatorKey,
        bindAddr: "127.0.0.1:0",
        relayMode: "disabled",
        alpns: [],
      });
      c.#iroh = new IrohRpcClient({
        endpoint: c.#endpoint,
        backoff: { initialMs: 50, maxMs: 500 },
        keepaliveIntervalMs: 200,
        deadPeerTimeoutMs: 1_000,
      });
    }
    for (const h of homes) {
      const configFile = `${h.dataDir}/agent.toml`;
      const peers = homes.filter((p) => p.id !== h.id);
      await Deno.writeTextFile(configFile, c.configText(h, peers, true));
      c.nodes.push(c.#node(h, configFile));
    }
    const started = spec.started ?? c.nodes.map((n) => n.id);
    await Promise.all(started.map((id) => c.startNode(id)));
    return c;
  }

  /** A node's config: its listeners, its peers, the cluster's Raft timing. */
  configText(
    me: { id: number; dataDir: string; ports: Ports },
    peers: readonly { id: number; endpointId: string; ports: { tcp: number; udp: number } }[],
    bootstrap: boolean,
  ): string {
    const s = this.spec;
    const migration = s.mode === "dual"
      ? `[transport.migration]\nprefer_iroh = ["all_except_raft"]\nraft_transport = "${
        s.raftTransport ?? "grpc"
      }"\n`
      : "";
    return `[node]
id = ${me.id}
data_dir = "${me.dataDir}"
[transport]
mode = "${s.mode}"
${migration}
[grpc]
bind = "127.0.0.1:${me.ports.tcp}"
${
      s.grpcTls
        ? `[grpc.tls]\ncert_file = "${s.grpcTls.certFile}"\nkey_file = "${s.grpcTls.keyFile}"\n`
        : ""
    }[iroh]
bind = "127.0.0.1:${me.ports.udp}"
relay = "disabled"
[metrics]
bind = "127.0.0.1:${me.ports.metrics}"
[raft]
tick_ms = ${s.tickMs ?? 20}
snapshot_every_entries = ${s.snapshotEveryEntries ?? 10_000}
keep_entries = ${s.keepEntries ?? 1_000}
[limits]
shutdown_timeout_ms = 1000
[vm]
${typeof s.vm === "function" ? s.vm(me.id) : s.vm ?? TEST_VM_TABLE}
[cluster]
bootstrap = ${bootstrap}
operator_keys = ["${endpointIdOf(this.operatorKey)}"]
${
      peers.map((p) =>
        `[[cluster.peers]]\nid = ${p.id}\nendpoint_id = "${p.endpointId}"\naddresses = ["127.0.0.1:${p.ports.udp}"]\ngrpc_address = "127.0.0.1:${p.ports.tcp}"\n`
      ).join("")
    }`;
  }

  /** Adds a node that waits to be joined (`bootstrap = false`), listing the current nodes as peers, and starts it. */
  async addWaitingNode(): Promise<TestNode> {
    const id = this.nodes.length + 1;
    const ports = await nodePorts();
    const h = { id, ports, ...(await nodeHome(ports.udp)) };
    const configFile = `${h.dataDir}/agent.toml`;
    await Deno.writeTextFile(
      configFile,
      this.configText(h, this.nodes.map((n) => ({ ...n })), false),
    );
    const node = this.#node(h, configFile);
    this.nodes.push(node);
    await this.startNode(id);
    return node;
  }

  #node(
    h: { id: number; dataDir: string; endpointId: string; ports: Ports },
    configFile: string,
  ): TestNode {
    const channel = this.#channel(h);
    return {
      id: h.id,
      dataDir: h.dataDir,
      configFile,
      ports: h.ports,
      endpointId: h.endpointId,
      process: null,
      ticket: "",
      clients: {
        metadata: createClient(Metadata, channel),
        status: createClient(Status, channel),
        cluster: createClient(Cluster, channel),
        vm: createClient(Vm, channel),
        monitoring: createClient(Monitoring, channel),
      },
    };
  }

  /** The channel the test's clients use to reach a node. */
  #channel(
    h: { id: number; endpointId: string; ports: { tcp: number; udp: number } },
  ): CallTransport {
    if (this.spec.mode === "iroh") {
      return this.#iroh!.peer({ id: h.endpointId, directAddresses: [`127.0.0.1:${h.ports.udp}`] });
    }
    const channel = new GrpcChannel({
      target: `127.0.0.1:${h.ports.tcp}`,
      backoff: { initialMs: 50, maxMs: 500 },
      ...(this.spec.grpcTls ? { tls: { caFile: this.spec.grpcTls.caFile } } : {}),
    });
    this.#closers.push(() => channel.close());
    return channel;
  }

  /** A client of node `id`'s `service` over Iroh, as the cluster's operator (not in mode grpc). */
  operatorClient<S extends ServiceInfo>(service: S, id: number): Client<S["desc"]> {
    const n = this.node(id);
    return createClient(
      service,
      this.#iroh!.peer({ id: n.endpointId, directAddresses: [`127.0.0.1:${n.ports.udp}`] }),
    );
  }

  node(id: number): TestNode {
    return this.nodes.find((n) => n.id === id)!;
  }

  /** Starts (or restarts) a node's process over its data directory. */
  async startNode(id: number): Promise<void> {
    const n = this.node(id);
    n.process = await startNode(
      n.configFile,
      this.spec.mode === "grpc" ? /grpc: \S+\n/ : /ticket: \S+\n/,
    );
    n.ticket ||= n.process.ticket;
  }

  /** Sends `signal` to a node's process; SIGKILL forgets it. */
  async signal(id: number, signal: "SIGKILL" | "SIGSTOP" | "SIGCONT"): Promise<void> {
    const n = this.node(id);
    n.process!.child.kill(signal);
    if (signal === "SIGKILL") {
      await n.process!.child.status;
      n.process = null;
    }
  }

  /**
   * The leader as the running nodes report it: the node that says it leads,
   * with the highest term (asking each with a short deadline).
   */
  async leader(exclude: readonly number[] = []): Promise<number> {
    let best = { id: 0, term: -1n };
    for (const n of this.nodes) {
      if (!n.process || exclude.includes(n.id)) continue;
      try {
        const s = await n.clients.status.getRaftStatus({}, { deadlineMs: 300 });
        if (s.role === RaftRole.LEADER && s.term > best.term) best = { id: n.id, term: s.term };
      } catch {
        // Unreachable or stopped: not the leader we can use.
      }
    }
    return best.id;
  }

  /** Waits until some running node (not in `exclude`) leads; returns it. */
  async waitForLeader(exclude: readonly number[] = [], ms = 15_000): Promise<number> {
    const until = Date.now() + ms;
    for (;;) {
      const id = await this.leader(exclude);
      if (id !== 0) return id;
      if (Date.now() > until) throw new Error(`no leader among the running nodes after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Waits until a leader is known and every node has announced what it
   * offers to VMs (placement puts nothing on a node before); returns the leader.
   */
  async waitForVmCapacity(ms = 15_000): Promise<number> {
    const leader = await this.waitForLeader([], ms);
    const until = Date.now() + ms;
    for (;;) {
      try {
        const { nodes } = await this.node(leader).clients.monitoring.getResourceSummary({}, {
          deadlineMs: 1_000,
        });
        if (nodes.length === this.nodes.length && nodes.every((n) => n.vmBackends.length > 0)) {
          return leader;
        }
      } catch {
        // Not ready yet.
      }
      if (Date.now() > until) throw new Error(`nodes did not announce VM capacity in ${ms} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const n of this.nodes) {
      if (!n.process) continue;
      try {
        n.process.child.kill("SIGCONT");
      } catch {
        // Already gone.
      }
      await n.process.stop();
    }
    for (const close of this.#closers) await close();
    this.#iroh?.close();
    await this.#endpoint?.close();
    // VMs outlive their agent by design: the test ends them.
    for (const n of this.nodes) await killVms(n.dataDir);
    for (const n of this.nodes) await Deno.remove(n.dataDir, { recursive: true }).catch(() => {});
  }
}

/** The VMs recorded under a node's data directory, by name. */
export async function recordedVms(dataDir: string): Promise<Map<string, VmHandle>> {
  const found = await listRecords(dataDir);
  return new Map(found.handles.map((h) => [h.name, h]));
}

/** Whether process `pid` exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** Kills every VM process (and its supervisor) recorded under `dataDir`. */
export async function killVms(dataDir: string): Promise<void> {
  for (const h of (await recordedVms(dataDir).catch(() => new Map<string, VmHandle>())).values()) {
    for (const pid of [h.supervisorPid, h.pid]) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
}

/** Whether a failed write's outcome is unknown (it may have been applied). */
export function unknownOutcome(e: unknown): boolean {
  if (!(e instanceof RpcError)) return true;
  return ![Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED, Code.ALREADY_EXISTS, Code.ABORTED]
    .includes(e.code as 3);
}
