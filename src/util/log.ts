/**
 * Logging: one line per event on stderr, `level component: message key=value`,
 * and a rate limiter so a misbehaving peer cannot flood the log.
 *
 * Owns: {@link Logger}, {@link createLogger}, {@link RateLimiter}. Imports nothing.
 *
 * @module
 */

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Structured fields appended to a line as `key=value`. */
export type LogFields = Readonly<Record<string, unknown>>;

/** Where log lines go. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger for a sub-component, `parent.child`. */
  child(name: string): Logger;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. Default `BLIXARD_LOG` from the environment, else `info`. */
  readonly level?: LogLevel;
  /** Receives each formatted line. Default: stderr. */
  readonly sink?: (line: string) => void;
}

function envLevel(): LogLevel {
  try {
    const v = Deno.env.get("BLIXARD_LOG");
    if (v === "debug" || v === "info" || v === "warn" || v === "error") return v;
  } catch {
    // no env permission: default level
  }
  return "info";
}

function format(value: unknown): string {
  const s = typeof value === "string"
    ? value
    : value instanceof Error
    ? value.message
    : String(value);
  return /[\s"=]/.test(s) ? JSON.stringify(s) : s;
}

/** A logger writing `LEVEL name: message k=v` lines. */
export function createLogger(name: string, options: LoggerOptions = {}): Logger {
  const min = RANK[options.level ?? envLevel()];
  const encoder = new TextEncoder();
  const sink = options.sink ??
    ((line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n")));
  const write = (level: LogLevel, message: string, fields?: LogFields) => {
    if (RANK[level] < min) return;
    let line = `${level.toUpperCase().padEnd(5)} ${name}: ${message}`;
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v !== undefined) line += ` ${k}=${format(v)}`;
      }
    }
    sink(line);
  };
  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (child) => createLogger(`${name}.${child}`, options),
  };
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};

/**
 * Allows one event per key per interval, and counts what it suppressed, so
 * "refused endpoint X" is logged once a minute per X however often X knocks.
 * Holds at most `maxKeys` keys; the oldest are forgotten first.
 */
export class RateLimiter {
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  readonly #last = new Map<string, { at: number; suppressed: number }>();

  constructor(intervalMs: number, maxKeys = 1024) {
    this.#intervalMs = intervalMs;
    this.#maxKeys = maxKeys;
  }

  /**
   * Returns -1 if the event should be dropped, else how many events of this
   * key were dropped since the last one allowed.
   */
  allow(key: string, now: number = Date.now()): number {
    const entry = this.#last.get(key);
    if (entry && now - entry.at < this.#intervalMs) {
      entry.suppressed++;
      return -1;
    }
    const suppressed = entry?.suppressed ?? 0;
    this.#last.delete(key);
    this.#last.set(key, { at: now, suppressed: 0 });
    if (this.#last.size > this.#maxKeys) this.#last.delete(this.#last.keys().next().value!);
    return suppressed;
  }
}
