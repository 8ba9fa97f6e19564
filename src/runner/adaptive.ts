/**
 * `raft_transport = "adaptive"`: per peer, Raft messages travel over the
 * transport that is healthy and faster right now, and snapshot chunks over
 * the one that moves bulk faster.
 *
 * Owns: {@link AdaptiveRaftRoute}, {@link RaftLink}. Imports `routing.ts`
 * (the pure choice) and the codec's Raft types.
 *
 * The evidence is live: each link is probed (a small Health.Ping for
 * latency, a larger one for bulk throughput), smoothed with an exponential
 * moving average, and every send result counts: a failed send marks its
 * transport unhealthy until a probe succeeds again, and the message is sent
 * once more over the other transport. Which transport wins is
 * {@link chooseAdaptive} and {@link chooseBulkTransport}; docs/dual-runner.md
 * states the rule.
 *
 * @module
 */

import { type RaftMessage, RaftMessageKind } from "../codec/raft.ts";
import {
  chooseAdaptive,
  chooseBulkTransport,
  type TransportHealth,
  type TransportName,
} from "./routing.ts";

/** One transport's way to one peer. */
export interface RaftLink {
  readonly transport: TransportName;
  /** Sends one Raft message; rejects when the transport fails. */
  sendRaft(message: RaftMessage): Promise<void>;
  /** One round trip carrying `bytes` of payload each way (Health.Ping). */
  probe(bytes: number): Promise<void>;
}

/** Options of an {@link AdaptiveRaftRoute}. */
export interface AdaptiveOptions {
  /** Payload of the bulk probe, bytes. Default 256 KiB. */
  readonly bulkProbeBytes?: number;
  /** Weight of a new sample in the moving averages, 0..1. Default 0.3. */
  readonly smoothing?: number;
  /** Clock, ms. Default `performance.now`. */
  readonly now?: () => number;
}

interface LinkState {
  readonly link: RaftLink;
  healthy: boolean;
  latencyMs: number | null;
  bulkBytesPerSecond: number | null;
  failures: number;
  warm: boolean;
}

/** The adaptive route to one peer. */
export class AdaptiveRaftRoute {
  readonly #links = new Map<TransportName, LinkState>();
  readonly #bulkProbeBytes: number;
  readonly #smoothing: number;
  readonly #now: () => number;
  /** Messages sent per transport, and retries after a failure. */
  readonly stats = { sent: new Map<TransportName, number>(), retries: 0 };

  constructor(links: readonly RaftLink[], options: AdaptiveOptions = {}) {
    for (const link of links) {
      this.#links.set(link.transport, {
        link,
        healthy: true,
        latencyMs: null,
        bulkBytesPerSecond: null,
        failures: 0,
        warm: false,
      });
    }
    this.#bulkProbeBytes = options.bulkProbeBytes ?? 256 * 1024;
    this.#smoothing = options.smoothing ?? 0.3;
    this.#now = options.now ?? (() => performance.now());
  }

  /** What is known of each transport now. */
  health(): Record<TransportName, TransportHealth> {
    const of = (t: TransportName): TransportHealth => {
      const s = this.#links.get(t);
      return s
        ? { healthy: s.healthy, latencyMs: s.latencyMs, bulkBytesPerSecond: s.bulkBytesPerSecond }
        : { healthy: false, latencyMs: null, bulkBytesPerSecond: null };
    };
    return { grpc: of("grpc"), iroh: of("iroh") };
  }

  /** Measures every link once: latency with a small probe, throughput with a bulk one. */
  async probe(): Promise<void> {
    await Promise.all([...this.#links.values()].map(async (s) => {
      try {
        // The first round trip of a link includes connecting: not a latency sample.
        if (!s.warm) {
          await s.link.probe(16);
          s.warm = true;
        }
        let t0 = this.#now();
        await s.link.probe(16);
        s.latencyMs = this.#smooth(s.latencyMs, this.#now() - t0);
        t0 = this.#now();
        await s.link.probe(this.#bulkProbeBytes);
        const seconds = Math.max(1e-6, (this.#now() - t0) / 1000);
        s.bulkBytesPerSecond = this.#smooth(
          s.bulkBytesPerSecond,
          (2 * this.#bulkProbeBytes) / seconds,
        );
        s.healthy = true;
        s.failures = 0;
      } catch {
        s.healthy = false;
        s.failures++;
        s.warm = false;
      }
    }));
  }

  /** The transport the next message of `kind` would take, or null if none is usable. */
  route(kind: RaftMessageKind): TransportName | null {
    const available = [...this.#links.keys()];
    return kind === RaftMessageKind.InstallSnapshot
      ? chooseBulkTransport(available, this.health())
      : chooseAdaptive(available, this.health());
  }

  /**
   * Sends over the chosen transport; if that fails, marks it unhealthy and
   * sends once over the other. Resolves with the transport that carried it.
   */
  async send(message: RaftMessage): Promise<TransportName> {
    const first = this.route(message.kind) ?? [...this.#links.keys()][0];
    if (first === undefined) throw new Error("adaptive raft route: no transport to this peer");
    try {
      await this.#sendOver(first, message);
      return first;
    } catch (e) {
      const state = this.#links.get(first)!;
      state.healthy = false;
      state.failures++;
      const other = [...this.#links.keys()].find((t) => t !== first);
      if (other === undefined) throw e;
      this.stats.retries++;
      await this.#sendOver(other, message);
      return other;
    }
  }

  async #sendOver(transport: TransportName, message: RaftMessage): Promise<void> {
    await this.#links.get(transport)!.link.sendRaft(message);
    this.stats.sent.set(transport, (this.stats.sent.get(transport) ?? 0) + 1);
  }

  #smooth(previous: number | null, sample: number): number {
    return previous === null ? sample : previous + this.#smoothing * (sample - previous);
  }
}
