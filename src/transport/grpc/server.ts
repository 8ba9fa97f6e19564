/**
 * The gRPC side of the service framework, server half: the implementations
 * registered in an {@link RpcRouter} served over `@grpc/grpc-js`, so one
 * implementation answers on both transports.
 *
 * Owns: {@link GrpcRpcServer}. Imports `@grpc/grpc-js`, `node:net`, `rpc/`
 * (router, call lifecycle, outbound bound, errors, limits, Raft ingress,
 * services), the Raft codec, the generated Raft envelope, `util/address.ts`
 * (pure host:port parsing), `util/log.ts` and this folder's errors and wire
 * modules.
 *
 * The TCP listener is a `node:net` server whose connections are handed to
 * grpc-js (`createConnectionInjector`), so shutdown can close them without
 * an HTTP/2 GOAWAY, which crashes Deno 2.9.6 clients (see `shutdown`), and so
 * the server can watch what each socket holds for its client.
 *
 * Handlers move raw bytes: grpc-js's (de)serializers pass buffers through and
 * the router's bytes-level {@link BoundMethod} decodes once. Calls run by the
 * shared call lifecycle (`rpc/call.ts`), as on Iroh: a deadline (the
 * caller's `grpc-timeout`, else `defaultDeadlineMs` for a unary call and none
 * for a stream, never above `maxDeadlineMs`) after which the handler's signal
 * aborts and the caller is answered DEADLINE_EXCEEDED; the caller's cancel
 * aborts it with CANCELLED. Per connection (one client's HTTP/2 session, one
 * TCP socket) at most `maxInflightRequests` calls at once, a call counting
 * until its answer has left (its HTTP/2 stream closed); more are answered
 * RESOURCE_EXHAUSTED.
 *
 * What a connection holds for its client (the socket's unsent bytes, plus
 * answers handed to HTTP/2 and not yet sent because the client's flow-control
 * window is shut) is bounded by `maxConnectionBufferBytes`. Past half of it
 * the connection's new calls are refused with RESOURCE_EXHAUSTED and its
 * socket is read one chunk at a time with pauses in between; while the
 * socket itself holds that much, it is not read at all until it drains. Past
 * all of it the socket is destroyed. Reading never stops for good on answers
 * that wait on the client's window: the WINDOW_UPDATE that releases them
 * arrives on that socket.
 *
 * `/blixard.v1.RaftService/Send` is not a router method: its envelope carries
 * Raft codec bytes unchanged, decoded here and offered to the
 * {@link RaftIngress}.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { EventEmitter } from "node:events";
import * as net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { decodeRaftMessage, type RaftMessage } from "../../codec/raft.ts";
import { type HostPort, isLoopback, parseHostPort, whyNotBound } from "../../util/address.ts";
import { RaftAckSchema, RaftEnvelopeSchema } from "../../rpc/gen/blixard/v1/raft_pb.ts";
import {
  type CallObserver,
  type CallSink,
  type CallStats,
  type Clock,
  type ConnectionCalls,
  runCall,
  type ServerCall,
  ServerCalls,
  systemClock,
} from "../../rpc/call.ts";
import { Code, RpcError } from "../../rpc/errors.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../../rpc/limits.ts";
import { OutboundBuffer } from "../../rpc/outbound.ts";
import type { RaftIngress } from "../../rpc/raft_ingress.ts";
import type { BoundMethod, RpcRouter } from "../../rpc/router.ts";
import { type MethodInfo, type PeerInfo, SERVICES } from "../../rpc/services.ts";
import { type Logger, silentLogger } from "../../util/log.ts";
import { type GrpcStatus, GrpcTransportError, statusOf } from "./errors.ts";
import { methodDefinition, RAFT_SEND_PATH, readPem } from "./wire.ts";

/** PEM files of a TLS listener; `caFile` makes it mutual TLS. */
export interface GrpcServerTls {
  /** PEM certificate chain of the listener. */
  readonly certFile: string;
  /** PEM private key of `certFile`. */
  readonly keyFile: string;
  /** PEM CA bundle: clients must present a certificate it signs. */
  readonly caFile?: string;
}

/** Options of a {@link GrpcRpcServer}. */
export interface GrpcRpcServerOptions {
  readonly router: RpcRouter;
  /** `host:port` to listen on; port 0 picks a free one ({@link GrpcRpcServer.start} says which). */
  readonly bind: string;
  readonly tls?: GrpcServerTls;
  /** Serve plaintext on a non-loopback address (config `grpc.allow_insecure`). Default false. */
  readonly allowInsecure?: boolean;
  readonly limits?: Partial<RpcLimits>;
  /**
   * Takes the Raft messages of each RaftService.Send. Without it, Send is
   * refused with UNIMPLEMENTED, as on a node that runs no consensus.
   */
  readonly raftIngress?: RaftIngress;
  readonly logger?: Logger;
  /** Time for call deadlines. Default: the system clock. */
  readonly clock?: Clock;
  /** Told how each call ended (metrics). */
  readonly callObserver?: CallObserver;
}

/** Who called, as gRPC knows it. */
export interface GrpcPeerInfo extends PeerInfo {
  readonly transport: "grpc";
  /** `call.getPeer()`: the remote `ip:port` of the caller's connection (also in `id`). */
  readonly address: string;
}

/** Counters of a server, for tests and metrics. */
export interface GrpcServerStats extends CallStats {
  /** TCP connections accepted. */
  connectionsAccepted: number;
  /** RaftService.Send calls answered with an ack. */
  raftEnvelopes: number;
  /** Raft messages received and decoded. */
  raftMessages: number;
  /** RaftService.Send calls the ingress denied (PERMISSION_DENIED). */
  raftDenied: number;
  /** Raft messages the ingress did not queue (inbox full). */
  raftDropped: number;
  /** RaftService.Send calls refused as malformed. */
  protocolErrors: number;
  /**
   * Times a connection crossed half its buffer bound because its client did
   * not read: its new calls refused and its socket read slowly or not at all.
   */
  readsPaused: number;
  /** Connections destroyed past `maxConnectionBufferBytes`. */
  connectionsOverflowed: number;
}

type UnaryCall = grpc.ServerUnaryCall<Uint8Array, Uint8Array>;
type StreamCall = grpc.ServerWritableStream<Uint8Array, Uint8Array>;
type AnyCall = UnaryCall | StreamCall;

/** One client connection: its socket, its calls and what it holds for the client. */
interface Connection {
  readonly socket: net.Socket | null;
  readonly calls: ConnectionCalls;
  readonly outbound: OutboundBuffer;
  /** Not read until its socket drains: the client reads nothing of what it was sent. */
  blocked: boolean;
  /** Not read for a moment: its answers wait on the client's flow-control window. */
  throttled: boolean;
  cancelThrottle: (() => void) | undefined;
}

/** An admitted call, with the connection it runs on. */
interface Admitted {
  readonly call: ServerCall;
  readonly connection: Connection;
  /** Resolves when the call's HTTP/2 stream closes: its answer has left, or it was reset. */
  readonly closed: Promise<void>;
}

/**
 * While a connection holds more than half its bound in answers that wait on
 * the client's HTTP/2 flow-control window, its socket is read one chunk per
 * this many ms: enough for the WINDOW_UPDATE that releases them, far too
 * little for a client that sends and never reads.
 */
const THROTTLED_READ_INTERVAL_MS = 250;

/** After shutdown gives up on calls, how long it waits for the sockets to send their last answers. */
const FLUSH_MS = 200;
/** How long after its stream closed an answer may still be on its way from HTTP/2 to the socket. */
const HTTP2_WRITE_LAG_MS = 10;

/**
 * Serves a router's services over gRPC.
 *
 * @example
 * ```ts ignore
 * const server = new GrpcRpcServer({ router, bind: "127.0.0.1:0", allowInsecure: false });
 * const { port } = await server.start();
 * // ...
 * const { abandoned } = await server.shutdown(5_000);
 * ```
 */
export class GrpcRpcServer {
  readonly #router: RpcRouter;
  readonly #bind: string;
  readonly #tls: GrpcServerTls | undefined;
  readonly #allowInsecure: boolean;
  readonly #limits: RpcLimits;
  readonly #log: Logger;
  readonly #raftIngress: RaftIngress | undefined;
  readonly #clock: Clock;
  readonly #calls: ServerCalls;
  /** Connections by the client's `ip:port`, as `call.getPeer()` names them. */
  readonly #connections = new Map<string, Connection>();
  #server: grpc.Server | null = null;
  #listener: net.Server | null = null;
  /** Every TCP connection of the listener, so shutdown can close them. */
  readonly #sockets = new Set<net.Socket>();
  /** TCP bytes of the connections already closed; open ones are read from their sockets. */
  readonly #closedBytes = { in: 0, out: 0 };
  #state: "new" | "starting" | "serving" | "draining" | "stopped" = "new";
  #port = 0;
  readonly stats: GrpcServerStats = {
    connectionsAccepted: 0,
    callsStarted: 0,
    callsFailed: 0,
    callsRefused: 0,
    raftEnvelopes: 0,
    raftMessages: 0,
    raftDenied: 0,
    raftDropped: 0,
    protocolErrors: 0,
    readsPaused: 0,
    connectionsOverflowed: 0,
  };

  constructor(options: GrpcRpcServerOptions) {
    this.#router = options.router;
    this.#bind = options.bind;
    this.#tls = options.tls;
    this.#allowInsecure = options.allowInsecure ?? false;
    this.#limits = { ...DEFAULT_RPC_LIMITS, ...options.limits };
    this.#log = options.logger ?? silentLogger;
    this.#raftIngress = options.raftIngress;
    this.#clock = options.clock ?? systemClock;
    this.#calls = new ServerCalls({
      stats: this.stats,
      log: this.#log,
      clock: this.#clock,
      ...(options.callObserver ? { observer: options.callObserver } : {}),
    });
    // Fails here, not at the first connection, if the bound is unusable.
    new OutboundBuffer(this.#limits.maxConnectionBufferBytes, { onOverflow() {} });
  }

  /** The limits in force. */
  get limits(): RpcLimits {
    return this.#limits;
  }

  /** Calls running now, over all connections. */
  get inflightCount(): number {
    return this.#calls.inflight;
  }

  /** TCP connections open now. */
  get connectionCount(): number {
    return this.#sockets.size;
  }

  /** TCP bytes received and sent on the listener's connections since it started. */
  bytes(): { in: number; out: number } {
    let received = this.#closedBytes.in;
    let sent = this.#closedBytes.out;
    for (const socket of this.#sockets) {
      received += socket.bytesRead;
      sent += socket.bytesWritten;
    }
    return { in: received, out: sent };
  }

  /** The port listened on, once started; 0 before. */
  get port(): number {
    return this.#port;
  }

  /**
   * Checks the address and TLS files, binds, and serves. Refuses a plaintext
   * listener on a non-loopback address unless `allowInsecure`.
   */
  async start(): Promise<{ port: number }> {
    if (this.#state !== "new") {
      throw new GrpcTransportError("BAD_STATE", `grpc: server on ${this.#bind} already started`);
    }
    this.#state = "starting";
    let credentials: grpc.ServerCredentials;
    let address: HostPort;
    try {
      address = this.#address();
      credentials = this.#credentials(address);
    } catch (e) {
      this.#state = "stopped";
      throw e;
    }
    const server = new grpc.Server({
      "grpc.max_receive_message_length": this.#limits.maxFrameBytes,
      "grpc.max_send_message_length": this.#limits.maxFrameBytes,
    });
    this.#register(server);
    // The listener is ours, its connections handed to grpc-js: so shutdown
    // can close them without the GOAWAY that grpc-js would send (see shutdown()).
    const injector = server.createConnectionInjector(credentials);
    const listener = net.createServer((socket) => {
      this.#adopt(socket);
      injector.injectConnection(socket);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        listener.once("error", reject);
        listener.listen({ host: address.host, port: address.port }, () => {
          listener.off("error", reject);
          resolve();
        });
      });
    } catch (e) {
      this.#state = "stopped";
      server.forceShutdown();
      throw new GrpcTransportError(
        "BIND_FAILED",
        `grpc.bind = "${this.#bind}": cannot listen: ${whyNotBound(e, "; choose another port")}`,
        { cause: e },
      );
    }
    listener.on("error", (e) => this.#log.warn("gRPC listener error", { error: e }));
    this.#port = (listener.address() as net.AddressInfo).port;
    this.#server = server;
    this.#listener = listener;
    this.#state = "serving";
    this.#log.info("gRPC listener up", {
      bind: this.#bind,
      port: this.#port,
      tls: this.#tls ? (this.#tls.caFile ? "mutual" : "server") : "off",
    });
    return { port: this.#port };
  }

  /**
   * Stops gracefully: refuses new calls (UNAVAILABLE, with `reason` as the
   * message when given) and connections, lets calls in flight finish for up
   * to `timeoutMs`, then cancels the rest and closes every connection.
   * Returns how many calls were abandoned.
   *
   * Connections are closed at the TCP level, without an HTTP/2 GOAWAY:
   * Deno 2.9.6's `node:http2` client can crash the whole process inside
   * nghttp2 when it receives a GOAWAY (denoland/deno#36788; reproduced here
   * with grpc-js's tryShutdown and forceShutdown alike, never with a plain
   * close). Clients see the connection end, which is UNAVAILABLE to them.
   */
  async shutdown(timeoutMs: number = 10_000, reason?: string): Promise<{ abandoned: number }> {
    const server = this.#server;
    if (this.#state === "stopped" || this.#state === "draining") return { abandoned: 0 };
    this.#state = "draining";
    if (!server) {
      this.#state = "stopped";
      return { abandoned: 0 };
    }
    this.#listener?.close();
    const { abandoned } = await this.#calls.drain(timeoutMs, reason);
    // A closed HTTP/2 stream's last frames reach its socket a moment later.
    await new Promise<void>((resolve) => this.#clock.after(HTTP2_WRITE_LAG_MS, resolve));
    await this.#socketsFlushed(FLUSH_MS);
    for (const socket of this.#sockets) {
      socket.destroy();
      this.#closedBytes.in += socket.bytesRead;
      this.#closedBytes.out += socket.bytesWritten;
    }
    this.#sockets.clear();
    server.forceShutdown();
    this.#state = "stopped";
    return { abandoned };
  }

  /** Resolves when no socket holds unsent bytes, or after `timeoutMs`. */
  #socketsFlushed(timeoutMs: number): Promise<void> {
    const pending = [...this.#sockets].filter((s) => s.writableLength > 0 && !s.destroyed);
    if (pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      let left = pending.length;
      const cleanups: (() => void)[] = [];
      const finish = () => {
        for (const cleanup of cleanups) cleanup();
        resolve();
      };
      cleanups.push(this.#clock.after(timeoutMs, finish));
      for (const socket of pending) {
        const done = () => {
          if (--left === 0) finish();
        };
        socket.once("drain", done);
        socket.once("close", done);
        cleanups.push(() => {
          socket.off("drain", done);
          socket.off("close", done);
        });
      }
    });
  }

  /** Tracks a new TCP connection: its calls and its outbound bound. */
  #adopt(socket: net.Socket): void {
    this.#sockets.add(socket);
    this.stats.connectionsAccepted++;
    const address = `${socket.remoteAddress}:${socket.remotePort}`;
    const connection = this.#newConnection(address, socket);
    this.#connections.set(address, connection);
    socket.on("drain", () => {
      connection.blocked = false;
      if (!connection.throttled) socket.resume();
      connection.outbound.check();
    });
    // Seen beside HTTP/2's own reading: each chunk read while the bound is
    // half full holds the next one back for a moment.
    socket.on("data", () => {
      if (!connection.outbound.paused || connection.throttled) return;
      connection.throttled = true;
      socket.pause();
      connection.cancelThrottle = this.#clock.after(THROTTLED_READ_INTERVAL_MS, () => {
        connection.throttled = false;
        if (!connection.blocked) socket.resume();
      });
    });
    socket.once("close", () => {
      connection.cancelThrottle?.();
      if (this.#sockets.delete(socket)) {
        this.#closedBytes.in += socket.bytesRead;
        this.#closedBytes.out += socket.bytesWritten;
      }
      if (this.#connections.get(address) === connection) this.#connections.delete(address);
    });
  }

  #newConnection(address: string, socket: net.Socket | null): Connection {
    const max = this.#limits.maxConnectionBufferBytes;
    const connection: Connection = {
      socket,
      calls: this.#calls.connection(this.#limits),
      blocked: false,
      throttled: false,
      cancelThrottle: undefined,
      outbound: new OutboundBuffer(max, {
        // Counted, not logged: one large answer to a slow reader pauses too.
        onPause: () => this.stats.readsPaused++,
        onOverflow: (bytes) => {
          this.stats.connectionsOverflowed++;
          this.#calls.warn(address, "closed a connection whose client does not read", {
            peer: address,
            reason:
              `${bytes} bytes of answers waited for the client, over max_connection_buffer_bytes ${max}`,
          });
          socket?.destroy();
        },
      }, () => socket?.writableLength ?? 0),
    };
    return connection;
  }

  /** The connection a call came on (a call always has one; a stray address gets its own). */
  #connectionOf(address: string): Connection {
    let connection = this.#connections.get(address);
    if (!connection) {
      connection = this.#newConnection(address, null);
      this.#connections.set(address, connection);
    }
    return connection;
  }

  /** Re-evaluates a connection's bound; stops reading a socket that holds too much itself. */
  #checkOutbound(connection: Connection): void {
    connection.outbound.check();
    const socket = connection.socket;
    if (
      socket && !connection.blocked && !socket.destroyed &&
      socket.writableLength > connection.outbound.softBytes
    ) {
      // Until 'drain': the client reads nothing, so nothing it sends can be waited for.
      connection.blocked = true;
      socket.pause();
    }
  }

  #address(): HostPort {
    const address = parseHostPort(this.#bind);
    if (!address) {
      throw new GrpcTransportError(
        "INVALID_ARGUMENT",
        `grpc.bind = "${this.#bind}": expected "host:port" (e.g. "127.0.0.1:7400" or "[::1]:7400")`,
      );
    }
    return address;
  }

  #credentials(address: HostPort): grpc.ServerCredentials {
    if (!this.#tls) {
      if (!isLoopback(address) && !this.#allowInsecure) {
        throw new GrpcTransportError(
          "INSECURE",
          `grpc.bind = "${this.#bind}": refusing to serve plaintext gRPC on a non-loopback address, ` +
            "where anyone who can reach it could call every service, Raft included. " +
            "Either set grpc.tls.cert_file and grpc.tls.key_file (and grpc.tls.ca_file for mutual TLS), " +
            "or set allow_insecure = true in [grpc] to serve plaintext on purpose.",
        );
      }
      return grpc.ServerCredentials.createInsecure();
    }
    const cert = readPem(this.#tls.certFile, "grpc.tls.cert_file");
    const key = readPem(this.#tls.keyFile, "grpc.tls.key_file");
    // Without a CA file, an empty CA rather than null: given null, grpc-js
    // loads the bundle named by GRPC_DEFAULT_SSL_ROOTS_FILE_PATH as the CA
    // of client certificates, and Deno's TLS server then lists every one of
    // its names in the handshake, which clients refuse as too large.
    const ca = this.#tls.caFile === undefined
      ? null
      : readPem(this.#tls.caFile, "grpc.tls.ca_file");
    try {
      return grpc.ServerCredentials.createSsl(
        ca ?? Buffer.alloc(0),
        [{ cert_chain: cert, private_key: key }],
        ca !== null,
      );
    } catch (e) {
      throw new GrpcTransportError(
        "TLS_FILE",
        `grpc.tls: cannot use cert_file "${this.#tls.certFile}" with key_file "${this.#tls.keyFile}": ${
          (e as Error).message
        }`,
        { cause: e },
      );
    }
  }

  #register(server: grpc.Server): void {
    for (const name of this.#router.services()) {
      const definition: Record<string, grpc.MethodDefinition<Uint8Array, Uint8Array>> = {};
      const implementation: grpc.UntypedServiceImplementation = {};
      for (const info of SERVICES[name].methods) {
        const bound = this.#router.resolve(info.wireId);
        if (!bound) continue;
        definition[info.name] = methodDefinition(info.path, info.kind === "server_streaming");
        implementation[info.name] = info.kind === "unary"
          ? (call: UnaryCall, callback: grpc.sendUnaryData<Uint8Array>) =>
            this.#unary(bound, call, callback)
          : (call: StreamCall) => this.#stream(bound, call);
      }
      server.addService(definition, implementation);
    }
    server.addService(
      { Send: methodDefinition(RAFT_SEND_PATH, false) },
      {
        Send: (call: UnaryCall, callback: grpc.sendUnaryData<Uint8Array>) =>
          this.#raftSend(call, callback),
      },
    );
  }

  #unary(bound: BoundMethod, call: UnaryCall, callback: grpc.sendUnaryData<Uint8Array>): void {
    const admitted = this.#admit(call, bound.info);
    if (!("call" in admitted)) return callback(admitted);
    this.#run(admitted, bound, call.request, {
      response: (bytes) => {
        this.#hold(admitted, bytes.length);
        callback(null, bytes);
      },
      item() {},
      end() {},
      error: (error) => callback(statusOf(error)),
    });
  }

  #stream(bound: BoundMethod, call: StreamCall): void {
    const admitted = this.#admit(call, bound.info);
    if (!("call" in admitted)) {
      call.emit("error", admitted);
      return;
    }
    const { connection, closed } = admitted;
    // Items written and not yet taken by HTTP/2; what is left of them when the stream closes was dropped.
    let unsent = 0;
    closed.then(() => {
      connection.outbound.release(unsent);
      unsent = 0;
    });
    this.#run(admitted, bound, call.request, {
      response() {},
      item: (bytes) => {
        const n = bytes.length;
        unsent += n;
        connection.outbound.add(n);
        const ready = call.write(bytes, () => {
          if (unsent < n) return;
          unsent -= n;
          connection.outbound.release(n);
        });
        this.#checkOutbound(connection);
        // Back-pressure: a slow reader slows the handler, not our memory.
        return ready ? undefined : drained(call);
      },
      end: () => call.end(),
      error: (error) => {
        if (!call.destroyed) call.emit("error", statusOf(error));
      },
    });
  }

  /** Runs an admitted call; it keeps its slot until its HTTP/2 stream closes. */
  #run(admitted: Admitted, bound: BoundMethod, request: Uint8Array, sink: CallSink): void {
    runCall(admitted.call, bound, request, { ...sink, sent: () => admitted.closed });
  }

  /** Counts an answer of `bytes` handed to HTTP/2 until its stream closes. */
  #hold(admitted: Admitted, bytes: number): void {
    const { connection, closed } = admitted;
    connection.outbound.add(bytes);
    closed.then(() => connection.outbound.release(bytes));
    this.#checkOutbound(connection);
  }

  /** Admits a call through the lifecycle, or says why it may not run. */
  #admit(call: AnyCall, info: MethodInfo): Admitted | GrpcStatus {
    const address = call.getPeer();
    const connection = this.#connectionOf(address);
    this.#checkOutbound(connection);
    if (connection.outbound.paused) {
      return statusOf(this.#calls.refuse(
        new RpcError(
          Code.RESOURCE_EXHAUSTED,
          `this connection holds ${connection.outbound.bytes} bytes of answers its client has not read ` +
            `(over half of max_connection_buffer_bytes ${connection.outbound.maxBytes}); read them, then call again`,
        ),
        info,
      ));
    }
    const callerDeadline = deadlineMsOf(call.getDeadline());
    const admitted = connection.calls.admit(
      info,
      this.#peerOf(call, address),
      callerDeadline === Infinity ? null : callerDeadline - this.#clock.now(),
    );
    if (admitted instanceof RpcError) return statusOf(admitted);
    // grpc-js says 'cancelled' when the call's stream closes for any reason; only
    // one that comes while the handler runs is the caller going away (or
    // grpc-js's own deadline timer, which answered DEADLINE_EXCEEDED).
    const closed = new Promise<void>((resolve) => {
      (call as EventEmitter).once("cancelled", () => {
        resolve();
        const deadline = admitted.ctx.deadline;
        admitted.abort(
          deadline !== null && this.#clock.now() >= deadline
            ? new RpcError(
              Code.DEADLINE_EXCEEDED,
              `${info.label}: deadline of ${admitted.deadlineMs} ms passed on the server`,
            )
            : new RpcError(Code.CANCELLED, `${info.label}: cancelled by the caller`),
        );
      });
    });
    return { call: admitted, connection, closed };
  }

  #peerOf(call: AnyCall, address: string): GrpcPeerInfo {
    if (this.#tls?.caFile === undefined) return { transport: "grpc", id: address, address };
    const certificate = call.getAuthContext().sslPeerCertificate;
    const names = certificate ? certificateNames(certificate) : [];
    return names.length === 0
      ? { transport: "grpc", id: address, address }
      : { transport: "grpc", id: address, address, certificateNames: names };
  }

  #raftSend(call: UnaryCall, callback: grpc.sendUnaryData<Uint8Array>): void {
    const address = call.getPeer();
    const refused = this.#calls.refusal();
    if (refused) return callback(statusOf(refused));
    const ingress = this.#raftIngress;
    if (!ingress) {
      return callback(statusOf(this.#calls.refuse(
        new RpcError(
          Code.UNIMPLEMENTED,
          "raft.Send: this node runs no consensus; it takes no Raft messages",
        ),
      )));
    }
    let messages: RaftMessage[];
    try {
      // Decode everything before offering anything: a bad envelope is refused whole.
      const envelope = fromBinary(RaftEnvelopeSchema, call.request);
      messages = envelope.messages.map((bytes, i) => {
        try {
          return decodeRaftMessage(bytes);
        } catch (e) {
          throw new Error(`message ${i} (${bytes.length} bytes): ${(e as Error).message}`);
        }
      });
    } catch (e) {
      this.stats.protocolErrors++;
      this.#calls.warn(address, "refused a malformed Raft envelope", { peer: address, error: e });
      return callback(statusOf(this.#calls.refuse(
        new RpcError(
          Code.INVALID_ARGUMENT,
          `raft.Send: malformed envelope (${call.request.length} bytes): ${(e as Error).message}`,
        ),
      )));
    }
    this.stats.raftMessages += messages.length;
    const offer = ingress.offer(messages, this.#peerOf(call, address));
    if (offer.denied) {
      this.stats.raftDenied++;
      this.stats.callsFailed++;
      return callback({ code: Code.PERMISSION_DENIED, details: offer.denied.message });
    }
    this.stats.raftEnvelopes++;
    this.stats.raftDropped += messages.length - offer.accepted;
    callback(null, toBinary(RaftAckSchema, create(RaftAckSchema, { accepted: offer.accepted })));
  }
}

/**
 * The names a verified client certificate vouches for: its subject CN, then
 * its DNS and IP subject alternative names (`"DNS:node-2, IP Address:10.0.0.2"`).
 */
export function certificateNames(
  certificate: { subject?: { CN?: string | string[] }; subjectaltname?: string },
): string[] {
  const names: string[] = [];
  const cn = certificate.subject?.CN;
  for (const n of Array.isArray(cn) ? cn : cn === undefined ? [] : [cn]) names.push(n);
  for (const part of (certificate.subjectaltname ?? "").split(",")) {
    const m = /^\s*(DNS|IP Address):(.+?)\s*$/.exec(part);
    if (m && !names.includes(m[2]!)) names.push(m[2]!);
  }
  return names;
}

/** A grpc-js deadline as `Date.now()` milliseconds; Infinity for none. */
function deadlineMsOf(deadline: grpc.Deadline): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

function drained(call: StreamCall): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("close", done);
      resolve();
    };
    call.on("drain", done);
    call.on("close", done);
  });
}
