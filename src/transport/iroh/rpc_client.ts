/**
 * The Iroh side of the service framework, client half: one long-lived
 * connection per peer, shared by every caller, with one stream per priority
 * class and calls multiplexed on it by request id.
 *
 * Owns: {@link IrohRpcClient}, {@link PeerChannel}. Imports the codec,
 * `rpc/` and this folder's endpoint and stream wrappers.
 *
 * Connection life: opened on first use; when lost, every call waiting on it
 * fails at once with UNAVAILABLE (never a hang), and the channel reconnects
 * by itself with exponential backoff and jitter while it is in use. A call
 * that arrives during backoff waits for the next attempt if that comes
 * before its deadline, else fails at once saying when the next attempt is.
 *
 * What a connection queues for a peer that does not read is bounded by
 * `maxConnectionBufferBytes`, as on the server: past half of it new calls and
 * Raft messages to that peer fail at once with UNAVAILABLE (so the dual
 * runner can take another transport), past all of it the connection is
 * dropped and made again.
 *
 * Liveness (docs/iroh-rpc.md): a connection sends a Heartbeat frame when it
 * has received nothing for `keepaliveIntervalMs`, and is declared dead after
 * `deadPeerTimeoutMs` without a byte from the peer.
 *
 * @module
 */

import type { Frame } from "../../codec/frame.ts";
import {
  appendRaftFrame,
  type RaftMessage,
  raftMessageKindName,
  raftMessagePriority,
} from "../../codec/raft.ts";
import { FLAG_LAST, FrameType, Priority } from "../../codec/frame.ts";
import { clientDeadlineMs } from "../../rpc/call.ts";
import type { CallTransport } from "../../rpc/client.ts";
import { Code, decodeStatus, RpcError } from "../../rpc/errors.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../../rpc/limits.ts";
import { OutboundBuffer } from "../../rpc/outbound.ts";
import type { CallOptions, MethodInfo } from "../../rpc/services.ts";
import type { IrohConnection } from "./connection.ts";
import {
  type IrohEndpoint,
  normalizeEndpointId,
  parseTicket,
  type PeerTarget,
} from "./endpoint.ts";
import { CloseCode, type CloseInfo, IrohError } from "./errors.ts";
import { FrameStream } from "./frame_stream.ts";

/** Reconnection timing. */
export interface BackoffOptions {
  /** Wait after the first failure, ms. Default 100. */
  readonly initialMs?: number;
  /** Longest wait, ms. Default 10,000. */
  readonly maxMs?: number;
  /** Each wait is spread by ± this fraction. Default 0.2. */
  readonly jitter?: number;
}

/** Options of an {@link IrohRpcClient}. */
export interface IrohRpcClientOptions {
  readonly endpoint: IrohEndpoint;
  readonly limits?: Partial<RpcLimits>;
  /** Longest wait for one connection attempt, ms. Default 5,000. */
  readonly connectTimeoutMs?: number;
  readonly backoff?: BackoffOptions;
  /** A channel unused this long stops reconnecting by itself, ms. Default 60,000. */
  readonly idleReconnectMs?: number;
  /**
   * While a peer is unreachable, fail calls at once instead of letting them
   * wait for the next reconnect attempt, and wait at most 250 ms for an
   * attempt under way. Set by the dual runner, which has another transport
   * to fall back on. Default false.
   */
  readonly failFastWhileDown?: boolean;
  /** Random source for jitter, in [0, 1). Default `Math.random`. */
  readonly random?: () => number;
  /** An idle connection sends a Heartbeat frame this often, ms. Default 1,000. */
  readonly keepaliveIntervalMs?: number;
  /**
   * A connection that has received nothing (not even a heartbeat answer) for
   * this long is declared dead and replaced, ms. Default 5,000. QUIC alone
   * would notice a killed peer only at its idle timeout.
   */
  readonly deadPeerTimeoutMs?: number;
  /** Told of each connection established, with how long dialling and the handshake took, ms. */
  readonly onConnected?: (ms: number) => void;
}

/** Counters of a client, for tests and metrics. */
export interface IrohClientStats {
  connectAttempts: number;
  connectFailures: number;
  connectionsLost: number;
}

/** With `failFastWhileDown`, how long a call waits for a connection attempt under way, ms. */
const FAIL_FAST_CONNECT_WAIT_MS = 250;

/**
 * How long a connection may stay without an answer to the Heartbeat sent
 * when its peer connects to us anew before it is taken for dead (the peer
 * restarted). A live peer answers in a round trip.
 */
const PEER_CONNECTED_PROBE_MS = 500;

/** Largest number of stream responses buffered for a consumer that does not read. */
const MAX_BUFFERED_STREAM_ITEMS = 4096;

/** Calls to Iroh peers, one {@link PeerChannel} per endpoint id. */
export class IrohRpcClient {
  readonly #channels = new Map<string, PeerChannel>();
  readonly #options: ChannelOptions;
  readonly stats: IrohClientStats = { connectAttempts: 0, connectFailures: 0, connectionsLost: 0 };
  #closed = false;

  constructor(options: IrohRpcClientOptions) {
    this.#options = {
      endpoint: options.endpoint,
      limits: { ...DEFAULT_RPC_LIMITS, ...options.limits },
      connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
      backoff: { initialMs: 100, maxMs: 10_000, jitter: 0.2, ...options.backoff },
      idleReconnectMs: options.idleReconnectMs ?? 60_000,
      failFastWhileDown: options.failFastWhileDown ?? false,
      random: options.random ?? Math.random,
      keepaliveIntervalMs: options.keepaliveIntervalMs ?? 1_000,
      deadPeerTimeoutMs: options.deadPeerTimeoutMs ?? 5_000,
      onConnected: options.onConnected,
    };
  }

  /** The connections open now, one per peer at most. */
  connections(): IrohConnection[] {
    const open: IrohConnection[] = [];
    for (const c of this.#channels.values()) {
      const conn = c.connection;
      if (conn) open.push(conn);
    }
    return open;
  }

  /**
   * The channel to `target` (a ticket, an address, or an endpoint id),
   * created on first use and shared after; a later target for the same id
   * replaces the addresses used for the next connection attempt.
   */
  peer(target: PeerTarget): PeerChannel {
    if (this.#closed) throw new RpcError(Code.UNAVAILABLE, "iroh client is closed");
    const id = peerIdOf(target);
    let channel = this.#channels.get(id);
    if (!channel) {
      channel = new PeerChannel(id, target, this.#options, this.stats);
      this.#channels.set(id, channel);
    } else {
      channel.target = target;
    }
    return channel;
  }

  /**
   * Hears that the peer `endpointId` just opened a connection to this node's
   * endpoint: it may have restarted, and then our connection to it leads to the
   * dead process. A Heartbeat goes out at once; without an answer within
   * 500 ms the connection is dropped and the channel redials, instead of
   * waiting `deadPeerTimeoutMs` for the silence to prove it.
   */
  peerConnected(endpointId: string): void {
    this.#channels.get(endpointId)?.peerConnected();
  }

  /** Closes every channel; their waiting calls fail with UNAVAILABLE. */
  close(): void {
    this.#closed = true;
    for (const c of this.#channels.values()) c.close();
    this.#channels.clear();
  }
}

function peerIdOf(target: PeerTarget): string {
  if (typeof target !== "string") return normalizeEndpointId(target.id);
  return target.startsWith("endpoint") ? parseTicket(target).id : normalizeEndpointId(target);
}

function short(id: string): string {
  return id.length > 10 ? `${id.slice(0, 10)}…` : id;
}

/** Why calls on a connection that closed failed: refused (403) or lost. */
function lossError(label: string, ownId: string, info: CloseInfo): RpcError {
  if (info.code === CloseCode.NotAllowed) {
    return new RpcError(
      Code.PERMISSION_DENIED,
      `${label} refused this caller: endpoint ${short(ownId)} is not on its allowlist`,
    );
  }
  return new RpcError(
    Code.UNAVAILABLE,
    `${label}: connection lost: ${info.reason || `code ${info.code}`}`,
  );
}

/** What a waiting call wants to hear about its request id. */
interface Pending {
  readonly priority: Priority;
  frame(frame: Frame): void;
  fail(error: RpcError): void;
}

/** One established connection and its streams. */
class Session {
  readonly conn: IrohConnection;
  readonly pending = new Map<bigint, Pending>();
  readonly #streams: (Promise<FrameStream> | undefined)[] = [];
  readonly #maxFrameBytes: number;
  readonly #label: string;
  /** What this connection holds for the peer. */
  readonly outbound: OutboundBuffer;
  nextId = 1n;
  /** `performance.now()` of the last bytes received on any stream. */
  lastReceivedAt = performance.now();

  readonly #ownId: string;

  constructor(
    conn: IrohConnection,
    limits: RpcLimits,
    label: string,
    ownId: string,
    onOverflow: (bytes: number) => void,
  ) {
    this.conn = conn;
    this.#ownId = ownId;
    this.#maxFrameBytes = limits.maxFrameBytes;
    this.#label = label;
    this.outbound = new OutboundBuffer(limits.maxConnectionBufferBytes, { onOverflow });
  }

  /** The stream of a priority class, opened on first use. */
  stream(priority: Priority): Promise<FrameStream> {
    return this.#streams[priority] ??= this.#open(priority);
  }

  async #open(priority: Priority): Promise<FrameStream> {
    const bi = await this.conn.openBi();
    // quinn sends higher numbers first: Election (0) gets the highest.
    bi.send.setPriority(Priority.Service - priority).catch(() => {});
    const fs: FrameStream = new FrameStream(bi, {
      onFrame: (frame) => this.pending.get(frame.requestId)?.frame(frame),
      onClose: (error) => this.#streamClosed(priority, error),
      // Bytes count, not only whole frames: a large answer takes seconds to arrive.
      onActivity: (kind) => {
        if (kind === "read") this.lastReceivedAt = performance.now();
      },
    }, {
      maxFrameBytes: this.#maxFrameBytes,
      source: this.#label,
      // Answers are read whatever the peer does with our requests.
      outbound: this.outbound,
      readWhilePaused: true,
    });
    fs.start();
    return fs;
  }

  /** UNAVAILABLE while the peer leaves more than half the bound unread; else null. */
  notReading(label: string): RpcError | null {
    if (!this.outbound.paused) return null;
    return new RpcError(
      Code.UNAVAILABLE,
      `${label}: ${this.#label} is not reading what this node sent (${this.outbound.bytes} bytes wait for it, ` +
        `over half of max_connection_buffer_bytes ${this.outbound.maxBytes})`,
    );
  }

  #streamClosed(priority: Priority, error: Error | null): void {
    this.#streams[priority] = undefined;
    // A stream that died with its connection reports why the connection died.
    const info = error instanceof IrohError && error.code === "NOT_ALLOWED"
      ? { byPeer: true, code: CloseCode.NotAllowed, reason: "" }
      : this.conn.closeInfo();
    const reason = info ? lossError(this.#label, this.#ownId, info) : new RpcError(
      Code.UNAVAILABLE,
      `${this.#label}: stream closed${error ? `: ${error.message}` : " by the peer"}`,
    );
    for (const p of [...this.pending.values()]) if (p.priority === priority) p.fail(reason);
  }

  failAll(error: RpcError): void {
    for (const p of [...this.pending.values()]) p.fail(error);
  }
}

/** Resolved options shared by the channels of one client. */
interface ChannelOptions {
  readonly endpoint: IrohEndpoint;
  readonly limits: RpcLimits;
  readonly connectTimeoutMs: number;
  readonly backoff: Required<BackoffOptions>;
  readonly idleReconnectMs: number;
  readonly failFastWhileDown: boolean;
  readonly random: () => number;
  readonly keepaliveIntervalMs: number;
  readonly deadPeerTimeoutMs: number;
  readonly onConnected: ((ms: number) => void) | undefined;
}

/**
 * Calls to one peer over one shared connection. Implements
 * {@link CallTransport}, so a typed client runs over it.
 */
export class PeerChannel implements CallTransport {
  /** The peer's endpoint id. */
  readonly peerId: string;
  /** Where to dial on the next attempt. */
  target: PeerTarget;
  readonly #o: ChannelOptions;
  readonly #stats: IrohClientStats;
  readonly #label: string;
  #session: Session | null = null;
  #connecting: Promise<Session> | null = null;
  #failures = 0;
  #retryAt = 0;
  #lastError = "";
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #lastUsedAt = 0;
  #closed = false;
  /** A {@link peerConnected} probe is waiting for its answer. */
  #probing = false;

  constructor(peerId: string, target: PeerTarget, options: ChannelOptions, stats: IrohClientStats) {
    this.peerId = peerId;
    this.target = target;
    this.#o = options;
    this.#stats = stats;
    this.#label = `endpoint ${short(peerId)}`;
  }

  /** True while a connection is up. */
  get connected(): boolean {
    return this.#session !== null;
  }

  /** The connection while one is up. */
  get connection(): IrohConnection | null {
    return this.#session?.conn ?? null;
  }

  /** Calls waiting for an answer now. */
  get inflight(): number {
    return this.#session?.pending.size ?? 0;
  }

  /** Round-trip time of the connection's path in ms, if connected and known. */
  rttMs(): number | null {
    return this.#session?.conn.rttMs() ?? null;
  }

  async unary(
    method: MethodInfo,
    request: Uint8Array,
    options: CallOptions = {},
  ): Promise<Uint8Array> {
    const deadlineAt = performance.now() +
      clientDeadlineMs(options.deadlineMs, method, this.#o.limits);
    options.signal?.throwIfAborted();
    const session = await this.#ready(deadlineAt, method.label, options.waitForReady);
    const fs = await this.#stream(session, Priority.Service, method.label);
    return new Promise<Uint8Array>((resolve, reject) => {
      const call = this.#start(session, fs, method, request, deadlineAt, options.signal, {
        frame: (frame) => {
          if (frame.type === FrameType.Response) {
            call.done();
            resolve(frame.payload);
          } else if (frame.type === FrameType.Error) {
            call.done();
            reject(decodeStatus(frame.payload, method.label));
          }
        },
        fail: (error) => {
          call.done();
          reject(error);
        },
      });
    });
  }

  async *serverStream(
    method: MethodInfo,
    request: Uint8Array,
    options: CallOptions = {},
  ): AsyncGenerator<Uint8Array, void, undefined> {
    // A stream has no deadline unless the caller gives one (WatchEvents runs for hours).
    const deadlineAt = performance.now() +
      clientDeadlineMs(options.deadlineMs, method, this.#o.limits);
    options.signal?.throwIfAborted();
    const session = await this.#ready(
      Math.min(deadlineAt, performance.now() + this.#o.limits.defaultDeadlineMs),
      method.label,
      options.waitForReady,
    );
    const fs = await this.#stream(session, Priority.Service, method.label);
    const items: Uint8Array[] = [];
    let ended = false;
    let error: RpcError | null = null;
    let wake: (() => void) | null = null;
    const call = this.#start(session, fs, method, request, deadlineAt, options.signal, {
      frame: (frame) => {
        if (frame.type === FrameType.StreamData) {
          if (items.length >= MAX_BUFFERED_STREAM_ITEMS) {
            call.cancel();
            error = new RpcError(
              Code.RESOURCE_EXHAUSTED,
              `${method.label}: ${MAX_BUFFERED_STREAM_ITEMS} responses buffered and not read; stream cancelled`,
            );
          } else {
            items.push(frame.payload);
          }
        } else if (frame.type === FrameType.StreamEnd) {
          ended = true;
          call.done();
        } else if (frame.type === FrameType.Error) {
          error = decodeStatus(frame.payload, method.label);
          call.done();
        }
        wake?.();
      },
      fail: (e) => {
        error = e;
        call.done();
        wake?.();
      },
    });
    try {
      for (;;) {
        const item = items.shift();
        if (item !== undefined) {
          yield item;
          continue;
        }
        if (error) throw error;
        if (ended) return;
        await new Promise<void>((resolve) => wake = resolve);
        wake = null;
      }
    } finally {
      // The consumer stopped early (break, throw): tell the server to stop too.
      if (!ended && !error) call.cancel();
      call.done();
    }
  }

  /**
   * Sends a Raft message on the stream of its priority class, connecting
   * first if needed (within the connect timeout). One-way: resolves once the
   * message is queued, not when it arrives; Raft retries what is lost.
   */
  async sendRaft(message: RaftMessage): Promise<void> {
    const label = `raft.${raftMessageKindName(message.kind)}`;
    const session = await this.#ready(performance.now() + this.#o.connectTimeoutMs, label);
    const fs = await this.#stream(session, raftMessagePriority(message.kind), label);
    const notReading = session.notReading(label);
    if (notReading) throw notReading;
    try {
      fs.sendWith((writer) => appendRaftFrame(writer, message));
    } catch (e) {
      throw new RpcError(Code.UNAVAILABLE, `${label}: ${this.#label}: ${(e as Error).message}`);
    }
  }

  /** See {@link IrohRpcClient.peerConnected}. */
  peerConnected(): void {
    const session = this.#session;
    // One probe at a time: a peer that reconnects in a loop costs one heartbeat per 500 ms.
    if (session === null || this.#probing) return;
    this.#probing = true;
    const sentAt = performance.now();
    this.#heartbeat(session);
    const timer = setTimeout(() => {
      this.#probing = false;
      if (this.#session !== session || session.lastReceivedAt >= sentAt) return;
      const reason =
        `no answer within ${PEER_CONNECTED_PROBE_MS} ms after the peer connected anew: it restarted`;
      this.#lost(session, { byPeer: false, code: undefined, reason });
      session.conn.close(CloseCode.Normal, reason);
    }, PEER_CONNECTED_PROBE_MS);
    Deno.unrefTimer(timer as unknown as number);
  }

  /** Fails waiting calls and stops reconnecting. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    const session = this.#session;
    this.#session = null;
    if (session) {
      session.failAll(new RpcError(Code.UNAVAILABLE, `${this.#label}: client closed`));
      session.conn.close(CloseCode.Normal, "client closed");
    }
  }

  /** Registers a call, sends its request, arms its deadline and cancellation. */
  #start(
    session: Session,
    fs: FrameStream,
    method: MethodInfo,
    request: Uint8Array,
    deadlineAt: number,
    signal: AbortSignal | undefined,
    handlers: Omit<Pending, "priority">,
  ): { done(): void; cancel(): void } {
    const id = session.nextId++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let finished = false;
    const onAbort = () => {
      cancel();
      handlers.fail(new RpcError(Code.CANCELLED, `${method.label}: cancelled by the caller`));
    };
    const done = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      session.pending.delete(id);
      signal?.removeEventListener("abort", onAbort);
    };
    const cancel = () => {
      if (finished || fs.isClosed) return;
      fs.send({
        type: FrameType.Cancel,
        flags: FLAG_LAST,
        priority: Priority.Service,
        method: method.wireId,
        requestId: id,
        deadlineMs: 0,
      });
    };
    const notReading = session.notReading(method.label);
    if (notReading) {
      handlers.fail(notReading);
      return { done, cancel };
    }
    session.pending.set(id, { priority: Priority.Service, ...handlers });
    const remaining = Math.max(1, Math.ceil(deadlineAt - performance.now()));
    try {
      fs.send({
        type: FrameType.Request,
        flags: FLAG_LAST,
        priority: Priority.Service,
        method: method.wireId,
        requestId: id,
        deadlineMs: Number.isFinite(deadlineAt) ? Math.min(remaining, 0xffff_ffff) : 0,
      }, request);
    } catch (e) {
      handlers.fail(
        new RpcError(Code.UNAVAILABLE, `${method.label}: ${this.#label}: ${(e as Error).message}`),
      );
      return { done, cancel };
    }
    if (Number.isFinite(deadlineAt)) {
      timer = setTimeout(() => {
        cancel();
        handlers.fail(
          new RpcError(
            Code.DEADLINE_EXCEEDED,
            `${method.label}: no answer from ${this.#label} within ${
              Math.round(deadlineAt - performance.now() + remaining)
            } ms`,
          ),
        );
      }, remaining);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    return { done, cancel };
  }

  async #stream(session: Session, priority: Priority, label: string): Promise<FrameStream> {
    try {
      return await session.stream(priority);
    } catch (e) {
      // Refused right after the handshake: say so, whichever of the stream and the close we saw first.
      if (e instanceof IrohError && e.code === "NOT_ALLOWED") {
        throw lossError(this.#label, this.#o.endpoint.id, {
          byPeer: true,
          code: CloseCode.NotAllowed,
          reason: "",
        });
      }
      const info = session.conn.closeInfo();
      if (info) throw lossError(this.#label, this.#o.endpoint.id, info);
      throw new RpcError(
        Code.UNAVAILABLE,
        `${label}: ${this.#label}: cannot open a stream: ${(e as Error).message}`,
      );
    }
  }

  /** The live session, connecting (or waiting for the next attempt) within the deadline. */
  async #ready(deadlineAt: number, label: string, waitForReady = false): Promise<Session> {
    const failFast = this.#o.failFastWhileDown && !waitForReady;
    this.#lastUsedAt = performance.now();
    for (;;) {
      if (this.#closed) {
        throw new RpcError(Code.UNAVAILABLE, `${label}: ${this.#label}: client closed`);
      }
      if (this.#session) return this.#session;
      const now = performance.now();
      if (!this.#connecting) {
        const wait = this.#retryAt - now;
        if (wait > 0) {
          if (now + wait >= deadlineAt || failFast) {
            throw new RpcError(
              Code.UNAVAILABLE,
              `${label}: ${this.#label} is unreachable (${this.#lastError}); next attempt in ${
                Math.ceil(wait)
              } ms`,
            );
          }
          await new Promise((r) => setTimeout(r, wait));
          continue;
        }
        this.#connecting = this.#connect();
      }
      const remaining = deadlineAt - now;
      // A caller with another transport waits only briefly: the attempt goes on
      // in the background and a later call will find the connection up.
      const grace = this.#o.failFastWhileDown
        ? Math.min(remaining, FAIL_FAST_CONNECT_WAIT_MS)
        : remaining;
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        return await Promise.race([
          this.#connecting,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() =>
              reject(
                grace < remaining
                  ? new RpcError(Code.UNAVAILABLE, `${label}: still connecting to ${this.#label}`)
                  : new RpcError(
                    Code.DEADLINE_EXCEEDED,
                    `${label}: still connecting to ${this.#label} when the deadline passed`,
                  ),
              ), grace);
          }),
        ]);
      } catch (e) {
        if (e instanceof RpcError) {
          throw new RpcError(
            e.code,
            e.message.startsWith(label) ? e.message : `${label}: ${e.message}`,
          );
        }
        throw e;
      } finally {
        clearTimeout(timer);
      }
    }
  }

  async #connect(): Promise<Session> {
    this.#stats.connectAttempts++;
    const startedAt = performance.now();
    try {
      const conn = await this.#o.endpoint.connect(this.target, {
        timeoutMs: this.#o.connectTimeoutMs,
      });
      if (this.#closed) {
        conn.close(CloseCode.Normal, "client closed");
        throw new RpcError(Code.UNAVAILABLE, `${this.#label}: client closed`);
      }
      const session: Session = new Session(
        conn,
        this.#o.limits,
        this.#label,
        this.#o.endpoint.id,
        (bytes) => {
          const reason =
            `${this.#label} did not read ${bytes} bytes sent to it (max_connection_buffer_bytes ${this.#o.limits.maxConnectionBufferBytes})`;
          this.#lost(session, { byPeer: false, code: undefined, reason });
          conn.close(CloseCode.Normal, reason);
        },
      );
      this.#session = session;
      this.#o.onConnected?.(performance.now() - startedAt);
      this.#failures = 0;
      this.#retryAt = 0;
      conn.closed().then((info) => this.#lost(session, info));
      this.#keepalive(session);
      return session;
    } catch (e) {
      this.#stats.connectFailures++;
      this.#failures++;
      this.#lastError = e instanceof Error ? e.message : String(e);
      this.#retryAt = performance.now() + this.#backoffMs();
      this.#scheduleReconnect();
      throw e instanceof RpcError
        ? e
        : new RpcError(Code.UNAVAILABLE, `cannot reach ${this.#label}: ${this.#lastError}`);
    } finally {
      this.#connecting = null;
    }
  }

  /**
   * Sends a Heartbeat frame when the connection has been quiet for a
   * keepalive interval, and declares it dead after `deadPeerTimeoutMs` of
   * silence: a peer that was killed never says goodbye. The server answers
   * each Heartbeat, and counts it as a sign of life of ours.
   */
  #keepalive(session: Session): void {
    const { keepaliveIntervalMs, deadPeerTimeoutMs } = this.#o;
    const timer = setInterval(() => {
      if (this.#session !== session) return clearInterval(timer);
      const quiet = performance.now() - session.lastReceivedAt;
      if (quiet >= deadPeerTimeoutMs) {
        clearInterval(timer);
        const reason = `no answer for ${Math.round(quiet)} ms`;
        this.#lost(session, { byPeer: false, code: undefined, reason });
        session.conn.close(CloseCode.Normal, reason);
        return;
      }
      if (quiet < keepaliveIntervalMs) return;
      this.#heartbeat(session);
    }, Math.min(keepaliveIntervalMs, deadPeerTimeoutMs / 2));
    Deno.unrefTimer(timer as unknown as number);
  }

  /** Sends a Heartbeat frame; the server answers it. */
  #heartbeat(session: Session): void {
    session.stream(Priority.Heartbeat).then((fs) =>
      fs.send({
        type: FrameType.Heartbeat,
        flags: FLAG_LAST,
        priority: Priority.Heartbeat,
        method: 0,
        requestId: 0n,
        deadlineMs: 0,
      })
    ).catch(() => {});
  }

  #lost(session: Session, info: CloseInfo): void {
    if (this.#session !== session) return;
    this.#session = null;
    this.#stats.connectionsLost++;
    const error = lossError(this.#label, this.#o.endpoint.id, info);
    this.#lastError = error.message;
    session.failAll(error);
    if (this.#closed) return;
    this.#failures = Math.max(this.#failures, 1);
    this.#retryAt = performance.now() + this.#backoffMs();
    this.#scheduleReconnect();
  }

  #backoffMs(): number {
    const { initialMs, maxMs, jitter } = this.#o.backoff;
    const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, this.#failures - 1));
    return Math.max(0, base * (1 + jitter * (2 * this.#o.random() - 1)));
  }

  /** Reconnects in the background at the next retry time, while the channel is in use. */
  #scheduleReconnect(): void {
    clearTimeout(this.#retryTimer);
    if (this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      const idle = performance.now() - this.#lastUsedAt > this.#o.idleReconnectMs;
      if (this.#closed || this.#session || this.#connecting || idle) return;
      this.#connecting = this.#connect();
      this.#connecting.catch(() => {});
    }, Math.max(0, this.#retryAt - performance.now()));
    Deno.unrefTimer(this.#retryTimer as unknown as number);
  }
}
