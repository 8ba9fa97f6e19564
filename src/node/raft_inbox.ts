/**
 * The one inbox of consensus messages, fed by both transports.
 *
 * Owns: {@link RaftInbox}, {@link INBOX_LIMITS}.
 * Imports the Raft codec's types, `rpc/` (the ingress contract and errors),
 * the principals and the logger.
 *
 * Policy (docs/security.md, "Raft ingress"):
 * - Who: a delivery whose sender may not send Raft (an operator, an unknown
 *   caller, a peer claiming another node's id) is refused whole with
 *   PERMISSION_DENIED, counted by transport, and logged at most once a
 *   minute per caller.
 * - How much: one queue per priority class, each bounded by a count and by
 *   bytes, so a flood of appends or snapshot chunks never leaves a vote or a
 *   heartbeat without room. A message that does not fit is dropped and
 *   counted: Raft recovers from loss (the leader resends), and a transport's
 *   read loop must never wait for consensus.
 * - Order: the consumer takes the highest class first (Election, Heartbeat,
 *   LogAppend, Snapshot), each class in arrival order.
 *
 * @module
 */

import { Priority } from "../codec/frame.ts";
import { type RaftMessage, raftMessageMaxBytes, raftMessagePriority } from "../codec/raft.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import type { RaftIngress, RaftOffer } from "../rpc/raft_ingress.ts";
import type { PeerInfo } from "../rpc/services.ts";
import { type Logger, RateLimiter, silentLogger } from "../util/log.ts";
import type { Principals } from "./principals.ts";

/** The bound of one priority class. */
export interface ClassLimit {
  readonly maxMessages: number;
  readonly maxBytes: number;
}

/**
 * The bounds, per class. A core steps thousands of messages a second, so a
 * few seconds' worth of small messages fit; bulk classes are bounded by
 * bytes: 64 MiB of appends is several seconds of a busy log, and 16 MiB of
 * snapshot chunks is 16 chunks of the largest size a sender uses.
 */
export const INBOX_LIMITS: Readonly<Record<RaftClass, ClassLimit>> = Object.freeze({
  [Priority.Election]: { maxMessages: 1024, maxBytes: 1 << 20 },
  [Priority.Heartbeat]: { maxMessages: 4096, maxBytes: 4 << 20 },
  [Priority.LogAppend]: { maxMessages: 4096, maxBytes: 64 << 20 },
  [Priority.Snapshot]: { maxMessages: 64, maxBytes: 16 << 20 },
});

/** The priority classes Raft messages travel in. */
export type RaftClass = Exclude<Priority, typeof Priority.Service>;

/** The classes, highest first. */
const CLASSES: readonly RaftClass[] = [
  Priority.Election,
  Priority.Heartbeat,
  Priority.LogAppend,
  Priority.Snapshot,
];

/** A queued message and who delivered it. */
export interface Delivery {
  readonly message: RaftMessage;
  readonly peer: PeerInfo;
}

/** Counters of an inbox. */
export interface InboxStats {
  /** Messages queued, by class. */
  readonly accepted: number[];
  /** Messages dropped because their class was full, by class. */
  readonly dropped: number[];
  /** Deliveries refused with PERMISSION_DENIED, by transport. */
  readonly denied: { grpc: number; iroh: number };
}

/** Options of a {@link RaftInbox}. */
export interface RaftInboxOptions {
  /** The principals in force; read per delivery, so a reload applies at once. */
  readonly principals: () => Principals;
  readonly limits?: Partial<Record<RaftClass, ClassLimit>>;
  readonly logger?: Logger;
  /** Called (once per turn of the event loop at most) when messages wait to be taken. */
  readonly onReady?: () => void;
  /** Called with the sender of each authorized delivery, before it is queued. */
  readonly onHeard?: (nodeId: number) => void;
}

interface Queue {
  readonly items: Delivery[];
  head: number;
  bytes: number;
  readonly limit: ClassLimit;
}

/** The bounded inbox; implements the transports' {@link RaftIngress}. */
export class RaftInbox implements RaftIngress {
  readonly #principals: () => Principals;
  readonly #queues: Queue[];
  readonly #log: Logger;
  readonly #denialLog = new RateLimiter(60_000);
  #onReady: (() => void) | undefined;
  readonly #onHeard: ((nodeId: number) => void) | undefined;
  #notifying = false;
  /** When an authorized message last came from each node (`Date.now()` ms); one entry per peer. */
  readonly #heardMs = new Map<number, number>();
  readonly stats: InboxStats = {
    accepted: [0, 0, 0, 0],
    dropped: [0, 0, 0, 0],
    denied: { grpc: 0, iroh: 0 },
  };

  constructor(options: RaftInboxOptions) {
    this.#principals = options.principals;
    this.#log = options.logger ?? silentLogger;
    this.#onReady = options.onReady;
    this.#onHeard = options.onHeard;
    this.#queues = CLASSES.map((c) => ({
      items: [],
      head: 0,
      bytes: 0,
      limit: options.limits?.[c] ?? INBOX_LIMITS[c],
    }));
  }

  /** Sets who is told that messages wait (the consensus driver, once it runs). */
  set onReady(callback: (() => void) | undefined) {
    this.#onReady = callback;
    if (callback && this.size > 0) this.#notify();
  }

  offer(messages: readonly RaftMessage[], peer: PeerInfo): RaftOffer {
    const principals = this.#principals();
    for (const m of messages) {
      const refusal = principals.authorizeRaft(peer, m.from);
      if (refusal) return { accepted: 0, denied: this.#deny(peer, refusal.reason) };
    }
    if (messages.length > 0) {
      this.#heardMs.set(messages[0]!.from, Date.now());
      this.#onHeard?.(messages[0]!.from);
    }
    let accepted = 0;
    for (const message of messages) {
      const c = raftMessagePriority(message.kind) as RaftClass;
      const q = this.#queues[c]!;
      const bytes = raftMessageMaxBytes(message);
      if (q.items.length - q.head >= q.limit.maxMessages || q.bytes + bytes > q.limit.maxBytes) {
        // The rest of the delivery is dropped too: messages of one peer stay in order.
        for (let i = accepted; i < messages.length; i++) {
          this.stats.dropped[raftMessagePriority(messages[i]!.kind)]!++;
        }
        break;
      }
      q.items.push({ message, peer });
      q.bytes += bytes;
      this.stats.accepted[c]!++;
      accepted++;
    }
    if (accepted > 0) this.#notify();
    return { accepted };
  }

  /**
   * When a message from node `nodeId` last arrived (`Date.now()` ms, whether
   * or not it fit), or undefined if none has since this node started.
   */
  lastHeardMs(nodeId: number): number | undefined {
    return this.#heardMs.get(nodeId);
  }

  /** Messages waiting, over every class. */
  get size(): number {
    let n = 0;
    for (const q of this.#queues) n += q.items.length - q.head;
    return n;
  }

  /** Messages waiting, by class (index = priority). */
  depths(): number[] {
    return this.#queues.map((q) => q.items.length - q.head);
  }

  /** Bytes waiting, over every class: each message at its encoded size bound. */
  get bytes(): number {
    let n = 0;
    for (const q of this.#queues) n += q.bytes;
    return n;
  }

  /** The next message, highest class first; undefined when empty. */
  take(): Delivery | undefined {
    for (const q of this.#queues) {
      if (q.head < q.items.length) {
        const d = q.items[q.head]!;
        q.items[q.head++] = undefined as unknown as Delivery;
        q.bytes -= raftMessageMaxBytes(d.message);
        if (q.head === q.items.length) {
          q.items.length = 0;
          q.head = 0;
        } else if (q.head > 1024 && q.head * 2 > q.items.length) {
          q.items.splice(0, q.head);
          q.head = 0;
        }
        return d;
      }
    }
    return undefined;
  }

  #deny(peer: PeerInfo, reason: string): RpcError {
    this.stats.denied[peer.transport]++;
    const suppressed = this.#denialLog.allow(`${peer.transport}:${peer.id}`);
    if (suppressed >= 0) {
      this.#log.warn("refused Raft messages", {
        transport: peer.transport,
        peer: peer.id,
        reason,
        ...(suppressed > 0 ? { suppressed_since_last: suppressed } : {}),
      });
    }
    return new RpcError(Code.PERMISSION_DENIED, `raft: ${reason}`);
  }

  #notify(): void {
    if (this.#notifying || !this.#onReady) return;
    this.#notifying = true;
    queueMicrotask(() => {
      this.#notifying = false;
      if (this.size > 0) this.#onReady?.();
    });
  }
}
