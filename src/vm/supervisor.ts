/**
 * The node-local side every process-based backend shares: the VM directory
 * (`<data_dir>/vms/<name>/`), its `vm.json` record, and running the VM's
 * process under a supervisor that outlives the agent and records how the
 * process ended.
 *
 * Owns: the directory layout ({@link vmDir}, {@link VM_FILES}), reading and
 * writing records ({@link writeRecord}, {@link readRecord},
 * {@link listRecords}), {@link spawnSupervised}, exit statuses
 * ({@link readExit}, {@link describeExit}), waiting for the end
 * ({@link waitForEnd}), the stop marker, and log tails and trimming.
 * Imports backend.ts (types, errors) and proc.ts.
 *
 * The supervisor is `/bin/sh` in a session of its own (so a Ctrl-C meant for
 * the agent does not reach the VM): it starts the VM's command with output
 * appended to a log file, writes the command's pid and /proc stat line to
 * `pid`, waits for it, and writes its exit status to `exit`. Because the
 * supervisor, not the agent, is the parent, the exit status survives an agent
 * restart: a VM killed while the agent was down is reported with the signal
 * that killed it. A shell reports death by signal N as status 128+N, so an
 * exit code above 128 reads as a signal (docs/vm.md).
 *
 * @module
 */

import { type ExitStatus, VmBackendError, type VmHandle, type VmObservation } from "./backend.ts";
import {
  bootId,
  identityOf,
  isRunning,
  parseStat,
  type ProcessIdentity,
  signalIfSame,
  signalName,
} from "./proc.ts";

/** The files of a VM directory. */
export const VM_FILES = Object.freeze({
  /** The recorded {@link VmHandle}. */
  record: "vm.json",
  /** The supervisor's note of the VM's pid and /proc stat line. */
  pid: "pid",
  /** The VM's exit status as the supervisor saw it (a shell's `$?`). */
  exit: "exit",
  /** Written before a stop or kill: which step was taken, so the end reads as asked for. */
  stop: "stop",
});

/** The PATH a VM's process gets (the agent's own environment is not passed on). */
export const VM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Bounds of the files this module reads (written by the agent or its supervisor). */
export const SUPERVISOR_LIMITS = Object.freeze({
  maxRecordBytes: 64 * 1024,
  /** How much of a log's end a reason quotes. */
  tailBytes: 4096,
});

/** `<data_dir>/vms/<name>`. */
export function vmDir(dataDir: string, name: string): string {
  return `${dataDir.replace(/\/+$/, "")}/vms/${name}`;
}

/**
 * Makes `<data_dir>/vms/<name>/` ready for a new run: creates it, refuses if
 * the process its record names still runs, and keeps each of `logs` from the
 * last run as `<log>.1`.
 *
 * @throws {VmBackendError} `ALREADY_RUNNING`.
 */
export async function prepareVmDir(
  dataDir: string,
  name: string,
  logs: readonly string[],
): Promise<string> {
  const dir = vmDir(dataDir, name);
  await Deno.mkdir(dir, { recursive: true, mode: 0o750 });
  const old = await readRecord(dir).catch(() => undefined);
  if (old !== undefined && await isRunning(vmIdentity(old))) {
    throw new VmBackendError(
      "ALREADY_RUNNING",
      name,
      `its process (pid ${old.pid}, recorded in ${dir}/${VM_FILES.record}) still runs; ` +
        "adopt it instead of starting it again",
    );
  }
  for (const log of logs) {
    await Deno.rename(`${dir}/${log}`, `${dir}/${log}.1`).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
  return dir;
}

/** Writes `handle` to its directory's `vm.json`, replacing it atomically (rename). */
export async function writeRecord(handle: VmHandle): Promise<void> {
  const path = `${handle.dir}/${VM_FILES.record}`;
  await Deno.writeTextFile(`${path}.tmp`, JSON.stringify(handle, null, 2) + "\n");
  await Deno.rename(`${path}.tmp`, path);
}

const RECORD_NUMBERS = [
  "pid",
  "startTicks",
  "supervisorPid",
  "supervisorStartTicks",
  "startedAtMs",
  "generation",
] as const;
const RECORD_STRINGS = ["name", "backend", "bootId", "controlSocket", "dir"] as const;

/**
 * Reads the `vm.json` of `dir`; `undefined` if there is none.
 *
 * @throws {VmBackendError} `BAD_RECORD` naming the file and what is wrong.
 */
export async function readRecord(dir: string): Promise<VmHandle | undefined> {
  const path = `${dir}/${VM_FILES.record}`;
  const name = dir.slice(dir.lastIndexOf("/") + 1);
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (info.size > SUPERVISOR_LIMITS.maxRecordBytes) {
      throw new VmBackendError(
        "BAD_RECORD",
        name,
        `${path} is ${info.size} bytes, more than the ${SUPERVISOR_LIMITS.maxRecordBytes} a record may be`,
      );
    }
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new VmBackendError("BAD_RECORD", name, `${path} is not JSON: ${(e as Error).message}`);
  }
  const bad = (what: string) =>
    new VmBackendError("BAD_RECORD", name, `${path}: ${what}; expected a record of version 1`);
  if (typeof value !== "object" || value === null || value["version"] !== 1) {
    throw bad(`version ${JSON.stringify(value?.["version"])}`);
  }
  for (const key of RECORD_NUMBERS) {
    if (!Number.isSafeInteger(value[key])) throw bad(`${key} is ${JSON.stringify(value[key])}`);
  }
  for (const key of RECORD_STRINGS) {
    if (typeof value[key] !== "string") throw bad(`${key} is ${JSON.stringify(value[key])}`);
  }
  if (value["name"] !== name) {
    throw bad(`name ${JSON.stringify(value["name"])} in directory ${name}`);
  }
  return value as unknown as VmHandle;
}

/** What {@link listRecords} found. */
export interface RecordList {
  readonly handles: VmHandle[];
  /** Directories whose record could not be read, with why. */
  readonly errors: { readonly name: string; readonly error: VmBackendError }[];
}

/** Every VM recorded under `<data_dir>/vms/`, by name. */
export async function listRecords(dataDir: string): Promise<RecordList> {
  const out: RecordList = { handles: [], errors: [] };
  const root = `${dataDir.replace(/\/+$/, "")}/vms`;
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(root));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return out;
    throw e;
  }
  for (const entry of entries.sort((a, b) => a.name < b.name ? -1 : 1)) {
    if (!entry.isDirectory) continue;
    try {
      const handle = await readRecord(`${root}/${entry.name}`);
      if (handle !== undefined) out.handles.push(handle);
    } catch (e) {
      if (!(e instanceof VmBackendError)) throw e;
      out.errors.push({ name: entry.name, error: e });
    }
  }
  return out;
}

/** The VM's process and its supervisor, as identities. */
export function vmIdentity(handle: VmHandle): ProcessIdentity {
  return { pid: handle.pid, startTicks: handle.startTicks, bootId: handle.bootId };
}

function supervisorIdentity(handle: VmHandle): ProcessIdentity {
  return {
    pid: handle.supervisorPid,
    startTicks: handle.supervisorStartTicks,
    bootId: handle.bootId,
  };
}

// $1: the VM directory, $2: the log file, then the command. Everything the
// shell itself prints goes to the log too. The child records its own stat
// line before it becomes the command (exec keeps the pid and start time): a
// command that ends at once may be reaped before the supervisor could read it.
const SUPERVISOR_SCRIPT = `exec </dev/null >>"$2" 2>&1
dir=$1
shift 2
(
  read -r stat </proc/self/stat
  printf '%s\\n' "$stat" >"$dir/pid.tmp" && mv -f "$dir/pid.tmp" "$dir/pid"
  exec "$@"
) &
child=$!
wait "$child"
status=$?
printf '%s\\n' "$status" >"$dir/exit.tmp" && mv -f "$dir/exit.tmp" "$dir/exit"
`;

/** What {@link spawnSupervised} needs. */
export interface SpawnOptions {
  readonly name: string;
  readonly dir: string;
  readonly argv: readonly string[];
  /** Where the command's stdout and stderr are appended. */
  readonly logFile: string;
  /** The command's whole environment. */
  readonly env: Readonly<Record<string, string>>;
  /** How long the supervisor may take to report the pid (default 5000 ms). */
  readonly timeoutMs?: number;
}

/** A command running under its supervisor. */
export interface Supervised {
  readonly vm: ProcessIdentity;
  readonly supervisor: ProcessIdentity;
  /** Resolves when the supervisor exits (after it has written `exit`). */
  readonly done: Promise<void>;
}

/**
 * Starts `argv` under a supervisor in a new session, in `dir`, and returns
 * once the command's pid is known. Earlier `pid`, `exit` and `stop` files are
 * removed first.
 *
 * @throws {VmBackendError} `START_FAILED` if the supervisor cannot start or
 * reports no pid in time.
 */
export async function spawnSupervised(options: SpawnOptions): Promise<Supervised> {
  const { dir, name } = options;
  for (const file of [VM_FILES.pid, VM_FILES.exit, VM_FILES.stop]) {
    await Deno.remove(`${dir}/${file}`).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("/bin/sh", {
      args: ["-c", SUPERVISOR_SCRIPT, "blixard-supervisor", dir, options.logFile, ...options.argv],
      cwd: dir,
      clearEnv: true,
      env: { ...options.env },
      stdin: "null",
      stdout: "null",
      stderr: "null",
      detached: true,
    }).spawn();
  } catch (e) {
    throw new VmBackendError("START_FAILED", name, `cannot run /bin/sh: ${e}`, { cause: e });
  }
  // The supervisor outlives the agent by design; its exit must not hold the agent open.
  child.unref();
  let exited = false;
  const done = child.status.then(() => {
    exited = true;
  });
  // A supervisor whose command failed at once may be gone (and reaped) already.
  const supervisor = await identityOf(child.pid) ??
    { pid: child.pid, startTicks: -1, bootId: await bootId() };
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  for (;;) {
    // Read after noting whether the supervisor had exited: then a missing file is final.
    const hadExited = exited;
    const line = await Deno.readTextFile(`${dir}/${VM_FILES.pid}`).catch(() => undefined);
    const stat = line === undefined ? undefined : parseStat(line);
    const pid = line === undefined ? NaN : Number(line.slice(0, line.indexOf(" ")));
    if (stat !== undefined && Number.isSafeInteger(pid)) {
      return {
        vm: { pid, startTicks: stat.startTicks, bootId: supervisor.bootId },
        supervisor,
        done,
      };
    }
    if (hadExited || Date.now() > deadline) {
      const tail = await logTail(options.logFile);
      throw new VmBackendError(
        "START_FAILED",
        name,
        `the supervisor ${hadExited ? "exited" : "did not report a pid in time"} before ` +
          `${options.argv[0]} was running` + (tail ? `: ${tail}` : ""),
      );
    }
    await sleep(5);
  }
}

/** The exit status the supervisor recorded, or `undefined` if none (yet). */
export async function readExit(dir: string): Promise<ExitStatus | undefined> {
  const text = await Deno.readTextFile(`${dir}/${VM_FILES.exit}`).catch(() => undefined);
  if (text === undefined || !/^\d{1,3}\n?$/.test(text)) return undefined;
  const status = Number(text.trim());
  // A shell reports death by signal N as 128+N (there are at most 64 signals).
  return status > 128 && status <= 128 + 64 ? { signal: status - 128 } : { code: status };
}

/** `exit code 1`, or `killed by SIGKILL (signal 9)`. */
export function describeExit(exit: ExitStatus): string {
  return exit.signal !== undefined
    ? `killed by ${signalName(exit.signal)} (signal ${exit.signal})`
    : `exit code ${exit.code}`;
}

/** How a VM's process stands. */
export type ProcessEnd =
  | { readonly kind: "running" }
  /** Ended; `exit` is what the supervisor recorded. */
  | { readonly kind: "ended"; readonly exit: ExitStatus }
  /** Gone with no exit status: the supervisor is gone too. */
  | { readonly kind: "vanished" };

/**
 * Whether the VM's process runs, and if not how it ended. A process that has
 * just ended, whose supervisor is still writing its status, is waited for
 * up to `settleMs`.
 */
export async function processEnd(handle: VmHandle, settleMs = 1000): Promise<ProcessEnd> {
  if (await isRunning(vmIdentity(handle))) return { kind: "running" };
  const until = Date.now() + settleMs;
  for (;;) {
    const exit = await readExit(handle.dir);
    if (exit !== undefined) return { kind: "ended", exit };
    if (!await isRunning(supervisorIdentity(handle)) || Date.now() > until) {
      // One more look: the supervisor may have written the file as it exited.
      const last = await readExit(handle.dir);
      return last !== undefined ? { kind: "ended", exit: last } : { kind: "vanished" };
    }
    await sleep(10);
  }
}

/** Waits until the VM's process has ended (or `timeoutMs` passed); returns whether it ended. */
export async function waitForEnd(handle: VmHandle, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (!await isRunning(vmIdentity(handle))) return true;
    if (Date.now() >= until) return false;
    await sleep(Math.min(20, Math.max(1, until - Date.now())));
  }
}

/** Records that a stop is under way, and which step it has reached (`powerdown`, `quit`, `SIGKILL`). */
export async function markStop(handle: VmHandle, step: string): Promise<void> {
  await Deno.writeTextFile(`${handle.dir}/${VM_FILES.stop}`, step + "\n");
}

/** The last stop step recorded for the current run, or `undefined` if no stop was asked for. */
export async function stopMarker(handle: VmHandle): Promise<string | undefined> {
  const text = await Deno.readTextFile(`${handle.dir}/${VM_FILES.stop}`).catch(() => undefined);
  return text === undefined ? undefined : text.trim().slice(0, 200);
}

/** The last non-empty line of a log file (from its last 4 KiB), or "". */
export async function logTail(path: string): Promise<string> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch {
    return "";
  }
  try {
    const size = (await file.stat()).size;
    const n = Math.min(size, SUPERVISOR_LIMITS.tailBytes);
    await file.seek(size - n, Deno.SeekMode.Start);
    const buf = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const r = await file.read(buf.subarray(got));
      if (r === null) break;
      got += r;
    }
    const lines = new TextDecoder().decode(buf.subarray(0, got)).split("\n")
      .map((l) => l.trim()).filter((l) => l !== "");
    return lines.at(-1)?.slice(0, 500) ?? "";
  } finally {
    file.close();
  }
}

/**
 * Keeps a log that a guest or command writes to without end under
 * `maxBytes`: past it, the file is copied to `<path>.1` (replacing the last
 * copy) and truncated, as logrotate's copytruncate does. The writer appends
 * (O_APPEND), so it goes on writing at the new end; what it writes between
 * the copy and the truncation is lost.
 */
export async function trimLog(path: string, maxBytes: number): Promise<boolean> {
  const info = await Deno.stat(path).catch(() => undefined);
  if (info === undefined || info.size <= maxBytes) return false;
  await Deno.copyFile(path, `${path}.1`);
  await Deno.truncate(path, 0);
  return true;
}

/** Removes a VM's directory and everything in it. */
export async function removeVmDir(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How a backend words the end of its process; see {@link observeEnd}. */
export interface EndWording {
  /** What the process is, for reasons: `qemu`, `command`. */
  readonly subject: string;
  /** The log to quote the last line of when the process failed. */
  readonly logFile: string;
  /**
   * Overrides the reading of a clean exit (code 0): a reason if the exit was
   * a failure all the same (qemu: the guest panicked), a reason if it was a
   * plain stop (qemu: the guest powered off).
   */
  readonly cleanExit?: { readonly failed: boolean; readonly reason: string };
}

/**
 * Reads how a VM's process ended: `stopped` if a stop was asked for (the
 * marker says which step ended it) or it exited with code 0, `exited` for
 * any other end, `vanished` when no status was recorded.
 */
export async function observeEnd(
  handle: VmHandle,
  end: Exclude<ProcessEnd, { kind: "running" }>,
  wording: EndWording,
): Promise<VmObservation> {
  if (end.kind === "vanished") {
    return {
      kind: "vanished",
      reason: `${wording.subject} (pid ${handle.pid}) is gone and no exit status was recorded ` +
        "(its supervisor is gone too, or the host restarted)",
    };
  }
  const exit = end.exit;
  const step = await stopMarker(handle);
  if (step !== undefined) {
    const how = exit.code === 0 && wording.cleanExit !== undefined
      ? wording.cleanExit.reason
      : describeExit(exit);
    return { kind: "stopped", reason: `stopped (${step}): ${how}`, exit };
  }
  if (exit.code === 0) {
    const clean = wording.cleanExit;
    if (clean?.failed) return { kind: "exited", reason: clean.reason, exit };
    return { kind: "stopped", reason: clean?.reason ?? `${wording.subject}: exit code 0`, exit };
  }
  const tail = exit.code !== undefined ? await logTail(wording.logFile) : "";
  return {
    kind: "exited",
    reason: `${wording.subject}: ${describeExit(exit)}` + (tail ? `: ${tail}` : ""),
    exit,
  };
}

/**
 * The supervisors this agent started, so that closing a backend can wait
 * for those whose VM has ended to finish writing and exit (their exit is
 * an operation of this process until then). Running ones are left alone.
 */
export class Supervisors {
  readonly #done = new Map<number, { handle: VmHandle; done: Promise<void> }>();

  /** Tracks the supervisor of `handle` until it exits. */
  add(handle: VmHandle, done: Promise<void>): void {
    this.#done.set(handle.supervisorPid, { handle, done });
    done.then(() => this.#done.delete(handle.supervisorPid));
  }

  /** Waits up to `timeoutMs` for the supervisors whose VM has ended. */
  async settle(timeoutMs = 2000): Promise<void> {
    const ended: Promise<void>[] = [];
    for (const { handle, done } of this.#done.values()) {
      if (!await isRunning(vmIdentity(handle))) ended.push(done);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(ended),
      new Promise((resolve) => timer = setTimeout(resolve, timeoutMs)),
    ]);
    clearTimeout(timer);
  }
}

/** The handle of a VM just started under its supervisor. */
export function handleOf(
  spec: { readonly name: string },
  backend: string,
  dir: string,
  sup: Supervised,
  options: { readonly generation: number; readonly controlSocket: string },
): VmHandle {
  return {
    version: 1,
    name: spec.name,
    backend,
    pid: sup.vm.pid,
    startTicks: sup.vm.startTicks,
    bootId: sup.vm.bootId,
    supervisorPid: sup.supervisor.pid,
    supervisorStartTicks: sup.supervisor.startTicks,
    controlSocket: options.controlSocket,
    dir,
    startedAtMs: Date.now(),
    generation: options.generation,
  };
}

/**
 * Records `step` and sends SIGKILL if the VM still runs, then waits up to
 * `timeoutMs` for it to end.
 *
 * @throws {VmBackendError} `STOP_FAILED` if it still runs then.
 */
export async function killAndWait(
  handle: VmHandle,
  step: string,
  timeoutMs: number,
): Promise<void> {
  if (!await isRunning(vmIdentity(handle))) return;
  await markStop(handle, step);
  await signalIfSame(vmIdentity(handle), "SIGKILL");
  if (!await waitForEnd(handle, timeoutMs)) {
    throw new VmBackendError(
      "STOP_FAILED",
      handle.name,
      `pid ${handle.pid} still runs ${timeoutMs} ms after SIGKILL ` +
        "(a process in uninterruptible sleep ends when its I/O does)",
    );
  }
}

/**
 * Refuses a handle another backend recorded.
 *
 * @throws {VmBackendError} `WRONG_BACKEND`.
 */
export function checkOwner(handle: VmHandle, backend: string): void {
  if (handle.backend !== backend) {
    throw new VmBackendError(
      "WRONG_BACKEND",
      handle.name,
      `handle of backend ${JSON.stringify(handle.backend)} given to the ${backend} backend`,
    );
  }
}
