/**
 * Time, as the consensus driver sees it: a clock and timers behind one
 * interface, so the real node runs on the event loop's timers and the
 * simulation runs the same driver on a virtual clock, step by step.
 *
 * Owns: {@link Scheduler}, {@link realScheduler}. Imports `node:timers`
 * (setImmediate) only.
 *
 * @module
 */

import { setImmediate } from "node:timers";

/** A timer that can be cancelled. */
export interface Cancel {
  (): void;
}

/** A clock and timers. */
export interface Scheduler {
  /** Milliseconds on a monotonic clock. */
  now(): number;
  /** Runs `fn` after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): Cancel;
  /** Runs `fn` every `ms` until cancelled. */
  every(ms: number, fn: () => void): Cancel;
  /**
   * Runs `fn` once the current work is done (the end of this turn of the
   * event loop): work queued in the same turn is done together, which is how
   * proposals arriving together reach the disk in one write.
   */
  defer(fn: () => void): void;
}

/** The event loop's timers. Timers do not keep the process alive. */
export const realScheduler: Scheduler = {
  now: () => performance.now(),
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    Deno.unrefTimer(t as unknown as number);
    return () => clearTimeout(t);
  },
  every(ms, fn) {
    const t = setInterval(fn, ms);
    Deno.unrefTimer(t as unknown as number);
    return () => clearInterval(t);
  },
  defer(fn) {
    // Not setTimeout(fn, 0): a zero timer waits for the timer phase (2 ms and
    // more here), and every write waits for a deferred Ready at least three
    // times; setImmediate runs after this turn's I/O callbacks, so proposals
    // arriving together still reach the disk in one write (bench/raft/README.md).
    setImmediate(fn);
  },
};
