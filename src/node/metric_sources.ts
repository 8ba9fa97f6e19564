/**
 * The node's parts as the metrics read them at scrape time: Raft's status,
 * the inbox and outbox, VMs by state, the listeners and readiness, turned
 * into the plain numbers of {@link MetricSources}.
 *
 * Owns: {@link metricSources}. Imports the metrics' types, the core's roles,
 * the driver's, the state machine's and the outbox's types, the generated
 * VM states, and this folder's inbox; the listeners and readiness are read
 * through the functions given.
 *
 * @module
 */

import type { MetricSources } from "../metrics/registry.ts";
import type { TransportName } from "../names.ts";
import { Role } from "../raft/mod.ts";
import { VmState } from "../rpc/gen/blixard/v1/vm_pb.ts";
import type { RaftOutbox } from "../runner/raft_outbox.ts";
import type { ClusterState } from "../state/cluster_state.ts";
import type { RaftDriver } from "../consensus/driver.ts";
import type { RaftInbox } from "./raft_inbox.ts";

/** What {@link metricSources} reads. */
export interface NodeParts {
  readonly nodeId: number;
  readonly inbox: RaftInbox;
  readonly outbox: RaftOutbox;
  /** The driver once consensus runs. */
  driver(): RaftDriver | null;
  listeners(): readonly TransportName[];
  ready(): boolean;
}

const ROLE_LABELS = {
  [Role.Follower]: "follower",
  [Role.PreCandidate]: "pre_candidate",
  [Role.Candidate]: "candidate",
  [Role.Leader]: "leader",
} as const;

/** The node's metric sources. */
export function metricSources(p: NodeParts): MetricSources {
  return {
    raft: () => {
      const driver = p.driver();
      if (!driver) return null;
      let s;
      try {
        s = driver.status();
      } catch {
        // Storage closed (the node stopped) or failed: nothing to report.
        return null;
      }
      return {
        term: s.term,
        role: ROLE_LABELS[s.role],
        leader: s.leader,
        commit: s.commit,
        applied: driver.state.appliedIndex,
        voters: s.voters.length,
        learners: s.learners.length,
      };
    },
    inbox: () => ({
      depth: p.inbox.depths(),
      accepted: p.inbox.stats.accepted,
      dropped: p.inbox.stats.dropped,
      denied: p.inbox.stats.denied,
    }),
    outbox: () => ({
      depth: p.outbox.depths(),
      sent: p.outbox.stats.sent,
      dropped: p.outbox.stats.dropped,
      byTransport: p.outbox.stats.byTransport,
    }),
    vms: () => {
      const driver = p.driver();
      return driver ? vmsByState(driver.state, p.nodeId) : null;
    },
    listeners: () => p.listeners(),
    ready: () => p.ready(),
  };
}

/** VMs by state (the `state` label: the enum's name in lower case). */
function vmsByState(
  state: ClusterState,
  nodeId: number,
): { node: Map<string, number>; cluster: Map<string, number> } {
  const node = new Map<string, number>();
  const cluster = new Map<string, number>();
  for (const record of state.vms()) {
    const status = record.vm?.status;
    const label = (VmState[status?.state ?? VmState.UNSPECIFIED] ?? "unspecified").toLowerCase();
    cluster.set(label, (cluster.get(label) ?? 0) + 1);
    if (status && Number(status.nodeId) === nodeId) node.set(label, (node.get(label) ?? 0) + 1);
  }
  return { node, cluster };
}
