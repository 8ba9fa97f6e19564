/**
 * The Cluster service: membership changes, each committed through Raft on
 * the leader (a follower forwards them).
 *
 * Owns: {@link clusterService}, {@link memberRecordOf}. Imports `rpc/`
 * types, the generated messages, the core's membership change types, the
 * Iroh ticket parser and the consensus port.
 *
 * - Join adds a node as a learner: it receives the log (or a snapshot) and
 *   is promoted to voter once it has caught up (docs/raft.md). Join of a node
 *   that is already a member updates its record (its addresses): a node
 *   announces itself this way when its listeners change.
 * - Leave removes a node. A leader asked to remove itself first hands
 *   leadership to the most up-to-date voter, then the new leader removes it.
 * - TransferLeadership returns once the target leads, or fails at the deadline.
 *
 * @module
 */

import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import type {
  ClusterService,
  JoinRequest,
  JoinResponseSchema,
} from "../rpc/gen/blixard/v1/cluster_pb.ts";
import { type MemberRecord, MemberRecordSchema } from "../rpc/gen/blixard/v1/state_pb.ts";
import { ConfChangeType } from "../raft/mod.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import { Cluster, type ServiceImpl } from "../rpc/services.ts";
import { parseTicket } from "../transport/iroh/endpoint.ts";
import { parseHostPort } from "../util/address.ts";
import {
  type ConsensusPort,
  deadlineOf,
  type LeaderClients,
  onLeader,
  toRpcError,
} from "./consensus_port.ts";
import type { MemberSchema } from "../rpc/gen/blixard/v1/common_pb.ts";

/** How often a transfer's progress is checked, ms. */
const TRANSFER_POLL_MS = 10;

/** The record a join request describes, or an INVALID_ARGUMENT naming what is wrong. */
export function memberRecordOf(req: JoinRequest): MemberRecord {
  const nodeId = req.nodeId;
  if (nodeId === 0n || nodeId > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RpcError(
      Code.INVALID_ARGUMENT,
      `cluster.Join: node_id ${nodeId}: expected 1..2^53-1`,
    );
  }
  let iroh: MemberRecord["iroh"];
  if (req.iroh.case === "irohTicket") {
    try {
      const t = parseTicket(req.iroh.value);
      iroh = {
        $typeName: "blixard.v1.IrohAddress",
        endpointId: t.id,
        relayUrl: "",
        directAddresses: [...t.directAddresses],
      };
    } catch (e) {
      throw new RpcError(
        Code.INVALID_ARGUMENT,
        `cluster.Join: iroh_ticket: ${(e as Error).message}`,
      );
    }
  } else if (req.iroh.case === "irohAddress") {
    iroh = req.iroh.value;
    if (!/^[0-9a-f]{64}$/.test(iroh.endpointId)) {
      throw new RpcError(
        Code.INVALID_ARGUMENT,
        `cluster.Join: iroh_address.endpoint_id ${
          JSON.stringify(iroh.endpointId)
        }: expected 64 lowercase hex characters`,
      );
    }
  }
  if (req.grpcAddress !== "") {
    const hp = parseHostPort(req.grpcAddress);
    if (!hp || hp.port === 0) {
      throw new RpcError(
        Code.INVALID_ARGUMENT,
        `cluster.Join: grpc_address ${JSON.stringify(req.grpcAddress)}: expected "host:port"`,
      );
    }
  }
  if (!iroh && req.grpcAddress === "") {
    throw new RpcError(
      Code.INVALID_ARGUMENT,
      "cluster.Join: the node needs an Iroh ticket or address, or a grpc_address, to be reached",
    );
  }
  if (req.vcpus > MAX_DECLARED_VCPUS) {
    throw new RpcError(
      Code.INVALID_ARGUMENT,
      `cluster.Join: vcpus ${req.vcpus}: expected at most ${MAX_DECLARED_VCPUS}`,
    );
  }
  if (req.vmBackends.length > MAX_BACKENDS || req.vmBackends.some((b) => !BACKEND.test(b))) {
    throw new RpcError(
      Code.INVALID_ARGUMENT,
      `cluster.Join: vm_backends ${
        JSON.stringify(req.vmBackends.slice(0, MAX_BACKENDS + 1))
      }: expected at most ${MAX_BACKENDS} names of 1 to 32 characters of a-z, 0-9 and '-'`,
    );
  }
  return create(MemberRecordSchema, {
    nodeId,
    iroh,
    grpcAddress: req.grpcAddress,
    vcpus: req.vcpus,
    memoryMib: req.memoryMib,
    backends: req.vmBackends,
  });
}

/** Bounds of what a node declares it offers to VMs. */
const MAX_DECLARED_VCPUS = 65_536;
const MAX_BACKENDS = 8;
const BACKEND = /^[a-z0-9][a-z0-9-]{0,31}$/;

/** Members as Cluster and Status report them. */
export function memberMessages(
  records: readonly MemberRecord[],
): MessageInitShape<typeof MemberSchema>[] {
  return records.map((r) => ({ nodeId: r.nodeId, iroh: r.iroh, grpcAddress: r.grpcAddress }));
}

/** The Cluster implementation over consensus. */
export function clusterService(
  port: ConsensusPort,
  leaderClient: LeaderClients,
): ServiceImpl<typeof ClusterService> {
  const forward = <T>(
    call: (client: NonNullable<ReturnType<typeof leaderClient<typeof Cluster>>>) => Promise<T>,
  ) =>
  (leader: number) => {
    const client = leaderClient(Cluster, leader);
    return client ? call(client) : null;
  };

  const join = async (
    record: MemberRecord,
  ): Promise<MessageInitShape<typeof JoinResponseSchema>> => {
    const id = Number(record.nodeId);
    const { voters, learners } = port.status();
    if (voters.includes(id) || learners.includes(id)) {
      const known = port.members().find((m) => m.nodeId === record.nodeId);
      const declares = record.vcpus !== 0 || record.memoryMib !== 0n || record.backends.length > 0;
      // An operator's join of a member updates its addresses; what it offers to VMs it declares itself.
      const member = declares || !known ? record : create(MemberRecordSchema, {
        ...record,
        vcpus: known.vcpus,
        memoryMib: known.memoryMib,
        backends: known.backends,
      });
      await port.propose({ kind: "member_update", member });
    } else {
      await port.changeMembership({
        type: ConfChangeType.AddLearner,
        nodeId: id,
        context: toBinary(MemberRecordSchema, record),
      });
    }
    return { members: memberMessages(port.members()), leaderId: BigInt(port.leader()) };
  };

  return {
    join(req, ctx) {
      const record = memberRecordOf(req);
      return onLeader(
        port,
        "cluster.Join",
        () => join(record),
        forward((c) => c.join(req, deadlineOf(ctx.deadline))),
      );
    },

    async leave(req, ctx) {
      const id = Number(req.nodeId);
      if (!(id >= 1)) {
        throw new RpcError(
          Code.INVALID_ARGUMENT,
          `cluster.Leave: node_id ${req.nodeId}: expected 1..2^53-1`,
        );
      }
      if (id === port.nodeId && port.leader() === port.nodeId) {
        // A leader does not remove itself: it hands over first, then asks the new leader.
        const to = nextLeader(port);
        if (to === 0) {
          throw new RpcError(
            Code.FAILED_PRECONDITION,
            `cluster.Leave: node ${id} is the only voter; a cluster cannot lose its last member`,
          );
        }
        await transfer(port, to, ctx.deadline, ctx.signal);
      }
      return await onLeader(
        port,
        "cluster.Leave",
        async () => {
          await port.changeMembership({
            type: ConfChangeType.RemoveNode,
            nodeId: id,
            context: new Uint8Array(),
          });
          return {};
        },
        forward((c) => c.leave(req, deadlineOf(ctx.deadline))),
      );
    },

    transferLeadership(req, ctx) {
      const to = Number(req.targetNodeId);
      return onLeader(
        port,
        "cluster.TransferLeadership",
        async () => {
          if (port.leader() !== port.nodeId) port.transferLeadership(to); // throws NOT_LEADER
          await transfer(port, to, ctx.deadline, ctx.signal);
          return { leaderId: BigInt(to), term: BigInt(port.status().term) };
        },
        forward((c) => c.transferLeadership(req, deadlineOf(ctx.deadline))),
      );
    },
  };
}

/** The voter other than this node with the highest match index: the best next leader. */
function nextLeader(port: ConsensusPort): number {
  const s = port.status();
  const candidates = s.peers.filter((p) => p.id !== port.nodeId && s.voters.includes(p.id));
  candidates.sort((a, b) => b.match - a.match || a.id - b.id);
  return candidates[0]?.id ?? 0;
}

/** Hands leadership to `to` and waits until it leads (or the deadline passes). */
async function transfer(
  port: ConsensusPort,
  to: number,
  deadline: number | null,
  signal: AbortSignal,
): Promise<void> {
  try {
    if (port.leader() === to) return;
    port.transferLeadership(to);
  } catch (e) {
    throw toRpcError(e, "cluster.TransferLeadership");
  }
  while (port.leader() !== to) {
    signal.throwIfAborted();
    if (deadline !== null && Date.now() >= deadline) {
      throw new RpcError(
        Code.DEADLINE_EXCEEDED,
        `cluster.TransferLeadership: node ${to} did not take over before the deadline`,
      );
    }
    await new Promise((r) => setTimeout(r, TRANSFER_POLL_MS));
  }
}
