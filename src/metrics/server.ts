/**
 * The HTTP side of monitoring: `/metrics` (the Prometheus text exposition),
 * `/healthz` (the process runs) and `/readyz` (the node can serve: listeners,
 * membership, a leader, storage), on `[metrics] bind`; and moving that
 * server when a reload changes `[metrics]`.
 *
 * Owns: {@link MetricsServer}, {@link MetricsEndpoint}, {@link MetricsSwitch},
 * {@link MetricsServerError}, {@link ReadinessCheck}, {@link readinessBody}.
 * Imports `util/address.ts` and `util/log.ts`; what it answers comes in as
 * functions ({@link MetricsHandlers}), so it knows nothing of the node.
 *
 * `Deno.serve`, not `node:http`: it is Deno's native server (hyper), which
 * `node:http` itself runs on in Deno, so one layer less per request; it
 * binds synchronously, so a port in use is an error at start, not an event
 * later; and its `shutdown()` ends keep-alive connections (Prometheus keeps
 * one open) while letting a scrape in progress finish.
 *
 * Answers never wait on consensus: `/healthz` is constant, `/readyz` reads
 * values the node keeps in memory, and `/metrics` runs collectors that read
 * counters and levels, all synchronous but for prom-client's own plumbing.
 *
 * @module
 */

import { parseHostPort, whyNotBound } from "../util/address.ts";
import type { Logger } from "../util/log.ts";

/** Codes of {@link MetricsServerError}. */
export type MetricsServerErrorCode = "BIND_FAILED" | "INVALID_ADDRESS";

/** The metrics server could not start. */
export class MetricsServerError extends Error {
  override readonly name = "MetricsServerError";
  readonly code: MetricsServerErrorCode;
  constructor(code: MetricsServerErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** One readiness check and its outcome. */
export interface ReadinessCheck {
  /** `listeners`, `member`, `leader`, `storage`. */
  readonly name: string;
  readonly ok: boolean;
  /** What was found: why it failed, or what passed. */
  readonly detail: string;
}

/** What the server answers from. */
export interface MetricsHandlers {
  /** The exposition and its content type. */
  metrics(): Promise<{ text: string; contentType: string }>;
  /** The readiness checks, evaluated now from values kept in memory. */
  readiness(): readonly ReadinessCheck[];
}

/**
 * `/readyz`'s body: one line per check, `[+]name ok: detail` or
 * `[-]name failed: detail` (the format Kubernetes' own `/readyz?verbose`
 * uses), then `ready` or `not ready`.
 *
 * @example
 * ```ts
 * import { readinessBody } from "./server.ts";
 * console.log(readinessBody([{ name: "leader", ok: false, detail: "no leader known" }]));
 * // [-]leader failed: no leader known
 * // not ready
 * ```
 */
export function readinessBody(checks: readonly ReadinessCheck[]): string {
  const lines = checks.map((c) =>
    `[${c.ok ? "+" : "-"}]${c.name} ${c.ok ? "ok" : "failed"}: ${c.detail}`
  );
  lines.push(checks.every((c) => c.ok) ? "ready" : "not ready");
  return lines.join("\n") + "\n";
}

const PATHS = ["/metrics", "/healthz", "/readyz"];
const TEXT = "text/plain; charset=utf-8";

/** One HTTP server on one address. */
export class MetricsServer {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  /** `host:port` actually bound (the port the system picked for port 0). */
  readonly address: string;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>, address: string) {
    this.#server = server;
    this.address = address;
  }

  /**
   * Binds `bind` (`host:port`) and serves.
   * @throws {MetricsServerError} INVALID_ADDRESS, or BIND_FAILED (in use, not permitted, no such address).
   */
  static start(bind: string, handlers: MetricsHandlers, log: Logger): MetricsServer {
    const at = parseHostPort(bind);
    if (!at) {
      throw new MetricsServerError(
        "INVALID_ADDRESS",
        `metrics.bind = "${bind}": expected "host:port" (e.g. "127.0.0.1:9464" or "[::1]:9464")`,
      );
    }
    let server: Deno.HttpServer<Deno.NetAddr>;
    try {
      server = Deno.serve({
        hostname: at.host,
        port: at.port,
        // Deno prints "Listening on ..." to stdout unless told otherwise: stdout is the CLI's.
        onListen() {},
        onError: (e) => {
          log.warn("metrics endpoint: request failed", { error: e });
          return new Response("internal error\n", {
            status: 500,
            headers: { "content-type": TEXT },
          });
        },
      }, (request) => answer(request, handlers));
    } catch (e) {
      const why = whyNotBound(e, "; choose another port, or set [metrics] enabled = false");
      throw new MetricsServerError(
        "BIND_FAILED",
        `metrics.bind = "${bind}": cannot listen: ${why}`,
        {
          cause: e,
        },
      );
    }
    const host = at.kind === "ipv6" ? `[${at.host}]` : at.host;
    const address = `${host}:${server.addr.port}`;
    log.info("metrics endpoint up", { address, paths: PATHS.join(",") });
    return new MetricsServer(server, address);
  }

  /** Stops listening; a request in progress finishes, idle connections close. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}

async function answer(request: Request, handlers: MetricsHandlers): Promise<Response> {
  const path = new URL(request.url).pathname;
  if (!PATHS.includes(path)) {
    return new Response(`not found: ${path}; this server has ${PATHS.join(", ")}\n`, {
      status: 404,
      headers: { "content-type": TEXT },
    });
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response(`${request.method} ${path}: only GET and HEAD\n`, {
      status: 405,
      headers: { "content-type": TEXT, allow: "GET, HEAD" },
    });
  }
  switch (path) {
    case "/healthz":
      return new Response("ok\n", { headers: { "content-type": TEXT } });
    case "/readyz": {
      const checks = handlers.readiness();
      return new Response(readinessBody(checks), {
        status: checks.every((c) => c.ok) ? 200 : 503,
        headers: { "content-type": TEXT },
      });
    }
    default: {
      const { text, contentType } = await handlers.metrics();
      return new Response(text, { headers: { "content-type": contentType } });
    }
  }
}

/** The `[metrics]` keys the endpoint follows. */
export interface MetricsEndpointSettings {
  readonly enabled: boolean;
  readonly bind: string;
}

/**
 * A reload's move of the endpoint, prepared: the new server (if any) is
 * already listening. {@link commit} after the rest of the reload succeeded,
 * {@link abort} if it failed.
 */
export interface MetricsSwitch {
  /** What the reload does to the endpoint, one line; null when nothing. */
  readonly change: string | null;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** The endpoint of a running agent: started at start, moved by reloads, closed at stop. */
export class MetricsEndpoint {
  readonly #handlers: MetricsHandlers;
  readonly #log: Logger;
  #settings: MetricsEndpointSettings = { enabled: false, bind: "" };
  #server: MetricsServer | null = null;

  constructor(handlers: MetricsHandlers, log: Logger) {
    this.#handlers = handlers;
    this.#log = log;
  }

  /** `host:port` served now; null when the endpoint is off. */
  get address(): string | null {
    return this.#server?.address ?? null;
  }

  /** Starts as `settings` say. @throws {MetricsServerError} */
  start(settings: MetricsEndpointSettings): void {
    this.#settings = settings;
    this.#server = settings.enabled ? this.#bind(settings.bind) : null;
  }

  /**
   * Prepares the move to `next`: binds the new address before the old one
   * closes, except on the same port, which is closed first and bound again
   * with the old settings if the new ones fail.
   * @throws {MetricsServerError} when the new address cannot be bound; the old server still serves.
   */
  async prepare(next: MetricsEndpointSettings): Promise<MetricsSwitch> {
    const old = this.#server;
    const before = this.#settings;
    const unchanged = next.enabled === before.enabled &&
      (!next.enabled || next.bind === before.bind);
    if (unchanged) {
      return {
        change: null,
        commit: () => Promise.resolve(),
        abort: () => Promise.resolve(),
      };
    }
    if (!next.enabled) {
      return {
        change: `metrics endpoint on ${old?.address} stopped`,
        commit: async () => {
          this.#settings = next;
          this.#server = null;
          await old?.close();
        },
        abort: () => Promise.resolve(),
      };
    }
    const samePort = old !== null && portOf(next.bind) !== 0 &&
      portOf(next.bind) === portOf(before.bind);
    let restartOld = false;
    if (samePort) {
      this.#server = null;
      await old.close();
      restartOld = true;
    }
    let started: MetricsServer;
    try {
      started = this.#bind(next.bind);
    } catch (e) {
      if (restartOld) this.#restore(before);
      throw e;
    }
    const change = old === null
      ? `metrics endpoint started on ${started.address}`
      : `metrics endpoint moved to ${started.address}`;
    return {
      change,
      commit: async () => {
        this.#settings = next;
        this.#server = started;
        if (!restartOld) await old?.close();
      },
      abort: async () => {
        await started.close();
        if (restartOld) this.#restore(before);
      },
    };
  }

  /** Stops serving. */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    await server?.close();
  }

  #bind(bind: string): MetricsServer {
    return MetricsServer.start(bind, this.#handlers, this.#log);
  }

  /** Serves again with the settings in force after a failed move on the same port. */
  #restore(settings: MetricsEndpointSettings): void {
    try {
      this.#server = this.#bind(settings.bind);
    } catch (e) {
      this.#server = null;
      this.#log.error("cannot restore the metrics endpoint", { bind: settings.bind, error: e });
    }
  }
}

function portOf(bind: string): number {
  return parseHostPort(bind)?.port ?? 0;
}
