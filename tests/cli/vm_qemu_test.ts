/**
 * One real microVM through the command line: a node with the qemu backend,
 * the test guest (the host's kernel, a busybox initramfs built on the fly),
 * `vm create` until RUNNING and the guest's ready line on its serial
 * console, `vm stop` through the guest's power button, `vm delete` until
 * its files are gone and qemu with them.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { eventually } from "../wait.ts";
import { clusterFiles, startCluster } from "./cluster_helpers.ts";
import { blixard } from "./helpers.ts";
import { buildGuest, GUEST_POWERDOWN_LINE, GUEST_READY_LINE } from "../../src/vm/guest.ts";

/** Whether `pid` is a live process (not gone, not a zombie). */
async function alive(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

Deno.test("vm create boots a qemu guest until its ready line; stop powers it off; delete removes it", async () => {
  await using c = await clusterFiles([1], [], '\n[vm]\nbackends = ["qemu"]\naccel = "tcg"\n');
  await startCluster(c, [1]);
  const n = c.node(1);
  const guest = await buildGuest({ outDir: `${c.dir}/guest` });
  const at = ["--addr", n.addr];

  const create = await blixard([
    "vm",
    "create",
    "guest",
    "--kernel",
    guest.kernel,
    "--initrd",
    guest.initrd,
    "--memory",
    "256",
    ...at,
  ]);
  assertEquals(create.code, 0, create.stderr);
  assertMatch(create.stdout, /^vm guest: RUNNING on node 1 \(\d+\.\d s\)\n$/);

  const dir = `${n.dataDir}/vms/guest`;
  const serial = () => Deno.readTextFile(`${dir}/serial.log`).catch(() => "");
  await eventually(
    "the guest prints its ready line",
    async () => (await serial()).includes(GUEST_READY_LINE),
    60_000,
  );
  const pid = JSON.parse(await Deno.readTextFile(`${dir}/vm.json`)).pid as number;
  assert(await alive(pid), `qemu ${pid} runs`);
  const get = await blixard(["vm", "get", "guest", ...at]);
  assertMatch(get.stdout, /\n {2}initrd: +\S+cpio\.gz\n/);

  const stop = await blixard(["vm", "stop", "guest", ...at]);
  assertEquals(stop.code, 0, stop.stderr);
  assertMatch(stop.stdout, /^vm guest: STOPPED on node 1: stopped \(system_powerdown\)/);
  assert((await serial()).includes(GUEST_POWERDOWN_LINE), await serial());
  assert(!await alive(pid), `qemu ${pid} is gone`);

  const del = await blixard(["vm", "delete", "guest", ...at]);
  assertEquals(del.code, 0, del.stderr);
  await eventually("its directory is removed", async () => {
    return !(await Deno.stat(dir).then(() => true, () => false));
  }, 20_000);
  const list = await blixard(["vm", "list", ...at]);
  assertEquals([list.code, list.stdout, list.stderr], [0, "", "no VMs\n"]);
});
