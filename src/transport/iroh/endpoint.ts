/**
 * A node's Iroh endpoint: bind, dial, accept with an allowlist, close.
 *
 * Owns: {@link createEndpoint}, {@link IrohEndpoint}, {@link IncomingConnection},
 * the allowlist check, and peer address parsing. Imports the binding and the
 * other modules of this folder.
 *
 * Where a server can refuse an endpoint id (DESIGN §10, deny by default), in
 * the order the binding exposes them:
 * 1. `Incoming`, before any handshake work: the remote socket address, and
 *    only for connections that arrive through a relay, the endpoint id the
 *    relay vouches for. `refuse()` here costs the server nothing and the
 *    client's `connect()` fails with "the server refused to accept a new
 *    connection". For direct (UDP) connections no id is known yet.
 * 2. `Accepting` (handshake under way): only the ALPN; no id, no hook into
 *    certificate verification.
 * 3. `Connection` (handshake complete): `remoteId()`, authenticated by TLS.
 *    This is the earliest point for direct connections. The server closes at
 *    once with {@link CloseCode.NotAllowed} before accepting any stream. In
 *    TLS 1.3 the client finishes its handshake first, so the client's
 *    `connect()` has already resolved; its first stream operation (or
 *    `closed()`) then fails with `NOT_ALLOWED`, about one round trip later.
 * {@link IncomingConnection.accept} applies 1 then 3.
 *
 * @module
 */

import { binding, bindingErrorText, type RawEndpoint, type RawIncomingAddr } from "./binding.ts";
import { textToArray, toArray } from "./bytes.ts";
import { IrohConnection } from "./connection.ts";
import { CloseCode, IrohError, short, toIrohError } from "./errors.ts";
import type { Incoming as RawIncoming } from "@number0/iroh";

/** The ALPN of Blixard's RPC protocol, version 1. */
export const DEFAULT_ALPN = "blixard/1";

/** Default deadline of {@link IrohEndpoint.connect}; the binding's own is 30 s. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** Default deadline of {@link IncomingConnection.accept}'s handshake. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Default bound of {@link IrohEndpoint.acceptLoop}'s concurrent handshakes. */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 64;

const ENDPOINT_ID_HEX = /^[0-9a-fA-F]{64}$/;

/**
 * Which relays the endpoint uses:
 * - `"default"`: n0's public relays, with n0's discovery (the iroh N0 preset);
 * - `"disabled"`: none, and no discovery: only direct addresses are dialled,
 *   nothing leaves the host except QUIC to the peers given;
 * - a list of relay URLs (self-hosted): those relays, no n0 discovery.
 */
export type RelayModeOption = "default" | "disabled" | readonly string[];

/** Plain options of {@link createEndpoint}. */
export interface IrohEndpointOptions {
  /** The node's 32-byte Ed25519 secret key (see `secret_key.ts`). */
  readonly secretKey: Uint8Array;
  /** `host:port` to bind, e.g. `"127.0.0.1:0"`. Default: all interfaces, random port. */
  readonly bindAddr?: string;
  /** Default `"default"`. */
  readonly relayMode?: RelayModeOption;
  /** Protocols this endpoint accepts. Default `["blixard/1"]`; `[]` for a dial-only endpoint. */
  readonly alpns?: readonly string[];
}

/** Where a peer can be reached; what a ticket contains. */
export interface PeerAddr {
  /** Endpoint id, lowercase hex. */
  readonly id: string;
  /** Home relay URL, if it has one. */
  readonly relayUrl?: string;
  /** `ip:port` addresses. */
  readonly directAddresses: readonly string[];
}

/**
 * A peer to dial: an endpoint ticket (`"endpoint…"`), a {@link PeerAddr}, or a
 * bare endpoint id (needs discovery, i.e. relay mode `"default"`).
 */
export type PeerTarget = string | PeerAddr;

/**
 * Endpoint ids allowed to connect: a set of lowercase hex ids, or a predicate
 * (for a set that changes with Raft membership).
 */
export type EndpointAllowlist = ReadonlySet<string> | ((endpointId: string) => boolean);

/** Where an incoming connection comes from, before its handshake. */
export interface IncomingAddr {
  readonly kind: "ip" | "relay" | "custom";
  /** `ip:port` for `"ip"`, the relay URL for `"relay"`. */
  readonly addr: string | undefined;
  /** Only for `"relay"`: the endpoint id the relay vouches for. */
  readonly endpointId: string | undefined;
}

/**
 * Binds an endpoint.
 *
 * @throws {IrohError} `INVALID_ARGUMENT` for a bad key, address, relay URL or
 * ALPN; `BIND_FAILED` if the sockets cannot be bound.
 *
 * @example Two endpoints on loopback
 * ```ts ignore
 * const server = await createEndpoint({ secretKey: keyA, bindAddr: "127.0.0.1:0", relayMode: "disabled" });
 * const client = await createEndpoint({ secretKey: keyB, bindAddr: "127.0.0.1:0", relayMode: "disabled", alpns: [] });
 * const accepted = server.acceptIncoming().then((incoming) => incoming!.accept({ allow: new Set([client.id]) }));
 * const conn = await client.connect(server.ticket());
 * ```
 */
export async function createEndpoint(options: IrohEndpointOptions): Promise<IrohEndpoint> {
  const { secretKey, bindAddr, alpns = [DEFAULT_ALPN] } = options;
  if (!(secretKey instanceof Uint8Array) || secretKey.length !== 32) {
    throw new IrohError(
      "INVALID_ARGUMENT",
      `endpoint: secretKey: ${describe(secretKey)}: expected a Uint8Array of 32 bytes`,
    );
  }
  for (const alpn of alpns) {
    const length = new TextEncoder().encode(alpn).length;
    if (length < 1 || length > 255) {
      throw new IrohError(
        "INVALID_ARGUMENT",
        `endpoint: alpn ${JSON.stringify(alpn)}: expected 1 to 255 bytes`,
      );
    }
  }
  const addrs = bindAddr === undefined ? [] : [bindAddr];
  // Checks every option before anything binds.
  const builder = configuredBuilder(options, addrs);
  const companion = bindAddr === undefined ? undefined : companionBindAddr(bindAddr);
  const warnings: string[] = [];
  if (companion !== undefined) {
    try {
      const raw = await configuredBuilder(options, [...addrs, companion]).bind();
      return new IrohEndpoint(raw, alpns);
    } catch (e) {
      warnings.push(
        `cannot also bind ${companion} (${bindingErrorText(e)}): the other IP family gets a ` +
          `random port, so after a restart a peer that chose a path over it may not reach this ` +
          `node until it redials`,
      );
    }
  }
  let raw: RawEndpoint;
  try {
    raw = await builder.bind();
  } catch (e) {
    throw new IrohError(
      "BIND_FAILED",
      `endpoint: cannot bind ${bindAddr ?? "the default address"}: ${bindingErrorText(e)}`,
      { cause: e },
    );
  }
  return new IrohEndpoint(raw, alpns, warnings);
}

/** A builder with every option applied and `addrs` to bind (none: the binding's default). */
function configuredBuilder(options: IrohEndpointOptions, addrs: readonly string[]) {
  const { secretKey, relayMode = "default", alpns = [DEFAULT_ALPN] } = options;
  const builder = binding.Endpoint.builder();
  if (relayMode === "default") {
    builder.applyN0();
  } else if (relayMode === "disabled") {
    builder.applyMinimal();
    builder.relayMode(binding.RelayMode.disabled());
  } else if (Array.isArray(relayMode) && relayMode.length > 0) {
    for (const url of relayMode) checkRelayUrl(url);
    builder.applyMinimal();
    try {
      builder.relayMode(binding.RelayMode.customFromUrls([...relayMode]));
    } catch (e) {
      throw invalid(`endpoint: relayMode ${JSON.stringify(relayMode)}`, e);
    }
  } else {
    throw new IrohError(
      "INVALID_ARGUMENT",
      `endpoint: relayMode ${
        JSON.stringify(relayMode)
      }: expected "default", "disabled" or a non-empty list of relay URLs`,
    );
  }
  builder.secretKey(toArray(secretKey));
  builder.alpns(alpns.map(textToArray));
  for (const addr of addrs) {
    try {
      builder.bindAddr(addr);
    } catch (e) {
      throw invalid(`endpoint: bindAddr ${JSON.stringify(addr)}: expected host:port`, e);
    }
  }
  return builder;
}

/**
 * The address of the other IP family on the same port, which
 * {@link createEndpoint} binds too: `127.0.0.1:P` pairs with `[::1]:P`, any
 * other IPv4 host with `[::]:P`; `[::1]:P` with `127.0.0.1:P`, any other
 * IPv6 host with `0.0.0.0:P`. Undefined for port 0.
 *
 * Why: the binding always binds both families, the one not asked for on a
 * random port. A peer's Iroh may select the path over that family and send
 * its next connections there even when given the other address; after a
 * restart that port is gone, and the peer's connects time out while this
 * node's own connects to the peer work (docs/iroh-binding.md, "Sockets").
 * The same port on both families keeps every path a peer learned valid.
 */
export function companionBindAddr(bindAddr: string): string | undefined {
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d+)$/.exec(bindAddr);
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(bindAddr);
  const match = v4 ?? v6;
  if (match === null || Number(match[2]) === 0) return undefined;
  const port = Number(match[2]);
  if (v4) return v4[1] === "127.0.0.1" ? `[::1]:${port}` : `[::]:${port}`;
  return match[1] === "::1" ? `127.0.0.1:${port}` : `0.0.0.0:${port}`;
}

/** A bound endpoint. Close it with {@link close} (or `await using`). */
export class IrohEndpoint {
  /** The binding's endpoint, for calls this wrapper does not cover. */
  readonly raw: RawEndpoint;
  /** This node's endpoint id: its Ed25519 public key, lowercase hex. */
  readonly id: string;
  /** The protocols it accepts. */
  readonly alpns: readonly string[];
  /** What did not bind as asked but did not stop the endpoint (see {@link companionBindAddr}). */
  readonly warnings: readonly string[];
  #closing: Promise<void> | null = null;

  constructor(raw: RawEndpoint, alpns: readonly string[], warnings: readonly string[] = []) {
    this.raw = raw;
    this.id = raw.id().toString();
    this.alpns = [...alpns];
    this.warnings = [...warnings];
  }

  /** Where peers can reach this endpoint now (addresses change as the network does). */
  addr(): PeerAddr {
    return fromRawAddr(this.raw.addr());
  }

  /** A ticket (`"endpoint…"`) holding {@link addr}, for `cluster join` and tests. */
  ticket(): string {
    return binding.EndpointTicket.fromAddr(this.raw.addr()).toString();
  }

  /**
   * The local sockets (`ip:port`). Binding `127.0.0.1:0` also lists a
   * `[::]:port` socket; {@link addr} advertises only the requested family.
   */
  boundSockets(): string[] {
    return this.raw.boundSockets();
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#closing !== null || this.raw.isClosed();
  }

  /**
   * Dials a peer and completes the handshake. The peer's id is authenticated
   * (it must match the target's id). A server that refuses this endpoint's
   * id after the handshake is only noticed at the first stream operation.
   *
   * @throws {IrohError} `INVALID_ARGUMENT` (unparsable target), `TIMEOUT`
   * (after `timeoutMs`), `CONNECT_FAILED`, `ENDPOINT_CLOSED`.
   */
  async connect(
    peer: PeerTarget,
    options: { alpn?: string; timeoutMs?: number } = {},
  ): Promise<IrohConnection> {
    const { alpn = DEFAULT_ALPN, timeoutMs = DEFAULT_CONNECT_TIMEOUT_MS } = options;
    checkTimeout(timeoutMs, "connect");
    const addr = toRawAddr(peer);
    const remoteId = addr.id().toString();
    const operation = `connect to ${short(remoteId)}`;
    if (this.closed) {
      throw new IrohError("ENDPOINT_CLOSED", `${operation}: the endpoint is closed`, { remoteId });
    }
    const pending = this.raw.connect(addr, textToArray(alpn));
    try {
      const raw = await withTimeout(
        pending,
        timeoutMs,
        () =>
          new IrohError("TIMEOUT", `${operation}: no handshake within ${timeoutMs} ms`, {
            remoteId,
          }),
        (late) => late.close(BigInt(CloseCode.Normal), []),
      );
      return new IrohConnection(raw);
    } catch (e) {
      throw toIrohError(e, { operation, remoteId });
    }
  }

  /**
   * The next incoming connection attempt, before any handshake; `null` once
   * the endpoint is closed. Decide on each promptly (accept, refuse or
   * ignore): an undecided one holds server state until it times out.
   */
  async acceptIncoming(): Promise<IncomingConnection | null> {
    if (this.closed) return null;
    const raw = await this.raw.acceptNext();
    return raw === null ? null : new IncomingConnection(raw);
  }

  /**
   * Accepts connections until the endpoint closes, running handshakes
   * concurrently (at most `maxPendingHandshakes`; attempts beyond are refused
   * before any handshake work). Allowed connections go to `onConnection`;
   * refused and failed ones to `onRejected` (neither may throw: a throw is an
   * unhandled rejection). Resolves when the endpoint closes.
   */
  async acceptLoop(options: {
    allow: EndpointAllowlist;
    onConnection: (connection: IrohConnection) => void;
    onRejected?: (error: IrohError) => void;
    handshakeTimeoutMs?: number;
    maxPendingHandshakes?: number;
  }): Promise<void> {
    const {
      allow,
      onConnection,
      onRejected = () => {},
      handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
      maxPendingHandshakes = DEFAULT_MAX_PENDING_HANDSHAKES,
    } = options;
    let pending = 0;
    for (;;) {
      const incoming = await this.acceptIncoming();
      if (incoming === null) return;
      if (pending >= maxPendingHandshakes) {
        await incoming.refuse().catch(() => {});
        onRejected(
          new IrohError(
            "CONNECT_FAILED",
            `accept: refused: ${pending} handshakes pending (maxPendingHandshakes ${maxPendingHandshakes})`,
          ),
        );
        continue;
      }
      pending++;
      void (async () => {
        let connection: IrohConnection;
        try {
          connection = await incoming.accept({ allow, timeoutMs: handshakeTimeoutMs });
        } catch (e) {
          onRejected(toIrohError(e, { operation: "accept" }));
          return;
        } finally {
          pending--;
        }
        onConnection(connection);
      })();
    }
  }

  /**
   * Closes every connection (peers see `CONNECTION_CLOSED` at once, code 0),
   * fails pending operations, makes {@link acceptIncoming} return `null`, and
   * releases the sockets. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.raw.close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** A connection attempt that has not started its handshake. */
export class IncomingConnection {
  /** The binding's incoming attempt, for calls this wrapper does not cover. */
  readonly raw: RawIncoming;

  constructor(raw: RawIncoming) {
    this.raw = raw;
  }

  /** Where it comes from (and, through a relay, the claimed endpoint id). */
  async remoteAddr(): Promise<IncomingAddr> {
    return fromRawIncomingAddr(await this.raw.remoteAddr());
  }

  /**
   * Runs the handshake and returns the connection if the remote id is
   * allowed. Refuses before the handshake when a relay already names a
   * disallowed id, else closes with {@link CloseCode.NotAllowed} right after
   * it, before any stream is accepted. `allow` is required (deny by default);
   * pass `() => true` to accept any endpoint deliberately.
   *
   * @throws {IrohError} `NOT_ALLOWED` (the connection is already refused or
   * closed), `TIMEOUT` (after `timeoutMs`), `CONNECT_FAILED`.
   */
  async accept(
    options: { allow: EndpointAllowlist; timeoutMs?: number },
  ): Promise<IrohConnection> {
    const { allow, timeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS } = options;
    checkTimeout(timeoutMs, "accept");
    const from = await this.remoteAddr();
    if (preHandshakeVerdict(from, allow) === "refuse") {
      await this.raw.refuse();
      throw new IrohError(
        "NOT_ALLOWED",
        `accept: endpoint ${from.endpointId} (via relay ${from.addr}) is not allowed; refused before the handshake`,
        { remoteId: from.endpointId },
      );
    }
    let connection: IrohConnection;
    try {
      const accepting = await this.raw.accept();
      const raw = await withTimeout(
        accepting.connect(),
        timeoutMs,
        () => new IrohError("TIMEOUT", `accept: no handshake within ${timeoutMs} ms`),
        (late) => late.close(BigInt(CloseCode.Normal), []),
      );
      connection = new IrohConnection(raw);
    } catch (e) {
      throw toIrohError(e, { operation: "accept" });
    }
    if (!isAllowed(allow, connection.remoteId)) {
      connection.close(CloseCode.NotAllowed, "endpoint not allowed");
      throw new IrohError(
        "NOT_ALLOWED",
        `accept: endpoint ${connection.remoteId} is not allowed; closed after the handshake with code ${CloseCode.NotAllowed}`,
        { remoteId: connection.remoteId, closeCode: CloseCode.NotAllowed },
      );
    }
    return connection;
  }

  /** Refuses without a handshake; the client's `connect()` fails at once. */
  async refuse(): Promise<void> {
    await this.raw.refuse();
  }

  /** Drops the attempt silently; the client's `connect()` times out. */
  async ignore(): Promise<void> {
    await this.raw.ignore();
  }
}

/** True if `endpointId` (lowercase hex) is on the allowlist. */
export function isAllowed(allow: EndpointAllowlist, endpointId: string): boolean {
  return typeof allow === "function" ? allow(endpointId) : allow.has(endpointId);
}

/**
 * The decision possible before a handshake: `"refuse"` only when a relay
 * names a disallowed id; otherwise `"handshake"` (the id is checked after).
 */
export function preHandshakeVerdict(
  from: IncomingAddr,
  allow: EndpointAllowlist,
): "refuse" | "handshake" {
  if (from.kind === "relay" && from.endpointId !== undefined) {
    return isAllowed(allow, from.endpointId) ? "handshake" : "refuse";
  }
  return "handshake";
}

/**
 * An endpoint id in canonical form (lowercase hex), from hex or any form the
 * binding parses.
 *
 * @throws {IrohError} `INVALID_ARGUMENT`.
 */
export function normalizeEndpointId(id: string): string {
  if (ENDPOINT_ID_HEX.test(id)) return id.toLowerCase();
  try {
    return binding.EndpointId.fromString(id).toString();
  } catch (e) {
    throw invalid(`endpoint id ${JSON.stringify(id)}: expected 64 hex characters`, e);
  }
}

/** Decodes a ticket without dialling. */
export function parseTicket(ticket: string): PeerAddr {
  try {
    return fromRawAddr(binding.EndpointTicket.fromString(ticket).endpointAddr());
  } catch (e) {
    throw invalid(
      `ticket ${JSON.stringify(abbreviate(ticket))}: expected an "endpoint…" ticket`,
      e,
    );
  }
}

/** Encodes a {@link PeerAddr} as a ticket. */
export function toTicket(addr: PeerAddr): string {
  return binding.EndpointTicket.fromAddr(toRawAddr(addr)).toString();
}

type RawEndpointAddr = ReturnType<RawEndpoint["addr"]>;

function toRawAddr(peer: PeerTarget): RawEndpointAddr {
  if (typeof peer === "string") {
    if (peer.startsWith("endpoint")) {
      try {
        return binding.EndpointTicket.fromString(peer).endpointAddr();
      } catch (e) {
        throw invalid(
          `ticket ${JSON.stringify(abbreviate(peer))}: expected an "endpoint…" ticket`,
          e,
        );
      }
    }
    return new binding.EndpointAddr(idOf(peer), null, []);
  }
  for (const address of peer.directAddresses) {
    if (!/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.%\w]+\]):\d{1,5}$/.test(address)) {
      throw new IrohError(
        "INVALID_ARGUMENT",
        `peer ${short(peer.id)}: address ${JSON.stringify(address)}: expected ip:port`,
      );
    }
  }
  if (peer.relayUrl !== undefined) checkRelayUrl(peer.relayUrl);
  return new binding.EndpointAddr(idOf(peer.id), peer.relayUrl ?? null, [...peer.directAddresses]);
}

function idOf(id: string) {
  try {
    return binding.EndpointId.fromString(ENDPOINT_ID_HEX.test(id) ? id.toLowerCase() : id);
  } catch (e) {
    throw invalid(`endpoint id ${JSON.stringify(id)}: expected 64 hex characters or a ticket`, e);
  }
}

function fromRawAddr(raw: RawEndpointAddr): PeerAddr {
  const relayUrl = raw.relayUrl();
  const base = { id: raw.id().toString(), directAddresses: raw.directAddresses() };
  return relayUrl === null ? base : { ...base, relayUrl };
}

function fromRawIncomingAddr(raw: RawIncomingAddr): IncomingAddr {
  const kind = raw.kind === "ip" || raw.kind === "relay" ? raw.kind : "custom";
  return { kind, addr: raw.addr, endpointId: raw.endpointId };
}

function checkRelayUrl(url: string): void {
  let parsed: URL | null = null;
  try {
    parsed = new URL(url);
  } catch {
    // reported below
  }
  if (parsed === null || (parsed.protocol !== "https:" && parsed.protocol !== "http:")) {
    throw new IrohError(
      "INVALID_ARGUMENT",
      `relay URL ${JSON.stringify(url)}: expected an http:// or https:// URL`,
    );
  }
}

/**
 * Races `promise` against a timer. If the timer wins, a later success is
 * handed to `onLate` so the resource is released rather than leaked (the
 * binding cannot cancel a handshake).
 */
async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  timeoutError: () => Error,
  onLate: (value: T) => void,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(timeoutError());
    }, timeoutMs);
  });
  promise.then((value) => {
    if (timedOut) onLate(value);
  }, () => {});
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function checkTimeout(timeoutMs: number, operation: string): void {
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new IrohError(
      "INVALID_ARGUMENT",
      `${operation}: timeoutMs ${timeoutMs}: expected a positive number of milliseconds`,
    );
  }
}

function invalid(message: string, cause: unknown): IrohError {
  const detail = cause instanceof Error || typeof cause === "string"
    ? `: ${toIrohError(cause, { operation: "parse" }).message.replace(/^parse: /, "")}`
    : "";
  return new IrohError("INVALID_ARGUMENT", `${message}${detail}`, { cause });
}

function abbreviate(text: string): string {
  return text.length > 24 ? `${text.slice(0, 24)}…` : text;
}

function describe(value: unknown): string {
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  return value === null ? "null" : typeof value;
}
