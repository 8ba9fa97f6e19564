/**
 * A simulated cluster: the real consensus driver, Raft core, state machine
 * and in-memory storage of every node, on the virtual scheduler and the
 * simulated network. Only time, the network and the disk are simulated.
 *
 * A crash keeps exactly what the node saved (the storage is its disk, and a
 * save is durable when it returns) and loses everything else: the core, the
 * driver, the state machine, messages in flight to it, and its callers'
 * waiting promises (which fail). A restart builds a new driver over the same
 * storage, as a real node does over its SQLite file.
 */

import type { RaftMessage } from "../../src/codec/raft.ts";
import { RaftDriver } from "../../src/consensus/driver.ts";
import {
  bootstrapUpdate,
  type LogStorage,
  MemoryStorage,
  type RandomSource,
  seededRandom,
} from "../../src/raft/mod.ts";
import { SimNetwork } from "./network.ts";
import { SimScheduler } from "./scheduler.ts";

/** Settings of a simulated cluster. */
export interface ClusterOptions {
  readonly seed: number;
  /** Node ids of the initial members. */
  readonly members: readonly number[];
  /** Virtual ms per core tick. */
  readonly tickMs?: number;
  /** Snapshot after this many applied entries (small, so runs exercise snapshots). */
  readonly snapshotEveryEntries?: number;
  readonly keepEntries?: number;
}

/** One node: its disk, and its driver while it runs. */
export class SimNode {
  readonly id: number;
  readonly storage: LogStorage;
  driver: RaftDriver | null = null;
  /** How many times it started. */
  lives = 0;
  /** Highest commit index seen in this life (commit must never go back within one). */
  commitSeen = 0;

  constructor(id: number, storage: LogStorage) {
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
    const bootstrap = bootstrapUpdate(options.members.map((id) => ({ id })));
    for (const id of options.members) {
      const storage = new MemoryStorage();
      storage.save(bootstrap);
      this.nodes.set(id, new SimNode(id, storage));
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

  /** Starts every node. */
  startAll(): void {
    for (const id of this.ids) this.start(id);
  }

  /** Starts (or restarts) a node over its disk. */
  start(id: number): void {
    const node = this.nodes.get(id)!;
    if (node.driver) return;
    node.lives++;
    node.commitSeen = 0;
    const driver = new RaftDriver({
      id,
      storage: node.storage,
      transport: { send: (m) => this.network.send(m) },
      scheduler: this.scheduler,
      random: seededRandom(this.seed * 31 + id * 7 + node.lives),
      tickMs: this.#o.tickMs ?? 10,
      snapshotEveryEntries: this.#o.snapshotEveryEntries ?? 40,
      keepEntries: this.#o.keepEntries ?? 8,
    });
    node.driver = driver;
    driver.start();
  }

  /** Crashes a node: everything it did not save is gone. */
  crash(id: number): void {
    const node = this.nodes.get(id)!;
    node.driver?.stop();
    node.driver = null;
  }

  /** Adds a node with an empty disk (it joins through a membership change). */
  addEmptyNode(id: number): SimNode {
    const node = new SimNode(id, new MemoryStorage());
    this.nodes.set(id, node);
    return node;
  }

  /** The leader of the highest term among running nodes that believe they lead. */
  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    let bestTerm = -1;
    for (const n of this.running) {
      const s = n.driver!.status();
      if (s.role === "leader" && s.term > bestTerm) {
        best = n;
        bestTerm = s.term;
      }
    }
    return best;
  }

  #deliver(to: number, message: RaftMessage): void {
    this.nodes.get(to)?.driver?.receive(message);
  }
}
