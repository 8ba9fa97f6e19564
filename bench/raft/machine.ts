/**
 * What a Raft benchmark's figures depend on, read from the machine: CPU,
 * cores, memory, the disk under the data directories and what one fdatasync
 * costs on it, what a turn of Deno's event loop costs through a zero-delay
 * timer and through `setImmediate`, the load average, and the CPU time a
 * process (and its main thread) used over a window, from /proc.
 *
 * Owns: {@link describeMachine}, {@link cpuSeconds}. Imports nothing of the agent.
 *
 * @module
 */

/** The machine, as printed above the table. */
export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  /** Device, file system and kind of the disk that holds the data directories. */
  readonly disk: string;
  /** One 4 KiB write plus fdatasync in the data directory, p50 and p99, ms. */
  readonly fdatasyncP50Ms: number;
  readonly fdatasyncP99Ms: number;
  /** `setTimeout(fn, 0)` until `fn` runs, p50, ms: how the consensus driver defers its work. */
  readonly zeroTimeoutP50Ms: number;
  /** `setImmediate(fn)` until `fn` runs, p50, ms. */
  readonly setImmediateP50Ms: number;
  readonly loadAverage: string;
  readonly kernel: string;
}

/** Writes and fdatasyncs timed by the disk probe. */
const FSYNC_PROBES = 200;
/** Deferrals timed by the event loop probe, per kind. */
const DEFER_PROBES = 500;

async function readText(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

async function run(command: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "";
  } catch {
    return "";
  }
}

/** The disk that holds `dir`: device, file system, and whether it is rotational or virtual. */
async function describeDisk(dir: string): Promise<string> {
  const [source = "?", fstype = "?"] = (await run("findmnt", ["-no", "SOURCE,FSTYPE", "-T", dir]))
    .split(/\s+/);
  const dev = /^\/dev\/([a-z]+)/.exec(source)?.[1];
  if (!dev) return `${source} ${fstype}`;
  const rotational = (await readText(`/sys/block/${dev}/queue/rotational`)).trim();
  const kind = rotational === "1" ? "rotational" : rotational === "0" ? "non-rotational" : "";
  const virtio = dev.startsWith("vd") ? "virtio " : "";
  return `${source} ${fstype}, ${virtio}${kind}`.trim();
}

/** p50 and p99 of `FSYNC_PROBES` 4 KiB writes each followed by fdatasync, in `dir`. */
async function probeFdatasync(dir: string): Promise<{ p50: number; p99: number }> {
  const path = `${dir}/fsync-probe`;
  const file = await Deno.open(path, { create: true, write: true, truncate: true });
  const block = new Uint8Array(4096).fill(7);
  const times: number[] = [];
  try {
    for (let i = 0; i < FSYNC_PROBES; i++) {
      const t0 = performance.now();
      await file.write(block);
      await file.syncData();
      times.push(performance.now() - t0);
    }
  } finally {
    file.close();
    await Deno.remove(path).catch(() => {});
  }
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!;
  return { p50: at(0.5), p99: at(0.99) };
}

/** p50 of `DEFER_PROBES` deferrals through `defer`, each awaited before the next, ms. */
async function probeDefer(defer: (fn: () => void) => void): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < DEFER_PROBES; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => defer(resolve));
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}

/** The machine, with the disk probed in `dataDir`. */
export async function describeMachine(dataDir: string): Promise<Machine> {
  const cpuinfo = await readText("/proc/cpuinfo");
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown CPU";
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(await readText("/proc/meminfo"))?.[1] ?? 0);
  const fsync = await probeFdatasync(dataDir);
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(memKiB / 1024 / 1024),
    disk: await describeDisk(dataDir),
    fdatasyncP50Ms: fsync.p50,
    fdatasyncP99Ms: fsync.p99,
    zeroTimeoutP50Ms: await probeDefer((fn) => setTimeout(fn, 0)),
    setImmediateP50Ms: await probeDefer((fn) => setImmediate(fn)),
    loadAverage: (await readText("/proc/loadavg")).split(" ").slice(0, 3).join(" "),
    kernel: `${Deno.build.os} ${Deno.build.arch} ${(await run("uname", ["-r"])) || ""}`.trim(),
  };
}

/** Clock ticks per second of /proc's CPU times (USER_HZ; 100 on every Linux this runs on). */
const USER_HZ = 100;

/** CPU seconds (user + system) from a /proc stat line; 0 if it cannot be read. */
async function statSeconds(path: string): Promise<number> {
  const stat = await readText(path);
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime + stime) ? (utime + stime) / USER_HZ : 0;
}

/** CPU time a process used so far: all its threads, and its main thread alone. */
export interface CpuTime {
  readonly processS: number;
  /** The main thread: for a Deno process, its JavaScript event loop. */
  readonly mainThreadS: number;
}

/** The CPU time process `pid` has used so far. */
export async function cpuSeconds(pid: number): Promise<CpuTime> {
  const [processS, mainThreadS] = await Promise.all([
    statSeconds(`/proc/${pid}/stat`),
    statSeconds(`/proc/${pid}/task/${pid}/stat`),
  ]);
  return { processS, mainThreadS };
}
