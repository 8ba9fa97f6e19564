/**
 * Consensus on a running node: the Raft log in the data directory, the
 * first start of a cluster (bootstrap), the driver fed by the inbox and
 * sending through the outbox, and the read models the rest of the node uses
 * (who leads, who is a member, how far the log is).
 *
 * Owns: {@link Consensus}, {@link ConsensusObserver}. Imports config types,
 * the Raft message type, the driver and scheduler (`src/consensus/`), the
 * core's types and bootstrap (`src/raft/`), the SQLite log
 * (`src/storage/`), the state machine, the inbox, the outbox and the
 * generated Status messages.
 *
 * @module
 */

import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { RaftMessage } from "../codec/raft.ts";
import type { AgentConfig } from "../config/mod.ts";
import { RaftDriver } from "../consensus/driver.ts";
import { realScheduler, type Scheduler } from "../consensus/scheduler.ts";
import { bootstrapUpdate, type RandomSource, Role, seededRandom } from "../raft/mod.ts";
import { type GetRaftStatusResponseSchema, RaftRole } from "../rpc/gen/blixard/v1/status_pb.ts";
import type { RaftOutbox } from "../runner/raft_outbox.ts";
import type { MemberRecord } from "../state/cluster_state.ts";
import { SqliteLogStorage } from "../storage/raft_log.ts";
import type { Logger } from "../util/log.ts";
import type { RaftInbox } from "./raft_inbox.ts";

/** The file of the Raft log in the data directory. */
export const RAFT_LOG_FILE = "raft.db";

/** Options of {@link Consensus.open}. */
export interface ConsensusOptions {
  readonly config: AgentConfig;
  readonly inbox: RaftInbox;
  readonly outbox: RaftOutbox;
  readonly logger: Logger;
  /** Told whenever the membership changes (an applied change, a restored snapshot). */
  readonly onMembership?: (members: readonly MemberRecord[]) => void;
  /** Told once if storage fails: the node must stop (fail-stop). */
  readonly onFailure?: (error: Error) => void;
  readonly scheduler?: Scheduler;
  readonly random?: RandomSource;
  /** Told what consensus does, for metrics. */
  readonly observer?: ConsensusObserver;
}

/**
 * What consensus reports as it runs: the leader it knows, and every message
 * as the driver hands it to the outbox or takes it from the inbox (so a
 * round trip measured between the two is consensus's own view, both queues
 * included). Called on the hot path: implementations must be cheap.
 */
export interface ConsensusObserver {
  /** The leader this node knows changed (0: none). */
  leaderKnown(leader: number): void;
  sent(message: RaftMessage): void;
  received(message: RaftMessage): void;
}

const ROLES: Record<Role, RaftRole> = {
  [Role.Follower]: RaftRole.FOLLOWER,
  [Role.PreCandidate]: RaftRole.PRE_CANDIDATE,
  [Role.Candidate]: RaftRole.CANDIDATE,
  [Role.Leader]: RaftRole.LEADER,
};

/** The consensus of this node. */
export class Consensus {
  readonly driver: RaftDriver;
  readonly #storage: SqliteLogStorage;
  readonly #log: Logger;
  readonly #id: number;
  /** Messages addressed to another node, dropped. */
  misaddressed = 0;
  #closed = false;

  private constructor(
    id: number,
    driver: RaftDriver,
    storage: SqliteLogStorage,
    log: Logger,
  ) {
    this.#id = id;
    this.driver = driver;
    this.#storage = storage;
    this.#log = log;
  }

  /**
   * Opens the node's Raft log (creating it on the first start, and forming a
   * new cluster there if `cluster.bootstrap` says so) and starts the driver.
   */
  static open(o: ConsensusOptions): Consensus {
    const { config } = o;
    const id = config.node.id;
    const log = o.logger;
    const storage = SqliteLogStorage.open(join(config.node.dataDir, RAFT_LOG_FILE));
    const fresh = storage.lastIndex() === 0 && storage.snapshot().meta.index === 0;
    if (fresh && config.cluster.bootstrap) {
      // Every initial member writes the same entries: the ids of this node and its peers.
      const members = [id, ...config.cluster.peers.map((p) => p.id)].sort((a, b) => a - b);
      storage.save(bootstrapUpdate(members.map((m) => ({ id: m }))));
      log.info("formed a new cluster", { members: members.join(",") });
    } else if (fresh) {
      log.info("waiting to be added to a cluster (cluster.bootstrap = false)", { node: id });
    }
    const scheduler = o.scheduler ?? realScheduler;
    // Set below; the driver's callbacks run only once it is.
    let consensus: Consensus | undefined = undefined;
    const driver = new RaftDriver({
      id,
      storage,
      scheduler,
      random: o.random ?? seededRandom(crypto.getRandomValues(new Uint32Array(1))[0]!),
      transport: {
        send: o.observer
          ? (m) => {
            o.observer!.sent(m);
            o.outbox.send(m);
          }
          : (m) => o.outbox.send(m),
      },
      tickMs: config.raft.tickMs,
      core: {
        electionTicks: config.raft.electionTicks,
        heartbeatTicks: config.raft.heartbeatTicks,
        checkQuorum: true,
        preVote: true,
      },
      snapshotEveryEntries: config.raft.snapshotEveryEntries,
      keepEntries: config.raft.keepEntries,
      onMembership: (members) => {
        o.onMembership?.(members);
        // The only voter need not wait out an election timeout to lead (after
        // the Ready that applied the change is done).
        scheduler.defer(() => {
          if (consensus) consensus.#campaignIfAlone();
        });
      },
      onFailure: (error) => {
        log.error("consensus stopped: storage failed", { error });
        o.onFailure?.(error);
      },
      ...(o.observer ? { onSoftState: (soft) => o.observer!.leaderKnown(soft.leader) } : {}),
    });
    consensus = new Consensus(id, driver, storage, log);
    o.inbox.onReady = () => consensus!.#drain(o.inbox, o.observer);
    driver.start();
    consensus.#campaignIfAlone();
    return consensus;
  }

  #campaignIfAlone(): void {
    if (this.#closed) return;
    const s = this.driver.status();
    if (s.voters.length === 1 && s.voters[0] === this.#id && s.role !== Role.Leader) {
      this.driver.campaign();
    }
  }

  #drain(inbox: RaftInbox, observer: ConsensusObserver | undefined): void {
    if (this.#closed) return;
    for (let d = inbox.take(); d; d = inbox.take()) {
      if (d.message.to !== this.#id) {
        this.misaddressed++;
        continue;
      }
      observer?.received(d.message);
      this.driver.receive(d.message);
    }
  }

  /** The leader this node knows; 0 for none. */
  get leader(): number {
    return this.driver.role.leader;
  }

  /** The members as the replicated state records them, by node id. */
  members(): MemberRecord[] {
    return this.driver.state.members();
  }

  /** GetRaftStatus's answer. */
  raftStatus(): MessageInitShape<typeof GetRaftStatusResponseSchema> {
    const s = this.driver.status();
    return {
      nodeId: BigInt(s.id),
      term: BigInt(s.term),
      commitIndex: BigInt(s.commit),
      appliedIndex: BigInt(this.driver.state.appliedIndex),
      role: ROLES[s.role],
      leaderId: BigInt(s.leader),
      peers: s.peers.filter((p) => p.id !== s.id).map((p) => ({
        nodeId: BigInt(p.id),
        matchIndex: BigInt(p.match),
        nextIndex: BigInt(p.next),
      })),
      lastLogIndex: BigInt(s.lastIndex),
      snapshotIndex: BigInt(this.#storage.snapshot().meta.index),
      voters: s.voters.map(BigInt),
      learners: s.learners.map(BigInt),
    };
  }

  /**
   * If this node leads and another voter exists, transfers leadership to the
   * voter with the longest log and waits until it leads, at most `waitMs`
   * (before a stop: clients then find a leader at once). A failure is
   * logged, never fatal.
   */
  async handOver(waitMs: number): Promise<void> {
    if (this.#closed || this.driver.failed || this.leader !== this.#id) return;
    const s = this.driver.status();
    const to = s.peers.filter((p) => p.id !== s.id && s.voters.includes(p.id))
      .sort((a, b) => b.match - a.match || a.id - b.id)[0]?.id;
    if (to === undefined) return;
    const started = Date.now();
    try {
      this.driver.transferLeadership(to);
      while (this.leader === this.#id || this.leader === 0) {
        if (Date.now() - started > waitMs) {
          throw new Error(`node ${to} did not take over in ${waitMs} ms`);
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      this.#log.info("handed leadership over before stopping", {
        to: this.leader,
        took_ms: Date.now() - started,
      });
    } catch (e) {
      this.#log.warn("could not hand leadership over before stopping", { to, error: e });
    }
  }

  /** Stops the driver and closes the log; nothing reads it after. */
  close(): void {
    this.#closed = true;
    this.driver.stop();
    try {
      this.#storage.close();
    } catch (e) {
      this.#log.warn("closing the Raft log failed", { error: e });
    }
  }
}
