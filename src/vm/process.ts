/**
 * The `process` backend: a VM is any command, run under the supervisor
 * (supervisor.ts) with its output in `<data_dir>/vms/<name>/output.log`. For
 * tests, and for custom runners (a script that starts firecracker, say)
 * until they get a backend of their own.
 *
 * Owns: {@link ProcessBackend}. Imports backend.ts, spec.ts, supervisor.ts,
 * proc.ts and util/log.ts.
 *
 * The command comes from the spec's `backend_options.command` (a JSON array,
 * spec.ts). It runs in the VM's directory with a small environment of its
 * own (PATH, BLIXARD_VM_NAME, BLIXARD_VM_DIR), not the agent's. A stop sends
 * SIGTERM, waits the stop timeout, then sends SIGKILL.
 *
 * @module
 */

import type { VmSpec } from "../rpc/gen/blixard/v1/vm_pb.ts";
import { silentLogger } from "../util/log.ts";
import type { Logger } from "../util/log.ts";
import {
  type StartOptions,
  type VmBackend,
  VmBackendError,
  type VmHandle,
  type VmObservation,
} from "./backend.ts";
import { isRunning, signalIfSame } from "./proc.ts";
import { parseCommand } from "./spec.ts";
import {
  checkOwner,
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

/** Options of {@link ProcessBackend}. */
export interface ProcessBackendOptions {
  /** The agent's data directory; VMs live in `<dataDir>/vms/<name>/`. */
  readonly dataDir: string;
  /** How long to wait for the end after SIGKILL before giving up (default 5000 ms). */
  readonly killTimeoutMs?: number;
  /** `output.log` is trimmed past this (default 16 MiB; supervisor.ts `trimLog`). */
  readonly maxLogBytes?: number;
  readonly logger?: Logger;
}

const OUTPUT = "output.log";

/** Runs a command as a VM. */
export class ProcessBackend implements VmBackend {
  readonly name = "process";
  readonly #dataDir: string;
  readonly #killTimeoutMs: number;
  readonly #maxLogBytes: number;
  readonly #log: Logger;
  readonly #supervisors = new Supervisors();

  constructor(options: ProcessBackendOptions) {
    this.#dataDir = options.dataDir;
    this.#killTimeoutMs = options.killTimeoutMs ?? 5000;
    this.#maxLogBytes = options.maxLogBytes ?? 16 * 1024 * 1024;
    this.#log = (options.logger ?? silentLogger).child("process");
  }

  /** Starts the spec's `command`; see {@link VmBackend.start}. */
  async start(spec: VmSpec, options: StartOptions): Promise<VmHandle> {
    const argv = parseCommand(spec.backendOptions["command"] ?? "");
    const program = argv[0]!;
    const info = await Deno.stat(program).catch(() => undefined);
    if (info === undefined || !info.isFile || ((info.mode ?? 0) & 0o111) === 0) {
      throw new VmBackendError(
        "START_FAILED",
        spec.name,
        `program ${program} ${info === undefined ? "does not exist" : "is not an executable file"}`,
      );
    }
    const dir = await prepareVmDir(this.#dataDir, spec.name, [OUTPUT]);
    const sup = await spawnSupervised({
      name: spec.name,
      dir,
      argv,
      logFile: `${dir}/${OUTPUT}`,
      env: { PATH: VM_PATH, BLIXARD_VM_NAME: spec.name, BLIXARD_VM_DIR: dir },
    });
    const handle = handleOf(spec, this.name, dir, sup, {
      generation: options.generation,
      controlSocket: "",
    });
    await writeRecord(handle);
    this.#supervisors.add(handle, sup.done);
    this.#log.info("started", { vm: spec.name, pid: handle.pid, program });
    return handle;
  }

  /** Running (with its pid), or how it ended. */
  async inspect(handle: VmHandle): Promise<VmObservation> {
    checkOwner(handle, this.name);
    await trimLog(`${handle.dir}/${OUTPUT}`, this.#maxLogBytes);
    const end = await processEnd(handle);
    if (end.kind === "running") return { kind: "running", detail: `pid ${handle.pid}` };
    return observeEnd(handle, end, { subject: "command", logFile: `${handle.dir}/${OUTPUT}` });
  }

  /** SIGTERM, up to `timeoutMs` for the command to end, then SIGKILL. */
  async stop(handle: VmHandle, timeoutMs: number): Promise<VmObservation> {
    checkOwner(handle, this.name);
    const id = vmIdentity(handle);
    if (await isRunning(id)) {
      await markStop(handle, "SIGTERM");
      await signalIfSame(id, "SIGTERM");
      if (!await waitForEnd(handle, timeoutMs)) {
        this.#log.warn("command ignored SIGTERM; killing it", { vm: handle.name, timeoutMs });
        return this.#kill(handle, `SIGKILL after SIGTERM was ignored for ${timeoutMs} ms`);
      }
    }
    return this.inspect(handle);
  }

  /** SIGKILL. */
  kill(handle: VmHandle): Promise<VmObservation> {
    checkOwner(handle, this.name);
    return this.#kill(handle, "SIGKILL");
  }

  async #kill(handle: VmHandle, step: string): Promise<VmObservation> {
    await killAndWait(handle, step, this.#killTimeoutMs);
    return this.inspect(handle);
  }

  /** Nothing to reconnect: checks the process by pid and start time, and says what it sees. */
  adopt(handle: VmHandle): Promise<VmObservation> {
    return this.inspect(handle);
  }

  /** Waits for the supervisors of ended VMs to exit; running VMs are left alone. */
  close(): Promise<void> {
    return this.#supervisors.settle();
  }
}
