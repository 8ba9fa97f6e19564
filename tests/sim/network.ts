/**
 * The simulation's network: messages between nodes, delivered after a
 * random delay, or lost, duplicated, reordered, or cut by partitions, all
 * decided by one seeded random source so a seed replays the run exactly.
 *
 * Owns: {@link SimNetwork}, {@link Faults}, {@link CALM}. Imports the codec's
 * message type, the core's random source and the virtual scheduler.
 *
 * Reordering is not a separate fault: two messages on one link with
 * different random delays arrive in either order, as on a real network
 * whose packets take different paths (Raft assumes nothing about order).
 *
 * A message sent over a cut link is reported to the sender as unreachable,
 * as the agent's outbox does when it cannot reach a peer; one cut while in
 * flight is lost silently.
 */

import type { RaftMessage } from "../../src/codec/raft.ts";
import type { RandomSource } from "../../src/raft/mod.ts";
import type { SimScheduler } from "./scheduler.ts";

/** How unreliable the network is right now. */
export interface Faults {
  /** Probability a message is lost, 0..1. */
  readonly loss: number;
  /** Probability a message is delivered twice, 0..1. */
  readonly duplicate: number;
  /** Delay of a message, ms, uniform in [min, max]. */
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
}

/** A network that delivers everything, with a few ms of jitter. */
export const CALM: Faults = Object.freeze({
  loss: 0,
  duplicate: 0,
  minDelayMs: 1,
  maxDelayMs: 5,
});

/** Counters, for the run's summary. */
export interface NetworkStats {
  sent: number;
  delivered: number;
  lost: number;
  duplicated: number;
  cut: number;
  dropped: number;
}

/** Messages between simulated nodes. */
export class SimNetwork {
  readonly #scheduler: SimScheduler;
  readonly #random: RandomSource;
  readonly #deliver: (to: number, message: RaftMessage) => void;
  /** Directed links that drop everything: `from>to`. */
  readonly #cut = new Set<string>();
  faults: Faults = CALM;
  /**
   * Selective loss, for scenarios: a message this returns true for is lost
   * (when sent, and again when it would be delivered).
   */
  drop: ((message: RaftMessage) => boolean) | null = null;
  /** Sees every message as it is delivered (scenarios count chunks with it). */
  tap: ((message: RaftMessage) => void) | null = null;
  /** Told when a message is sent over a cut link: the sender learns the peer is unreachable. */
  onUnreachable: ((from: number, to: number) => void) | null = null;
  readonly stats: NetworkStats = {
    sent: 0,
    delivered: 0,
    lost: 0,
    duplicated: 0,
    cut: 0,
    dropped: 0,
  };

  constructor(
    scheduler: SimScheduler,
    random: RandomSource,
    deliver: (to: number, message: RaftMessage) => void,
  ) {
    this.#scheduler = scheduler;
    this.#random = random;
    this.#deliver = deliver;
  }

  /** Sends `message` from `message.from` to `message.to`. */
  send(message: RaftMessage): void {
    this.stats.sent++;
    if (this.#cut.has(`${message.from}>${message.to}`)) {
      this.stats.cut++;
      this.onUnreachable?.(message.from, message.to);
      return;
    }
    if (this.drop?.(message)) {
      this.stats.dropped++;
      return;
    }
    const copies = this.#chance(this.faults.duplicate) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      if (this.#chance(this.faults.loss)) {
        this.stats.lost++;
        continue;
      }
      const { minDelayMs, maxDelayMs } = this.faults;
      const delay = minDelayMs + this.#random.nextInt(Math.max(1, maxDelayMs - minDelayMs + 1));
      this.#scheduler.after(delay, () => {
        // A partition made after sending still stops a message in flight.
        if (this.#cut.has(`${message.from}>${message.to}`)) {
          this.stats.cut++;
          return;
        }
        if (this.drop?.(message)) {
          this.stats.dropped++;
          return;
        }
        this.stats.delivered++;
        this.tap?.(message);
        this.#deliver(message.to, message);
      });
    }
  }

  /** Cuts the links from every node of `a` to every node of `b` (one way). */
  cutOneWay(a: readonly number[], b: readonly number[]): void {
    for (const x of a) for (const y of b) if (x !== y) this.#cut.add(`${x}>${y}`);
  }

  /** Splits the cluster into groups that cannot talk to each other. */
  partition(...groups: readonly (readonly number[])[]): void {
    for (const g of groups) {
      for (const h of groups) if (g !== h) this.cutOneWay(g, h);
    }
  }

  /** Isolates `node` from every node of `all` in both directions. */
  isolate(node: number, all: readonly number[]): void {
    this.partition([node], all.filter((n) => n !== node));
  }

  /** Restores the links from every node of `a` to every node of `b` (one way). */
  restoreOneWay(a: readonly number[], b: readonly number[]): void {
    for (const x of a) for (const y of b) this.#cut.delete(`${x}>${y}`);
  }

  /** Restores every link. */
  heal(): void {
    this.#cut.clear();
  }

  /** Whether any link is cut. */
  get partitioned(): boolean {
    return this.#cut.size > 0;
  }

  /** The cut links, `from>to`, for logs. */
  get cutLinks(): string[] {
    return [...this.#cut].sort();
  }

  #chance(p: number): boolean {
    return p > 0 && this.#random.nextInt(1_000_000) < p * 1_000_000;
  }
}
