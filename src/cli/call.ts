/**
 * `blixard health|status`: call a running node and print its answer.
 *
 * Owns: the health and status subcommands and how a cluster's status reads
 * ({@link printStatus}, also used by `cluster join`), human and JSON
 * (docs/cli.md). Imports the service declarations and generated messages,
 * the typed client, and this folder's target and common modules.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createClient } from "../rpc/client.ts";
import { Transport } from "../rpc/gen/blixard/v1/common_pb.ts";
import { serviceNameOf } from "../names.ts";
import { CheckResponseSchema, ServingStatus } from "../rpc/gen/blixard/v1/health_pb.ts";
import {
  type GetClusterStatusResponse,
  GetClusterStatusResponseSchema,
  type GetRaftStatusResponse,
  GetRaftStatusResponseSchema,
  RaftRole,
} from "../rpc/gen/blixard/v1/status_pb.ts";
import {
  type GetResourceSummaryResponse,
  GetResourceSummaryResponseSchema,
} from "../rpc/gen/blixard/v1/monitoring_pb.ts";
import { Health, Monitoring, Status } from "../rpc/services.ts";
import { VmState } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { ExitCode, formatDuration, printJson } from "./common.ts";
import {
  callFailed,
  Dialer,
  parseMs,
  protoJson,
  shortId,
  TARGET_OPTIONS,
  targetHelp,
} from "./target.ts";

/** The options of `blixard health` and `blixard status`: the same, since both only call. */
export const CALL_OPTIONS = {
  ...TARGET_OPTIONS,
  timeout: { type: "string", default: "5000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const TIMEOUT_HELP = "how long to wait for the answer (default 5000)";

export const HEALTH_HELP = `Usage: blixard health (--ticket TICKET | --addr HOST:PORT) [options]

Asks a running node, over Iroh (--ticket) or gRPC (--addr), whether it is
serving, and prints its answer: its node id, state, agent version, uptime,
and the round trip. The exit status is 1 when the node is not serving.

${targetHelp("the node", TIMEOUT_HELP)}
  --json         print the answer as JSON (docs/cli.md)`;

export const STATUS_HELP = `Usage: blixard status (--ticket TICKET | --addr HOST:PORT) [options]

Asks a running node, over Iroh (--ticket) or gRPC (--addr), for the cluster
as it sees it: the members with their role (leader, voter, learner), their
addresses, their VMs by state and the transports of each of their services;
the leader and term; its own Raft state (commit, applied, last log index,
snapshot); and, on the leader, how far each peer's log is (match, next, lag).

${targetHelp("the node", TIMEOUT_HELP)}
  --json         print the answers as JSON (docs/cli.md)`;

/** Runs `blixard health ...` or `blixard status ...`. */
export async function callCommand(command: "health" | "status", args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: CALL_OPTIONS });
  if (values.help) {
    console.log(command === "health" ? HEALTH_HELP : STATUS_HELP);
    return ExitCode.Ok;
  }
  const timeoutMs = parseMs(command, "timeout", values.timeout);
  const dialer = new Dialer(command, values, timeoutMs);
  try {
    const target = await dialer.member();
    const options = { deadlineMs: timeoutMs };
    try {
      if (command === "health") {
        const started = performance.now();
        const res = await createClient(Health, target.channel).check({}, options);
        const rttMs = performance.now() - started;
        if (values.json) {
          printJson({ ...protoJson(CheckResponseSchema, res), roundTripMs: round(rttMs) });
        } else {
          const state = ServingStatus[res.status] ?? `status ${res.status}`;
          console.log(`node ${res.nodeId} (${target.label}): ${state}`);
          console.log(
            `  agent ${res.agentVersion}, up ${formatDuration(Number(res.uptimeMs))}, round trip ${
              round(rttMs)
            } ms`,
          );
          if (res.detail) console.log(`  ${res.detail}`);
        }
        return res.status === ServingStatus.SERVING ? ExitCode.Ok : ExitCode.Failure;
      }
      const status = createClient(Status, target.channel);
      const monitoring = createClient(Monitoring, target.channel);
      const [cluster, raft, resources] = await Promise.all([
        status.getClusterStatus({}, options),
        status.getRaftStatus({}, options),
        // The VM counts are extra: a node that cannot give them still has a status.
        monitoring.getResourceSummary({}, options).catch(() => null),
      ]);
      if (values.json) {
        printJson({
          cluster: protoJson(GetClusterStatusResponseSchema, cluster),
          raft: protoJson(GetRaftStatusResponseSchema, raft),
          resources: resources && protoJson(GetResourceSummaryResponseSchema, resources),
        });
      } else {
        printStatus(cluster, raft, resources);
      }
      return ExitCode.Ok;
    } catch (e) {
      throw callFailed(command, e, target);
    }
  } finally {
    await dialer.close();
  }
}

/** A member's role as the answering node knows it: leader, voter, learner, or "-". */
function roleOf(id: bigint, cluster: GetClusterStatusResponse, raft: GetRaftStatusResponse) {
  if (id === cluster.leaderId) return "leader";
  if (raft.voters.includes(id)) return "voter";
  if (raft.learners.includes(id)) return "learner";
  return "-";
}

/**
 * `2 running, 1 failed` on node `id`, `none`, or `?` when the resource
 * summary did not come or does not list the node.
 */
function vmCounts(id: bigint, resources: GetResourceSummaryResponse | null | undefined): string {
  const node = resources?.nodes.find((n) => n.nodeId === id);
  if (!node) return "?";
  const counts = node.vmCounts.filter((c) => c.count > 0).sort((a, b) => a.state - b.state);
  if (counts.length === 0) return "none";
  return counts.map((c) => `${c.count} ${(VmState[c.state] ?? `state${c.state}`).toLowerCase()}`)
    .join(", ");
}

/**
 * The cluster as one node sees it, for a person: the members with their
 * role, addresses and VMs by state (when `resources` came), the leader and
 * term, the node's Raft state and, on a leader, each peer's progress.
 */
export function printStatus(
  cluster: GetClusterStatusResponse,
  raft: GetRaftStatusResponse,
  resources?: GetResourceSummaryResponse | null,
): void {
  const leader = cluster.leaderId === 0n ? "none known" : `node ${cluster.leaderId}`;
  const count = `${cluster.members.length} member${cluster.members.length === 1 ? "" : "s"}`;
  console.log(
    `cluster: ${count}, leader ${leader}, term ${cluster.term} (as node ${cluster.nodeId} sees it)`,
  );
  if (raft.voters.length === 0 && raft.learners.length === 0) {
    console.log(`  node ${raft.nodeId} is not a member of a cluster yet: it waits to be joined`);
  }
  const rows = cluster.members.map((m) => [
    `${m.nodeId}`,
    roleOf(m.nodeId, cluster, raft),
    m.iroh ? shortId(m.iroh.endpointId) : "-",
    m.iroh?.directAddresses.join(",") || "-",
    m.grpcAddress || "-",
    vmCounts(m.nodeId, resources),
    m.services.map((s) => `${serviceName(s.service)}(${s.transports.map(transportName).join("+")})`)
      .join(" ") ||
    "unknown",
  ]);
  // SERVICES last: it is the longest cell, and nothing after it needs aligning.
  printTable(["NODE", "ROLE", "ENDPOINT", "IROH ADDRESSES", "GRPC", "VMS", "SERVICES"], rows);
  const role = (RaftRole[raft.role] ?? "UNSPECIFIED").toLowerCase().replace("_", "-");
  console.log(
    `raft: node ${raft.nodeId} ${role}, term ${raft.term}, commit ${raft.commitIndex}, ` +
      `applied ${raft.appliedIndex}, last log ${raft.lastLogIndex}, snapshot ${raft.snapshotIndex}`,
  );
  if (raft.peers.length > 0) {
    // Lag: the entries of the leader's log a peer does not have yet.
    printTable(
      ["PEER", "ROLE", "MATCH", "NEXT", "LAG"],
      raft.peers.map((p) => [
        `${p.nodeId}`,
        roleOf(p.nodeId, cluster, raft),
        `${p.matchIndex}`,
        `${p.nextIndex}`,
        `${raft.lastLogIndex > p.matchIndex ? raft.lastLogIndex - p.matchIndex : 0n}`,
      ]),
    );
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function serviceName(id: number): string {
  return serviceNameOf(id) ?? `service${id}`;
}

function transportName(t: Transport): string {
  return (Transport[t] ?? `transport${t}`).toLowerCase();
}

/** Columns padded to their widest cell, two spaces apart, indented by two. */
export function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) {
    console.log("  " + r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
  }
}
