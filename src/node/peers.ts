/**
 * The node's address book: how to reach each other node and what is known
 * of it, from the member records learned through Raft first and the
 * configuration's `[[cluster.peers]]` second (a member announces itself once
 * it runs; until then, and for peers not yet members, the config is all
 * there is).
 *
 * Owns: {@link PeerBook}. Imports config and record types, the Iroh ticket
 * codec and the principals' member shape. No I/O.
 *
 * @module
 */

import type { AgentConfig } from "../config/mod.ts";
import type { PeerAddress } from "../runner/dual_client.ts";
import type { KnownPeer } from "../services/status.ts";
import type { MemberRecord } from "../state/cluster_state.ts";
import { parseTicket, toTicket } from "../transport/iroh/endpoint.ts";
import type { MemberAddress } from "./principals.ts";

/** Member records and configured peers, looked up by node id. */
export class PeerBook {
  readonly #config: () => AgentConfig;
  #members: readonly MemberRecord[] = [];

  /** @param config the configuration in force (it changes on reload). */
  constructor(config: () => AgentConfig) {
    this.#config = config;
  }

  /** The member records as last applied. */
  get members(): readonly MemberRecord[] {
    return this.#members;
  }

  /** Replaces the member records (a membership change or a record update was applied). */
  update(members: readonly MemberRecord[]): void {
    this.#members = members;
  }

  /** Node `nodeId`'s record in the cluster state, if any. */
  record(nodeId: number): MemberRecord | undefined {
    return this.#members.find((m) => Number(m.nodeId) === nodeId);
  }

  /** The members' identities, for the principals. */
  memberAddresses(): MemberAddress[] {
    return this.#members.map((m) => ({
      nodeId: Number(m.nodeId),
      ...(m.iroh?.endpointId ? { endpointId: m.iroh.endpointId } : {}),
      ...(m.grpcAddress ? { grpcAddress: m.grpcAddress } : {}),
    }));
  }

  /** How to reach node `nodeId`: its record first, else its config entry; undefined for neither. */
  address(nodeId: number): PeerAddress | undefined {
    const record = this.record(nodeId);
    const peer = this.#peer(nodeId);
    const iroh = record?.iroh?.endpointId
      ? ticketOf(record.iroh.endpointId, record.iroh.directAddresses)
      : peer?.ticket ??
        (peer?.endpointId ? ticketOf(peer.endpointId, peer.addresses) : undefined);
    const grpc = record?.grpcAddress || peer?.grpcAddress;
    if (!iroh && !grpc) return undefined;
    return { nodeId: BigInt(nodeId), ...(iroh ? { iroh } : {}), ...(grpc ? { grpc } : {}) };
  }

  /** What is known of node `nodeId`, as Status reports it: its record first, else its config entry. */
  known(nodeId: number): KnownPeer {
    const record = this.record(nodeId);
    const peer = this.#peer(nodeId);
    const fromTicket = peer?.ticket ? parseTicket(peer.ticket) : undefined;
    const endpointId = record?.iroh?.endpointId || peer?.endpointId || fromTicket?.id || "";
    const addresses = record?.iroh?.endpointId
      ? record.iroh.directAddresses
      : peer?.addresses.length
      ? peer.addresses
      : fromTicket?.directAddresses ?? [];
    return {
      nodeId: BigInt(nodeId),
      endpointId,
      addresses,
      grpcAddress: record?.grpcAddress || peer?.grpcAddress || "",
    };
  }

  #peer(nodeId: number) {
    return this.#config().cluster.peers.find((p) => p.id === nodeId);
  }
}

/**
 * A ticket for an endpoint, or undefined when the id is not a valid public
 * key (a config may name one that is well-formed hex and still no key): the
 * node is then unreachable over Iroh, never a reason to fail.
 */
function ticketOf(id: string, directAddresses: readonly string[]): string | undefined {
  try {
    return toTicket({ id, directAddresses: [...directAddresses] });
  } catch {
    return undefined;
  }
}
