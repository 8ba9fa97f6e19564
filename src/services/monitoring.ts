/**
 * The Monitoring service (proto/blixard/v1/monitoring.proto): this node's
 * metrics, and per node the host's CPUs and memory (measured by that node)
 * with the VMs placed on it (from the replicated state).
 *
 * Owns: {@link monitoringService}, {@link hostResources}. Imports `rpc/`
 * types, the generated messages, the state machine's types and the
 * consensus port.
 *
 * GetResourceSummary for every member asks each member for its own figures
 * at once, each within {@link FAN_OUT_DEADLINE_MS}; a member that does not
 * answer is listed with the state's figures only (no `reported_at`, zero
 * cores and memory).
 *
 * @module
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Timestamp, timestampNow } from "@bufbuild/protobuf/wkt";
import type { VmState } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import type {
  GetResourceSummaryResponseSchema,
  MonitoringService,
} from "../rpc/gen/blixard/v1/monitoring_pb.ts";
import { Monitoring, type ServiceImpl } from "../rpc/services.ts";
import type { ClusterState } from "../state/cluster_state.ts";
import { type ConsensusPort, type LeaderClients, toRpcError } from "./consensus_port.ts";

/** How long a fan-out waits for each member, ms. */
export const FAN_OUT_DEADLINE_MS = 2_000;

/** A row of the answer, as plain fields (what the state says, and what the host measured). */
interface NodeResources {
  readonly nodeId: bigint;
  readonly vcpusAllocated: number;
  readonly memoryAllocatedMib: bigint;
  readonly vmCounts: { state: VmState; count: number }[];
  readonly vcpusCapacity: number;
  readonly memoryCapacityMib: bigint;
  readonly vmBackends: string[];
  readonly cpuCores?: number;
  readonly memoryTotalMib?: bigint;
  readonly memoryUsedMib?: bigint;
  readonly reportedAt?: Timestamp;
}
type Summary = MessageInitShape<typeof GetResourceSummaryResponseSchema>;

/** What the Monitoring service is given. */
export interface MonitoringOptions {
  readonly port: ConsensusPort;
  /** A client of member `nodeId`'s services; null when it cannot be reached. */
  readonly nodes: LeaderClients;
  /** The Prometheus text exposition and its content type. */
  readonly metrics: () => Promise<{ text: string; contentType: string }>;
}

/** This host's CPUs and memory, measured now. */
export function hostResources(): Required<
  Pick<NodeResources, "cpuCores" | "memoryTotalMib" | "memoryUsedMib" | "reportedAt">
> {
  const mem = Deno.systemMemoryInfo();
  const mib = (bytes: number) => BigInt(Math.floor(bytes / (1 << 20)));
  return {
    cpuCores: navigator.hardwareConcurrency,
    memoryTotalMib: mib(mem.total),
    memoryUsedMib: mib(mem.total - mem.available),
    reportedAt: timestampNow(),
  };
}

/** What the state says of node `nodeId`: allocation and VMs by state. */
function placed(state: ClusterState, nodeId: bigint): NodeResources {
  let vcpus = 0;
  let memoryMib = 0n;
  const counts = new Map<number, number>();
  for (const r of state.vms()) {
    const vm = r.vm;
    if (vm?.status?.nodeId !== nodeId) continue;
    vcpus += vm.spec?.vcpus ?? 0;
    memoryMib += vm.spec?.memoryMib ?? 0n;
    counts.set(vm.status.state, (counts.get(vm.status.state) ?? 0) + 1);
  }
  const member = state.member(Number(nodeId));
  return {
    nodeId,
    vcpusCapacity: member?.vcpus ?? 0,
    memoryCapacityMib: member?.memoryMib ?? 0n,
    vmBackends: [...(member?.backends ?? [])],
    vcpusAllocated: vcpus,
    memoryAllocatedMib: memoryMib,
    vmCounts: [...counts].sort(([a], [b]) => a - b).map(([state, count]) => ({ state, count })),
  };
}

/** The Monitoring implementation. */
export function monitoringService(o: MonitoringOptions): ServiceImpl<typeof MonitoringService> {
  const { port } = o;
  const members = () => {
    const s = port.status();
    return [...new Set([...s.voters, ...s.learners])].sort((a, b) => a - b);
  };
  const own = async (what: string, nodeId: number) => {
    try {
      return await port.read((s) => placed(s, BigInt(nodeId)));
    } catch (e) {
      throw toRpcError(e, what);
    }
  };

  return {
    async getMetrics() {
      return await o.metrics();
    },

    async getResourceSummary(req, ctx): Promise<Summary> {
      const what = "monitoring.GetResourceSummary";
      if (req.nodeId !== undefined) {
        const id = Number(req.nodeId);
        if (id === port.nodeId) {
          return { nodes: [{ ...await own(what, id), ...hostResources() }] };
        }
        if (!members().includes(id)) {
          throw new RpcError(Code.NOT_FOUND, `${what}: node ${id} is not a cluster member`);
        }
        const client = o.nodes(Monitoring, id);
        if (!client) throw new RpcError(Code.UNAVAILABLE, `${what}: node ${id} cannot be reached`);
        return await client.getResourceSummary(req, {
          deadlineMs: ctx.deadline === null
            ? FAN_OUT_DEADLINE_MS
            : Math.max(1, ctx.deadline - Date.now()),
        });
      }
      let states: Map<number, NodeResources>;
      try {
        states = await port.read((s) =>
          new Map(members().map((id) => [id, placed(s, BigInt(id))]))
        );
      } catch (e) {
        throw toRpcError(e, what);
      }
      const nodes = await Promise.all(
        [...states].map(async ([id, fromState]): Promise<NodeResources> => {
          if (id === port.nodeId) return { ...fromState, ...hostResources() };
          const client = o.nodes(Monitoring, id);
          try {
            if (!client) return fromState;
            const answer = await client.getResourceSummary(
              { nodeId: BigInt(id) },
              { deadlineMs: FAN_OUT_DEADLINE_MS, signal: ctx.signal },
            );
            const theirs = answer.nodes[0];
            // Allocation as this node read it, so every row is of the same moment.
            return theirs
              ? {
                ...fromState,
                cpuCores: theirs.cpuCores,
                memoryTotalMib: theirs.memoryTotalMib,
                memoryUsedMib: theirs.memoryUsedMib,
                ...(theirs.reportedAt ? { reportedAt: theirs.reportedAt } : {}),
              }
              : fromState;
          } catch {
            return fromState;
          }
        }),
      );
      return { nodes };
    },
  };
}
