/**
 * The agent's Prometheus metrics, on a registry of its own so tests and
 * several agents in one process do not share counters. docs/metrics.md lists
 * every family; monitoring/ may refer to nothing else.
 *
 * Owns: {@link AgentMetrics} and the family names, {@link MetricSources}
 * (what the node shows at scrape time), the readings of the transports'
 * counters ({@link grpcServerReading} and the rest), {@link RaftMetrics}.
 * Imports `prom-client`, `src/names.ts`, the codec's Raft message kinds and
 * the `rpc/` types and status names; nothing of the transports, the runner
 * or the node, which hand it plain numbers.
 *
 * Three kinds of family:
 * - events counted as they happen (a call answered, a reload, a leader seen),
 *   where nothing else counts them;
 * - counters the transports already keep (`stats` objects), read at scrape
 *   time through {@link TrackedSources}, never counted a second time;
 * - levels read at scrape time from the node ({@link MetricSources}): Raft's
 *   term and indexes, queue depths, VMs by state.
 *
 * Labels are bounded: service and method come from the service
 * declarations (an unknown method is `"unknown"`), codes from the status
 * codes, transports, classes, reasons and states from fixed lists. No label
 * ever holds an endpoint id, an address or a request id.
 *
 * @module
 */

import client from "prom-client";
import { RaftMessageKind } from "../codec/raft.ts";
import type { TransportName } from "../names.ts";
import type { CallObserver } from "../rpc/call.ts";
import { type Code, codeName } from "../rpc/errors.ts";
import type { MethodInfo } from "../rpc/services.ts";
import { AGENT_VERSION } from "../version.ts";
import { type Reading, TrackedSources } from "./sources.ts";

/** A Raft message class, as labels name it (frame priorities 0 to 3). */
export const RAFT_CLASSES = ["election", "heartbeat", "log_append", "snapshot"] as const;
/** Why the outbox dropped a message (runner/raft_outbox.ts). */
export const OUTBOX_DROP_REASONS = ["queue_full", "send_failed", "no_route", "closed"] as const;
/** Raft roles, as the `role` label names them. */
export const RAFT_ROLES = ["follower", "pre_candidate", "candidate", "leader"] as const;
/** VM states, as the `state` label names them (proto/blixard/v1/vm.proto, lower case). */
export const VM_STATES = [
  "unspecified",
  "pending",
  "starting",
  "running",
  "stopping",
  "stopped",
  "failed",
  "lost",
] as const;
/** Outcomes of a proposal, as the `result` label names them. */
export const PROPOSAL_RESULTS = [
  "ok",
  "not_leader",
  "unavailable",
  "lost",
  "stopped",
  "failed",
  "refused",
  "error",
] as const;

/** What a queue of Raft messages says, by class (index = frame priority). */
export interface RaftQueueView {
  /** Messages waiting now, by class. */
  readonly depth: readonly number[];
}

/** What the node shows at scrape time. Every function is synchronous and cheap: no I/O, no waiting. */
export interface MetricSources {
  /** Raft as this node knows it; null before consensus runs. */
  raft(): {
    readonly term: number;
    readonly role: typeof RAFT_ROLES[number];
    readonly leader: number;
    readonly commit: number;
    readonly applied: number;
    readonly voters: number;
    readonly learners: number;
  } | null;
  /** The inbox (node/raft_inbox.ts): depth, and its own counters. */
  inbox(): RaftQueueView & {
    readonly accepted: readonly number[];
    readonly dropped: readonly number[];
    readonly denied: Readonly<Record<TransportName, number>>;
  };
  /** The outbox (runner/raft_outbox.ts): depth over every peer, and its own counters. */
  outbox(): RaftQueueView & {
    readonly sent: readonly number[];
    readonly dropped: Readonly<Record<typeof OUTBOX_DROP_REASONS[number], readonly number[]>>;
    readonly byTransport: Readonly<Record<TransportName, number>>;
  };
  /** VMs by state: those placed on this node, and every VM of the cluster state; null before consensus runs. */
  vms(): {
    readonly node: ReadonlyMap<string, number>;
    readonly cluster: ReadonlyMap<string, number>;
  } | null;
  /** The listeners serving now. */
  listeners(): readonly TransportName[];
  /** Whether `/readyz` would answer 200 now. */
  ready(): boolean;
}

/**
 * Buckets of RPC durations, s: loopback calls take 0.2 to 0.7 ms, a call
 * across a WAN tens of ms, a proposal waits for a quorum's fsync.
 */
const RPC_BUCKETS = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];
const CONNECT_BUCKETS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];
const RAFT_BUCKETS = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/**
 * prom-client's process metrics that Deno does not fill: no GC events, and
 * stubs for libuv handles and requests. Left out rather than exported flat.
 */
const DEFAULT_METRICS_WITHOUT_DATA = [
  "nodejs_gc_duration_seconds",
  "nodejs_active_handles",
  "nodejs_active_handles_total",
  "nodejs_active_requests",
  "nodejs_active_requests_total",
  "nodejs_active_resources",
  "nodejs_active_resources_total",
  // Deno's Node compatibility version, not the runtime's: blixard_build_info says what runs.
  "nodejs_version_info",
];

type Labels<T extends string> = Partial<Record<T, string | number>>;

/** The agent's metrics. */
export class AgentMetrics {
  readonly registry: client.Registry = new client.Registry();
  /** The counters and levels of the transports' listeners, clients and endpoints (the runner tracks them). */
  readonly transports: TrackedSources = new TrackedSources();
  /** Raft events the driver reports (leader changes, heartbeat round trips, proposals). */
  readonly raft: RaftMetrics;
  #sources: MetricSources | null = null;

  /** Calls retried over the other transport after a transport failure. */
  readonly rpcFallbacks: client.Counter<"service" | "from" | "to"> = new client.Counter({
    name: "blixard_rpc_fallbacks_total",
    help:
      "Calls retried over the other transport after a transport failure (fallback_to_grpc, or a service that moved to Iroh).",
    labelNames: ["service", "from", "to"],
    registers: [this.registry],
  });

  /** Configuration reloads by result (see {@link reloadEnded}). */
  readonly configReloads: client.Counter<"result"> = new client.Counter({
    name: "blixard_config_reloads_total",
    help:
      "Configuration reloads (SIGHUP), by result: ok, or failed (invalid file or a listener that would not start; the old config kept running).",
    labelNames: ["result"],
    registers: [this.registry],
  });

  /** Whether the last reload was applied (1, also before any) or refused (0). */
  readonly configLastReloadSuccessful: client.Gauge = new client.Gauge({
    name: "blixard_config_last_reload_successful",
    help:
      "1 when the last configuration reload was applied (or none was tried since the start), 0 when it was refused: the file on disk is then not what runs.",
    registers: [this.registry],
  });

  readonly #serverRequests = new client.Counter({
    name: "blixard_rpc_server_requests_total",
    help:
      "Calls this node's listeners answered, by service, method, transport and status code (OK included; refusals before a handler ran too, with method unknown when the request named none this node serves).",
    labelNames: ["service", "method", "transport", "code"] as const,
    registers: [this.registry],
  });
  readonly #serverSeconds = new client.Histogram({
    name: "blixard_rpc_server_duration_seconds",
    help:
      "Time from admitting a unary call to handing its answer to the transport, by service, method and transport (server streams run until cancelled and are not timed).",
    labelNames: ["service", "method", "transport"] as const,
    buckets: RPC_BUCKETS,
    registers: [this.registry],
  });
  readonly #clientRequests = new client.Counter({
    name: "blixard_rpc_client_requests_total",
    help:
      "Calls this node made to its peers, by service, method, the transport tried and status code; a call retried over the other transport counts once per transport.",
    labelNames: ["service", "method", "transport", "code"] as const,
    registers: [this.registry],
  });
  readonly #clientSeconds = new client.Histogram({
    name: "blixard_rpc_client_duration_seconds",
    help:
      "Round trip of a unary call to a peer as this node saw it, transport included, by service, method and transport.",
    labelNames: ["service", "method", "transport"] as const,
    buckets: RPC_BUCKETS,
    registers: [this.registry],
  });
  readonly #connectSeconds = new client.Histogram({
    name: "blixard_connect_duration_seconds",
    help:
      "Time to establish a connection to a peer (dial and handshake) that succeeded, by transport (Iroh only: grpc-js does not expose its connects).",
    labelNames: ["transport"] as const,
    buckets: CONNECT_BUCKETS,
    registers: [this.registry],
  });

  constructor(options: { now?: () => number; processMetrics?: boolean } = {}) {
    this.raft = new RaftMetrics(this.registry, options.now ?? (() => performance.now()));
    if (options.processMetrics ?? true) {
      client.collectDefaultMetrics({ register: this.registry });
      for (const name of DEFAULT_METRICS_WITHOUT_DATA) this.registry.removeSingleMetric(name);
    }
    new client.Gauge({
      name: "blixard_build_info",
      help: "Always 1; the labels say which agent version and Deno runtime this process runs.",
      labelNames: ["version", "deno"] as const,
      registers: [this.registry],
      collect() {
        this.set({ version: AGENT_VERSION, deno: Deno.version.deno }, 1);
      },
    });
    // Both outcomes exist from the start, so a rule on their increase sees the first failure.
    for (const result of ["ok", "failed"]) this.configReloads.inc({ result }, 0);
    this.configLastReloadSuccessful.set(1);
    this.#transportFamilies();
    this.#nodeFamilies();
  }

  /** Counts a reload by how it ended, and keeps whether the last one was applied. */
  reloadEnded(applied: boolean): void {
    this.configReloads.inc({ result: applied ? "ok" : "failed" });
    this.configLastReloadSuccessful.set(applied ? 1 : 0);
  }

  /** What the node shows at scrape time; set once the agent is built. */
  setSources(sources: MetricSources): void {
    this.#sources = sources;
  }

  /** The observer of one listener's calls (rpc/call.ts). */
  serverCalls(transport: TransportName): CallObserver {
    return {
      ended: (method, code, seconds) => {
        const labels = {
          service: method?.service.name ?? "unknown",
          method: method?.name ?? "unknown",
          transport,
        };
        this.#serverRequests.inc({ ...labels, code: codeName(code) });
        if (seconds !== null && method?.kind === "unary") {
          this.#serverSeconds.observe(labels, seconds);
        }
      },
    };
  }

  /** Counts one attempt of a call to a peer over `transport`, and times it when it is unary. */
  clientCall(method: MethodInfo, transport: TransportName, code: Code, seconds: number): void {
    const labels = { service: method.service.name, method: method.name, transport };
    this.#clientRequests.inc({ ...labels, code: codeName(code) });
    if (method.kind === "unary") this.#clientSeconds.observe(labels, seconds);
  }

  /** A connection to a peer over `transport` was established in `seconds`. */
  connected(transport: TransportName, seconds: number): void {
    this.#connectSeconds.observe({ transport }, seconds);
  }

  /** The content type of {@link text}. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  #transportFamilies(): void {
    const transports = this.transports;
    const registry = this.registry;
    const tracked = (
      kind: "counter" | "gauge",
      name: string,
      help: string,
      labelNames: readonly string[],
    ) => {
      const collect = function (this: client.Counter<string> | client.Gauge<string>) {
        this.reset();
        for (
          const [key, value] of kind === "counter" ? transports.counters() : transports.gauges()
        ) {
          const labels = labelsOf(name, key);
          if (!labels) continue;
          if (this instanceof client.Counter) this.inc(labels, value);
          else this.set(labels, value);
        }
      };
      const options = { name, help, labelNames, registers: [registry], collect };
      return kind === "counter" ? new client.Counter(options) : new client.Gauge(options);
    };
    for (const f of TRANSPORT_FAMILIES) tracked(f.kind, f.name, f.help, f.labels);
  }

  #nodeFamilies(): void {
    const registry = this.registry;
    const sources = () => this.#sources;
    const gauge = <T extends string>(
      name: string,
      help: string,
      labelNames: readonly T[],
      fill: (set: (labels: Labels<T>, value: number) => void, s: MetricSources) => void,
    ) =>
      new client.Gauge<T>({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          const s = sources();
          if (s) fill((labels, value) => this.set(labels, value), s);
        },
      });
    const counter = <T extends string>(
      name: string,
      help: string,
      labelNames: readonly T[],
      fill: (inc: (labels: Labels<T>, value: number) => void, s: MetricSources) => void,
    ) =>
      new client.Counter<T>({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          const s = sources();
          if (s) fill((labels, value) => this.inc(labels, value), s);
        },
      });
    const byClass = (values: readonly number[], set: (l: Labels<"class">, v: number) => void) =>
      RAFT_CLASSES.forEach((c, i) => set({ class: c }, values[i] ?? 0));
    const byTransport = (
      values: Readonly<Record<TransportName, number>>,
      set: (l: Labels<"transport">, v: number) => void,
    ) => {
      for (const t of ["grpc", "iroh"] as const) set({ transport: t }, values[t]);
    };

    gauge("blixard_ready", "1 while /readyz answers 200, else 0.", [], (set, s) => {
      set({}, s.ready() ? 1 : 0);
    });
    gauge(
      "blixard_listener_up",
      "1 for each transport whose listener serves now (the mode's listeners), else 0.",
      ["transport"],
      (set, s) => {
        const up = s.listeners();
        for (const t of ["grpc", "iroh"] as const) set({ transport: t }, up.includes(t) ? 1 : 0);
      },
    );
    gauge("blixard_raft_term", "The Raft term this node is in.", [], (set, s) => {
      const r = s.raft();
      if (r) set({}, r.term);
    });
    gauge(
      "blixard_raft_role",
      "1 for the role this node has now (follower, pre_candidate, candidate, leader), 0 for the others.",
      ["role"],
      (set, s) => {
        const r = s.raft();
        if (r) { for (const role of RAFT_ROLES) set({ role }, r.role === role ? 1 : 0); }
      },
    );
    gauge("blixard_raft_is_leader", "1 while this node leads, else 0.", [], (set, s) => {
      const r = s.raft();
      if (r) set({}, r.role === "leader" ? 1 : 0);
    });
    gauge(
      "blixard_raft_has_leader",
      "1 while this node knows a leader (itself or another), else 0.",
      [],
      (set, s) => {
        const r = s.raft();
        if (r) set({}, r.leader !== 0 ? 1 : 0);
      },
    );
    gauge(
      "blixard_raft_commit_index",
      "The highest log index this node knows to be committed.",
      [],
      (set, s) => {
        const r = s.raft();
        if (r) set({}, r.commit);
      },
    );
    gauge(
      "blixard_raft_applied_index",
      "The highest log index applied to this node's state.",
      [],
      (set, s) => {
        const r = s.raft();
        if (r) set({}, r.applied);
      },
    );
    gauge(
      "blixard_raft_members",
      "Members of the cluster's configuration as this node has applied it, by kind (voter, learner).",
      ["kind"],
      (set, s) => {
        const r = s.raft();
        if (!r) return;
        set({ kind: "voter" }, r.voters);
        set({ kind: "learner" }, r.learners);
      },
    );
    gauge(
      "blixard_raft_inbox_messages",
      "Raft messages from peers waiting for consensus, by class.",
      ["class"],
      (set, s) => byClass(s.inbox().depth, set),
    );
    counter(
      "blixard_raft_inbox_accepted_total",
      "Raft messages from peers queued for consensus, by class.",
      ["class"],
      (inc, s) => byClass(s.inbox().accepted, inc),
    );
    counter(
      "blixard_raft_inbox_dropped_total",
      "Raft messages from peers dropped because their class's queue was full, by class.",
      ["class"],
      (inc, s) => byClass(s.inbox().dropped, inc),
    );
    counter(
      "blixard_raft_inbox_denied_total",
      "Deliveries of Raft messages refused (PERMISSION_DENIED: an operator, an unknown caller, a peer claiming another id), by transport.",
      ["transport"],
      (inc, s) => byTransport(s.inbox().denied, inc),
    );
    gauge(
      "blixard_raft_outbox_messages",
      "Raft messages to peers waiting for their transport, over every peer, by class.",
      ["class"],
      (set, s) => byClass(s.outbox().depth, set),
    );
    counter(
      "blixard_raft_outbox_sent_total",
      "Raft messages to peers that a transport took, by class.",
      ["class"],
      (inc, s) => byClass(s.outbox().sent, inc),
    );
    counter(
      "blixard_raft_outbox_sent_by_transport_total",
      "Raft messages to peers that a transport took, by the transport that carried them.",
      ["transport"],
      (inc, s) => byTransport(s.outbox().byTransport, inc),
    );
    counter(
      "blixard_raft_outbox_dropped_total",
      "Raft messages to peers not delivered, by class and reason: queue_full, send_failed, no_route (no address for a usable transport), closed.",
      ["class", "reason"],
      (inc, s) => {
        const dropped = s.outbox().dropped;
        for (const reason of OUTBOX_DROP_REASONS) {
          RAFT_CLASSES.forEach((c, i) => inc({ class: c, reason }, dropped[reason][i] ?? 0));
        }
      },
    );
    gauge(
      "blixard_node_vms",
      "VMs placed on this node, by the state its reconciler last reported.",
      ["state"],
      (set, s) => {
        const vms = s.vms();
        if (vms) { for (const state of VM_STATES) set({ state }, vms.node.get(state) ?? 0); }
      },
    );
    gauge(
      "blixard_cluster_vms",
      "Every VM of the cluster state as this node's replica has it, by state: the same on every node up to replication lag, so aggregate with max, not sum.",
      ["state"],
      (set, s) => {
        const vms = s.vms();
        if (vms) { for (const state of VM_STATES) set({ state }, vms.cluster.get(state) ?? 0); }
      },
    );
  }
}

/** One family read from the tracked transport sources. */
interface TrackedFamily {
  readonly kind: "counter" | "gauge";
  readonly name: string;
  readonly help: string;
  readonly labels: readonly string[];
}

const TRANSPORT_FAMILIES: readonly TrackedFamily[] = [
  {
    kind: "gauge",
    name: "blixard_connections",
    help:
      "Connections open now, by transport and side: server (accepted by this node's listener) or client (dialled by this node; gRPC: peer channels with a ready connection).",
    labels: ["transport", "side"],
  },
  {
    kind: "counter",
    name: "blixard_connections_accepted_total",
    help: "Connections this node's listeners accepted, by transport.",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_connections_refused_total",
    help:
      "Connection attempts a listener refused, by transport (Iroh: an endpoint id that is neither a member nor an operator key, a failed handshake, too many pending handshakes, or a parked listener).",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_connections_closed_total",
    help:
      "Connections a listener closed on its peer, by transport and reason: buffer_full (the peer did not read its answers), idle_timeout (no sign of life), protocol_error (bytes that are not valid frames).",
    labels: ["transport", "reason"],
  },
  {
    kind: "counter",
    name: "blixard_connect_attempts_total",
    help: "Connections this node tried to establish to peers, by transport (Iroh).",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_connect_failures_total",
    help: "Connections to peers that could not be established, by transport (Iroh).",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_connections_lost_total",
    help:
      "Established connections to peers that ended other than by this node closing them (peer closed, died, or stopped answering), by transport (Iroh).",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_streams_refused_total",
    help: "Streams refused over limits.max_concurrent_streams, by transport (Iroh).",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_reads_paused_total",
    help:
      "Times a connection stopped being read because its peer did not read its answers (over half of limits.max_connection_buffer_bytes), by transport.",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_rpc_malformed_raft_total",
    help: "Raft deliveries refused as malformed, by transport.",
    labels: ["transport"],
  },
  {
    kind: "gauge",
    name: "blixard_rpc_inflight_requests",
    help: "Calls admitted by this node's listeners and not yet answered, by transport.",
    labels: ["transport"],
  },
  {
    kind: "counter",
    name: "blixard_transport_bytes_total",
    help:
      "Bytes on the wire, by transport and direction (in, out). gRPC: TCP bytes of the connections its listener accepted (what this node dials is counted by the peer). Iroh: UDP bytes of the endpoint, every connection both ways, QUIC headers included.",
    labels: ["transport", "direction"],
  },
  {
    kind: "gauge",
    name: "blixard_iroh_connection_paths",
    help:
      "Open Iroh connections by side and the path QUIC uses now: direct (UDP to the peer), relay, or none (no path selected yet).",
    labels: ["side", "path"],
  },
  {
    kind: "counter",
    name: "blixard_iroh_connections_opened_total",
    help: "Iroh connections that completed a handshake, both sides (the endpoint's own count).",
    labels: [],
  },
  {
    kind: "counter",
    name: "blixard_iroh_connections_direct_total",
    help:
      "Iroh connections that have used a direct path at some point (the endpoint's own count); divided by blixard_iroh_connections_opened_total it is the NAT traversal rate.",
    labels: [],
  },
  {
    kind: "counter",
    name: "blixard_iroh_paths_opened_total",
    help: "Network paths to peers the Iroh endpoint opened, by path: direct or relay.",
    labels: ["path"],
  },
  {
    kind: "counter",
    name: "blixard_iroh_holepunch_attempts_total",
    help: "Times the Iroh endpoint started hole punching on a connection.",
    labels: [],
  },
];

/** `name{k=v,k=v}`: the key of one series in a {@link Reading}. */
function seriesKey(name: string, labels: Readonly<Record<string, string>> = {}): string {
  return `${name}{${Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",")}}`;
}

/** The labels of `key` if it is a series of family `name`. */
function labelsOf(name: string, key: string): Record<string, string> | null {
  if (!key.startsWith(`${name}{`)) return null;
  const inner = key.slice(name.length + 1, -1);
  const labels: Record<string, string> = {};
  if (inner === "") return labels;
  for (const pair of inner.split(",")) {
    const eq = pair.indexOf("=");
    labels[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return labels;
}

/** An Iroh connection's path now. */
export type IrohPath = "direct" | "relay" | "none";

/** What a gRPC listener shows (transport/grpc/server.ts). */
export interface GrpcServerView {
  readonly stats: {
    readonly readsPaused: number;
    readonly connectionsOverflowed: number;
    readonly connectionsAccepted: number;
    readonly protocolErrors: number;
  };
  readonly connectionCount: number;
  readonly inflightCount: number;
  bytes(): { readonly in: number; readonly out: number };
}

/** The reading of a gRPC listener. */
export function grpcServerReading(s: GrpcServerView): Reading {
  const t = { transport: "grpc" };
  const bytes = s.bytes();
  return {
    counters: {
      [seriesKey("blixard_connections_accepted_total", t)]: s.stats.connectionsAccepted,
      [seriesKey("blixard_connections_closed_total", { ...t, reason: "buffer_full" })]:
        s.stats.connectionsOverflowed,
      [seriesKey("blixard_reads_paused_total", t)]: s.stats.readsPaused,
      [seriesKey("blixard_rpc_malformed_raft_total", t)]: s.stats.protocolErrors,
      [seriesKey("blixard_transport_bytes_total", { ...t, direction: "in" })]: bytes.in,
      [seriesKey("blixard_transport_bytes_total", { ...t, direction: "out" })]: bytes.out,
    },
    gauges: {
      [seriesKey("blixard_connections", { ...t, side: "server" })]: s.connectionCount,
      [seriesKey("blixard_rpc_inflight_requests", t)]: s.inflightCount,
    },
  };
}

/** What an Iroh listener shows (transport/iroh/rpc_server.ts). */
export interface IrohServerView {
  readonly stats: {
    readonly connectionsAccepted: number;
    readonly connectionsRefused: number;
    readonly protocolErrors: number;
    readonly streamsRefused: number;
    readonly readsPaused: number;
    readonly connectionsOverflowed: number;
    readonly connectionsIdle: number;
  };
  readonly inflightCount: number;
  /** The path of each open connection. */
  paths(): readonly IrohPath[];
}

/** The reading of an Iroh listener. */
export function irohServerReading(s: IrohServerView): Reading {
  const t = { transport: "iroh" };
  const closed = (reason: string) =>
    seriesKey("blixard_connections_closed_total", { ...t, reason });
  const paths = s.paths();
  return {
    counters: {
      [seriesKey("blixard_connections_accepted_total", t)]: s.stats.connectionsAccepted,
      [seriesKey("blixard_connections_refused_total", t)]: s.stats.connectionsRefused,
      [closed("buffer_full")]: s.stats.connectionsOverflowed,
      [closed("idle_timeout")]: s.stats.connectionsIdle,
      [closed("protocol_error")]: s.stats.protocolErrors,
      [seriesKey("blixard_streams_refused_total", t)]: s.stats.streamsRefused,
      [seriesKey("blixard_reads_paused_total", t)]: s.stats.readsPaused,
    },
    gauges: {
      [seriesKey("blixard_connections", { ...t, side: "server" })]: paths.length,
      [seriesKey("blixard_rpc_inflight_requests", t)]: s.inflightCount,
      ...pathGauges("server", paths),
    },
  };
}

/** What the peer clients show: Iroh's counters and connections, gRPC's ready channels. */
export interface PeerClientsView {
  readonly iroh: {
    readonly stats: {
      readonly connectAttempts: number;
      readonly connectFailures: number;
      readonly connectionsLost: number;
    };
    paths(): readonly IrohPath[];
  } | null;
  readonly grpc: { readonly connectedCount: number };
}

/** The reading of one generation of peer clients. */
export function peerClientsReading(c: PeerClientsView): Reading {
  const counters: Record<string, number> = {};
  const gauges: Record<string, number> = {
    [seriesKey("blixard_connections", { transport: "grpc", side: "client" })]:
      c.grpc.connectedCount,
  };
  if (c.iroh) {
    const t = { transport: "iroh" };
    counters[seriesKey("blixard_connect_attempts_total", t)] = c.iroh.stats.connectAttempts;
    counters[seriesKey("blixard_connect_failures_total", t)] = c.iroh.stats.connectFailures;
    counters[seriesKey("blixard_connections_lost_total", t)] = c.iroh.stats.connectionsLost;
    const paths = c.iroh.paths();
    gauges[seriesKey("blixard_connections", { ...t, side: "client" })] = paths.length;
    Object.assign(gauges, pathGauges("client", paths));
  }
  return { counters, gauges };
}

/**
 * The reading of an Iroh endpoint, from the binding's own counters
 * (`Endpoint.stats()`, keys such as `socket:send_ipv4`).
 */
export function irohEndpointReading(stats: Readonly<Record<string, { value: number }>>): Reading {
  const v = (key: string) => stats[`socket:${key}`]?.value ?? 0;
  const t = { transport: "iroh" };
  return {
    counters: {
      [seriesKey("blixard_transport_bytes_total", { ...t, direction: "out" })]: v("send_ipv4") +
        v("send_ipv6") + v("send_relay"),
      [seriesKey("blixard_transport_bytes_total", { ...t, direction: "in" })]: v("recv_data_ipv4") +
        v("recv_data_ipv6") + v("recv_data_relay"),
      [seriesKey("blixard_iroh_connections_opened_total")]: v("num_conns_opened"),
      [seriesKey("blixard_iroh_connections_direct_total")]: v("num_conns_direct"),
      [seriesKey("blixard_iroh_paths_opened_total", { path: "direct" })]: v("paths_direct"),
      [seriesKey("blixard_iroh_paths_opened_total", { path: "relay" })]: v("paths_relay"),
      [seriesKey("blixard_iroh_holepunch_attempts_total")]: v("holepunch_attempts"),
    },
    gauges: {},
  };
}

function pathGauges(side: string, paths: readonly IrohPath[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const path of ["direct", "relay", "none"] as const) {
    out[seriesKey("blixard_iroh_connection_paths", { side, path })] = paths.filter((p) =>
      p === path
    ).length;
  }
  return out;
}

/**
 * A heartbeat not answered for this long is forgotten: the next one starts a
 * new sample, so a peer that was down does not report its downtime as a
 * round trip.
 */
const HEARTBEAT_FORGET_MS = 5_000;
/** Peers whose heartbeats are tracked at once; past it the table starts over. */
const MAX_TRACKED_PEERS = 1024;

/**
 * Raft's events: leader changes, heartbeat round trips, proposal latency.
 * The node reports messages as consensus hands them to the outbox and takes
 * them from the inbox, so a round trip includes both queues and both
 * transports, as consensus lives it.
 */
export class RaftMetrics {
  readonly #now: () => number;
  #leader = 0;
  /** Per peer, when the oldest unanswered heartbeat to it left. */
  readonly #heartbeats = new Map<number, number>();
  readonly #leaderChanges: client.Counter<string>;
  readonly #rtt: client.Histogram<string>;
  readonly #proposals: client.Histogram<"result">;

  constructor(registry: client.Registry, now: () => number) {
    this.#now = now;
    this.#leaderChanges = new client.Counter({
      name: "blixard_raft_leader_changes_total",
      help:
        "Times this node learned of a leader other than the one it knew just before (losing the leader and finding the same one again counts).",
      registers: [registry],
    });
    this.#rtt = new client.Histogram({
      name: "blixard_raft_heartbeat_rtt_seconds",
      help:
        "On the leader: from a heartbeat handed to the outbox to its answer taken from the inbox, over every follower.",
      buckets: RAFT_BUCKETS,
      registers: [registry],
    });
    this.#proposals = new client.Histogram({
      name: "blixard_raft_proposal_duration_seconds",
      help:
        "From proposing a command to its being applied on this node (committed by a quorum), by result: ok, not_leader, unavailable, lost, stopped, failed, refused, error.",
      labelNames: ["result"] as const,
      buckets: RAFT_BUCKETS,
      registers: [registry],
    });
  }

  /** The leader this node knows changed to `leader` (0: none). */
  leaderKnown(leader: number): void {
    if (leader !== 0 && leader !== this.#leader) this.#leaderChanges.inc();
    this.#leader = leader;
  }

  /** A message consensus sent. */
  sent(message: { kind: number; to: number }): void {
    if (message.kind !== RaftMessageKind.Heartbeat) return;
    const now = this.#now();
    const since = this.#heartbeats.get(message.to);
    if (since !== undefined && now - since < HEARTBEAT_FORGET_MS) return;
    if (this.#heartbeats.size >= MAX_TRACKED_PEERS) this.#heartbeats.clear();
    this.#heartbeats.set(message.to, now);
  }

  /** A message consensus received. */
  received(message: { kind: number; from: number }): void {
    if (message.kind !== RaftMessageKind.HeartbeatResponse) return;
    const since = this.#heartbeats.get(message.from);
    if (since === undefined) return;
    this.#heartbeats.delete(message.from);
    this.#rtt.observe(Math.max(0, this.#now() - since) / 1000);
  }

  /** Times a proposal from the call to its outcome. */
  async timeProposal<T>(propose: () => Promise<T>): Promise<T> {
    const start = this.#now();
    let result: typeof PROPOSAL_RESULTS[number] = "ok";
    try {
      return await propose();
    } catch (e) {
      const code = String((e as { code?: unknown })?.code ?? "").toLowerCase();
      result = (PROPOSAL_RESULTS as readonly string[]).includes(code) && code !== "ok"
        ? code as typeof result
        : "error";
      throw e;
    } finally {
      this.#proposals.observe({ result }, Math.max(0, this.#now() - start) / 1000);
    }
  }
}
