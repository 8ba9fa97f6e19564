/**
 * The gRPC side of the service framework, client half: one grpc-js channel
 * per peer address, shared by every caller, moving request and response
 * bytes for the typed clients of `rpc/client.ts`, and Raft messages.
 *
 * Owns: {@link GrpcChannel}, {@link GrpcRpcClient}. Imports `@grpc/grpc-js`,
 * `rpc/` (client interface, deadline clamp, errors, limits, services), the Raft codec, the
 * generated Raft envelope and `util/address.ts` (pure host:port parsing).
 *
 * Failures come back as {@link RpcError}s with the server's code and message;
 * connection failures are UNAVAILABLE (grpc-js's own code for them), so
 * {@link isTransportFailure} is true for those and only those. grpc-js
 * reconnects by itself with backoff; a call made while the peer is down
 * fails at once with UNAVAILABLE, unless it sets `waitForReady`: then it
 * waits for the connection until its deadline.
 *
 * Raft messages are queued per priority class, as on Iroh: each class sends
 * one RaftService.Send at a time, carrying every message queued behind it
 * (up to a batch limit), so messages of one class arrive in order and a busy
 * class batches by itself; a vote does not queue behind a snapshot chunk.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import type { Socket } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  encodeRaftMessage,
  type RaftMessage,
  raftMessageKindName,
  raftMessagePriority,
} from "../../codec/raft.ts";
import { Priority } from "../../codec/frame.ts";
import { isLoopback, parseHostPort } from "../../util/address.ts";
import { clientDeadlineMs } from "../../rpc/call.ts";
import type { CallTransport } from "../../rpc/client.ts";
import { Code, RpcError } from "../../rpc/errors.ts";
import { RaftAckSchema, RaftEnvelopeSchema } from "../../rpc/gen/blixard/v1/raft_pb.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../../rpc/limits.ts";
import type { CallOptions, MethodInfo } from "../../rpc/services.ts";
import { fromServiceError, GrpcTransportError } from "./errors.ts";
import { channelCredentials, type GrpcClientTls } from "./tls.ts";
import { passThrough, RAFT_SEND_PATH, toBuffer } from "./wire.ts";

export type { GrpcClientTls } from "./tls.ts";

/** Options of a {@link GrpcChannel}. */
export interface GrpcChannelOptions {
  /** The peer's `host:port`. */
  readonly target: string;
  readonly tls?: GrpcClientTls;
  /** Call a non-loopback address in plaintext (config `grpc.allow_insecure`). Default false. */
  readonly allowInsecure?: boolean;
  readonly limits?: Partial<RpcLimits>;
  /** Deadline of one RaftService.Send, ms. Default 5,000. */
  readonly raftDeadlineMs?: number;
  /** Most Raft messages one Send carries. Default 64. */
  readonly raftBatchMessages?: number;
  /** Raft messages waiting per priority class; more are refused. Default 4,096. */
  readonly raftQueueMessages?: number;
  /**
   * Reconnection after a lost or refused connection, as on Iroh: first wait
   * `initialMs` (default 100), growing to `maxMs` (default 10,000). grpc-js's
   * own defaults (1 s to 120 s) would leave a restarted peer unused for long.
   */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
}

/** One Raft message waiting for its Send. */
interface QueuedRaft {
  readonly bytes: Uint8Array;
  readonly label: string;
  resolve(): void;
  reject(error: RpcError): void;
}

/** The queue of one priority class. */
interface RaftLane {
  readonly priority: Priority;
  readonly queue: QueuedRaft[];
  busy: boolean;
}

/** Bytes a repeated `bytes` element of `length` takes in the envelope: tag, length, data. */
function envelopeBytes(length: number): number {
  let varint = 1;
  for (let n = length; n >= 0x80; n = Math.floor(n / 0x80)) varint++;
  return 1 + varint + length;
}

/**
 * Calls to one peer over one shared grpc-js channel. Implements
 * {@link CallTransport}, so a typed client runs over it.
 *
 * @example
 * ```ts ignore
 * const channel = new GrpcChannel({ target: "10.0.0.2:7400", tls: { caFile: "/etc/blixard/ca.pem" } });
 * const health = createClient(Health, channel);
 * const res = await health.ping({ payload: new Uint8Array(8) }, { deadlineMs: 500 });
 * channel.close();
 * ```
 */
export class GrpcChannel implements CallTransport {
  /** The peer's `host:port`. */
  readonly target: string;
  #client: grpc.Client;
  /** Opens the connection that carries Raft snapshot chunks, on first use. */
  readonly #newClient: () => grpc.Client;
  #bulk: grpc.Client | null = null;
  readonly #limits: RpcLimits;
  readonly #raftDeadlineMs: number;
  readonly #raftBatchMessages: number;
  readonly #raftQueueMessages: number;
  readonly #lanes = new Map<number, RaftLane>();
  /** Calls under way and the client each runs on, so close() can end them. */
  readonly #calls = new Map<grpc.Call, grpc.Client>();
  /** The TCP (or TLS) sockets of this channel's connections, so close() can end them. */
  readonly #sockets = new Set<Socket>();
  #closed = false;

  constructor(options: GrpcChannelOptions) {
    this.target = options.target;
    this.#limits = { ...DEFAULT_RPC_LIMITS, ...options.limits };
    this.#raftDeadlineMs = options.raftDeadlineMs ?? 5_000;
    this.#raftBatchMessages = options.raftBatchMessages ?? 64;
    this.#raftQueueMessages = options.raftQueueMessages ?? 4_096;
    const address = parseHostPort(options.target);
    if (!address || address.port === 0) {
      throw new GrpcTransportError(
        "INVALID_ARGUMENT",
        `grpc target "${options.target}": expected "host:port" with a port from 1 to 65535`,
      );
    }
    const channelOptions: grpc.ChannelOptions = {
      "grpc.max_receive_message_length": this.#limits.maxFrameBytes,
      "grpc.max_send_message_length": this.#limits.maxFrameBytes,
      // One channel, one connection: grpc-js would otherwise share connections
      // between channels with equal options, behind the server's per-connection limits.
      "grpc.use_local_subchannel_pool": 1,
      "grpc.initial_reconnect_backoff_ms": options.backoff?.initialMs ?? 100,
      "grpc.max_reconnect_backoff_ms": options.backoff?.maxMs ?? 10_000,
    };
    let credentials: grpc.ChannelCredentials;
    if (options.tls) {
      credentials = channelCredentials(options.tls, address);
      if (options.tls.serverName !== undefined) {
        channelOptions["grpc.ssl_target_name_override"] = options.tls.serverName;
        channelOptions["grpc.default_authority"] = options.tls.serverName;
      }
    } else if (isLoopback(address) || options.allowInsecure) {
      credentials = grpc.credentials.createInsecure();
    } else {
      throw new GrpcTransportError(
        "INSECURE",
        `grpc target "${options.target}": refusing to call a non-loopback address in plaintext. ` +
          "Either give TLS options (grpc.tls.ca_file, and cert_file and key_file for mutual TLS), " +
          "or set allow_insecure = true in [grpc] to call it in plaintext on purpose.",
      );
    }
    const tracking = new SocketTrackingCredentials(credentials, this.#sockets);
    this.#newClient = () => new grpc.Client(options.target, tracking, channelOptions);
    this.#client = this.#newClient();
  }

  /** True while the channel has a ready connection. */
  get connected(): boolean {
    return this.#client.getChannel().getConnectivityState(false) ===
      grpc.connectivityState.READY;
  }

  /** True while the connection is down and the next attempt waits out the reconnect backoff. */
  get backingOff(): boolean {
    return this.#client.getChannel().getConnectivityState(false) ===
      grpc.connectivityState.TRANSIENT_FAILURE;
  }

  /**
   * Connects again at once if the connection is down and waiting out
   * grpc-js's reconnect backoff, which grows to `backoff.maxMs` while the
   * peer is away. Called when the peer has just been heard from (it sent us
   * a Raft message, so it is up again): without it, a restarted peer waits
   * for that backoff (up to 10 s) before this node reaches it. Does nothing
   * while the connection is ready or being made, or while a call waits on
   * the failing connection (one sent with `waitForReady`: grpc-js would fail
   * it when that connection closes); the next message heard tries again.
   *
   * @returns true when a new connection is being made.
   */
  reconnectNow(): boolean {
    if (this.#closed) return false;
    if (this.#bulk && this.#retireIfFailing(this.#bulk)) this.#bulk = null; // made again on first use
    if (!this.#retireIfFailing(this.#client)) return false;
    this.#client = this.#newClient();
    this.#client.getChannel().getConnectivityState(true); // connect now, not on the first call
    return true;
  }

  /** Closes `client` if it is failing with no call on it (see {@link reconnectNow}). */
  #retireIfFailing(client: grpc.Client): boolean {
    const state = client.getChannel().getConnectivityState(false);
    if (state !== grpc.connectivityState.TRANSIENT_FAILURE) return false;
    for (const owner of this.#calls.values()) if (owner === client) return false;
    // A failing channel holds no connection, so closing it sends no GOAWAY (see close()).
    client.close();
    return true;
  }

  /** Calls waiting for an answer now (Raft sends included). */
  get inflight(): number {
    return this.#calls.size;
  }

  async unary(
    method: MethodInfo,
    request: Uint8Array,
    options: CallOptions = {},
  ): Promise<Uint8Array> {
    return await this.#unary(
      this.#client,
      method.path,
      method.label,
      request,
      clientDeadlineMs(options.deadlineMs, method, this.#limits),
      options.signal,
      options.waitForReady ?? false,
    );
  }

  async *serverStream(
    method: MethodInfo,
    request: Uint8Array,
    options: CallOptions = {},
  ): AsyncGenerator<Uint8Array, void, undefined> {
    const label = method.label;
    this.#checkOpen(label, options.signal);
    // No deadline unless the caller gives one: a stream without one (a watch)
    // runs until cancelled, on the server too, as on Iroh.
    const deadline = Date.now() + clientDeadlineMs(options.deadlineMs, method, this.#limits);
    const call = this.#client.makeServerStreamRequest<Uint8Array, Uint8Array>(
      method.path,
      toBuffer,
      passThrough,
      request,
      new grpc.Metadata({ waitForReady: options.waitForReady ?? false }),
      { deadline },
    );
    let cancelledByCaller = false;
    let ended = false;
    const onAbort = () => {
      cancelledByCaller = true;
      call.cancel();
    };
    options.signal?.addEventListener("abort", onAbort, { once: true });
    this.#calls.set(call, this.#client);
    try {
      for await (const item of call as AsyncIterable<Uint8Array>) yield item;
      ended = true;
    } catch (e) {
      ended = true;
      throw this.#error(e, label, cancelledByCaller);
    } finally {
      // The consumer stopped early (break, throw): tell the server to stop too.
      if (!ended) call.cancel();
      options.signal?.removeEventListener("abort", onAbort);
      this.#calls.delete(call);
    }
  }

  /**
   * Sends a Raft message in a RaftService.Send, batched with the others of
   * its priority class queued at the time. Resolves once the peer has queued
   * it for its Raft core; rejects with UNAVAILABLE (peer unreachable),
   * DEADLINE_EXCEEDED, or RESOURCE_EXHAUSTED (queue full here, or the peer
   * dropped it). Raft treats every rejection as a lost message.
   */
  async sendRaft(message: RaftMessage): Promise<void> {
    const label = `raft.${raftMessageKindName(message.kind)}`;
    if (this.#closed) {
      throw new RpcError(Code.UNAVAILABLE, `${label}: ${this.target}: client closed`);
    }
    const bytes = encodeRaftMessage(message);
    if (envelopeBytes(bytes.length) > this.#limits.maxFrameBytes) {
      throw new RpcError(
        Code.RESOURCE_EXHAUSTED,
        `${label}: ${bytes.length} bytes exceed max_frame_bytes ${this.#limits.maxFrameBytes}`,
      );
    }
    const priority = raftMessagePriority(message.kind);
    let lane = this.#lanes.get(priority);
    if (!lane) this.#lanes.set(priority, lane = { priority, queue: [], busy: false });
    if (lane.queue.length >= this.#raftQueueMessages) {
      throw new RpcError(
        Code.RESOURCE_EXHAUSTED,
        `${label}: ${this.#raftQueueMessages} Raft messages already queued for ${this.target}`,
      );
    }
    const queued = lane;
    await new Promise<void>((resolve, reject) => {
      queued.queue.push({ bytes, label, resolve, reject });
      this.#pump(queued);
    });
  }

  /**
   * Ends calls under way (UNAVAILABLE), refuses new ones, and closes the
   * connection. The connection ends at the TCP level, without the HTTP/2
   * GOAWAY that grpc-js would send: on a GOAWAY a Deno 2.9.6 peer can abort
   * inside nghttp2 (denoland/deno#36788), as the server side already avoids
   * (server.ts, `shutdown`). Seen when a node stopped or reloaded: its peers
   * died. The peer sees the connection end, which is UNAVAILABLE to it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const lane of this.#lanes.values()) {
      for (const m of lane.queue.splice(0)) {
        m.reject(new RpcError(Code.UNAVAILABLE, `${m.label}: ${this.target}: client closed`));
      }
    }
    for (const call of this.#calls.keys()) call.cancel();
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    this.#client.close();
    this.#bulk?.close();
  }

  #pump(lane: RaftLane): void {
    if (lane.busy || lane.queue.length === 0 || this.#closed) return;
    let bytes = 0;
    let n = 0;
    while (n < lane.queue.length && n < this.#raftBatchMessages) {
      const size = envelopeBytes(lane.queue[n]!.bytes.length);
      if (n > 0 && bytes + size > this.#limits.maxFrameBytes) break;
      bytes += size;
      n++;
    }
    const batch = lane.queue.splice(0, n);
    lane.busy = true;
    const envelope = toBinary(
      RaftEnvelopeSchema,
      create(RaftEnvelopeSchema, { messages: batch.map((m) => m.bytes) }),
    );
    // Under Deno's node:http2 a large message holds back the streams opened
    // after it on the same connection until it is written, so snapshot
    // chunks get a connection of their own and never delay a vote.
    const client = lane.priority === Priority.Snapshot
      ? this.#bulk ??= this.#newClient()
      : this.#client;
    this.#unary(
      client,
      RAFT_SEND_PATH,
      "raft.Send",
      envelope,
      this.#raftDeadlineMs,
      undefined,
      false,
    )
      .then(
        (ack) => {
          let accepted: number;
          try {
            accepted = fromBinary(RaftAckSchema, ack).accepted;
          } catch (e) {
            for (const m of batch) {
              m.reject(
                new RpcError(
                  Code.INTERNAL,
                  `${m.label}: ${this.target} answered a malformed RaftAck: ${
                    (e as Error).message
                  }`,
                ),
              );
            }
            return;
          }
          batch.forEach((m, i) => {
            if (i < accepted) m.resolve();
            else {
              m.reject(
                new RpcError(
                  Code.RESOURCE_EXHAUSTED,
                  `${m.label}: ${this.target} dropped it (accepted ${accepted} of ${batch.length})`,
                ),
              );
            }
          });
        },
        (e: RpcError) => {
          for (const m of batch) {
            m.reject(new RpcError(e.code, `${m.label}: ${e.message}`, { cause: e }));
          }
        },
      ).finally(() => {
        lane.busy = false;
        this.#pump(lane);
      });
  }

  #unary(
    client: grpc.Client,
    path: string,
    label: string,
    request: Uint8Array,
    deadlineMs: number,
    signal: AbortSignal | undefined,
    waitForReady: boolean,
  ): Promise<Uint8Array> {
    try {
      this.#checkOpen(label, signal);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      let cancelledByCaller = false;
      const onAbort = () => {
        cancelledByCaller = true;
        call.cancel();
      };
      const call = client.makeUnaryRequest<Uint8Array, Uint8Array>(
        path,
        toBuffer,
        passThrough,
        request,
        // waitForReady: wait (within the deadline) for a connection that is
        // down or being made, instead of failing at once with UNAVAILABLE.
        new grpc.Metadata({ waitForReady }),
        { deadline: Date.now() + deadlineMs },
        (error, response) => {
          signal?.removeEventListener("abort", onAbort);
          this.#calls.delete(call);
          if (error) reject(this.#error(error, label, cancelledByCaller));
          else resolve(response!);
        },
      );
      this.#calls.set(call, client);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  #checkOpen(label: string, signal: AbortSignal | undefined): void {
    if (this.#closed) {
      throw new RpcError(Code.UNAVAILABLE, `${label}: ${this.target}: client closed`);
    }
    if (signal?.aborted) throw new RpcError(Code.CANCELLED, `${label}: cancelled by the caller`);
  }

  #error(error: unknown, label: string, cancelledByCaller: boolean): RpcError {
    if (cancelledByCaller) {
      return new RpcError(Code.CANCELLED, `${label}: cancelled by the caller`, { cause: error });
    }
    if (this.#closed) {
      return new RpcError(Code.UNAVAILABLE, `${label}: ${this.target}: client closed`, {
        cause: error,
      });
    }
    return fromServiceError(error, label, this.target);
  }
}

/**
 * gRPC channels to peers, one per address, created on first use and shared
 * by every caller after.
 *
 * @example
 * ```ts ignore
 * const client = new GrpcRpcClient({ tls: { caFile, certFile, keyFile } });
 * const status = createClient(Status, client.peer("10.0.0.2:7400"));
 * ```
 */
export class GrpcRpcClient {
  readonly #channels = new Map<string, GrpcChannel>();
  readonly #options: Omit<GrpcChannelOptions, "target">;
  #closed = false;

  constructor(options: Omit<GrpcChannelOptions, "target"> = {}) {
    this.#options = options;
  }

  /** The channel to `target` (`host:port`). */
  peer(target: string): GrpcChannel {
    if (this.#closed) throw new RpcError(Code.UNAVAILABLE, "grpc client is closed");
    let channel = this.#channels.get(target);
    if (!channel) {
      channel = new GrpcChannel({ ...this.#options, target });
      this.#channels.set(target, channel);
    }
    return channel;
  }

  /**
   * The peer at `target` has just been heard from: if the channel to it is
   * waiting out a reconnect backoff, it connects now
   * ({@link GrpcChannel.reconnectNow}). Opens no channel that is not open.
   */
  heardFrom(target: string): void {
    this.#channels.get(target)?.reconnectNow();
  }

  /** Channels with a ready connection now. */
  get connectedCount(): number {
    let n = 0;
    for (const c of this.#channels.values()) if (c.connected) n++;
    return n;
  }

  /** Closes every channel; their calls fail with UNAVAILABLE. */
  close(): void {
    this.#closed = true;
    for (const c of this.#channels.values()) c.close();
    this.#channels.clear();
  }
}

type SecureConnector = ReturnType<grpc.ChannelCredentials["_createSecureConnector"]>;

/**
 * `inner` (insecure or TLS credentials) that also records, in `sockets`, the
 * sockets grpc-js connects through, until each closes: grpc-js keeps them to
 * itself, and {@link GrpcChannel.close} must end them without a GOAWAY.
 */
class SocketTrackingCredentials extends grpc.ChannelCredentials {
  readonly #inner: grpc.ChannelCredentials;
  readonly #sockets: Set<Socket>;

  constructor(inner: grpc.ChannelCredentials, sockets: Set<Socket>) {
    super();
    this.#inner = inner;
    this.#sockets = sockets;
  }

  override _isSecure(): boolean {
    return this.#inner._isSecure();
  }

  override _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  override _createSecureConnector(
    ...args: Parameters<grpc.ChannelCredentials["_createSecureConnector"]>
  ): SecureConnector {
    const connector = this.#inner._createSecureConnector(...args);
    const track = (socket: Socket) => {
      if (this.#sockets.has(socket)) return;
      this.#sockets.add(socket);
      socket.once("close", () => this.#sockets.delete(socket));
    };
    return {
      connect: async (socket) => {
        track(socket);
        const result = await connector.connect(socket);
        track(result.socket);
        return result;
      },
      waitForReady: () => connector.waitForReady(),
      getCallCredentials: () => connector.getCallCredentials(),
      destroy: () => connector.destroy(),
    };
  }
}
