/**
 * A small client of QMP, the QEMU Machine Protocol: JSON objects, one per
 * line, over a unix socket. It reads the greeting, negotiates
 * `qmp_capabilities`, runs commands one id each, and passes on asynchronous
 * events (SHUTDOWN, POWERDOWN, STOP, ...). Bounded everywhere: a line, the
 * commands waiting for an answer, the events kept, and every wait.
 *
 * Owns: {@link QmpClient}, {@link QmpError}, {@link QMP_LIMITS}. Imports
 * nothing of the agent.
 *
 * Protocol: QEMU's docs/interop/qmp-spec.rst. A QMP socket serves one client
 * at a time; a second connection gets no greeting until the first closes,
 * which here is a CONNECT_FAILED after `connectTimeoutMs`.
 *
 * @module
 */

/** Bounds of one connection. */
export interface QmpLimits {
  /** Longest line accepted from qemu; a longer one closes the connection. */
  readonly maxLineBytes: number;
  /** Commands sent and not yet answered. */
  readonly maxPending: number;
  /** Events kept in {@link QmpClient.events}, the oldest dropped first. */
  readonly maxEvents: number;
  /** Default wait for a command's answer. */
  readonly commandTimeoutMs: number;
  /** Wait for the socket, the greeting and the capabilities negotiation together. */
  readonly connectTimeoutMs: number;
}

/** The defaults of {@link QmpLimits}. */
export const QMP_LIMITS: QmpLimits = Object.freeze({
  // query-qmp-schema, the largest answer qemu gives, is about 200 KiB.
  maxLineBytes: 1024 * 1024,
  maxPending: 16,
  maxEvents: 64,
  commandTimeoutMs: 5000,
  connectTimeoutMs: 2000,
});

/** Machine-readable reason of a {@link QmpError}. */
export type QmpErrorCode =
  /** No socket, refused, or no greeting in time. */
  | "CONNECT_FAILED"
  /** No answer within the command's timeout. */
  | "TIMEOUT"
  /** The connection closed (qemu exited, or `close()`) before the answer. */
  | "CLOSED"
  /** qemu sent a line longer than `maxLineBytes`. */
  | "LINE_TOO_LONG"
  /** qemu sent something that is not QMP. */
  | "PROTOCOL"
  /** qemu answered the command with an error; `qmpClass` has its class. */
  | "COMMAND_FAILED"
  /** `maxPending` commands are already waiting. */
  | "TOO_MANY_PENDING";

/** A QMP failure. */
export class QmpError extends Error {
  override readonly name = "QmpError";
  readonly code: QmpErrorCode;
  /** QMP's error class (`GenericError`, `CommandNotFound`, ...) for `COMMAND_FAILED`. */
  readonly qmpClass: string | undefined;

  constructor(code: QmpErrorCode, message: string, qmpClass?: string) {
    super(`qmp: ${message}`);
    this.code = code;
    this.qmpClass = qmpClass;
  }
}

/** An asynchronous event qemu sent. */
export interface QmpEvent {
  /** `SHUTDOWN`, `POWERDOWN`, `STOP`, `RESUME`, ... */
  readonly event: string;
  readonly data: Readonly<Record<string, unknown>>;
  /** qemu's timestamp, ms since the epoch. */
  readonly timestampMs: number;
}

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: QmpError) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

const NEWLINE = 0x0a;

/** One QMP connection. */
export class QmpClient {
  readonly #conn: Deno.UnixConn;
  readonly #limits: QmpLimits;
  readonly #pending = new Map<number, Pending>();
  readonly #events: QmpEvent[] = [];
  readonly #listeners = new Set<(event: QmpEvent) => void>();
  readonly #closed: Promise<string>;
  #greeting: { resolve: (v: unknown) => void; reject: (e: QmpError) => void } | undefined;
  #nextId = 1;
  #closeReason: string | undefined;
  #writing: Promise<void> = Promise.resolve();

  private constructor(conn: Deno.UnixConn, limits: QmpLimits) {
    this.#conn = conn;
    this.#limits = limits;
    this.#closed = this.#readLoop();
  }

  /**
   * Connects to the QMP socket at `path`, reads the greeting and enters
   * command mode.
   *
   * @throws {QmpError} `CONNECT_FAILED` (or what the negotiation met).
   */
  static async connect(path: string, limits: Partial<QmpLimits> = {}): Promise<QmpClient> {
    const all: QmpLimits = { ...QMP_LIMITS, ...limits };
    let conn: Deno.UnixConn;
    try {
      conn = await Deno.connect({ transport: "unix", path });
    } catch (e) {
      throw new QmpError("CONNECT_FAILED", `cannot connect to ${path}: ${(e as Error).message}`);
    }
    const client = new QmpClient(conn, all);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const greeting = new Promise<unknown>((resolve, reject) => {
        client.#greeting = { resolve, reject };
        timer = setTimeout(
          () =>
            reject(
              new QmpError(
                "CONNECT_FAILED",
                `no greeting on ${path} within ${all.connectTimeoutMs} ms ` +
                  "(another client may hold the socket: QMP serves one at a time)",
              ),
            ),
          all.connectTimeoutMs,
        );
      });
      await greeting;
      await client.execute("qmp_capabilities", undefined, all.connectTimeoutMs);
      return client;
    } catch (e) {
      client.close();
      await client.#closed;
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The events received, oldest first (at most `maxEvents`). */
  get events(): readonly QmpEvent[] {
    return this.#events;
  }

  /** Resolves with the reason once the connection has closed and its reader has stopped. */
  get closed(): Promise<string> {
    return this.#closed;
  }

  /** True once the connection is closed or closing. */
  get isClosed(): boolean {
    return this.#closeReason !== undefined;
  }

  /** Calls `listener` for each event from now on; returns a function that stops it. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Runs a command and resolves with its `return` value.
   *
   * @throws {QmpError} `COMMAND_FAILED`, `TIMEOUT`, `CLOSED`, `TOO_MANY_PENDING`.
   */
  execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = this.#limits.commandTimeoutMs,
  ): Promise<unknown> {
    if (this.#closeReason !== undefined) {
      return Promise.reject(
        new QmpError("CLOSED", `${command}: connection closed (${this.#closeReason})`),
      );
    }
    if (this.#pending.size >= this.#limits.maxPending) {
      return Promise.reject(
        new QmpError(
          "TOO_MANY_PENDING",
          `${command}: ${this.#pending.size} commands already wait for an answer`,
        ),
      );
    }
    const id = this.#nextId++;
    const line = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) +
      "\n";
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new QmpError("TIMEOUT", `${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      this.#write(new TextEncoder().encode(line)).catch((e) => {
        this.#fail(`write failed: ${(e as Error).message}`);
      });
    });
  }

  /** Closes the connection; commands waiting for an answer fail with `CLOSED`. */
  close(): void {
    this.#fail("closed by the client");
  }

  #write(bytes: Uint8Array): Promise<void> {
    // One write at a time, each whole: QMP lines must not interleave.
    this.#writing = this.#writing.then(async () => {
      let off = 0;
      while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
    });
    return this.#writing;
  }

  /** Closes the connection; waiting commands fail with `code` (CLOSED unless qemu broke a rule). */
  #fail(reason: string, code: QmpErrorCode = "CLOSED"): void {
    if (this.#closeReason !== undefined) return;
    this.#closeReason = reason;
    try {
      this.#conn.close();
    } catch {
      // already closed by the peer
    }
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      this.#pending.delete(id);
      p.reject(new QmpError(code, `${p.command}: connection closed (${reason})`));
    }
    this.#greeting?.reject(
      new QmpError(code === "CLOSED" ? "CONNECT_FAILED" : code, `connection closed (${reason})`),
    );
    this.#greeting = undefined;
  }

  async #readLoop(): Promise<string> {
    const chunk = new Uint8Array(64 * 1024);
    let buffer = new Uint8Array(0);
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const n = await this.#conn.read(chunk);
        if (n === null) {
          this.#fail("qemu closed the socket");
          break;
        }
        const joined = new Uint8Array(buffer.length + n);
        joined.set(buffer);
        joined.set(chunk.subarray(0, n), buffer.length);
        buffer = joined;
        let nl: number;
        while ((nl = buffer.indexOf(NEWLINE)) >= 0) {
          if (nl > this.#limits.maxLineBytes) break;
          const line = decoder.decode(buffer.subarray(0, nl)).trim();
          buffer = buffer.subarray(nl + 1);
          if (line !== "") this.#handle(line);
          if (this.#closeReason !== undefined) break;
        }
        if (this.#closeReason !== undefined) break;
        if (buffer.length > this.#limits.maxLineBytes) {
          this.#fail(
            `qemu sent a line longer than ${this.#limits.maxLineBytes} bytes`,
            "LINE_TOO_LONG",
          );
          break;
        }
      }
    } catch (e) {
      // qemu exiting may reset the connection rather than close it.
      this.#fail(
        e instanceof Deno.errors.ConnectionReset
          ? "qemu closed the socket"
          : `read failed: ${(e as Error).message}`,
      );
    }
    return this.#closeReason ?? "closed";
  }

  #handle(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line);
    } catch {
      this.#fail(`qemu sent a line that is not JSON: ${line.slice(0, 120)}`, "PROTOCOL");
      return;
    }
    if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
      this.#fail(`qemu sent JSON that is not an object: ${line.slice(0, 120)}`, "PROTOCOL");
      return;
    }
    if ("QMP" in msg) {
      this.#greeting?.resolve(msg["QMP"]);
      this.#greeting = undefined;
      return;
    }
    if (typeof msg["event"] === "string") {
      const ts = msg["timestamp"] as { seconds?: number; microseconds?: number } | undefined;
      const event: QmpEvent = {
        event: msg["event"],
        data:
          (typeof msg["data"] === "object" && msg["data"] !== null ? msg["data"] : {}) as Record<
            string,
            unknown
          >,
        timestampMs: (ts?.seconds ?? 0) * 1000 + Math.floor((ts?.microseconds ?? 0) / 1000),
      };
      this.#events.push(event);
      if (this.#events.length > this.#limits.maxEvents) this.#events.shift();
      for (const listener of this.#listeners) listener(event);
      return;
    }
    const id = msg["id"];
    const pending = typeof id === "number" ? this.#pending.get(id) : undefined;
    if (pending === undefined) return; // the answer to a command that timed out
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    if ("return" in msg) {
      pending.resolve(msg["return"]);
    } else if (typeof msg["error"] === "object" && msg["error"] !== null) {
      const err = msg["error"] as { class?: unknown; desc?: unknown };
      pending.reject(
        new QmpError(
          "COMMAND_FAILED",
          `${pending.command}: ${String(err.desc ?? "failed")}`,
          typeof err.class === "string" ? err.class : undefined,
        ),
      );
    } else {
      pending.reject(
        new QmpError("PROTOCOL", `${pending.command}: answer has neither return nor error`),
      );
    }
  }
}
