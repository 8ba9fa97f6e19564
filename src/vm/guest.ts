/**
 * A guest to boot, built on the fly from what a Debian host has: the cloud
 * kernel under /boot, and an initramfs of the static busybox whose `/init`
 * prints a ready line on the serial console and powers the guest off when
 * qemu's `system_powerdown` presses the ACPI power button. For tests and for
 * `blixard demo`; nothing is downloaded.
 *
 * Owns: {@link buildGuest}, {@link findKernel}, {@link findBusybox},
 * {@link GuestError}, the guest's console lines and kernel arguments.
 * Imports cpio.ts and node:zlib.
 *
 * Power-off: qemu's microvm machine (with ACPI, its default) delivers
 * `system_powerdown` as an ACPI power button event. The kernel turns it into
 * an input event only with the `button` driver, and user space reads it
 * through `evdev`; both are modules in Debian's cloud kernel, so they are
 * copied from /lib/modules/<version>/ into the initramfs and loaded by
 * `/init`, which waits for one event from the "Power Button" device and runs
 * `poweroff -f`. With `blixard.powerdown=ignore` on the kernel command line
 * it ignores the button (to test what a stop does with such a guest).
 *
 * @module
 */

import { gunzipSync, gzipSync, zstdDecompressSync } from "node:zlib";
import { type CpioEntry, cpioNewc } from "./cpio.ts";

/** What `/init` prints on the serial console once it runs, and the button is watched. */
export const GUEST_READY_LINE = "BLIXARD-GUEST-READY";
/** What `/init` prints when the power button was pressed, before it powers off. */
export const GUEST_POWERDOWN_LINE = "BLIXARD-GUEST-POWERDOWN";
/** A kernel argument that makes `/init` ignore the power button. */
export const GUEST_IGNORE_POWERDOWN_ARG = "blixard.powerdown=ignore";

/** Why a guest cannot be built here. */
export type GuestErrorCode =
  /** No kernel under /boot. */
  | "NO_KERNEL"
  /** No busybox, or one that is dynamically linked (the non-static package). */
  | "NO_BUSYBOX";

/** A guest that cannot be built; the message says what to install. */
export class GuestError extends Error {
  override readonly name = "GuestError";
  readonly code: GuestErrorCode;

  constructor(code: GuestErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** A kernel found on the host. */
export interface GuestKernel {
  readonly path: string;
  /** `6.1.0-57-cloud-amd64`: also the name of its /lib/modules directory. */
  readonly version: string;
}

/**
 * The newest `vmlinuz-*-cloud-amd64` in `bootDir` (Debian's
 * linux-image-cloud-amd64: small, boots fast), else the newest `vmlinuz-*`.
 *
 * @throws {GuestError} `NO_KERNEL`.
 */
export async function findKernel(bootDir = "/boot"): Promise<GuestKernel> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(bootDir)) {
      if ((e.isFile || e.isSymlink) && e.name.startsWith("vmlinuz-")) names.push(e.name);
    }
  } catch {
    // no such directory: reported below
  }
  const newest = (list: string[]) =>
    list.sort((a, b) => b.localeCompare(a, "en", { numeric: true }))[0];
  const chosen = newest(names.filter((n) => n.endsWith("-cloud-amd64"))) ?? newest(names);
  if (chosen === undefined) {
    throw new GuestError(
      "NO_KERNEL",
      `no kernel (vmlinuz-*) in ${bootDir}: install one, e.g. apt-get install linux-image-cloud-amd64`,
    );
  }
  return { path: `${bootDir}/${chosen}`, version: chosen.slice("vmlinuz-".length) };
}

/** True if the ELF file at `path` has no program interpreter (it is statically linked). */
async function isStaticElf(path: string): Promise<boolean> {
  const data = await Deno.readFile(path);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  // ELF64, little-endian: what an amd64 busybox is.
  if (data.length < 64 || view.getUint32(0) !== 0x7f454c46 || data[4] !== 2 || data[5] !== 1) {
    return false;
  }
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > data.length) return false;
    if (view.getUint32(at, true) === 3) return false; // PT_INTERP
  }
  return true;
}

/**
 * A statically linked busybox: Debian's busybox-static puts it in /bin
 * (/usr/bin with merged /usr).
 *
 * @throws {GuestError} `NO_BUSYBOX`.
 */
export async function findBusybox(
  candidates: readonly string[] = ["/bin/busybox", "/usr/bin/busybox"],
): Promise<string> {
  const dynamic: string[] = [];
  for (const path of candidates) {
    const info = await Deno.stat(path).catch(() => undefined);
    if (info === undefined || !info.isFile) continue;
    if (await isStaticElf(path)) return path;
    dynamic.push(path);
  }
  throw new GuestError(
    "NO_BUSYBOX",
    dynamic.length > 0
      ? `${dynamic.join(" and ")} is dynamically linked and cannot run alone in a guest: ` +
        "apt-get install busybox-static"
      : `no busybox at ${candidates.join(" or ")}: apt-get install busybox-static`,
  );
}

/** The modules `/init` loads for the power button, as paths under /lib/modules/<version>/. */
const POWER_MODULES = ["kernel/drivers/acpi/button.ko", "kernel/drivers/input/evdev.ko"];

/** A module ready for busybox's insmod, or why it is not. */
async function loadableModule(
  root: string,
  rel: string,
): Promise<{ builtin: true } | { data: Uint8Array } | undefined> {
  const builtin = await Deno.readTextFile(`${root}/modules.builtin`).catch(() => "");
  if (builtin.split("\n").includes(rel)) return { builtin: true };
  const read = (suffix: string) => Deno.readFile(`${root}/${rel}${suffix}`).catch(() => undefined);
  const plain = await read("");
  if (plain !== undefined) return { data: plain };
  const zst = await read(".zst");
  if (zst !== undefined) return { data: new Uint8Array(zstdDecompressSync(zst)) };
  const gz = await read(".gz");
  if (gz !== undefined) return { data: new Uint8Array(gunzipSync(gz)) };
  // .xz: node:zlib has no xz. The guest boots without it and ignores the button.
  return undefined;
}

function initScript(): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /lib/modules/*.ko; do [ -e "$m" ] && insmod "$m"; done
button=""
for d in /sys/class/input/event*; do
  [ "$(cat "$d/device/name" 2>/dev/null)" = "Power Button" ] && button=/dev/input/\${d##*/}
done
case " $(cat /proc/cmdline) " in
  *" ${GUEST_IGNORE_POWERDOWN_ARG} "*) button="" ;;
esac
# Open the button before saying ready: an event before the open would be lost.
[ -c "$button" ] || button=""
[ -n "$button" ] && exec 3<"$button"
echo ${GUEST_READY_LINE}
if [ -n "$button" ]; then
  # One input_event (24 bytes on x86-64) is a press of the power button.
  head -c 24 <&3 >/dev/null
  echo ${GUEST_POWERDOWN_LINE}
  poweroff -f
fi
while :; do sleep 3600; done
`;
}

/** A guest ready to boot. */
export interface GuestImage {
  readonly kernel: string;
  readonly kernelVersion: string;
  /** The gzipped cpio initramfs. */
  readonly initrd: string;
  /** Whether the guest can react to the power button (its modules were found). */
  readonly powerdown: boolean;
}

/** Options of {@link buildGuest}. */
export interface GuestOptions {
  /** Where to write the initramfs. */
  readonly outDir: string;
  /** Default: {@link findKernel}. */
  readonly kernel?: GuestKernel;
  /** Default: {@link findBusybox}. */
  readonly busybox?: string;
  /** Default `/lib/modules`. */
  readonly modulesDir?: string;
}

/**
 * Builds the initramfs into `outDir` and returns the kernel and initrd to
 * boot. Boot it with `console=ttyS0` on the command line to see its lines.
 *
 * @throws {GuestError} when the host lacks a kernel or a static busybox.
 */
export async function buildGuest(options: GuestOptions): Promise<GuestImage> {
  const kernel = options.kernel ?? await findKernel();
  const busybox = options.busybox ?? await findBusybox();
  const modulesRoot = `${options.modulesDir ?? "/lib/modules"}/${kernel.version}`;
  const entries: CpioEntry[] = [
    ...["bin", "dev", "proc", "sys", "lib", "lib/modules"].map((path) => ({
      path,
      type: "dir" as const,
    })),
    { path: "dev/console", type: "char", mode: 0o600, rdev: [5, 1] },
    { path: "bin/busybox", type: "file", mode: 0o755, data: await Deno.readFile(busybox) },
    { path: "init", type: "file", mode: 0o755, data: initScript() },
  ];
  let powerdown = true;
  for (const rel of POWER_MODULES) {
    const found = await loadableModule(modulesRoot, rel);
    if (found === undefined) powerdown = false;
    else if ("data" in found) {
      entries.push({
        path: `lib/modules/${rel.slice(rel.lastIndexOf("/") + 1)}`,
        type: "file",
        data: found.data,
      });
    }
  }
  await Deno.mkdir(options.outDir, { recursive: true });
  const initrd = `${options.outDir}/blixard-guest-${kernel.version}.cpio.gz`;
  await Deno.writeFile(initrd, gzipSync(cpioNewc(entries)));
  return { kernel: kernel.path, kernelVersion: kernel.version, initrd, powerdown };
}
