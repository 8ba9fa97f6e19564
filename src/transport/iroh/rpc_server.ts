/**
 * The Iroh side of the service framework, server half: accepts connections
 * from allowed endpoints, reads frames from each priority stream, and runs
 * the registered implementations.
 *
 * Owns: {@link IrohRpcServer}, {@link RpcCloseCode}. Imports the codec,
 * `rpc/` (router, call lifecycle, outbound bound, errors, limits, Raft
 * ingress, services' types) and this folder's endpoint and stream wrappers.
 *
 * Per connection: up to `maxConcurrentStreams` bidirectional streams (a
 * client opens one per priority class), and calls run by the shared call
 * lifecycle (`rpc/call.ts`): up to `maxInflightRequests` at once, each with
 * a deadline (the caller's, else the default for a unary call and none for a
 * stream, never above the maximum) after which its handler is abandoned and
 * the caller told. What the connection holds for its peer is bounded by
 * `maxConnectionBufferBytes` (`rpc/outbound.ts`): past half of it the
 * connection's streams are not read, past all of it the connection is closed
 * with {@link RpcCloseCode.BufferFull}. A connection on which the peer shows
 * no sign of life for `idleTimeoutMs` is closed with
 * {@link RpcCloseCode.IdleTimeout} (docs/iroh-rpc.md says what clients send
 * to stay open). Garbage on any stream closes that connection with
 * {@link RpcCloseCode.ProtocolError}; everyone else is unaffected.
 *
 * Raft frames (service 6) are offered one by one to the {@link RaftIngress};
 * the read loop never waits for it.
 *
 * @module
 */

import { ProtocolError } from "../../codec/errors.ts";
import { decodeRaftFrame, RAFT_SERVICE_ID, type RaftMessage } from "../../codec/raft.ts";
import {
  encodeFrame,
  FLAG_LAST,
  type Frame,
  FrameType,
  frameTypeName,
  Priority,
  SUPPORTED_VERSIONS,
} from "../../codec/frame.ts";
import {
  type CallObserver,
  type CallStats,
  type Clock,
  type ConnectionCalls,
  runCall,
  type ServerCall,
  ServerCalls,
  systemClock,
} from "../../rpc/call.ts";
import { Code, encodeStatus, RpcError } from "../../rpc/errors.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../../rpc/limits.ts";
import { OutboundBuffer } from "../../rpc/outbound.ts";
import type { RaftIngress } from "../../rpc/raft_ingress.ts";
import type { RpcRouter } from "../../rpc/router.ts";
import type { MethodInfo, PeerInfo } from "../../rpc/services.ts";
import { type Logger, silentLogger } from "../../util/log.ts";
import type { IrohBiStream, IrohConnection } from "./connection.ts";
import { type EndpointAllowlist, type IrohEndpoint, isAllowed } from "./endpoint.ts";
import { IrohError } from "./errors.ts";
import { FrameStream } from "./frame_stream.ts";

/** Application close codes of RPC connections (QUIC CONNECTION_CLOSE), as docs/iroh-rpc.md lists them. */
export const RpcCloseCode = {
  /** Graceful close, including server shutdown. */
  Normal: 0,
  /** The peer sent bytes that are not valid frames, or frames it may not send. */
  ProtocolError: 400,
  /** The endpoint id is not allowed (set by the endpoint layer). */
  NotAllowed: 403,
  /** The peer showed no sign of life for the server's idle timeout. */
  IdleTimeout: 408,
  /** The peer did not read its answers: more than `max_connection_buffer_bytes` waited for it. */
  BufferFull: 429,
  /** The server is shutting down, or parked, and takes no new connections. */
  ShuttingDown: 503,
} as const;

/** Default of {@link IrohRpcServerOptions.idleTimeoutMs}. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10_000;

/** Options of an {@link IrohRpcServer}. */
export interface IrohRpcServerOptions {
  readonly endpoint: IrohEndpoint;
  readonly router: RpcRouter;
  /** Who may connect: deny by default. A function sees live membership changes. */
  readonly allow: EndpointAllowlist;
  readonly limits?: Partial<RpcLimits>;
  readonly logger?: Logger;
  /**
   * Takes the Raft messages peers send (service 6), one frame at a time. Raft
   * messages are one-way: nothing is answered unless the ingress denies the
   * sender. Without it they are dropped and counted, as on a node that runs
   * no consensus.
   */
  readonly raftIngress?: RaftIngress;
  /**
   * A connection on which nothing arrived from the peer, and nothing we sent
   * was taken, for this long is closed (code 408), ms. Default 10,000: ten
   * of a client's 1 s heartbeats. A peer killed or cut off says no goodbye;
   * QUIC alone would notice only at its own idle timeout (~30 s here).
   */
  readonly idleTimeoutMs?: number;
  /** Time for call deadlines and the idle timeout. Default: the system clock. */
  readonly clock?: Clock;
  /** Told how each call ended (metrics). */
  readonly callObserver?: CallObserver;
  /** Told the endpoint id of each connection accepted (a peer that may have restarted). */
  readonly onPeerConnection?: (endpointId: string) => void;
}

/** Counters of a server, for tests and metrics. */
export interface IrohServerStats extends CallStats {
  connectionsAccepted: number;
  /** Connection attempts refused (not allowed, handshake failed, too many pending, parked). */
  connectionsRefused: number;
  /** Connections closed because a peer sent garbage. */
  protocolErrors: number;
  /** Streams refused over `maxConcurrentStreams`. */
  streamsRefused: number;
  /** Raft messages received and decoded. */
  raftMessages: number;
  /** Raft frames answered PERMISSION_DENIED by the ingress. */
  raftDenied: number;
  /** Raft messages not queued: no ingress, or its inbox was full. */
  raftDropped: number;
  /** Times a connection stopped being read because its peer did not read (past half the buffer bound). */
  readsPaused: number;
  /** Connections closed past `maxConnectionBufferBytes` (code 429). */
  connectionsOverflowed: number;
  /** Connections closed after `idleTimeoutMs` without a sign of life (code 408). */
  connectionsIdle: number;
}

const EMPTY = new Uint8Array(0);

/**
 * How long a graceful close waits for a peer to acknowledge the last
 * answers before the connection closes anyway (a peer that stopped reading
 * must not hold a shutdown).
 */
const GRACEFUL_DELIVERY_MS = 1_000;

/** Serves a router's services over Iroh. */
export class IrohRpcServer {
  readonly #endpoint: IrohEndpoint;
  readonly #router: RpcRouter;
  readonly #allow: EndpointAllowlist;
  #limits: RpcLimits;
  readonly #log: Logger;
  readonly #raftIngress: RaftIngress | undefined;
  readonly #onPeerConnection: ((endpointId: string) => void) | undefined;
  readonly #idleTimeoutMs: number;
  readonly #clock: Clock;
  readonly #connections = new Set<ServerConnection>();
  readonly #calls: ServerCalls;
  #acceptLoop: Promise<void> | null = null;
  readonly stats: IrohServerStats = {
    connectionsAccepted: 0,
    connectionsRefused: 0,
    protocolErrors: 0,
    callsStarted: 0,
    callsFailed: 0,
    callsRefused: 0,
    streamsRefused: 0,
    raftMessages: 0,
    raftDenied: 0,
    raftDropped: 0,
    readsPaused: 0,
    connectionsOverflowed: 0,
    connectionsIdle: 0,
  };

  constructor(options: IrohRpcServerOptions) {
    this.#endpoint = options.endpoint;
    this.#router = options.router;
    this.#allow = options.allow;
    this.#limits = { ...DEFAULT_RPC_LIMITS, ...options.limits };
    this.#log = options.logger ?? silentLogger;
    this.#raftIngress = options.raftIngress;
    this.#onPeerConnection = options.onPeerConnection;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    if (!(this.#idleTimeoutMs > 0)) {
      throw new RangeError(`idleTimeoutMs ${this.#idleTimeoutMs}: expected more than 0`);
    }
    this.#clock = options.clock ?? systemClock;
    this.#calls = new ServerCalls({
      stats: this.stats,
      log: this.#log,
      clock: this.#clock,
      ...(options.callObserver ? { observer: options.callObserver } : {}),
    });
  }

  /** The limits in force. */
  get limits(): RpcLimits {
    return this.#limits;
  }

  /** New limits, for connections accepted from now on (a config reload). */
  setLimits(limits: Partial<RpcLimits>): void {
    this.#limits = { ...DEFAULT_RPC_LIMITS, ...limits };
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** The connections open now. */
  connections(): IrohConnection[] {
    return [...this.#connections].map((c) => c.connection);
  }

  /** Calls running now, over all connections. */
  get inflightCount(): number {
    return this.#calls.inflight;
  }

  /** Bytes held for peers now, over all connections (queued answers not yet sent). */
  get outboundBytes(): number {
    let n = 0;
    for (const c of this.#connections) n += c.outboundBytes;
    return n;
  }

  /** Starts accepting connections. */
  start(): void {
    if (this.#acceptLoop) throw new Error("iroh rpc server: already started");
    this.#acceptLoop = this.#endpoint.acceptLoop({
      allow: this.#allow,
      onConnection: (c) => this.#adopt(c),
      onRejected: (e) => this.#refused(e),
    });
  }

  /**
   * Stops gracefully: takes no new connections or calls, lets calls in flight
   * finish for up to `timeoutMs`, then abandons the rest (UNAVAILABLE) and
   * closes every connection. Returns how many calls were abandoned. The
   * endpoint itself is the caller's to close.
   *
   * `reason` says why to everyone refused or cut off from now until
   * {@link resume}: it is the close reason of the connections and the
   * message of the UNAVAILABLE that refuses calls and new connections (e.g.
   * "this node no longer serves Iroh; it serves gRPC at 10.0.0.1:7400").
   * Default: "server is shutting down".
   */
  async shutdown(timeoutMs: number = 10_000, reason?: string): Promise<{ abandoned: number }> {
    const result = await this.#calls.drain(timeoutMs, reason);
    await Promise.all(
      [...this.#connections].map((c) =>
        c.close(RpcCloseCode.Normal, reason ?? "server shutting down")
      ),
    );
    return result;
  }

  /**
   * Serves again after {@link shutdown}, on the same endpoint. The agent
   * parks a drained server rather than closing its endpoint, because the
   * binding releases an endpoint's UDP port only when the endpoint object is
   * garbage-collected: a closed endpoint's port cannot be bound again in the
   * same process.
   */
  resume(): void {
    this.#calls.resume();
  }

  /**
   * Closes the connections of endpoints the allowlist no longer admits (a
   * reload removed a peer or an operator key), with close code 403; their
   * calls in flight are abandoned. Returns how many were closed.
   */
  revokeDisallowed(): number {
    let closed = 0;
    for (const c of this.#connections) {
      if (!isAllowed(this.#allow, c.peerId)) {
        closed++;
        // At once, not gracefully: the peer must see why (403), not a clean end of stream.
        c.close(RpcCloseCode.NotAllowed, "endpoint no longer allowed", false).catch(() => {});
      }
    }
    if (closed > 0) this.#log.info("closed connections of endpoints no longer allowed", { closed });
    return closed;
  }

  #adopt(connection: IrohConnection): void {
    const parked = this.#calls.drainReason;
    if (parked !== null) {
      this.stats.connectionsRefused++;
      connection.close(RpcCloseCode.ShuttingDown, truncate(parked));
      return;
    }
    this.stats.connectionsAccepted++;
    const sc = new ServerConnection(connection, this, {
      router: this.#router,
      calls: this.#calls.connection(this.#limits),
      log: this.#log,
      raftIngress: this.#raftIngress,
      idleTimeoutMs: this.#idleTimeoutMs,
      clock: this.#clock,
    });
    this.#connections.add(sc);
    sc.start().finally(() => this.#connections.delete(sc));
    this.#onPeerConnection?.(connection.remoteId);
  }

  #refused(error: IrohError): void {
    this.stats.connectionsRefused++;
    this.peerWarning(error.remoteId ?? "unknown endpoint", "refused a connection", {
      reason: error.message,
    });
  }

  /** @internal Logs `message` about `peer` at most once a minute per peer and message. */
  peerWarning(peer: string, message: string, fields: Record<string, unknown> = {}): void {
    this.#calls.warn(peer, message, { peer, ...fields });
  }
}

/** What a {@link ServerConnection} needs of its server. */
interface ConnectionContext {
  readonly router: RpcRouter;
  readonly calls: ConnectionCalls;
  readonly log: Logger;
  readonly raftIngress: RaftIngress | undefined;
  readonly idleTimeoutMs: number;
  readonly clock: Clock;
}

class ServerConnection {
  readonly #conn: IrohConnection;
  readonly #server: IrohRpcServer;
  readonly #c: ConnectionContext;
  readonly #limits: RpcLimits;
  readonly #peer: PeerInfo;
  readonly #streams = new Map<FrameStream, IrohBiStream>();
  /** Calls running, by request id, for Cancel frames and duplicate ids. */
  readonly #byId = new Map<bigint, ServerCall>();
  readonly #outbound: OutboundBuffer;
  #lastSignOfLifeAt: number;
  #cancelIdleTimer: (() => void) | undefined;
  #cancelHangUp: (() => void) | undefined;
  #closing = false;

  constructor(conn: IrohConnection, server: IrohRpcServer, context: ConnectionContext) {
    this.#conn = conn;
    this.#server = server;
    this.#c = context;
    this.#limits = context.calls.limits;
    this.#peer = { transport: "iroh", id: conn.remoteId };
    this.#lastSignOfLifeAt = context.clock.now();
    const max = this.#limits.maxConnectionBufferBytes;
    this.#outbound = new OutboundBuffer(max, {
      // Counted, not logged: one large answer to a slow reader pauses too.
      onPause: () => server.stats.readsPaused++,
      onOverflow: (bytes) => {
        server.stats.connectionsOverflowed++;
        const reason =
          `the peer did not read its answers: ${bytes} bytes waited for it, over max_connection_buffer_bytes ${max}`;
        server.peerWarning(this.#peer.id, "closed a connection whose peer does not read", {
          reason,
        });
        this.close(RpcCloseCode.BufferFull, reason, false).catch(() => {});
      },
    });
  }

  /** The peer's endpoint id. */
  get peerId(): string {
    return this.#peer.id;
  }

  /** The QUIC connection. */
  get connection(): IrohConnection {
    return this.#conn;
  }

  /** Bytes held for the peer now. */
  get outboundBytes(): number {
    return this.#outbound.bytes;
  }

  /** Accepts streams until the connection ends; resolves then. */
  async start(): Promise<void> {
    const closed = this.#conn.closed();
    closed.then(() => this.#teardown());
    this.#armIdleTimer();
    try {
      for (;;) {
        const bi = await this.#conn.acceptBi();
        if (this.#streams.size >= this.#limits.maxConcurrentStreams) {
          this.#server.stats.streamsRefused++;
          // Refuse the stream, keep the connection: stop their sending, reset ours.
          bi.recv.stop(RpcCloseCode.ProtocolError).catch(() => {});
          bi.send.reset(RpcCloseCode.ProtocolError).catch(() => {});
          continue;
        }
        const fs: FrameStream = new FrameStream(bi, {
          onFrame: (frame) => this.#onFrame(fs, frame),
          onClose: (error) => this.#onStreamClose(fs, bi, error),
          onActivity: () => this.#lastSignOfLifeAt = this.#c.clock.now(),
        }, {
          maxFrameBytes: this.#limits.maxFrameBytes,
          source: `endpoint ${short(this.#peer.id)}`,
          outbound: this.#outbound,
        });
        this.#streams.set(fs, bi);
        fs.start();
      }
    } catch (e) {
      if (!(e instanceof IrohError)) throw e;
    }
    await closed;
  }

  /** Closes after flushing what is queued (unless not `graceful`); in-flight calls are abandoned. */
  async close(code: number, reason: string, graceful = true): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#c.calls.abortAll(
      new RpcError(Code.UNAVAILABLE, `server closed the connection: ${reason}`),
    );
    if (graceful) {
      // Give queued responses to the binding, end our side of each stream cleanly, and let
      // the peer receive them: closing the connection drops what it has not acknowledged.
      await Promise.all([...this.#streams].map(async ([fs, bi]) => {
        await fs.flushed().catch(() => {});
        await bi.send.finish().catch(() => {});
        await bi.send.delivered(GRACEFUL_DELIVERY_MS);
      }));
    }
    this.#conn.close(code, truncate(reason));
  }

  /** Closes the connection once the peer has been silent for the idle timeout. */
  #armIdleTimer(): void {
    const { clock, idleTimeoutMs } = this.#c;
    const wait = this.#lastSignOfLifeAt + idleTimeoutMs - clock.now();
    this.#cancelIdleTimer = clock.after(Math.max(0, wait), () => {
      if (this.#closing) return;
      const silentMs = clock.now() - this.#lastSignOfLifeAt;
      if (silentMs < idleTimeoutMs) return this.#armIdleTimer();
      this.#server.stats.connectionsIdle++;
      this.close(
        RpcCloseCode.IdleTimeout,
        `nothing from the peer for ${silentMs} ms (idle timeout ${idleTimeoutMs} ms)`,
        false,
      ).catch(() => {});
    });
  }

  #onStreamClose(fs: FrameStream, bi: IrohBiStream, error: Error | null): void {
    this.#streams.delete(fs);
    if (!(error instanceof ProtocolError)) return;
    this.#server.stats.protocolErrors++;
    this.#server.peerWarning(this.#peer.id, "closed a connection for a protocol error", {
      error: error.message,
    });
    if (error.code === "UNSUPPORTED_VERSION") {
      // Say which versions we speak, in a frame the peer can parse and match
      // to its request when its header arrived whole, then hang up.
      const status = new RpcError(Code.FAILED_PRECONDITION, error.message, {
        supportedVersions: SUPPORTED_VERSIONS,
      });
      const refused = fs.refusedHeader();
      const frame = encodeFrame({
        type: FrameType.Error,
        flags: FLAG_LAST,
        priority: Priority.Service,
        method: refused?.method ?? 0,
        requestId: refused?.requestId ?? 0n,
        deadlineMs: 0,
      }, encodeStatus(status));
      bi.send.write(frame).then(() => bi.send.finish()).catch(() => {}).finally(() => {
        // A moment for the Error frame to leave before the close discards it.
        this.#cancelHangUp = this.#c.clock.after(
          50,
          () => this.#conn.close(RpcCloseCode.ProtocolError, truncate(error.message)),
        );
      });
      return;
    }
    this.#conn.close(RpcCloseCode.ProtocolError, truncate(error.message));
  }

  #onFrame(fs: FrameStream, frame: Frame): void {
    switch (frame.type) {
      case FrameType.Request:
        if (frame.method >>> 8 === RAFT_SERVICE_ID) return this.#onRaft(fs, frame);
        return this.#startCall(fs, frame);
      case FrameType.Cancel:
        this.#byId.get(frame.requestId)?.abort(
          new RpcError(Code.CANCELLED, "cancelled by the caller"),
        );
        return;
      case FrameType.Heartbeat:
        if (!fs.isClosed) fs.send({ ...frame, flags: FLAG_LAST, deadlineMs: 0 });
        return;
      default:
        fs.close(
          new ProtocolError(
            "VALUE_OUT_OF_RANGE",
            `frame: a client may not send ${
              frameTypeName(frame.type)
            } frames (request ${frame.requestId})`,
            { field: "type", value: frame.type },
          ),
        );
    }
  }

  /** Offers one Raft frame's message to the ingress, without waiting for anything. */
  #onRaft(fs: FrameStream, frame: Frame): void {
    let message: RaftMessage;
    try {
      message = decodeRaftFrame(frame);
    } catch (e) {
      // A malformed Raft payload is garbage like any other: it fails the stream.
      fs.close(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const stats = this.#server.stats;
    stats.raftMessages++;
    const ingress = this.#c.raftIngress;
    if (!ingress) {
      stats.raftDropped++;
      return;
    }
    const offer = ingress.offer([message], this.#peer);
    if (offer.denied) {
      stats.raftDenied++;
      if (fs.isClosed) return;
      fs.send({
        type: FrameType.Error,
        flags: FLAG_LAST,
        priority: frame.priority,
        method: frame.method,
        requestId: frame.requestId,
        deadlineMs: 0,
      }, encodeStatus(offer.denied));
    } else if (offer.accepted < 1) {
      stats.raftDropped++;
    }
  }

  #startCall(fs: FrameStream, frame: Frame): void {
    const { requestId, priority, method } = frame;
    const reply = (type: FrameType, payload: Uint8Array) => {
      if (!fs.isClosed) {
        fs.send({ type, flags: FLAG_LAST, priority, method, requestId, deadlineMs: 0 }, payload);
      }
    };
    const server = this.#c.calls.server;
    const refuse = (error: RpcError, info: MethodInfo | null = null) =>
      reply(FrameType.Error, encodeStatus(server.refuse(error, info)));
    if (this.#closing) {
      return refuse(
        new RpcError(Code.UNAVAILABLE, server.drainReason ?? "server is closing this connection"),
      );
    }
    if (this.#byId.has(requestId)) {
      return refuse(
        new RpcError(Code.INVALID_ARGUMENT, `request id ${requestId} is already in flight`),
      );
    }
    const bound = this.#c.router.resolve(method);
    if (!bound) {
      return refuse(
        new RpcError(
          Code.UNIMPLEMENTED,
          `no method 0x${method.toString(16).padStart(4, "0")} (service ${method >>> 8}, method ${
            method & 0xff
          }) on this node`,
        ),
      );
    }
    if ((frame.flags & FLAG_LAST) === 0) {
      return refuse(
        new RpcError(
          Code.INVALID_ARGUMENT,
          `${bound.info.label}: multi-frame requests are not supported`,
        ),
        bound.info,
      );
    }
    const call = this.#c.calls.admit(
      bound.info,
      this.#peer,
      frame.deadlineMs === 0 ? null : frame.deadlineMs,
    );
    if (call instanceof RpcError) return reply(FrameType.Error, encodeStatus(call));
    this.#byId.set(requestId, call);
    runCall(call, bound, frame.payload, {
      response: (bytes) => reply(FrameType.Response, bytes),
      item: (bytes) => {
        reply(FrameType.StreamData, bytes);
        // Back-pressure: a slow reader slows the handler, not our memory.
        return fs.queuedBytes > 0 ? fs.drained() : undefined;
      },
      end: () => reply(FrameType.StreamEnd, EMPTY),
      error: (error) => reply(FrameType.Error, encodeStatus(error)),
    }).finally(() => this.#byId.delete(requestId));
  }

  #teardown(): void {
    this.#cancelIdleTimer?.();
    this.#cancelHangUp?.();
    this.#c.calls.abortAll(new RpcError(Code.UNAVAILABLE, "connection closed"));
    for (const fs of this.#streams.keys()) fs.close(null);
    this.#streams.clear();
  }
}

function short(id: string): string {
  return id.length > 10 ? `${id.slice(0, 10)}…` : id;
}

/** QUIC close reasons are short; keep them under 200 bytes. */
function truncate(text: string): string {
  return text.length > 200 ? text.slice(0, 197) + "..." : text;
}
