/**
 * Acceleration for qemu: KVM where it really works, TCG (software emulation)
 * elsewhere. `/dev/kvm` existing is not enough: under nested virtualisation
 * qemu may fail to set up a KVM vCPU (it aborts on an MSR it cannot set)
 * or the guest hangs. So `auto` runs a probe guest under KVM with the CPU
 * model the backend boots real guests with (`-cpu host`), once per process
 * and qemu binary, and says in a log line what it found.
 *
 * Owns: {@link probeKvm}, {@link chooseAccel}, the probe's cache. Imports
 * spec.ts (the mode type) and util/log.ts.
 *
 * The probe guest is a 64 KiB firmware image made here: the last 16 bytes
 * (where an x86 CPU starts, in real mode) write 0x2a to an `isa-debug-exit`
 * port, which makes qemu exit with status (0x2a << 1) | 1 = 85. Any other end
 * (an abort, an error, a hang past the timeout) means KVM is not usable.
 * It proves that qemu can create a KVM vCPU of that model and run guest code;
 * it cannot prove that a full kernel boots.
 *
 * @module
 */

import { type Logger, silentLogger } from "../util/log.ts";
import type { AccelMode } from "./spec.ts";

/** What the probe found. */
export interface KvmProbe {
  readonly usable: boolean;
  /** Why, for the log line and errors. */
  readonly reason: string;
  /** How long the probe took. */
  readonly tookMs: number;
}

/** The accelerator chosen for a VM, and why. */
export interface AccelChoice {
  readonly accel: "kvm" | "tcg";
  readonly reason: string;
}

const PROBE_EXIT_STATUS = (0x2a << 1) | 1;
const DEBUG_EXIT_PORT = 0xf4;

/** The probe firmware: real-mode code at the reset vector that writes to the debug-exit port. */
export function probeFirmware(): Uint8Array {
  const image = new Uint8Array(64 * 1024);
  // mov al, 0x2a; out 0xf4, al; hlt; jmp $-3 (back to hlt)
  const code = [0xb0, 0x2a, 0xe6, DEBUG_EXIT_PORT, 0xf4, 0xeb, 0xfd];
  image.set(code, image.length - 16);
  return image;
}

/** Options of {@link probeKvm}. */
export interface ProbeOptions {
  /** The qemu binary (default `qemu-system-x86_64` on PATH). */
  readonly qemu?: string;
  /** How long the probe guest may take (default 5000 ms). */
  readonly timeoutMs?: number;
  /** The KVM device (default `/dev/kvm`). */
  readonly device?: string;
}

/** Runs the probe: can this host run a KVM guest with `-cpu host` under this qemu? */
export async function probeKvm(options: ProbeOptions = {}): Promise<KvmProbe> {
  const started = performance.now();
  const took = () => Math.round(performance.now() - started);
  const device = options.device ?? "/dev/kvm";
  try {
    (await Deno.open(device, { read: true, write: true })).close();
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? `${device} does not exist (no KVM on this host)`
      : e instanceof Deno.errors.PermissionDenied
      ? `${device} cannot be opened for reading and writing by uid ${Deno.uid()} (the kvm group)`
      : `${device} cannot be opened: ${(e as Error).message}`;
    return { usable: false, reason: why, tookMs: took() };
  }
  const firmware = await Deno.makeTempFile({ prefix: "blixard-kvm-probe-", suffix: ".bin" });
  try {
    await Deno.writeFile(firmware, probeFirmware());
    const qemu = options.qemu ?? "qemu-system-x86_64";
    const timeoutMs = options.timeoutMs ?? 5000;
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(qemu, {
        args: [
          ...["-machine", "microvm,x-option-roms=off", "-accel", "kvm", "-cpu", "host"],
          ...["-m", "16", "-nodefaults", "-no-user-config", "-display", "none"],
          ...[
            "-bios",
            firmware,
            "-device",
            `isa-debug-exit,iobase=0x${DEBUG_EXIT_PORT.toString(16)},iosize=0x04`,
          ],
        ],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      return {
        usable: false,
        reason: `cannot run ${qemu}: ${(e as Error).message}`,
        tookMs: took(),
      };
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    const stderr = readBounded(child.stderr, 8192);
    timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // exited meanwhile
      }
    }, timeoutMs);
    const status = await child.status;
    clearTimeout(timer);
    timer = undefined;
    const text = await stderr;
    if (status.code === PROBE_EXIT_STATUS && !timedOut) {
      return { usable: true, reason: "a probe guest ran under KVM with -cpu host", tookMs: took() };
    }
    const lastLines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
    // qemu's first error line says why; the last is often an assertion that follows from it.
    const said = lastLines.find((l) => l.includes("error")) ?? lastLines.at(-1) ?? "";
    const how = timedOut
      ? `the probe guest did not finish within ${timeoutMs} ms`
      : status.signal !== null
      ? `qemu was killed by ${status.signal}`
      : `qemu exited with status ${status.code}`;
    return {
      usable: false,
      reason: `${how} under KVM with -cpu host` + (said ? `: ${said.slice(0, 300)}` : ""),
      tookMs: took(),
    };
  } finally {
    await Deno.remove(firmware).catch(() => {});
  }
}

async function readBounded(stream: ReadableStream<Uint8Array>, maxBytes: number): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of stream) {
    if (text.length < maxBytes) text += decoder.decode(chunk, { stream: true });
  }
  return text.slice(0, maxBytes);
}

const probes = new Map<string, Promise<KvmProbe>>();

/**
 * The probe's answer for `qemu` (and the device), run once per process; the
 * first call logs what it found.
 */
export function cachedKvmProbe(
  qemu: string,
  logger: Logger = silentLogger,
  options: Omit<ProbeOptions, "qemu"> = {},
): Promise<KvmProbe> {
  const key = `${qemu}\0${options.device ?? "/dev/kvm"}`;
  let probe = probes.get(key);
  if (probe === undefined) {
    probe = probeKvm({ ...options, qemu }).then((p) => {
      if (p.usable) logger.info("kvm works here", { reason: p.reason, probe_ms: p.tookMs });
      // Not a warning: `auto` is documented to fall back, and `kvm` refuses with its own error.
      else {logger.info("kvm unusable here; qemu VMs use tcg", {
          reason: p.reason,
          probe_ms: p.tookMs,
        });}
      return p;
    });
    probes.set(key, probe);
  }
  return probe;
}

/**
 * The accelerator for `mode`: `tcg` as asked, `kvm` only if the probe passes
 * (else `undefined` and the reason), `auto` KVM if the probe passes, else TCG.
 */
export async function chooseAccel(
  mode: AccelMode,
  qemu: string,
  logger: Logger = silentLogger,
  options: Omit<ProbeOptions, "qemu"> = {},
): Promise<AccelChoice | { readonly accel: undefined; readonly reason: string }> {
  if (mode === "tcg") return { accel: "tcg", reason: "accel = tcg" };
  const probe = await cachedKvmProbe(qemu, logger, options);
  if (probe.usable) return { accel: "kvm", reason: probe.reason };
  if (mode === "kvm") return { accel: undefined, reason: probe.reason };
  return { accel: "tcg", reason: `kvm unusable: ${probe.reason}` };
}

/**
 * Parses the host's TSC rate from /proc/cpuinfo text: the first `cpu MHz`,
 * which x86 Linux prints from its calibrated `cpu_khz` when the CPU has no
 * `aperfmperf` (as in a virtual machine, where TCG is what runs); with
 * `aperfmperf` it is the current clock speed, not the TSC's, so `undefined`.
 */
export function tscKhzFromCpuinfo(cpuinfo: string): number | undefined {
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes("tsc") || flags.includes("aperfmperf")) return undefined;
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)$/m.exec(cpuinfo)?.[1]);
  return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : undefined;
}

let hostTsc: Promise<number | undefined> | undefined;

/**
 * The host's TSC rate in kHz, which a TCG guest's TSC runs at, or
 * `undefined` where /proc/cpuinfo does not tell it. Read once per process.
 *
 * Why a guest needs it: microvm gives the guest no HPET and no ACPI PM timer,
 * so Linux calibrates its TSC against the PIT alone, and under TCG on a
 * busy host that fails ("tsc: Unable to calibrate against PIT") and boot
 * hangs. Measured here: 4 guests at once on 2 cores reached /init 0 times
 * in 8 without `tsc_early_khz=`, 8 in 8 with it.
 */
export function hostTscKhz(): Promise<number | undefined> {
  hostTsc ??= Deno.readTextFile("/proc/cpuinfo").then(tscKhzFromCpuinfo, () => undefined);
  return hostTsc;
}
