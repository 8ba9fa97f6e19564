/**
 * Counters kept by objects that come and go (listeners, peer clients, Iroh
 * endpoints, which a reload replaces), summed into totals that never go
 * back: a source that is retired leaves its last counts behind.
 *
 * Owns: {@link TrackedSources}, {@link Reading}. Imports nothing.
 *
 * The transports keep their own counters (`stats` objects); the metrics read
 * them at scrape time rather than count the same events a second time.
 *
 * @module
 */

/**
 * What one source says now: monotonic counts, and levels (open
 * connections, calls in flight). Keys are the caller's, e.g.
 * `"grpc|connections_accepted"`.
 */
export interface Reading {
  readonly counters: Readonly<Record<string, number>>;
  readonly gauges: Readonly<Record<string, number>>;
}

/**
 * The live sources and what the retired ones counted.
 *
 * @example
 * ```ts
 * import { TrackedSources } from "./sources.ts";
 * const sources = new TrackedSources();
 * const stats = { accepted: 2 };
 * const retire = sources.track(() => ({ counters: { accepted: stats.accepted }, gauges: {} }));
 * retire(); // a reload replaced the listener
 * sources.track(() => ({ counters: { accepted: 1 }, gauges: {} }));
 * console.log(sources.counter("accepted")); // 3
 * ```
 */
export class TrackedSources {
  readonly #live = new Set<() => Reading>();
  readonly #retired = new Map<string, number>();

  /** Reads `read` at every scrape from now on; the returned function retires it (idempotent). */
  track(read: () => Reading): () => void {
    this.#live.add(read);
    return () => {
      if (!this.#live.delete(read)) return;
      for (const [key, value] of Object.entries(read().counters)) {
        this.#retired.set(key, (this.#retired.get(key) ?? 0) + value);
      }
    };
  }

  /** A counter's total: what retired sources counted plus what the live ones count now. */
  counter(key: string): number {
    let n = this.#retired.get(key) ?? 0;
    for (const read of this.#live) n += read().counters[key] ?? 0;
    return n;
  }

  /** Every counter at once, for a scrape (each source read once). */
  counters(): Map<string, number> {
    const out = new Map(this.#retired);
    for (const read of this.#live) {
      for (const [key, value] of Object.entries(read().counters)) {
        out.set(key, (out.get(key) ?? 0) + value);
      }
    }
    return out;
  }

  /** Every level, summed over the live sources only. */
  gauges(): Map<string, number> {
    const out = new Map<string, number>();
    for (const read of this.#live) {
      for (const [key, value] of Object.entries(read().gauges)) {
        out.set(key, (out.get(key) ?? 0) + value);
      }
    }
    return out;
  }
}
