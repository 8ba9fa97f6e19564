/**
 * The agent: the composition root that turns one configuration into a
 * running node. It builds the metrics and their HTTP endpoint, the
 * principals, the consensus inbox and outbox, consensus itself, the services
 * (each handed the read models and ports it answers from), and the dual
 * runner that serves them. A reload goes through here so the principals, the
 * runner, the Raft routes and the metrics endpoint switch together; a
 * membership change learned through Raft updates the principals and the
 * routes without a config edit.
 *
 * Owns: {@link Agent}. Imports config, metrics, services, rpc, the runner,
 * and this folder's principals, inbox, consensus, peer book, announcer,
 * readiness and metric sources; the command line drives it.
 *
 * @module
 */

import type { AgentConfig } from "../config/mod.ts";
import { AgentMetrics } from "../metrics/registry.ts";
import { MetricsEndpoint } from "../metrics/server.ts";
import { createClient } from "../rpc/client.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import { RpcRouter } from "../rpc/router.ts";
import {
  type Client,
  Cluster,
  Health,
  Metadata,
  Monitoring,
  type PeerInfo,
  type ServiceInfo,
  Status,
  Vm,
} from "../rpc/services.ts";
import type { DualPeer } from "../runner/dual_client.ts";
import { RaftOutbox } from "../runner/raft_outbox.ts";
import { DualRunner, type ReloadResult } from "../runner/runner.ts";
import { clusterService } from "../services/cluster.ts";
import type { ConsensusPort, LeaderClients } from "../services/consensus_port.ts";
import { healthService } from "../services/health.ts";
import { metadataService } from "../services/metadata.ts";
import { monitoringService } from "../services/monitoring.ts";
import { vmService } from "../services/vm.ts";
import { type KnownPeer, type MembershipView, statusService } from "../services/status.ts";
import type { MemberRecord } from "../state/cluster_state.ts";
import type { Logger } from "../util/log.ts";
import { AGENT_VERSION } from "../version.ts";
import type { RaftDriver } from "../consensus/driver.ts";
import { Announcer, dialable, type OwnRecord } from "./announce.ts";
import { Consensus } from "./consensus.ts";
import { guardChanges } from "./guard.ts";
import { namesToResolve, type Principals, principalsOf } from "./principals.ts";
import { metricSources } from "./metric_sources.ts";
import { PeerBook } from "./peers.ts";
import { RaftInbox } from "./raft_inbox.ts";
import { readinessChecks, StorageProbe } from "./readiness.ts";
import { transportsOf } from "../runner/routing.ts";
import { VmNode } from "./vms.ts";

export type { ReloadResult };

/**
 * How often a peer heard from may nudge this node's channels to it, ms (see
 * `#heardFrom`). It bounds the cost of a peer that reaches us while we cannot
 * reach it (a TLS mismatch, a firewall): one connection attempt a second.
 */
const NUDGE_EVERY_MS = 1_000;

/** Options of {@link Agent.start}. */
export interface AgentOptions {
  /** A registry of its own by default, so agents in one process do not share counters. */
  readonly metrics?: AgentMetrics;
  /** Told once if the node must stop (storage failed: fail-stop); the process should exit. */
  readonly onFatal?: (error: Error) => void;
}

/** A running agent. */
export class Agent {
  readonly metrics: AgentMetrics;
  /** Consensus messages from peers, bounded. */
  readonly inbox: RaftInbox;
  /** Consensus messages to peers: one bounded outbox per peer, over its route. */
  readonly outbox: RaftOutbox;
  /** The listeners, their addresses, the serving plan. */
  readonly runner: DualRunner;
  /** `/metrics`, `/healthz`, `/readyz` on `[metrics] bind`. */
  readonly metricsEndpoint: MetricsEndpoint;
  readonly #storageProbe: StorageProbe;
  readonly #log: Logger;
  readonly #onFatal: ((error: Error) => void) | undefined;
  #consensus: Consensus | null = null;
  #reloading: Promise<unknown> = Promise.resolve();
  #vms: VmNode | null = null;
  readonly #consensusPort: ConsensusPort;
  #principals: Principals;
  /** Peers' gRPC host names resolved to IPs, refreshed at start and before each reload. */
  #resolved: ReadonlyMap<string, readonly string[]>;
  /** How to reach the other nodes: member records first, then the config. */
  readonly #peers: PeerBook;
  #stopping = false;
  /** Keeps this node's own record in the cluster state current. */
  readonly #announcer: Announcer;
  /** When each peer last got its channels nudged by {@link #heardFrom} (`Date.now()` ms). */
  readonly #nudgedMs = new Map<number, number>();

  private constructor(
    config: AgentConfig,
    log: Logger,
    metrics: AgentMetrics,
    resolved: ReadonlyMap<string, readonly string[]>,
    onFatal: ((error: Error) => void) | undefined,
  ) {
    this.#log = log;
    this.metrics = metrics;
    this.#onFatal = onFatal;
    this.#resolved = resolved;
    this.#principals = principalsOf(config, resolved);
    this.#peers = new PeerBook(() => this.config);
    this.inbox = new RaftInbox({
      principals: () => this.#principals,
      logger: log.child("raft"),
      onHeard: (id) => this.#heardFrom(id),
    });
    this.outbox = new RaftOutbox({
      routeFor: (id) => {
        const address = this.#peers.address(id);
        return address ? this.runner.raftRoute(address) : null;
      },
      // The core treats the peer as unreachable for now and probes it again later.
      onDrop: (peer) => this.#consensus?.driver.reportUnreachable(peer),
    });
    const router = new RpcRouter();
    this.runner = new DualRunner(config, {
      router,
      raftIngress: this.inbox,
      allowConnection: (id) => this.#principals.allowsConnection(id),
      allowlistOf: (c) =>
        principalsOf(c, this.#resolved, this.#peers.memberAddresses()).allowedEndpoints(),
      onSwitch: (next) =>
        this.#principals = principalsOf(next, this.#resolved, this.#peers.memberAddresses()),
      logger: log,
      metrics,
    });
    this.#storageProbe = new StorageProbe({ dir: config.node.dataDir });
    metrics.setSources(metricSources({
      nodeId: config.node.id,
      inbox: this.inbox,
      outbox: this.outbox,
      driver: () => this.#consensus?.driver ?? null,
      listeners: () => this.runner.listeners(),
      ready: () => this.readiness().every((c) => c.ok),
    }));
    this.metricsEndpoint = new MetricsEndpoint({
      metrics: async () => ({ text: await metrics.text(), contentType: metrics.contentType }),
      readiness: () => this.readiness(),
    }, log.child("metrics"));
    const membership = this.#membershipView();
    const port = this.#consensusPort = this.#port();
    const leaders: LeaderClients = (service, nodeId) => this.#clientOf(service, nodeId);
    const cluster = clusterService(port, leaders);
    this.#announcer = new Announcer({
      nodeId: config.node.id,
      own: () => this.#ownRecord(),
      recorded: () => this.#peers.record(config.node.id),
      isMember: () => {
        const status = this.#consensus?.driver.status();
        return status ? [...status.voters, ...status.learners].includes(config.node.id) : null;
      },
      cluster,
      logger: log,
    });
    const authorize = (peer: PeerInfo, what: string) =>
      this.#principals.authorizeChange(peer, what);
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
          membership,
          implements: (service) => router.serves(service),
        }),
      )
      .register(
        Metadata,
        guardChanges("metadata", metadataService(port, leaders), [
          "put",
          "delete",
          "compareAndSet",
        ], authorize),
      )
      .register(
        Cluster,
        guardChanges("cluster", cluster, ["join", "leave", "transferLeadership"], authorize),
      )
      .register(
        Vm,
        guardChanges(
          "vm",
          vmService({
            port,
            leaders,
            vms: () => this.#vms ?? undefined,
            state: () => this.#consensus?.driver.state,
            authorizeNode: (peer, nodeId) =>
              this.#principals.authorizeNode(peer, nodeId, "report VM states"),
          }),
          ["create", "start", "stop", "delete"],
          authorize,
        ),
      )
      .register(
        Monitoring,
        monitoringService({
          port,
          nodes: leaders,
          metrics: async () => ({ text: await metrics.text(), contentType: metrics.contentType }),
        }),
      );
  }

  /** Starts the agent described by `config`: listeners first, then consensus. */
  static async start(config: AgentConfig, log: Logger, options: AgentOptions = {}): Promise<Agent> {
    await Deno.mkdir(config.node.dataDir, { recursive: true, mode: 0o700 });
    const resolved = await resolvePeerNames(config, log);
    const agent = new Agent(
      config,
      log,
      options.metrics ?? new AgentMetrics(),
      resolved,
      options.onFatal,
    );
    // First: a port in use stops the start before anything else runs, and
    // /readyz says what is missing while the rest comes up.
    agent.metricsEndpoint.start(config.metrics);
    agent.#storageProbe.start();
    try {
      await agent.runner.start();
    } catch (e) {
      await agent.#stopMonitoring();
      throw e;
    }
    try {
      agent.#consensus = Consensus.open({
        config,
        inbox: agent.inbox,
        outbox: agent.outbox,
        logger: log.child("raft"),
        onMembership: (members) => agent.#onMembership(members),
        onFailure: (error) => agent.#onFatal?.(error),
        observer: agent.metrics.raft,
      });
    } catch (e) {
      await agent.runner.stop();
      await agent.#stopMonitoring();
      throw e;
    }
    try {
      agent.#vms = await VmNode.open({
        config,
        port: agent.#consensusPort,
        state: () => agent.#consensus?.driver.state,
        sendReports: (leader, request) =>
          agent.#clientOf(Vm, leader)?.reportStatus(request, { deadlineMs: 5_000 }) ?? null,
        lastHeardMs: (id) => agent.inbox.lastHeardMs(id),
        logger: log,
      });
    } catch (e) {
      agent.#consensus.close();
      await agent.runner.stop();
      await agent.#stopMonitoring();
      throw e;
    }
    agent.#vms.start();
    agent.#onMembership(agent.#consensus.members());
    return agent;
  }

  /** The configuration in force. */
  get config(): AgentConfig {
    return this.runner.config;
  }

  /** Consensus on this node. */
  get consensus(): Consensus {
    return this.#consensus!;
  }

  /**
   * Moves the running node to `next` (see {@link DualRunner.reload}), and the
   * metrics endpoint with it: a new address is bound first, and a reload
   * whose address cannot be bound is refused. One reload at a time.
   */
  reload(next: AgentConfig): Promise<ReloadResult> {
    const run = this.#reloading.then(() => this.#reload(next));
    this.#reloading = run.catch(() => {});
    return run;
  }

  async #reload(next: AgentConfig): Promise<ReloadResult> {
    this.#resolved = await resolvePeerNames(next, this.#log);
    let metrics;
    try {
      metrics = await this.metricsEndpoint.prepare(next.metrics);
    } catch (e) {
      const error = `cannot move the metrics endpoint: ${e instanceof Error ? e.message : e}`;
      this.runner.refuseReload(error);
      return { ok: false, error };
    }
    const result = await this.runner.reload(next);
    if (!result.ok) {
      await metrics.abort();
      return result;
    }
    await metrics.commit();
    // Raft follows the new transports and peers from the next message on.
    this.outbox.rerouteAll();
    this.#announcer.announce();
    if (metrics.change === null) return result;
    return {
      ok: true,
      changes: [...result.changes, metrics.change],
      summary: result.summary === "nothing moved"
        ? metrics.change
        : `${result.summary}; ${metrics.change}`,
    };
  }

  /** Counts and logs a reload that did not happen (an invalid file). */
  refuseReload(reason: string): void {
    this.runner.refuseReload(reason);
  }

  /**
   * The client of peer `nodeId` (a cluster member, or a configured peer),
   * over the transports the dual runner's rules choose.
   */
  peer(nodeId: number): DualPeer {
    const address = this.#peers.address(nodeId);
    if (!address) {
      throw new RpcError(
        Code.NOT_FOUND,
        `node ${nodeId} is neither a cluster member with an address nor among this node's [[cluster.peers]]`,
      );
    }
    return this.runner.peers().peer(address);
  }

  /**
   * Graceful stop: a leader first hands leadership to the most up-to-date
   * voter (so the cluster need not wait out an election timeout), then calls
   * in flight get `limits.shutdown_timeout_ms`; consensus stops last.
   */
  async stop(): Promise<{ abandoned: number }> {
    this.#stopping = true;
    this.#announcer.stop();
    const { raft, limits } = this.config;
    await this.#consensus?.handOver(
      Math.min(2 * raft.electionTicks * raft.tickMs, limits.shutdownTimeoutMs / 2),
    );
    const result = await this.runner.stop();
    await this.#vms?.close(this.config.limits.shutdownTimeoutMs);
    this.outbox.close();
    this.#consensus?.close();
    await this.#stopMonitoring();
    return result;
  }

  /**
   * `/readyz`'s checks, now: the listeners of the mode serve, this node is a
   * member of a cluster, it knows a leader, and its storage takes writes.
   */
  readiness(): ReturnType<typeof readinessChecks> {
    const c = this.#consensus;
    let status: ReturnType<RaftDriver["status"]> | null = null;
    try {
      status = c?.driver.status() ?? null;
    } catch {
      // Storage closed (stopped) or failed: the driver's own flag says which.
    }
    const failed = c?.driver.failed ?? null;
    return readinessChecks({
      stopping: this.#stopping,
      listeners: { want: transportsOf(this.config.transport.mode), up: this.runner.listeners() },
      consensus: c && (status || failed)
        ? {
          id: this.config.node.id,
          leader: c.leader,
          voters: status?.voters ?? [],
          learners: status?.learners ?? [],
          failed,
        }
        : null,
      storage: this.#storageProbe.result(),
    });
  }

  async #stopMonitoring(): Promise<void> {
    await this.#storageProbe.stop();
    await this.metricsEndpoint.close();
  }

  /** A typed client of node `nodeId`'s services; null when no address of it is known. */
  #clientOf<S extends ServiceInfo>(service: S, nodeId: number): Client<S["desc"]> | null {
    const address = this.#peers.address(nodeId);
    return address ? createClient(service, this.runner.peers().peer(address)) : null;
  }

  /** Membership learned through Raft: new peers are allowed and routed to, removed ones not. */
  /**
   * A Raft message came from node `id`: it is up, so a channel to it that
   * waits out a reconnect backoff connects now. At most every
   * {@link NUDGE_EVERY_MS} per peer, off the per-message path.
   */
  #heardFrom(id: number): void {
    const now = Date.now();
    if (now - (this.#nudgedMs.get(id) ?? -Infinity) < NUDGE_EVERY_MS) return;
    this.#nudgedMs.set(id, now);
    const address = this.#peers.address(id);
    if (address) this.runner.heardFrom(address);
  }

  #onMembership(members: readonly MemberRecord[]): void {
    this.#peers.update(members);
    this.#principals = principalsOf(this.config, this.#resolved, this.#peers.memberAddresses());
    this.outbox.rerouteAll();
    this.#announcer.announce();
  }

  /** This node's record as its listeners and VM backends are now. */
  #ownRecord(): OwnRecord {
    const endpoint = this.runner.irohEndpoint;
    const capacity = this.#vms?.capacity;
    return {
      vcpus: capacity?.vcpus ?? 0,
      memoryMib: BigInt(capacity?.memoryMib ?? 0),
      backends: capacity?.backends ?? [],
      ...(endpoint
        ? {
          iroh: {
            endpointId: endpoint.id,
            directAddresses: [...endpoint.addr().directAddresses].sort(),
          },
        }
        : {}),
      grpcAddress: dialable(this.runner.grpcAddress()),
    };
  }

  /** Status's view of the membership: Raft's voters and learners, with what is known of each. */
  #membershipView(): MembershipView {
    const nodeId = BigInt(this.config.node.id);
    return {
      nodeId,
      learner: () =>
        this.#consensus?.driver.status().learners.includes(this.config.node.id) ?? false,
      peers: (): KnownPeer[] => {
        const c = this.#consensus;
        if (!c) return [];
        const s = c.driver.status();
        const ids = [...s.voters, ...s.learners].filter((id) => id !== s.id);
        return ids.map((id) => ({ ...this.#peers.known(id), learner: s.learners.includes(id) }));
      },
      leaderId: () => BigInt(this.#consensus?.leader ?? 0),
      term: () => BigInt(this.#consensus?.driver.status().term ?? 0),
      raftStatus: () => this.#consensus?.raftStatus() ?? { nodeId },
    };
  }

  /** What the services need of consensus, read through the driver. */
  #port(): ConsensusPort {
    const driver = () => {
      const c = this.#consensus;
      if (!c) throw new RpcError(Code.UNAVAILABLE, "consensus is not running on this node yet");
      return c.driver;
    };
    return {
      nodeId: this.config.node.id,
      leader: () => this.#consensus?.leader ?? 0,
      propose: (command) => this.metrics.raft.timeProposal(() => driver().propose(command)),
      read: (fn) => driver().read(fn),
      changeMembership: (change) => driver().changeMembership(change),
      transferLeadership: (to) => driver().transferLeadership(to),
      status: () => driver().status(),
      members: () => driver().state.members(),
    };
  }

  /**
   * Health's readiness: SERVING means the node serves calls, its storage
   * works, and it knows a leader (proto/blixard/v1/health.proto).
   */
  #readiness(): { ready: boolean; detail: string } {
    if (this.#stopping) return { ready: false, detail: "shutting down" };
    const c = this.#consensus;
    if (!c) return { ready: false, detail: "consensus is starting" };
    if (c.driver.failed) {
      return { ready: false, detail: `storage failed: ${c.driver.failed.message}` };
    }
    if (c.leader === 0) {
      return {
        ready: false,
        detail: "no leader known: an election is under way, or no quorum is reachable",
      };
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
