/**
 * The guest image and what it is made of: the cpio archive as busybox's own
 * cpio reads it, the kernel and busybox found on the host, the qemu command
 * line, and the host TSC rate a TCG guest is told.
 */

import { gunzipSync } from "node:zlib";
import { assert, assertEquals, assertMatch, rejection } from "../assert.ts";
import { hostTscKhz, tscKhzFromCpuinfo } from "../../src/vm/accel.ts";
import { cpioNewc } from "../../src/vm/cpio.ts";
import { buildGuest, findBusybox, findKernel, GuestError } from "../../src/vm/guest.ts";
import { qemuArgs } from "../../src/vm/qemu.ts";
import { dataDir, spec, testGuest } from "./helpers.ts";

/** Runs busybox's cpio with `args` on `archive`, in `cwd`; returns its stdout. */
async function busyboxCpio(archive: Uint8Array, args: string[], cwd: string): Promise<string> {
  const child = new Deno.Command(await findBusybox(), {
    args: ["cpio", ...args],
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(archive);
  await writer.close();
  const out = await child.output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

Deno.test("busybox's cpio unpacks what cpioNewc writes: files, modes, directories, symlinks, devices", async () => {
  await using dir = await dataDir();
  const files = [
    { path: "etc", type: "dir" },
    { path: "etc/motd", type: "file", data: "hello\n" },
    { path: "bin", type: "dir", mode: 0o700 },
    { path: "bin/run", type: "file", mode: 0o755, data: "#!/bin/sh\n" },
    { path: "bin/sh", type: "symlink", data: "busybox" },
    { path: "odd", type: "file", data: new Uint8Array([1, 2, 3]) },
  ] as const;
  const withDevice = cpioNewc([
    ...files,
    { path: "dev", type: "dir" },
    { path: "dev/console", type: "char", mode: 0o600, rdev: [5, 1] },
  ]);
  const listing = await busyboxCpio(withDevice, ["-t", "-v"], dir.path);
  assertMatch(listing, /^crw------- .* dev\/console$/m);
  assertMatch(listing, /^lrwxrwxrwx .* bin\/sh -> busybox$/m);
  assertMatch(listing, /^drwx------ .* bin$/m);
  // Unpacked without the device: making one needs real root, which a test namespace may not give.
  await busyboxCpio(cpioNewc(files), ["-i", "-d"], dir.path);
  assertEquals(await Deno.readTextFile(`${dir.path}/etc/motd`), "hello\n");
  assertEquals(await Deno.readFile(`${dir.path}/odd`), new Uint8Array([1, 2, 3]));
  assertEquals((await Deno.stat(`${dir.path}/bin/run`)).mode! & 0o777, 0o755);
  assertEquals(await Deno.readLink(`${dir.path}/bin/sh`), "busybox");
});

Deno.test("the guest initramfs holds /init, a static busybox, the power button modules and /dev/console", async () => {
  const g = await testGuest();
  assert(g.powerdown, "this host's kernel has its button and evdev modules");
  await using dir = await dataDir();
  const listing = await busyboxCpio(new Uint8Array(gunzipSync(await Deno.readFile(g.initrd))), [
    "-t",
  ], dir.path);
  assertEquals(listing.trim().split("\n").sort(), [
    "bin",
    "bin/busybox",
    "dev",
    "dev/console",
    "init",
    "lib",
    "lib/modules",
    "lib/modules/button.ko",
    "lib/modules/evdev.ko",
    "proc",
    "sys",
  ]);
});

Deno.test("without the power button modules the guest still builds, and says it cannot power off", async () => {
  await using dir = await dataDir();
  const g = await buildGuest({ outDir: dir.path, modulesDir: `${dir.path}/no-modules` });
  assertEquals(g.powerdown, false);
});

Deno.test("the newest cloud kernel is preferred, by version number", async () => {
  await using dir = await dataDir();
  for (const v of ["6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-11-amd64"]) {
    await Deno.writeTextFile(`${dir.path}/vmlinuz-${v}`, "");
  }
  assertEquals(await findKernel(dir.path), {
    path: `${dir.path}/vmlinuz-6.1.0-10-cloud-amd64`,
    version: "6.1.0-10-cloud-amd64",
  });
  await Deno.remove(`${dir.path}/vmlinuz-6.1.0-9-cloud-amd64`);
  await Deno.remove(`${dir.path}/vmlinuz-6.1.0-10-cloud-amd64`);
  assertEquals((await findKernel(dir.path)).version, "6.1.0-11-amd64");
});

Deno.test("no kernel, or only a dynamically linked busybox, is an error that says what to install", async () => {
  await using dir = await dataDir();
  const k = await rejection(GuestError, () => findKernel(dir.path));
  assertEquals(k.code, "NO_KERNEL");
  assertMatch(k.message, /apt-get install linux-image-cloud-amd64/);
  // dash is a dynamically linked ELF, as the non-static busybox package's binary is.
  const b = await rejection(GuestError, () => findBusybox(["/bin/dash"]));
  assertEquals(b.code, "NO_BUSYBOX");
  assertEquals(
    b.message,
    "/bin/dash is dynamically linked and cannot run alone in a guest: apt-get install busybox-static",
  );
});

Deno.test("the qemu command line: microvm, the spec's size, its files, and the TSC rate only under TCG", () => {
  const s = spec("web", {
    backend: "qemu",
    vcpus: 2,
    memoryMib: 512n,
    kernel: "/boot/vmlinuz",
    options: { initrd: "/boot/initrd,v2" },
  });
  const tcg = qemuArgs(s, "/var/lib/blixard/vms/web", "tcg", 2596136);
  const at = (flag: string, args = tcg) => args[args.indexOf(flag) + 1];
  assertEquals([at("-machine"), at("-accel"), at("-cpu"), at("-smp"), at("-m")], [
    "microvm",
    "tcg",
    "max",
    "2",
    "512M",
  ]);
  assertEquals(at("-qmp"), "unix:/var/lib/blixard/vms/web/qmp.sock,server=on,wait=off");
  assertEquals(at("-initrd"), "/boot/initrd,v2");
  assertEquals(at("-append"), "console=ttyS0 reboot=t panic=-1 tsc_early_khz=2596136");
  assert(tcg.includes("-no-reboot"));
  const kvm = qemuArgs(s, "/d", "kvm", 2596136);
  assertEquals([at("-cpu", kvm), at("-append", kvm)], ["host", "console=ttyS0 reboot=t panic=-1"]);
  s.backendOptions["cmdline"] = "console=ttyS0 tsc_early_khz=1000";
  assertEquals(
    at("-append", qemuArgs(s, "/d", "tcg", 2596136)),
    "console=ttyS0 tsc_early_khz=1000",
  );
});

Deno.test("an image becomes the guest's virtio disk and root, with commas in its path kept", () => {
  const s = spec("db", { backend: "qemu", kernel: "/k" });
  s.image = "/images/db,1.qcow2";
  s.backendOptions["image_format"] = "qcow2";
  const args = qemuArgs(s, "/d", "tcg");
  assertEquals(
    args[args.indexOf("-drive") + 1],
    "id=root,file=/images/db,,1.qcow2,format=qcow2,if=none",
  );
  assertEquals(args[args.indexOf("-device") + 1], "virtio-blk-device,drive=root");
  assertEquals(args[args.indexOf("-append") + 1], "console=ttyS0 reboot=t panic=-1 root=/dev/vda");
});

Deno.test("the TSC rate is read from cpuinfo only where cpu MHz is the TSC's (no aperfmperf)", async () => {
  const vm = "flags\t\t: fpu tsc msr constant_tsc hypervisor\ncpu MHz\t\t: 2596.136\n";
  assertEquals(tscKhzFromCpuinfo(vm), 2596136);
  assertEquals(tscKhzFromCpuinfo(vm.replace("hypervisor", "aperfmperf")), undefined);
  assertEquals(tscKhzFromCpuinfo("flags : fpu\ncpu MHz : 1000.0\n"), undefined);
  const here = await hostTscKhz();
  assert(here === undefined || here > 100_000, `host TSC ${here} kHz`);
});
