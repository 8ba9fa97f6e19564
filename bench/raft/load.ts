/**
 * The load of a Raft benchmark: `clients` concurrent callers, each a
 * sequential loop of writes, run for a warm-up and then a fixed window; the
 * figures are the writes answered within the window per second and the
 * latency of each (from the call to its answer, as the caller sees it).
 *
 * The same harness drives every system measured: it knows only a
 * {@link PutFn}.
 *
 * Owns: {@link runLoad}, {@link LoadResult}, {@link percentile}. Imports nothing.
 *
 * @module
 */

/**
 * One write by caller `client` (0-based), its `seq`-th: resolves once the
 * system answered that it is committed and applied, rejects on any failure.
 */
export type PutFn = (client: number, seq: number) => Promise<void>;

/** The shape of one load. */
export interface LoadOptions {
  readonly clients: number;
  /** Calls before the window opens, so connections, JIT and caches are warm. */
  readonly warmupMs: number;
  /** The window the figures come from. */
  readonly measureMs: number;
  /** Called as the window opens and as it closes (CPU counters, the profiler). */
  readonly onWindow?: { readonly open?: () => unknown; readonly close?: () => unknown };
}

/** What one load measured. */
export interface LoadResult {
  readonly clients: number;
  /** The window's real length, ms. */
  readonly windowMs: number;
  /** Writes answered within the window. */
  readonly puts: number;
  readonly putsPerS: number;
  /** Latency of the writes answered within the window, ms. */
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly meanMs: number;
  readonly maxMs: number;
  /** Writes answered, over the whole load (warm-up and the calls after the window included). */
  readonly answered: number;
  /** Writes that failed, over the whole load (warm-up included). */
  readonly errors: number;
  /** The first few failures' messages. */
  readonly errorSamples: readonly string[];
}

/** A failed call is retried after this pause, so a refusing system is not spun on. */
const ERROR_PAUSE_MS = 10;
/** Failure messages kept per load. */
const ERROR_SAMPLES = 5;
/** How long the callers still in a call at the end get to finish. */
const DRAIN_MS = 30_000;

/** The `q` quantile (0..1) of ascending `sorted`, nearest rank; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Grows by doubling: latencies of one window without an allocation per call. */
class Samples {
  #data = new Float64Array(1 << 16);
  length = 0;

  push(value: number): void {
    if (this.length === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2);
      bigger.set(this.#data);
      this.#data = bigger;
    }
    this.#data[this.length++] = value;
  }

  sorted(): Float64Array {
    return this.#data.slice(0, this.length).sort();
  }
}

/** Runs `options.clients` sequential callers of `put` through a warm-up and a window. */
export async function runLoad(put: PutFn, options: LoadOptions): Promise<LoadResult> {
  const samples = new Samples();
  const errorSamples: string[] = [];
  let errors = 0;
  let answered = 0;
  let measuring = false;
  let stopping = false;

  const caller = async (client: number) => {
    for (let seq = 0; !stopping; seq++) {
      const t0 = performance.now();
      try {
        await put(client, seq);
      } catch (e) {
        errors++;
        if (errorSamples.length < ERROR_SAMPLES) errorSamples.push((e as Error).message);
        await new Promise((r) => setTimeout(r, ERROR_PAUSE_MS));
        continue;
      }
      answered++;
      // Counted when answered inside the window, whenever it started.
      if (measuring) samples.push(performance.now() - t0);
    }
  };

  const callers = Array.from({ length: options.clients }, (_, i) => caller(i));
  await new Promise((r) => setTimeout(r, options.warmupMs));
  await options.onWindow?.open?.();
  measuring = true;
  const openedAt = performance.now();
  await new Promise((r) => setTimeout(r, options.measureMs));
  measuring = false;
  const windowMs = performance.now() - openedAt;
  await options.onWindow?.close?.();
  stopping = true;
  let drainTimer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    Promise.all(callers).then(() => true),
    new Promise<false>((r) => drainTimer = setTimeout(() => r(false), DRAIN_MS)),
  ]);
  clearTimeout(drainTimer);
  if (!drained) throw new Error(`load: callers still waiting ${DRAIN_MS} ms after the window`);

  const sorted = samples.sorted();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    clients: options.clients,
    windowMs,
    puts: sorted.length,
    putsPerS: sorted.length / (windowMs / 1000),
    p50Ms: percentile(sorted, 0.5),
    p90Ms: percentile(sorted, 0.9),
    p99Ms: percentile(sorted, 0.99),
    meanMs: sorted.length ? sum / sorted.length : NaN,
    maxMs: sorted.length ? sorted[sorted.length - 1]! : NaN,
    answered,
    errors,
    errorSamples,
  };
}
