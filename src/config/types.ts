/**
 * The typed configuration the rest of the agent reads: {@link AgentConfig},
 * camelCase, defaults filled in, deeply frozen. Each field is the TOML key of
 * the same name in snake_case; docs/configuration.md describes them.
 *
 * Owns: the shape of the configuration as code sees it. May import:
 * ./schema.ts (for the enumerations); nothing else of the project.
 *
 * @module
 */

import type { RaftTransport, ServiceName, TransportMode, VmBackend } from "./schema.ts";

export type { RaftTransport, ServiceName, TransportMode, VmBackend };

/**
 * The whole configuration of one agent.
 */
export interface AgentConfig {
  readonly node: NodeConfig;
  readonly transport: TransportConfig;
  readonly grpc: GrpcConfig;
  readonly iroh: IrohConfig;
  readonly cluster: ClusterConfig;
  readonly raft: RaftConfig;
  readonly metrics: MetricsConfig;
  readonly vm: VmConfig;
  readonly limits: LimitsConfig;
}

/** `[node]`. */
export interface NodeConfig {
  /** Raft id, >= 1. */
  readonly id: number;
  readonly dataDir: string;
}

/** `[transport]`. */
export interface TransportConfig {
  /**
   * As the file sets it; when it does not, `"dual"` if the file has a
   * `[transport.migration]` section, else `"grpc"`.
   */
  readonly mode: TransportMode;
  /**
   * `[transport.migration]`. Read the effective choice through
   * `servicesOverIroh()` and `raftTransport()`: in mode `iroh` these keys are
   * ignored and hold their defaults.
   */
  readonly migration: MigrationConfig;
}

/**
 * `prefer_iroh`: service names (aliases resolved, no duplicates, in
 * `SERVICE_NAMES` order), or `["all_except_raft"]`.
 */
export type PreferIroh = readonly ServiceName[] | readonly ["all_except_raft"];

/** `[transport.migration]`. */
export interface MigrationConfig {
  readonly preferIroh: PreferIroh;
  readonly raftTransport: RaftTransport;
  readonly fallbackToGrpc: boolean;
}

/** `[grpc]`. */
export interface GrpcConfig {
  /** `host:port`. */
  readonly bind: string;
  readonly allowInsecure: boolean;
  readonly tls: GrpcTlsConfig;
}

/** `[grpc.tls]`: TLS when `certFile` is set, mutual TLS when `caFile` is set too. */
export interface GrpcTlsConfig {
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly caFile?: string;
}

/** `"default"`, `"disabled"`, or the URLs of self-hosted relays. */
export type RelayConfig = "default" | "disabled" | readonly string[];

/** `[iroh]`. */
export interface IrohConfig {
  /** `ip:port`. */
  readonly bind: string;
  readonly relay: RelayConfig;
  /** Always set: defaults to `<dataDir>/iroh_secret_key`. */
  readonly secretKeyFile: string;
  readonly alpn: string;
}

/** `[cluster]`. */
export interface ClusterConfig {
  readonly peers: readonly PeerConfig[];
  /** Lowercase hex endpoint ids. */
  readonly operatorKeys: readonly string[];
  /** Form a new cluster on the first start (true), or wait to be joined (false). */
  readonly bootstrap: boolean;
}

/** One `[[cluster.peers]]`: has `endpointId` or `ticket` (or both). */
export interface PeerConfig {
  readonly id: number;
  /** Lowercase hex. */
  readonly endpointId?: string;
  /** `ip:port` direct Iroh addresses; may be empty. */
  readonly addresses: readonly string[];
  readonly ticket?: string;
  /** `host:port` of the peer's gRPC listener. */
  readonly grpcAddress?: string;
}

/** `[raft]`: consensus timing and compaction. */
export interface RaftConfig {
  readonly tickMs: number;
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
  readonly snapshotEveryEntries: number;
  readonly keepEntries: number;
}

/** `[metrics]`: the HTTP server of `/metrics`, `/healthz` and `/readyz`. */
export interface MetricsConfig {
  readonly enabled: boolean;
  /** `host:port`. */
  readonly bind: string;
}

/** `[vm]`: the VMs this node runs. */
export interface VmConfig {
  readonly backends: readonly VmBackend[];
  /** Declared vCPUs for VMs; absent: the host's CPU count. */
  readonly vcpus?: number;
  /** Declared memory for VMs, MiB; absent: the host's total memory. */
  readonly memoryMib?: number;
  readonly accel: "auto" | "kvm" | "tcg";
  readonly qemuBinary: string;
  readonly nodeLostAfterMs: number;
  /** What a graceful stop of the agent does to its VMs. */
  readonly onAgentStop: "leave" | "stop";
}

/** `[limits]`: bounds on what a peer controls. */
export interface LimitsConfig {
  readonly maxFrameBytes: number;
  /** Per connection: what a node buffers for a peer that does not read. */
  readonly maxConnectionBufferBytes: number;
  /** Per connection. */
  readonly maxInflightRequests: number;
  /** Per Iroh connection. */
  readonly maxConcurrentStreams: number;
  /** Deadline of a request that names none. */
  readonly requestDeadlineMs: number;
  readonly maxRequestDeadlineMs: number;
  readonly shutdownTimeoutMs: number;
}
