/**
 * The running agent: from a validated configuration to endpoints, services
 * and servers, and back down again.
 *
 * Owns: {@link startAgent} and {@link Agent}. Imports config, services,
 * rpc and the transports; the command line drives it.
 *
 * This slice serves Health and Status over Iroh. The gRPC transport, the
 * dual runner's per-service routing and live reload arrive next (see README,
 * "Status"); a config that asks for gRPC is served over Iroh with a warning.
 *
 * @module
 */

import type { AgentConfig } from "../config/mod.ts";
import { RpcRouter } from "../rpc/router.ts";
import { Health, Status } from "../rpc/services.ts";
import { healthService } from "../services/health.ts";
import { staticStatusSource, statusService } from "../services/status.ts";
import {
  createEndpoint,
  type IrohEndpoint,
  normalizeEndpointId,
  parseTicket,
} from "../transport/iroh/endpoint.ts";
import { IrohRpcServer } from "../transport/iroh/rpc_server.ts";
import { loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import type { Logger } from "../util/log.ts";
import { AGENT_VERSION } from "../version.ts";

/** A running agent. */
export interface Agent {
  readonly config: AgentConfig;
  readonly endpoint: IrohEndpoint;
  readonly server: IrohRpcServer;
  /** The endpoint's ticket: what operators and peers dial. */
  ticket(): string;
  /** Graceful stop: in-flight calls get up to `limits.shutdown_timeout_ms`. */
  stop(): Promise<{ abandoned: number }>;
}

/** The endpoint ids allowed to connect: configured peers and operator keys. */
export function allowlistOf(config: AgentConfig): Set<string> {
  const ids = new Set<string>(config.cluster.operatorKeys);
  for (const peer of config.cluster.peers) {
    if (peer.endpointId) ids.add(normalizeEndpointId(peer.endpointId));
    else if (peer.ticket) ids.add(parseTicket(peer.ticket).id);
  }
  return ids;
}

/** Starts the agent described by `config`. */
export async function startAgent(config: AgentConfig, log: Logger): Promise<Agent> {
  if (config.transport.mode !== "iroh") {
    log.warn(
      `transport.mode = "${config.transport.mode}": the gRPC transport is not implemented yet; ` +
        `serving Health and Status over Iroh only`,
    );
  }
  await Deno.mkdir(config.node.dataDir, { recursive: true, mode: 0o700 });
  const { secretKey, created, path } = await loadOrCreateSecretKey(config.iroh.secretKeyFile);
  if (created) log.info("created the node's secret key", { file: path });
  const endpoint = await createEndpoint({
    secretKey,
    bindAddr: config.iroh.bind,
    relayMode: config.iroh.relay,
    alpns: [config.iroh.alpn],
  });
  const nodeId = BigInt(config.node.id);
  const startedAtMs = Date.now();
  let stopping = false;
  const router = new RpcRouter()
    .register(
      Health,
      healthService({
        nodeId,
        agentVersion: AGENT_VERSION,
        startedAtMs,
        readiness: () =>
          stopping ? { ready: false, detail: "shutting down" } : { ready: true, detail: "" },
      }),
    )
    .register(
      Status,
      statusService(staticStatusSource(
        {
          nodeId,
          irohEndpointId: endpoint.id,
          irohAddresses: endpoint.addr().directAddresses,
          grpcAddress: "",
          services: new Map([
            ["health", { transports: ["iroh"], preferred: "iroh" }],
            ["status", { transports: ["iroh"], preferred: "iroh" }],
          ]),
        },
        config.cluster.peers.map((p) => ({
          nodeId: BigInt(p.id),
          endpointId: p.endpointId ?? (p.ticket ? parseTicket(p.ticket).id : ""),
          addresses: p.addresses.length > 0
            ? p.addresses
            : p.ticket
            ? parseTicket(p.ticket).directAddresses
            : [],
          grpcAddress: p.grpcAddress ?? "",
        })),
      )),
    );
  const allow = allowlistOf(config);
  const server = new IrohRpcServer({
    endpoint,
    router,
    allow,
    logger: log.child("iroh"),
    limits: {
      maxFrameBytes: config.limits.maxFrameBytes,
      maxInflightRequests: config.limits.maxInflightRequests,
      maxConcurrentStreams: config.limits.maxConcurrentStreams,
      defaultDeadlineMs: config.limits.requestDeadlineMs,
      maxDeadlineMs: config.limits.maxRequestDeadlineMs,
    },
  });
  server.start();
  log.info("serving health, status over iroh", {
    node: config.node.id,
    endpoint: endpoint.id,
    addresses: endpoint.addr().directAddresses.join(","),
    allowed: allow.size,
  });
  return {
    config,
    endpoint,
    server,
    ticket: () => endpoint.ticket(),
    async stop() {
      stopping = true;
      const result = await server.shutdown(config.limits.shutdownTimeoutMs);
      await endpoint.close();
      return result;
    },
  };
}
