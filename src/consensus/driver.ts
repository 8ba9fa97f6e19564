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
 * Fail-stop: if storage cannot promise a write is durable, the driver stops
 * at once: no message is sent, nothing more is acknowledged, every waiting
 * caller is told, and `failed` says why (the agent then exits, and a restart
 * recovers from what is on disk).
 *
 * @module
 */

import { type Entry, EntryKind, type RaftMessage, RaftMessageKind } from "../codec/raft.ts";
import {
  type ConfChange,
  ConfChangeType,
  type CoreMessage,
  decodeConfChange,
  type LogStorage,
  NotLeaderError,
  type Proposed,
  type RaftConfig,
  RaftCore,
  type RandomSource,
  type Ready,
  Role,
  SNAPSHOT_MESSAGE,
  type SnapshotMessage,
  type Status,
  StorageFailure,
} from "../raft/mod.ts";
import {
  type ApplyResult,
  ClusterState,
  type Command,
  encodeCommand,
  type MemberRecord,
} from "../state/cluster_state.ts";
import { create, fromBinary } from "@bufbuild/protobuf";
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
  /** Told when the membership changed (an applied config change, or a restored snapshot). */
  readonly onMembership?: (members: readonly MemberRecord[]) => void;
  /** Told once when the driver stops for good because storage failed. */
  readonly onFailure?: (error: Error) => void;
  /** Told when this node's role or the leader it knows changes (for metrics). */
  readonly onSoftState?: (soft: { readonly role: Role; readonly leader: number }) => void;
}

/** A call the driver could not serve, with a code the services map to RPC status codes. */
export class ConsensusError extends Error {
  override readonly name = "ConsensusError";
  readonly code:
    | "NOT_LEADER"
    | "UNAVAILABLE"
    | "LOST"
    | "STOPPED"
    | "FAILED"
    | "REFUSED";
  /** For NOT_LEADER: the leader this node knows (0 for none). */
  readonly leader: number;
  constructor(code: ConsensusError["code"], message: string, leader = 0) {
    super(message);
    this.code = code;
    this.leader = leader;
  }
}

interface Waiter<T> {
  readonly term: number;
  readonly resolve: (value: T) => void;
  readonly reject: (error: Error) => void;
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
  /** Proposals waiting for their entry to be applied, by index. */
  readonly #proposals = new Map<number, Waiter<ApplyResult>>();
  readonly #confChanges = new Map<number, Waiter<void>>();
  /** Reads waiting for their read index to be applied. */
  #reads: { index: number; resolve: () => void }[] = [];
  /** Reads waiting for the core's read index, by context. */
  readonly #readContexts = new Map<
    number,
    { resolve: (index: number) => void; reject: (e: Error) => void }
  >();
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

  /** Set once the driver stopped for good because storage failed. */
  get failed(): Error | null {
    return this.#failed;
  }

  /** A message from a peer (from the inbox). */
  receive(message: RaftMessage): void {
    if (this.#stopped) return;
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
   * @throws {ConsensusError} NOT_LEADER (with the leader to forward to), or
   *   UNAVAILABLE when the core cannot take it now.
   */
  propose(command: Command): Promise<ApplyResult> {
    return this.#proposeData(encodeCommand(command));
  }

  /**
   * Changes the membership; resolves once the change is applied here.
   * @throws {ConsensusError} NOT_LEADER, or REFUSED (another change pending, ...).
   */
  changeMembership(change: ConfChange): Promise<void> {
    const proposed = this.#call(() => this.#core.proposeConfChange(change));
    return new Promise<void>((resolve, reject) => {
      if (proposed instanceof Error) return reject(proposed);
      this.#confChanges.set(proposed.index, { term: proposed.term, resolve, reject });
      this.#schedule();
    });
  }

  /**
   * Waits until this node's state is at least as new as the cluster's
   * commit index at the time of the call (Raft's ReadIndex, confirmed with a
   * quorum by the leader), then runs `read` on it: a linearizable read.
   */
  async read<T>(read: (state: ClusterState) => T): Promise<T> {
    const index = await this.#readIndex();
    if (this.#state.appliedIndex < index) {
      await new Promise<void>((resolve) => this.#reads.push({ index, resolve }));
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
    this.#core.campaign();
    this.#schedule();
  }

  /** Tells the core a peer could not be reached (the outbox dropped a message to it). */
  reportUnreachable(peer: number): void {
    if (this.#stopped) return;
    this.#core.reportUnreachable(peer);
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
      this.#proposals.set(proposed.index, { term: proposed.term, resolve, reject });
      this.#schedule();
    });
  }

  #readIndex(): Promise<number> {
    const context = this.#nextReadContext++;
    const called = this.#call(() => this.#core.readIndex(context));
    if (called instanceof Error) return Promise.reject(called);
    return new Promise<number>((resolve, reject) => {
      this.#readContexts.set(context, { resolve, reject });
      this.#schedule();
    });
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
      if (e instanceof Error && "code" in e) {
        return new ConsensusError("REFUSED", e.message);
      }
      throw e;
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
      // A message the core refuses (from a stale or unknown peer, malformed) changes nothing.
      if (!(e instanceof Error && "code" in e)) throw e;
      return;
    }
    this.#schedule();
  }

  #tick(): void {
    if (this.#stopped) return;
    this.#core.tick();
    const now = this.#scheduler.now();
    this.#receiver.onTick(now);
    for (const sender of this.#senders.values()) this.#onSendStep(sender, sender.onTick(now));
    this.#schedule();
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
        this.#fail(
          e instanceof StorageFailure
            ? e
            : new StorageFailure(`storage write failed: ${(e as Error).message}`),
        );
        return;
      }
    }
    if (rd.snapshot) {
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
      const waiter = this.#confChanges.get(entry.index);
      if (waiter) {
        this.#confChanges.delete(entry.index);
        if (waiter.term === entry.term) waiter.resolve();
        else waiter.reject(lost(entry.index));
      }
    } else {
      const result = this.#state.apply(entry.index, entry.data);
      const waiter = this.#proposals.get(entry.index);
      if (waiter) {
        this.#proposals.delete(entry.index);
        // Another leader's entry took this index: the proposal was never committed.
        if (waiter.term === entry.term) waiter.resolve(result);
        else waiter.reject(lost(entry.index));
      }
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
      this.#fail(
        e instanceof StorageFailure
          ? e
          : new StorageFailure(`snapshot write failed: ${(e as Error).message}`),
      );
    }
  }

  #fail(error: Error): void {
    if (this.#failed) return;
    this.#failed = error;
    this.#stopped = true;
    this.#cancelTicker?.();
    this.#failWaiters(new ConsensusError("FAILED", `consensus stopped: ${error.message}`));
    this.#o.onFailure?.(error);
  }

  #failWaiters(error: ConsensusError): void {
    for (const w of this.#proposals.values()) w.reject(error);
    this.#proposals.clear();
    for (const w of this.#confChanges.values()) w.reject(error);
    this.#confChanges.clear();
    for (const w of this.#readContexts.values()) w.reject(error);
    this.#readContexts.clear();
    const reads = this.#reads;
    this.#reads = [];
    // A read waiting for its index re-checks and throws.
    for (const r of reads) r.resolve();
  }
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
