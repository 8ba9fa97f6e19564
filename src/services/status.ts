/**
 * The Status service: the cluster's members and this node's Raft state.
 *
 * Owns: {@link statusService} and {@link StatusSource}. Imports `rpc/` types
 * and the generated messages; nothing of the transports.
 *
 * Until the Raft module lands, the source is the configuration: this node
 * and its configured peers, no leader, term 0 (see {@link staticStatusSource}).
 *
 * @module
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { type MemberSchema, ServiceId, Transport } from "../rpc/gen/blixard/v1/common_pb.ts";
import {
  type GetRaftStatusResponseSchema,
  RaftRole,
  type StatusService,
} from "../rpc/gen/blixard/v1/status_pb.ts";
import type { ServiceImpl } from "../rpc/services.ts";
import { SERVICE_IDS, type ServiceName, type TransportName } from "../names.ts";

/** A member as Status reports it. */
export type MemberInit = MessageInitShape<typeof MemberSchema>;

/** Where Status gets its answers. */
export interface StatusSource {
  readonly nodeId: bigint;
  members(): MemberInit[];
  leaderId(): bigint;
  term(): bigint;
  raftStatus(): MessageInitShape<typeof GetRaftStatusResponseSchema>;
}

/** The Status implementation over `source`. */
export function statusService(source: StatusSource): ServiceImpl<typeof StatusService> {
  return {
    getClusterStatus() {
      const members = source.members().sort((a, b) => Number((a.nodeId ?? 0n) - (b.nodeId ?? 0n)));
      return { members, leaderId: source.leaderId(), term: source.term(), nodeId: source.nodeId };
    },
    getRaftStatus() {
      return source.raftStatus();
    },
  };
}

/** This node as described by its configuration and what it serves. */
export interface LocalNode {
  readonly nodeId: bigint;
  readonly irohEndpointId: string;
  readonly irohAddresses: readonly string[];
  readonly grpcAddress: string;
  /** For each service served: the transports it is served on and the preferred one. */
  readonly services: ReadonlyMap<
    ServiceName,
    { transports: readonly TransportName[]; preferred: TransportName }
  >;
}

/** A configured peer. */
export interface ConfiguredPeer {
  readonly nodeId: bigint;
  readonly endpointId: string;
  readonly addresses: readonly string[];
  readonly grpcAddress: string;
}

const TRANSPORT = { grpc: Transport.GRPC, iroh: Transport.IROH } as const;

/**
 * Status from configuration alone, before Raft: this node (with the
 * transports it serves now) and its configured peers (what they serve is not
 * known until they report it), no leader, term 0, role unspecified. Both are
 * read on every call, so a reload shows at once.
 */
export function staticStatusSource(
  local: () => LocalNode,
  peers: () => readonly ConfiguredPeer[],
): StatusSource {
  const self = (): MemberInit => {
    const l = local();
    return {
      nodeId: l.nodeId,
      iroh: l.irohEndpointId
        ? { endpointId: l.irohEndpointId, directAddresses: [...l.irohAddresses] }
        : undefined,
      grpcAddress: l.grpcAddress,
      services: [...l.services].map(([name, s]) => ({
        service: SERVICE_IDS[name] as ServiceId,
        transports: s.transports.map((t) => TRANSPORT[t]),
        preferred: TRANSPORT[s.preferred],
      })),
    };
  };
  const others = (): MemberInit[] =>
    peers().map((p) => ({
      nodeId: p.nodeId,
      iroh: p.endpointId
        ? { endpointId: p.endpointId, directAddresses: [...p.addresses] }
        : undefined,
      grpcAddress: p.grpcAddress,
      services: [],
    }));
  return {
    nodeId: local().nodeId,
    members: () => [self(), ...others()],
    leaderId: () => 0n,
    term: () => 0n,
    raftStatus: () => ({
      nodeId: local().nodeId,
      term: 0n,
      commitIndex: 0n,
      appliedIndex: 0n,
      role: RaftRole.UNSPECIFIED,
      leaderId: 0n,
      peers: [],
    }),
  };
}
