/**
 * One seeded run of the simulation: a cluster of three or five voters (the
 * seed chooses) runs the real consensus driver for a few seconds of virtual
 * time under a fault schedule drawn from the seed, while clients issue
 * metadata operations against random nodes. Then every fault is healed and
 * the run checks that the cluster recovers and that nothing it told a
 * client was a lie.
 *
 * Owns: {@link runSeed}, {@link shapeOf}, {@link SimFailure},
 * {@link RunResult}, {@link replayCommand}. Imports the simulation's parts,
 * the driver and core's public surface, and the linearizability checker
 * with the register model.
 *
 * Faults: message loss, duplication, delay and reordering; symmetric and
 * one-way partitions, and isolating the leader; crashes and restarts from
 * durable state; a disk that fails a write (the driver stops, the node is
 * restarted later); membership changes (a voter removed, a new node with an
 * empty disk added as a learner, which the leader promotes) and leadership
 * transfers, while the rest goes on.
 *
 * Checks: the cheap invariants (tests/sim/invariants.ts) after every event,
 * the log invariants every {@link LOG_CHECK_EVERY} events and at the end;
 * once healed, a leader within {@link LEADER_BOUND_TICKS} (more without
 * PreVote), every member at
 * the same applied index with the same state machine bytes, every request a
 * node took answered, and the client history linearizable.
 *
 * A seed is the whole run: the same seed replays it event for event.
 */

import { create, toBinary } from "@bufbuild/protobuf";
import { ConsensusError } from "../../src/consensus/driver.ts";
import { ConfChangeType, type RandomSource, seededRandom } from "../../src/raft/mod.ts";
import { MemberRecordSchema } from "../../src/rpc/gen/blixard/v1/state_pb.ts";
import type { ClusterState } from "../../src/state/cluster_state.ts";
import { checkHistory } from "../support/linearizability.ts";
import { registerModel } from "../support/register_model.ts";
import { HistoryRecorder, SimClient, type Tracked } from "./clients.ts";
import { isSimulatedDiskFailure, SimCluster, type SimNode } from "./cluster.ts";
import { InvariantChecker } from "./invariants.ts";
import { CALM, type Faults, type NetworkStats } from "./network.ts";

/** Virtual ms per tick. */
export const TICK_MS = 10;
/** The core's election timeout base, in ticks (its default). */
export const ELECTION_TICKS = 10;
/** Virtual time under faults. */
export const FAULT_MS = 3_000;
/** How long a client waits for an answer before it records an unknown outcome. */
export const OP_TIMEOUT_MS = 500;
/** The drivers answer UNKNOWN to a proposal not applied within this (their default). */
export const PROPOSAL_TIMEOUT_MS = 10 * ELECTION_TICKS * TICK_MS;
/** Scheduler events between two runs of the log invariants. */
export const LOG_CHECK_EVERY = 250;
/**
 * Once healed, a leader must be elected within this many ticks (with
 * PreVote; {@link LEADER_BOUND_TICKS_WITHOUT_PREVOTE} without). Why: every
 * node is up and every message arrives within 5 ms (half a tick). Write E
 * for ELECTION_TICKS. A leader without a quorum steps down within 2E
 * (CheckQuorum); a follower that heard from a leader refuses votes for E
 * (stickiness) and campaigns at most 2E after it last heard from one. Under
 * PreVote a node whose log is behind wins no pre-vote, so it never raises a
 * term nor restarts anyone's timer. So an up-to-date node campaigns within
 * 3E + 2 ticks and wins, unless another campaigns within the same tick or
 * two and the votes split, which costs at most 2E + 2 more; a split needs
 * two timeouts drawn from E values to collide. Six split rounds in a row on
 * top: 3E + 2 + 6 * (2E + 2) = 164 ticks, rounded up to 20 election
 * timeouts. A run that needs more is not unlucky but stuck.
 */
export const LEADER_BOUND_TICKS = 20 * ELECTION_TICKS;
/**
 * The bound without PreVote. A node whose log is behind cannot win, but its
 * VoteRequests raise the term of every node they reach and restart its
 * timer, so an up-to-date node wins only in a round where it times out
 * before such a rival: about one round in two against one rival (seed
 * 18018: the sole other voter had fallen 100 entries behind; its leader was
 * elected after 140 ticks, some ten rounds). Thirty rounds of 2E each, which
 * chance alone needs about once in 2^30 healings.
 */
export const LEADER_BOUND_TICKS_WITHOUT_PREVOTE = 60 * ELECTION_TICKS;
/** Once a leader leads the healed cluster, every member catches up within this. */
export const CONVERGE_BOUND_MS = 5_000;
/** Nodes that may join over a run (fresh ids, never reused). */
const MAX_JOINERS = 4;
/** Explored configurations the linearizability check may spend per key. */
const MAX_EXPLORED = 1_000_000;

/** The shape of a seed's run. */
export interface Shape {
  readonly voters: readonly number[];
  readonly clients: number;
  readonly keys: readonly string[];
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly maxSizePerMsgBytes: number;
  readonly maxInflightMsgs: number;
  readonly snapshotEveryEntries: number;
  readonly keepEntries: number;
  readonly chunkBytes: number;
  /** Time between two faults, ms: a storm, a steady drizzle or a slow drift. */
  readonly faultGapMs: readonly [number, number];
  /**
   * Percent of new leaders deposed at once (crashed, bounced or cut off
   * within 40 ms): leaders that fall before their first appends spread
   * leave the divergent logs of Figure 8 behind.
   */
  readonly deposePercent: number;
}

/** What a seed runs: cluster size, clients, keys and the settings that vary. */
export function shapeOf(seed: number, nodes?: 3 | 5): Shape {
  const r = seededRandom(seed ^ 0x5a3e);
  const drawn = r.nextInt(2) === 0 ? 3 : 5;
  const count = nodes ?? drawn;
  const keyCount = 2 + r.nextInt(3);
  return {
    voters: Array.from({ length: count }, (_, i) => i + 1),
    clients: 5 + r.nextInt(6),
    keys: Array.from({ length: keyCount }, (_, i) => `k${i}`),
    // The agent runs with both on; off, the core's other paths are exercised too.
    preVote: r.nextInt(4) !== 0,
    checkQuorum: r.nextInt(4) !== 0,
    // Small appends leave logs replicated in part: the divergent tails the
    // commit rule and the conflict handling exist for.
    maxSizePerMsgBytes: [1, 64, 1024 * 1024][r.nextInt(3)]!,
    maxInflightMsgs: [1, 4, 256][r.nextInt(3)]!,
    snapshotEveryEntries: 20 + r.nextInt(60),
    keepEntries: r.nextInt(12),
    chunkBytes: [64, 512, 4096][r.nextInt(3)]!,
    faultGapMs: ([[5, 60], [20, 200], [50, 400]] as const)[r.nextInt(3)]!,
    deposePercent: [0, 20, 50][r.nextInt(3)]!,
  };
}

/** The command that replays one seed. */
export function replayCommand(seed: number, nodes?: 3 | 5): string {
  return `npx deno task sim --seed ${seed}${nodes ? ` --nodes ${nodes}` : ""}`;
}

/** A seed whose run broke a property; the message says which, and how to replay it. */
export class SimFailure extends Error {
  override readonly name = "SimFailure";
  readonly seed: number;
  constructor(seed: number, nodes: 3 | 5 | undefined, what: string, recent: readonly string[]) {
    super(
      `seed ${seed}: ${what}\nreplay: ${replayCommand(seed, nodes)}` +
        (recent.length ? `\nlast events:\n  ${recent.join("\n  ")}` : ""),
    );
    this.seed = seed;
  }
}

/** Kinds of fault the schedule injects. */
export type FaultKind =
  | "weather"
  | "partition"
  | "one_way"
  | "isolate_leader"
  | "heal"
  | "crash"
  | "bounce"
  | "blip"
  | "restart"
  | "disk"
  | "remove"
  | "add"
  | "transfer";

const WEIGHTS: readonly [FaultKind, number][] = [
  ["weather", 12],
  ["partition", 8],
  ["one_way", 6],
  ["isolate_leader", 6],
  ["heal", 10],
  ["crash", 6],
  ["bounce", 5],
  ["blip", 6],
  ["restart", 12],
  ["disk", 6],
  ["remove", 4],
  ["add", 5],
  ["transfer", 6],
];
const TOTAL_WEIGHT = WEIGHTS.reduce((n, [, w]) => n + w, 0);

/** What a run did, for the soak's summary. */
export interface RunResult {
  readonly seed: number;
  /** Initial voters. */
  readonly nodes: number;
  readonly virtualMs: number;
  /** Scheduler events. */
  readonly steps: number;
  /**
   * Faults injected, by kind; `disk_failures` counts writes that did fail,
   * `commits_lost` crashes that took a node's commit index back.
   */
  readonly faults: Readonly<Record<string, number>>;
  /** Operations in the checked history. */
  readonly operations: number;
  /** Of those, writes with an unknown outcome. */
  readonly unknown: number;
  /** Wall time of the linearizability check, ms. */
  readonly checkMs: number;
  /** Ticks from healing to a recognized leader. */
  readonly leaderTicks: number;
  /** Whether the run's nodes used PreVote (its election bound depends on it). */
  readonly preVote: boolean;
  readonly messages: NetworkStats;
}

/** Options of one run. */
export interface RunOptions {
  readonly seed: number;
  /** Overrides the cluster size the seed would choose. */
  readonly nodes?: 3 | 5;
  /** Prints each fault and phase as it happens. */
  readonly log?: (line: string) => void;
}

/** Runs one seed; throws {@link SimFailure} naming the broken property and the replay command. */
export async function runSeed(options: RunOptions): Promise<RunResult> {
  const run = new Run(options);
  try {
    return await run.go();
  } catch (e) {
    if (e instanceof SimFailure) throw e;
    throw new SimFailure(
      options.seed,
      options.nodes,
      `at ${run.cluster.scheduler.now()} ms: ${(e as Error).stack ?? e}`,
      run.recent,
    );
  }
}

class Run {
  readonly seed: number;
  readonly shape: Shape;
  readonly cluster: SimCluster;
  readonly checker: InvariantChecker;
  readonly history = new HistoryRecorder();
  readonly tracked: Tracked[] = [];
  readonly clients: SimClient[] = [];
  readonly faults: Record<string, number> = { disk_failures: 0 };
  /** The last events, for a failure's message. */
  readonly recent: string[] = [];
  readonly #o: RunOptions;
  readonly #rng: RandomSource;
  /** Nodes shut down for good: removed from the membership, or never admitted. */
  readonly #retired = new Set<number>();
  #nextId: number;
  #joined = 0;
  #events = 0;
  #clientError: unknown = null;
  /** A driver that stopped for another reason than an injected disk fault. */
  #fatal: Error | null = null;

  constructor(options: RunOptions) {
    this.#o = options;
    this.seed = options.seed;
    this.shape = shapeOf(options.seed, options.nodes);
    const s = this.shape;
    this.cluster = new SimCluster({
      seed: options.seed,
      members: s.voters,
      tickMs: TICK_MS,
      snapshotEveryEntries: s.snapshotEveryEntries,
      keepEntries: s.keepEntries,
      core: {
        electionTicks: ELECTION_TICKS,
        preVote: s.preVote,
        checkQuorum: s.checkQuorum,
        maxSizePerMsgBytes: s.maxSizePerMsgBytes,
        maxInflightMsgs: s.maxInflightMsgs,
      },
      driver: { proposalTimeoutMs: PROPOSAL_TIMEOUT_MS },
      snapshotTransfer: {
        chunkBytes: s.chunkBytes,
        windowChunks: 2,
        maxCompressedBytes: 1024 * 1024,
        maxSnapshotBytes: 16 * 1024 * 1024,
        idleTimeoutMs: 300,
      },
    });
    this.checker = new InvariantChecker(this.cluster);
    this.checker.onNewLeader = (node, term) => this.#maybeDepose(node, term);
    this.#rng = seededRandom(options.seed ^ 0xfa017);
    this.#nextId = s.voters.length + 1;
    this.cluster.onNodeFailure = (node, error) => {
      if (!isSimulatedDiskFailure(error)) {
        this.#fatal ??= new Error(`node ${node.id} stopped on its own: ${error.stack ?? error}`);
        return;
      }
      this.faults.disk_failures!++;
      this.#note(`node ${node.id} stopped: ${error.message}`);
    };
  }

  async go(): Promise<RunResult> {
    const { cluster, shape } = this;
    const scheduler = cluster.scheduler;
    this.#note(
      `shape: voters ${shape.voters.join(",")}, ${shape.clients} clients, keys ${
        shape.keys.join(",")
      }, preVote ${shape.preVote}, checkQuorum ${shape.checkQuorum}, ` +
        `maxSizePerMsg ${shape.maxSizePerMsgBytes}, inflight ${shape.maxInflightMsgs}, ` +
        `snapshot every ${shape.snapshotEveryEntries} keep ${shape.keepEntries}, chunk ${shape.chunkBytes}`,
    );
    cluster.startAll();
    const clientRng = seededRandom(this.seed ^ 0xc11e47);
    for (let i = 0; i < shape.clients; i++) {
      const client = new SimClient(
        { id: i + 1, keys: shape.keys, random: clientRng, timeoutMs: OP_TIMEOUT_MS },
        cluster,
        this.history,
        this.tracked,
      );
      this.clients.push(client);
      scheduler.after(clientRng.nextInt(100), () => {
        client.run().catch((e) => this.#clientError ??= e);
      });
    }
    const nextFault = () => {
      if (scheduler.now() >= FAULT_MS) return;
      this.#fault();
      const [min, max] = shape.faultGapMs;
      scheduler.after(min + this.#rng.nextInt(max - min), nextFault);
    };
    scheduler.after(this.#rng.nextInt(200), nextFault);
    if (this.#o.log) {
      // Verbose: where every node stands, every 100 ms (an event of its own, drawing no random number).
      const report = () => {
        this.#note(`status: ${this.#describeNodes()}`);
        if (scheduler.now() < FAULT_MS) scheduler.after(100, report);
      };
      scheduler.after(100, report);
    }

    await this.#runUntil(FAULT_MS);
    const leaderTicks = await this.#heal();
    await this.#converge();
    await this.#closeRequests();
    await this.#finalReads();
    this.checker.logs();
    const { operations, unknown, checkMs } = this.#checkHistory();
    return {
      seed: this.seed,
      nodes: shape.voters.length,
      virtualMs: scheduler.now(),
      steps: scheduler.steps,
      faults: this.faults,
      operations,
      unknown,
      checkMs,
      leaderTicks,
      preVote: shape.preVote,
      messages: cluster.network.stats,
    };
  }

  // ------------------------------------------------------------- running

  async #runUntil(until: number, stop?: () => boolean): Promise<void> {
    await this.cluster.scheduler.runUntil(until, () => this.#check(), stop);
    this.#throwClientError();
  }

  #check(): void {
    if (this.#fatal) throw this.#fatal;
    this.checker.afterEvent();
    if (++this.#events % LOG_CHECK_EVERY === 0) this.checker.logs();
  }

  #throwClientError(): void {
    if (this.#clientError !== null) throw this.#clientError;
  }

  #fail(what: string): never {
    throw new SimFailure(
      this.seed,
      this.#o.nodes,
      `at ${this.cluster.scheduler.now()} ms: ${what}`,
      this.recent,
    );
  }

  #note(line: string): void {
    const stamped = `${this.cluster.scheduler.now()} ms: ${line}`;
    this.recent.push(stamped);
    if (this.recent.length > 40) this.recent.shift();
    this.#o.log?.(stamped);
  }

  // -------------------------------------------------------------- faults

  #fault(): void {
    let roll = this.#rng.nextInt(TOTAL_WEIGHT);
    let kind: FaultKind = WEIGHTS[0]![0];
    for (const [k, w] of WEIGHTS) {
      if (roll < w) {
        kind = k;
        break;
      }
      roll -= w;
    }
    const done = this.#inject(kind);
    if (done !== null) {
      this.faults[kind] = (this.faults[kind] ?? 0) + 1;
      this.#note(`${kind}: ${done}`);
    }
  }

  /** Injects one fault; returns what it did, or null when it could not apply now. */
  #inject(kind: FaultKind): string | null {
    const { cluster } = this;
    const r = this.#rng;
    const pick = <T>(items: readonly T[]): T | undefined =>
      items.length === 0 ? undefined : items[r.nextInt(items.length)];
    const live = this.#live();
    switch (kind) {
      case "weather": {
        const f = weather(r);
        cluster.network.faults = f;
        return `loss ${f.loss}, duplicate ${f.duplicate}, delay ${f.minDelayMs}..${f.maxDelayMs} ms`;
      }
      case "partition": {
        const ids = shuffled(live, r);
        if (ids.length < 2) return null;
        const cut = 1 + r.nextInt(ids.length - 1);
        const a = ids.slice(0, cut), b = ids.slice(cut);
        cluster.network.partition(a, b);
        return `${a.join(",")} | ${b.join(",")}`;
      }
      case "one_way": {
        const from = pick(live);
        const to = live.filter((id) => id !== from && r.nextInt(2) === 0);
        if (from === undefined || to.length === 0) return null;
        cluster.network.cutOneWay([from], to);
        return `${from} -> ${to.join(",")} cut`;
      }
      case "isolate_leader": {
        const leader = cluster.leader();
        if (!leader) return null;
        cluster.network.isolate(leader.id, live);
        return `leader ${leader.id}`;
      }
      case "heal":
        cluster.network.heal();
        return "every link";
      case "crash":
      case "bounce":
      case "blip": {
        // The leader half the time: its fall is what elections, lost
        // proposals and divergent logs come from.
        const node = r.nextInt(2) === 0
          ? cluster.leader() ?? pick(cluster.running)
          : pick(cluster.running);
        return node ? this.#injectOn(kind, node) : null;
      }
      case "restart": {
        const node = pick(live.map((id) => cluster.node(id)).filter((n) => !n.up));
        if (!node) return null;
        cluster.start(node.id);
        return `node ${node.id} (life ${node.lives})`;
      }
      case "disk": {
        const node = pick(cluster.running);
        if (!node) return null;
        if (r.nextInt(3) === 0) {
          const after = r.nextInt(200);
          node.storage.failReadAfter(after);
          return `node ${node.id}: read ${after + 1} from now fails`;
        }
        const after = r.nextInt(8);
        const landed = r.nextInt(2) === 0;
        node.storage.failAfter(after, landed);
        return `node ${node.id}: write ${after + 1} from now fails${
          landed ? " after landing" : ""
        }`;
      }
      case "remove":
        return this.#remove();
      case "add":
        return this.#add();
      case "transfer": {
        const leader = cluster.leader();
        if (!leader) return null;
        const to = pick(this.cluster.status(leader).voters.filter((id) => id !== leader.id));
        if (to === undefined) return null;
        try {
          leader.driver!.transferLeadership(to);
        } catch (e) {
          return `${leader.id} -> ${to} refused: ${(e as Error).message}`;
        }
        return `${leader.id} -> ${to}`;
      }
    }
  }

  /** While faults last, deposes some new leaders soon after they win. */
  #maybeDepose(leader: SimNode, term: number): void {
    const r = this.#rng;
    if (this.cluster.scheduler.now() >= FAULT_MS || r.nextInt(100) >= this.shape.deposePercent) {
      return;
    }
    const how = r.nextInt(3);
    const afterMs = r.nextInt(40);
    this.cluster.scheduler.after(afterMs, () => {
      if (this.cluster.scheduler.now() >= FAULT_MS || !leader.up) return;
      const s = this.cluster.status(leader);
      if (s.role !== "leader" || s.term !== term) return;
      const kind = how === 0 ? "crash" : how === 1 ? "bounce" : "blip";
      const done = this.#injectOn(kind, leader);
      this.faults.depose = (this.faults.depose ?? 0) + 1;
      this.#note(`depose: ${kind} the leader of term ${term}: ${done}`);
    });
  }

  /** Crashes, bounces or briefly isolates `node`; returns what it did. */
  #injectOn(kind: "crash" | "bounce" | "blip", node: SimNode): string {
    const { cluster } = this;
    const r = this.#rng;
    switch (kind) {
      case "crash":
        this.#crash(node.id);
        return `node ${node.id}`;
      case "bounce": {
        // Down and up again at once: a node that forgets what it did not
        // save votes and acknowledges again in the same term.
        this.#crash(node.id);
        const downMs = r.nextInt(60);
        cluster.scheduler.after(downMs, () => {
          if (!this.#retired.has(node.id)) cluster.start(node.id);
        });
        return `node ${node.id} for ${downMs} ms`;
      }
      case "blip": {
        // A short isolation that ends on its own: leaders change while logs diverge.
        const others = this.#live().filter((id) => id !== node.id);
        cluster.network.partition([node.id], others);
        const forMs = 10 + r.nextInt(150);
        cluster.scheduler.after(forMs, () => {
          cluster.network.restoreOneWay([node.id], others);
          cluster.network.restoreOneWay(others, [node.id]);
        });
        return `node ${node.id} cut off for ${forMs} ms`;
      }
    }
  }

  /** Nodes not retired: the ones faults, restarts and clients deal with. */
  #live(): number[] {
    return this.cluster.ids.filter((id) => !this.#retired.has(id));
  }

  #remove(): string | null {
    const leader = this.cluster.leader();
    if (!leader) return null;
    const voters = this.cluster.status(leader).voters;
    if (voters.length <= 2) return null;
    const victim = voters[this.#rng.nextInt(voters.length)]!;
    const change = leader.driver!.changeMembership({
      type: ConfChangeType.RemoveNode,
      nodeId: victim,
      context: new Uint8Array(0),
    });
    const tracked = this.#track(`remove ${victim}`, leader.id);
    change.then(() => {
      tracked.settled = true;
      // Applied, so committed: the operator shuts the removed node down a little later.
      this.cluster.scheduler.after(this.#rng.nextInt(200), () => this.#retire(victim, "removed"));
    }, (e) => {
      tracked.settled = true;
      this.#note(`remove ${victim}: ${(e as Error).message}`);
    });
    return `leader ${leader.id} proposes to remove ${victim}`;
  }

  #add(): string | null {
    const leader = this.cluster.leader();
    if (!leader || this.#joined >= MAX_JOINERS) return null;
    const id = this.#nextId++;
    this.#joined++;
    this.cluster.addEmptyNode(id);
    this.cluster.start(id);
    const record = create(MemberRecordSchema, {
      nodeId: BigInt(id),
      grpcAddress: `10.0.0.${id}:7400`,
      vcpus: 4,
    });
    const change = leader.driver!.changeMembership({
      type: ConfChangeType.AddLearner,
      nodeId: id,
      context: toBinary(MemberRecordSchema, record),
    });
    const tracked = this.#track(`add learner ${id}`, leader.id);
    change.then(() => {
      tracked.settled = true;
    }, (e) => {
      tracked.settled = true;
      this.#note(`add ${id}: ${(e as Error).message}`);
      // Refused before it was proposed: the new node will never be a member.
      if (e instanceof ConsensusError && (e.code === "NOT_LEADER" || e.code === "REFUSED")) {
        this.#retire(id, "never admitted");
      }
    });
    return `leader ${leader.id} adds node ${id} as a learner`;
  }

  /** Crashes node `id`, counting a commit index its disk lost. */
  #crash(id: number): void {
    if (this.cluster.crash(id).commitLost) {
      this.faults.commits_lost = (this.faults.commits_lost ?? 0) + 1;
    }
  }

  #retire(id: number, why: string): void {
    if (this.#retired.has(id)) return;
    this.#retired.add(id);
    this.#crash(id);
    this.#note(`node ${id} shut down for good: ${why}`);
  }

  #track(what: string, node: number): Tracked {
    const t: Tracked = { what, node, at: this.cluster.scheduler.now(), settled: false };
    this.tracked.push(t);
    return t;
  }

  // ------------------------------------------------------------- healing

  /** Heals everything; returns the ticks until a leader the cluster follows. */
  async #heal(): Promise<number> {
    const { cluster } = this;
    for (const c of this.clients) c.stop();
    cluster.network.heal();
    cluster.network.faults = CALM;
    for (const id of cluster.ids) cluster.node(id).storage.disarm();
    for (const id of this.#live()) cluster.start(id);
    const healedAt = cluster.scheduler.now();
    this.#note(`healed; every node but ${[...this.#retired].join(",") || "none"} runs`);
    const bound = this.shape.preVote ? LEADER_BOUND_TICKS : LEADER_BOUND_TICKS_WITHOUT_PREVOTE;
    await this.#runUntil(
      healedAt + bound * TICK_MS,
      () => cluster.recognizedLeader() !== undefined,
    );
    const leader = cluster.recognizedLeader();
    if (!leader) this.#fail(`no leader ${bound} ticks after healing: ${this.#describeNodes()}`);
    const ticks = Math.ceil((cluster.scheduler.now() - healedAt) / TICK_MS);
    this.#note(`leader ${leader.id} after ${ticks} ticks`);
    return ticks;
  }

  /** Waits until every member applied the leader's whole log and holds the same state. */
  async #converge(): Promise<void> {
    const { cluster } = this;
    const deadline = cluster.scheduler.now() + CONVERGE_BOUND_MS;
    let leader: SimNode | undefined;
    for (;;) {
      leader = cluster.recognizedLeader();
      if (leader) this.#retireNonMembers(leader);
      if (leader && this.#caughtUp(leader)) break;
      if (cluster.scheduler.now() >= deadline) {
        this.#fail(
          `the healed cluster did not converge in ${CONVERGE_BOUND_MS} ms: ${this.#describeNodes()}`,
        );
      }
      await this.#runUntil(cluster.scheduler.now() + 5 * TICK_MS);
    }
    const s = this.cluster.status(leader);
    const expected = leader.driver!.state.snapshot();
    for (const id of [...s.voters, ...s.learners]) {
      const state = cluster.node(id).driver!.state;
      const bytes = state.snapshot();
      if (!equalBytes(bytes, expected)) {
        this.#fail(
          `node ${id} applied ${state.appliedIndex} like leader ${leader.id} but holds other state: ` +
            `${describeState(state)} vs ${describeState(leader.driver!.state)}`,
        );
      }
    }
    this.#note(
      `converged at index ${s.commit}: voters ${s.voters.join(",")}, learners ${
        s.learners.join(",") || "none"
      }`,
    );
  }

  #caughtUp(leader: SimNode): boolean {
    const s = this.cluster.status(leader);
    if (s.commit !== s.lastIndex || s.applied !== s.commit) return false;
    // The leader promotes learners itself: none is left once the cluster is calm.
    if (s.learners.length > 0) return false;
    for (const id of s.voters) {
      const d = this.cluster.nodes.get(id)?.driver;
      if (!d || d.state.appliedIndex !== s.commit) return false;
    }
    return true;
  }

  /**
   * Shuts down running nodes the leader's membership does not hold, once
   * the leader applied its whole log (before that a change it holds may not
   * show in its membership yet).
   */
  #retireNonMembers(leader: SimNode): void {
    const s = this.cluster.status(leader);
    if (s.applied !== s.lastIndex) return;
    const members = new Set([...s.voters, ...s.learners]);
    for (const node of this.cluster.running) {
      if (!members.has(node.id)) this.#retire(node.id, "not a member once healed");
    }
    for (const id of members) {
      if (this.#retired.has(id)) {
        this.#fail(`node ${id} was shut down as removed, yet the leader ${leader.id} counts it`);
      }
    }
  }

  /**
   * Lets every client's last request end and every proposal's time run
   * out, then checks every request a node took was answered.
   */
  async #closeRequests(): Promise<void> {
    const { scheduler } = this.cluster;
    await this.#runUntil(
      Math.max(scheduler.now() + OP_TIMEOUT_MS, FAULT_MS + PROPOSAL_TIMEOUT_MS) + 10 * TICK_MS,
    );
    const open = this.tracked.filter((t) => !t.settled);
    if (open.length > 0) {
      this.#fail(
        `${open.length} requests never answered once healed: ${
          open.slice(0, 8).map((t) => `${t.what} (node ${t.node}, at ${t.at} ms)`).join("; ")
        }`,
      );
    }
  }

  /** Reads every key through the leader, so the history ends with the state the cluster holds. */
  async #finalReads(): Promise<void> {
    const { cluster } = this;
    const leader = cluster.recognizedLeader();
    if (!leader) this.#fail(`the leader was lost once healed: ${this.#describeNodes()}`);
    let pending = 0;
    for (const [i, key] of this.shape.keys.entries()) {
      const call = cluster.scheduler.now();
      pending++;
      leader.driver!.read((s) => s.getMetadata(key)).then((entry) => {
        pending--;
        this.history.add({
          clientId: 1_000 + i,
          input: { op: "get", key },
          output: entry === undefined
            ? { kind: "not_found" }
            : { kind: "found", value: entry.value, revision: Number(entry.revision) },
          call,
          return: cluster.scheduler.now(),
        });
      }, (e) => this.#fail(`the final read of ${key} failed: ${(e as Error).message}`));
    }
    await this.#runUntil(cluster.scheduler.now() + 50 * TICK_MS, () => pending === 0);
    if (pending > 0) this.#fail(`${pending} final reads unanswered`);
  }

  #checkHistory(): { operations: number; unknown: number; checkMs: number } {
    const history = this.history.history();
    const started = performance.now();
    const result = checkHistory(registerModel, history, { maxExplored: MAX_EXPLORED });
    const checkMs = performance.now() - started;
    if (result.result !== "ok") {
      this.#fail(
        result.result === "illegal"
          ? `the client history is not linearizable:\n${result.explanation}`
          : `the linearizability check did not decide: ${
            result.partitions.filter((p) => p.result === "unknown").map((p) =>
              `${p.key}: ${p.undecided}`
            ).join("; ")
          }`,
      );
    }
    const unknown = history.filter((op) => op.return === Infinity).length;
    return { operations: history.length, unknown, checkMs };
  }

  #describeNodes(): string {
    return this.cluster.ids.map((id) => {
      const node = this.cluster.node(id);
      if (!node.driver) return `${id}: down${this.#retired.has(id) ? " (retired)" : ""}`;
      const s = this.cluster.status(node);
      return `${id}: ${s.role} term ${s.term} leader ${s.leader} commit ${s.commit} applied ${s.applied} ` +
        `last ${s.lastIndex} voters ${s.voters.join(",")} learners ${s.learners.join(",") || "-"}`;
    }).join("; ");
  }
}

/** Network weather: calm a quarter of the time, else some loss, duplication and delay. */
function weather(r: RandomSource): Faults {
  if (r.nextInt(4) === 0) return CALM;
  return {
    loss: [0, 0.01, 0.05, 0.2][r.nextInt(4)]!,
    duplicate: [0, 0.01, 0.05, 0.1][r.nextInt(4)]!,
    minDelayMs: r.nextInt(3),
    maxDelayMs: [5, 10, 30, 60][r.nextInt(4)]!,
  };
}

function shuffled<T>(items: readonly T[], r: RandomSource): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = r.nextInt(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function describeState(state: ClusterState): string {
  const entries = state.listMetadata("", 0).entries.map((e) => `${e.key}=${e.value}@${e.revision}`);
  return `applied ${state.appliedIndex}, ${state.members().length} members, {${
    entries.join(", ")
  }}`;
}
