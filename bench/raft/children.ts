/**
 * The server processes a Raft benchmark starts: spawned with their output
 * kept (the last lines, for the error that says why one did not start),
 * tracked, and stopped with SIGTERM then SIGKILL, or all killed at once when
 * the benchmark is interrupted.
 *
 * Owns: {@link Server}, {@link spawnServer}, {@link killAllNow}. Imports
 * tests/wait.ts only.
 *
 * @module
 */

import { within } from "../../tests/wait.ts";

/** Lines of a server's output kept for error messages. */
const KEPT_LINES = 40;
/** How long a stopped server gets to exit before SIGKILL, and after it. */
const EXIT_WAIT_MS = 10_000;

const running = new Set<Server>();

/** A server process this benchmark started. */
export class Server {
  readonly name: string;
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #drained: Promise<void>;
  #lines: string[] = [];
  #text = "";
  #waiters: { pattern: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  #stopped: Promise<Deno.CommandStatus> | undefined;

  constructor(name: string, child: Deno.ChildProcess) {
    this.name = name;
    this.pid = child.pid;
    this.#child = child;
    this.#drained = Promise.all([this.#drain(child.stdout), this.#drain(child.stderr)]).then(
      () => {},
    );
    running.add(this);
  }

  /** Resolves with the first match of `pattern` in the output (both streams, so far or later). */
  async waitFor(pattern: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
    const found = pattern.exec(this.#text);
    if (found) return found;
    const { promise, resolve } = Promise.withResolvers<RegExpExecArray>();
    const waiter = { pattern, resolve };
    this.#waiters.push(waiter);
    const exited = this.#child.status.then((s) => {
      throw new Error(`${this.name} exited (${s.code}) before ${what}:\n${this.output()}`);
    });
    try {
      return await within(Promise.race([promise, exited]), timeoutMs, `${this.name}: ${what}`);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${this.output()}`);
    } finally {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      exited.catch(() => {});
    }
  }

  /** The last lines it printed, for error messages. */
  output(): string {
    return this.#lines.map((l) => `  ${this.name}| ${l}`).join("\n");
  }

  /** SIGTERM, then SIGKILL if it has not exited within 10 s; resolves once it has exited. */
  stop(): Promise<Deno.CommandStatus> {
    if (this.#stopped) return this.#stopped;
    this.#stopped = (async () => {
      signal(this.#child, "SIGTERM");
      const status = await within(this.#child.status, EXIT_WAIT_MS, `${this.name} to exit`)
        .catch(async () => {
          signal(this.#child, "SIGKILL");
          return await within(this.#child.status, EXIT_WAIT_MS, `${this.name} to die`);
        });
      await this.#drained;
      running.delete(this);
      return status;
    })();
    return this.#stopped;
  }

  /** SIGKILL now, without waiting. */
  kill(): void {
    signal(this.#child, "SIGKILL");
    running.delete(this);
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      // The full text is needed only until the servers said they are ready; keep it short after.
      this.#text = (this.#text + text).slice(-64 * 1024);
      for (const w of this.#waiters) {
        const m = w.pattern.exec(this.#text);
        if (m) w.resolve(m);
      }
      const lines = (partial + text).split("\n");
      partial = lines.pop()!;
      this.#lines.push(...lines);
      if (this.#lines.length > KEPT_LINES) this.#lines = this.#lines.slice(-KEPT_LINES);
    }
  }
}

function signal(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    child.kill(sig);
  } catch {
    // Already exited.
  }
}

/** Starts `command args`, output piped and kept; see {@link Server}. */
export function spawnServer(
  name: string,
  command: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Server {
  const child = new Deno.Command(command, {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  return new Server(name, child);
}

/** Last resort (a signal, the watchdog): SIGKILL every server still running. */
export function killAllNow(): void {
  for (const s of [...running]) s.kill();
}
