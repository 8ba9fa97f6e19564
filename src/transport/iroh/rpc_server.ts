/**
 * The Iroh side of the service framework, server half: accepts connections
 * from allowed endpoints, reads frames from each priority stream, and runs
 * the registered implementations.
 *
 * Owns: {@link IrohRpcServer}. Imports the codec, `rpc/` (router, errors,
 * limits, services' types) and this folder's endpoint and stream wrappers.
 *
 * Per connection: up to `maxConcurrentStreams` bidirectional streams (a
 * client opens one per priority class), up to `maxInflightRequests` calls at
 * once, each with a deadline (the caller's, else the default for a unary
 * call and none for a stream, never above the maximum) after which its
 * handler is abandoned and the caller told.
 * Garbage on any stream closes that connection with {@link RpcCloseCode.ProtocolError};
 * everyone else is unaffected.
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
  SUPPORTED_VERSIONS,
} from "../../codec/frame.ts";
import { Code, encodeStatus, RpcError, toRpcError } from "../../rpc/errors.ts";
import { untilAborted } from "../../rpc/abort.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../../rpc/limits.ts";
import type { RpcRouter } from "../../rpc/router.ts";
import type { CallContext, PeerInfo } from "../../rpc/services.ts";
import { type Logger, RateLimiter, silentLogger } from "../../util/log.ts";
import type { IrohBiStream, IrohConnection } from "./connection.ts";
import { type EndpointAllowlist, type IrohEndpoint, isAllowed } from "./endpoint.ts";
import { IrohError } from "./errors.ts";
import { FrameStream } from "./frame_stream.ts";

/** Application close codes of RPC connections (QUIC CONNECTION_CLOSE). */
export const RpcCloseCode = {
  /** Graceful close, including server shutdown. */
  Normal: 0,
  /** The peer sent bytes that are not valid frames, or frames it may not send. */
  ProtocolError: 400,
  /** The endpoint id is not allowed (set by the endpoint layer). */
  NotAllowed: 403,
  /** The server is shutting down and takes no new connections. */
  ShuttingDown: 503,
} as const;

/** Options of an {@link IrohRpcServer}. */
export interface IrohRpcServerOptions {
  readonly endpoint: IrohEndpoint;
  readonly router: RpcRouter;
  /** Who may connect: deny by default. A function sees live membership changes. */
  readonly allow: EndpointAllowlist;
  readonly limits?: Partial<RpcLimits>;
  readonly logger?: Logger;
  /**
   * Receives the Raft messages peers send (service 6). Raft messages are
   * one-way: nothing is sent back for them. Without it they are dropped.
   */
  readonly onRaftMessage?: (message: RaftMessage, from: PeerInfo) => void;
}

/** Counters of a server, for tests and metrics. */
export interface IrohServerStats {
  connectionsAccepted: number;
  /** Connection attempts refused (not allowed, handshake failed, too many pending). */
  connectionsRefused: number;
  /** Connections closed because a peer sent garbage. */
  protocolErrors: number;
  /** Calls that reached a handler. */
  callsStarted: number;
  /** Calls refused or failed (any Error frame sent). */
  callsFailed: number;
  /** Streams refused over `maxConcurrentStreams`. */
  streamsRefused: number;
  /** Raft messages received. */
  raftMessages: number;
}

const EMPTY = new Uint8Array(0);

/** Serves a router's services over Iroh. */
export class IrohRpcServer {
  readonly #endpoint: IrohEndpoint;
  readonly #router: RpcRouter;
  readonly #allow: EndpointAllowlist;
  #limits: RpcLimits;
  readonly #log: Logger;
  readonly #onRaftMessage: ((message: RaftMessage, from: PeerInfo) => void) | undefined;
  readonly #refusalLog = new RateLimiter(60_000);
  readonly #connections = new Set<ServerConnection>();
  #acceptLoop: Promise<void> | null = null;
  #draining = false;
  readonly stats: IrohServerStats = {
    connectionsAccepted: 0,
    connectionsRefused: 0,
    protocolErrors: 0,
    callsStarted: 0,
    callsFailed: 0,
    streamsRefused: 0,
    raftMessages: 0,
  };

  constructor(options: IrohRpcServerOptions) {
    this.#endpoint = options.endpoint;
    this.#router = options.router;
    this.#allow = options.allow;
    this.#limits = { ...DEFAULT_RPC_LIMITS, ...options.limits };
    this.#log = options.logger ?? silentLogger;
    this.#onRaftMessage = options.onRaftMessage;
  }

  /** @internal Hands a Raft message to the consensus module. */
  raftMessage(message: RaftMessage, from: PeerInfo): void {
    this.stats.raftMessages++;
    this.#onRaftMessage?.(message, from);
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

  /** Calls running now, over all connections. */
  get inflightCount(): number {
    let n = 0;
    for (const c of this.#connections) n += c.inflight;
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
   * finish for up to `timeoutMs`, then abandons the rest and closes every
   * connection. Returns how many calls were abandoned. The endpoint itself is
   * the caller's to close.
   */
  async shutdown(timeoutMs: number = 10_000): Promise<{ abandoned: number }> {
    this.#draining = true;
    const until = Date.now() + timeoutMs;
    while (this.inflightCount > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, Math.min(10, until - Date.now())));
    }
    const abandoned = this.inflightCount;
    await Promise.all(
      [...this.#connections].map((c) => c.close(RpcCloseCode.Normal, "server shutting down")),
    );
    return { abandoned };
  }

  /**
   * Serves again after {@link shutdown}, on the same endpoint. The agent
   * parks a drained server rather than closing its endpoint, because the
   * binding releases an endpoint's UDP port only when the endpoint object is
   * garbage-collected: a closed endpoint's port cannot be bound again in the
   * same process.
   */
  resume(): void {
    this.#draining = false;
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
    if (this.#draining) {
      connection.close(RpcCloseCode.ShuttingDown, "server shutting down");
      return;
    }
    this.stats.connectionsAccepted++;
    const sc = new ServerConnection(connection, this, this.#router, this.#limits, this.#log);
    this.#connections.add(sc);
    sc.start().finally(() => this.#connections.delete(sc));
  }

  #refused(error: IrohError): void {
    this.stats.connectionsRefused++;
    const who = error.remoteId ?? "unknown endpoint";
    const suppressed = this.#refusalLog.allow(`refused:${who}`);
    if (suppressed >= 0) {
      this.#log.warn("refused a connection", {
        peer: who,
        reason: error.message,
        ...(suppressed > 0 ? { suppressed_since_last: suppressed } : {}),
      });
    }
  }

  /** @internal */
  get draining(): boolean {
    return this.#draining;
  }

  /** @internal Logs a protocol error at most once a minute per peer. */
  protocolError(peer: string, error: Error): void {
    this.stats.protocolErrors++;
    const suppressed = this.#refusalLog.allow(`protocol:${peer}`);
    if (suppressed >= 0) {
      this.#log.warn("closed a connection for a protocol error", { peer, error: error.message });
    }
  }
}

interface Call {
  readonly controller: AbortController;
  readonly timer: ReturnType<typeof setTimeout> | undefined;
}

class ServerConnection {
  readonly #conn: IrohConnection;
  readonly #server: IrohRpcServer;
  readonly #router: RpcRouter;
  readonly #limits: RpcLimits;
  readonly #log: Logger;
  readonly #peer: PeerInfo;
  readonly #streams = new Map<FrameStream, IrohBiStream>();
  readonly #calls = new Map<bigint, Call>();
  #closing = false;

  constructor(
    conn: IrohConnection,
    server: IrohRpcServer,
    router: RpcRouter,
    limits: RpcLimits,
    log: Logger,
  ) {
    this.#conn = conn;
    this.#server = server;
    this.#router = router;
    this.#limits = limits;
    this.#log = log;
    this.#peer = { transport: "iroh", id: conn.remoteId };
  }

  get inflight(): number {
    return this.#calls.size;
  }

  /** The peer's endpoint id. */
  get peerId(): string {
    return this.#peer.id;
  }

  /** Accepts streams until the connection ends; resolves then. */
  async start(): Promise<void> {
    const closed = this.#conn.closed();
    closed.then(() => this.#teardown());
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
        }, {
          maxFrameBytes: this.#limits.maxFrameBytes,
          source: `endpoint ${short(this.#peer.id)}`,
        });
        this.#streams.set(fs, bi);
        fs.start();
      }
    } catch (e) {
      if (!(e instanceof IrohError)) throw e;
    }
    await closed;
  }

  /** Closes after flushing what is queued; in-flight calls are abandoned. */
  async close(code: number, reason: string, graceful = true): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const call of this.#calls.values()) {
      call.controller.abort(
        new RpcError(Code.UNAVAILABLE, `server closed the connection: ${reason}`),
      );
    }
    if (graceful) {
      // Give queued responses to the binding and end our side of each stream cleanly.
      await Promise.all([...this.#streams].map(async ([fs, bi]) => {
        await fs.flushed().catch(() => {});
        await bi.send.finish().catch(() => {});
      }));
    }
    this.#conn.close(code, reason);
  }

  #onStreamClose(fs: FrameStream, bi: IrohBiStream, error: Error | null): void {
    this.#streams.delete(fs);
    if (!(error instanceof ProtocolError)) return;
    this.#server.protocolError(this.#peer.id, error);
    if (error.code === "UNSUPPORTED_VERSION") {
      // Say which versions we speak, in a frame the peer can parse, then hang up.
      const status = new RpcError(
        Code.FAILED_PRECONDITION,
        `${error.message}`,
        { supportedVersions: SUPPORTED_VERSIONS },
      );
      const frame = encodeFrame({
        type: FrameType.Error,
        flags: FLAG_LAST,
        priority: 4,
        method: 0,
        requestId: 0n,
        deadlineMs: 0,
      }, encodeStatus(status));
      bi.send.write(frame).then(() => bi.send.finish()).catch(() => {}).finally(() =>
        setTimeout(() => this.#conn.close(RpcCloseCode.ProtocolError, truncate(error.message)), 50)
      );
      return;
    }
    this.#conn.close(RpcCloseCode.ProtocolError, truncate(error.message));
  }

  #onFrame(fs: FrameStream, frame: Frame): void {
    switch (frame.type) {
      case FrameType.Request:
        if (frame.method >>> 8 === RAFT_SERVICE_ID) {
          // A malformed Raft payload is garbage like any other: it fails the stream.
          try {
            this.#server.raftMessage(decodeRaftFrame(frame), this.#peer);
          } catch (e) {
            fs.close(e instanceof Error ? e : new Error(String(e)));
          }
          return;
        }
        this.#startCall(fs, frame);
        return;
      case FrameType.Cancel:
        this.#calls.get(frame.requestId)?.controller.abort(
          new RpcError(Code.CANCELLED, "cancelled by the caller"),
        );
        return;
      case FrameType.Heartbeat:
        fs.send({ ...frame, flags: FLAG_LAST, deadlineMs: 0 });
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

  #startCall(fs: FrameStream, frame: Frame): void {
    const { requestId, priority, method } = frame;
    const reply = (type: FrameType, payload: Uint8Array) => {
      if (!fs.isClosed) {
        fs.send({ type, flags: FLAG_LAST, priority, method, requestId, deadlineMs: 0 }, payload);
      }
    };
    const fail = (error: RpcError) => {
      this.#server.stats.callsFailed++;
      reply(FrameType.Error, encodeStatus(error));
    };
    if (this.#server.draining || this.#closing) {
      return fail(new RpcError(Code.UNAVAILABLE, "server is shutting down; call another node"));
    }
    if (this.#calls.has(requestId)) {
      return fail(
        new RpcError(Code.INVALID_ARGUMENT, `request id ${requestId} is already in flight`),
      );
    }
    if (this.#calls.size >= this.#limits.maxInflightRequests) {
      return fail(
        new RpcError(
          Code.RESOURCE_EXHAUSTED,
          `too many calls in flight on this connection (max_inflight_requests ${this.#limits.maxInflightRequests})`,
        ),
      );
    }
    const bound = this.#router.resolve(method);
    if (!bound) {
      return fail(
        new RpcError(
          Code.UNIMPLEMENTED,
          `no method 0x${method.toString(16).padStart(4, "0")} (service ${method >>> 8}, method ${
            method & 0xff
          }) on this node`,
        ),
      );
    }
    if ((frame.flags & FLAG_LAST) === 0) {
      return fail(
        new RpcError(
          Code.INVALID_ARGUMENT,
          `${bound.info.label}: multi-frame requests are not supported`,
        ),
      );
    }
    // A server stream the caller gave no deadline runs until cancelled (a watch);
    // a unary call without one gets the default. Either is capped at the maximum.
    const unbounded = frame.deadlineMs === 0 && bound.info.kind === "server_streaming";
    const deadlineMs = unbounded ? Infinity : Math.min(
      frame.deadlineMs || this.#limits.defaultDeadlineMs,
      this.#limits.maxDeadlineMs,
    );
    const controller = new AbortController();
    const timer = unbounded ? undefined : setTimeout(() =>
      controller.abort(
        new RpcError(
          Code.DEADLINE_EXCEEDED,
          `${bound.info.label}: deadline of ${deadlineMs} ms passed on the server`,
        ),
      ), deadlineMs);
    this.#calls.set(requestId, { controller, timer });
    this.#server.stats.callsStarted++;
    const signal = controller.signal;
    const ctx: CallContext = {
      method: bound.info,
      peer: this.#peer,
      signal,
      deadline: unbounded ? null : Date.now() + deadlineMs,
    };
    const payload = frame.payload;

    const run = async () => {
      if (bound.unary) {
        reply(FrameType.Response, await untilAborted(bound.unary(payload, ctx), signal));
        return;
      }
      for await (const item of bound.stream!(payload, ctx)) {
        signal.throwIfAborted();
        reply(FrameType.StreamData, item);
        // Back-pressure: a slow reader slows the handler, not our memory.
        if (fs.queuedBytes > 0) await untilAborted(fs.drained(), signal);
      }
      signal.throwIfAborted();
      reply(FrameType.StreamEnd, EMPTY);
    };
    run().catch((e) => {
      const error = toRpcError(signal.aborted ? signal.reason : e);
      // A cancelled call's caller is gone; anything else is reported.
      if (error.code !== Code.CANCELLED) fail(error);
      if (error.code === Code.INTERNAL) {
        this.#log.warn("handler failed", {
          method: bound.info.label,
          peer: short(this.#peer.id),
          error: e,
        });
      }
    }).finally(() => {
      clearTimeout(timer);
      this.#calls.delete(requestId);
    });
  }

  #teardown(): void {
    for (const call of this.#calls.values()) {
      call.controller.abort(new RpcError(Code.UNAVAILABLE, "connection closed"));
    }
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
