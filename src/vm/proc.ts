/**
 * Linux processes as /proc shows them: which process a pid names now (its
 * start time and the boot it belongs to), whether it still runs, and
 * signalling it only if it is still the same process.
 *
 * Owns: {@link ProcessIdentity}, {@link identityOf}, {@link isRunning},
 * {@link signalIfSame}, {@link signalName}. Imports nothing of the agent;
 * reads /proc with Deno's file API.
 *
 * Why: a handle recorded before an agent restart holds a pid, and the
 * kernel hands pids out again. Pid plus start time plus boot id names one
 * process; between the check and the signal a pid could still be reused,
 * a window of microseconds that a pidfd would close but Deno cannot open.
 *
 * @module
 */

/** One process, for as long as the host runs. */
export interface ProcessIdentity {
  readonly pid: number;
  /** Clock ticks after boot when it started (/proc/PID/stat field 22). */
  readonly startTicks: number;
  readonly bootId: string;
}

let cachedBootId: string | undefined;

/** This boot's id (/proc/sys/kernel/random/boot_id). */
export async function bootId(): Promise<string> {
  cachedBootId ??= (await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim();
  return cachedBootId;
}

/** The fields of a /proc/PID/stat line that matter here. */
export interface ProcStat {
  /** R, S, D, T, Z, ... (field 3). */
  readonly state: string;
  readonly startTicks: number;
}

/**
 * Parses a /proc/PID/stat line. The command name (field 2) is in
 * parentheses and may itself contain spaces and parentheses, so fields are
 * counted from the last `)`.
 */
export function parseStat(line: string): ProcStat | undefined {
  const close = line.lastIndexOf(")");
  if (close < 0) return undefined;
  const fields = line.slice(close + 2).trim().split(" ");
  // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
  const state = fields[0];
  const startTicks = Number(fields[19]);
  if (state === undefined || !Number.isSafeInteger(startTicks)) return undefined;
  return { state, startTicks };
}

/** /proc/PID/stat now, or `undefined` if no such process. */
export async function procStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseStat(await Deno.readTextFile(`/proc/${pid}/stat`));
  } catch (e) {
    if (processGone(e)) return undefined;
    throw e;
  }
}

/**
 * True for the errors reading a process's /proc files gives once it is gone:
 * NotFound, or ESRCH when it exited between the open and the read. Deno
 * gives ESRCH as a plain Error with no code: "No such process (os error 3)",
 * followed by ": readfile '/proc/…/stat'" when it comes from readTextFile.
 */
export function processGone(e: unknown): boolean {
  return e instanceof Deno.errors.NotFound ||
    (e instanceof Error && ((e as { code?: string }).code === "ESRCH" ||
      /\(os error 3\)(:|$)/.test(e.message)));
}

/** The identity of the process `pid` names now, or `undefined` if there is none. */
export async function identityOf(pid: number): Promise<ProcessIdentity | undefined> {
  const stat = await procStat(pid);
  return stat === undefined
    ? undefined
    : { pid, startTicks: stat.startTicks, bootId: await bootId() };
}

/**
 * True while the process exists and has not exited: same boot, same pid,
 * same start time, and not a zombie (a zombie has exited; only its parent's
 * wait is missing).
 */
export async function isRunning(id: ProcessIdentity): Promise<boolean> {
  if (id.bootId !== await bootId()) return false;
  const stat = await procStat(id.pid);
  return stat !== undefined && stat.startTicks === id.startTicks && stat.state !== "Z" &&
    stat.state !== "X";
}

/** Sends `signal` if `id` still runs; returns whether it was sent. */
export async function signalIfSame(id: ProcessIdentity, signal: Deno.Signal): Promise<boolean> {
  if (!await isRunning(id)) return false;
  try {
    Deno.kill(id.pid, signal);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

const SIGNAL_NAMES: Readonly<Record<number, string>> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  10: "SIGUSR1",
  11: "SIGSEGV",
  12: "SIGUSR2",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
  24: "SIGXCPU",
  25: "SIGXFSZ",
  31: "SIGSYS",
};

/** `SIGKILL` for 9, on Linux x86-64 and arm64; `signal 40` for one without a name here. */
export function signalName(signal: number): string {
  return SIGNAL_NAMES[signal] ?? `signal ${signal}`;
}
