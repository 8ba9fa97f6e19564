/**
 * The dual runner's decisions, as pure functions of (config, what a peer
 * serves, live health) → transport. No I/O: the runner and the clients
 * call these and do what they say, and the tests can check every rule.
 *
 * Owns: {@link servingPlan}, {@link chooseTransport}, {@link retryTransport},
 * {@link chooseBulkTransport}. Imports the config types only.
 *
 * The rules (docs/dual-runner.md):
 * - A node serves every service on the transports of its mode: `grpc` on
 *   gRPC, `iroh` on Iroh, `dual` on both, preferring Iroh for the services
 *   in `prefer_iroh` (so nodes still on gRPC can always reach a dual node).
 * - A client calls over a transport both sides have, its own preference
 *   first; when they share none, the call fails and says why.
 * - A call that failed for a transport reason is retried once over the
 *   other transport: Iroh → gRPC only with `fallback_to_grpc`; gRPC → Iroh
 *   when the peer serves the service on Iroh (it moved). Application errors
 *   are never retried.
 *
 * @module
 */

import type { AgentConfig, TransportMode } from "../config/mod.ts";
import { servicesOverIroh } from "../config/mod.ts";
import { ROUTED_SERVICES, type RoutedService, type TransportName } from "../names.ts";

export { ROUTED_SERVICES, type RoutedService, type TransportName };

/** How one service is served: on which transports, and which clients should try first. */
export interface ServiceServing {
  readonly transports: readonly TransportName[];
  readonly preferred: TransportName;
}

/** What a node serves, per service. */
export type ServingPlan = ReadonlyMap<RoutedService, ServiceServing>;

/** The transports a node in `mode` listens on (and can call over). */
export function transportsOf(mode: TransportMode): readonly TransportName[] {
  return mode === "grpc" ? ["grpc"] : mode === "iroh" ? ["iroh"] : ["grpc", "iroh"];
}

/** What a node with `config` serves, per service. */
export function servingPlan(config: AgentConfig): ServingPlan {
  const transports = transportsOf(config.transport.mode);
  const overIroh = servicesOverIroh(config);
  const raft = raftPreference(config);
  const plan = new Map<RoutedService, ServiceServing>();
  for (const service of ROUTED_SERVICES) {
    const preferred: TransportName = transports.length === 1
      ? transports[0]!
      : service === "raft"
      ? raft
      : overIroh.has(service)
      ? "iroh"
      : "grpc";
    plan.set(service, { transports, preferred });
  }
  return plan;
}

function raftPreference(config: AgentConfig): TransportName {
  const { mode, migration } = config.transport;
  if (mode !== "dual") return mode;
  // adaptive starts on gRPC, the established transport, and moves per peer on evidence.
  return migration.raftTransport === "iroh" ? "iroh" : "grpc";
}

/** What a client knows about one peer's transports for one service. */
export interface PeerServing {
  /** Transports the peer serves the service on (from its Status, or its config entry). */
  readonly transports: readonly TransportName[];
}

/** The calling side's view. */
export interface CallerPolicy {
  /** Transports this node can call over (its mode's). */
  readonly transports: readonly TransportName[];
  /** This node's preference for the service. */
  readonly preferred: TransportName;
}

/** Why no transport could be chosen. */
export class NoCommonTransportError extends Error {
  override readonly name = "NoCommonTransportError";
}

/**
 * The transport for a call to `peer` for `service`: one both sides have,
 * the caller's preference first.
 * @throws {NoCommonTransportError} naming both sides' transports.
 */
export function chooseTransport(
  service: RoutedService,
  caller: CallerPolicy,
  peer: PeerServing,
  peerName: string,
): TransportName {
  const common = caller.transports.filter((t) => peer.transports.includes(t));
  if (common.length === 0) {
    const theirs = peer.transports.length === 0 ? "nothing" : peer.transports.join(" and ");
    throw new NoCommonTransportError(
      `${peerName} serves ${service} over ${theirs}; this node calls over ${
        caller.transports.join(" and ")
      }: ` +
        `no transport in common (set transport.mode = "dual" on one of them)`,
    );
  }
  return common.includes(caller.preferred) ? caller.preferred : common[0]!;
}

/**
 * After a call over `failed` failed for a transport reason, the transport to
 * retry it on once, or null for none.
 */
export function retryTransport(
  failed: TransportName,
  caller: CallerPolicy,
  peer: PeerServing,
  fallbackToGrpc: boolean,
): TransportName | null {
  const other: TransportName = failed === "iroh" ? "grpc" : "iroh";
  if (!caller.transports.includes(other)) return null;
  if (other === "grpc") return fallbackToGrpc ? "grpc" : null;
  return peer.transports.includes("iroh") ? "iroh" : null;
}

/** Live measurements of one transport to one peer, for `adaptive`. */
export interface TransportHealth {
  /** False after recent failures (the transport's connection is down). */
  readonly healthy: boolean;
  /** Smoothed round-trip latency of small messages, ms; null until measured. */
  readonly latencyMs: number | null;
  /** Smoothed throughput of bulk transfers, bytes/s; null until measured. */
  readonly bulkBytesPerSecond: number | null;
}

/**
 * `raft_transport = "adaptive"`, small messages: the healthy transport with
 * the lower measured latency; an unmeasured healthy transport is tried
 * before a slower measured one only if the measured one is unhealthy.
 * Returns null when neither is usable.
 */
export function chooseAdaptive(
  available: readonly TransportName[],
  health: Readonly<Record<TransportName, TransportHealth>>,
): TransportName | null {
  const healthy = available.filter((t) => health[t].healthy);
  if (healthy.length === 0) return null;
  if (healthy.length === 1) return healthy[0]!;
  const [a, b] = healthy as [TransportName, TransportName];
  const la = health[a].latencyMs;
  const lb = health[b].latencyMs;
  if (la === null && lb === null) return "grpc";
  if (la === null) return b;
  if (lb === null) return a;
  return la <= lb ? a : b;
}

/**
 * `adaptive`, bulk (snapshot chunks): the healthy transport that moved bulk
 * faster. Until both are measured, gRPC: the Iroh binding converts every
 * byte through a JS array (~7 MiB/s measured here against ~200 MiB/s for
 * gRPC), so gRPC is the better guess for bulk.
 */
export function chooseBulkTransport(
  available: readonly TransportName[],
  health: Readonly<Record<TransportName, TransportHealth>>,
): TransportName | null {
  const healthy = available.filter((t) => health[t].healthy);
  if (healthy.length === 0) return null;
  if (healthy.length === 1) return healthy[0]!;
  const gi = health.iroh.bulkBytesPerSecond;
  const gg = health.grpc.bulkBytesPerSecond;
  if (gi === null || gg === null) return "grpc";
  return gi > gg ? "iroh" : "grpc";
}
