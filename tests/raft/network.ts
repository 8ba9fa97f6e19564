/**
 * A small in-test network of Raft cores, driven step by step: no timers, no
 * I/O. Each node is a {@link RaftCore} over a {@link MemoryStorage}, with a
 * state machine that records the commands it applied. The network plays the
 * driver: it saves each Ready, queues its messages, applies committed
 * entries (and configuration changes), and advances; tests decide what is
 * delivered, dropped, partitioned, ticked and crashed.
 */

import { EntryKind } from "../../src/codec/raft.ts";
import {
  bootstrapUpdate,
  type ConfChange,
  type ConfState,
  type CoreMessage,
  decodeConfChange,
  type Entry,
  MemoryStorage,
  type RaftConfig,
  RaftCore,
  type ReadState,
  type Ready,
  seededRandom,
  type Snapshot,
  SNAPSHOT_MESSAGE,
} from "../../src/raft/mod.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes of a string command. */
export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** A command applied by a state machine. */
export interface Applied {
  readonly index: number;
  readonly command: string;
}

/** The options every core of a network gets, besides its id and random source. */
export type CoreOptions = Partial<Omit<RaftConfig, "id" | "random">>;

/** One simulated node: its durable storage, its core, and its state machine. */
export class SimNode {
  readonly id: number;
  readonly storage: MemoryStorage;
  core: RaftCore;
  /** Commands applied, in order (the state machine). */
  applied: Applied[] = [];
  /** Index the state machine has applied up to. */
  appliedIndex = 0;
  /** Membership as of `appliedIndex`. */
  confState: ConfState;
  /** Answers to reads, in the order they came out. */
  readStates: ReadState[] = [];
  /** Every Ready this life of the node produced (for tests that inspect them). */
  readies: Ready[] = [];
  /** Counts writes to the storage, so a checker can skip rereading an unchanged log. */
  storageVersion = 0;
  readonly options: CoreOptions;
  readonly #seed: number;
  #lives = 0;

  constructor(id: number, storage: MemoryStorage, options: CoreOptions, seed: number) {
    this.id = id;
    this.storage = storage;
    this.options = options;
    this.#seed = seed;
    this.confState = storage.initialState().confState;
    this.core = this.#newCore();
  }

  /**
   * A crash and restart: everything not saved is lost; the state machine is
   * rebuilt from the stored snapshot and re-applies the log after it.
   */
  restart(): void {
    const snapshot = this.storage.snapshot();
    this.#restore(snapshot);
    this.confState = this.storage.initialState().confState;
    this.readStates = [];
    this.readies = [];
    this.core = this.#newCore();
  }

  /** Restores the state machine from `snapshot`. */
  #restore(snapshot: Snapshot): void {
    this.applied = snapshot.data.length === 0 ? [] : JSON.parse(decoder.decode(snapshot.data));
    this.appliedIndex = snapshot.meta.index;
    this.confState = snapshot.meta.confState;
  }

  #newCore(): RaftCore {
    this.#lives++;
    return new RaftCore(
      {
        id: this.id,
        random: seededRandom(this.#seed * 7919 + this.id * 104_729 + this.#lives),
        ...this.options,
      },
      this.storage,
    );
  }

  /** Handles one Ready if there is one; returns its messages (to queue). */
  processReady(): readonly CoreMessage[] {
    const core = this.core;
    if (!core.hasReady()) return [];
    const rd = core.ready();
    this.readies.push(rd);
    this.save(rd);
    if (rd.snapshot !== undefined) this.#restore(rd.snapshot);
    this.apply(rd.committedEntries);
    this.readStates.push(...rd.readStates);
    core.advance();
    return rd.messages;
  }

  /** Persists what `rd` asks to persist, if anything. */
  save(rd: Ready): void {
    if (rd.snapshot !== undefined || rd.entries.length > 0 || rd.hardState !== undefined) {
      this.storage.save(rd);
      this.storageVersion++;
    }
  }

  /** Applies committed entries to the state machine, configuration changes to the core. */
  apply(entries: readonly Entry[]): void {
    for (const e of entries) {
      if (e.index !== this.appliedIndex + 1) {
        throw new Error(`node ${this.id}: applying index ${e.index} after ${this.appliedIndex}`);
      }
      this.appliedIndex = e.index;
      if (e.kind === EntryKind.ConfigChange) {
        this.confState = this.core.applyConfChange(decodeConfChange(e.data));
      } else if (e.data.length > 0) {
        this.applied.push({ index: e.index, command: decoder.decode(e.data) });
      }
    }
  }

  /** Compacts the log at the applied index, keeping `keepEntries` before it. */
  compact(keepEntries = 0): Snapshot {
    const data = encoder.encode(JSON.stringify(this.applied));
    this.storageVersion++;
    return this.storage.createSnapshot(this.appliedIndex, this.confState, data, keepEntries);
  }

  /** The applied commands, as strings. */
  commands(): string[] {
    return this.applied.map((a) => a.command);
  }
}

/** How a {@link Network} starts its nodes. */
export interface NetworkOptions {
  /** Options for every core (ids and random sources are the network's). */
  readonly config?: CoreOptions;
  /** Learners among the initial members. */
  readonly learners?: readonly number[];
  /**
   * How the initial membership is stored: `"confState"` as a snapshot at
   * index 0 (logs start empty, as in etcd's tests), `"entries"` as committed
   * configuration entries 1..n (the real bootstrap). Default `"confState"`.
   */
  readonly bootstrap?: "confState" | "entries";
  /** Seed of the election timeouts. */
  readonly seed?: number;
}

/** A drop rule: return true to drop the message. */
export type DropRule = (msg: CoreMessage) => boolean;

/** Cores connected by a controllable network. */
export class Network {
  readonly nodes = new Map<number, SimNode>();
  /** Messages sent and not yet delivered, in send order. */
  queue: CoreMessage[] = [];
  /** Messages delivered, in order (tests inspect them). */
  readonly delivered: CoreMessage[] = [];
  readonly #cut = new Set<string>();
  readonly #down = new Set<number>();
  readonly #seed: number;
  readonly #config: CoreOptions;
  /** Extra drop rules; a message any rule drops is lost. */
  readonly dropRules: DropRule[] = [];

  constructor(ids: readonly number[], options: NetworkOptions = {}) {
    this.#seed = options.seed ?? 1;
    this.#config = options.config ?? {};
    const learners = options.learners ?? [];
    const voters = ids.filter((id) => !learners.includes(id));
    for (const id of ids) {
      let storage: MemoryStorage;
      if (options.bootstrap === "entries") {
        storage = new MemoryStorage();
        storage.save(bootstrapUpdate(voters.map((v) => ({ id: v }))));
      } else {
        storage = new MemoryStorage({ confState: { voters, learners: [...learners] } });
      }
      this.nodes.set(id, new SimNode(id, storage, this.#config, this.#seed));
    }
  }

  /** Adds a node with an empty storage (one about to join). */
  addNode(id: number, config: CoreOptions = this.#config): SimNode {
    const node = new SimNode(id, new MemoryStorage(), config, this.#seed);
    this.nodes.set(id, node);
    return node;
  }

  node(id: number): SimNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  core(id: number): RaftCore {
    return this.node(id).core;
  }

  /** Handles every pending Ready of every live node, queueing their messages. */
  process(): void {
    let busy = true;
    while (busy) {
      busy = false;
      for (const [id, node] of this.nodes) {
        if (this.#down.has(id) || !node.core.hasReady()) continue;
        busy = true;
        for (const msg of node.processReady()) this.queue.push(msg);
      }
    }
  }

  /** Delivers (or drops) every queued message once, then handles the Readies that caused. */
  deliverAll(): number {
    this.process();
    const batch = this.queue;
    this.queue = [];
    for (const msg of batch) this.deliver(msg);
    this.process();
    return batch.length;
  }

  /** Delivers one message now (unless a cut, a down node or a rule drops it). */
  deliver(msg: CoreMessage): void {
    const dropped = this.#down.has(msg.to) || this.#down.has(msg.from) ||
      this.#cut.has(`${msg.from}>${msg.to}`) || this.dropRules.some((rule) => rule(msg)) ||
      !this.nodes.has(msg.to);
    if (msg.kind === SNAPSHOT_MESSAGE) {
      // The driver reports how a snapshot transfer ended.
      const sender = this.nodes.get(msg.from);
      if (!dropped) this.node(msg.to).core.step(msg);
      if (sender !== undefined && !this.#down.has(msg.from)) {
        sender.core.reportSnapshot(msg.to, !dropped);
      }
      if (!dropped) this.delivered.push(msg);
      return;
    }
    if (dropped) return;
    this.delivered.push(msg);
    this.node(msg.to).core.step(msg);
  }

  /**
   * Loses `msg` in the network. Like a real driver, reports a lost snapshot
   * to its sender, which otherwise waits for the report.
   */
  drop(msg: CoreMessage): void {
    if (msg.kind !== SNAPSHOT_MESSAGE) return;
    const sender = this.nodes.get(msg.from);
    if (sender !== undefined && !this.#down.has(msg.from)) {
      sender.core.reportSnapshot(msg.to, false);
    }
  }

  /** Delivers until nothing is left to deliver or to process. */
  stabilize(maxRounds = 1000): void {
    for (let round = 0; round < maxRounds; round++) {
      this.process();
      if (this.queue.length === 0) return;
      this.deliverAll();
    }
    throw new Error(`network did not settle in ${maxRounds} rounds`);
  }

  /** Ticks `id` `times` times, handling Readies in between. */
  tick(id: number, times = 1): void {
    for (let i = 0; i < times; i++) {
      this.core(id).tick();
      this.process();
    }
  }

  /** Ticks every live node `times` times, delivering after each round of ticks. */
  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const id of this.nodes.keys()) if (!this.#down.has(id)) this.core(id).tick();
      this.stabilize();
    }
  }

  /** Starts an election at `id` and delivers until settled. */
  campaign(id: number): void {
    this.core(id).campaign();
    this.stabilize();
  }

  /** Proposes `command` at `id` and delivers until settled; returns its index. */
  propose(id: number, command: string): number {
    const { index } = this.core(id).propose(bytes(command));
    this.stabilize();
    return index;
  }

  /** Proposes a membership change at `id` and delivers until settled; returns its index. */
  proposeConfChange(id: number, change: ConfChange): number {
    const { index } = this.core(id).proposeConfChange(change);
    this.stabilize();
    return index;
  }

  /** Drops every message between `a` and `b`, both ways. */
  cut(a: number, b: number): void {
    this.#cut.add(`${a}>${b}`);
    this.#cut.add(`${b}>${a}`);
  }

  /** Cuts `id` off from every other node. */
  isolate(id: number): void {
    for (const other of this.nodes.keys()) if (other !== id) this.cut(id, other);
  }

  /** Cuts every link between nodes of different groups. */
  partition(...groups: readonly (readonly number[])[]): void {
    for (const g of groups) {
      for (const h of groups) {
        if (g === h) continue;
        for (const a of g) for (const b of h) this.cut(a, b);
      }
    }
  }

  /** Restores every link and every drop rule. */
  heal(): void {
    this.#cut.clear();
    this.dropRules.length = 0;
  }

  /** Stops `id`: it neither sends nor receives, and its unsaved state is lost at `restart`. */
  crash(id: number): void {
    this.#down.add(id);
  }

  /** Restarts a crashed (or running) node from its storage. */
  restart(id: number): void {
    this.#down.delete(id);
    this.node(id).restart();
  }

  /** The one node that believes it leads its term, if exactly one live node does at the highest term. */
  leader(): number {
    let best = 0, bestTerm = -1;
    for (const [id, node] of this.nodes) {
      if (this.#down.has(id)) continue;
      const s = node.core.status();
      if (s.role === "leader" && s.term > bestTerm) {
        best = id;
        bestTerm = s.term;
      }
    }
    return best;
  }
}
