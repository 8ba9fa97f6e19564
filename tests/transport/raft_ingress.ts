/**
 * A Raft ingress for the transport tests: it records what it is offered and
 * can be told to deny the sender or to have no room, as the real one does
 * for an operator or a full inbox.
 */

import { type RaftMessage, RaftMessageKind } from "../../src/codec/raft.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import type { RaftIngress, RaftOffer } from "../../src/rpc/raft_ingress.ts";
import type { PeerInfo } from "../../src/rpc/services.ts";

/** Records every offer; {@link deny} and {@link room} steer its answer. */
export class RecordingIngress implements RaftIngress {
  /** Messages queued, in order, with who sent them. */
  readonly got: { message: RaftMessage; peer: PeerInfo }[] = [];
  /** Sizes of the offers, in order (one transport delivery each). */
  readonly offers: number[] = [];
  /** When set, every offer is denied with this message. */
  deny: string | null = null;
  /** How many more messages fit in the inbox. */
  room = Infinity;

  offer(messages: readonly RaftMessage[], peer: PeerInfo): RaftOffer {
    this.offers.push(messages.length);
    if (this.deny !== null) {
      return { accepted: 0, denied: new RpcError(Code.PERMISSION_DENIED, this.deny) };
    }
    const accepted = Math.min(messages.length, this.room);
    this.room -= accepted;
    for (const message of messages.slice(0, accepted)) this.got.push({ message, peer });
    return { accepted };
  }

  /** The `commit` of every Heartbeat queued, in order. */
  commits(): number[] {
    return this.got.map(({ message }) => "commit" in message ? message.commit : -1);
  }
}

/** A Raft heartbeat from node 1 to node 2 carrying `commit`. */
export function heartbeat(commit: number): RaftMessage {
  return { kind: RaftMessageKind.Heartbeat, from: 1, to: 2, term: 3, commit, readContext: 0 };
}
