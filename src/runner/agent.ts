/**
 * The running agent and its dual runner: from a validated configuration to
 * listeners on the transports its mode names, and from one configuration to
 * the next on reload without dropping calls in flight.
 *
 * Owns: {@link Agent}. Imports config, services, rpc, the transports and
 * `routing.ts`; the command line drives it.
 *
 * Listeners: mode `grpc` runs the gRPC listener only, `iroh` the Iroh
 * endpoint only, `dual` both; every service is served on every listener that
 * runs, and Status tells peers which transport each service prefers
 * (docs/dual-runner.md). A reload starts the listeners the new config needs
 * before it stops the ones it no longer needs, and a stopping listener lets
 * its calls in flight finish (up to `limits.shutdown_timeout_ms`).
 *
 * @module
 */

import type { AgentConfig } from "../config/mod.ts";
import type { RaftMessage } from "../codec/raft.ts";
import { AgentMetrics } from "../metrics/registry.ts";
import { RpcRouter } from "../rpc/router.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../rpc/limits.ts";
import type { RaftIngress } from "../rpc/raft_ingress.ts";
import type { PeerInfo } from "../rpc/services.ts";
import { Health, Status } from "../rpc/services.ts";
import { healthService } from "../services/health.ts";
import {
  type ConfiguredPeer,
  type LocalNode,
  staticStatusSource,
  statusService,
} from "../services/status.ts";
import { GrpcRpcServer } from "../transport/grpc/server.ts";
import { GrpcRpcClient } from "../transport/grpc/client.ts";
import { IrohRpcClient } from "../transport/iroh/rpc_client.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import {
  DualClient,
  type DualClientOptions,
  type DualPeer,
  type PeerAddress,
} from "./dual_client.ts";
import {
  createEndpoint,
  type IrohEndpoint,
  normalizeEndpointId,
  parseTicket,
  toTicket,
} from "../transport/iroh/endpoint.ts";
import { IrohRpcServer } from "../transport/iroh/rpc_server.ts";
import { loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import type { Logger } from "../util/log.ts";
import { AGENT_VERSION } from "../version.ts";
import {
  ROUTED_SERVICES,
  type RoutedService,
  type ServingPlan,
  servingPlan,
  type TransportName,
  transportsOf,
} from "./routing.ts";

/** The endpoint ids allowed to connect over Iroh: configured peers and operator keys. */
export function allowlistOf(config: AgentConfig): Set<string> {
  const ids = new Set<string>(config.cluster.operatorKeys);
  for (const peer of config.cluster.peers) {
    if (peer.endpointId) ids.add(normalizeEndpointId(peer.endpointId));
    else if (peer.ticket) ids.add(parseTicket(peer.ticket).id);
  }
  return ids;
}

/** The RPC limits a config sets. */
export function limitsOf(config: AgentConfig): RpcLimits {
  return {
    maxFrameBytes: config.limits.maxFrameBytes,
    maxInflightRequests: config.limits.maxInflightRequests,
    maxConcurrentStreams: config.limits.maxConcurrentStreams,
    defaultDeadlineMs: config.limits.requestDeadlineMs,
    maxDeadlineMs: config.limits.maxRequestDeadlineMs,
    maxConnectionBufferBytes: DEFAULT_RPC_LIMITS.maxConnectionBufferBytes,
  };
}

/** The configured peers, as Status reports them. */
export function configuredPeers(config: AgentConfig): ConfiguredPeer[] {
  return config.cluster.peers.map((p) => {
    const fromTicket = p.ticket ? parseTicket(p.ticket) : undefined;
    return {
      nodeId: BigInt(p.id),
      endpointId: p.endpointId ?? fromTicket?.id ?? "",
      addresses: p.addresses.length > 0 ? p.addresses : fromTicket?.directAddresses ?? [],
      grpcAddress: p.grpcAddress ?? "",
    };
  });
}

/** What a reload did, or why it did not. */
export type ReloadResult =
  | {
    readonly ok: true;
    /** Every change, one line each. */
    readonly changes: readonly string[];
    /**
     * One line of what moved, for the operator:
     * `"health, status: iroh → grpc; iroh listener parked"`, or `"nothing moved"`.
     */
    readonly summary: string;
  }
  | { readonly ok: false; readonly error: string };

/** Counters of the runner, for tests and metrics. */
export interface AgentStats {
  reloadsOk: number;
  reloadsFailed: number;
}

interface IrohListener {
  readonly endpoint: IrohEndpoint;
  readonly server: IrohRpcServer;
  /** The config it was started with (its bind, relay and alpn). */
  readonly config: AgentConfig;
}

interface GrpcListener {
  readonly server: GrpcRpcServer;
  /** `host:port` actually bound. */
  readonly address: string;
}

/** Keys a reload may not change: they are the node's identity and storage. */
const FIXED_KEYS: readonly [string, (c: AgentConfig) => unknown][] = [
  ["node.id", (c) => c.node.id],
  ["node.data_dir", (c) => c.node.dataDir],
  ["iroh.secret_key_file", (c) => c.iroh.secretKeyFile],
];

/** What an Iroh endpoint is created with: changing any needs a new endpoint. */
function irohEndpointSettings(c: AgentConfig): string {
  return JSON.stringify([c.iroh.bind, c.iroh.relay, c.iroh.alpn]);
}

function grpcSettings(c: AgentConfig): string {
  return JSON.stringify([c.grpc.bind, c.grpc.tls, c.grpc.allowInsecure, c.limits]);
}

/** A running agent. */
export class Agent {
  #config: AgentConfig;
  #plan: ServingPlan;
  readonly #log: Logger;
  readonly #router: RpcRouter;
  readonly #allow = new Set<string>();
  readonly #startedAtMs = Date.now();
  #iroh: IrohListener | null = null;
  /** A stopped Iroh listener, kept bound for a later reload to resume. */
  #parkedIroh: IrohListener | null = null;
  #grpc: GrpcListener | null = null;
  #stopping = false;
  #reloading: Promise<ReloadResult> | null = null;
  readonly #raftIngress: RaftIngress | undefined;
  readonly stats: AgentStats = { reloadsOk: 0, reloadsFailed: 0 };
  readonly metrics: AgentMetrics;
  #peerClient: { dual: DualClient; iroh: IrohRpcClient | null; grpc: GrpcRpcClient } | null = null;

  private constructor(
    config: AgentConfig,
    log: Logger,
    metrics: AgentMetrics,
    raftInbox?: (message: RaftMessage, from: PeerInfo) => void,
  ) {
    this.#config = config;
    this.metrics = metrics;
    this.#plan = servingPlan(config);
    this.#log = log;
    this.#raftIngress = raftInbox && {
      offer(messages, peer) {
        for (const message of messages) raftInbox(message, peer);
        return { accepted: messages.length };
      },
    };
    const nodeId = BigInt(config.node.id);
    this.#router = new RpcRouter()
      .register(
        Health,
        healthService({
          nodeId,
          agentVersion: AGENT_VERSION,
          startedAtMs: this.#startedAtMs,
          readiness: () =>
            this.#stopping
              ? { ready: false, detail: "shutting down" }
              : { ready: true, detail: "" },
        }),
      )
      .register(
        Status,
        statusService(
          staticStatusSource(() => this.#localNode(), () => configuredPeers(this.#config)),
        ),
      );
  }

  /** Starts the agent described by `config`. */
  static async start(
    config: AgentConfig,
    log: Logger,
    options: {
      onRaftMessage?: (message: RaftMessage, from: PeerInfo) => void;
      metrics?: AgentMetrics;
    } = {},
  ): Promise<Agent> {
    const agent = new Agent(
      config,
      log,
      options.metrics ?? new AgentMetrics(),
      options.onRaftMessage,
    );
    await Deno.mkdir(config.node.dataDir, { recursive: true, mode: 0o700 });
    agent.#setAllowlist(config);
    try {
      const modeTransports = transportsOf(config.transport.mode);
      if (modeTransports.includes("grpc")) agent.#grpc = await agent.#startGrpc(config);
      if (modeTransports.includes("iroh")) agent.#iroh = await agent.#startIroh(config);
    } catch (e) {
      await agent.#stopListeners(0);
      throw e;
    }
    agent.#logServing("serving");
    return agent;
  }

  /** The configuration in force. */
  get config(): AgentConfig {
    return this.#config;
  }

  /** What is served on which transport now. */
  get plan(): ServingPlan {
    return this.#plan;
  }

  /** The Iroh endpoint, when the mode runs one. */
  get irohEndpoint(): IrohEndpoint | null {
    return this.#iroh?.endpoint ?? null;
  }

  /** The Iroh ticket operators and peers dial, when Iroh runs. */
  irohTicket(): string | null {
    return this.#iroh?.endpoint.ticket() ?? null;
  }

  /** `host:port` of the gRPC listener, when it runs. */
  grpcAddress(): string | null {
    return this.#grpc?.address ?? null;
  }

  /** The listeners running now. */
  listeners(): TransportName[] {
    return [...(this.#grpc ? ["grpc" as const] : []), ...(this.#iroh ? ["iroh" as const] : [])];
  }

  /**
   * Moves to `next`: starts the listeners it needs, updates the allowlist and
   * the serving plan, then stops the listeners it no longer needs, letting
   * their calls in flight finish. If anything fails before the switch, the
   * old configuration keeps running and the failure is counted.
   */
  reload(next: AgentConfig): Promise<ReloadResult> {
    // One reload at a time, in order.
    const run = (this.#reloading ?? Promise.resolve()).then(() => this.#reload(next));
    this.#reloading = run;
    return run;
  }

  async #reload(next: AgentConfig): Promise<ReloadResult> {
    const old = this.#config;
    const fail = (error: string): ReloadResult => {
      this.refuseReload(error);
      return { ok: false, error };
    };
    if (this.#stopping) return fail("the node is shutting down");
    for (const [key, get] of FIXED_KEYS) {
      if (get(old) !== get(next)) {
        return fail(
          `${key} cannot change while the node runs (${JSON.stringify(get(old))} → ${
            JSON.stringify(get(next))
          }); restart the node to change it`,
        );
      }
    }
    const want = transportsOf(next.transport.mode);
    const changes: string[] = [];

    // 1. Decide, and start what the new config needs, before anything stops.
    const oldGrpc = this.#grpc;
    const oldIroh = this.#iroh;
    // gRPC: a changed listener restarts; on the same address the old one must stop
    // first (its calls in flight finish), on another the new one starts first.
    const grpcChanged = oldGrpc !== null && grpcSettings(old) !== grpcSettings(next);
    const grpcInPlace = want.includes("grpc") && grpcChanged && old.grpc.bind === next.grpc.bind;
    // Iroh: the endpoint's own settings (bind, relay, alpn) need a new endpoint; new
    // limits apply to the running one. An endpoint's port cannot be bound again in
    // this process (see IrohRpcServer.resume), so a stopped endpoint is parked.
    const irohCandidate = oldIroh ?? this.#parkedIroh;
    const irohSameEndpoint = irohCandidate !== null &&
      irohEndpointSettings(irohCandidate.config) === irohEndpointSettings(next);
    if (
      want.includes("iroh") && irohCandidate && !irohSameEndpoint &&
      irohCandidate.config.iroh.bind === next.iroh.bind
    ) {
      return fail(
        `iroh.relay or iroh.alpn changed while iroh.bind stayed ${next.iroh.bind}: the endpoint cannot be ` +
          `re-created on the same port in a running node; restart the node, or change iroh.bind too`,
      );
    }
    let newGrpc: GrpcListener | null = null;
    let newIroh: IrohListener | null = null;
    let resumed: IrohListener | null = null;
    try {
      if (want.includes("grpc") && (oldGrpc === null || grpcChanged)) {
        if (grpcInPlace) {
          this.#grpc = null;
          await oldGrpc!.server.shutdown(old.limits.shutdownTimeoutMs);
          changes.push("grpc listener stopped to apply new settings");
        }
        newGrpc = await this.#startGrpc(next);
        changes.push(`grpc listener started on ${newGrpc.address}`);
      }
      if (want.includes("iroh")) {
        if (irohSameEndpoint && oldIroh === null) {
          resumed = this.#parkedIroh!;
          resumed.server.setLimits(limitsOf(next));
          resumed.server.resume();
          changes.push("iroh listener resumed");
        } else if (!irohSameEndpoint) {
          newIroh = await this.#startIroh(next);
          changes.push(
            `iroh listener started on ${newIroh.endpoint.addr().directAddresses.join(",")}`,
          );
        } else if (oldIroh && JSON.stringify(old.limits) !== JSON.stringify(next.limits)) {
          oldIroh.server.setLimits(limitsOf(next));
          changes.push("iroh limits updated for new connections");
        }
      }
    } catch (e) {
      if (newGrpc) await newGrpc.server.shutdown(0);
      if (newIroh) await this.#closeIroh(newIroh, 0);
      if (grpcInPlace) {
        // The old listener is already gone; bring it back with the old settings.
        try {
          this.#grpc = await this.#startGrpc(old);
        } catch (again) {
          this.#log.error("cannot restore the old gRPC listener", { error: again });
        }
      }
      return fail(`cannot start a listener: ${e instanceof Error ? e.message : e}`);
    }

    // 2. Switch: listeners, allowlist, plan and config take effect together.
    const grpcToStop = oldGrpc && (!want.includes("grpc") || (newGrpc && !grpcInPlace))
      ? oldGrpc
      : null;
    const irohToPark = oldIroh && !want.includes("iroh") ? oldIroh : null;
    const irohToClose = oldIroh && newIroh ? oldIroh : null;
    this.#grpc = want.includes("grpc") ? newGrpc ?? oldGrpc : null;
    this.#iroh = want.includes("iroh") ? newIroh ?? resumed ?? oldIroh : null;
    if (resumed) this.#parkedIroh = null;
    if (newIroh && this.#parkedIroh) {
      // A parked endpoint on another port is of no more use.
      this.#closeIroh(this.#parkedIroh, 0).catch(() => {});
      this.#parkedIroh = null;
    }
    if (this.#iroh) this.#iroh = { ...this.#iroh, config: next };
    this.#config = next;
    this.#setAllowlist(next);
    const revoked = this.#iroh?.server.revokeDisallowed() ?? 0;
    if (revoked > 0) changes.push(`closed ${revoked} connection(s) of endpoints no longer allowed`);
    // Peer calls follow the new policy and listeners from the next call on; calls
    // already made on the old client get the shutdown timeout to finish.
    const oldPeers = this.#peerClient;
    this.#peerClient = null;
    if (oldPeers) {
      const timer = setTimeout(() => {
        oldPeers.iroh?.close();
        oldPeers.grpc.close();
      }, next.limits.shutdownTimeoutMs);
      Deno.unrefTimer(timer as unknown as number);
    }
    const before = this.#plan;
    this.#plan = servingPlan(next);
    const moved = new Map<string, RoutedService[]>();
    for (const s of ROUTED_SERVICES) {
      const from = before.get(s)!.preferred;
      const to = this.#plan.get(s)!.preferred;
      if (from !== to) moved.set(`${from} → ${to}`, [...moved.get(`${from} → ${to}`) ?? [], s]);
    }
    const summary = [...moved].map(([move, services]) => `${services.join(", ")}: ${move}`);
    for (const s of ROUTED_SERVICES) {
      const a = before.get(s)!;
      const b = this.#plan.get(s)!;
      if (a.preferred !== b.preferred || a.transports.join() !== b.transports.join()) {
        changes.push(
          `${s}: ${a.transports.join("+")} (prefer ${a.preferred}) → ${
            b.transports.join("+")
          } (prefer ${b.preferred})`,
        );
      }
    }

    // 3. Stop what is no longer needed; its calls in flight get the shutdown timeout.
    const timeout = next.limits.shutdownTimeoutMs;
    const stopping: Promise<unknown>[] = [];
    if (newGrpc) summary.push("grpc listener started");
    if (resumed) summary.push("iroh listener resumed");
    if (newIroh) summary.push("iroh listener started");
    if (grpcToStop) {
      stopping.push(grpcToStop.server.shutdown(timeout));
      changes.push(`grpc listener on ${grpcToStop.address} stopped`);
      if (!newGrpc) summary.push("grpc listener stopped");
    }
    if (irohToPark) {
      summary.push("iroh listener parked");
      stopping.push(irohToPark.server.shutdown(timeout));
      this.#parkedIroh = irohToPark;
      changes.push(
        "iroh listener stopped (its UDP port stays bound, refusing connections, until the process exits)",
      );
    }
    if (irohToClose) {
      stopping.push(this.#closeIroh(irohToClose, timeout));
      changes.push("old iroh endpoint closed");
    }
    await Promise.all(stopping);
    this.stats.reloadsOk++;
    this.metrics.configReloads.inc({ result: "ok" });
    this.#log.info("reloaded", { changes: changes.length ? changes.join("; ") : "none" });
    this.#logServing("now serving");
    return { ok: true, changes, summary: summary.length ? summary.join("; ") : "nothing moved" };
  }

  /**
   * Counts and logs a reload that did not happen (an invalid file, or a
   * listener that would not start); the running configuration stays.
   */
  refuseReload(reason: string): void {
    this.stats.reloadsFailed++;
    this.metrics.configReloads.inc({ result: "failed" });
    this.#log.error("reload refused; the running configuration is unchanged", { reason });
  }

  /**
   * The client this node calls its peers with: over the transports of its
   * mode, preferring per service as its config says, falling back as
   * `fallback_to_grpc` allows (each retry counted in
   * `blixard_rpc_fallbacks_total`).
   */
  peer(nodeId: number): DualPeer {
    const peer = this.#config.cluster.peers.find((p) => p.id === nodeId);
    if (!peer) {
      throw new RpcError(
        Code.NOT_FOUND,
        `node ${nodeId} is not among this node's [[cluster.peers]]`,
      );
    }
    const iroh = peer.ticket ??
      (peer.endpointId
        ? toTicket({ id: peer.endpointId, directAddresses: peer.addresses })
        : undefined);
    return this.#peers().peer({
      nodeId: BigInt(nodeId),
      ...(iroh ? { iroh } : {}),
      ...(peer.grpcAddress ? { grpc: peer.grpcAddress } : {}),
    });
  }

  #peers(): DualClient {
    if (!this.#peerClient) {
      const config = this.#config;
      const { tls } = config.grpc;
      const grpc = new GrpcRpcClient({
        limits: limitsOf(config),
        allowInsecure: config.grpc.allowInsecure,
        ...(tls.caFile
          ? {
            tls: {
              caFile: tls.caFile,
              ...(tls.certFile && tls.keyFile
                ? { certFile: tls.certFile, keyFile: tls.keyFile }
                : {}),
            },
          }
          : {}),
      });
      const endpoint = this.#iroh?.endpoint;
      const iroh = endpoint
        ? new IrohRpcClient({ endpoint, limits: limitsOf(config), failFastWhileDown: true })
        : null;
      const dual = new DualClient(this.#peerOptions(iroh, grpc));
      this.#peerClient = { dual, iroh, grpc };
    }
    return this.#peerClient.dual;
  }

  #peerOptions(iroh: IrohRpcClient | null, grpc: GrpcRpcClient): DualClientOptions {
    const config = this.#config;
    const callable = transportsOf(config.transport.mode);
    const plan = this.#plan;
    return {
      policy: (service) => ({ transports: callable, preferred: plan.get(service)!.preferred }),
      fallbackToGrpc: config.transport.migration.fallbackToGrpc,
      transports: {
        ...(iroh && callable.includes("iroh")
          ? { iroh: (p: PeerAddress) => iroh.peer(p.iroh!) }
          : {}),
        ...(callable.includes("grpc") ? { grpc: (p: PeerAddress) => grpc.peer(p.grpc!) } : {}),
      },
      onRetry: (service, from, to) => this.metrics.rpcFallbacks.inc({ service, from, to }),
    };
  }

  /** Graceful stop: calls in flight get `limits.shutdown_timeout_ms`. */
  async stop(): Promise<{ abandoned: number }> {
    this.#stopping = true;
    await this.#reloading?.catch(() => {});
    if (this.#peerClient) {
      this.#peerClient.iroh?.close();
      this.#peerClient.grpc.close();
      this.#peerClient = null;
    }
    return await this.#stopListeners(this.#config.limits.shutdownTimeoutMs);
  }

  async #stopListeners(timeoutMs: number): Promise<{ abandoned: number }> {
    const [g, i] = await Promise.all([
      this.#grpc?.server.shutdown(timeoutMs) ?? { abandoned: 0 },
      this.#iroh ? this.#closeIroh(this.#iroh, timeoutMs) : { abandoned: 0 },
      this.#parkedIroh ? this.#closeIroh(this.#parkedIroh, 0) : { abandoned: 0 },
    ]);
    this.#grpc = null;
    this.#iroh = null;
    this.#parkedIroh = null;
    return { abandoned: g.abandoned + i.abandoned };
  }

  async #startGrpc(config: AgentConfig): Promise<GrpcListener> {
    const { tls } = config.grpc;
    const server = new GrpcRpcServer({
      router: this.#router,
      bind: config.grpc.bind,
      ...(tls.certFile && tls.keyFile
        ? {
          tls: {
            certFile: tls.certFile,
            keyFile: tls.keyFile,
            ...(tls.caFile ? { caFile: tls.caFile } : {}),
          },
        }
        : {}),
      allowInsecure: config.grpc.allowInsecure,
      limits: limitsOf(config),
      logger: this.#log.child("grpc"),
      ...(this.#raftIngress ? { raftIngress: this.#raftIngress } : {}),
    });
    const { port } = await server.start();
    const host = config.grpc.bind.slice(0, config.grpc.bind.lastIndexOf(":"));
    return { server, address: `${host}:${port}` };
  }

  async #startIroh(config: AgentConfig): Promise<IrohListener> {
    const { secretKey, created, path } = await loadOrCreateSecretKey(config.iroh.secretKeyFile);
    if (created) this.#log.info("created the node's secret key", { file: path });
    const endpoint = await createEndpoint({
      secretKey,
      bindAddr: config.iroh.bind,
      relayMode: config.iroh.relay,
      alpns: [config.iroh.alpn],
    });
    const server = new IrohRpcServer({
      endpoint,
      router: this.#router,
      // Read live, so a reload's new peers and operator keys apply to the next connection.
      allow: (id) => this.#allow.has(id),
      logger: this.#log.child("iroh"),
      limits: limitsOf(config),
      ...(this.#raftIngress ? { raftIngress: this.#raftIngress } : {}),
    });
    server.start();
    return { endpoint, server, config };
  }

  async #closeIroh(listener: IrohListener, timeoutMs: number): Promise<{ abandoned: number }> {
    const result = await listener.server.shutdown(timeoutMs);
    await listener.endpoint.close();
    return result;
  }

  #setAllowlist(config: AgentConfig): void {
    const next = allowlistOf(config);
    for (const id of this.#allow) if (!next.has(id)) this.#allow.delete(id);
    for (const id of next) this.#allow.add(id);
  }

  #localNode(): LocalNode {
    const services = new Map<
      string,
      { transports: readonly TransportName[]; preferred: TransportName }
    >();
    for (const [service, serving] of this.#plan) {
      // Only what actually listens: during a reload the plan may run ahead of a listener.
      const transports = serving.transports.filter((t) => this.listeners().includes(t));
      if (transports.length > 0 && service !== "raft") {
        services.set(service, {
          transports,
          preferred: transports.includes(serving.preferred) ? serving.preferred : transports[0]!,
        });
      }
    }
    return {
      nodeId: BigInt(this.#config.node.id),
      irohEndpointId: this.#iroh?.endpoint.id ?? "",
      irohAddresses: this.#iroh?.endpoint.addr().directAddresses ?? [],
      grpcAddress: this.#grpc?.address ?? "",
      services: services as LocalNode["services"],
    };
  }

  #logServing(what: string): void {
    const c = this.#config;
    const preferIroh = [...this.#plan].filter(([, s]) => s.preferred === "iroh").map(([n]) => n);
    this.#log.info(`${what} over ${this.listeners().join(" and ")}`, {
      node: c.node.id,
      mode: c.transport.mode,
      grpc: this.#grpc?.address,
      iroh_endpoint: this.#iroh?.endpoint.id,
      iroh_addresses: this.#iroh?.endpoint.addr().directAddresses.join(","),
      prefer_iroh: preferIroh.length ? preferIroh.join(",") : undefined,
      allowed_endpoints: this.#iroh ? this.#allow.size : undefined,
    });
  }
}
