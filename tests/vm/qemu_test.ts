/**
 * The qemu backend with a real guest under TCG: boot to the ready line,
 * QMP status, adoption by a new backend instance, a graceful power-off, and
 * each fallback of a stop (quit when the guest ignores the power button,
 * SIGKILL when qemu answers nothing), a qemu killed by a signal, a qemu that
 * cannot start, and the choice of accelerator.
 */

import { assert, assertEquals, assertMatch, rejection } from "../assert.ts";
import { VmBackendError, type VmHandle } from "../../src/vm/backend.ts";
import { chooseAccel, probeKvm } from "../../src/vm/accel.ts";
import {
  GUEST_IGNORE_POWERDOWN_ARG,
  GUEST_POWERDOWN_LINE,
  GUEST_READY_LINE,
} from "../../src/vm/guest.ts";
import { QemuBackend } from "../../src/vm/qemu.ts";
import { createLogger } from "../../src/util/log.ts";
import { dataDir, guestSpec, waitForText } from "./helpers.ts";

/** A backend whose log lines the test can read. */
function backend(dir: string, options: Partial<ConstructorParameters<typeof QemuBackend>[0]> = {}) {
  const lines: string[] = [];
  const b = new QemuBackend({
    dataDir: dir,
    logger: createLogger("test", { level: "info", sink: (l) => lines.push(l) }),
    ...options,
  });
  return { b, lines };
}

async function waitRunning(b: QemuBackend, h: VmHandle): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await b.inspect(h)).kind === "running") return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${h.name} is not running`);
}

const HOST_PROBE = await probeKvm();

Deno.test("a guest boots to its ready line, a new backend adopts it, and system_powerdown powers it off", async () => {
  await using dir = await dataDir();
  const first = backend(dir.path);
  const h = await first.b.start(await guestSpec("boot"), { generation: 1 });
  for (const f of ["vm.json", "qmp.sock", "serial.log", "qemu.log"]) {
    assert(
      await Deno.stat(`${h.dir}/${f}`).then(() => true, () => false),
      `${f} in the VM directory`,
    );
  }
  assertEquals(h.controlSocket, `${h.dir}/qmp.sock`);
  await waitForText(`${h.dir}/serial.log`, GUEST_READY_LINE);
  assertEquals(await first.b.inspect(h), { kind: "running", detail: "qmp: running" });

  // As after an agent restart: the first instance lets go, a new one takes over.
  await first.b.close();
  const second = backend(dir.path);
  assertEquals(await second.b.adopt(h), { kind: "running", detail: "qmp: running" });
  assertEquals(await second.b.stop(h, 20_000), {
    kind: "stopped",
    reason: "stopped (system_powerdown): qmp: guest shutdown",
    exit: { code: 0 },
  });
  assertMatch(await Deno.readTextFile(`${h.dir}/serial.log`), new RegExp(GUEST_POWERDOWN_LINE));
  await second.b.close();
});

Deno.test("a guest that ignores the power button is quit after the stop timeout", async () => {
  await using dir = await dataDir();
  const { b, lines } = backend(dir.path);
  const h = await b.start(await guestSpec("deaf", {}, GUEST_IGNORE_POWERDOWN_ARG), {
    generation: 1,
  });
  await waitForText(`${h.dir}/serial.log`, GUEST_READY_LINE);
  assertEquals(await b.stop(h, 500), {
    kind: "stopped",
    reason: "stopped (quit after the guest ignored system_powerdown for 500 ms): qmp: quit",
    exit: { code: 0 },
  });
  assert(lines.some((l) => l.includes("guest ignored system_powerdown; quitting qemu")));
  await b.close();
});

Deno.test("a qemu that answers nothing (stopped with SIGSTOP) is killed after quit times out", async () => {
  await using dir = await dataDir();
  const { b } = backend(dir.path, { quitTimeoutMs: 300 });
  const h = await b.start(await guestSpec("frozen"), { generation: 1 });
  Deno.kill(h.pid, "SIGSTOP");
  assertEquals(await b.stop(h, 300), {
    kind: "stopped",
    reason: "stopped (SIGKILL after qemu did not quit within 300 ms): killed by SIGKILL (signal 9)",
    exit: { signal: 9 },
  });
  await b.close();
});

Deno.test("qemu killed with SIGKILL is a failure that names the signal", async () => {
  await using dir = await dataDir();
  const { b } = backend(dir.path);
  const h = await b.start(await guestSpec("crash"), { generation: 1 });
  await waitRunning(b, h);
  Deno.kill(h.pid, "SIGKILL");
  let seen = await b.inspect(h);
  for (let i = 0; seen.kind === "running" && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 20));
    seen = await b.inspect(h);
  }
  assertEquals(seen, {
    kind: "exited",
    reason: "qemu: killed by SIGKILL (signal 9)",
    exit: { signal: 9 },
  });
  await b.close();
});

Deno.test("a qemu that cannot start is START_FAILED with qemu's own message", async () => {
  await using dir = await dataDir();
  const { b } = backend(dir.path);
  const spec = await guestSpec("nokernel");
  spec.kernel = "/nonexistent/vmlinuz";
  const e = await rejection(VmBackendError, () => b.start(spec, { generation: 1 }));
  assertEquals(e.code, "START_FAILED");
  assertMatch(
    e.message,
    /qemu ended before it answered on QMP: qemu: exit code 1: .*could not open kernel file '\/nonexistent\/vmlinuz'/,
  );
  await b.close();
});

Deno.test("a data directory too long for a unix socket path is refused, naming the limit", async () => {
  await using dir = await dataDir();
  const { b } = backend(`${dir.path}/${"d".repeat(90)}`);
  const e = await rejection(
    VmBackendError,
    () => guestSpec("long").then((s) => b.start(s, { generation: 1 })),
  );
  assertEquals(e.code, "PATH_TOO_LONG");
  assertMatch(e.message, /a unix socket path holds at most 107: use a shorter data_dir/);
});

Deno.test("auto acceleration follows the KVM probe, and says why in the start log line", async () => {
  const choice = await chooseAccel("auto", "qemu-system-x86_64");
  assertEquals(choice.accel, HOST_PROBE.usable ? "kvm" : "tcg");
  if (!HOST_PROBE.usable) assertEquals(choice.reason, `kvm unusable: ${HOST_PROBE.reason}`);
  await using dir = await dataDir();
  const { b, lines } = backend(dir.path);
  const h = await b.start(await guestSpec("accel"), { generation: 1 });
  await b.kill(h);
  const started = lines.find((l) => l.includes("started vm=accel"));
  assert(started?.includes(`accel=${choice.accel}`), String(started));
  assert(started?.includes("why="), String(started));
  await b.close();
});

Deno.test("without a usable KVM device, auto falls back to TCG and kvm is refused, both saying why", async () => {
  const device = "/nonexistent/kvm";
  const lines: string[] = [];
  const logger = createLogger("test", { sink: (l) => lines.push(l) });
  assertEquals(await chooseAccel("auto", "qemu-system-x86_64", logger, { device }), {
    accel: "tcg",
    reason: "kvm unusable: /nonexistent/kvm does not exist (no KVM on this host)",
  });
  assertEquals(await chooseAccel("kvm", "qemu-system-x86_64", logger, { device }), {
    accel: undefined,
    reason: "/nonexistent/kvm does not exist (no KVM on this host)",
  });
  // Probed once, logged once.
  assertEquals(lines.filter((l) => l.includes("kvm unusable here; qemu VMs use tcg")).length, 1);
});

Deno.test({
  name: "accel = kvm where KVM does not work is refused with KVM_UNUSABLE and the probe's reason",
  ignore: HOST_PROBE.usable,
  async fn() {
    await using dir = await dataDir();
    const { b } = backend(dir.path);
    const e = await rejection(
      VmBackendError,
      async () => b.start(await guestSpec("kvm", { accel: "kvm" }), { generation: 1 }),
    );
    assertEquals(e.code, "KVM_UNUSABLE");
    assertEquals(
      e.message,
      `vm "kvm": accel = kvm, but KVM does not work here: ${HOST_PROBE.reason}; use accel = auto or tcg`,
    );
    await b.close();
  },
});
