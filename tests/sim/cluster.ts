/**
 * A simulated cluster: the real consensus driver, Raft core, state machine
 * and in-memory storage of every node, on the virtual scheduler and the
 * simulated network. Only time, the network and the disk are simulated.
 *
 * Owns: {@link SimCluster}, {@link SimNode}, {@link ClusterOptions}. Imports
 * the driver, the core's public surface and the other simulation parts.
 *
 * A crash keeps exactly what the node saved (the storage is its disk, and a
 * save is durable when it returns, except a commit index saved alone, which a
 * crash takes back to the last synced one) and loses everything else: the core, the
 * driver, the state machine, and its callers' waiting promises (which fail).
 * A restart builds a new driver over the same disk, as a real node does over
 * its SQLite file. A driver that stops because its disk failed is a node
 * whose agent exited: it is down until restarted. A driver that stops for
 * any other reason is reported the same way; the run treats it as a bug.
 */

import type { RaftMessage } from "../../src/codec/raft.ts";
import { type DriverOptions, RaftDriver } from "../../src/consensus/driver.ts";
import type { SnapshotTransferLimits } from "../../src/consensus/snapshot_transfer.ts";
import {
  bootstrapUpdate,
  type RandomSource,
  Role,
  seededRandom,
  type Status,
  StorageFailure,
} from "../../src/raft/mod.ts";
import { type FaultSwitch, SimDisk } from "./disk.ts";
import { SimNetwork } from "./network.ts";
import { SimScheduler } from "./scheduler.ts";

/** Settings of a simulated cluster. */
export interface ClusterOptions {
  readonly seed: number;
  /** Node ids of the initial members. */
  readonly members: readonly number[];
  /** Virtual ms per core tick. Default 10. */
  readonly tickMs?: number;
  /** Snapshot after this many applied entries (small, so runs exercise snapshots). Default 40. */
  readonly snapshotEveryEntries?: number;
  /** Default 8. */
  readonly keepEntries?: number;
  /** Core settings every driver gets. */
  readonly core?: DriverOptions["core"];
  readonly snapshotTransfer?: SnapshotTransferLimits;
  /** Driver options every node gets, past the ones above. */
  readonly driver?: Partial<DriverOptions>;
}

/** Whether `error` is a fault the simulated disk injected (any other failure is a bug). */
export function isSimulatedDiskFailure(error: unknown): boolean {
  return error instanceof StorageFailure && error.message.startsWith("simulated disk:");
}

/** One node: its disk, and its driver while it runs. */
export class SimNode {
  readonly id: number;
  readonly storage: SimDisk;
  driver: RaftDriver | null = null;
  /** How many times it started. */
  lives = 0;
  /** Highest commit index seen in this life (commit must never go back within one). */
  commitSeen = 0;
  /** Why its driver stopped on its own, each time it did. */
  readonly failures: Error[] = [];

  constructor(id: number, storage: SimDisk) {
    this.id = id;
    this.storage = storage;
  }

  get up(): boolean {
    return this.driver !== null;
  }
}

/** The cluster. */
export class SimCluster {
  readonly seed: number;
  readonly scheduler = new SimScheduler();
  readonly random: RandomSource;
  readonly network: SimNetwork;
  readonly nodes = new Map<number, SimNode>();
  /** Off while the harness looks at nodes, so its reads never trip a fault meant for a node. */
  readonly faults: FaultSwitch = { suspended: false };
  /**
   * Messages sent by a driver that is no longer its node's running one (it
   * crashed, or stopped because its disk failed): a stopped node must say
   * nothing more. The checker fails on any.
   */
  readonly strays: string[] = [];
  /** Told when a node's driver stops on its own (its disk failed, or worse). */
  onNodeFailure: ((node: SimNode, error: Error) => void) | null = null;
  readonly #o: ClusterOptions;

  constructor(options: ClusterOptions) {
    this.#o = options;
    this.seed = options.seed;
    this.random = seededRandom(options.seed);
    this.network = new SimNetwork(
      this.scheduler,
      seededRandom(options.seed ^ 0x5eed),
      (to, m) => this.#deliver(to, m),
    );
    this.network.onUnreachable = (from, to) => this.nodes.get(from)?.driver?.reportUnreachable(to);
    const bootstrap = bootstrapUpdate(options.members.map((id) => ({ id })));
    for (const id of options.members) {
      const disk = new SimDisk(this.faults);
      disk.format(bootstrap);
      this.nodes.set(id, new SimNode(id, disk));
    }
  }

  /** Ids of every node the cluster has a disk for. */
  get ids(): number[] {
    return [...this.nodes.keys()].sort((a, b) => a - b);
  }

  /** Nodes that run now. */
  get running(): SimNode[] {
    return this.ids.map((id) => this.nodes.get(id)!).filter((n) => n.up);
  }

  /** The node `id` (which must exist). */
  node(id: number): SimNode {
    const node = this.nodes.get(id);
    if (!node) throw new Error(`sim: no node ${id}`);
    return node;
  }

  /** Starts every node. */
  startAll(): void {
    for (const id of this.ids) this.start(id);
  }

  /** Starts (or restarts) a node over its disk. */
  start(id: number): void {
    const node = this.node(id);
    if (node.driver) return;
    node.lives++;
    node.commitSeen = 0;
    let driver: RaftDriver;
    try {
      driver = this.#newDriver(node);
    } catch (e) {
      // A disk that fails a read at start: the agent exits, the node stays down.
      if (!isSimulatedDiskFailure(e)) throw e;
      node.failures.push(e as Error);
      this.onNodeFailure?.(node, e as Error);
      return;
    }
    node.driver = driver;
    driver.start();
  }

  #newDriver(node: SimNode): RaftDriver {
    const id = node.id;
    const life = node.lives;
    const driver: RaftDriver = new RaftDriver({
      tickMs: this.#o.tickMs ?? 10,
      snapshotEveryEntries: this.#o.snapshotEveryEntries ?? 40,
      keepEntries: this.#o.keepEntries ?? 8,
      core: this.#o.core,
      snapshotTransfer: this.#o.snapshotTransfer,
      ...this.#o.driver,
      id,
      storage: node.storage,
      transport: {
        send: (m) => {
          if (node.driver !== driver) {
            this.strays.push(
              `node ${id} (life ${life}) sent kind ${m.kind} to ${m.to} after it stopped`,
            );
            return;
          }
          this.network.send(m);
        },
      },
      scheduler: this.scheduler,
      random: seededRandom(this.seed * 31 + id * 7 + node.lives),
      onFailure: (error) => {
        // The agent exits: the node is down until restarted.
        node.failures.push(error);
        if (node.driver === driver) node.driver = null;
        this.onNodeFailure?.(node, error);
      },
    });
    return driver;
  }

  /**
   * Crashes a node as a power cut does: everything it did not save is gone,
   * and so is a commit index it saved without a sync (says whether there was one).
   */
  crash(id: number): { commitLost: boolean } {
    const node = this.node(id);
    node.driver?.stop();
    node.driver = null;
    return { commitLost: node.storage.powerLoss() };
  }

  /** Adds a node with an empty disk (it joins through a membership change). */
  addEmptyNode(id: number): SimNode {
    if (this.nodes.has(id)) throw new Error(`sim: node ${id} exists; joining nodes take fresh ids`);
    const node = new SimNode(id, new SimDisk(this.faults));
    this.nodes.set(id, node);
    return node;
  }

  /** Runs `fn` with the disks' faults off: for the harness's own looks at the nodes. */
  observe<T>(fn: () => T): T {
    const was = this.faults.suspended;
    this.faults.suspended = true;
    try {
      return fn();
    } finally {
      this.faults.suspended = was;
    }
  }

  /** The core status of a running node, read without tripping its disk's faults. */
  status(node: SimNode): Status {
    return this.observe(() => node.driver!.status());
  }

  /** The leader of the highest term among running nodes that believe they lead. */
  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    let bestTerm = -1;
    for (const n of this.running) {
      const s = this.status(n);
      if (s.role === Role.Leader && s.term > bestTerm) {
        best = n;
        bestTerm = s.term;
      }
    }
    return best;
  }

  /**
   * A leader a quorum of its voters follows in its term: one that really
   * leads the cluster, not a deposed leader that has not heard of it yet.
   */
  recognizedLeader(): SimNode | undefined {
    const leader = this.leader();
    if (!leader) return undefined;
    const s = this.status(leader);
    let following = 0;
    for (const id of s.voters) {
      const node = this.nodes.get(id);
      if (!node?.driver) continue;
      const v = id === leader.id ? s : this.status(node);
      if (v.term === s.term && v.leader === leader.id) following++;
    }
    return following > s.voters.length / 2 ? leader : undefined;
  }

  #deliver(to: number, message: RaftMessage): void {
    this.nodes.get(to)?.driver?.receive(message);
  }
}
