/**
 * `blixard demo` as a newcomer runs it, as a real child process: it gets
 * ready (a qemu guest booted, or the process backend when qemu is not on
 * PATH, saying so), answers `vm list` and `status` at the address it
 * printed, and on SIGINT stops the VM and the nodes and removes its
 * directory, exiting 0 with no process of its left.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { firstMatch, within } from "../wait.ts";
import { blixard } from "./helpers.ts";
import { assertDocumented, jsonDoc } from "./json_doc.ts";

const main = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** Whether `pid` is a live process (not gone, not a zombie). */
async function alive(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

interface Summary {
  dir: string;
  nodes: { id: number; pid: number; grpcAddress: string; metricsAddress: string }[];
  backend: string;
  fallbackReason: string | null;
  vm: { name: string; nodeId: number; state: string; pid: number | null; consoleLog: string };
  bootMs: number;
}

/** Runs the demo until ready, checks it from outside, interrupts it, checks nothing is left. */
async function demo(env: Record<string, string>, expect: (s: Summary, stderr: string) => void) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "demo", "--json"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  let stderr = "";
  const errDone = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  let summary: Summary;
  try {
    const line = await within(
      firstMatch(child.stdout, /^(\{.*\})\n/, "the demo's ready line"),
      150_000,
      "the demo gets ready",
    );
    summary = JSON.parse(line);
  } catch (e) {
    child.kill("SIGINT");
    await child.status;
    await errDone;
    throw new Error(`${(e as Error).message}\n${stderr}`);
  }
  assertDocumented("demo --json", await jsonDoc("demo"), summary);
  expect(summary, stderr);

  const addr = ["--addr", summary.nodes[0]!.grpcAddress];
  const list = await blixard(["vm", "list", "--json", ...addr]);
  assertEquals(list.code, 0, list.stderr);
  const vms = JSON.parse(list.stdout).vms as {
    spec: { name: string };
    status: { state: string };
  }[];
  assertEquals(vms.map((v) => [v.spec.name, v.status.state]), [["demo", "VM_STATE_RUNNING"]]);
  const status = await blixard(["status", ...addr]);
  assertEquals(status.code, 0, status.stderr);
  assertMatch(status.stdout, /^cluster: 3 members, leader node [123]/);
  assertMatch(status.stdout, new RegExp(`\\n {2}${summary.vm.nodeId} .* 1 running `));

  for (const n of summary.nodes) {
    const ready = await fetch(`http://${n.metricsAddress}/readyz`);
    const why = await ready.text();
    assertEquals(ready.status, 200, `node ${n.id}: ${why}`);
  }

  const pids = [...summary.nodes.map((n) => n.pid), summary.vm.pid!];
  for (const pid of pids) assert(await alive(pid), `process ${pid} runs while the demo does`);
  assert(await Deno.stat(summary.dir).then(() => true), summary.dir);

  child.kill("SIGINT");
  const { code } = await within(child.status, 60_000, "the demo stops after SIGINT");
  await errDone;
  assertEquals(code, 0, stderr);
  for (const pid of pids) assert(!await alive(pid), `process ${pid} is left after the demo`);
  const left = await Deno.stat(summary.dir).then(() => true, () => false);
  assert(!left, `${summary.dir} is left after the demo`);
  assertMatch(stderr, /demo: stopping vm demo\n[^]*STOPPED on node/);
  return stderr;
}

Deno.test("blixard demo boots a qemu guest in a 3-node cluster, and Ctrl-C leaves nothing behind", async () => {
  await demo({}, (s, stderr) => {
    assertEquals([s.backend, s.fallbackReason], ["qemu", null]);
    assertEquals(s.vm.state, "RUNNING");
    assert(s.bootMs > 0);
    assertMatch(stderr, /demo: guest booted: BLIXARD-GUEST-READY on its console \d+\.\d s after/);
  });
});

Deno.test("without qemu on PATH, blixard demo says so and runs the process backend", async () => {
  // /bin/sh, the runtime and the VM's own PATH are absolute: only qemu goes missing.
  await demo({ PATH: "/nonexistent" }, (s, stderr) => {
    assertEquals(s.backend, "process");
    assertMatch(s.fallbackReason!, /no qemu-system-x86_64 on PATH/);
    assertMatch(stderr, /demo: qemu cannot run here: no qemu-system-x86_64 on PATH/);
    assertMatch(stderr, /demo: using the process backend instead/);
  });
});
