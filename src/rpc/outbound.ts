/**
 * What a node holds for a peer that does not read: the outbound bytes of one
 * connection, counted against `maxConnectionBufferBytes`, and the two
 * thresholds both transports act on.
 *
 * Owns: {@link OutboundBuffer}. Imports nothing.
 *
 * Past the soft bound (half the maximum) the buffer is *paused*: the
 * transport stops taking that connection's requests, so a peer that sends
 * and never reads is slowed by its own transport's flow control instead of
 * growing this node's memory. It resumes once the peer has read it down to a
 * quarter of the maximum, so a reader at the edge does not make the
 * connection flap. Past the maximum it *overflows*, once, and the transport
 * closes the connection: that covers the answers of calls already running
 * when reading stopped.
 *
 * @module
 */

/** What an {@link OutboundBuffer} tells its transport. */
export interface OutboundBufferEvents {
  /** Crossed the soft bound: stop taking the connection's requests. */
  onPause?(bytes: number): void;
  /** Back under a quarter of the maximum: take requests again. */
  onResume?(): void;
  /** Crossed the maximum: close the connection. Called once. */
  onOverflow(bytes: number): void;
}

/**
 * The outbound bytes of one connection against its bound.
 *
 * @example
 * ```ts
 * import { OutboundBuffer } from "./outbound.ts";
 * let closed = false;
 * const buffer = new OutboundBuffer(4096, { onOverflow: () => closed = true });
 * buffer.add(3000); // past half: paused
 * console.log(buffer.paused, closed); // true false
 * buffer.add(2000); // past the maximum
 * console.log(closed); // true
 * ```
 */
export class OutboundBuffer {
  /** The hard bound, bytes. */
  readonly maxBytes: number;
  /** Past this many bytes the buffer pauses. */
  readonly softBytes: number;
  /** A paused buffer resumes at or below this many bytes. */
  readonly resumeBytes: number;
  readonly #events: OutboundBufferEvents;
  readonly #measure: (() => number) | undefined;
  #held = 0;
  #paused = false;
  #overflowed = false;
  #waiters: (() => void)[] = [];

  /**
   * @param maxBytes the hard bound (`maxConnectionBufferBytes`).
   * @param measure bytes held elsewhere that count too, read at every check
   *   (gRPC: the socket's `writableLength`).
   */
  constructor(maxBytes: number, events: OutboundBufferEvents, measure?: () => number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 4) {
      throw new RangeError(
        `maxConnectionBufferBytes ${maxBytes}: expected an integer of at least 4 bytes`,
      );
    }
    this.maxBytes = maxBytes;
    this.softBytes = Math.floor(maxBytes / 2);
    this.resumeBytes = Math.floor(maxBytes / 4);
    this.#events = events;
    this.#measure = measure;
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#held + (this.#measure?.() ?? 0);
  }

  /** True between crossing the soft bound and draining to a quarter. */
  get paused(): boolean {
    return this.#paused;
  }

  /** True once the maximum was crossed. */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  /** Counts `bytes` more held. */
  add(bytes: number): void {
    this.#held += bytes;
    this.check();
  }

  /** Counts `bytes` no longer held (sent, or dropped with their stream). */
  release(bytes: number): void {
    this.#held -= bytes;
    this.check();
  }

  /** Re-evaluates the state; call it when measured bytes may have changed. */
  check(): void {
    if (this.#overflowed) return;
    const bytes = this.bytes;
    if (bytes > this.maxBytes) {
      this.#overflowed = true;
      this.#events.onOverflow(bytes);
      return;
    }
    if (!this.#paused && bytes > this.softBytes) {
      this.#paused = true;
      this.#events.onPause?.(bytes);
    } else if (this.#paused && bytes <= this.resumeBytes) {
      this.#paused = false;
      for (const wake of this.#waiters.splice(0)) wake();
      this.#events.onResume?.();
    }
  }

  /** Resolves when the buffer is not paused (at once if it is not). */
  whenResumed(): Promise<void> {
    if (!this.#paused) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}
