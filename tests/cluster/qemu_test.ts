/**
 * A real microVM through the agent (qemu under TCG here): created through
 * the Vm service, booted until the guest prints its ready line on the serial
 * console, found again (not started twice) after the agent restarts, a
 * killed qemu reported FAILED with the reason, stopped gracefully, deleted.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { eventually } from "../wait.ts";
import { VmState } from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import { GUEST_POWERDOWN_LINE, GUEST_READY_LINE } from "../../src/vm/guest.ts";
import { QEMU_FILES } from "../../src/vm/qemu.ts";
import { guestSpec, waitForText } from "../vm/helpers.ts";
import { alive, recordedVms, TestCluster } from "./helpers.ts";

Deno.test({
  name:
    "a qemu microVM boots through the agent, survives an agent restart as the same process, fails when killed, stops gracefully and is deleted",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using c = await TestCluster.start({
      size: 1,
      mode: "grpc",
      vm: 'backends = ["qemu"]\naccel = "auto"\nvcpus = 4\nmemory_mib = 4096\n',
    });
    await c.waitForVmCapacity();
    const vm = c.node(1).clients.vm;
    const state = async () => (await vm.get({ name: "guest" })).vm!.status!;
    const waitFor = (s: VmState, ms = 60_000) =>
      eventually(`guest is ${VmState[s]}`, async () => (await state()).state === s, ms);

    await vm.create({ spec: await guestSpec("guest", { restart: "never" }) });
    const dir = `${c.node(1).dataDir}/vms/guest`;
    await waitForText(`${dir}/${QEMU_FILES.serial}`, GUEST_READY_LINE, 90_000);
    await waitFor(VmState.RUNNING);
    const first = (await recordedVms(c.node(1).dataDir)).get("guest")!;

    // The agent restarts; qemu keeps running and is adopted, not started again.
    await c.node(1).process!.stop();
    assert(alive(first.pid), "qemu ended with its agent");
    await c.startNode(1);
    await c.waitForVmCapacity();
    await waitFor(VmState.RUNNING);
    assertEquals((await recordedVms(c.node(1).dataDir)).get("guest")!.pid, first.pid);

    // Graceful stop: the guest sees the power button and powers off.
    await vm.stop({ name: "guest" });
    await waitFor(VmState.STOPPED);
    assert(!alive(first.pid));
    assertEquals(
      (await Deno.readTextFile(`${dir}/${QEMU_FILES.serial}`)).includes(GUEST_POWERDOWN_LINE),
      true,
      "the guest was not asked to power off",
    );

    // Started again, then killed from outside: FAILED, saying how.
    await vm.start({ name: "guest" });
    await waitFor(VmState.RUNNING);
    const second = (await recordedVms(c.node(1).dataDir)).get("guest")!;
    Deno.kill(second.pid, "SIGKILL");
    await waitFor(VmState.FAILED);
    assertMatch((await state()).exitReason, /SIGKILL/);

    await vm.delete({ name: "guest" });
    await eventually(
      "the VM's directory is gone",
      async () => !(await recordedVms(c.node(1).dataDir)).has("guest"),
      20_000,
    );
  },
});
