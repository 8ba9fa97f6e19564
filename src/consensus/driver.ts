/**
 * The consensus driver: runs the pure Raft core with a clock, durable
 * storage, a transport and the cluster state machine, and answers
 * proposals and reads once they are applied.
 *
 * Owns: {@link RaftDriver}, {@link RaftTransport}, {@link DriverOptions} and
 * the driver's errors. Imports the core (`src/raft/`), the state machine
 * (`src/state/`), the snapshot transfer and the scheduler; the transport
 * and the storage come in through their interfaces, so the simulation runs
 * this same code on a virtual clock, network and disk.
 *
 * One Ready at a time, in the core's order (docs/raft.md): persist (one
 * durable write: the group commit), then send, then apply, then advance.
 * Work that arrives in one turn of the event loop (proposals, messages,
 * ticks) is stepped together and reaches the disk in that one write.
 *
 * Fail-stop: if storage cannot promise a write is durable, or fails a read
 * while the core steps, or the core breaks one of its invariants, the driver
 * stops at once: no message is sent, nothing more is acknowledged, every
 * waiting caller is told, and `failed` says why (the agent then exits, and a
 * restart recovers from what is on disk). Only a message the core refuses
 * (RaftMessageError: nothing changed) is dropped and the node goes on.
 *
 * @module
 */

import { type Entry, EntryKind, type RaftMessage, RaftMessageKind } from "../codec/raft.ts";
import {
  type ConfChange,
  ConfChangeRefusedError,
  ConfChangeType,
  type CoreMessage,
  decodeConfChange,
  InvalidProposalError,
  type LogStorage,
  NotLeaderError,
  ProgressState,
  ProposalDroppedError,
  type Proposed,
  RAFT_CONFIG_DEFAULTS,
  type RaftConfig,
  RaftCore,
  RaftMessageError,
  type RandomSource,
  type Ready,
  Role,
  SNAPSHOT_MESSAGE,
  type SnapshotMessage,
  type Status,
  TransferRefusedError,
} from "../raft/mod.ts";
import { ProtocolError } from "../codec/errors.ts";
import {
  type ApplyResult,
  ClusterState,
  type Command,
  encodeCommand,
  type MemberRecord,
} from "../state/cluster_state.ts";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { MemberRecordSchema } from "../rpc/gen/blixard/v1/state_pb.ts";
import type { Scheduler } from "./scheduler.ts";
import {
  SNAPSHOT_TRANSFER_LIMITS,
  SnapshotReceiver,
  SnapshotSender,
  type SnapshotTransferLimits,
} from "./snapshot_transfer.ts";

/** Where the driver sends messages: the outbox (real) or the simulated network. */
export interface RaftTransport {
  /** Queues `message` for `message.to`; never blocks, never throws. */
  send(message: RaftMessage): void;
}

/** Options of a {@link RaftDriver}. */
export interface DriverOptions {
  readonly id: number;
  readonly storage: LogStorage;
  readonly transport: RaftTransport;
  readonly scheduler: Scheduler;
  readonly random: RandomSource;
  /** One core tick, ms. Default 100: elections after 1 to 2 s, heartbeats every 100 ms. */
  readonly tickMs?: number;
  /** Core settings other than `id`, `random` and `applied`. */
  readonly core?: Omit<RaftConfig, "id" | "random" | "applied">;
  /** A snapshot is taken when this many entries were applied since the last. Default 10,000. */
  readonly snapshotEveryEntries?: number;
  /** Entries kept behind a snapshot for followers that lag a little. Default 1,000. */
  readonly keepEntries?: number;
  readonly snapshotTransfer?: SnapshotTransferLimits;
  /**
   * A read not answered within this long fails with UNAVAILABLE (retry).
   * Default: two election timeouts, by when a leader that lost its quorum
   * has stepped down and answered its reads; past that the read's messages
   * were lost (a follower forwards its reads to a leader that may have
   * crashed).
   */
  readonly readTimeoutMs?: number;
  /**
   * A proposal or membership change not applied within this long is
   * answered UNKNOWN. Default: ten election timeouts. A definite answer
   * comes when this node applies the entry's index, but an entry cut from
   * this node's log may never see its index applied (a quiet cluster writes
   * nothing there), and being cut is no proof it was lost: another node may
   * still hold it and a later leader commit it (Raft §5.4.2).
   */
  readonly proposalTimeoutMs?: number;
  /**
   * Whether the leader promotes a learner to voter by itself once it caught
   * up (docs/raft.md, "Learner promotion"). Default true: a node added as a
   * learner becomes a voter without a second step.
   */
  readonly promoteLearners?: boolean;
  /**
   * A learner is caught up when the leader streams to it (replicate state)
   * and its match index is at most this many entries behind the leader's
   * commit index. Default {@link PROMOTION_LAG_ENTRIES}.
   */
  readonly promotionLagEntries?: number;
  /** Told when the membership changed (an applied config change, or a restored snapshot). */
  readonly onMembership?: (members: readonly MemberRecord[]) => void;
  /**
   * Told once when the driver stops for good: storage failed (a write, or a
   * read while the core stepped), or the core broke an invariant.
   */
  readonly onFailure?: (error: Error) => void;
  /** Told when this node's role or the leader it knows changes (for metrics). */
  readonly onSoftState?: (soft: { readonly role: Role; readonly leader: number }) => void;
}

/** Default of {@link DriverOptions.promotionLagEntries}. */
export const PROMOTION_LAG_ENTRIES = 100;

/**
 * A call the driver could not serve, with a code the services map to RPC
 * status codes. What each code tells the caller about a write:
 * - NOT_LEADER, REFUSED: refused before anything was proposed; nothing happened.
 * - LOST: another entry took the proposal's index; it was never applied.
 * - UNKNOWN, STOPPED, FAILED: it may or may not have been applied (read to find out).
 * - UNAVAILABLE: nothing happened: a read that no leader confirmed in time, or
 *   a proposal made while leadership is being transferred; retry.
 */
export class ConsensusError extends Error {
  override readonly name = "ConsensusError";
  readonly code:
    | "NOT_LEADER"
    | "UNAVAILABLE"
    | "LOST"
    | "STOPPED"
    | "FAILED"
    | "REFUSED"
    | "UNKNOWN";
  /** For NOT_LEADER: the leader this node knows (0 for none). */
  readonly leader: number;
  constructor(code: ConsensusError["code"], message: string, leader = 0) {
    super(message);
    this.code = code;
    this.leader = leader;
  }
}

/** A read waiting for its read index (`index` 0), or for that index to be applied. */
interface PendingRead<T> {
  readonly index: number;
  readonly deadlineMs: number;
  readonly resolve: (value: T) => void;
  readonly reject: (error: Error) => void;
}

/** A caller waiting for its entry, appended at an index in a term, to be applied. */
interface Waiter {
  readonly index: number;
  readonly term: number;
  readonly deadlineMs: number;
  readonly resolve: (result: ApplyResult) => void;
  readonly reject: (error: Error) => void;
  settled: boolean;
}

/** The consensus of one node. */
export class RaftDriver {
  readonly id: number;
  readonly #o: DriverOptions;
  readonly #core: RaftCore;
  #state: ClusterState;
  readonly #storage: LogStorage;
  readonly #scheduler: Scheduler;
  readonly #receiver: SnapshotReceiver;
  readonly #senders = new Map<number, SnapshotSender>();
  /**
   * Proposals and membership changes waiting for their entry to be applied,
   * by index. An index may hold waiters of several terms: a leader whose
   * entries were replaced can lead again and append at the same index, and
   * either entry may be the one that commits.
   */
  readonly #waiters = new Map<number, Waiter[]>();
  /** The same waiters in the order they were made, so by deadline. */
  #byDeadline: Waiter[] = [];
  readonly #proposalTimeoutMs: number;
  /** Reads waiting for their read index to be applied. */
  #reads: PendingRead<void>[] = [];
  /** Reads waiting for the core's read index, by context. */
  readonly #readContexts = new Map<number, PendingRead<number>>();
  readonly #readTimeoutMs: number;
  #nextReadContext = 1;
  #softState = { role: Role.Follower as Role, leader: 0 };
  #appliedSinceSnapshot = 0;
  #processing = false;
  #scheduled = false;
  #cancelTicker: (() => void) | null = null;
  #stopped = false;
  #failed: Error | null = null;

  constructor(options: DriverOptions) {
    this.id = options.id;
    this.#o = options;
    this.#storage = options.storage;
    this.#scheduler = options.scheduler;
    this.#receiver = new SnapshotReceiver(options.snapshotTransfer ?? SNAPSHOT_TRANSFER_LIMITS);
    const electionMs = (options.core?.electionTicks ?? RAFT_CONFIG_DEFAULTS.electionTicks) *
      (options.tickMs ?? 100);
    this.#readTimeoutMs = options.readTimeoutMs ?? 2 * electionMs;
    this.#proposalTimeoutMs = options.proposalTimeoutMs ?? 10 * electionMs;
    // The state machine starts from the storage's snapshot; the core re-applies what follows it.
    const snapshot = options.storage.snapshot();
    this.#state = snapshot.meta.index > 0
      ? ClusterState.restore(snapshot.data)
      : new ClusterState();
    this.#core = new RaftCore(
      {
        ...options.core,
        id: options.id,
        random: options.random,
        applied: this.#state.appliedIndex,
      },
      options.storage,
    );
  }

  /** Starts ticking. */
  start(): void {
    if (this.#cancelTicker) return;
    this.#cancelTicker = this.#scheduler.every(this.#o.tickMs ?? 100, () => this.#tick());
    this.#schedule();
  }

  /** The state machine as of the last applied entry; read it through {@link read} for linearizable answers. */
  get state(): ClusterState {
    return this.#state;
  }

  /** The role and leader as this node knows them. */
  get role(): { readonly role: Role; readonly leader: number } {
    return this.#softState;
  }

  /** The core's status: term, commit, applied, and per peer as a leader sees it. */
  status(): Status {
    return this.#core.status();
  }

  /** Set once the driver stopped for good: why (storage failed, or the core broke an invariant). */
  get failed(): Error | null {
    return this.#failed;
  }

  /** A message from a peer (from the inbox). */
  receive(message: RaftMessage): void {
    if (this.#stopped) return;
    try {
      this.#receive(message);
    } catch (e) {
      this.#fail(e);
    }
  }

  #receive(message: RaftMessage): void {
    switch (message.kind) {
      case RaftMessageKind.InstallSnapshot: {
        const step = this.#receiver.onChunk(message, this.#scheduler.now());
        this.#o.transport.send(step.response);
        if (step.snapshot) {
          const whole: SnapshotMessage = {
            kind: SNAPSHOT_MESSAGE,
            from: message.from,
            to: message.to,
            term: message.term,
            snapshot: step.snapshot,
          };
          this.#step(whole);
        }
        break;
      }
      case RaftMessageKind.InstallSnapshotResponse: {
        const sender = this.#senders.get(message.from);
        if (sender) this.#onSendStep(sender, sender.onResponse(message, this.#scheduler.now()));
        break;
      }
      default:
        this.#step(message);
    }
  }

  /**
   * Proposes `command`; resolves with what applying it did, once it is
   * applied here. Only the leader proposes.
   * @throws {ConsensusError} (as a rejection) NOT_LEADER with the leader to
   *   forward to, or REFUSED: nothing was proposed; LOST: it was never
   *   applied; UNKNOWN, STOPPED or FAILED: it may have been (docs/raft.md,
   *   "What a caller is told").
   */
  propose(command: Command): Promise<ApplyResult> {
    return this.#proposeData(encodeCommand(command));
  }

  /**
   * Changes the membership; resolves once the change is applied here.
   * @throws {ConsensusError} (as a rejection) as {@link propose}; REFUSED
   *   when another change is pending or the change makes no sense.
   */
  changeMembership(change: ConfChange): Promise<void> {
    const proposed = this.#call(() => this.#core.proposeConfChange(change));
    return new Promise<void>((resolve, reject) => {
      if (proposed instanceof Error) return reject(proposed);
      this.#wait(proposed, () => resolve(), reject);
    });
  }

  /**
   * Waits until this node's state is at least as new as the cluster's
   * commit index at the time of the call (Raft's ReadIndex, confirmed with a
   * quorum by the leader), then runs `read` on it: a linearizable read.
   * @throws {ConsensusError} (as a rejection) NOT_LEADER when no leader is
   *   known, UNAVAILABLE when no leader confirmed it within `readTimeoutMs`,
   *   STOPPED or FAILED.
   */
  async read<T>(read: (state: ClusterState) => T): Promise<T> {
    const deadlineMs = this.#scheduler.now() + this.#readTimeoutMs;
    const index = await this.#readIndex(deadlineMs);
    if (this.#state.appliedIndex < index) {
      await new Promise<void>((resolve, reject) =>
        this.#reads.push({ index, deadlineMs, resolve, reject })
      );
    }
    this.#checkRunning();
    return read(this.#state);
  }

  /** Asks the core to hand leadership to `to`. */
  transferLeadership(to: number): void {
    const result = this.#call(() => this.#core.transferLeadership(to));
    if (result instanceof Error) throw result;
    this.#schedule();
  }

  /** Starts an election now (tests, and a single node's first start). */
  campaign(): void {
    if (this.#stopped) return;
    try {
      this.#core.campaign();
    } catch (e) {
      this.#fail(e);
      return;
    }
    this.#schedule();
  }

  /** Tells the core a peer could not be reached (the outbox dropped a message to it). */
  reportUnreachable(peer: number): void {
    if (this.#stopped) return;
    try {
      this.#core.reportUnreachable(peer);
    } catch (e) {
      this.#fail(e);
    }
  }

  /** Stops ticking and fails every waiting caller with STOPPED. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#cancelTicker?.();
    this.#failWaiters(new ConsensusError("STOPPED", "consensus stopped on this node"));
  }

  // ---------------------------------------------------------------- internals

  #proposeData(data: Uint8Array): Promise<ApplyResult> {
    const proposed = this.#call(() => this.#core.propose(data));
    return new Promise<ApplyResult>((resolve, reject) => {
      if (proposed instanceof Error) return reject(proposed);
      this.#wait(proposed, resolve, reject);
    });
  }

  #wait(
    proposed: Proposed,
    resolve: (result: ApplyResult) => void,
    reject: (error: Error) => void,
  ): void {
    const waiter: Waiter = {
      index: proposed.index,
      term: proposed.term,
      deadlineMs: this.#scheduler.now() + this.#proposalTimeoutMs,
      resolve,
      reject,
      settled: false,
    };
    const list = this.#waiters.get(proposed.index);
    if (list) list.push(waiter);
    else this.#waiters.set(proposed.index, [waiter]);
    this.#byDeadline.push(waiter);
    this.#schedule();
  }

  /** Answers UNKNOWN to the waiters past their deadline. */
  #expireWaiters(nowMs: number): void {
    const queue = this.#byDeadline;
    let head = 0;
    while (head < queue.length && (queue[head]!.settled || queue[head]!.deadlineMs <= nowMs)) {
      const w = queue[head++]!;
      if (w.settled) continue;
      const list = this.#waiters.get(w.index)!.filter((other) => other !== w);
      if (list.length > 0) this.#waiters.set(w.index, list);
      else this.#waiters.delete(w.index);
      w.settled = true;
      w.reject(
        new ConsensusError(
          "UNKNOWN",
          `the entry at index ${w.index} was not applied within ${this.#proposalTimeoutMs} ms; ` +
            `whether it was committed is not known here: read to find out`,
        ),
      );
    }
    if (head > 0) this.#byDeadline = queue.slice(head);
  }

  /**
   * Entry `index` of `term` was applied with `result`: its waiter is
   * answered; a waiter of another term learns its entry was replaced, so
   * never committed (whatever its kind: a membership change can take a
   * proposal's index, and the other way round).
   */
  #settle(index: number, term: number, result: ApplyResult): void {
    const list = this.#waiters.get(index);
    if (!list) return;
    this.#waiters.delete(index);
    for (const w of list) {
      w.settled = true;
      if (w.term === term) w.resolve(result);
      else w.reject(lost(index));
    }
  }

  /**
   * A snapshot from the leader replaced the log up to `index` before this
   * node applied its own entries there: whether they were committed is not
   * known here.
   */
  #settleCovered(index: number): void {
    for (const [at, list] of this.#waiters) {
      if (at > index) continue;
      this.#waiters.delete(at);
      const error = new ConsensusError(
        "UNKNOWN",
        `the entry at index ${at} was covered by a snapshot (index ${index}) from the leader ` +
          `before this node applied it; whether it was committed is not known here: read to find out`,
      );
      for (const w of list) {
        w.settled = true;
        w.reject(error);
      }
    }
  }

  #readIndex(deadlineMs: number): Promise<number> {
    const context = this.#nextReadContext++;
    const called = this.#call(() => this.#core.readIndex(context));
    if (called instanceof Error) return Promise.reject(called);
    return new Promise<number>((resolve, reject) => {
      this.#readContexts.set(context, { index: 0, deadlineMs, resolve, reject });
      this.#schedule();
    });
  }

  /** Fails the reads past their deadline; a late answer to one finds no waiter and is dropped. */
  #expireReads(nowMs: number): void {
    const timedOut = () =>
      new ConsensusError(
        "UNAVAILABLE",
        `no leader confirmed the read within ${this.#readTimeoutMs} ms; retry`,
        this.#softState.leader,
      );
    for (const [context, waiter] of this.#readContexts) {
      if (waiter.deadlineMs > nowMs) continue;
      this.#readContexts.delete(context);
      waiter.reject(timedOut());
    }
    if (this.#reads.some((r) => r.deadlineMs <= nowMs)) {
      const expired = this.#reads.filter((r) => r.deadlineMs <= nowMs);
      this.#reads = this.#reads.filter((r) => r.deadlineMs > nowMs);
      for (const r of expired) r.reject(timedOut());
    }
  }

  /** Runs a core call, turning its refusals into ConsensusErrors. */
  #call<T>(fn: () => T): T | ConsensusError {
    if (this.#failed) {
      return new ConsensusError("FAILED", `consensus stopped: ${this.#failed.message}`);
    }
    if (this.#stopped) return new ConsensusError("STOPPED", "consensus stopped on this node");
    try {
      return fn();
    } catch (e) {
      if (e instanceof NotLeaderError) {
        const leader = this.#softState.leader;
        return new ConsensusError(
          "NOT_LEADER",
          leader
            ? `node ${this.id} is not the leader; node ${leader} is`
            : `node ${this.id} is not the leader, and knows no leader`,
          leader,
        );
      }
      if (e instanceof ProposalDroppedError && e.reason === "transfer_in_progress") {
        // Leadership moves within an election timeout: a retry reaches the new leader.
        return new ConsensusError("UNAVAILABLE", `${e.message}; retry`);
      }
      if (isRefusal(e)) return new ConsensusError("REFUSED", (e as Error).message);
      // A broken invariant, a failed read: the core cannot be trusted any more.
      this.#fail(e);
      return new ConsensusError("FAILED", `consensus stopped: ${this.#failed!.message}`);
    }
  }

  #checkRunning(): void {
    if (this.#failed) {
      throw new ConsensusError("FAILED", `consensus stopped: ${this.#failed.message}`);
    }
    if (this.#stopped) throw new ConsensusError("STOPPED", "consensus stopped on this node");
  }

  #step(message: CoreMessage): void {
    try {
      this.#core.step(message);
    } catch (e) {
      // A message the core refuses (from a stale or unknown peer, malformed) changes nothing;
      // anything else (a broken invariant, a failed read) leaves a core that cannot be trusted.
      if (!(e instanceof RaftMessageError)) this.#fail(e);
      return;
    }
    this.#schedule();
  }

  #tick(): void {
    if (this.#stopped) return;
    try {
      this.#core.tick();
      this.#promoteCaughtUpLearner();
      const now = this.#scheduler.now();
      this.#expireReads(now);
      this.#expireWaiters(now);
      this.#receiver.onTick(now);
      for (const sender of this.#senders.values()) this.#onSendStep(sender, sender.onTick(now));
    } catch (e) {
      this.#fail(e);
      return;
    }
    this.#schedule();
  }

  /**
   * On the leader: proposes to promote one learner that caught up. The core
   * allows one membership change at a time, so a refusal (another change
   * pending, no entry of this term committed yet) just waits for a later tick.
   */
  #promoteCaughtUpLearner(): void {
    if (this.#o.promoteLearners === false) return;
    if (this.#softState.role !== Role.Leader) return;
    const s = this.#core.status();
    if (s.role !== Role.Leader || s.learners.length === 0) return;
    const lag = this.#o.promotionLagEntries ?? PROMOTION_LAG_ENTRIES;
    const learner = s.peers.find((p) =>
      p.isLearner && p.state === ProgressState.Replicate && p.match + lag >= s.commit
    );
    if (!learner) return;
    // The voter keeps the record it joined with (its addresses).
    const record = this.#state.member(learner.id);
    const context = record ? toBinary(MemberRecordSchema, record) : new Uint8Array(0);
    const proposed = this.#call(() =>
      this.#core.proposeConfChange({ type: ConfChangeType.AddVoter, nodeId: learner.id, context })
    );
    if (!(proposed instanceof ConsensusError)) this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || this.#stopped) return;
    this.#scheduled = true;
    this.#scheduler.defer(() => {
      this.#scheduled = false;
      this.#process();
    });
  }

  /** Handles every Ready the core has, one at a time. */
  #process(): void {
    if (this.#processing || this.#stopped) return;
    this.#processing = true;
    try {
      while (!this.#stopped && this.#core.hasReady()) this.#handle(this.#core.ready());
    } catch (e) {
      this.#fail(e);
    } finally {
      this.#processing = false;
    }
  }

  #handle(rd: Ready): void {
    // 1. Persist: snapshot, entries and hard state in one durable write.
    if (rd.snapshot || rd.entries.length > 0 || rd.hardState) {
      try {
        this.#storage.save(rd);
      } catch (e) {
        this.#fail(e);
        return;
      }
    }
    if (rd.snapshot) {
      this.#settleCovered(rd.snapshot.meta.index);
      this.#state = ClusterState.restore(rd.snapshot.data);
      this.#appliedSinceSnapshot = 0;
      this.#o.onMembership?.(this.#state.members());
    }
    if (rd.softState) this.#onSoftState(rd.softState);
    // 2. Send: only now, since messages may promise what was just made durable.
    for (const m of rd.messages) this.#send(m);
    // 3. Apply, in order.
    for (const entry of rd.committedEntries) this.#apply(entry);
    for (const rs of rd.readStates) {
      const waiter = this.#readContexts.get(rs.context);
      if (!waiter) continue;
      this.#readContexts.delete(rs.context);
      if (rs.ok) waiter.resolve(rs.index);
      else {
        waiter.reject(
          new ConsensusError(
            "UNAVAILABLE",
            "the read could not be confirmed by a leader; retry",
            this.#softState.leader,
          ),
        );
      }
    }
    this.#releaseReads();
    this.#core.advance();
    this.#maybeSnapshot();
  }

  #send(m: CoreMessage): void {
    if (m.kind !== SNAPSHOT_MESSAGE) {
      this.#o.transport.send(m);
      return;
    }
    this.#senders.get(m.to)?.abort("a newer snapshot replaced it");
    const sender = new SnapshotSender(
      m.from,
      m.to,
      m.term,
      m.snapshot,
      this.#scheduler.now(),
      this.#o.snapshotTransfer ?? SNAPSHOT_TRANSFER_LIMITS,
    );
    this.#senders.set(m.to, sender);
    this.#onSendStep(sender, sender.start());
  }

  #onSendStep(sender: SnapshotSender, step: ReturnType<SnapshotSender["start"]>): void {
    for (const chunk of step.chunks) this.#o.transport.send(chunk);
    if (step.finished) {
      if (this.#senders.get(sender.to) === sender) this.#senders.delete(sender.to);
      this.#core.reportSnapshot(sender.to, step.finished.ok);
      this.#schedule();
    }
  }

  #apply(entry: Entry): void {
    if (entry.kind === EntryKind.ConfigChange) {
      const change = decodeConfChange(entry.data);
      this.#core.applyConfChange(change);
      const record = change.type === ConfChangeType.RemoveNode ? undefined : memberRecordOf(change);
      this.#state.applyMembership(entry.index, { nodeId: change.nodeId, record });
      this.#o.onMembership?.(this.#state.members());
      this.#settle(entry.index, entry.term, { ok: true, kind: "noop" });
    } else {
      const result = this.#state.apply(entry.index, entry.data);
      this.#settle(entry.index, entry.term, result);
    }
    this.#appliedSinceSnapshot++;
  }

  #releaseReads(): void {
    if (this.#reads.length === 0) return;
    const applied = this.#state.appliedIndex;
    const ready = this.#reads.filter((r) => r.index <= applied);
    if (ready.length === 0) return;
    this.#reads = this.#reads.filter((r) => r.index > applied);
    for (const r of ready) r.resolve();
  }

  #onSoftState(soft: { role: Role; leader: number }): void {
    const wasLeader = this.#softState.role === Role.Leader;
    this.#softState = { role: soft.role, leader: soft.leader };
    this.#o.onSoftState?.(this.#softState);
    if (wasLeader && soft.role !== Role.Leader) {
      // Snapshots in flight are the old term's.
      for (const s of this.#senders.values()) s.abort("this node is no longer the leader");
      this.#senders.clear();
    }
  }

  #maybeSnapshot(): void {
    const every = this.#o.snapshotEveryEntries ?? 10_000;
    if (this.#appliedSinceSnapshot < every) return;
    const applied = this.#state.appliedIndex;
    try {
      // Membership changes take effect as they are applied: the core's is the applied index's.
      const { voters, learners } = this.#core.status();
      this.#storage.createSnapshot(
        applied,
        { voters, learners },
        this.#state.snapshot(),
        this.#o.keepEntries ?? 1_000,
      );
      this.#appliedSinceSnapshot = 0;
    } catch (e) {
      this.#fail(e);
    }
  }

  /** Stops for good: storage failed, or the core broke an invariant. */
  #fail(e: unknown): void {
    const error = e instanceof Error ? e : new Error(`consensus: ${String(e)}`);
    if (this.#failed) return;
    this.#failed = error;
    this.#stopped = true;
    this.#cancelTicker?.();
    this.#failWaiters(new ConsensusError("FAILED", `consensus stopped: ${error.message}`));
    this.#o.onFailure?.(error);
  }

  #failWaiters(error: ConsensusError): void {
    for (const list of this.#waiters.values()) {
      for (const w of list) {
        w.settled = true;
        w.reject(error);
      }
    }
    this.#waiters.clear();
    this.#byDeadline = [];
    for (const w of this.#readContexts.values()) w.reject(error);
    this.#readContexts.clear();
    const reads = this.#reads;
    this.#reads = [];
    for (const r of reads) r.reject(error);
  }
}

/**
 * The core's refusals of a call: nothing changed, and the caller can act on
 * them (NotLeaderError is told apart before this).
 */
function isRefusal(e: unknown): boolean {
  return e instanceof ProposalDroppedError || e instanceof InvalidProposalError ||
    e instanceof ConfChangeRefusedError || e instanceof TransferRefusedError ||
    e instanceof ProtocolError;
}

function lost(index: number): ConsensusError {
  return new ConsensusError(
    "LOST",
    `the proposal at index ${index} was replaced by a new leader's entry: it was not applied; retry`,
  );
}

/** The state machine's record of a member from its config change's context (empty: only the id). */
function memberRecordOf(change: ConfChange): MemberRecord {
  let record = create(MemberRecordSchema, {});
  try {
    if (change.context.length > 0) record = fromBinary(MemberRecordSchema, change.context);
  } catch {
    // A committed change every node applies alike: an unreadable record leaves only the id.
  }
  return { ...record, nodeId: BigInt(change.nodeId) };
}

export type { Proposed };
