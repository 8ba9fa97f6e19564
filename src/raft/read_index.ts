/**
 * The leader's side of linearizable reads (ReadIndex, thesis §6.4): each
 * read records the commit index when it arrived, then waits until a quorum
 * of voters has answered a heartbeat sent after it, which proves this node
 * was still the leader when the read arrived.
 *
 * Owns: {@link ReadIndexQueue}, {@link PendingRead}. Imports `quorum.ts`.
 *
 * Reads are grouped in rounds, numbered upward for the node's lifetime; the
 * round number travels as the heartbeat's `readContext` and comes back in the
 * response. Every read that arrives before the next `ready()` joins the open
 * round, so a burst of reads costs one heartbeat per follower: the round's
 * heartbeats leave only with that Ready, after the last read joined it. A
 * voter's answer to round R confirms every round up to R.
 *
 * @module
 */

import { quorumIndex } from "./quorum.ts";

/** A read waiting for its round to be confirmed. */
export interface PendingRead {
  /** The requester's correlation id. */
  readonly context: number;
  /** The node that asked (the leader itself for a local read). */
  readonly from: number;
  /** The commit index when the read arrived: the read index once confirmed. */
  readonly index: number;
  /** The heartbeat round that confirms it. */
  readonly round: number;
}

/** Reads awaiting confirmation, in arrival order. */
export class ReadIndexQueue {
  #pending: PendingRead[] = [];
  #head = 0;
  /** Highest round each voter answered. */
  #acks = new Map<number, number>();
  #lastRound = 0;
  /** The round reads join until the next `ready()`; 0 when none is open. */
  #openRound = 0;

  /** Reads waiting. */
  get size(): number {
    return this.#pending.length - this.#head;
  }

  /** The newest round with reads waiting, to piggyback on heartbeats; 0 for none. */
  latestRound(): number {
    return this.size === 0 ? 0 : this.#pending[this.#pending.length - 1]!.round;
  }

  /**
   * Queues a read; returns the round it joined and whether that round is new
   * (then the leader must send its heartbeats).
   */
  add(context: number, from: number, index: number): { round: number; opened: boolean } {
    const opened = this.#openRound === 0;
    if (opened) this.#openRound = ++this.#lastRound;
    this.#pending.push({ context, from, index, round: this.#openRound });
    return { round: this.#openRound, opened };
  }

  /** Ends the open round: its heartbeats are about to leave. */
  closeRound(): void {
    this.#openRound = 0;
  }

  /** Records that voter `from` answered heartbeat round `round`. */
  ack(from: number, round: number): void {
    if (round > (this.#acks.get(from) ?? 0)) this.#acks.set(from, round);
  }

  /**
   * Removes and returns the reads a quorum of `voters` has confirmed; `self`
   * (the leader) confirms every round. `scratch` is reused to avoid allocating.
   */
  confirmed(voters: ReadonlySet<number>, self: number, scratch: number[]): PendingRead[] {
    if (this.size === 0) return [];
    scratch.length = 0;
    for (const id of voters) {
      scratch.push(id === self ? this.#lastRound : (this.#acks.get(id) ?? 0));
    }
    const round = quorumIndex(scratch);
    const pending = this.#pending;
    let end = this.#head;
    while (end < pending.length && pending[end]!.round <= round) end++;
    if (end === this.#head) return [];
    const out = pending.slice(this.#head, end);
    this.#head = end;
    if (this.#head === pending.length) {
      this.#pending = [];
      this.#head = 0;
    }
    return out;
  }

  /** Removes and returns every read (the leader stepped down; they fail). */
  drain(): PendingRead[] {
    const out = this.#pending.slice(this.#head);
    this.#pending = [];
    this.#head = 0;
    this.#acks.clear();
    this.#openRound = 0;
    return out;
  }
}
