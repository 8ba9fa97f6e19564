/**
 * Who may do what: cluster peers and operators are different principals.
 *
 * Owns: {@link Principals}, {@link principalsOf}. Pure: imports the config
 * types, `src/names.ts`, `src/util/address.ts` and the Iroh ticket parser;
 * does no I/O (names in peers' gRPC addresses are resolved by the caller).
 *
 * The rules (docs/security.md):
 * - An Iroh connection is accepted from a peer's endpoint id or an operator
 *   key; everyone else is refused at the handshake.
 * - Operators may call the client services only. Raft messages are accepted
 *   only from peers, and every message's `from` must be the node the
 *   transport authenticated:
 *   - over Iroh, the node whose endpoint id made the connection;
 *   - over gRPC with mutual TLS, a node whose certificate names the host of
 *     that node's `grpc_address` (its subject CN or a subject alternative
 *     name);
 *   - over gRPC without mutual TLS, only where the config accepts plaintext
 *     peers (a loopback listener, or `grpc.allow_insecure = true`): a caller
 *     whose IP address is that of the node's `grpc_address`. This is as
 *     strong as the network, and peers sharing one IP (a test cluster on
 *     loopback) cannot be told apart.
 *
 * @module
 */

import type { AgentConfig } from "../config/mod.ts";
import { normalizeEndpointId, parseTicket } from "../transport/iroh/endpoint.ts";
import { isIpv4, isIpv6, isLoopback, parseHostPort } from "../util/address.ts";
import type { PeerInfo } from "../rpc/services.ts";

/** How a node that is a peer can be recognised. */
export interface PeerIdentity {
  readonly nodeId: number;
  /** Lowercase hex endpoint id, when the peer has an Iroh identity. */
  readonly endpointId?: string;
  /** The host of its `grpc_address` (a name or an IP literal), when it serves gRPC. */
  readonly grpcHost?: string;
  /** The IP addresses `grpcHost` stands for (itself when it is an IP literal). */
  readonly grpcIps: readonly string[];
}

/** How gRPC callers are recognised as peers. */
export type GrpcPeerAuth =
  /** By the names in their verified client certificate (mutual TLS). */
  | "certificate"
  /** By their IP address: a plaintext listener the config accepts. */
  | "address"
  /** Not at all: server-only TLS authenticates no client; Raft over gRPC is refused. */
  | "none";

/** A refusal, for the PERMISSION_DENIED message. */
export interface Refusal {
  readonly reason: string;
}

/** The principals of one configuration. */
export class Principals {
  readonly #byEndpoint = new Map<string, PeerIdentity>();
  readonly #byNode = new Map<number, PeerIdentity>();
  readonly #operators: ReadonlySet<string>;
  readonly grpcPeerAuth: GrpcPeerAuth;

  constructor(
    peers: readonly PeerIdentity[],
    operatorKeys: readonly string[],
    grpcPeerAuth: GrpcPeerAuth,
  ) {
    for (const p of peers) {
      this.#byNode.set(p.nodeId, p);
      if (p.endpointId) this.#byEndpoint.set(p.endpointId, p);
    }
    this.#operators = new Set(operatorKeys);
    this.grpcPeerAuth = grpcPeerAuth;
  }

  /** Whether an Iroh connection from `endpointId` is accepted at all. */
  allowsConnection(endpointId: string): boolean {
    return this.#byEndpoint.has(endpointId) || this.#operators.has(endpointId);
  }

  /** The peer with `nodeId`, if it is one. */
  peer(nodeId: number): PeerIdentity | undefined {
    return this.#byNode.get(nodeId);
  }

  /** The endpoint ids allowed to connect (peers and operators). */
  allowedEndpoints(): Set<string> {
    return new Set([...this.#byEndpoint.keys(), ...this.#operators]);
  }

  /**
   * Whether `caller` may deliver a Raft message from node `from`; null when
   * it may, else why not.
   */
  authorizeRaft(caller: PeerInfo, from: number): Refusal | null {
    return this.authorizeNode(caller, from, "send Raft messages");
  }

  /**
   * Whether `caller` is node `nodeId` (a peer, authenticated as itself), to
   * do what only that node may (`what`: "send Raft messages", "report its
   * VMs"); null when it is, else why not.
   */
  authorizeNode(caller: PeerInfo, nodeId: number, what: string): Refusal | null {
    return caller.transport === "iroh"
      ? this.#authorizeIroh(caller.id, nodeId, what)
      : this.#authorizeGrpc(caller, nodeId, what);
  }

  /**
   * Whether `caller` may change the cluster's state (VMs, membership): a
   * peer or an operator, authenticated. Over Iroh every accepted connection
   * is one; over gRPC, a client with a verified certificate (mutual TLS), or,
   * on a listener that accepts plaintext peers, a caller on this host
   * (loopback) or at a peer's address. Null when it may, else why not.
   */
  authorizeChange(caller: PeerInfo, what: string): Refusal | null {
    if (caller.transport === "iroh") {
      return this.allowsConnection(caller.id) ? null : {
        reason: `endpoint ${short(caller.id)} is neither a cluster peer nor an operator key`,
      };
    }
    switch (this.grpcPeerAuth) {
      case "certificate":
        return (caller.certificateNames ?? []).length > 0 ? null : {
          reason: `${what} needs a client certificate the cluster's CA signed`,
        };
      case "none":
        return {
          reason:
            `${what} needs an authenticated caller, and this node's gRPC listener authenticates none (TLS without grpc.tls.ca_file): use mutual TLS, or Iroh with an operator key`,
        };
      case "address": {
        const ip = ipOf(caller.id);
        if (ip !== undefined && (isLoopbackIp(ip) || this.#isPeerIp(ip))) return null;
        return {
          reason:
            `${what} over plaintext gRPC is allowed from this host or a peer's address only, and ${caller.id} is neither: use mutual TLS, or Iroh with an operator key`,
        };
      }
    }
  }

  #isPeerIp(ip: string): boolean {
    for (const p of this.#byNode.values()) {
      if (p.grpcIps.some((q) => sameIp(q, ip))) return true;
    }
    return false;
  }

  #authorizeIroh(endpointId: string, from: number, what: string): Refusal | null {
    const peer = this.#byEndpoint.get(endpointId);
    if (!peer) {
      return {
        reason: this.#operators.has(endpointId)
          ? `endpoint ${short(endpointId)} is an operator key: operators may not ${what}`
          : `endpoint ${short(endpointId)} is not a cluster peer: only peers may ${what}`,
      };
    }
    return peer.nodeId === from ? null : {
      reason: `endpoint ${
        short(endpointId)
      } is node ${peer.nodeId}; it may not ${what} as node ${from}`,
    };
  }

  #authorizeGrpc(caller: PeerInfo, from: number, what: string): Refusal | null {
    const peer = this.#byNode.get(from);
    if (!peer || peer.grpcHost === undefined) {
      return { reason: `node ${from} is not a cluster peer with a grpc_address` };
    }
    switch (this.grpcPeerAuth) {
      case "none":
        return {
          reason:
            `this node's gRPC listener authenticates no client (TLS without grpc.tls.ca_file): to ${what} over gRPC needs mutual TLS, or grpc.allow_insecure = true to accept peers by address`,
        };
      case "certificate": {
        const names = caller.certificateNames ?? [];
        if (names.some((n) => sameHost(n, peer.grpcHost!))) return null;
        return {
          reason: `the client certificate (${
            names.length ? names.join(", ") : "no names"
          }) does not name ${peer.grpcHost}, node ${from}'s grpc_address host`,
        };
      }
      case "address": {
        const ip = ipOf(caller.id);
        if (ip !== undefined && peer.grpcIps.some((p) => sameIp(p, ip))) return null;
        return {
          reason: `caller ${caller.id} is not at node ${from}'s grpc_address (${peer.grpcHost})`,
        };
      }
    }
  }
}

/** A member as the replicated cluster state records it (see src/state/). */
export interface MemberAddress {
  readonly nodeId: number;
  readonly endpointId?: string;
  readonly grpcAddress?: string;
}

/**
 * The principals of `config` and of the cluster's `members` (learned through
 * Raft: they are peers without a config edit; a member's record wins over a
 * config entry of the same id). `resolved` maps a peer's gRPC host name to its
 * IP addresses (names not in it match nothing by address); IP literals and
 * `localhost` need no entry.
 */
export function principalsOf(
  config: AgentConfig,
  resolved: ReadonlyMap<string, readonly string[]> = new Map(),
  members: readonly MemberAddress[] = [],
): Principals {
  // Each peer's identity: a config entry, with what its record says taking precedence field by field.
  const byId = new Map<number, { endpointId?: string; grpcAddress?: string }>();
  for (const p of config.cluster.peers) {
    const endpointId = p.endpointId
      ? normalizeEndpointId(p.endpointId)
      : p.ticket
      ? parseTicket(p.ticket).id
      : undefined;
    byId.set(p.id, {
      ...(endpointId ? { endpointId } : {}),
      ...(p.grpcAddress ? { grpcAddress: p.grpcAddress } : {}),
    });
  }
  for (const m of members) {
    if (m.nodeId === config.node.id) continue;
    byId.set(m.nodeId, {
      ...byId.get(m.nodeId),
      ...(m.endpointId ? { endpointId: m.endpointId } : {}),
      ...(m.grpcAddress ? { grpcAddress: m.grpcAddress } : {}),
    });
  }
  const peers = [...byId].map(([nodeId, p]): PeerIdentity => {
    const host = p.grpcAddress ? parseHostPort(p.grpcAddress)?.host : undefined;
    return {
      nodeId,
      ...(p.endpointId ? { endpointId: p.endpointId } : {}),
      ...(host ? { grpcHost: host } : {}),
      grpcIps: host === undefined ? [] : ipsOf(host, resolved),
    };
  });
  return new Principals(
    peers,
    config.cluster.operatorKeys,
    grpcPeerAuthOf(config),
  );
}

/** How a config's gRPC listener recognises peers. */
export function grpcPeerAuthOf(config: AgentConfig): GrpcPeerAuth {
  const { tls, bind, allowInsecure } = config.grpc;
  if (tls.caFile !== undefined) return "certificate";
  if (tls.certFile !== undefined) return allowInsecure ? "address" : "none";
  const address = parseHostPort(bind);
  return allowInsecure || (address !== undefined && isLoopback(address)) ? "address" : "none";
}

/** The gRPC hosts of `config`'s peers that are names to resolve. */
export function namesToResolve(config: AgentConfig): string[] {
  const names = new Set<string>();
  for (const p of config.cluster.peers) {
    const host = p.grpcAddress ? parseHostPort(p.grpcAddress)?.host : undefined;
    if (host && !isIpv4(host) && !isIpv6(host) && host.toLowerCase() !== "localhost") {
      names.add(host);
    }
  }
  return [...names];
}

function ipsOf(host: string, resolved: ReadonlyMap<string, readonly string[]>): string[] {
  if (isIpv4(host) || isIpv6(host)) return [host];
  if (host.toLowerCase() === "localhost") return ["127.0.0.1", "::1"];
  return [...(resolved.get(host) ?? [])];
}

/**
 * The IP of a gRPC caller as grpc-js names it: `"10.0.0.2:5123"`, or IPv6
 * without brackets, `"::ffff:10.0.0.2:5123"` (brackets are accepted too).
 */
function ipOf(peer: string): string | undefined {
  const colon = peer.lastIndexOf(":");
  if (colon <= 0) return undefined;
  const host = peer.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  return isIpv4(host) || isIpv6(host) ? host : undefined;
}

function isLoopbackIp(ip: string): boolean {
  const v4 = unmap(ip);
  return v4.startsWith("127.") || v4 === "::1";
}

function sameIp(a: string, b: string): boolean {
  return unmap(a).toLowerCase() === unmap(b).toLowerCase();
}

/** `::ffff:10.0.0.2` is `10.0.0.2`. */
function unmap(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

function sameHost(name: string, host: string): boolean {
  return (isIpv4(name) || isIpv6(name)) && (isIpv4(host) || isIpv6(host))
    ? sameIp(name, host)
    : name.toLowerCase() === host.toLowerCase();
}

function short(id: string): string {
  return id.length > 10 ? `${id.slice(0, 10)}…` : id;
}
