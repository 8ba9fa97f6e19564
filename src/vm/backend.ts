/**
 * The VM backend interface: what the reconciler needs from a runner of VMs,
 * small enough that a microvm.nix, cloud-hypervisor or firecracker runner is
 * a file implementing it. The `qemu` (qemu.ts) and `process` (process.ts)
 * backends implement it here.
 *
 * Owns: {@link VmBackend}, {@link VmHandle} (what `vm.json` records),
 * {@link VmObservation}, {@link ExitStatus}, {@link VmBackendError}. Imports
 * the generated `VmSpec` type only.
 *
 * The contract, for implementers:
 * - `start` returns once the VM's process exists and its handle is recorded
 *   in `<data_dir>/vms/<name>/vm.json`, so an agent that dies a moment later
 *   still finds it. It never starts a VM whose recorded process still runs.
 * - A handle identifies a process by pid, start time (from /proc) and boot id:
 *   a pid the kernel reused for another process is never signalled.
 * - `inspect`, `stop`, `kill` and `adopt` never throw for a VM that has gone;
 *   they report it (`exited`, `vanished`).
 * - VMs outlive the agent: `close` lets go of connections, never of VMs.
 *
 * @module
 */

import type { VmSpec } from "../rpc/gen/blixard/v1/vm_pb.ts";

/** How a process ended. A shell's status above 128 reads as a signal (see docs/vm.md). */
export type ExitStatus =
  | { readonly code: number; readonly signal?: undefined }
  | { readonly signal: number; readonly code?: undefined };

/**
 * What a backend records to find a VM again after an agent restart; written
 * as `vm.json` in the VM's directory. Plain JSON: no bigint, no functions.
 */
export interface VmHandle {
  /** Format of this record; 1 today. */
  readonly version: 1;
  readonly name: string;
  /** The backend that started it (`qemu`, `process`, or an extension's name). */
  readonly backend: string;
  /** The VM's process: qemu, or the process backend's command. */
  readonly pid: number;
  /**
   * The process's start time in clock ticks after boot (/proc/PID/stat
   * field 22): with `pid` and `bootId` it names one process; a reused pid
   * has another start time.
   */
  readonly startTicks: number;
  /** /proc/sys/kernel/random/boot_id when it started: pids restart with the host. */
  readonly bootId: string;
  /** The supervisor that waits for the VM's process and records its exit status. */
  readonly supervisorPid: number;
  readonly supervisorStartTicks: number;
  /** The VM's control socket (QMP for qemu); empty when the backend has none. */
  readonly controlSocket: string;
  /** The VM's directory, `<data_dir>/vms/<name>`. */
  readonly dir: string;
  /** Wall-clock time of the start, ms since the epoch. */
  readonly startedAtMs: number;
  /** The desired-state generation it was started for (plan.ts `DesiredVm.generation`). */
  readonly generation: number;
}

/** What a backend sees of a VM. */
export type VmObservation =
  /** The process runs; `detail` says more (qemu: the QMP status, e.g. "running", "paused"). */
  | { readonly kind: "running"; readonly detail: string }
  /** It ended because it was asked to (stop, kill) or cleanly on its own (exit code 0, guest power-off). */
  | { readonly kind: "stopped"; readonly reason: string; readonly exit?: ExitStatus }
  /** It ended on its own with a failure: a non-zero exit, a signal nobody here sent, a guest panic. */
  | { readonly kind: "exited"; readonly reason: string; readonly exit?: ExitStatus }
  /** The process is gone and no exit status was recorded (its supervisor died too, or the host rebooted). */
  | { readonly kind: "vanished"; readonly reason: string };

/** What {@link VmBackend.start} needs besides the spec. */
export interface StartOptions {
  /** Recorded in the handle; see {@link VmHandle.generation}. */
  readonly generation: number;
}

/** A runner of VMs. */
export interface VmBackend {
  /** The name specs use in `backend`. */
  readonly name: string;
  /**
   * Starts a VM from a spec that passed validation (spec.ts).
   *
   * @throws {VmBackendError} `ALREADY_RUNNING`, `START_FAILED`, `KVM_UNUSABLE`, ...
   */
  start(spec: VmSpec, options: StartOptions): Promise<VmHandle>;
  /** What the VM is doing now. */
  inspect(handle: VmHandle): Promise<VmObservation>;
  /**
   * Asks the VM to shut down, waits up to `timeoutMs`, then forces it off
   * (each backend documents its steps), and returns how it ended.
   *
   * @throws {VmBackendError} `STOP_FAILED` if even the forced stop did not end it.
   */
  stop(handle: VmHandle, timeoutMs: number): Promise<VmObservation>;
  /** Ends the VM at once (SIGKILL), and returns how it ended. */
  kill(handle: VmHandle): Promise<VmObservation>;
  /**
   * Takes over a VM recorded by an earlier agent (a handle read from
   * `vm.json`): checks it is the same process, reconnects what the backend
   * needs, and returns what it sees.
   */
  adopt(handle: VmHandle): Promise<VmObservation>;
  /** Lets go of connections and child process objects; the VMs keep running. */
  close(): Promise<void>;
}

/** Machine-readable reason of a {@link VmBackendError}. */
export type VmBackendErrorCode =
  /** The VM's recorded process still runs: starting it again would run it twice. */
  | "ALREADY_RUNNING"
  /** The process could not be started, or died before it was ready. */
  | "START_FAILED"
  /** `accel = "kvm"` was asked for and KVM does not work on this host. */
  | "KVM_UNUSABLE"
  /** Even SIGKILL did not end the VM in time. */
  | "STOP_FAILED"
  /** A `vm.json` could not be read or is not a record this agent wrote. */
  | "BAD_RECORD"
  /** A path is too long for what it is used for (a unix socket holds 107 bytes). */
  | "PATH_TOO_LONG"
  /** The handle belongs to another backend. */
  | "WRONG_BACKEND";

/** A backend failure; the message says what, for which VM, and what to do. */
export class VmBackendError extends Error {
  override readonly name = "VmBackendError";
  readonly code: VmBackendErrorCode;
  /** The VM it is about. */
  readonly vm: string;

  constructor(code: VmBackendErrorCode, vm: string, message: string, options?: ErrorOptions) {
    super(`vm ${JSON.stringify(vm)}: ${message}`, options);
    this.code = code;
    this.vm = vm;
  }
}
