/**
 * The names every part of the agent shares: the services, their ids on the
 * wire, and the transports. Config, rpc, the transports, the runner, the
 * services and the command line all read them from here, so adding a service
 * is a line here and its `.proto` file.
 *
 * Owns: {@link ServiceName}, {@link SERVICE_IDS}, {@link RoutedService},
 * {@link TransportName}. Imports nothing: a leaf every module may import.
 *
 * The ids are the `ServiceId` values of proto/blixard/v1/common.proto, which
 * is also the high byte of an Iroh frame's method field; `rpc/services.ts`
 * checks at load time that the two agree.
 *
 * @module
 */

/** Wire id of each client-facing service. */
export const SERVICE_IDS = Object.freeze(
  {
    health: 1,
    status: 2,
    vm: 3,
    monitoring: 4,
    cluster: 5,
    metadata: 7,
  } as const,
);

/** A client-facing service, as config (`prefer_iroh`), metrics and logs name it. */
export type ServiceName = keyof typeof SERVICE_IDS;

/** The client-facing services, in wire-id order. */
export const SERVICE_NAMES: readonly ServiceName[] = Object.freeze(
  (Object.keys(SERVICE_IDS) as ServiceName[]).sort((a, b) => SERVICE_IDS[a] - SERVICE_IDS[b]),
);

/** Wire id of Raft, the peers-only consensus service. */
export const RAFT_SERVICE_ID = 6;

/** Everything the dual runner routes: the client services and Raft. */
export type RoutedService = ServiceName | "raft";

/** The routed services: the client services in wire-id order, then Raft. */
export const ROUTED_SERVICES: readonly RoutedService[] = Object.freeze([
  ...SERVICE_NAMES,
  "raft",
]);

/** The wire id of a routed service. */
export function serviceIdOf(service: RoutedService): number {
  return service === "raft" ? RAFT_SERVICE_ID : SERVICE_IDS[service];
}

const BY_ID: ReadonlyMap<number, RoutedService> = new Map(
  ROUTED_SERVICES.map((s) => [serviceIdOf(s), s]),
);

/** The routed service with wire id `id`, if there is one. */
export function serviceNameOf(id: number): RoutedService | undefined {
  return BY_ID.get(id);
}

/** A transport. */
export type TransportName = "grpc" | "iroh";

/** The transports, the established one first. */
export const TRANSPORT_NAMES: readonly TransportName[] = Object.freeze(["grpc", "iroh"]);
