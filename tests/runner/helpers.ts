/**
 * Shared helpers of the runner tests: free ports, config files for each
 * mode, agents on loopback, and a dual client to call them.
 */

export { eventually } from "../wait.ts";
import { type AgentConfig, configOrThrow, parseConfig } from "../../src/config/mod.ts";
import { Agent } from "../../src/node/agent.ts";
import { DualClient, type DualPeer, type TransportClients } from "../../src/runner/dual_client.ts";
import type { TransportName } from "../../src/names.ts";
import { GrpcRpcClient } from "../../src/transport/grpc/client.ts";
import { createEndpoint, type IrohEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { endpointIdOf } from "../../src/transport/iroh/secret_key.ts";
import { silentLogger } from "../../src/util/log.ts";
import { freePorts } from "../ports.ts";
export { freePorts };

/** What varies between the test configs. */
export interface NodeSpec {
  readonly dataDir: string;
  readonly grpcPort: number;
  readonly irohPort: number;
  readonly operatorId: string;
  readonly mode: "grpc" | "iroh" | "dual";
  readonly preferIroh?: readonly string[];
  readonly raftTransport?: "grpc" | "iroh" | "adaptive";
  readonly nodeId?: number;
  /** Form a cluster on the first start (default), or wait to be joined. */
  readonly bootstrap?: boolean;
  /** Cluster peers, each with an endpoint id and a gRPC address on loopback. */
  readonly peers?: readonly {
    id: number;
    endpointId: string;
    grpcPort: number;
    irohPort?: number;
    grpcHost?: string;
  }[];
}

/** The TOML of a single-node config on loopback. */
export function configText(s: NodeSpec): string {
  const migration = s.mode === "dual"
    ? `[transport.migration]\nprefer_iroh = ${
      JSON.stringify(s.preferIroh ?? [])
    }\nraft_transport = "${s.raftTransport ?? "grpc"}"\nfallback_to_grpc = true\n`
    : "";
  return `[node]
id = ${s.nodeId ?? 1}
data_dir = "${s.dataDir}"

[transport]
mode = "${s.mode}"
${migration}
[grpc]
bind = "127.0.0.1:${s.grpcPort}"

[iroh]
bind = "127.0.0.1:${s.irohPort}"
relay = "disabled"

[metrics]
bind = "127.0.0.1:0"

[cluster]
operator_keys = ["${s.operatorId}"]
bootstrap = ${s.bootstrap ?? true}
${
    (s.peers ?? []).map((p) =>
      `[[cluster.peers]]\nid = ${p.id}\nendpoint_id = "${p.endpointId}"\naddresses = ["127.0.0.1:${
        p.irohPort ?? 1
      }"]\ngrpc_address = "${p.grpcHost ?? "127.0.0.1"}:${p.grpcPort}"\n`
    ).join("")
  }
[raft]
tick_ms = 10

[limits]
shutdown_timeout_ms = 2000
`;
}

/** Parses a spec's config. */
export function configOf(s: NodeSpec): AgentConfig {
  return configOrThrow(parseConfig(configText(s)));
}

/** An operator identity and a dual client that can call over both transports. */
export interface Caller extends AsyncDisposable {
  readonly client: DualClient;
  readonly endpoint: IrohEndpoint;
  readonly operatorId: string;
  /** The client for `agent`, addressed the way a peer's config would. */
  peerOf(spec: NodeSpec, agentTicketOrId?: string): DualPeer;
}

/**
 * A caller that can use `transports`, preferring Iroh for `preferIroh` and
 * gRPC otherwise, with fallback to gRPC.
 */
export async function caller(
  transports: readonly TransportName[] = ["grpc", "iroh"],
  preferIroh: readonly string[] = ["health", "status"],
): Promise<Caller> {
  const secretKey = crypto.getRandomValues(new Uint8Array(32));
  const endpoint = await createEndpoint({
    secretKey,
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
    alpns: [],
  });
  const iroh = new IrohRpcClient({
    endpoint,
    failFastWhileDown: true,
    backoff: { initialMs: 50, maxMs: 500 },
    keepaliveIntervalMs: 200,
    deadPeerTimeoutMs: 1000,
  });
  const grpc = new GrpcRpcClient();
  const factories: TransportClients = {
    ...(transports.includes("iroh") ? { iroh: (p) => iroh.peer(p.iroh!) } : {}),
    ...(transports.includes("grpc") ? { grpc: (p) => grpc.peer(p.grpc!) } : {}),
  };
  const client = new DualClient({
    policy: (service) => ({
      transports,
      preferred: transports.length === 1
        ? transports[0]!
        : preferIroh.includes(service)
        ? "iroh"
        : "grpc",
    }),
    fallbackToGrpc: true,
    transports: factories,
  });
  return {
    client,
    endpoint,
    operatorId: endpointIdOf(secretKey),
    peerOf(spec, irohTarget) {
      return client.peer({
        nodeId: BigInt(spec.nodeId ?? 1),
        grpc: `127.0.0.1:${spec.grpcPort}`,
        iroh: irohTarget,
      });
    },
    async [Symbol.asyncDispose]() {
      iroh.close();
      grpc.close();
      await endpoint.close();
    },
  };
}

/** Starts an agent quietly. */
export function startAgent(config: AgentConfig): Promise<Agent> {
  return Agent.start(config, silentLogger);
}

/** A data directory whose node key exists already, and the Iroh ticket that key and port give. */
export async function nodeHome(
  irohPort: number,
): Promise<{ dataDir: string; ticket: string; endpointId: string }> {
  const { loadOrCreateSecretKey } = await import("../../src/transport/iroh/secret_key.ts");
  const { toTicket } = await import("../../src/transport/iroh/endpoint.ts");
  const dataDir = await Deno.makeTempDir({ prefix: "blixard-runner-" });
  const { secretKey } = await loadOrCreateSecretKey(`${dataDir}/iroh_secret_key`);
  const endpointId = endpointIdOf(secretKey);
  return {
    dataDir,
    endpointId,
    ticket: toTicket({ id: endpointId, directAddresses: [`127.0.0.1:${irohPort}`] }),
  };
}

/** What every single-node config of a test shares: its home, ports and operator. */
export async function nodeBase(
  operatorId: string,
): Promise<{ base: Omit<NodeSpec, "mode">; ticket: string; endpointId: string }> {
  const ports = await freePorts();
  const home = await nodeHome(ports.udp);
  return {
    base: { dataDir: home.dataDir, grpcPort: ports.tcp, irohPort: ports.udp, operatorId },
    ticket: home.ticket,
    endpointId: home.endpointId,
  };
}
