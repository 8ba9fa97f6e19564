/**
 * The Status service: the cluster's members and this node's Raft state.
 *
 * Owns: {@link statusService} and the read models it answers from,
 * {@link ListenerView} and {@link MembershipView}. Imports `rpc/` types,
 * `src/names.ts` and the generated messages; nothing of the transports.
 *
 * A member's services list only what is really served: a service the node
 * has an implementation of, on a listener that is up.
 *
 * @module
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type MemberSchema,
  type ServiceId,
  type ServiceTransportsSchema,
  Transport,
} from "../rpc/gen/blixard/v1/common_pb.ts";
import type {
  GetRaftStatusResponseSchema,
  StatusService,
} from "../rpc/gen/blixard/v1/status_pb.ts";
import type { ServiceImpl } from "../rpc/services.ts";
import {
  type RoutedService,
  SERVICE_IDS,
  SERVICE_NAMES,
  type ServiceName,
  type TransportName,
} from "../names.ts";

/** A member as Status reports it. */
export type MemberInit = MessageInitShape<typeof MemberSchema>;

/** How one service is served by this node's configuration. */
export interface ServiceServing {
  readonly transports: readonly TransportName[];
  readonly preferred: TransportName;
}

/** This node's listeners as they are now (the runner implements it). */
export interface ListenerView {
  /** The listeners serving now. */
  listeners(): readonly TransportName[];
  /** What the configuration in force serves on which transport. */
  readonly serving: ReadonlyMap<RoutedService, ServiceServing>;
  /** `host:port` of the gRPC listener, when it runs. */
  grpcAddress(): string | null;
  /** The Iroh endpoint, when it runs. */
  readonly irohEndpoint:
    | { readonly id: string; addr(): { readonly directAddresses: readonly string[] } }
    | null;
}

/** A member other than this node, as far as this node knows it. */
export interface KnownPeer {
  readonly nodeId: bigint;
  readonly endpointId: string;
  readonly addresses: readonly string[];
  readonly grpcAddress: string;
  /** Receives the log without voting (yet). */
  readonly learner?: boolean;
}

/** The cluster as this node knows it: Raft's membership, with what is known of each member. */
export interface MembershipView {
  readonly nodeId: bigint;
  /** Whether this node is a learner. */
  learner?(): boolean;
  peers(): readonly KnownPeer[];
  leaderId(): bigint;
  term(): bigint;
  raftStatus(): MessageInitShape<typeof GetRaftStatusResponseSchema>;
}

/** What Status reads. */
export interface StatusSources {
  readonly listeners: ListenerView;
  readonly membership: MembershipView;
  /** Whether this node has an implementation of `service`. */
  readonly implements: (service: ServiceName) => boolean;
}

const TRANSPORT = { grpc: Transport.GRPC, iroh: Transport.IROH } as const;

/** This node as a member: what it really serves, where. */
export function localMember(sources: StatusSources): MemberInit {
  const { listeners: view, membership } = sources;
  const up = view.listeners();
  const services: MessageInitShape<typeof ServiceTransportsSchema>[] = [];
  for (const name of SERVICE_NAMES) {
    const serving = view.serving.get(name);
    if (!serving || !sources.implements(name)) continue;
    const transports = serving.transports.filter((t) => up.includes(t));
    if (transports.length === 0) continue;
    services.push({
      service: SERVICE_IDS[name] as ServiceId,
      transports: transports.map((t) => TRANSPORT[t]),
      preferred:
        TRANSPORT[transports.includes(serving.preferred) ? serving.preferred : transports[0]!],
    });
  }
  const endpoint = view.irohEndpoint;
  return {
    nodeId: membership.nodeId,
    iroh: endpoint
      ? { endpointId: endpoint.id, directAddresses: [...endpoint.addr().directAddresses] }
      : undefined,
    grpcAddress: view.grpcAddress() ?? "",
    services,
  };
}

/** The Status implementation over `sources`. */
export function statusService(sources: StatusSources): ServiceImpl<typeof StatusService> {
  const { membership } = sources;
  return {
    getClusterStatus() {
      const peers: MemberInit[] = membership.peers().map((p) => ({
        nodeId: p.nodeId,
        iroh: p.endpointId
          ? { endpointId: p.endpointId, directAddresses: [...p.addresses] }
          : undefined,
        grpcAddress: p.grpcAddress,
        // What a peer serves is its own to say: ask it.
        services: [],
        learner: p.learner ?? false,
      }));
      const self = { ...localMember(sources), learner: membership.learner?.() ?? false };
      const members = [self, ...peers].sort((a, b) => Number((a.nodeId ?? 0n) - (b.nodeId ?? 0n)));
      return {
        members,
        leaderId: membership.leaderId(),
        term: membership.term(),
        nodeId: membership.nodeId,
      };
    },
    getRaftStatus() {
      return membership.raftStatus();
    },
  };
}
