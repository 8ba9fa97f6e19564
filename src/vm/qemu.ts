/**
 * The `qemu` backend: a VM is a `qemu-system-x86_64 -machine microvm`
 * process, driven over QMP, run under the supervisor (supervisor.ts) so it
 * outlives the agent. Its directory `<data_dir>/vms/<name>/` holds `vm.json`
 * (the handle), `qmp.sock`, `serial.log` (the guest's console) and
 * `qemu.log` (qemu's own messages).
 *
 * Owns: {@link QemuBackend}, {@link qemuArgs}. Imports backend.ts, qmp.ts,
 * accel.ts, spec.ts, supervisor.ts, proc.ts and util/log.ts.
 *
 * Boot: the spec's `kernel`, with `backend_options.initrd` and
 * `backend_options.cmdline`; `image`, if set, is the guest's virtio disk
 * (/dev/vda). microvm has no firmware that boots from a virtio-mmio disk, so
 * the kernel always comes from the host.
 *
 * Stop: `system_powerdown` (the ACPI power button), up to the stop timeout
 * for the guest to power off; then QMP `quit`; then SIGKILL. State: the
 * process (by pid and start time), and QMP `query-status` while it runs.
 * The last SHUTDOWN event tells a guest power-off from a guest reset or
 * panic (qemu runs with `-no-reboot`, so a reboot ends the VM too).
 *
 * Under TCG the guest kernel is told the TSC rate (`tsc_early_khz=`, see
 * accel.ts `hostTscKhz`): without it a guest on a busy host hangs in boot.
 *
 * @module
 */

import type { VmSpec } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { type Logger, silentLogger } from "../util/log.ts";
import { chooseAccel, hostTscKhz } from "./accel.ts";
import {
  type StartOptions,
  type VmBackend,
  VmBackendError,
  type VmHandle,
  type VmObservation,
} from "./backend.ts";
import { isRunning } from "./proc.ts";
import { QmpClient, type QmpEvent, type QmpLimits } from "./qmp.ts";
import type { AccelMode } from "./spec.ts";
import {
  checkOwner,
  type EndWording,
  handleOf,
  killAndWait,
  markStop,
  observeEnd,
  prepareVmDir,
  processEnd,
  spawnSupervised,
  Supervisors,
  trimLog,
  VM_PATH,
  vmIdentity,
  waitForEnd,
  writeRecord,
} from "./supervisor.ts";

/** Options of {@link QemuBackend}. */
export interface QemuBackendOptions {
  /** The agent's data directory; VMs live in `<dataDir>/vms/<name>/`. */
  readonly dataDir: string;
  /** The qemu binary (default `qemu-system-x86_64` on PATH). */
  readonly qemu?: string;
  /** Acceleration of VMs whose spec has no `accel` option (default `auto`). */
  readonly accel?: AccelMode;
  /** How long qemu has to exit after QMP `quit` before SIGKILL (default 5000 ms). */
  readonly quitTimeoutMs?: number;
  /** How long to wait for the end after SIGKILL (default 5000 ms). */
  readonly killTimeoutMs?: number;
  /** How long a started qemu has to answer on its QMP socket (default 10000 ms). */
  readonly startTimeoutMs?: number;
  /** `serial.log` is trimmed past this (default 16 MiB): the guest writes it. */
  readonly maxLogBytes?: number;
  readonly qmp?: Partial<QmpLimits>;
  readonly logger?: Logger;
}

/** The files of a qemu VM's directory, beside supervisor.ts's. */
export const QEMU_FILES = Object.freeze({
  qmp: "qmp.sock",
  serial: "serial.log",
  log: "qemu.log",
});

/** The default kernel command line: serial console; a panic or reboot ends the VM. */
export const DEFAULT_CMDLINE = "console=ttyS0 reboot=t panic=-1";

/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

/** qemu's option syntax doubles a comma inside a value. */
function optValue(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * The qemu command line for `spec`, without the binary. Under TCG with a
 * known host TSC rate (`tscKhz`), the kernel command line gets
 * `tsc_early_khz=` unless it sets it already (accel.ts {@link hostTscKhz}).
 */
export function qemuArgs(
  spec: VmSpec,
  dir: string,
  accel: "kvm" | "tcg",
  tscKhz?: number,
): string[] {
  const options = spec.backendOptions;
  const args = [
    ...["-name", spec.name, "-machine", "microvm", "-accel", accel],
    // The probe (accel.ts) checks KVM with -cpu host: the same model boots here.
    ...["-cpu", accel === "kvm" ? "host" : "max"],
    ...["-smp", String(spec.vcpus), "-m", `${spec.memoryMib}M`],
    ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"],
    "-chardev",
    `file,id=serial0,path=${optValue(`${dir}/${QEMU_FILES.serial}`)},append=on`,
    ...["-serial", "chardev:serial0"],
    ...["-qmp", `unix:${optValue(`${dir}/${QEMU_FILES.qmp}`)},server=on,wait=off`],
    ...["-kernel", spec.kernel],
  ];
  if (options["initrd"]) args.push("-initrd", options["initrd"]);
  let cmdline = options["cmdline"] ?? DEFAULT_CMDLINE;
  if (spec.image !== "") {
    if (options["cmdline"] === undefined) cmdline += " root=/dev/vda";
    const format = options["image_format"] ?? "raw";
    args.push(
      ...["-drive", `id=root,file=${optValue(spec.image)},format=${format},if=none`],
      ...["-device", "virtio-blk-device,drive=root"],
    );
  }
  if (accel === "tcg" && tscKhz !== undefined && !/(^|\s)tsc_early_khz=/.test(cmdline)) {
    cmdline += ` tsc_early_khz=${tscKhz}`;
  }
  args.push("-append", cmdline);
  return args;
}

interface Connection {
  readonly pid: number;
  client: QmpClient | undefined;
  /** The last SHUTDOWN event of this run. */
  shutdown: QmpEvent | undefined;
}

/** Runs VMs as qemu microVMs. */
export class QemuBackend implements VmBackend {
  readonly name = "qemu";
  readonly #dataDir: string;
  readonly #qemu: string;
  readonly #accel: AccelMode;
  readonly #quitTimeoutMs: number;
  readonly #killTimeoutMs: number;
  readonly #startTimeoutMs: number;
  readonly #maxLogBytes: number;
  readonly #qmpLimits: Partial<QmpLimits>;
  readonly #log: Logger;
  readonly #connections = new Map<string, Connection>();
  readonly #supervisors = new Supervisors();

  constructor(options: QemuBackendOptions) {
    this.#dataDir = options.dataDir;
    this.#qemu = options.qemu ?? "qemu-system-x86_64";
    this.#accel = options.accel ?? "auto";
    this.#quitTimeoutMs = options.quitTimeoutMs ?? 5000;
    this.#killTimeoutMs = options.killTimeoutMs ?? 5000;
    this.#startTimeoutMs = options.startTimeoutMs ?? 10_000;
    this.#maxLogBytes = options.maxLogBytes ?? 16 * 1024 * 1024;
    this.#qmpLimits = options.qmp ?? {};
    this.#log = (options.logger ?? silentLogger).child("qemu");
  }

  /**
   * Starts qemu and returns once it answers on its QMP socket.
   *
   * @throws {VmBackendError} `ALREADY_RUNNING`, `KVM_UNUSABLE`, `PATH_TOO_LONG`, `START_FAILED`.
   */
  async start(spec: VmSpec, options: StartOptions): Promise<VmHandle> {
    const mode = (spec.backendOptions["accel"] as AccelMode | undefined) ?? this.#accel;
    const choice = await chooseAccel(mode, this.#qemu, this.#log);
    if (choice.accel === undefined) {
      throw new VmBackendError(
        "KVM_UNUSABLE",
        spec.name,
        `accel = kvm, but KVM does not work here: ${choice.reason}; use accel = auto or tcg`,
      );
    }
    const dir = await prepareVmDir(this.#dataDir, spec.name, [QEMU_FILES.serial, QEMU_FILES.log]);
    const socket = `${dir}/${QEMU_FILES.qmp}`;
    const socketBytes = new TextEncoder().encode(socket).length;
    if (socketBytes > MAX_SOCKET_PATH_BYTES) {
      throw new VmBackendError(
        "PATH_TOO_LONG",
        spec.name,
        `QMP socket path ${socket} is ${socketBytes} bytes; a unix socket path holds at most ` +
          `${MAX_SOCKET_PATH_BYTES}: use a shorter data_dir`,
      );
    }
    await Deno.remove(socket).catch(() => {});
    const sup = await spawnSupervised({
      name: spec.name,
      dir,
      argv: [
        this.#qemu,
        ...qemuArgs(
          spec,
          dir,
          choice.accel,
          choice.accel === "tcg" ? await hostTscKhz() : undefined,
        ),
      ],
      logFile: `${dir}/${QEMU_FILES.log}`,
      env: { PATH: VM_PATH },
    });
    const handle = handleOf(spec, this.name, dir, sup, {
      generation: options.generation,
      controlSocket: socket,
    });
    // Recorded before anything can fail, so a qemu that runs is never forgotten.
    await writeRecord(handle);
    this.#supervisors.add(handle, sup.done);
    await this.#awaitQmp(handle);
    this.#log.info("started", {
      vm: spec.name,
      pid: handle.pid,
      accel: choice.accel,
      why: choice.reason,
    });
    return handle;
  }

  async #awaitQmp(handle: VmHandle): Promise<void> {
    const until = Date.now() + this.#startTimeoutMs;
    let lastError = "";
    for (;;) {
      if (!await isRunning(vmIdentity(handle))) {
        const seen = await this.inspect(handle);
        throw new VmBackendError(
          "START_FAILED",
          handle.name,
          `qemu ended before it answered on QMP: ${"reason" in seen ? seen.reason : seen.detail}`,
        );
      }
      try {
        await this.#connection(handle);
        return;
      } catch (e) {
        lastError = (e as Error).message;
      }
      if (Date.now() > until) {
        await this.kill(handle);
        throw new VmBackendError(
          "START_FAILED",
          handle.name,
          `qemu did not answer on ${handle.controlSocket} within ${this.#startTimeoutMs} ms ` +
            `(${lastError}); it was killed`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** The open QMP connection of this run of the VM, connecting if there is none. */
  async #connection(handle: VmHandle): Promise<QmpClient> {
    let conn = this.#connections.get(handle.name);
    if (conn === undefined || conn.pid !== handle.pid) {
      conn?.client?.close();
      conn = { pid: handle.pid, client: undefined, shutdown: undefined };
      this.#connections.set(handle.name, conn);
    }
    if (conn.client !== undefined && !conn.client.isClosed) return conn.client;
    const client = await QmpClient.connect(handle.controlSocket, this.#qmpLimits);
    const current = conn;
    client.onEvent((event) => {
      if (event.event === "SHUTDOWN") current.shutdown = event;
      this.#log.debug("qmp event", { vm: handle.name, event: event.event, ...event.data });
    });
    conn.client = client;
    return client;
  }

  /** Running with its QMP status (`running`, `paused`, ...), or how it ended. */
  async inspect(handle: VmHandle): Promise<VmObservation> {
    checkOwner(handle, this.name);
    await trimLog(`${handle.dir}/${QEMU_FILES.serial}`, this.#maxLogBytes);
    const end = await processEnd(handle);
    if (end.kind === "running") {
      try {
        const client = await this.#connection(handle);
        const status = await client.execute("query-status") as { status?: unknown };
        return { kind: "running", detail: `qmp: ${String(status.status)}` };
      } catch (e) {
        return { kind: "running", detail: (e as Error).message };
      }
    }
    const conn = this.#connections.get(handle.name);
    if (conn?.pid === handle.pid && conn.client !== undefined) {
      // qemu closes the socket as it exits: reading to the end catches a
      // SHUTDOWN event sent just before.
      await settleWithin(conn.client.closed, 500);
      conn.client.close();
      await conn.client.closed;
      conn.client = undefined;
    }
    return observeEnd(
      handle,
      end,
      this.#wording(handle, conn?.pid === handle.pid ? conn : undefined),
    );
  }

  #wording(handle: VmHandle, conn: Connection | undefined): EndWording {
    const base = { subject: "qemu", logFile: `${handle.dir}/${QEMU_FILES.log}` };
    const reason = conn?.shutdown?.data["reason"];
    switch (reason) {
      case "guest-shutdown":
        return { ...base, cleanExit: { failed: false, reason: "qmp: guest shutdown" } };
      case "host-qmp-quit":
        return { ...base, cleanExit: { failed: false, reason: "qmp: quit" } };
      case "guest-reset":
        return {
          ...base,
          cleanExit: { failed: true, reason: "qmp: guest reset (a reboot ends the VM)" },
        };
      case "guest-panic":
        return { ...base, cleanExit: { failed: true, reason: "qmp: guest panicked" } };
      case "host-signal":
        return {
          ...base,
          cleanExit: { failed: true, reason: "qmp: qemu was terminated by a signal on the host" },
        };
      default:
        return base;
    }
  }

  /**
   * `system_powerdown`, up to `timeoutMs` for the guest to power off; QMP
   * `quit` and up to `quitTimeoutMs`; then SIGKILL.
   *
   * @throws {VmBackendError} `STOP_FAILED` if even SIGKILL did not end it.
   */
  async stop(handle: VmHandle, timeoutMs: number): Promise<VmObservation> {
    checkOwner(handle, this.name);
    if (!await isRunning(vmIdentity(handle))) return this.inspect(handle);
    await markStop(handle, "system_powerdown");
    await this.#command(handle, "system_powerdown", timeoutMs);
    if (await waitForEnd(handle, timeoutMs)) return this.inspect(handle);

    this.#log.warn("guest ignored system_powerdown; quitting qemu", { vm: handle.name, timeoutMs });
    await markStop(handle, `quit after the guest ignored system_powerdown for ${timeoutMs} ms`);
    await this.#command(handle, "quit", this.#quitTimeoutMs);
    if (await waitForEnd(handle, this.#quitTimeoutMs)) return this.inspect(handle);

    this.#log.warn("qemu did not quit; killing it", { vm: handle.name });
    return this.#kill(handle, `SIGKILL after qemu did not quit within ${this.#quitTimeoutMs} ms`);
  }

  /** Sends a command if QMP answers within `timeoutMs`; a stop goes on either way. */
  async #command(handle: VmHandle, command: string, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    try {
      const client = await this.#connection(handle);
      await client.execute(command, undefined, Math.max(1, until - Date.now()));
    } catch (e) {
      this.#log.warn(`qmp ${command} failed`, { vm: handle.name, error: e });
    }
  }

  /** SIGKILL at once. */
  kill(handle: VmHandle): Promise<VmObservation> {
    checkOwner(handle, this.name);
    return this.#kill(handle, "SIGKILL");
  }

  async #kill(handle: VmHandle, step: string): Promise<VmObservation> {
    await killAndWait(handle, step, this.#killTimeoutMs);
    return this.inspect(handle);
  }

  /** Checks the recorded qemu is the same process, reconnects to QMP, and says what it sees. */
  adopt(handle: VmHandle): Promise<VmObservation> {
    return this.inspect(handle);
  }

  /** Closes every QMP connection, and waits for the supervisors of ended VMs; VMs keep running. */
  async close(): Promise<void> {
    const clients = [...this.#connections.values()].flatMap((c) => c.client ? [c.client] : []);
    this.#connections.clear();
    for (const c of clients) c.close();
    await Promise.all(clients.map((c) => c.closed));
    await this.#supervisors.settle();
  }
}

/** Waits for `promise` at most `ms`, leaving no timer behind. */
async function settleWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([promise, new Promise((r) => timer = setTimeout(r, ms))]);
  clearTimeout(timer);
}
