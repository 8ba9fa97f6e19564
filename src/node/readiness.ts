/**
 * Whether this node can serve, as `/readyz` and `blixard_ready` say it:
 * its listeners are up, it is a member of a cluster that has a leader it
 * knows, and its storage takes writes.
 *
 * Owns: {@link readinessChecks}, {@link StorageProbe}. Imports the metrics
 * server's check type, the transport names and the logger.
 *
 * Every check reads values kept in memory, so an answer never waits for
 * consensus or the disk: the storage check reads the last result of a probe
 * that writes and syncs a small file in the data directory every few
 * seconds, in the background, and the driver's own fail-stop flag.
 *
 * @module
 */

import { join } from "node:path";
import type { ReadinessCheck } from "../metrics/server.ts";
import type { TransportName } from "../names.ts";

/** What the checks read. */
export interface ReadinessInputs {
  /** True once the node is stopping. */
  readonly stopping: boolean;
  /** The listeners the mode wants, and those serving now. */
  readonly listeners: {
    readonly want: readonly TransportName[];
    readonly up: readonly TransportName[];
  };
  /** Consensus as this node knows it; null while it is not running (starting, or stopped). */
  readonly consensus: {
    readonly id: number;
    readonly leader: number;
    readonly voters: readonly number[];
    readonly learners: readonly number[];
    /** Set once storage failed under the driver (fail-stop). */
    readonly failed: Error | null;
  } | null;
  readonly storage: StorageProbeResult;
}

/**
 * The checks, in the order `/readyz` lists them: listeners, member, leader,
 * storage. All must pass for the node to be ready.
 */
export function readinessChecks(i: ReadinessInputs): ReadinessCheck[] {
  const missing = i.listeners.want.filter((t) => !i.listeners.up.includes(t));
  const listeners: ReadinessCheck = i.stopping
    ? { name: "listeners", ok: false, detail: "shutting down" }
    : missing.length > 0
    ? { name: "listeners", ok: false, detail: `${missing.join(" and ")} not listening` }
    : { name: "listeners", ok: true, detail: `serving over ${i.listeners.up.join(" and ")}` };
  const c = i.consensus;
  const member: ReadinessCheck = !c
    ? { name: "member", ok: false, detail: "consensus is not running (starting, or stopped)" }
    : c.voters.includes(c.id)
    ? { name: "member", ok: true, detail: `voter, node ${c.id}` }
    : c.learners.includes(c.id)
    ? { name: "member", ok: true, detail: `learner, node ${c.id}` }
    : {
      name: "member",
      ok: false,
      detail:
        `node ${c.id} is not a member of a cluster yet (waiting to be added: blixard cluster join)`,
    };
  const leader: ReadinessCheck = !c
    ? { name: "leader", ok: false, detail: "consensus is not running (starting, or stopped)" }
    : c.leader === 0
    ? {
      name: "leader",
      ok: false,
      detail: "no leader known: an election is under way, or no quorum is reachable",
    }
    : {
      name: "leader",
      ok: true,
      detail: c.leader === c.id ? "this node leads" : `node ${c.leader}`,
    };
  const storage: ReadinessCheck = c?.failed
    ? { name: "storage", ok: false, detail: `storage failed: ${c.failed.message}` }
    : { name: "storage", ok: i.storage.ok, detail: i.storage.detail };
  return [listeners, member, leader, storage];
}

/** The last outcome of the storage probe. */
export interface StorageProbeResult {
  readonly ok: boolean;
  readonly detail: string;
}

/** Options of a {@link StorageProbe}. */
export interface StorageProbeOptions {
  /** The directory probed (the node's data directory). */
  readonly dir: string;
  /** Between probes, ms. Default 5,000. */
  readonly intervalMs?: number;
  /** A probe still running after this long counts as failed, ms. Default 5,000. */
  readonly stuckAfterMs?: number;
  /** Milliseconds, as `Date.now()`; tests move it by hand. */
  readonly now?: () => number;
}

/** The probe's file in the data directory. */
export const PROBE_FILE = ".readyz-probe";

/**
 * Writes and syncs {@link PROBE_FILE} in the data directory now and every
 * `intervalMs`, one probe at a time, and keeps the outcome for
 * {@link result}. A disk that went read-only or full, a directory removed,
 * or a write that hangs is seen within one interval even on an idle node,
 * whose Raft log writes nothing.
 */
export class StorageProbe {
  readonly #path: string;
  readonly #intervalMs: number;
  readonly #stuckAfterMs: number;
  readonly #now: () => number;
  #last: StorageProbeResult = { ok: false, detail: "not checked yet" };
  /** When the probe under way started; null when none is. */
  #runningSince: number | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #running: Promise<void> | null = null;

  constructor(options: StorageProbeOptions) {
    this.#path = join(options.dir, PROBE_FILE);
    this.#intervalMs = options.intervalMs ?? 5_000;
    this.#stuckAfterMs = options.stuckAfterMs ?? 5_000;
    this.#now = options.now ?? Date.now;
  }

  /** Probes now and every interval until {@link stop}. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.probe();
    this.#timer = setInterval(() => this.probe(), this.#intervalMs);
    Deno.unrefTimer(this.#timer as unknown as number);
  }

  /** Runs one probe unless one is under way; resolves when it is done. */
  probe(): Promise<void> {
    this.#running ??= this.#probe().finally(() => this.#running = null);
    return this.#running;
  }

  /** The last outcome; a probe running past `stuckAfterMs` is a failure. */
  result(): StorageProbeResult {
    const since = this.#runningSince;
    if (since !== null) {
      const ms = this.#now() - since;
      if (ms >= this.#stuckAfterMs) {
        return {
          ok: false,
          detail: `a write to ${this.#path} has not finished after ${ms} ms: the disk may be stuck`,
        };
      }
    }
    return this.#last;
  }

  /** Stops probing; waits for a probe under way. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  async #probe(): Promise<void> {
    this.#runningSince = this.#now();
    try {
      using file = await Deno.open(this.#path, { write: true, create: true, truncate: true });
      await file.write(new TextEncoder().encode(`${this.#now()}\n`));
      await file.syncData();
      this.#last = { ok: true, detail: `${this.#path} written and synced` };
    } catch (e) {
      this.#last = {
        ok: false,
        detail: `cannot write ${this.#path}: ${e instanceof Error ? e.message : String(e)}`,
      };
    } finally {
      this.#runningSince = null;
    }
  }
}
