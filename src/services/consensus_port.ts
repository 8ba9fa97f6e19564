/**
 * What the services that change cluster state need of consensus, and how its
 * failures become RPC status codes, in one place.
 *
 * Owns: {@link ConsensusPort}, {@link LeaderClients}, {@link toRpcError}
 * for consensus errors, {@link applyResultOrThrow}, {@link onLeader} (run
 * here or forward to the leader) and {@link deadlineOf}. Imports the driver's
 * types, the state machine's types, `rpc/` and `src/raft/` (membership
 * change types).
 *
 * The codes say what a caller may do next:
 * - UNAVAILABLE: nothing happened (no leader known, the node is stopping
 *   before it proposed, leadership is being transferred); retry anywhere.
 * - ABORTED: the write was proposed but another leader's entry took its
 *   place: it was not applied; retry.
 * - UNKNOWN: the node stopped, or the write was not applied within the
 *   driver's proposal timeout; it may or may not be applied: retry with the
 *   same request id to learn which.
 * - DEADLINE_EXCEEDED (from the call's deadline): as UNKNOWN.
 * - FAILED_PRECONDITION: consensus refused it now (another membership change
 *   is pending, a transfer is in progress); retry later.
 *
 * @module
 */

import { ConsensusError } from "../consensus/driver.ts";
import type { ConfChange, Status } from "../raft/mod.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import type { Client, ServiceInfo } from "../rpc/services.ts";
import type { ApplyResult, ClusterState, Command, MemberRecord } from "../state/cluster_state.ts";

/** Consensus as the services use it (the driver, seen through the node). */
export interface ConsensusPort {
  /** This node's id. */
  readonly nodeId: number;
  /** The leader this node knows; 0 for none. */
  leader(): number;
  /** Proposes a command on the leader; throws ConsensusError NOT_LEADER elsewhere. */
  propose(command: Command): Promise<ApplyResult>;
  /** A linearizable read of the state machine. */
  read<T>(read: (state: ClusterState) => T): Promise<T>;
  /** Changes the membership (leader only). */
  changeMembership(change: ConfChange): Promise<void>;
  /** Starts a leadership transfer (leader only). */
  transferLeadership(to: number): void;
  /** The core's status. */
  status(): Status;
  /** The members' records. */
  members(): MemberRecord[];
}

/** A typed client of a service on the leader, to forward to; null when it cannot be reached. */
export type LeaderClients = <S extends ServiceInfo>(
  service: S,
  leader: number,
) => Client<S["desc"]> | null;

/** A consensus error as the RPC status a caller acts on (see the module doc). */
export function toRpcError(e: unknown, what: string): unknown {
  if (!(e instanceof ConsensusError)) return e;
  switch (e.code) {
    case "NOT_LEADER":
    case "UNAVAILABLE":
      return new RpcError(Code.UNAVAILABLE, `${what}: ${e.message}`);
    case "LOST":
      return new RpcError(Code.ABORTED, `${what}: ${e.message}`);
    case "REFUSED":
      return new RpcError(Code.FAILED_PRECONDITION, `${what}: ${e.message}`);
    case "STOPPED":
    case "FAILED":
    case "UNKNOWN":
      return new RpcError(
        Code.UNKNOWN,
        `${what}: ${e.message}; the outcome is unknown: retry with the same request id to learn it`,
      );
  }
}

const STATE_CODES = {
  INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
  RESOURCE_EXHAUSTED: Code.RESOURCE_EXHAUSTED,
  NOT_FOUND: Code.NOT_FOUND,
  ALREADY_EXISTS: Code.ALREADY_EXISTS,
  DATA_LOSS: Code.DATA_LOSS,
} as const;

/** The successful result of applying, or the RpcError the state machine's refusal means. */
export function applyResultOrThrow<K extends Extract<ApplyResult, { ok: true }>["kind"]>(
  result: ApplyResult,
  kind: K,
  what: string,
): Extract<ApplyResult, { ok: true; kind: K }> {
  if (!result.ok) throw new RpcError(STATE_CODES[result.code], `${what}: ${result.message}`);
  if (result.kind !== kind) {
    // A retry whose request id named a write of another kind: its first result stands.
    throw new RpcError(
      Code.ALREADY_EXISTS,
      `${what}: the request id was already used by a ${result.kind.replace("_", " ")}`,
    );
  }
  return result as Extract<ApplyResult, { ok: true; kind: K }>;
}

/**
 * Runs `local` on this node if it leads; else forwards the call to the
 * leader with `forward`. Either way consensus errors become RPC errors.
 */
export async function onLeader<T>(
  port: ConsensusPort,
  what: string,
  local: () => Promise<T>,
  forward: (leader: number) => Promise<T> | null,
): Promise<T> {
  try {
    return await local();
  } catch (e) {
    if (!(e instanceof ConsensusError) || e.code !== "NOT_LEADER" || e.leader === 0) {
      throw toRpcError(e, what);
    }
    const forwarded = forward(e.leader);
    if (forwarded === null) {
      throw new RpcError(
        Code.UNAVAILABLE,
        `${what}: node ${port.nodeId} is not the leader and cannot reach node ${e.leader}, which is`,
      );
    }
    return await forwarded;
  }
}

/** The rest of a call's deadline (`Date.now()` ms, or null), for the call it forwards. */
export function deadlineOf(deadline: number | null): { deadlineMs?: number } {
  if (deadline === null) return {};
  return { deadlineMs: Math.max(1, deadline - Date.now()) };
}
