/**
 * The egress of consensus: one outbox per peer, which owns the peer's route
 * (`grpc`, `iroh`, or `adaptive`) and one bounded queue per priority class.
 *
 * Owns: {@link RaftOutbox}, {@link PeerOutbox}, {@link OUTBOX_LIMITS}.
 * Imports the Raft codec and this folder's adaptive route; the transports
 * come in as {@link RaftLink}s.
 *
 * Policy (docs/security.md, "Raft egress"):
 * - Each class (Election, Heartbeat, LogAppend, Snapshot) has its own
 *   queue and its own window of sends in flight, so a vote never waits
 *   behind snapshot chunks: it is sent while they are still queued.
 * - A queue is bounded by a count and by bytes. A message that does not fit
 *   is dropped, counted, and reported (`onDrop`), as is one whose send
 *   failed; Raft resends what it still needs, and a peer that stops reading
 *   costs this node at most the bounds, never its memory.
 * - A send counts as in flight until the transport has taken it: handed to
 *   the connection with its buffer below its high-water mark (Iroh), or
 *   acknowledged by the peer (gRPC). The window of each class bounds that.
 *
 * @module
 */

import { Priority } from "../codec/frame.ts";
import { type RaftMessage, raftMessageMaxBytes, raftMessagePriority } from "../codec/raft.ts";
import type { TransportName } from "../names.ts";
import { AdaptiveRaftRoute, type RaftLink } from "./adaptive.ts";

export type { RaftLink };

/** A class of Raft messages: the frame priorities below Service. */
type RaftClass =
  | typeof Priority.Election
  | typeof Priority.Heartbeat
  | typeof Priority.LogAppend
  | typeof Priority.Snapshot;

/** The bound of one class's queue, and how many of its sends may be in flight. */
export interface OutboxClassLimit {
  readonly maxMessages: number;
  readonly maxBytes: number;
  readonly maxInFlight: number;
}

/**
 * Per class. Elections and heartbeats are small and few per tick; 64 and
 * 256 queued cover a long stall. Appends are bounded by bytes: 32 MiB is
 * seconds of a busy log per follower. Snapshot chunks (at most 1 MiB each)
 * keep two in flight and eight queued: enough to fill the pipe, not the heap.
 */
export const OUTBOX_LIMITS: Readonly<Record<RaftClass, OutboxClassLimit>> = Object.freeze({
  [Priority.Election]: { maxMessages: 64, maxBytes: 1 << 20, maxInFlight: 8 },
  [Priority.Heartbeat]: { maxMessages: 256, maxBytes: 1 << 20, maxInFlight: 8 },
  [Priority.LogAppend]: { maxMessages: 1024, maxBytes: 32 << 20, maxInFlight: 4 },
  [Priority.Snapshot]: { maxMessages: 8, maxBytes: 8 << 20, maxInFlight: 2 },
});

const CLASSES: readonly RaftClass[] = [
  Priority.Election,
  Priority.Heartbeat,
  Priority.LogAppend,
  Priority.Snapshot,
];

/** How messages reach one peer: one transport, or the adaptive choice between two. */
export interface RaftRoute {
  /** Sends one message; resolves with the transport that took it, rejects when none did. */
  send(message: RaftMessage): Promise<TransportName>;
  /** Stops whatever the route runs in the background (adaptive probes). */
  close(): void;
}

/** A route over one transport. */
export function fixedRoute(link: RaftLink): RaftRoute {
  return {
    send: async (m) => {
      await link.sendRaft(m);
      return link.transport;
    },
    close() {},
  };
}

/** Options of {@link adaptiveRoute}. */
export interface AdaptiveRouteOptions {
  /** How often the links are probed, ms. Default 5,000. */
  readonly probeIntervalMs?: number;
}

/**
 * `raft_transport = "adaptive"`: per message, the transport
 * {@link AdaptiveRaftRoute} chooses (docs/dual-runner.md), probed in the
 * background while the route is open.
 */
export function adaptiveRoute(
  links: readonly RaftLink[],
  options: AdaptiveRouteOptions = {},
): RaftRoute & { readonly adaptive: AdaptiveRaftRoute } {
  const adaptive = new AdaptiveRaftRoute(links);
  let probing: Promise<void> | null = null;
  const probe = () => {
    probing ??= adaptive.probe().finally(() => probing = null);
  };
  probe();
  const timer = setInterval(probe, options.probeIntervalMs ?? 5_000);
  Deno.unrefTimer(timer as unknown as number);
  return {
    adaptive,
    send: (m) => adaptive.send(m),
    close: () => clearInterval(timer),
  };
}

/** Why a message was not delivered to the transport. */
export type DropReason = "queue_full" | "send_failed" | "no_route" | "closed";

/** Counters of an outbox, by class (indexed by priority). */
export interface OutboxStats {
  readonly queued: number[];
  readonly sent: number[];
  readonly dropped: Record<DropReason, number[]>;
  /** Messages taken per transport. */
  readonly byTransport: Record<TransportName, number>;
}

function newStats(): OutboxStats {
  return {
    queued: [0, 0, 0, 0],
    sent: [0, 0, 0, 0],
    dropped: {
      queue_full: [0, 0, 0, 0],
      send_failed: [0, 0, 0, 0],
      no_route: [0, 0, 0, 0],
      closed: [0, 0, 0, 0],
    },
    byTransport: { grpc: 0, iroh: 0 },
  };
}

interface ClassQueue {
  readonly limit: OutboxClassLimit;
  readonly items: RaftMessage[];
  head: number;
  bytes: number;
  inFlight: number;
}

/** The outbox of one peer. */
export class PeerOutbox {
  readonly peerId: number;
  #route: RaftRoute | null;
  readonly #queues: ClassQueue[];
  readonly #stats: OutboxStats;
  readonly #onDrop: (message: RaftMessage, reason: DropReason) => void;
  #closed = false;

  constructor(
    peerId: number,
    route: RaftRoute | null,
    limits: Readonly<Record<RaftClass, OutboxClassLimit>>,
    stats: OutboxStats,
    onDrop: (message: RaftMessage, reason: DropReason) => void,
  ) {
    this.peerId = peerId;
    this.#route = route;
    this.#stats = stats;
    this.#onDrop = onDrop;
    this.#queues = CLASSES.map((c) => ({
      limit: limits[c],
      items: [],
      head: 0,
      bytes: 0,
      inFlight: 0,
    }));
  }

  /** Messages waiting to be sent, over every class. */
  get queuedMessages(): number {
    let n = 0;
    for (const q of this.#queues) n += q.items.length - q.head;
    return n;
  }

  /** Messages waiting to be sent, by class (index = priority). */
  depths(): number[] {
    return this.#queues.map((q) => q.items.length - q.head);
  }

  /** Bytes waiting to be sent, over every class. */
  get queuedBytes(): number {
    let n = 0;
    for (const q of this.#queues) n += q.bytes;
    return n;
  }

  /** Sends in flight, over every class. */
  get inFlight(): number {
    let n = 0;
    for (const q of this.#queues) n += q.inFlight;
    return n;
  }

  /** Replaces the route (after a reload); queued messages take the new one. */
  setRoute(route: RaftRoute | null): void {
    this.#route?.close();
    this.#route = route;
    for (const c of CLASSES) this.#pump(c);
  }

  /** Queues `message`; false when it was dropped (and counted, and reported). */
  enqueue(message: RaftMessage): boolean {
    const c = raftMessagePriority(message.kind) as RaftClass;
    if (this.#closed) return this.#drop(message, "closed");
    if (this.#route === null) return this.#drop(message, "no_route");
    const q = this.#queues[c]!;
    const bytes = raftMessageMaxBytes(message);
    if (q.items.length - q.head >= q.limit.maxMessages || q.bytes + bytes > q.limit.maxBytes) {
      return this.#drop(message, "queue_full");
    }
    q.items.push(message);
    q.bytes += bytes;
    this.#stats.queued[c]!++;
    this.#pump(c);
    return true;
  }

  /** Drops everything queued (counted as closed) and stops the route. */
  close(): void {
    this.#closed = true;
    this.#route?.close();
    for (const q of this.#queues) {
      while (q.head < q.items.length) this.#drop(q.items[q.head++]!, "closed");
      q.items.length = 0;
      q.head = 0;
      q.bytes = 0;
    }
  }

  #drop(message: RaftMessage, reason: DropReason): false {
    this.#stats.dropped[reason][raftMessagePriority(message.kind)]!++;
    this.#onDrop(message, reason);
    return false;
  }

  #pump(c: RaftClass): void {
    const q = this.#queues[c]!;
    const route = this.#route;
    while (route && !this.#closed && q.inFlight < q.limit.maxInFlight && q.head < q.items.length) {
      const message = q.items[q.head]!;
      q.items[q.head++] = undefined as unknown as RaftMessage;
      if (q.head === q.items.length) {
        q.items.length = 0;
        q.head = 0;
      }
      const bytes = raftMessageMaxBytes(message);
      q.bytes -= bytes;
      q.inFlight++;
      route.send(message).then(
        (transport) => {
          this.#stats.sent[c]!++;
          this.#stats.byTransport[transport]++;
        },
        () => this.#drop(message, "send_failed"),
      ).finally(() => {
        q.inFlight--;
        this.#pump(c);
      });
    }
  }
}

/** Options of a {@link RaftOutbox}. */
export interface RaftOutboxOptions {
  /** The route to a peer, or null when it cannot be reached (no address for any transport). */
  readonly routeFor: (peerId: number) => RaftRoute | null;
  readonly limits?: Partial<Record<RaftClass, OutboxClassLimit>>;
  /** Told of every message not delivered to a transport (the core treats the peer as unreachable). */
  readonly onDrop?: (peerId: number, message: RaftMessage, reason: DropReason) => void;
}

/** Every peer's outbox. */
export class RaftOutbox {
  readonly #o: RaftOutboxOptions;
  readonly #limits: Readonly<Record<RaftClass, OutboxClassLimit>>;
  readonly #peers = new Map<number, PeerOutbox>();
  readonly stats: OutboxStats = newStats();

  constructor(options: RaftOutboxOptions) {
    this.#o = options;
    this.#limits = { ...OUTBOX_LIMITS, ...options.limits };
  }

  /** Queues `message` for its recipient (`message.to`); false when dropped. */
  send(message: RaftMessage): boolean {
    return this.peer(message.to).enqueue(message);
  }

  /** The outbox of `peerId`, created on first use. */
  peer(peerId: number): PeerOutbox {
    let outbox = this.#peers.get(peerId);
    if (!outbox) {
      outbox = new PeerOutbox(
        peerId,
        this.#route(peerId),
        this.#limits,
        this.stats,
        (m, reason) => this.#o.onDrop?.(peerId, m, reason),
      );
      this.#peers.set(peerId, outbox);
    }
    return outbox;
  }

  /** Messages waiting to be sent over every peer, by class (index = priority). */
  depths(): number[] {
    const total = [0, 0, 0, 0];
    for (const outbox of this.#peers.values()) {
      outbox.depths().forEach((n, i) => total[i]! += n);
    }
    return total;
  }

  /** Asks `routeFor` again for every peer: after a reload, or a membership change. */
  rerouteAll(): void {
    for (const [id, outbox] of this.#peers) outbox.setRoute(this.#route(id));
  }

  /** The route to a peer; a lookup that fails is no route (its messages are dropped, counted). */
  #route(peerId: number): RaftRoute | null {
    try {
      return this.#o.routeFor(peerId);
    } catch {
      return null;
    }
  }

  /** Forgets a peer that left: its queue is dropped. */
  remove(peerId: number): void {
    this.#peers.get(peerId)?.close();
    this.#peers.delete(peerId);
  }

  /** Drops everything and stops every route. */
  close(): void {
    for (const outbox of this.#peers.values()) outbox.close();
    this.#peers.clear();
  }
}
