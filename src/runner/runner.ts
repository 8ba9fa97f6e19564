/**
 * The dual runner: the listeners a configuration's mode asks for, and the
 * move from one configuration to the next on reload without dropping calls
 * in flight.
 *
 * Owns: {@link DualRunner}. Imports config types, `rpc/` (router, limits,
 * the Raft ingress contract), both transports, the metrics (each listener,
 * endpoint and generation of peer clients is tracked there from its start
 * until it stops), and this folder's plan, routing and dual client. Knows
 * nothing of the services it serves: the node module (src/node/) builds the
 * router and hands it over.
 *
 * Listeners: mode `grpc` runs the gRPC listener only, `iroh` the Iroh
 * endpoint only, `dual` both; every service the router has is served on
 * every listener that runs (docs/dual-runner.md). A reload is planned by
 * {@link planReload} (pure) and executed here: start what is needed, switch,
 * stop what is no longer needed; a failure before the switch undoes what
 * was started and leaves the old configuration running.
 *
 * @module
 */

import { type AgentConfig, raftTransport } from "../config/mod.ts";
import { createClient } from "../rpc/client.ts";
import { Health } from "../rpc/services.ts";
import {
  type AgentMetrics,
  grpcServerReading,
  irohEndpointReading,
  irohServerReading,
  peerClientsReading,
} from "../metrics/registry.ts";
import type { RaftMessage } from "../codec/raft.ts";
import type { CallTransport } from "../rpc/client.ts";
import type { RpcLimits } from "../rpc/limits.ts";
import type { RaftIngress } from "../rpc/raft_ingress.ts";
import type { RpcRouter } from "../rpc/router.ts";
import { GrpcRpcClient } from "../transport/grpc/client.ts";
import { GrpcRpcServer } from "../transport/grpc/server.ts";
import { createEndpoint, type IrohEndpoint } from "../transport/iroh/endpoint.ts";
import type { IrohConnection } from "../transport/iroh/connection.ts";
import { IrohRpcClient } from "../transport/iroh/rpc_client.ts";
import { IrohRpcServer } from "../transport/iroh/rpc_server.ts";
import { loadOrCreateSecretKey } from "../transport/iroh/secret_key.ts";
import type { Logger } from "../util/log.ts";
import { DualClient, type DualClientOptions, type PeerAddress } from "./dual_client.ts";
import { adaptiveRoute, fixedRoute, type RaftLink, type RaftRoute } from "./raft_outbox.ts";
import {
  type CleanupStep,
  type IrohEndpointSettings,
  irohEndpointSettingsOf,
  planReload,
  type PrepareStep,
  type ReloadPlan,
} from "./reload_plan.ts";
import { type ServingPlan, servingPlan, type TransportName, transportsOf } from "./routing.ts";

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

/** The RPC limits a config sets. */
export function limitsOf(config: AgentConfig): RpcLimits {
  return {
    maxFrameBytes: config.limits.maxFrameBytes,
    maxInflightRequests: config.limits.maxInflightRequests,
    maxConcurrentStreams: config.limits.maxConcurrentStreams,
    defaultDeadlineMs: config.limits.requestDeadlineMs,
    maxDeadlineMs: config.limits.maxRequestDeadlineMs,
    maxConnectionBufferBytes: config.limits.maxConnectionBufferBytes,
  };
}

/** What the node module gives the runner. */
export interface RunnerOptions {
  /** Every service the node serves. */
  readonly router: RpcRouter;
  /** Where Raft messages from peers go; without it they are refused. */
  readonly raftIngress?: RaftIngress;
  /** Whether an Iroh connection from this endpoint id is accepted; read per connection. */
  readonly allowConnection: (endpointId: string) => boolean;
  /** The endpoint ids a config lets connect, to report what a reload changes. */
  readonly allowlistOf: (config: AgentConfig) => ReadonlySet<string>;
  /**
   * Told of the next configuration at the switch of a reload, before the
   * runner revokes connections the new allowlist refuses.
   */
  readonly onSwitch?: (next: AgentConfig) => void;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
}

interface IrohListener {
  readonly endpoint: IrohEndpoint;
  readonly server: IrohRpcServer;
  readonly settings: IrohEndpointSettings;
  /** Stops reading its counters into the metrics, keeping what they counted. */
  readonly untrack: () => void;
}

interface GrpcListener {
  readonly server: GrpcRpcServer;
  /** `host:port` actually bound. */
  readonly address: string;
  readonly untrack: () => void;
}

/** The clients this node calls its peers with; replaced on reload. */
interface PeerClients {
  readonly dual: DualClient;
  readonly iroh: IrohRpcClient | null;
  readonly grpc: GrpcRpcClient;
  readonly untrack: () => void;
}

/**
 * The listeners of a running agent and its reloads. Created first (so the
 * services can read it), then {@link start}ed.
 */
export class DualRunner {
  #config: AgentConfig;
  #serving: ServingPlan;
  readonly #o: RunnerOptions;
  readonly #log: Logger;
  #iroh: IrohListener | null = null;
  /** A stopped Iroh listener, kept bound for a later reload to resume (see reload_plan.ts). */
  #parked: IrohListener | null = null;
  #grpc: GrpcListener | null = null;
  #stopping = false;
  #reloading: Promise<ReloadResult> | null = null;
  #peerClient: PeerClients | null = null;

  constructor(config: AgentConfig, options: RunnerOptions) {
    this.#config = config;
    this.#serving = servingPlan(config);
    this.#o = options;
    this.#log = options.logger;
  }

  /** Starts the listeners the configuration's mode asks for; on failure, none runs. */
  async start(): Promise<void> {
    const config = this.#config;
    try {
      const want = transportsOf(config.transport.mode);
      if (want.includes("grpc")) this.#grpc = await this.#startGrpc(config);
      if (want.includes("iroh")) this.#iroh = await this.#startIroh(config);
    } catch (e) {
      await this.#stopListeners(0);
      throw e;
    }
    this.#logServing("serving");
  }

  /** The configuration in force. */
  get config(): AgentConfig {
    return this.#config;
  }

  /** What the configuration in force serves on which transport. */
  get serving(): ServingPlan {
    return this.#serving;
  }

  /** True once {@link stop} was called. */
  get stopping(): boolean {
    return this.#stopping;
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

  /** The listeners serving now. */
  listeners(): TransportName[] {
    return [...(this.#grpc ? ["grpc" as const] : []), ...(this.#iroh ? ["iroh" as const] : [])];
  }

  /**
   * Moves to `next`, one reload at a time. If anything fails before the
   * switch, the old configuration keeps running and the failure is counted.
   */
  reload(next: AgentConfig): Promise<ReloadResult> {
    const run = (this.#reloading ?? Promise.resolve()).then(() => this.#reload(next));
    this.#reloading = run;
    return run;
  }

  /**
   * Counts and logs a reload that did not happen (an invalid file, a
   * refused plan, a listener that would not start).
   */
  refuseReload(reason: string): void {
    this.#o.metrics.reloadEnded(false);
    this.#log.error("reload refused; the running configuration is unchanged", { reason });
  }

  async #reload(next: AgentConfig): Promise<ReloadResult> {
    const fail = (error: string): ReloadResult => {
      this.refuseReload(error);
      return { ok: false, error };
    };
    if (this.#stopping) return fail("the node is shutting down");
    const decision = planReload(
      this.#config,
      this.#parked?.settings ?? null,
      next,
      this.#o.allowlistOf,
    );
    if (!decision.ok) return fail(decision.error);
    const { plan } = decision;
    const old = this.#config;
    const changes: string[] = [];

    // 1. Start what the next config needs; undo it all if any step fails.
    const done = { grpc: null as GrpcListener | null, iroh: null as IrohListener | null };
    let stoppedForRestart: GrpcListener | null = null;
    let resumed = false;
    try {
      for (const step of plan.prepare) {
        await this.#prepare(
          step,
          next,
          done,
          changes,
          (g) => stoppedForRestart = g,
          () => resumed = true,
        );
      }
    } catch (e) {
      await this.#undo(done, resumed, stoppedForRestart, old);
      return fail(`cannot start a listener: ${e instanceof Error ? e.message : e}`);
    }

    // 2. Switch: listeners, allowlist, plan and config take effect together.
    // What stops is out of the listeners (and of Status) from here on, while it drains.
    const oldGrpc = stoppedForRestart ? null : this.#grpc;
    const oldIroh = this.#iroh;
    const want = transportsOf(next.transport.mode);
    this.#grpc = want.includes("grpc") ? done.grpc ?? this.#grpc : null;
    if (resumed) {
      this.#iroh = this.#parked;
      this.#parked = null;
    } else {
      this.#iroh = want.includes("iroh") ? done.iroh ?? this.#iroh : null;
    }
    this.#config = next;
    this.#serving = plan.serving;
    this.#o.onSwitch?.(next);
    const revoked = this.#iroh?.server.revokeDisallowed() ?? 0;
    if (revoked > 0) changes.push(`closed ${revoked} connection(s) of endpoints no longer allowed`);
    for (const id of plan.allowlist.added) changes.push(`endpoint ${short(id)} may now connect`);
    for (const id of plan.allowlist.removed) changes.push(`endpoint ${short(id)} no longer may`);
    for (const m of plan.moves) {
      changes.push(
        `${m.service}: ${m.from.transports.join("+")} (prefer ${m.from.preferred}) → ${
          m.to.transports.join("+")
        } (prefer ${m.to.preferred})`,
      );
    }
    this.#retirePeerClient(next.limits.shutdownTimeoutMs);

    // 3. Stop what is no longer needed; its calls in flight get the shutdown timeout.
    const timeout = next.limits.shutdownTimeoutMs;
    await Promise.all(
      plan.cleanup.map((step) => this.#cleanup(step, timeout, oldGrpc, oldIroh, changes)),
    );
    this.#o.metrics.reloadEnded(true);
    this.#log.info("reloaded", { summary: plan.summary });
    this.#logServing("now serving");
    return { ok: true, changes, summary: plan.summary };
  }

  async #prepare(
    step: PrepareStep,
    next: AgentConfig,
    done: { grpc: GrpcListener | null; iroh: IrohListener | null },
    changes: string[],
    stoppedForRestart: (g: GrpcListener) => void,
    resumed: () => void,
  ): Promise<void> {
    switch (step.kind) {
      case "stop-grpc-for-restart": {
        const g = this.#grpc!;
        stoppedForRestart(g);
        this.#grpc = null;
        await this.#stopGrpc(g, this.#config.limits.shutdownTimeoutMs);
        changes.push(`grpc listener on ${g.address} stopped to apply new settings`);
        return;
      }
      case "start-grpc":
        done.grpc = await this.#startGrpc(next);
        changes.push(`grpc listener started on ${done.grpc.address}`);
        return;
      case "resume-iroh":
        this.#parked!.server.setLimits(limitsOf(next));
        this.#parked!.server.resume();
        resumed();
        changes.push("iroh listener resumed");
        return;
      case "start-iroh":
        done.iroh = await this.#startIroh(next);
        changes.push(
          `iroh listener started on ${done.iroh.endpoint.addr().directAddresses.join(",")}`,
        );
        return;
      case "update-iroh-limits":
        this.#iroh!.server.setLimits(limitsOf(next));
        changes.push("iroh limits updated for new connections");
        return;
    }
  }

  /** Undoes the prepare steps of a failed reload; the old configuration goes on. */
  async #undo(
    done: { grpc: GrpcListener | null; iroh: IrohListener | null },
    resumed: boolean,
    stoppedForRestart: GrpcListener | null,
    old: AgentConfig,
  ): Promise<void> {
    if (done.grpc) await this.#stopGrpc(done.grpc, 0);
    if (done.iroh) await this.#closeIroh(done.iroh, 0);
    if (resumed) await this.#parked!.server.shutdown(0);
    if (stoppedForRestart) {
      // The old listener is already gone; bring it back with the old settings.
      try {
        this.#grpc = await this.#startGrpc(old);
      } catch (again) {
        this.#log.error("cannot restore the old gRPC listener", { error: again });
      }
    }
  }

  async #cleanup(
    step: CleanupStep,
    timeoutMs: number,
    oldGrpc: GrpcListener | null,
    oldIroh: IrohListener | null,
    changes: string[],
  ): Promise<void> {
    switch (step.kind) {
      case "stop-grpc": {
        if (!oldGrpc) return;
        await this.#stopGrpc(oldGrpc, timeoutMs);
        changes.push(`grpc listener on ${oldGrpc.address} stopped`);
        return;
      }
      case "park-iroh": {
        const listener = oldIroh!;
        this.#parked = listener;
        await listener.server.shutdown(timeoutMs, step.reason);
        changes.push(
          "iroh listener parked: its UDP port stays bound, refusing connections, until the process exits",
        );
        return;
      }
      case "close-iroh":
        if (oldIroh) await this.#closeIroh(oldIroh, timeoutMs);
        changes.push("old iroh endpoint closed");
        return;
      case "close-parked-iroh": {
        const parked = this.#parked;
        this.#parked = null;
        if (parked) await this.#closeIroh(parked, 0);
        changes.push("parked iroh endpoint closed");
        return;
      }
    }
  }

  /**
   * The client this node calls its peers with: over the transports of its
   * mode, preferring per service as its config says, falling back as
   * `fallback_to_grpc` allows (each retry counted in
   * `blixard_rpc_fallbacks_total`). Rebuilt after a reload.
   */
  peers(): DualClient {
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
      const metrics = this.#o.metrics;
      const iroh = endpoint
        ? new IrohRpcClient({
          endpoint,
          limits: limitsOf(config),
          failFastWhileDown: true,
          onConnected: (ms) => metrics.connected("iroh", ms / 1000),
        })
        : null;
      const dual = new DualClient(this.#peerOptions(iroh, grpc));
      const untrack = metrics.transports.track(() =>
        peerClientsReading({
          iroh: iroh && { stats: iroh.stats, paths: () => pathsOf(iroh.connections()) },
          grpc,
        })
      );
      this.#peerClient = { dual, iroh, grpc, untrack };
    }
    return this.#peerClient.dual;
  }

  /**
   * The peer at `address` has just sent this node a message, so it is up: a
   * gRPC channel to it that is waiting out a reconnect backoff (a peer that
   * restarted) connects now instead (docs/dual-runner.md).
   */
  heardFrom(address: PeerAddress): void {
    if (address.grpc) this.#peerClient?.grpc.heardFrom(address.grpc);
  }

  /**
   * How Raft messages reach the peer at `address` under the configuration in
   * force: over gRPC or Iroh as `raft_transport` (or the mode) says, or the
   * adaptive choice between the two; null when this node cannot reach it
   * (no address for a transport it may use).
   */
  raftRoute(address: PeerAddress): RaftRoute | null {
    const links = this.raftLinks(address);
    const want = raftTransport(this.#config);
    if (want === "adaptive") {
      if (links.length === 2) return adaptiveRoute(links);
      return links[0] ? fixedRoute(links[0]) : null;
    }
    const link = links.find((l) => l.transport === want);
    return link ? fixedRoute(link) : null;
  }

  /** The links to `address` over each transport this node may call over now. */
  raftLinks(address: PeerAddress): RaftLink[] {
    this.peers();
    const clients = this.#peerClient!;
    const callable = transportsOf(this.#config.transport.mode);
    const links: RaftLink[] = [];
    if (callable.includes("grpc") && address.grpc) {
      const channel = clients.grpc.peer(address.grpc);
      links.push(raftLink("grpc", channel));
    }
    if (callable.includes("iroh") && address.iroh && clients.iroh) {
      links.push(raftLink("iroh", clients.iroh.peer(address.iroh)));
    }
    return links;
  }

  #peerOptions(iroh: IrohRpcClient | null, grpc: GrpcRpcClient): DualClientOptions {
    const config = this.#config;
    const callable = transportsOf(config.transport.mode);
    const serving = this.#serving;
    return {
      policy: (service) => ({ transports: callable, preferred: serving.get(service)!.preferred }),
      fallbackToGrpc: config.transport.migration.fallbackToGrpc,
      transports: {
        ...(iroh && callable.includes("iroh")
          ? { iroh: (p: PeerAddress) => iroh.peer(p.iroh!) }
          : {}),
        ...(callable.includes("grpc") ? { grpc: (p: PeerAddress) => grpc.peer(p.grpc!) } : {}),
      },
      onRetry: (service, from, to) => this.#o.metrics.rpcFallbacks.inc({ service, from, to }),
      onCall: (method, transport, code, seconds) =>
        this.#o.metrics.clientCall(method, transport, code, seconds),
    };
  }

  /**
   * Peer calls follow the new policy and listeners from the next call on;
   * calls already made on the old client get the shutdown timeout to finish.
   */
  #retirePeerClient(graceMs: number): void {
    const old = this.#peerClient;
    this.#peerClient = null;
    if (!old) return;
    const timer = setTimeout(() => {
      old.untrack();
      old.iroh?.close();
      old.grpc.close();
    }, graceMs);
    Deno.unrefTimer(timer as unknown as number);
  }

  /** Graceful stop: calls in flight get `limits.shutdown_timeout_ms`. */
  async stop(): Promise<{ abandoned: number }> {
    this.#stopping = true;
    await this.#reloading?.catch(() => {});
    if (this.#peerClient) {
      this.#peerClient.untrack();
      this.#peerClient.iroh?.close();
      this.#peerClient.grpc.close();
      this.#peerClient = null;
    }
    return await this.#stopListeners(this.#config.limits.shutdownTimeoutMs);
  }

  async #stopListeners(timeoutMs: number): Promise<{ abandoned: number }> {
    const [g, i] = await Promise.all([
      this.#grpc ? this.#stopGrpc(this.#grpc, timeoutMs) : { abandoned: 0 },
      this.#iroh ? this.#closeIroh(this.#iroh, timeoutMs) : { abandoned: 0 },
      this.#parked ? this.#closeIroh(this.#parked, 0) : { abandoned: 0 },
    ]);
    this.#grpc = null;
    this.#iroh = null;
    this.#parked = null;
    return { abandoned: g.abandoned + i.abandoned };
  }

  async #startGrpc(config: AgentConfig): Promise<GrpcListener> {
    const { tls } = config.grpc;
    const ingress = this.#o.raftIngress;
    const server = new GrpcRpcServer({
      router: this.#o.router,
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
      ...(ingress ? { raftIngress: ingress } : {}),
      callObserver: this.#o.metrics.serverCalls("grpc"),
    });
    const { port } = await server.start();
    const host = config.grpc.bind.slice(0, config.grpc.bind.lastIndexOf(":"));
    const untrack = this.#o.metrics.transports.track(() => grpcServerReading(server));
    return { server, address: `${host}:${port}`, untrack };
  }

  /** Stops a gRPC listener (its calls get `timeoutMs`) and keeps what it counted. */
  async #stopGrpc(listener: GrpcListener, timeoutMs: number): Promise<{ abandoned: number }> {
    try {
      return await listener.server.shutdown(timeoutMs);
    } finally {
      listener.untrack();
    }
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
    for (const warning of endpoint.warnings) {
      this.#log.warn("iroh endpoint bound with a warning", { bind: config.iroh.bind, warning });
    }
    const ingress = this.#o.raftIngress;
    const server = new IrohRpcServer({
      endpoint,
      router: this.#o.router,
      // Read live, so a reload's new peers and operator keys apply to the next connection.
      allow: this.#o.allowConnection,
      logger: this.#log.child("iroh"),
      limits: limitsOf(config),
      ...(ingress ? { raftIngress: ingress } : {}),
      callObserver: this.#o.metrics.serverCalls("iroh"),
      // A peer that dials us anew has likely restarted: our connection to it may be dead.
      onPeerConnection: (id) => this.#peerClient?.iroh?.peerConnected(id),
    });
    server.start();
    const untrackServer = this.#o.metrics.transports.track(() =>
      irohServerReading({
        stats: server.stats,
        inflightCount: server.inflightCount,
        paths: () => pathsOf(server.connections()),
      })
    );
    const untrackEndpoint = this.#o.metrics.transports.track(() =>
      irohEndpointReading(endpoint.raw.stats())
    );
    return {
      endpoint,
      server,
      settings: irohEndpointSettingsOf(config),
      untrack: () => {
        untrackServer();
        untrackEndpoint();
      },
    };
  }

  async #closeIroh(listener: IrohListener, timeoutMs: number): Promise<{ abandoned: number }> {
    const result = await listener.server.shutdown(timeoutMs);
    // Read while the endpoint is open: the binding's counters go with it.
    listener.untrack();
    await listener.endpoint.close();
    return result;
  }

  #logServing(what: string): void {
    const c = this.#config;
    const preferIroh = [...this.#serving].filter(([, s]) => s.preferred === "iroh").map(([n]) => n);
    this.#log.info(`${what} over ${this.listeners().join(" and ")}`, {
      node: c.node.id,
      mode: c.transport.mode,
      grpc: this.#grpc?.address,
      iroh_endpoint: this.#iroh?.endpoint.id,
      iroh_addresses: this.#iroh?.endpoint.addr().directAddresses.join(","),
      prefer_iroh: preferIroh.length ? preferIroh.join(",") : undefined,
    });
  }
}

/** A Raft link over one transport's channel: sends, and probes with Health.Ping. */
function raftLink(
  transport: TransportName,
  channel: { sendRaft(m: RaftMessage): Promise<void> } & CallTransport,
): RaftLink {
  const health = createClient(Health, channel);
  return {
    transport,
    sendRaft: (m) => channel.sendRaft(m),
    probe: async (bytes) => {
      await health.ping({ payload: new Uint8Array(bytes) }, { deadlineMs: 5_000 });
    },
  };
}

/** The path each connection uses now. */
function pathsOf(connections: readonly IrohConnection[]): ("direct" | "relay" | "none")[] {
  return connections.map((c) => c.selectedPath());
}

function short(id: string): string {
  return id.length > 10 ? `${id.slice(0, 10)}…` : id;
}

export type { ReloadPlan };
