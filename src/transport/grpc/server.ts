/**
 * The gRPC side of the service framework, server half: the implementations
 * registered in an {@link RpcRouter} served over `@grpc/grpc-js`, so one
 * implementation answers on both transports.
 *
 * Owns: {@link GrpcRpcServer}. Imports `@grpc/grpc-js`, `node:net`, `rpc/`
 * (router, errors, limits, services), the Raft codec, the generated Raft
 * envelope, `util/address.ts` (pure host:port parsing), `util/log.ts` and
 * this folder's errors and wire modules.
 *
 * The TCP listener is a `node:net` server whose connections are handed to
 * grpc-js (`createConnectionInjector`), so shutdown can close them without
 * an HTTP/2 GOAWAY, which crashes Deno 2.9.6 clients (see `shutdown`).
 *
 * Handlers move raw bytes: grpc-js's (de)serializers pass buffers through and
 * the router's bytes-level {@link BoundMethod} decodes once. Per call: a
 * deadline (the caller's `grpc-timeout`, else `defaultDeadlineMs` for a unary
 * call and none for a stream, never above `maxDeadlineMs`) after which the
 * handler's signal aborts and the caller is
 * answered DEADLINE_EXCEEDED; the caller's cancel aborts it with CANCELLED.
 * Per connection (one client's HTTP/2 session, told apart by its remote
 * address and port) at most `maxInflightRequests` calls run at once; more are
 * answered RESOURCE_EXHAUSTED, as on Iroh.
 *
 * `/blixard.v1.RaftService/Send` is not a router method: its envelope carries
 * Raft codec bytes unchanged, decoded here and handed to `onRaftMessage`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { EventEmitter } from "node:events";
import * as net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { decodeRaftMessage, type RaftMessage } from "../../codec/raft.ts";
import { type HostPort, isLoopback, parseHostPort } from "../../util/address.ts";
import { RaftAckSchema, RaftEnvelopeSchema } from "../../rpc/gen/blixard/v1/raft_pb.ts";
import { Code, RpcError, toRpcError } from "../../rpc/errors.ts";
import { untilAborted } from "../../rpc/abort.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../../rpc/limits.ts";
import type { BoundMethod, RpcRouter } from "../../rpc/router.ts";
import { type CallContext, type MethodInfo, type PeerInfo, SERVICES } from "../../rpc/services.ts";
import { type Logger, RateLimiter, silentLogger } from "../../util/log.ts";
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
  /** Receives the Raft messages peers send. Without it they are dropped (RaftAck.accepted = 0). */
  readonly onRaftMessage?: (message: RaftMessage, from: PeerInfo) => void;
  readonly logger?: Logger;
}

/** Who called, as gRPC knows it. */
export interface GrpcPeerInfo extends PeerInfo {
  readonly transport: "grpc";
  /** `call.getPeer()`: the remote `ip:port` of the caller's connection (also in `id`). */
  readonly address: string;
}

/** Counters of a server, for tests and metrics. */
export interface GrpcServerStats {
  /** Calls that reached a handler. */
  callsStarted: number;
  /** Calls answered with an error, refusals included (not those the caller cancelled). */
  callsFailed: number;
  /** Calls refused before a handler ran: over `maxInflightRequests`, or shutting down. */
  callsRefused: number;
  /** RaftService.Send calls answered. */
  raftEnvelopes: number;
  /** Raft messages received. */
  raftMessages: number;
  /** RaftService.Send calls refused as malformed. */
  protocolErrors: number;
}

type UnaryCall = grpc.ServerUnaryCall<Uint8Array, Uint8Array>;
type StreamCall = grpc.ServerWritableStream<Uint8Array, Uint8Array>;
type AnyCall = UnaryCall | StreamCall;

/** One call running on the server. */
interface Active {
  readonly controller: AbortController;
}

/** What {@link GrpcRpcServer} sets up for one admitted call. */
interface Admitted {
  readonly ctx: CallContext;
  /** The call ended well: frees its slot. */
  done(): void;
  /** The call failed: frees its slot, counts and logs, returns the status to answer. */
  fail(error: unknown): GrpcStatus;
}

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
  readonly #onRaftMessage: ((message: RaftMessage, from: PeerInfo) => void) | undefined;
  readonly #failureLog = new RateLimiter(60_000);
  readonly #active = new Set<Active>();
  /** Calls in flight per connection (remote `ip:port`). */
  readonly #perConnection = new Map<string, number>();
  #server: grpc.Server | null = null;
  #listener: net.Server | null = null;
  /** Every TCP connection of the listener, so shutdown can close them. */
  readonly #sockets = new Set<net.Socket>();
  #state: "new" | "starting" | "serving" | "draining" | "stopped" = "new";
  #port = 0;
  readonly stats: GrpcServerStats = {
    callsStarted: 0,
    callsFailed: 0,
    callsRefused: 0,
    raftEnvelopes: 0,
    raftMessages: 0,
    protocolErrors: 0,
  };

  constructor(options: GrpcRpcServerOptions) {
    this.#router = options.router;
    this.#bind = options.bind;
    this.#tls = options.tls;
    this.#allowInsecure = options.allowInsecure ?? false;
    this.#limits = { ...DEFAULT_RPC_LIMITS, ...options.limits };
    this.#log = options.logger ?? silentLogger;
    this.#onRaftMessage = options.onRaftMessage;
  }

  /** The limits in force. */
  get limits(): RpcLimits {
    return this.#limits;
  }

  /** Calls running now, over all connections. */
  get inflightCount(): number {
    return this.#active.size;
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
      this.#sockets.add(socket);
      socket.once("close", () => this.#sockets.delete(socket));
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
        `grpc: cannot listen on ${this.#bind}: ${(e as Error).message}`,
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
   * Stops gracefully: refuses new calls (UNAVAILABLE) and connections, lets
   * calls in flight finish for up to `timeoutMs`, then cancels the rest and
   * closes every connection. Returns how many calls were abandoned.
   *
   * Connections are closed at the TCP level, without an HTTP/2 GOAWAY:
   * Deno 2.9.6's `node:http2` client can crash the whole process inside
   * nghttp2 when it receives a GOAWAY (denoland/deno#36788; reproduced here
   * with grpc-js's tryShutdown and forceShutdown alike, never with a plain
   * close). Clients see the connection end, which is UNAVAILABLE to them.
   */
  async shutdown(timeoutMs: number = 10_000): Promise<{ abandoned: number }> {
    const server = this.#server;
    if (this.#state === "stopped" || this.#state === "draining") return { abandoned: 0 };
    this.#state = "draining";
    if (!server) {
      this.#state = "stopped";
      return { abandoned: 0 };
    }
    this.#listener?.close();
    const until = Date.now() + timeoutMs;
    while (this.#active.size > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, Math.min(10, until - Date.now())));
    }
    const abandoned = this.#active.size;
    for (const call of this.#active) {
      call.controller.abort(new RpcError(Code.UNAVAILABLE, "server is shutting down"));
    }
    // Let the last answers (and the abandoned calls' UNAVAILABLE) reach the sockets.
    const flushUntil = Date.now() + 200;
    do {
      await new Promise((r) => setTimeout(r, 10));
    } while ([...this.#sockets].some((s) => s.writableLength > 0) && Date.now() < flushUntil);
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    server.forceShutdown();
    this.#state = "stopped";
    return { abandoned };
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
    if ("code" in admitted) return callback(admitted);
    const signal = admitted.ctx.signal;
    untilAborted(bound.unary!(call.request, admitted.ctx), signal).then(
      (response) => {
        admitted.done();
        callback(null, response);
      },
      (e) => callback(admitted.fail(signal.aborted ? signal.reason : e)),
    );
  }

  #stream(bound: BoundMethod, call: StreamCall): void {
    const admitted = this.#admit(call, bound.info);
    if ("code" in admitted) {
      call.emit("error", admitted);
      return;
    }
    const signal = admitted.ctx.signal;
    const run = async () => {
      const items = bound.stream!(call.request, admitted.ctx)[Symbol.asyncIterator]();
      try {
        for (;;) {
          // Raced with the signal: a handler waiting for its next event is
          // abandoned at once when the call ends, not at its next item.
          const next = await untilAborted(items.next(), signal);
          if (next.done) break;
          signal.throwIfAborted();
          // Back-pressure: a slow reader slows the handler, not our memory.
          if (!call.write(next.value)) await untilAborted(drained(call), signal);
        }
      } finally {
        if (signal.aborted) items.return?.().catch(() => {});
      }
      signal.throwIfAborted();
    };
    run().then(
      () => {
        admitted.done();
        call.end();
      },
      (e) => {
        const status = admitted.fail(signal.aborted ? signal.reason : e);
        if (!call.destroyed) call.emit("error", status);
      },
    );
  }

  /** Starts a call's bookkeeping, or says why it may not run. */
  #admit(call: AnyCall, info: MethodInfo): Admitted | GrpcStatus {
    const address = call.getPeer();
    if (this.#state === "draining" || this.#state === "stopped") {
      return this.#refuse(
        new RpcError(Code.UNAVAILABLE, "server is shutting down; call another node"),
      );
    }
    const running = this.#perConnection.get(address) ?? 0;
    if (running >= this.#limits.maxInflightRequests) {
      return this.#refuse(
        new RpcError(
          Code.RESOURCE_EXHAUSTED,
          `too many calls in flight on this connection (max_inflight_requests ${this.#limits.maxInflightRequests})`,
        ),
      );
    }
    const now = Date.now();
    const callerDeadline = deadlineMsOf(call.getDeadline());
    // A server stream the caller gave no deadline runs until cancelled (a watch);
    // a unary call without one gets the default. Either is capped at the maximum.
    const unbounded = callerDeadline === Infinity && info.kind === "server_streaming";
    const deadlineMs = unbounded ? Infinity : Math.max(
      0,
      Math.min(
        callerDeadline === Infinity ? this.#limits.defaultDeadlineMs : callerDeadline - now,
        this.#limits.maxDeadlineMs,
      ),
    );
    const deadline = now + deadlineMs;
    const controller = new AbortController();
    const timer = unbounded ? undefined : setTimeout(() =>
      controller.abort(
        new RpcError(
          Code.DEADLINE_EXCEEDED,
          `${info.label}: deadline of ${deadlineMs} ms passed on the server`,
        ),
      ), deadlineMs);
    const active: Active = { controller };
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      this.#active.delete(active);
      const n = (this.#perConnection.get(address) ?? 1) - 1;
      if (n > 0) this.#perConnection.set(address, n);
      else this.#perConnection.delete(address);
    };
    // grpc-js says 'cancelled' when the call ends for any reason; only one
    // that comes while the handler runs is the caller going away (or
    // grpc-js's own deadline timer, which answered DEADLINE_EXCEEDED).
    (call as EventEmitter).on("cancelled", () => {
      if (finished || controller.signal.aborted) return;
      controller.abort(
        Date.now() >= deadline
          ? new RpcError(
            Code.DEADLINE_EXCEEDED,
            `${info.label}: deadline of ${deadlineMs} ms passed on the server`,
          )
          : new RpcError(Code.CANCELLED, `${info.label}: cancelled by the caller`),
      );
    });
    this.#active.add(active);
    this.#perConnection.set(address, running + 1);
    this.stats.callsStarted++;
    const ctx: CallContext = {
      method: info,
      peer: this.#peerOf(call, address),
      signal: controller.signal,
      deadline: unbounded ? null : deadline,
    };
    return {
      ctx,
      done: finish,
      fail: (error) => {
        finish();
        const e = toRpcError(error);
        // A cancelled call's caller is gone: nothing was answered, nothing failed.
        if (e.code !== Code.CANCELLED) this.stats.callsFailed++;
        if (e.code === Code.INTERNAL || e.code === Code.UNKNOWN) {
          const suppressed = this.#failureLog.allow(info.label);
          if (suppressed >= 0) {
            this.#log.warn("handler failed", {
              method: info.label,
              peer: address,
              error,
              ...(suppressed > 0 ? { suppressed_since_last: suppressed } : {}),
            });
          }
        }
        return { code: e.code, details: e.message };
      },
    };
  }

  #refuse(error: RpcError): GrpcStatus {
    this.stats.callsRefused++;
    this.stats.callsFailed++;
    return statusOf(error);
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
    if (this.#state === "draining" || this.#state === "stopped") {
      return callback(
        this.#refuse(new RpcError(Code.UNAVAILABLE, "server is shutting down; call another node")),
      );
    }
    let messages: RaftMessage[];
    try {
      // Decode everything before handing anything over: a bad envelope is refused whole.
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
      this.stats.callsFailed++;
      const suppressed = this.#failureLog.allow(`raft:${address}`);
      if (suppressed >= 0) {
        this.#log.warn("refused a malformed Raft envelope", { peer: address, error: e });
      }
      return callback(statusOf(
        new RpcError(
          Code.INVALID_ARGUMENT,
          `raft.Send: malformed envelope (${call.request.length} bytes): ${(e as Error).message}`,
        ),
      ));
    }
    this.stats.raftEnvelopes++;
    this.stats.raftMessages += messages.length;
    let accepted = 0;
    if (this.#onRaftMessage) {
      const from = this.#peerOf(call, address);
      for (const message of messages) {
        this.#onRaftMessage(message, from);
        accepted++;
      }
    }
    callback(null, toBinary(RaftAckSchema, create(RaftAckSchema, { accepted })));
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
