/**
 * Virtual time for the simulation: the consensus driver's {@link Scheduler}
 * over an event queue, so a seed replays the same run to the event.
 *
 * Events run in time order; events at the same time in the order they were
 * scheduled. Between events the harness lets promise callbacks run (the
 * driver answers proposals and reads through promises), always the same way,
 * so a run is a pure function of its seed.
 */

import type { Cancel, Scheduler } from "../../src/consensus/scheduler.ts";

interface Event {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** A binary heap of events by (time, sequence). */
class EventQueue {
  readonly #heap: Event[] = [];

  get size(): number {
    return this.#heap.length;
  }

  push(e: Event): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  pop(): Event | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }

  peek(): Event | undefined {
    return this.#heap[0];
  }
}

function before(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Lets pending promise callbacks run, a fixed number of rounds. */
export async function settle(rounds = 8): Promise<void> {
  for (let i = 0; i < rounds; i++) await null;
}

/** The simulation's clock and timers. */
export class SimScheduler implements Scheduler {
  #now = 0;
  #seq = 0;
  readonly #queue = new EventQueue();
  /** Events run so far. */
  steps = 0;

  now(): number {
    return this.#now;
  }

  after(ms: number, fn: () => void): Cancel {
    const e: Event = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#queue.push(e);
    return () => e.cancelled = true;
  }

  every(ms: number, fn: () => void): Cancel {
    let cancel: Cancel = () => {};
    let stopped = false;
    const run = () => {
      if (stopped) return;
      cancel = this.after(ms, run);
      fn();
    };
    cancel = this.after(ms, run);
    return () => {
      stopped = true;
      cancel();
    };
  }

  defer(fn: () => void): void {
    this.after(0, fn);
  }

  /** Runs the next event; false when none is left. Promise callbacks it caused run too. */
  async step(): Promise<boolean> {
    for (;;) {
      const e = this.#queue.pop();
      if (!e) return false;
      if (e.cancelled) continue;
      this.#now = e.at;
      this.steps++;
      e.fn();
      await settle();
      return true;
    }
  }

  /** Runs events until virtual time `until` (ms) or `stop()` says so, checking after each. */
  async runUntil(until: number, check?: () => void, stop?: () => boolean): Promise<void> {
    for (;;) {
      const next = this.#queue.peek();
      if (!next || next.at > until) {
        this.#now = Math.max(this.#now, until);
        return;
      }
      await this.step();
      check?.();
      if (stop?.()) return;
    }
  }
}
