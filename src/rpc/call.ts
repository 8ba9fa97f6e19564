/**
 * One call's life on a server, written once for both transports: its
 * deadline, its admission against the connection's limits and the server's
 * state, running its handler and handing the answer to the transport, what
 * a failure is answered with, the rate-limited log of handler failures, and
 * graceful drain. And the deadline a client puts on a call.
 *
 * Owns: {@link ServerCalls}, {@link ConnectionCalls}, {@link ServerCall},
 * {@link runCall}, {@link CallSink}, {@link Clock}, {@link CallObserver},
 * {@link serverDeadlineMs}, {@link clientDeadlineMs}. Imports this folder's errors, limits, router
 * and services' types, `abort.ts`, and `util/log.ts`; nothing of the
 * transports, which hand it a method, a peer and the caller's deadline and
 * get back a call to run or the status to refuse it with.
 *
 * A call is admitted (or refused before any handler runs), then runs: its
 * signal aborts when its deadline passes, the caller cancels, the connection
 * closes or a drain gives up on it, and the server stops waiting for the
 * handler at that moment. Then it settles (the answer or the error is handed
 * to the transport) and is released: its slot is free. A transport may hold
 * the slot until its answer has left (gRPC does, so a peer that does not
 * read its answers runs into `maxInflightRequests`).
 *
 * @module
 */

import { untilAborted } from "./abort.ts";
import { Code, RpcError, toRpcError } from "./errors.ts";
import type { RpcLimits } from "./limits.ts";
import type { BoundMethod } from "./router.ts";
import type { CallContext, MethodInfo, MethodKind, PeerInfo } from "./services.ts";
import { type LogFields, type Logger, RateLimiter } from "../util/log.ts";

/** Time as calls see it; tests inject a clock they move by hand. */
export interface Clock {
  /** Wall-clock milliseconds, as `Date.now()`: the unit of `CallContext.deadline`. */
  now(): number;
  /** Runs `fn` once after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void;
}

/** The clock of the running process. */
export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  after: (ms: number, fn: () => void) => {
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  },
});

/**
 * The deadline a server gives a call, in ms from now: the caller's
 * (`callerMs`, null when it gave none), else the default for a unary call and
 * none (Infinity) for a server stream, which runs until cancelled (a watch);
 * never above the maximum.
 */
export function serverDeadlineMs(
  callerMs: number | null,
  kind: MethodKind,
  limits: Pick<RpcLimits, "defaultDeadlineMs" | "maxDeadlineMs">,
): number {
  if (callerMs === null && kind === "server_streaming") return Infinity;
  return Math.max(0, Math.min(callerMs ?? limits.defaultDeadlineMs, limits.maxDeadlineMs));
}

/**
 * The deadline a client puts on a call, in ms: the one asked for, else the
 * default for a unary call and none (Infinity) for a server stream; never
 * above the maximum.
 * @throws {RpcError} INVALID_ARGUMENT for a deadline that is not above 0.
 */
export function clientDeadlineMs(
  requestedMs: number | undefined,
  method: Pick<MethodInfo, "label" | "kind">,
  limits: Pick<RpcLimits, "defaultDeadlineMs" | "maxDeadlineMs">,
): number {
  if (requestedMs === undefined && method.kind === "server_streaming") return Infinity;
  const ms = requestedMs ?? limits.defaultDeadlineMs;
  if (!(ms > 0)) {
    throw new RpcError(
      Code.INVALID_ARGUMENT,
      `${method.label}: deadline ${ms} ms: expected more than 0`,
    );
  }
  return Math.min(ms, limits.maxDeadlineMs);
}

/** Counters the lifecycle keeps in a server's stats. */
export interface CallStats {
  /** Calls that reached a handler. */
  callsStarted: number;
  /** Calls answered with an error, refusals included (not those the caller cancelled). */
  callsFailed: number;
  /** Calls refused before a handler ran: limits, shutdown, unknown method, bad request. */
  callsRefused: number;
}

/**
 * Told how each call ended, for metrics: answered (OK or an error), cancelled
 * by its caller (CANCELLED), or refused before a handler ran (`seconds`
 * null; `method` null when the request named no method this server has).
 */
export interface CallObserver {
  ended(method: MethodInfo | null, code: Code, seconds: number | null): void;
}

/** Options of {@link ServerCalls}. */
export interface ServerCallsOptions {
  /** Where the counters go (the server's own stats object). */
  readonly stats: CallStats;
  readonly log: Logger;
  readonly clock?: Clock;
  readonly observer?: CallObserver;
}

/** How long a drain waits, after giving up on calls, for their UNAVAILABLE answers to leave. */
const ABANDON_GRACE_MS = 200;

const SHUTTING_DOWN = "server is shutting down; call another node";

/**
 * The calls of one server, over all its connections: admission, counters,
 * the failure log, and drain.
 *
 * @example
 * ```ts
 * import { ServerCalls } from "./call.ts";
 * import { DEFAULT_RPC_LIMITS } from "./limits.ts";
 * import { silentLogger } from "../util/log.ts";
 * const stats = { callsStarted: 0, callsFailed: 0, callsRefused: 0 };
 * const calls = new ServerCalls({ stats, log: silentLogger });
 * const connection = calls.connection(DEFAULT_RPC_LIMITS);
 * // per request: connection.admit(method, peer, callerDeadlineMs), then runCall(...)
 * const { abandoned } = await calls.drain(5_000);
 * ```
 */
export class ServerCalls {
  readonly #stats: CallStats;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #observer: CallObserver | undefined;
  readonly #warnings = new RateLimiter(60_000);
  readonly #active = new Set<ServerCall>();
  #idleWaiters: (() => void)[] = [];
  /** Why calls are refused while draining; null while serving. */
  #drainReason: string | null = null;

  constructor(options: ServerCallsOptions) {
    this.#stats = options.stats;
    this.#log = options.log;
    this.#clock = options.clock ?? systemClock;
    this.#observer = options.observer;
  }

  /** Calls admitted and not yet released, over all connections. */
  get inflight(): number {
    return this.#active.size;
  }

  /** True from {@link drain} until {@link resume}. */
  get draining(): boolean {
    return this.#drainReason !== null;
  }

  /** The message new calls and connections are refused with while draining. */
  get drainReason(): string | null {
    return this.#drainReason;
  }

  /** The calls of a new connection, under `limits`. */
  connection(limits: RpcLimits): ConnectionCalls {
    return new ConnectionCalls(this, limits);
  }

  /**
   * Counts a call refused before any handler ran (of `method`, when the
   * request named one this server has), and returns its error to answer with.
   */
  refuse(error: RpcError, method: MethodInfo | null = null): RpcError {
    this.#stats.callsRefused++;
    this.#stats.callsFailed++;
    this.#observer?.ended(method, error.code as Code, null);
    return error;
  }

  /** UNAVAILABLE, counted, while draining; else null. */
  refusal(method: MethodInfo | null = null): RpcError | null {
    return this.#drainReason === null
      ? null
      : this.refuse(new RpcError(Code.UNAVAILABLE, this.#drainReason), method);
  }

  /**
   * Refuses new calls from now on (UNAVAILABLE, with `reason` as the message,
   * else "server is shutting down"), waits until the calls in flight end or
   * `timeoutMs` passes, then aborts the rest with UNAVAILABLE and gives their
   * answers a moment to leave. Returns how many calls were abandoned.
   */
  async drain(timeoutMs: number, reason?: string): Promise<{ abandoned: number }> {
    this.#drainReason = reason ?? SHUTTING_DOWN;
    await this.#idle(timeoutMs);
    const abandoned = this.#active.size;
    if (abandoned > 0) {
      const error = new RpcError(Code.UNAVAILABLE, reason ?? "server is shutting down");
      for (const call of this.#active) call.abort(error);
      await this.#idle(ABANDON_GRACE_MS);
    }
    return { abandoned };
  }

  /** Takes calls again after {@link drain}. */
  resume(): void {
    this.#drainReason = null;
  }

  /** @internal */
  started(call: ServerCall): void {
    this.#stats.callsStarted++;
    this.#active.add(call);
  }

  /** @internal */
  released(call: ServerCall): void {
    this.#active.delete(call);
    if (this.#active.size === 0) { for (const wake of [...this.#idleWaiters]) wake(); }
  }

  /**
   * Logs a warning at most once a minute per `key` (a method, a peer), with
   * how many were suppressed since the last: a misbehaving peer or a failing
   * handler cannot flood the log.
   */
  warn(key: string, message: string, fields: LogFields): void {
    const suppressed = this.#warnings.allow(`${message}:${key}`, this.#clock.now());
    if (suppressed < 0) return;
    this.#log.warn(message, {
      ...fields,
      ...(suppressed > 0 ? { suppressed_since_last: suppressed } : {}),
    });
  }

  /** @internal Reports how an admitted call ended. */
  ended(call: ServerCall, code: Code, seconds: number): void {
    this.#observer?.ended(call.info, code, seconds);
  }

  /** @internal Counts a failed call and logs a handler's own failure, at most once a minute per method. */
  failed(call: ServerCall, error: RpcError, cause: unknown): void {
    this.#stats.callsFailed++;
    if (error.code !== Code.INTERNAL && error.code !== Code.UNKNOWN) return;
    this.warn(call.info.label, "handler failed", {
      method: call.info.label,
      peer: call.ctx.peer.id,
      error: cause,
    });
  }

  /** @internal */
  get clock(): Clock {
    return this.#clock;
  }

  /** Resolves when no call is active, or after `timeoutMs`, whichever is first. */
  #idle(timeoutMs: number): Promise<void> {
    if (this.#active.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer: { cancel?: () => void } = {};
      const done = () => {
        timer.cancel?.();
        this.#idleWaiters = this.#idleWaiters.filter((w) => w !== done);
        resolve();
      };
      this.#idleWaiters.push(done);
      timer.cancel = this.#clock.after(timeoutMs, done);
    });
  }
}

/** The calls of one connection: its limits and its share of in-flight calls. */
export class ConnectionCalls {
  readonly #server: ServerCalls;
  readonly #calls = new Set<ServerCall>();
  /** The limits this connection was accepted under. */
  readonly limits: RpcLimits;

  constructor(server: ServerCalls, limits: RpcLimits) {
    this.#server = server;
    this.limits = limits;
  }

  /** Calls admitted on this connection and not yet released. */
  get size(): number {
    return this.#calls.size;
  }

  /** The server's lifecycle, for refusals the transport makes itself. */
  get server(): ServerCalls {
    return this.#server;
  }

  /**
   * Admits a call of `info` from `peer`, whose caller gave `callerDeadlineMs`
   * (ms from now; null for none), or returns the counted error to refuse it
   * with: UNAVAILABLE while draining, RESOURCE_EXHAUSTED over
   * `maxInflightRequests`.
   */
  admit(info: MethodInfo, peer: PeerInfo, callerDeadlineMs: number | null): ServerCall | RpcError {
    const draining = this.#server.refusal(info);
    if (draining) return draining;
    const max = this.limits.maxInflightRequests;
    if (this.#calls.size >= max) {
      return this.#server.refuse(
        new RpcError(
          Code.RESOURCE_EXHAUSTED,
          `too many calls in flight on this connection (max_inflight_requests ${max})`,
        ),
        info,
      );
    }
    const call = new ServerCall(
      this,
      info,
      peer,
      serverDeadlineMs(callerDeadlineMs, info.kind, this.limits),
    );
    this.#calls.add(call);
    this.#server.started(call);
    return call;
  }

  /** Aborts every call of this connection with `reason` (the connection is closing). */
  abortAll(reason: RpcError): void {
    for (const call of this.#calls) call.abort(reason);
  }

  /** @internal */
  released(call: ServerCall): void {
    this.#calls.delete(call);
    this.#server.released(call);
  }
}

/** One admitted call. */
export class ServerCall {
  readonly #connection: ConnectionCalls;
  readonly #controller = new AbortController();
  readonly #cancelTimer: (() => void) | undefined;
  #settled = false;
  #released = false;
  /**
   * When it was admitted, `performance.now()` ms: durations are for metrics
   * and need sub-millisecond resolution, which the injected clock (wall
   * clock ms, for deadlines) does not give.
   */
  readonly #admittedAt = performance.now();
  /** The called method. */
  readonly info: MethodInfo;
  /** What the handler sees. */
  readonly ctx: CallContext;
  /** The deadline the server gave it, ms; Infinity for none. */
  readonly deadlineMs: number;

  constructor(connection: ConnectionCalls, info: MethodInfo, peer: PeerInfo, deadlineMs: number) {
    this.#connection = connection;
    this.info = info;
    this.deadlineMs = deadlineMs;
    const clock = connection.server.clock;
    const bounded = Number.isFinite(deadlineMs);
    this.ctx = {
      method: info,
      peer,
      signal: this.#controller.signal,
      deadline: bounded ? clock.now() + deadlineMs : null,
    };
    if (bounded) {
      this.#cancelTimer = clock.after(deadlineMs, () =>
        this.abort(
          new RpcError(
            Code.DEADLINE_EXCEEDED,
            `${info.label}: deadline of ${deadlineMs} ms passed on the server`,
          ),
        ));
    }
  }

  /** Aborted when the call must stop. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** True once the handler's outcome was handed to the transport. */
  get settled(): boolean {
    return this.#settled;
  }

  /** Stops the call with `reason`, unless it already stopped or settled. */
  abort(reason: RpcError): void {
    if (this.#settled || this.#controller.signal.aborted) return;
    this.#controller.abort(reason);
  }

  /** @internal The handler succeeded. */
  succeed(): void {
    this.#settle(Code.OK);
  }

  /**
   * @internal The handler failed with `cause` (or the call was aborted):
   * counts and logs it, and returns what to answer with; null when the
   * caller cancelled (it is gone, nothing is answered).
   */
  fail(cause: unknown): RpcError | null {
    const error = toRpcError(cause);
    this.#settle(error.code as Code);
    if (error.code === Code.CANCELLED) return null;
    this.#connection.server.failed(this, error, cause);
    return error;
  }

  /** Frees the call's slot. Idempotent. */
  release(): void {
    this.#settle();
    if (this.#released) return;
    this.#released = true;
    this.#connection.released(this);
  }

  /** Marks the outcome handed over (reported once, with `code`); stops the deadline timer. */
  #settle(code?: Code): void {
    if (!this.#settled && code !== undefined) {
      this.#connection.server.ended(this, code, (performance.now() - this.#admittedAt) / 1000);
    }
    this.#settled = true;
    this.#cancelTimer?.();
  }
}

/** Where a call's answers go: the transport's half of {@link runCall}. */
export interface CallSink {
  /** A unary call's response. */
  response(bytes: Uint8Array): void;
  /**
   * One item of a server stream. A promise makes the handler wait for it
   * (back-pressure: a slow reader slows the handler, not the server's memory).
   */
  item(bytes: Uint8Array): void | Promise<void>;
  /** A server stream's end. */
  end(): void;
  /** The call failed; `error` is what the caller is told. */
  error(error: RpcError): void;
  /** Resolves when the answer has left; the call keeps its slot until then. Default: at once. */
  sent?(): Promise<void>;
}

/**
 * Runs an admitted call's handler and hands its answer to `sink`. Never
 * rejects: a handler's failure, or the call's abort, becomes `sink.error`
 * (not for a call its caller cancelled). Resolves once the call is released.
 */
export async function runCall(
  call: ServerCall,
  bound: BoundMethod,
  request: Uint8Array,
  sink: CallSink,
): Promise<void> {
  const signal = call.signal;
  try {
    if (bound.unary) {
      const response = await untilAborted(bound.unary(request, call.ctx), signal);
      call.succeed();
      sink.response(response);
    } else {
      await stream(bound, request, call, sink);
      call.succeed();
      sink.end();
    }
  } catch (e) {
    const error = call.fail(signal.aborted ? signal.reason : e);
    if (error) {
      try {
        sink.error(error);
      } catch {
        // The transport could not answer (its stream is gone): nothing more to tell.
      }
    }
  }
  try {
    await sink.sent?.();
  } finally {
    call.release();
  }
}

async function stream(
  bound: BoundMethod,
  request: Uint8Array,
  call: ServerCall,
  sink: CallSink,
): Promise<void> {
  const signal = call.signal;
  const items = bound.stream!(request, call.ctx)[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      // Raced with the signal: a handler waiting for its next event is
      // abandoned at once when the call ends, not at its next item.
      const next = await untilAborted(items.next(), signal);
      if (next.done) {
        done = true;
        break;
      }
      signal.throwIfAborted();
      const wait = sink.item(next.value);
      if (wait) await untilAborted(wait, signal);
    }
  } finally {
    if (!done) items.return?.(undefined).catch(() => {});
  }
  signal.throwIfAborted();
}
