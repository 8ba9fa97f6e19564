/**
 * The agent: the composition root that turns one configuration into a
 * running node. It builds the metrics, the principals, the consensus inbox,
 * the services (each handed the read models it answers from), and the dual
 * runner that serves them; a reload goes through here so the principals
 * and the runner switch together.
 *
 * Owns: {@link Agent}. Imports config, metrics, services, rpc, the runner,
 * and this folder's principals and inbox; the command line drives it.
 *
 * @module
 */

import type { AgentConfig } from "../config/mod.ts";
import { AgentMetrics } from "../metrics/registry.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import { RaftRole } from "../rpc/gen/blixard/v1/status_pb.ts";
import { RpcRouter } from "../rpc/router.ts";
import { Health, Status } from "../rpc/services.ts";
import type { DualPeer, PeerAddress } from "../runner/dual_client.ts";
import { RaftOutbox } from "../runner/raft_outbox.ts";
import { DualRunner, type ReloadResult } from "../runner/runner.ts";
import { healthService } from "../services/health.ts";
import { type KnownPeer, type MembershipView, statusService } from "../services/status.ts";
import { parseTicket, toTicket } from "../transport/iroh/endpoint.ts";
import type { Logger } from "../util/log.ts";
import { AGENT_VERSION } from "../version.ts";
import { namesToResolve, type Principals, principalsOf } from "./principals.ts";
import { RaftInbox } from "./raft_inbox.ts";

export type { ReloadResult };

/** Options of {@link Agent.start}. */
export interface AgentOptions {
  /** A registry of its own by default, so agents in one process do not share counters. */
  readonly metrics?: AgentMetrics;
}

/**
 * The members this node knows before consensus runs: itself and its
 * configured peers, no leader, term 0. Read per call, so a reload shows at once.
 */
class ConfiguredMembership implements MembershipView {
  readonly nodeId: bigint;
  readonly #config: () => AgentConfig;

  constructor(config: () => AgentConfig) {
    this.#config = config;
    this.nodeId = BigInt(config().node.id);
  }

  peers(): KnownPeer[] {
    return this.#config().cluster.peers.map((p) => {
      const fromTicket = p.ticket ? parseTicket(p.ticket) : undefined;
      return {
        nodeId: BigInt(p.id),
        endpointId: p.endpointId ?? fromTicket?.id ?? "",
        addresses: p.addresses.length > 0 ? p.addresses : fromTicket?.directAddresses ?? [],
        grpcAddress: p.grpcAddress ?? "",
      };
    });
  }

  leaderId(): bigint {
    return 0n;
  }

  term(): bigint {
    return 0n;
  }

  raftStatus() {
    return {
      nodeId: this.nodeId,
      term: 0n,
      commitIndex: 0n,
      appliedIndex: 0n,
      role: RaftRole.UNSPECIFIED,
      leaderId: 0n,
      peers: [],
    };
  }
}

/** A running agent. */
export class Agent {
  readonly metrics: AgentMetrics;
  /** Consensus messages from peers, bounded; nothing consumes them until Raft runs. */
  readonly inbox: RaftInbox;
  /** Consensus messages to peers: one bounded outbox per peer, over its route. */
  readonly outbox: RaftOutbox;
  /** The listeners, their addresses, the serving plan. */
  readonly runner: DualRunner;
  readonly #log: Logger;
  readonly #membership: MembershipView;
  #principals: Principals;
  /** Peers' gRPC host names resolved to IPs, refreshed at start and before each reload. */
  #resolved: ReadonlyMap<string, readonly string[]>;
  #stopping = false;

  private constructor(
    config: AgentConfig,
    log: Logger,
    metrics: AgentMetrics,
    resolved: ReadonlyMap<string, readonly string[]>,
  ) {
    this.#log = log;
    this.metrics = metrics;
    this.#resolved = resolved;
    this.#principals = principalsOf(config, resolved);
    this.inbox = new RaftInbox({ principals: () => this.#principals, logger: log.child("raft") });
    this.outbox = new RaftOutbox({
      routeFor: (id) => {
        const address = this.#peerAddress(id);
        return address ? this.runner.raftRoute(address) : null;
      },
    });
    const router = new RpcRouter();
    this.runner = new DualRunner(config, {
      router,
      raftIngress: this.inbox,
      allowConnection: (id) => this.#principals.allowsConnection(id),
      allowlistOf: (c) => principalsOf(c).allowedEndpoints(),
      onSwitch: (next) => this.#principals = principalsOf(next, this.#resolved),
      logger: log,
      metrics,
    });
    this.#membership = new ConfiguredMembership(() => this.runner.config);
    router
      .register(
        Health,
        healthService({
          nodeId: BigInt(config.node.id),
          agentVersion: AGENT_VERSION,
          startedAtMs: Date.now(),
          readiness: () => this.#readiness(),
        }),
      )
      .register(
        Status,
        statusService({
          listeners: this.runner,
          membership: this.#membership,
          implements: (service) => router.serves(service),
        }),
      );
  }

  /** Starts the agent described by `config`. */
  static async start(config: AgentConfig, log: Logger, options: AgentOptions = {}): Promise<Agent> {
    await Deno.mkdir(config.node.dataDir, { recursive: true, mode: 0o700 });
    const resolved = await resolvePeerNames(config, log);
    const agent = new Agent(config, log, options.metrics ?? new AgentMetrics(), resolved);
    await agent.runner.start();
    return agent;
  }

  /** The configuration in force. */
  get config(): AgentConfig {
    return this.runner.config;
  }

  /** Moves the running node to `next` (see {@link DualRunner.reload}). */
  async reload(next: AgentConfig): Promise<ReloadResult> {
    this.#resolved = await resolvePeerNames(next, this.#log);
    const result = await this.runner.reload(next);
    // Raft follows the new transports and peers from the next message on.
    if (result.ok) this.outbox.rerouteAll();
    return result;
  }

  /** Counts and logs a reload that did not happen (an invalid file). */
  refuseReload(reason: string): void {
    this.runner.refuseReload(reason);
  }

  /**
   * The client of peer `nodeId` from this node's `[[cluster.peers]]`, over
   * the transports the dual runner's rules choose.
   */
  peer(nodeId: number): DualPeer {
    const address = this.#peerAddress(nodeId);
    if (!address) {
      throw new RpcError(
        Code.NOT_FOUND,
        `node ${nodeId} is not among this node's [[cluster.peers]]`,
      );
    }
    return this.runner.peers().peer(address);
  }

  /** How to reach peer `nodeId`, from the configuration. */
  #peerAddress(nodeId: number): PeerAddress | undefined {
    const peer = this.config.cluster.peers.find((p) => p.id === nodeId);
    if (!peer) return undefined;
    const iroh = peer.ticket ??
      (peer.endpointId
        ? toTicket({ id: peer.endpointId, directAddresses: peer.addresses })
        : undefined);
    return {
      nodeId: BigInt(nodeId),
      ...(iroh ? { iroh } : {}),
      ...(peer.grpcAddress ? { grpc: peer.grpcAddress } : {}),
    };
  }

  /** Graceful stop: calls in flight get `limits.shutdown_timeout_ms`. */
  async stop(): Promise<{ abandoned: number }> {
    this.#stopping = true;
    this.outbox.close();
    return await this.runner.stop();
  }

  /**
   * Health's readiness: SERVING means the node serves calls and knows a
   * leader (proto/blixard/v1/health.proto). Without consensus there is none.
   */
  #readiness(): { ready: boolean; detail: string } {
    if (this.#stopping) return { ready: false, detail: "shutting down" };
    if (this.#membership.leaderId() === 0n) {
      return { ready: false, detail: "no leader known: this build runs no consensus yet" };
    }
    return { ready: true, detail: "" };
  }
}

/**
 * The IP addresses of peers' gRPC host names, for recognising plaintext
 * peers by address. A name that does not resolve is logged and matches no
 * caller until the next reload.
 */
async function resolvePeerNames(
  config: AgentConfig,
  log: Logger,
): Promise<Map<string, string[]>> {
  const resolved = new Map<string, string[]>();
  await Promise.all(
    namesToResolve(config).map(async (name) => {
      const ips: string[] = [];
      for (const type of ["A", "AAAA"] as const) {
        try {
          ips.push(...await Deno.resolveDns(name, type));
        } catch {
          // One family missing is normal; both is logged below.
        }
      }
      if (ips.length === 0) log.warn("cannot resolve a peer's gRPC host", { host: name });
      resolved.set(name, ips);
    }),
  );
  return resolved;
}
