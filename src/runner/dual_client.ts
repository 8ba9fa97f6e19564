/**
 * Calls to peers over whichever transport the dual runner's rules choose,
 * per call, with one retry over the other transport after a transport
 * failure.
 *
 * Owns: {@link DualClient}, {@link DualPeer}. Imports `routing.ts`, `rpc/`
 * and the generated Status messages; the concrete transports come in as
 * factories, so this file knows neither grpc-js nor the Iroh binding.
 *
 * What a peer serves is learned from its Status (GetClusterStatus lists each
 * member's transports per service): at first from the peer's configured
 * addresses, then refreshed after any transport failure, so a client follows
 * a node whose config moved a service.
 *
 * @module
 */

import { type CallTransport, createClient } from "../rpc/client.ts";
import { Code, isTransportFailure, RpcError, toRpcError } from "../rpc/errors.ts";
import { Transport } from "../rpc/gen/blixard/v1/common_pb.ts";
import { serviceNameOf } from "../names.ts";
import { type CallOptions, type MethodInfo, Status } from "../rpc/services.ts";
import {
  type CallerPolicy,
  chooseTransport,
  NoCommonTransportError,
  retryTransport,
  type RoutedService,
  type TransportName,
} from "./routing.ts";

/** How to reach one peer. */
export interface PeerAddress {
  /** The peer's node id, to find it in Status; 0n when unknown (an operator dialling a ticket). */
  readonly nodeId: bigint;
  /** Iroh ticket, or endpoint id, when the peer may serve Iroh. */
  readonly iroh?: string;
  /** `host:port` of its gRPC listener, when it may serve gRPC. */
  readonly grpc?: string;
}

/** Transport clients this node can call over; absent ones it cannot. */
export interface TransportClients {
  readonly iroh?: (peer: PeerAddress) => CallTransport;
  readonly grpc?: (peer: PeerAddress) => CallTransport;
}

/** The caller's side of the rules, for one service. */
export type PolicyOf = (service: RoutedService) => CallerPolicy;

/** Counters of a dual client, for tests and metrics. */
export interface DualClientStats {
  /** Calls retried over the other transport, by `from->to`. */
  readonly retries: Map<string, number>;
  /** Calls per transport. */
  readonly calls: Map<TransportName, number>;
}

/** Options of a {@link DualClient}. */
export interface DualClientOptions {
  readonly policy: PolicyOf;
  readonly fallbackToGrpc: boolean;
  readonly transports: TransportClients;
  /** Told of every retry (for the fallback metric). */
  readonly onRetry?: (service: RoutedService, from: TransportName, to: TransportName) => void;
  /**
   * Told how each attempt of a call ended (for metrics): over which
   * transport, with which status code, after how long (for a stream: its
   * whole life).
   */
  readonly onCall?: (
    method: MethodInfo,
    transport: TransportName,
    code: Code,
    seconds: number,
  ) => void;
}

/** Calls to peers over the transports the rules choose. */
export class DualClient {
  #options: DualClientOptions;
  readonly #peers = new Map<string, DualPeer>();
  readonly stats: DualClientStats = { retries: new Map(), calls: new Map() };

  constructor(options: DualClientOptions) {
    this.#options = options;
  }

  /** The options in force (replaced on reload). */
  get options(): DualClientOptions {
    return this.#options;
  }

  /** New policy, fallback or transports after a config reload; peers keep what they learned. */
  update(options: DualClientOptions): void {
    this.#options = options;
  }

  /** The client of one peer, shared by callers. */
  peer(address: PeerAddress): DualPeer {
    const key = `${address.nodeId}|${address.iroh ?? ""}|${address.grpc ?? ""}`;
    let peer = this.#peers.get(key);
    if (!peer) {
      peer = new DualPeer(address, this);
      this.#peers.set(key, peer);
    }
    return peer;
  }

  /** @internal */
  countCall(transport: TransportName): void {
    this.stats.calls.set(transport, (this.stats.calls.get(transport) ?? 0) + 1);
  }

  /** @internal Reports an attempt that began at `startedAt` (`performance.now()`) and ended with `error` (none: OK). */
  ended(method: MethodInfo, transport: TransportName, startedAt: number, error?: unknown): void {
    const onCall = this.#options.onCall;
    if (!onCall) return;
    const code = error === undefined ? Code.OK : toRpcError(error).code as Code;
    onCall(method, transport, code, (performance.now() - startedAt) / 1000);
  }

  /** @internal */
  countRetry(service: RoutedService, from: TransportName, to: TransportName): void {
    const key = `${from}->${to}`;
    this.stats.retries.set(key, (this.stats.retries.get(key) ?? 0) + 1);
    this.#options.onRetry?.(service, from, to);
  }
}

/** One peer, over both transports. Implements {@link CallTransport}. */
export class DualPeer implements CallTransport {
  readonly address: PeerAddress;
  readonly #client: DualClient;
  /** What the peer serves per service, from its Status; null until learned. */
  #serving: Map<RoutedService, TransportName[]> | null = null;
  #refreshing: Promise<void> | null = null;
  readonly #channels = new Map<TransportName, CallTransport>();

  constructor(address: PeerAddress, client: DualClient) {
    this.address = address;
    this.#client = client;
  }

  /** What the peer is believed to serve `service` on. */
  servingOf(service: RoutedService): TransportName[] {
    const learned = this.#serving?.get(service);
    if (learned) return learned;
    const guess: TransportName[] = [];
    if (this.address.grpc) guess.push("grpc");
    if (this.address.iroh) guess.push("iroh");
    return guess;
  }

  /** The transport the next call for `service` would use (throws when there is none). */
  route(service: RoutedService): TransportName {
    return this.#choose(service);
  }

  unary(method: MethodInfo, request: Uint8Array, options?: CallOptions): Promise<Uint8Array> {
    return this.#withRetry(
      method,
      (channel, retry) =>
        channel.unary(method, request, retry ? { ...options, waitForReady: true } : options),
    );
  }

  async *serverStream(
    method: MethodInfo,
    request: Uint8Array,
    options?: CallOptions,
  ): AsyncGenerator<Uint8Array, void, undefined> {
    const service = serviceOf(method);
    let transport = this.#choose(service);
    for (let attempt = 0;; attempt++) {
      let yielded = false;
      const startedAt = performance.now();
      let reported = false;
      const report = (error?: unknown) => {
        reported = true;
        this.#client.ended(method, transport, startedAt, error);
      };
      try {
        this.#client.countCall(transport);
        const opts = attempt > 0 ? { ...options, waitForReady: true } : options;
        for await (const item of this.#channel(transport).serverStream(method, request, opts)) {
          yielded = true;
          yield item;
        }
        report();
        return;
      } catch (e) {
        report(e);
        // Once items were delivered the stream cannot be replayed elsewhere.
        const next = yielded || attempt > 0 ? null : await this.#retryAfter(service, transport, e);
        if (next === null) throw e;
        transport = next;
      } finally {
        // The consumer stopped reading: the stream was cancelled on its side.
        if (!reported) {
          report(new RpcError(Code.CANCELLED, `${method.label}: stopped by the caller`));
        }
      }
    }
  }

  /** Re-reads what the peer serves from its Status. Failures leave the old view. */
  refresh(): Promise<void> {
    this.#refreshing ??= this.#refresh().finally(() => this.#refreshing = null);
    return this.#refreshing;
  }

  async #refresh(): Promise<void> {
    // Ask over every transport both sides might share, the usual one first.
    const caller = this.#client.options.policy("status").transports;
    const candidates = (["grpc", "iroh"] as const).filter((t) =>
      caller.includes(t) && (t === "grpc" ? this.address.grpc : this.address.iroh)
    ).sort((a) => a === this.#safeChoose("status") ? -1 : 1);
    for (const transport of candidates) {
      const status = createClient(Status, {
        unary: (method, bytes, options) => this.#channel(transport).unary(method, bytes, options),
        serverStream: () => {
          throw new Error("unused");
        },
      });
      try {
        const res = await status.getClusterStatus({}, { deadlineMs: 2000 });
        const self = res.members.find((m) =>
          this.address.nodeId === 0n ? m.nodeId === res.nodeId : m.nodeId === this.address.nodeId
        );
        if (!self) return;
        const serving = new Map<RoutedService, TransportName[]>();
        for (const s of self.services) {
          const name = serviceNameOf(s.service);
          if (!name) continue;
          serving.set(
            name,
            s.transports.flatMap((t) =>
              t === Transport.GRPC
                ? ["grpc" as const]
                : t === Transport.IROH
                ? ["iroh" as const]
                : []
            ),
          );
        }
        this.#serving = serving;
        return;
      } catch {
        // Try the other transport; if none answers, keep the old view.
      }
    }
  }

  #safeChoose(service: RoutedService): TransportName | null {
    try {
      return this.#choose(service);
    } catch {
      return null;
    }
  }

  async #withRetry<T>(
    method: MethodInfo,
    call: (channel: CallTransport, retry: boolean) => Promise<T>,
  ): Promise<T> {
    const service = serviceOf(method);
    const transport = this.#choose(service);
    try {
      return await this.#attempt(method, transport, () => call(this.#channel(transport), false));
    } catch (e) {
      const next = await this.#retryAfter(service, transport, e);
      if (next === null) throw e;
      // The last transport left: wait for its connection rather than fail fast.
      return await this.#attempt(method, next, () => call(this.#channel(next), true));
    }
  }

  /** One attempt over `transport`, counted and reported. */
  async #attempt<T>(
    method: MethodInfo,
    transport: TransportName,
    run: () => Promise<T>,
  ): Promise<T> {
    this.#client.countCall(transport);
    const startedAt = performance.now();
    try {
      const result = await run();
      this.#client.ended(method, transport, startedAt);
      return result;
    } catch (e) {
      this.#client.ended(method, transport, startedAt, e);
      throw e;
    }
  }

  /** After a failure over `failed`: the transport to retry on, or null (then rethrow). */
  async #retryAfter(
    service: RoutedService,
    failed: TransportName,
    error: unknown,
  ): Promise<TransportName | null> {
    if (!isTransportFailure(error)) return null;
    // The peer may have moved the service: learn before choosing.
    await this.refresh();
    const { policy, fallbackToGrpc } = this.#client.options;
    const next = retryTransport(
      failed,
      policy(service),
      { transports: this.servingOf(service) },
      fallbackToGrpc,
    );
    if (next === null) return null;
    this.#client.countRetry(service, failed, next);
    return next;
  }

  #choose(service: RoutedService): TransportName {
    try {
      return chooseTransport(
        service,
        this.#client.options.policy(service),
        { transports: this.servingOf(service) },
        this.address.nodeId === 0n ? "the node" : `node ${this.address.nodeId}`,
      );
    } catch (e) {
      if (e instanceof NoCommonTransportError) {
        throw new RpcError(Code.FAILED_PRECONDITION, e.message);
      }
      throw e;
    }
  }

  #channel(transport: TransportName): CallTransport {
    let channel = this.#channels.get(transport);
    if (!channel) {
      const make = this.#client.options.transports[transport];
      if (!make) {
        throw new RpcError(
          Code.FAILED_PRECONDITION,
          `this node cannot call over ${transport} in its current mode`,
        );
      }
      channel = make(this.address);
      this.#channels.set(transport, channel);
    }
    return channel;
  }
}

function serviceOf(method: MethodInfo): RoutedService {
  return method.service.name;
}
