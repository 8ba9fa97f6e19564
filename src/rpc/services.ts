/**
 * The service declarations: one place that says which services exist, their
 * ids on the wire, their methods, and whether each is unary or server
 * streaming. Both transport adapters and every implementation read them.
 *
 * Owns: {@link ServiceInfo}, {@link MethodInfo}, {@link SERVICES}, and the
 * types that tie an implementation or a client to a declaration. Imports the
 * generated code, `@bufbuild/protobuf` and `src/names.ts`; nothing of the
 * transports.
 *
 * A declaration is derived from the generated protobuf-es descriptor, so the
 * `.proto` file is the single source: service id = `ServiceId` value, method
 * id = the method's 1-based position in its service (proto/ never reorders).
 *
 * @module
 */

import type {
  DescMessage,
  DescMethod,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { ServiceId } from "./gen/blixard/v1/common_pb.ts";
import { HealthService } from "./gen/blixard/v1/health_pb.ts";
import { StatusService } from "./gen/blixard/v1/status_pb.ts";
import { VmService } from "./gen/blixard/v1/vm_pb.ts";
import { MonitoringService } from "./gen/blixard/v1/monitoring_pb.ts";
import { ClusterService } from "./gen/blixard/v1/cluster_pb.ts";
import { MetadataService } from "./gen/blixard/v1/metadata_pb.ts";
import {
  RAFT_SERVICE_ID,
  SERVICE_IDS,
  SERVICE_NAMES,
  type ServiceName,
  type TransportName,
} from "../names.ts";

export type { ServiceName };

// The leaf's ids are the wire ids of proto/: check once, at load.
for (const name of SERVICE_NAMES) {
  const generated = ServiceId[`${name.toUpperCase()}` as keyof typeof ServiceId];
  if (generated !== SERVICE_IDS[name]) {
    throw new Error(
      `names.ts: service ${name} has id ${SERVICE_IDS[name]}, proto/ says ${generated}`,
    );
  }
}
if (ServiceId.RAFT !== RAFT_SERVICE_ID) {
  throw new Error(`names.ts: raft has id ${RAFT_SERVICE_ID}, proto/ says ${ServiceId.RAFT}`);
}

/** How a method answers. */
export type MethodKind = "unary" | "server_streaming";

/** One method of a declared service. */
export interface MethodInfo {
  readonly service: ServiceInfo;
  /** The proto name, e.g. `"Ping"`. */
  readonly name: string;
  /** The method's 1-based position in its service: the low byte on the wire. */
  readonly id: number;
  /** `serviceId << 8 | id`: the frame header's method field. */
  readonly wireId: number;
  readonly kind: MethodKind;
  /** `"health.Ping"`: for logs, errors and metrics. */
  readonly label: string;
  /** The gRPC path, e.g. `"/blixard.v1.HealthService/Ping"`. */
  readonly path: string;
  readonly desc: DescMethod;
}

/** A declared service. */
export interface ServiceInfo<S extends DescService = DescService> {
  readonly name: ServiceName;
  /** The high byte of the frame header's method field. */
  readonly id: number;
  readonly desc: S;
  readonly methods: readonly MethodInfo[];
}

function declare<S extends DescService>(name: ServiceName, desc: S): ServiceInfo<S> {
  const id = SERVICE_IDS[name];
  const methods: MethodInfo[] = [];
  const service: ServiceInfo<S> = { name, id, desc, methods };
  desc.methods.forEach((m, i) => {
    if (m.methodKind !== "unary" && m.methodKind !== "server_streaming") {
      throw new Error(`${desc.typeName}.${m.name}: ${m.methodKind} methods are not supported`);
    }
    methods.push(Object.freeze({
      service,
      name: m.name,
      id: i + 1,
      wireId: (id << 8) | (i + 1),
      kind: m.methodKind,
      label: `${name}.${m.name}`,
      path: `/${desc.typeName}/${m.name}`,
      desc: m,
    }));
  });
  Object.freeze(methods);
  return Object.freeze(service);
}

/** Health: liveness and latency. */
export const Health = declare("health", HealthService);
/** Status: membership and Raft state. */
export const Status = declare("status", StatusService);
/** Vm: the VM lifecycle. */
export const Vm = declare("vm", VmService);
/** Monitoring: metrics and resources. */
export const Monitoring = declare("monitoring", MonitoringService);
/** Cluster: membership changes. */
export const Cluster = declare("cluster", ClusterService);
/** Metadata: the replicated key-value namespace. */
export const Metadata = declare("metadata", MetadataService);

/** Every client-facing service, by name. */
export const SERVICES: Readonly<Record<ServiceName, ServiceInfo>> = Object.freeze({
  health: Health,
  status: Status,
  vm: Vm,
  monitoring: Monitoring,
  cluster: Cluster,
  metadata: Metadata,
});

const BY_WIRE_ID = new Map<number, MethodInfo>();
for (const service of Object.values(SERVICES)) {
  for (const m of service.methods) BY_WIRE_ID.set(m.wireId, m);
}

/** The method a frame's method field names, if any. */
export function methodByWireId(wireId: number): MethodInfo | undefined {
  return BY_WIRE_ID.get(wireId);
}

/** The method of `service` whose proto name or local name is `name`. */
export function methodOf(service: ServiceInfo, name: string): MethodInfo {
  const m = service.methods.find((x) => x.name === name || x.desc.localName === name);
  if (!m) throw new Error(`${service.name}: no method ${name}`);
  return m;
}

/** Who is calling, as the transport authenticated it. */
export interface PeerInfo {
  readonly transport: TransportName;
  /** The Iroh endpoint id (authenticated by the handshake), or the gRPC caller's `ip:port`. */
  readonly id: string;
  /**
   * gRPC over mutual TLS: the names of the caller's verified client
   * certificate (subject CN, then DNS and IP subject alternative names).
   * Absent without mutual TLS.
   */
  readonly certificateNames?: readonly string[];
}

/** What a handler knows about its call besides the request. */
export interface CallContext {
  readonly method: MethodInfo;
  readonly peer: PeerInfo;
  /** Aborted when the caller cancels, the deadline passes or the server shuts down. */
  readonly signal: AbortSignal;
  /** When the caller stops waiting, as `Date.now()` milliseconds; null for none. */
  readonly deadline: number | null;
}

type Input<M> = M extends { input: infer I extends DescMessage } ? I : never;
type Output<M> = M extends { output: infer O extends DescMessage } ? O : never;

/** The handler of one method: unary returns one response, server streaming yields many. */
export type Handler<M> = M extends { methodKind: "unary" } ? (
    request: MessageShape<Input<M>>,
    ctx: CallContext,
  ) => Promise<MessageInitShape<Output<M>>> | MessageInitShape<Output<M>>
  : M extends { methodKind: "server_streaming" } ? (
      request: MessageShape<Input<M>>,
      ctx: CallContext,
    ) => AsyncIterable<MessageInitShape<Output<M>>>
  : never;

/** An implementation of a whole service: one handler per method, by local name. */
export type ServiceImpl<S> = S extends GenService<infer R extends GenServiceMethods>
  ? { readonly [K in keyof R]: Handler<R[K]> }
  : never;

/** Per-call options of a client. */
export interface CallOptions {
  /** How long the caller waits, in ms; the transport's default when absent. */
  readonly deadlineMs?: number;
  /** Cancels the call. */
  readonly signal?: AbortSignal;
  /**
   * Wait, within the deadline, for a connection that is down or still being
   * made, rather than failing at once with UNAVAILABLE. The dual runner sets
   * it on a retry, which has no other transport left to try.
   */
  readonly waitForReady?: boolean;
}

/** A typed client method for one declared method. */
export type ClientMethod<M> = M extends { methodKind: "unary" } ? (
    request: MessageInitShape<Input<M>>,
    options?: CallOptions,
  ) => Promise<MessageShape<Output<M>>>
  : M extends { methodKind: "server_streaming" } ? (
      request: MessageInitShape<Input<M>>,
      options?: CallOptions,
    ) => AsyncIterable<MessageShape<Output<M>>>
  : never;

/** A typed client of a whole service. */
export type Client<S> = S extends GenService<infer R extends GenServiceMethods>
  ? { readonly [K in keyof R]: ClientMethod<R[K]> }
  : never;
