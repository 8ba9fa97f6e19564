/**
 * The typed errors of the Raft core. Callers match on `code`, never on the
 * message text; every message names what was wrong, the value and what is
 * allowed.
 *
 * Owns: the core's error classes. Imports nothing.
 *
 * Three families:
 * - refusals a caller can act on: {@link NotLeaderError} (ask the leader it
 *   names), {@link ProposalDroppedError} (retry later),
 *   {@link ConfChangeRefusedError}, {@link TransferRefusedError},
 *   {@link InvalidProposalError}, {@link RaftConfigError};
 * - bad input from a peer: {@link RaftMessageError}, thrown before the core
 *   changed anything, so the driver can log it and drop the message;
 * - bugs: {@link RaftInvariantError} (a broken invariant of the algorithm or
 *   of a storage: the node must stop rather than go on with a corrupt state)
 *   and {@link RaftUsageError} (the driver called the core out of order).
 *
 * @module
 */

/** A {@link RaftConfig} field holds a value the core cannot run with. */
export class RaftConfigError extends Error {
  override readonly name = "RaftConfigError";
  readonly code = "INVALID_CONFIG";
  /** The field at fault, e.g. `"electionTicks"`. */
  readonly field: string;
  /** The value found. */
  readonly value: unknown;
  constructor(field: string, value: unknown, allowed: string) {
    super(`raft config: ${field} = ${show(value)}: ${allowed}`);
    this.field = field;
    this.value = value;
  }
}

/** Only the leader accepts proposals, config changes, transfers; this node is not it. */
export class NotLeaderError extends Error {
  override readonly name = "NotLeaderError";
  readonly code = "NOT_LEADER";
  /** The leader this node knows of, 0 if none: where to send the request instead. */
  readonly leader: number;
  constructor(id: number, role: string, leader: number, what: string) {
    super(
      `raft: node ${id} is ${role}, not the leader, and cannot ${what}; ` +
        (leader === 0 ? "no leader is known yet" : `the leader is node ${leader}`),
    );
    this.leader = leader;
  }
}

/** Why a leader refused a proposal it could otherwise take. */
export type ProposalDroppedReason =
  /** A leadership transfer is under way; proposals resume when it ends or is aborted. */
  | "transfer_in_progress"
  /** The uncommitted tail of the log is at `maxUncommittedBytes`; retry when it commits. */
  | "uncommitted_bytes"
  /** This leader applied its own removal and is about to step down. */
  | "removed";

/** The leader refused a proposal for now; the same proposal may succeed later. */
export class ProposalDroppedError extends Error {
  override readonly name = "ProposalDroppedError";
  readonly code = "PROPOSAL_DROPPED";
  readonly reason: ProposalDroppedReason;
  constructor(reason: ProposalDroppedReason, message: string) {
    super(`raft: proposal dropped: ${message}`);
    this.reason = reason;
  }
}

/** A proposal that can never be accepted (empty, or larger than `maxEntryBytes`). */
export class InvalidProposalError extends Error {
  override readonly name = "InvalidProposalError";
  readonly code = "INVALID_PROPOSAL";
}

/** Machine-readable reason of a {@link ConfChangeRefusedError}. */
export type ConfChangeRefusedCode =
  /** A configuration change may still be unapplied; one at a time. */
  | "CONF_CHANGE_PENDING"
  /** The leader has not committed an entry of its own term yet (the single-server rule). */
  | "CONF_CHANGE_TOO_EARLY"
  /** The change makes no sense against the current membership. */
  | "CONF_CHANGE_INVALID";

/** The leader refused a membership change. */
export class ConfChangeRefusedError extends Error {
  override readonly name = "ConfChangeRefusedError";
  readonly code: ConfChangeRefusedCode;
  constructor(code: ConfChangeRefusedCode, message: string) {
    super(`raft: configuration change refused: ${message}`);
    this.code = code;
  }
}

/** A leadership transfer to a node that cannot take over (not a voter). */
export class TransferRefusedError extends Error {
  override readonly name = "TransferRefusedError";
  readonly code = "TRANSFER_REFUSED";
}

/**
 * A message the core cannot take: addressed to another node, malformed
 * (entries that do not follow the previous index), a kind the driver should
 * have handled, or contradicting this node's durable log. Thrown before any
 * state changed.
 */
export class RaftMessageError extends Error {
  override readonly name = "RaftMessageError";
  readonly code = "INVALID_MESSAGE";
}

/**
 * An invariant of the algorithm or of the storage does not hold. The node's
 * state can no longer be trusted; the driver must stop the node.
 */
export class RaftInvariantError extends Error {
  override readonly name = "RaftInvariantError";
  readonly code = "INVARIANT_VIOLATED";
  constructor(message: string) {
    super(`raft invariant violated: ${message}`);
  }
}

/** The driver called the core out of order (e.g. `ready()` twice without `advance()`). */
export class RaftUsageError extends Error {
  override readonly name = "RaftUsageError";
  readonly code = "MISUSE";
}

function show(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}
