/**
 * The Raft consensus core: a pure, deterministic state machine. Messages go
 * in through {@link RaftCore.step}, time through {@link RaftCore.tick}, and
 * everything it wants done comes out of {@link RaftCore.ready} as one
 * {@link Ready}; the driver does the I/O and calls {@link RaftCore.advance}.
 *
 * Owns: {@link RaftCore}. Imports the rest of `src/raft/` and the codec's
 * message types; nothing of the transports, no storage implementation, no
 * timer, no clock, and no randomness but the configured source.
 *
 * The algorithm is Raft (Ongaro's thesis) in the shape of etcd's raft:
 * PreVote (§9.6) and CheckQuorum with leader stickiness, batched and
 * pipelined replication with per-follower flow control, fast backtracking
 * by the rejecting follower's hint, snapshots, single-server membership
 * changes with learners, leadership transfer (§3.10), and ReadIndex reads
 * (§6.4). docs/raft.md describes the API and the rules.
 *
 * Every method is synchronous and runs to completion; a violated invariant
 * throws {@link RaftInvariantError} rather than go on with a corrupt state.
 *
 * @module
 */

import { EntryKind, RaftMessageKind } from "../codec/raft.ts";
import type {
  AppendEntriesRequest,
  AppendEntriesResponse,
  Entry,
  Heartbeat,
  HeartbeatResponse,
  PreVoteRequest,
  PreVoteResponse,
  ReadIndexResponse,
  VoteRequest,
  VoteResponse,
} from "../codec/raft.ts";
import { type RaftConfig, type ResolvedRaftConfig, resolveRaftConfig } from "./config.ts";
import {
  ConfChangeRefusedError,
  InvalidProposalError,
  NotLeaderError,
  ProposalDroppedError,
  RaftConfigError,
  RaftInvariantError,
  RaftMessageError,
  RaftUsageError,
  TransferRefusedError,
} from "./errors.ts";
import { RaftLog } from "./log.ts";
import { type ConfChange, describeConfChange, encodeConfChange, Membership } from "./membership.ts";
import {
  type CoreMessage,
  coreMessageKindName,
  isSnapshotChunkKind,
  SNAPSHOT_MESSAGE,
  type SnapshotMessage,
} from "./messages.ts";
import { Progress, ProgressState } from "./progress.ts";
import { majority, quorumIndex, VoteResult, voteResult } from "./quorum.ts";
import { ReadIndexQueue } from "./read_index.ts";
import { type PeerStatus, type ReadState, type Ready, Role, type Status } from "./ready.ts";
import type { ConfState, LogReader, Snapshot } from "./storage.ts";

/** Where a proposal was appended; it is committed once the commit index reaches `index` in `term`. */
export interface Proposed {
  /** The entry's log index. */
  readonly index: number;
  /** The leader's term it was appended in; a different entry at `index` means it was lost. */
  readonly term: number;
}

/** How an election starts. */
type CampaignKind = "pre-vote" | "election" | "transfer";

/** What the Ready handed out and not yet advanced held. */
interface Outstanding {
  readonly lastIndex: number;
  readonly lastTerm: number;
  readonly snapshot: Snapshot | undefined;
  readonly committedLast: number;
  readonly committedBytes: number;
}

interface AwaitingRead {
  readonly context: number;
  readonly from: number;
}

const EMPTY = new Uint8Array(0);
const NO_ENTRIES: readonly Entry[] = Object.freeze([]);
const NO_READS: readonly ReadState[] = Object.freeze([]);

/** One node's consensus state machine. */
export class RaftCore {
  /** This node's id. */
  readonly id: number;
  readonly #cfg: ResolvedRaftConfig;
  readonly #log: RaftLog;

  #term: number;
  #vote: number;
  #leader = 0;
  #role: Role = Role.Follower;
  #membership: Membership;
  #progress = new Map<number, Progress>();
  #votes = new Map<number, boolean>();

  #electionElapsed = 0;
  #heartbeatElapsed = 0;
  #randomizedElectionTimeout = 0;
  #leadTransferee = 0;
  /** Index of the latest config change this leader appended (or may have inherited). */
  #pendingConfIndex = 0;
  /** Data bytes this leader appended and has not yet seen applied. */
  #uncommittedBytes = 0;

  readonly #reads = new ReadIndexQueue();
  #readsAwaitingCommit: AwaitingRead[] = [];
  #readStates: ReadState[] = [];
  #messages: CoreMessage[] = [];
  /** Appends to every follower are due at the next `ready()` (batched proposals, a commit to spread). */
  #appendsPending = false;

  #prevRole: Role = Role.Follower;
  #prevLeader = 0;
  #prevTerm: number;
  #prevVote: number;
  #prevCommit: number;
  #outstanding: Outstanding | undefined;
  /** Highest commit index this instance has seen: it never goes back. */
  #maxCommit: number;
  readonly #scratch: number[] = [];

  /**
   * Starts a node from what `storage` holds (term, vote, commit, membership
   * and log): a fresh node, or one restarting after a crash. It starts as a
   * follower with no known leader.
   *
   * @throws {RaftConfigError} for a bad field of `config` (or an `applied`
   *   outside the storage's snapshot index .. commit index).
   * @throws {RaftInvariantError} if the storage contradicts itself.
   */
  constructor(config: RaftConfig, storage: LogReader) {
    const cfg = resolveRaftConfig(config);
    this.#cfg = cfg;
    this.id = cfg.id;
    const { hardState, confState } = storage.initialState();
    // The storage may keep a few entries the snapshot covers: entries after
    // firstIndex() - 1 can be applied, and the snapshot's index is committed.
    const snapshotIndex = storage.snapshot().meta.index;
    const lowestApplied = storage.firstIndex() - 1;
    const commit = Math.max(hardState.commit, snapshotIndex);
    const applied = cfg.applied ?? snapshotIndex;
    if (applied < lowestApplied || applied > commit) {
      throw new RaftConfigError(
        "applied",
        applied,
        `expected ${lowestApplied}..${commit} (the index before the storage's first entry to its commit index)`,
      );
    }
    this.#log = new RaftLog(storage, commit, applied);
    this.#term = hardState.term;
    this.#vote = hardState.vote;
    this.#membership = Membership.from(confState);
    this.#syncProgress();
    this.#becomeFollower(this.#term, 0);
    this.#prevTerm = this.#term;
    this.#prevVote = this.#vote;
    this.#prevCommit = this.#log.committed;
    this.#maxCommit = this.#log.committed;
  }

  // ---------------------------------------------------------------- inputs

  /** Advances time by one tick: elections time out, leaders send heartbeats. */
  tick(): void {
    if (this.#role === Role.Leader) this.#tickLeader();
    else this.#tickElection();
    this.#assertInvariants();
  }

  /**
   * Takes one message from a peer (or, for a snapshot, from the driver that
   * reassembled it). The core keeps references to the message's entries and
   * snapshot: their bytes must not be reused.
   *
   * @throws {RaftMessageError} for a message this node cannot take (another
   *   node's, malformed, a snapshot chunk); nothing changed then.
   */
  step(msg: CoreMessage): void {
    this.#checkMessage(msg);
    if (msg.term > this.#term) {
      if (msg.kind === RaftMessageKind.VoteRequest || msg.kind === RaftMessageKind.PreVoteRequest) {
        // Leader stickiness (thesis §4.2.3): a node that heard from a leader
        // within the minimum election timeout keeps it, unless the leader
        // itself asked for the election by a transfer.
        const inLease = this.#cfg.checkQuorum && this.#leader !== 0 &&
          this.#electionElapsed < this.#cfg.electionTicks;
        if (inLease && !msg.transfer) return;
      }
      if (
        msg.kind === RaftMessageKind.PreVoteRequest ||
        (msg.kind === RaftMessageKind.PreVoteResponse && msg.granted)
      ) {
        // Pre-votes are about a future term and never change ours.
      } else {
        const fromLeader = msg.kind === RaftMessageKind.AppendEntriesRequest ||
          msg.kind === RaftMessageKind.Heartbeat || msg.kind === SNAPSHOT_MESSAGE;
        this.#becomeFollower(msg.term, fromLeader ? msg.from : 0);
      }
    } else if (msg.term < this.#term) {
      this.#stepStale(msg);
      this.#assertInvariants();
      return;
    }

    switch (msg.kind) {
      case RaftMessageKind.PreVoteRequest:
      case RaftMessageKind.VoteRequest:
        this.#onVoteRequest(msg);
        break;
      case RaftMessageKind.ReadIndexResponse:
        this.#onReadIndexResponse(msg);
        break;
      default:
        if (this.#role === Role.Leader) this.#stepLeader(msg);
        else if (this.#role === Role.Follower) this.#stepFollower(msg);
        else this.#stepCandidate(msg);
    }
    this.#assertInvariants();
  }

  /**
   * Starts an election now (with a PreVote round when configured), as if the
   * election timeout had passed. Does nothing on a leader, a learner, a node
   * outside the membership, or one with committed membership changes still
   * to apply.
   */
  campaign(): void {
    this.#hup(this.#cfg.preVote ? "pre-vote" : "election");
    this.#assertInvariants();
  }

  /**
   * Appends `data` as a new entry, if this node leads. The core keeps a
   * reference to `data`: do not change it afterwards.
   *
   * @returns where it was appended.
   * @throws {NotLeaderError} naming the known leader.
   * @throws {ProposalDroppedError} during a leadership transfer, when the
   *   uncommitted tail is full, or after this leader applied its removal.
   * @throws {InvalidProposalError} for empty data (reserved for a new
   *   leader's no-op) or data over `maxEntryBytes`.
   */
  propose(data: Uint8Array): Proposed {
    this.#checkCanPropose("propose");
    if (!(data instanceof Uint8Array)) {
      throw new InvalidProposalError(
        `raft: proposal data is ${typeof data}: expected a Uint8Array`,
      );
    }
    if (data.length === 0) {
      throw new InvalidProposalError(
        "raft: proposal data is empty: empty entries are reserved for a new leader's no-op",
      );
    }
    this.#checkEntrySize(data.length);
    this.#admitUncommitted(data.length);
    const index = this.#appendOwn(EntryKind.Normal, data);
    this.#assertInvariants();
    return { index, term: this.#term };
  }

  /**
   * Appends a membership change, if this node leads and may change the
   * membership now: it committed an entry of its own term, no earlier change
   * is still unapplied, and the change makes sense (docs/raft.md has the
   * rules). It takes effect on each node when that node applies it
   * ({@link applyConfChange}).
   *
   * @throws {NotLeaderError}, {@link ProposalDroppedError} as {@link propose}.
   * @throws {ConfChangeRefusedError} with code `CONF_CHANGE_TOO_EARLY`,
   *   `CONF_CHANGE_PENDING` or `CONF_CHANGE_INVALID`.
   */
  proposeConfChange(change: ConfChange): Proposed {
    this.#checkCanPropose("propose a configuration change");
    const log = this.#log;
    if (log.term(log.committed) !== this.#term) {
      throw new ConfChangeRefusedError(
        "CONF_CHANGE_TOO_EARLY",
        `the leader of term ${this.#term} has not committed an entry of its term yet ` +
          `(commit ${log.committed}); retry once its first entry commits`,
      );
    }
    if (this.#pendingConfIndex > log.applied) {
      throw new ConfChangeRefusedError(
        "CONF_CHANGE_PENDING",
        `entries up to index ${this.#pendingConfIndex} may hold a configuration change and are not ` +
          `all applied (applied ${log.applied}); one change at a time`,
      );
    }
    const refusal = this.#membership.refusal(change);
    if (refusal !== undefined) {
      throw new ConfChangeRefusedError(
        "CONF_CHANGE_INVALID",
        `${describeConfChange(change)}: ${refusal}`,
      );
    }
    const data = encodeConfChange(change);
    this.#checkEntrySize(data.length);
    this.#admitUncommitted(data.length);
    const index = this.#appendOwn(EntryKind.ConfigChange, data);
    this.#pendingConfIndex = index;
    this.#assertInvariants();
    return { index, term: this.#term };
  }

  /**
   * Applies a committed membership change to this node; the driver calls it
   * for each ConfigChange entry of `committedEntries`, in order. A leader
   * that applies its own removal steps down.
   *
   * @returns the membership now, to store with the next snapshot.
   */
  applyConfChange(change: ConfChange): ConfState {
    this.#membership.apply(change);
    this.#syncProgress();
    const confState = this.#membership.confState();
    if (this.#role === Role.PreCandidate || this.#role === Role.Candidate) {
      // A node that is no longer a voter must not win on the others' votes.
      if (!this.#promotable()) this.#becomeFollower(this.#term, 0);
    } else if (this.#role === Role.Leader) {
      const self = this.#progress.get(this.id);
      if (self === undefined || self.isLearner) {
        this.#becomeFollower(this.#term, 0);
      } else {
        if (this.#maybeCommit()) {
          this.#onCommitAdvanced();
        } else {
          // Start feeding new members at once rather than at the next proposal.
          for (const id of this.#progress.keys()) {
            if (id !== this.id) this.#sendAppend(id, false);
          }
        }
        if (this.#leadTransferee !== 0 && !this.#membership.voters.has(this.#leadTransferee)) {
          this.#leadTransferee = 0;
        }
        this.#releaseConfirmedReads();
      }
    }
    this.#assertInvariants();
    return confState;
  }

  /**
   * Asks for a linearizable read. The answer comes back as a
   * {@link ReadState} with the same `context` in a later Ready; serve the
   * read once the state machine has applied its `index`. On a follower the
   * request goes to the leader. A leader answers only after it committed an
   * entry of its term and a quorum confirmed its leadership.
   *
   * @throws {NotLeaderError} (leader 0) when no leader is known.
   * @throws {RaftUsageError} for a context that is not an integer 0..2^53-1.
   */
  readIndex(context: number): void {
    if (!Number.isSafeInteger(context) || context < 0) {
      throw new RaftUsageError(`raft: read context ${context}: expected an integer 0..2^53-1`);
    }
    if (this.#role === Role.Leader) {
      this.#onRead(context, this.id);
    } else if (this.#leader !== 0) {
      this.#send({
        kind: RaftMessageKind.ReadIndexRequest,
        from: this.id,
        to: this.#leader,
        term: this.#term,
        readContext: context,
      });
    } else {
      throw new NotLeaderError(this.id, this.#role, 0, "serve a read");
    }
    this.#assertInvariants();
  }

  /**
   * Hands leadership to voter `to` (thesis §3.10): stops taking proposals,
   * brings `to` up to date, then tells it to campaign at once. Aborted after
   * an election timeout without success. Nothing happens if `to` is this
   * node or already the target.
   *
   * @throws {NotLeaderError} when this node does not lead.
   * @throws {TransferRefusedError} when `to` is not a voter.
   */
  transferLeadership(to: number): void {
    if (this.#role !== Role.Leader) {
      throw new NotLeaderError(this.id, this.#role, this.#leader, "transfer leadership");
    }
    if (to === this.id || to === this.#leadTransferee) return;
    if (!this.#membership.voters.has(to)) {
      throw new TransferRefusedError(
        `raft: cannot transfer leadership to node ${to}: not a voter ` +
          `(voters ${this.#membership.confState().voters.join(", ")})`,
      );
    }
    this.#leadTransferee = to;
    this.#electionElapsed = 0;
    const pr = this.#progress.get(to)!;
    if (pr.match === this.#log.lastIndex()) this.#sendTimeoutNow(to);
    else this.#sendAppend(to, true);
    this.#assertInvariants();
  }

  /**
   * The driver could not deliver a message to `id`: appends in flight are
   * probably lost, so the leader probes it again rather than stream blindly.
   */
  reportUnreachable(id: number): void {
    if (this.#role !== Role.Leader) return;
    const pr = this.#progress.get(id);
    if (pr !== undefined && pr.state === ProgressState.Replicate) pr.becomeProbe();
  }

  /**
   * The driver finished (`ok`) or gave up on (`!ok`) sending a snapshot to
   * `id`. Either way the leader probes the follower again after its next
   * answer or heartbeat response; after a failure it probes from before the
   * snapshot, so a new one is sent if still needed.
   */
  reportSnapshot(id: number, ok: boolean): void {
    if (this.#role !== Role.Leader) return;
    const pr = this.#progress.get(id);
    if (pr === undefined || pr.state !== ProgressState.Snapshot) return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    pr.paused = true;
  }

  // --------------------------------------------------------------- outputs

  /** True if {@link ready} has anything to hand out. Cheap: no allocation. */
  hasReady(): boolean {
    if (this.#messages.length > 0 || this.#appendsPending || this.#readStates.length > 0) {
      return true;
    }
    if (this.#role !== this.#prevRole || this.#leader !== this.#prevLeader) return true;
    const log = this.#log;
    if (
      this.#term !== this.#prevTerm || this.#vote !== this.#prevVote ||
      log.committed !== this.#prevCommit
    ) return true;
    return log.hasUnpersisted() || log.hasSnapshotToHandOut() || log.hasCommittedToApply();
  }

  /**
   * The work to do now (see {@link Ready} for the order). Call
   * {@link advance} once it is done before the next `ready()`; `step`,
   * `tick` and the other inputs may be called in between.
   *
   * @throws {RaftUsageError} if the previous Ready was not advanced.
   */
  ready(): Ready {
    if (this.#outstanding !== undefined) {
      throw new RaftUsageError("raft: ready() called again before advance() of the previous Ready");
    }
    if (this.#appendsPending) {
      this.#appendsPending = false;
      if (this.#role !== Role.Leader) {
        throw new RaftInvariantError(`node ${this.id}: appends due as ${this.#role}`);
      }
      this.#broadcastAppend();
    }
    this.#reads.closeRound();
    const log = this.#log;
    const snapshot = log.takeSnapshot();
    const entries = log.takeUnpersisted();
    const committedEntries = log.takeCommitted(this.#cfg.maxCommittedBytesPerReady);
    let committedBytes = 0;
    for (let i = 0; i < committedEntries.length; i++) {
      committedBytes += committedEntries[i]!.data.length;
    }

    let softState: Ready["softState"];
    if (this.#role !== this.#prevRole || this.#leader !== this.#prevLeader) {
      softState = { role: this.#role, leader: this.#leader };
      this.#prevRole = this.#role;
      this.#prevLeader = this.#leader;
    }
    let hardState: Ready["hardState"];
    if (
      this.#term !== this.#prevTerm || this.#vote !== this.#prevVote ||
      log.committed !== this.#prevCommit
    ) {
      hardState = { term: this.#term, vote: this.#vote, commit: log.committed };
      this.#prevTerm = this.#term;
      this.#prevVote = this.#vote;
      this.#prevCommit = log.committed;
    }
    const messages = this.#messages;
    this.#messages = [];
    let readStates = NO_READS;
    if (this.#readStates.length > 0) {
      readStates = this.#readStates;
      this.#readStates = [];
    }
    const last = entries.length > 0 ? entries[entries.length - 1]! : undefined;
    this.#outstanding = {
      lastIndex: last?.index ?? 0,
      lastTerm: last?.term ?? 0,
      snapshot,
      committedLast: committedEntries.length > 0
        ? committedEntries[committedEntries.length - 1]!.index
        : 0,
      committedBytes,
    };
    return { softState, hardState, entries, snapshot, messages, committedEntries, readStates };
  }

  /**
   * Reports that the last Ready was done: its state persisted, its
   * messages sent, its committed entries applied.
   *
   * @throws {RaftUsageError} without a Ready outstanding.
   */
  advance(): void {
    const done = this.#outstanding;
    if (done === undefined) {
      throw new RaftUsageError("raft: advance() called without a ready() to advance");
    }
    this.#outstanding = undefined;
    const log = this.#log;
    if (done.snapshot !== undefined) log.snapshotPersisted(done.snapshot);
    if (done.lastIndex !== 0) log.stableTo(done.lastIndex, done.lastTerm);
    if (done.committedLast > log.applied) {
      log.appliedTo(done.committedLast);
      this.#uncommittedBytes = Math.max(0, this.#uncommittedBytes - done.committedBytes);
    }
    if (this.#role === Role.Leader) {
      // The leader counts its own copy only once it is durable.
      const self = this.#progress.get(this.id);
      if (self !== undefined && self.maybeUpdate(log.stableIndex()) && this.#maybeCommit()) {
        this.#onCommitAdvanced();
      }
    }
    this.#assertInvariants();
  }

  /** The node's consensus state now. Allocates; for status pages and metrics, not hot paths. */
  status(): Status {
    const log = this.#log;
    const cs = this.#membership.confState();
    const peers: PeerStatus[] = [];
    if (this.#role === Role.Leader) {
      for (const [id, pr] of this.#progress) {
        peers.push({
          id,
          match: pr.match,
          next: pr.next,
          state: pr.state,
          recentActive: id === this.id || pr.recentActive,
          paused: pr.isPaused(),
          inflight: pr.inflights.count,
          isLearner: pr.isLearner,
          pendingSnapshot: pr.pendingSnapshot,
        });
      }
      peers.sort((a, b) => a.id - b.id);
    }
    return {
      id: this.id,
      term: this.#term,
      vote: this.#vote,
      role: this.#role,
      leader: this.#leader,
      commit: log.committed,
      applied: log.applied,
      firstIndex: log.firstIndex(),
      lastIndex: log.lastIndex(),
      leadTransferee: this.#leadTransferee,
      voters: cs.voters,
      learners: cs.learners,
      peers,
    };
  }

  // ------------------------------------------------------- role transitions

  #reset(term: number): void {
    if (term < this.#term) {
      throw new RaftInvariantError(
        `node ${this.id}: term would go back from ${this.#term} to ${term}`,
      );
    }
    if (term !== this.#term) {
      this.#term = term;
      this.#vote = 0;
    }
    if (this.#role === Role.Leader) this.#failPendingReads();
    this.#leader = 0;
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    this.#randomizeElectionTimeout();
    this.#leadTransferee = 0;
    this.#votes.clear();
    const next = this.#log.lastIndex() + 1;
    for (const [id, pr] of this.#progress) {
      const fresh = new Progress(next, this.#cfg.maxInflightMsgs, pr.isLearner);
      if (id === this.id) fresh.match = this.#log.stableIndex();
      this.#progress.set(id, fresh);
    }
    this.#pendingConfIndex = 0;
    this.#uncommittedBytes = 0;
    // Appends deferred to the next Ready belong to the leadership that is ending.
    this.#appendsPending = false;
  }

  #becomeFollower(term: number, leader: number): void {
    this.#reset(term);
    this.#role = Role.Follower;
    this.#leader = leader;
  }

  #becomePreCandidate(): void {
    if (this.#role === Role.Leader) {
      throw new RaftInvariantError(`node ${this.id}: leader -> pre-candidate`);
    }
    // Term and vote stay: a pre-vote must not disturb anyone.
    this.#role = Role.PreCandidate;
    this.#leader = 0;
    this.#votes.clear();
    this.#electionElapsed = 0;
    this.#randomizeElectionTimeout();
  }

  #becomeCandidate(): void {
    if (this.#role === Role.Leader) {
      throw new RaftInvariantError(`node ${this.id}: leader -> candidate`);
    }
    this.#reset(this.#term + 1);
    this.#vote = this.id;
    this.#role = Role.Candidate;
  }

  #becomeLeader(): void {
    if (this.#role !== Role.Candidate) {
      throw new RaftInvariantError(`node ${this.id}: ${this.#role} -> leader without an election`);
    }
    this.#reset(this.#term);
    this.#role = Role.Leader;
    this.#leader = this.id;
    const self = this.#progress.get(this.id)!;
    self.becomeReplicate();
    self.recentActive = true;
    // An unapplied change may hide in the log inherited; wait until all of it
    // is applied before accepting a new one.
    this.#pendingConfIndex = this.#log.lastIndex();
    // The no-op commits the log inherited (only entries of the current term
    // are committed by counting, §5.4.2) and lets reads and config changes start.
    this.#appendOwn(EntryKind.Normal, EMPTY);
  }

  #randomizeElectionTimeout(): void {
    const base = this.#cfg.electionTicks;
    this.#randomizedElectionTimeout = base + this.#cfg.random.nextInt(base);
  }

  // ----------------------------------------------------------------- ticks

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#randomizedElectionTimeout && this.#promotable()) {
      this.#electionElapsed = 0;
      this.#hup(this.#cfg.preVote ? "pre-vote" : "election");
    }
  }

  #tickLeader(): void {
    this.#heartbeatElapsed++;
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#cfg.electionTicks) {
      this.#electionElapsed = 0;
      if (this.#cfg.checkQuorum) {
        if (!this.#quorumActive()) {
          this.#becomeFollower(this.#term, 0);
          return;
        }
        for (const [id, pr] of this.#progress) if (id !== this.id) pr.recentActive = false;
      }
      // A transfer that did not finish within an election timeout is abandoned.
      this.#leadTransferee = 0;
    }
    if (this.#heartbeatElapsed >= this.#cfg.heartbeatTicks) {
      this.#heartbeatElapsed = 0;
      this.#broadcastHeartbeat(this.#reads.latestRound());
    }
  }

  #quorumActive(): boolean {
    let active = 0;
    for (const id of this.#membership.voters) {
      if (id === this.id || this.#progress.get(id)?.recentActive) active++;
    }
    return active >= majority(this.#membership.voters.size);
  }

  // -------------------------------------------------------------- elections

  #promotable(): boolean {
    const self = this.#progress.get(this.id);
    return self !== undefined && !self.isLearner && !this.#log.hasPendingSnapshot();
  }

  #hup(kind: CampaignKind): void {
    if (this.#role === Role.Leader || !this.#promotable() || this.#hasUnappliedConfChanges()) {
      return;
    }
    this.#campaign(kind);
  }

  /** Campaigning with a committed but unapplied membership change could count the wrong voters. */
  #hasUnappliedConfChanges(): boolean {
    const log = this.#log;
    let lo = Math.max(log.applied + 1, log.firstIndex());
    const hi = log.committed + 1;
    while (lo < hi) {
      const page = log.entries(lo, hi, this.#cfg.maxCommittedBytesPerReady);
      for (let i = 0; i < page.length; i++) {
        if (page[i]!.kind === EntryKind.ConfigChange) return true;
      }
      lo += page.length;
    }
    return false;
  }

  #campaign(kind: CampaignKind): void {
    let term: number;
    let requestKind: typeof RaftMessageKind.PreVoteRequest | typeof RaftMessageKind.VoteRequest;
    if (kind === "pre-vote") {
      this.#becomePreCandidate();
      term = this.#term + 1;
      requestKind = RaftMessageKind.PreVoteRequest;
    } else {
      this.#becomeCandidate();
      term = this.#term;
      requestKind = RaftMessageKind.VoteRequest;
    }
    if (this.#poll(this.id, true) === VoteResult.Won) {
      if (kind === "pre-vote") this.#campaign("election");
      else this.#becomeLeader();
      return;
    }
    const lastLogIndex = this.#log.lastIndex();
    const lastLogTerm = this.#log.lastTerm();
    const transfer = kind === "transfer";
    for (const to of this.#membership.voters) {
      if (to === this.id) continue;
      const request: PreVoteRequest | VoteRequest = {
        kind: requestKind,
        from: this.id,
        to,
        term,
        lastLogIndex,
        lastLogTerm,
        transfer,
      };
      this.#send(request);
    }
  }

  #poll(from: number, granted: boolean): VoteResult {
    if (!this.#votes.has(from)) this.#votes.set(from, granted);
    return voteResult(this.#membership.voters, this.#votes);
  }

  #onVoteRequest(m: PreVoteRequest | VoteRequest): void {
    const pre = m.kind === RaftMessageKind.PreVoteRequest;
    const canVote = this.#vote === m.from ||
      (this.#vote === 0 && this.#leader === 0) ||
      (pre && m.term > this.#term);
    const responseKind = pre ? RaftMessageKind.PreVoteResponse : RaftMessageKind.VoteResponse;
    if (canVote && this.#log.isUpToDate(m.lastLogIndex, m.lastLogTerm)) {
      // The answer carries the request's term: for a pre-vote it is ahead of
      // ours, and an answer in our term would be dropped as stale.
      const granted: PreVoteResponse | VoteResponse = {
        kind: responseKind,
        from: this.id,
        to: m.from,
        term: m.term,
        granted: true,
      };
      this.#send(granted);
      if (!pre) {
        this.#electionElapsed = 0;
        this.#vote = m.from;
      }
    } else {
      const refused: PreVoteResponse | VoteResponse = {
        kind: responseKind,
        from: this.id,
        to: m.from,
        term: this.#term,
        granted: false,
      };
      this.#send(refused);
    }
  }

  #onVoteResponse(m: PreVoteResponse | VoteResponse): void {
    const result = this.#poll(m.from, m.granted);
    if (result === VoteResult.Won) {
      if (this.#role === Role.PreCandidate) this.#campaign("election");
      else this.#becomeLeader();
    } else if (result === VoteResult.Lost) {
      this.#becomeFollower(this.#term, 0);
    }
  }

  // ----------------------------------------------------------- role steps

  /** A message from an older term: mostly dropped, sometimes answered so its sender catches up. */
  #stepStale(msg: CoreMessage): void {
    const kind = msg.kind;
    if (
      (this.#cfg.checkQuorum || this.#cfg.preVote) &&
      (kind === RaftMessageKind.AppendEntriesRequest || kind === RaftMessageKind.Heartbeat)
    ) {
      // A leader of an older term that cannot hear of ours (we ignore vote
      // requests under CheckQuorum, and PreVote keeps terms from rising)
      // learns it from this answer and steps down.
      this.#sendAppendResponse(msg.from, false, 0, 0, 0);
    } else if (kind === RaftMessageKind.PreVoteRequest) {
      // A refusal in our term lets a pre-candidate with a stale term catch up.
      const refused: PreVoteResponse = {
        kind: RaftMessageKind.PreVoteResponse,
        from: this.id,
        to: msg.from,
        term: this.#term,
        granted: false,
      };
      this.#send(refused);
    } else if (kind === RaftMessageKind.ReadIndexRequest) {
      this.#sendReadResponse(msg.from, msg.readContext, 0, false);
    }
  }

  #stepLeader(msg: CoreMessage): void {
    switch (msg.kind) {
      case RaftMessageKind.AppendEntriesResponse:
        this.#onAppendResponse(msg);
        return;
      case RaftMessageKind.HeartbeatResponse:
        this.#onHeartbeatResponse(msg);
        return;
      case RaftMessageKind.ReadIndexRequest:
        this.#onRead(msg.readContext, msg.from);
        return;
      case RaftMessageKind.AppendEntriesRequest:
      case RaftMessageKind.Heartbeat:
      case SNAPSHOT_MESSAGE:
        throw new RaftMessageError(
          `raft: ${
            coreMessageKindName(msg)
          } from node ${msg.from} claims to lead term ${msg.term}, ` +
            `which node ${this.id} leads: two leaders in one term`,
        );
      default:
        // Vote answers after winning, TimeoutNow to a leader: nothing to do.
        return;
    }
  }

  #stepCandidate(msg: CoreMessage): void {
    switch (msg.kind) {
      case RaftMessageKind.AppendEntriesRequest:
      case RaftMessageKind.Heartbeat:
      case SNAPSHOT_MESSAGE:
        // Someone won this term: follow it.
        this.#becomeFollower(msg.term, msg.from);
        this.#stepFollower(msg);
        return;
      case RaftMessageKind.VoteResponse:
        if (this.#role === Role.Candidate) this.#onVoteResponse(msg);
        return;
      case RaftMessageKind.PreVoteResponse:
        // Grants carry the term campaigned for, refusals the voter's (ours);
        // anything else answers an earlier round.
        if (
          this.#role === Role.PreCandidate &&
          msg.term === (msg.granted ? this.#term + 1 : this.#term)
        ) this.#onVoteResponse(msg);
        return;
      case RaftMessageKind.ReadIndexRequest:
        this.#sendReadResponse(msg.from, msg.readContext, 0, false);
        return;
      default:
        return;
    }
  }

  #stepFollower(msg: CoreMessage): void {
    switch (msg.kind) {
      case RaftMessageKind.AppendEntriesRequest:
      case RaftMessageKind.Heartbeat:
      case SNAPSHOT_MESSAGE:
        // The leader is alive: no election for another timeout.
        this.#electionElapsed = 0;
        this.#leader = msg.from;
        if (msg.kind === RaftMessageKind.AppendEntriesRequest) this.#onAppend(msg);
        else if (msg.kind === RaftMessageKind.Heartbeat) this.#onHeartbeat(msg);
        else this.#onSnapshot(msg);
        return;
      case RaftMessageKind.TimeoutNow:
        // A transfer skips PreVote: the leader asked, no partition to guard against.
        this.#hup("transfer");
        return;
      case RaftMessageKind.ReadIndexRequest:
        this.#sendReadResponse(msg.from, msg.readContext, 0, false);
        return;
      default:
        return;
    }
  }

  // ------------------------------------------------- replication: follower

  #onAppend(m: AppendEntriesRequest): void {
    const log = this.#log;
    if (m.prevLogIndex < log.committed) {
      // Old news (a duplicate or a reordered append): everything up to our
      // commit matches the leader's log.
      this.#sendAppendResponse(m.from, true, log.committed, 0, 0);
      return;
    }
    if (log.matchTerm(m.prevLogIndex, m.prevLogTerm)) {
      const entries = m.entries;
      const lastNew = m.prevLogIndex + entries.length;
      const conflict = log.findConflict(entries);
      if (conflict !== 0) {
        const skip = conflict - m.prevLogIndex - 1;
        log.append(skip === 0 ? entries : entries.slice(skip));
      }
      log.commitTo(Math.min(m.leaderCommit, lastNew));
      this.#sendAppendResponse(m.from, true, lastNew, 0, 0);
      return;
    }
    // Hint the highest index where our log may still agree: skip every
    // entry of ours whose term is above the leader's at prevLogIndex. Our
    // committed prefix agrees with any leader's, so the search stops there.
    const from = Math.min(m.prevLogIndex, log.lastIndex());
    const [hintIndex, hintTerm] = log.findConflictByTerm(from, m.prevLogTerm, log.committed);
    this.#sendAppendResponse(m.from, false, m.prevLogIndex, hintIndex, hintTerm);
  }

  #onHeartbeat(m: Heartbeat): void {
    const log = this.#log;
    log.commitTo(m.commit);
    const response: HeartbeatResponse = {
      kind: RaftMessageKind.HeartbeatResponse,
      from: this.id,
      to: m.from,
      term: this.#term,
      readContext: m.readContext,
    };
    this.#send(response);
  }

  #onSnapshot(m: SnapshotMessage): void {
    const log = this.#log;
    const meta = m.snapshot.meta;
    if (meta.index <= log.committed) {
      // Stale: tell the leader how far we are.
      this.#sendAppendResponse(m.from, true, log.committed, 0, 0);
      return;
    }
    if (log.matchTerm(meta.index, meta.term)) {
      // We already hold its last entry: the log agrees up to there, keep it.
      log.commitTo(meta.index);
      this.#sendAppendResponse(m.from, true, meta.index, 0, 0);
      return;
    }
    // The snapshot may predate this node's admission (its membership then
    // lacks us); the entries after it that add us come next, as on any log.
    log.restore(m.snapshot);
    this.#membership = Membership.from(meta.confState);
    this.#syncProgress();
    this.#sendAppendResponse(m.from, true, meta.index, 0, 0);
  }

  #sendAppendResponse(
    to: number,
    success: boolean,
    matchIndex: number,
    hintIndex: number,
    hintTerm: number,
  ) {
    const response: AppendEntriesResponse = {
      kind: RaftMessageKind.AppendEntriesResponse,
      from: this.id,
      to,
      term: this.#term,
      success,
      matchIndex,
      hintIndex,
      hintTerm,
    };
    this.#send(response);
  }

  // --------------------------------------------------- replication: leader

  #onAppendResponse(m: AppendEntriesResponse): void {
    const pr = this.#progress.get(m.from);
    if (pr === undefined) return;
    const log = this.#log;
    if (m.success && m.matchIndex > log.lastIndex()) {
      throw new RaftMessageError(
        `raft: node ${m.from} acknowledged index ${m.matchIndex} in term ${m.term}, past the ` +
          `leader's last index ${log.lastIndex()}`,
      );
    }
    pr.recentActive = true;
    if (!m.success) {
      // The follower rejected an append after `matchIndex` (its prevLogIndex).
      // Its hint says its log may agree with ours up to hintIndex, where it
      // has hintTerm; our highest index with a term at most hintTerm is then
      // the furthest point that can agree (one probe per term, not per entry).
      let next = m.hintIndex;
      if (m.hintTerm > 0) next = log.findConflictByTerm(m.hintIndex, m.hintTerm, 0)[0];
      if (pr.maybeDecreaseTo(m.matchIndex, next)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.#sendAppend(m.from, true);
      }
      return;
    }
    const moved = pr.maybeUpdate(m.matchIndex);
    if (!moved && !(pr.match === m.matchIndex && pr.state === ProgressState.Probe)) return;
    if (pr.state === ProgressState.Probe) {
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Snapshot) {
      // Caught up past our compaction point (by the snapshot or otherwise).
      if (pr.match + 1 >= log.firstIndex()) {
        pr.becomeProbe();
        pr.becomeReplicate();
      }
    } else {
      pr.inflights.freeUpTo(m.matchIndex);
    }
    if (this.#maybeCommit()) {
      this.#onCommitAdvanced();
    } else if (pr.canBumpCommit(log.committed)) {
      this.#sendAppend(m.from, true);
    }
    // Fill the pipeline: the answer may have freed several inflight slots.
    while (this.#sendAppend(m.from, false));
    if (m.from === this.#leadTransferee && pr.match === log.lastIndex()) {
      this.#sendTimeoutNow(m.from);
    }
  }

  #onHeartbeatResponse(m: HeartbeatResponse): void {
    const pr = this.#progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    pr.paused = false;
    // Resume a follower that lags, or whose appends were all lost.
    if (pr.match < this.#log.lastIndex() || pr.state === ProgressState.Probe) {
      this.#sendAppend(m.from, true);
    }
    if (m.readContext !== 0 && this.#membership.voters.has(m.from)) {
      this.#reads.ack(m.from, m.readContext);
      this.#releaseConfirmedReads();
    }
  }

  /**
   * Sends `to` the entries from its `next` (or the snapshot, if they are
   * compacted). Without `sendIfEmpty`, sends only if there are entries.
   * Returns whether a message was sent.
   */
  #sendAppend(to: number, sendIfEmpty: boolean): boolean {
    const pr = this.#progress.get(to)!;
    if (pr.isPaused()) return false;
    const log = this.#log;
    const prevLogIndex = pr.next - 1;
    const prevLogTerm = log.term(prevLogIndex);
    if (prevLogTerm === undefined) return this.#sendSnapshot(to, pr);
    let entries = NO_ENTRIES;
    const last = log.lastIndex();
    // With a full window only empty appends go out, so a lost window cannot stall the follower.
    if (pr.next <= last && (pr.state !== ProgressState.Replicate || !pr.inflights.full())) {
      entries = log.entries(pr.next, last + 1, this.#cfg.maxSizePerMsgBytes);
    }
    if (entries.length === 0 && !sendIfEmpty) return false;
    const request: AppendEntriesRequest = {
      kind: RaftMessageKind.AppendEntriesRequest,
      from: this.id,
      to,
      term: this.#term,
      prevLogIndex,
      prevLogTerm,
      leaderCommit: log.committed,
      entries,
    };
    this.#send(request);
    pr.sentEntries(entries.length, prevLogIndex + entries.length);
    pr.sentCommit = log.committed;
    return true;
  }

  #sendSnapshot(to: number, pr: Progress): boolean {
    // A follower that does not answer would not take it either; wait until it does.
    if (!pr.recentActive) return false;
    const snapshot = this.#log.snapshot();
    if (snapshot.meta.index === 0) {
      throw new RaftInvariantError(
        `node ${this.id}: node ${to} needs entry ${
          pr.next - 1
        }, compacted, but the storage has no snapshot`,
      );
    }
    pr.becomeSnapshot(snapshot.meta.index);
    const msg: SnapshotMessage = {
      kind: SNAPSHOT_MESSAGE,
      from: this.id,
      to,
      term: this.#term,
      snapshot,
    };
    this.#send(msg);
    return true;
  }

  #broadcastAppend(): void {
    for (const id of this.#progress.keys()) {
      if (id === this.id) continue;
      // Then fill the window: a replicating follower may take several appends at once.
      if (this.#sendAppend(id, true)) { while (this.#sendAppend(id, false)); }
    }
  }

  #broadcastHeartbeat(readContext: number): void {
    const committed = this.#log.committed;
    for (const [to, pr] of this.#progress) {
      if (to === this.id) continue;
      // Never tell a follower to commit past what it is known to hold.
      const commit = Math.min(pr.match, committed);
      const heartbeat: Heartbeat = {
        kind: RaftMessageKind.Heartbeat,
        from: this.id,
        to,
        term: this.#term,
        commit,
        readContext,
      };
      this.#send(heartbeat);
      pr.sentCommit = commit;
    }
  }

  #sendTimeoutNow(to: number): void {
    this.#send({ kind: RaftMessageKind.TimeoutNow, from: this.id, to, term: this.#term });
  }

  /**
   * Commits the highest index a quorum of voters holds, if it is of the
   * current term (Raft §5.4.2: counting replicas never commits an entry of an
   * earlier term; it commits with the first entry of this term above it).
   */
  #maybeCommit(): boolean {
    const scratch = this.#scratch;
    scratch.length = 0;
    for (const id of this.#membership.voters) scratch.push(this.#progress.get(id)?.match ?? 0);
    const index = quorumIndex(scratch);
    const log = this.#log;
    if (index <= log.committed || log.term(index) !== this.#term) return false;
    log.commitTo(index);
    return true;
  }

  #onCommitAdvanced(): void {
    this.#appendsPending = true;
    this.#releaseAwaitingReads();
  }

  #appendOwn(kind: EntryKind, data: Uint8Array): number {
    const log = this.#log;
    const index = log.lastIndex() + 1;
    const entry: Entry = { index, term: this.#term, kind, data };
    log.append([entry]);
    this.#appendsPending = true;
    return index;
  }

  #checkCanPropose(what: string): void {
    if (this.#role !== Role.Leader) {
      throw new NotLeaderError(this.id, this.#role, this.#leader, what);
    }
    if (!this.#progress.has(this.id)) {
      throw new ProposalDroppedError("removed", `node ${this.id} was removed from the membership`);
    }
    if (this.#leadTransferee !== 0) {
      throw new ProposalDroppedError(
        "transfer_in_progress",
        `leadership is being transferred to node ${this.#leadTransferee}`,
      );
    }
  }

  #checkEntrySize(bytes: number): void {
    if (bytes > this.#cfg.maxEntryBytes) {
      throw new InvalidProposalError(
        `raft: proposal of ${bytes} bytes exceeds maxEntryBytes ${this.#cfg.maxEntryBytes}`,
      );
    }
  }

  /** Counts `bytes` against `maxUncommittedBytes`; an empty tail always takes one proposal. */
  #admitUncommitted(bytes: number): void {
    const max = this.#cfg.maxUncommittedBytes;
    if (this.#uncommittedBytes > 0 && this.#uncommittedBytes + bytes > max) {
      throw new ProposalDroppedError(
        "uncommitted_bytes",
        `${this.#uncommittedBytes} bytes are appended and not yet applied; ` +
          `${bytes} more would exceed maxUncommittedBytes ${max}`,
      );
    }
    this.#uncommittedBytes += bytes;
  }

  // ----------------------------------------------------------------- reads

  #onRead(context: number, from: number): void {
    if (this.#reads.size + this.#readsAwaitingCommit.length >= this.#cfg.maxPendingReads) {
      this.#answerRead(context, from, 0, false);
      return;
    }
    const log = this.#log;
    // Until an entry of this term commits, our commit index may lag what an
    // earlier leader committed (thesis §6.4, step 1).
    if (log.term(log.committed) !== this.#term) {
      this.#readsAwaitingCommit.push({ context, from });
      return;
    }
    const voters = this.#membership.voters;
    if (voters.size === 1 && voters.has(this.id)) {
      this.#answerRead(context, from, log.committed, true);
      return;
    }
    const { round, opened } = this.#reads.add(context, from, log.committed);
    if (opened) this.#broadcastHeartbeat(round);
  }

  #releaseAwaitingReads(): void {
    if (this.#readsAwaitingCommit.length === 0) return;
    const log = this.#log;
    if (log.term(log.committed) !== this.#term) return;
    const waiting = this.#readsAwaitingCommit;
    this.#readsAwaitingCommit = [];
    for (const read of waiting) this.#onRead(read.context, read.from);
  }

  #releaseConfirmedReads(): void {
    const confirmed = this.#reads.confirmed(this.#membership.voters, this.id, this.#scratch);
    for (const read of confirmed) this.#answerRead(read.context, read.from, read.index, true);
  }

  #failPendingReads(): void {
    for (const read of this.#reads.drain()) this.#answerRead(read.context, read.from, 0, false);
    const waiting = this.#readsAwaitingCommit;
    this.#readsAwaitingCommit = [];
    for (const read of waiting) this.#answerRead(read.context, read.from, 0, false);
  }

  #answerRead(context: number, from: number, index: number, ok: boolean): void {
    if (from === this.id) this.#readStates.push({ context, index, ok });
    else this.#sendReadResponse(from, context, index, ok);
  }

  #sendReadResponse(to: number, readContext: number, readIndex: number, ok: boolean): void {
    const response: ReadIndexResponse = {
      kind: RaftMessageKind.ReadIndexResponse,
      from: this.id,
      to,
      term: this.#term,
      readContext,
      readIndex,
      ok,
    };
    this.#send(response);
  }

  #onReadIndexResponse(m: ReadIndexResponse): void {
    this.#readStates.push({ context: m.readContext, index: m.ok ? m.readIndex : 0, ok: m.ok });
  }

  // ------------------------------------------------------------ membership

  /** Makes the progress map hold exactly the members, keeping what is known of those that stay. */
  #syncProgress(): void {
    const m = this.#membership;
    for (const id of this.#progress.keys()) {
      if (!m.has(id)) this.#progress.delete(id);
    }
    const next = this.#log.lastIndex() + 1;
    const add = (id: number, isLearner: boolean) => {
      const pr = this.#progress.get(id);
      if (pr !== undefined) {
        pr.isLearner = isLearner;
        return;
      }
      const fresh = new Progress(next, this.#cfg.maxInflightMsgs, isLearner);
      // A new member counts as active, or the next quorum check could depose the leader for it.
      fresh.recentActive = true;
      if (id === this.id) fresh.match = this.#log.stableIndex();
      this.#progress.set(id, fresh);
    };
    for (const id of m.voters) add(id, false);
    for (const id of m.learners) add(id, true);
  }

  // ------------------------------------------------------------- plumbing

  #send(msg: CoreMessage): void {
    if (msg.to === this.id) {
      throw new RaftInvariantError(
        `node ${this.id}: ${coreMessageKindName(msg)} addressed to itself`,
      );
    }
    this.#messages.push(msg);
  }

  /** Refuses what is not ours to take, before anything changes. */
  #checkMessage(msg: CoreMessage): void {
    const name = coreMessageKindName(msg);
    if (msg.to !== this.id) {
      throw new RaftMessageError(
        `raft: ${name} from node ${msg.from} is addressed to node ${msg.to}, not to this node (${this.id})`,
      );
    }
    if (!Number.isSafeInteger(msg.from) || msg.from < 1 || msg.from === this.id) {
      throw new RaftMessageError(
        `raft: ${name} to node ${this.id} has sender ${msg.from}: expected another node's id`,
      );
    }
    if (!Number.isSafeInteger(msg.term) || msg.term < 0) {
      throw new RaftMessageError(
        `raft: ${name} from node ${msg.from} has term ${msg.term}: expected an integer 0..2^53-1`,
      );
    }
    if (isSnapshotChunkKind(msg.kind)) {
      throw new RaftMessageError(
        `raft: ${name} from node ${msg.from}: snapshot chunks are the driver's to reassemble; ` +
          `step the whole snapshot as a "${SNAPSHOT_MESSAGE}" message`,
      );
    }
    if (msg.kind === RaftMessageKind.AppendEntriesRequest) {
      checkAppend(msg);
    } else if (msg.kind === RaftMessageKind.Heartbeat) {
      // A leader sends min(our match, its commit): we acknowledged that much,
      // and acknowledged entries up to a commit index are never truncated.
      if (msg.commit > this.#log.lastIndex()) {
        throw new RaftMessageError(
          `raft: heartbeat from node ${msg.from} (term ${msg.term}) commits index ${msg.commit}, past ` +
            `node ${this.id}'s last index ${this.#log.lastIndex()}: the leader believes this node holds ` +
            `entries it does not (lost from storage?)`,
        );
      }
    } else if (msg.kind === SNAPSHOT_MESSAGE) {
      checkSnapshot(msg);
    } else if (!(msg.kind >= 1 && msg.kind <= 13)) {
      throw new RaftMessageError(
        `raft: message kind ${String(msg.kind)} from node ${msg.from}: unknown`,
      );
    }
  }

  #assertInvariants(): void {
    const log = this.#log;
    if (
      !(log.applied <= log.applying && log.applying <= log.committed &&
        log.committed <= log.lastIndex())
    ) {
      throw new RaftInvariantError(
        `node ${this.id}: expected applied ${log.applied} <= applying ${log.applying} <= ` +
          `commit ${log.committed} <= last index ${log.lastIndex()}`,
      );
    }
    if (log.committed < this.#maxCommit) {
      throw new RaftInvariantError(
        `node ${this.id}: commit went back from ${this.#maxCommit} to ${log.committed}`,
      );
    }
    this.#maxCommit = log.committed;
    if (this.#role === Role.Leader) {
      if (this.#leader !== this.id || this.#vote !== this.id) {
        throw new RaftInvariantError(
          `node ${this.id}: leader of term ${this.#term} with leader ${this.#leader} and vote ${this.#vote}`,
        );
      }
      const last = log.lastIndex();
      for (const [id, pr] of this.#progress) {
        if (!(pr.match < pr.next && pr.next <= last + 1 && pr.match <= last)) {
          throw new RaftInvariantError(
            `node ${this.id}: progress of node ${id} has match ${pr.match}, next ${pr.next}, ` +
              `last index ${last}: expected match < next <= last + 1`,
          );
        }
      }
    } else if (this.#leadTransferee !== 0) {
      throw new RaftInvariantError(
        `node ${this.id}: ${this.#role} with a transfer to ${this.#leadTransferee}`,
      );
    }
    if (this.#role === Role.Candidate && this.#vote !== this.id) {
      throw new RaftInvariantError(
        `node ${this.id}: candidate of term ${this.#term} voted for ${this.#vote}`,
      );
    }
  }
}

/** Members a snapshot's membership may list: far more than a cluster has, few enough to bound the work. */
const MAX_MEMBERS = 1024;

/** A snapshot must stand somewhere in the log, in a term the leader has seen, with a sane membership. */
function checkSnapshot(msg: SnapshotMessage): void {
  const meta = msg.snapshot?.meta;
  if (
    meta === undefined || !Number.isSafeInteger(meta.index) || meta.index < 1 ||
    !(meta.term >= 1) || meta.term > msg.term
  ) {
    throw new RaftMessageError(
      `raft: snapshot from node ${msg.from} in term ${msg.term} is at index ${meta?.index}, ` +
        `term ${meta?.term}: expected index >= 1 and a term 1..${msg.term}`,
    );
  }
  const { voters, learners } = meta.confState ?? {};
  const ids = [
    ...(Array.isArray(voters) ? voters : [NaN]),
    ...(Array.isArray(learners) ? learners : [NaN]),
  ];
  if (ids.length > MAX_MEMBERS || !ids.every((id) => Number.isSafeInteger(id) && id >= 1)) {
    throw new RaftMessageError(
      `raft: snapshot from node ${msg.from} at index ${meta.index} has membership ` +
        `${
          JSON.stringify(meta.confState)
        }: expected voters and learners, at most ${MAX_MEMBERS} ids 1..2^53-1`,
    );
  }
}

/** An append's entries must follow its previous entry, one index at a time, terms never going back. */
function checkAppend(m: AppendEntriesRequest): void {
  const fail = (what: string) => {
    throw new RaftMessageError(
      `raft: AppendEntries from node ${m.from} (term ${m.term}, after index ${m.prevLogIndex} ` +
        `term ${m.prevLogTerm}): ${what}`,
    );
  };
  if (m.prevLogTerm > m.term) fail(`previous term ${m.prevLogTerm} is above the message's term`);
  if (m.prevLogIndex === 0 && m.prevLogTerm !== 0) fail("index 0 has term 0");
  let prevTerm = m.prevLogTerm;
  const entries = m.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.index !== m.prevLogIndex + 1 + i) {
      fail(`entry ${i} has index ${e.index}, expected ${m.prevLogIndex + 1 + i}`);
    }
    if (e.term < prevTerm || e.term > m.term) {
      fail(`entry ${e.index} has term ${e.term}, expected ${prevTerm}..${m.term}`);
    }
    if (e.kind !== EntryKind.Normal && e.kind !== EntryKind.ConfigChange) {
      fail(`entry ${e.index} has kind ${e.kind}, expected 0 (normal) or 1 (config change)`);
    }
    prevTerm = e.term;
  }
}
