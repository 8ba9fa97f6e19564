/**
 * Shared pieces of the VM tests: specs, a data directory, a guest image
 * built once per test file, and waiting for a line on a VM's serial console.
 */

import { create } from "@bufbuild/protobuf";
import { VmDesiredState, type VmSpec, VmSpecSchema } from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import { buildGuest, type GuestImage } from "../../src/vm/guest.ts";

/** Options of {@link spec}. */
export interface SpecOptions {
  readonly backend?: string;
  readonly desired?: "running" | "stopped";
  readonly options?: Record<string, string>;
  readonly vcpus?: number;
  readonly memoryMib?: bigint;
  readonly kernel?: string;
  readonly nodeId?: bigint;
}

/** A valid spec of the process backend (`sleep 600` unless options say otherwise). */
export function spec(name: string, o: SpecOptions = {}): VmSpec {
  const backend = o.backend ?? "process";
  return create(VmSpecSchema, {
    name,
    vcpus: o.vcpus ?? 1,
    memoryMib: o.memoryMib ?? 256n,
    backend,
    kernel: o.kernel ?? "",
    nodeId: o.nodeId ?? 0n,
    desiredState: o.desired === "stopped" ? VmDesiredState.STOPPED : VmDesiredState.RUNNING,
    backendOptions: backend === "process"
      ? { command: JSON.stringify(["/usr/bin/sleep", "600"]), ...o.options }
      : { ...o.options },
  });
}

/** A process-backend spec running `script` with /bin/sh. */
export function shellSpec(name: string, script: string, options: Record<string, string> = {}) {
  return spec(name, {
    options: { command: JSON.stringify(["/bin/sh", "-c", script]), ...options },
  });
}

/** A fresh data directory, removed by the returned function. */
export async function dataDir(): Promise<{ path: string; [Symbol.asyncDispose](): Promise<void> }> {
  const path = await Deno.makeTempDir({ prefix: "blixard-vm-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

let guest: Promise<GuestImage> | undefined;

/** The busybox guest, built once per test process into a temporary directory removed at exit. */
export function testGuest(): Promise<GuestImage> {
  guest ??= Deno.makeTempDir({ prefix: "blixard-guest-" }).then((outDir) => {
    globalThis.addEventListener("unload", () => Deno.removeSync(outDir, { recursive: true }));
    return buildGuest({ outDir });
  });
  return guest;
}

/** A qemu spec booting the test guest; `quiet` keeps the kernel's console short (faster under TCG). */
export async function guestSpec(
  name: string,
  options: Record<string, string> = {},
  extraCmdline = "",
): Promise<VmSpec> {
  const g = await testGuest();
  return spec(name, {
    backend: "qemu",
    kernel: g.kernel,
    options: {
      initrd: g.initrd,
      cmdline: `console=ttyS0 reboot=t panic=-1 quiet ${extraCmdline}`.trim(),
      ...options,
    },
  });
}

/** Waits until `path` contains `text`, polling every 20 ms; fails after `ms` with the file's end. */
export async function waitForText(path: string, text: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const content = await Deno.readTextFile(path).catch(() => "");
    if (content.includes(text)) return;
    if (Date.now() > until) {
      throw new Error(
        `timed out after ${ms} ms waiting for ${text} in ${path}:\n${content.slice(-2000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A clock the test moves by hand. */
export class ManualClock {
  nowMs = 1_000_000;
  now(): number {
    return this.nowMs;
  }
  after(): () => void {
    throw new Error("ManualClock: the test drives rounds itself");
  }
}
